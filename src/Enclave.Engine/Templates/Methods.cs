using System.Globalization;
using System.Text;

namespace Enclave.Engine.Templates;

/// <summary>The Python methods of str, dict and list that templates call, e.g. <c>content.split('&lt;/think&gt;')</c>.</summary>
internal static class Methods
{
    private static readonly HashSet<string> DictMethods = ["items", "keys", "values", "get", "copy"];

    private static readonly HashSet<string> StringMethods =
    [
        "startswith", "endswith", "split", "rsplit", "strip", "lstrip", "rstrip", "replace", "upper", "lower",
        "title", "capitalize", "format", "join", "find", "rfind", "index", "rindex", "count", "isdigit", "isalpha",
        "isalnum", "isspace", "isupper", "islower", "isnumeric", "isdecimal", "splitlines", "removeprefix",
        "removesuffix", "zfill", "center", "ljust", "rjust", "partition", "rpartition", "swapcase", "casefold",
    ];

    private static readonly HashSet<string> ListMethods = ["index", "count", "copy"];

    // The immutable sandbox transformers renders with refuses every method that modifies a container.
    private static readonly HashSet<string> Mutators =
    [
        "append", "extend", "insert", "pop", "remove", "clear", "sort", "reverse", "update", "setdefault", "popitem",
        "add", "discard",
    ];

    public static bool IsDictMethod(string name) => DictMethods.Contains(name) || Mutators.Contains(name);

    public static bool Has(object? obj, string name) => obj switch
    {
        string => StringMethods.Contains(name),
        PyDict => DictMethods.Contains(name) || Mutators.Contains(name),
        List<object?> => ListMethods.Contains(name) || Mutators.Contains(name),
        object?[] => ListMethods.Contains(name) && name != "copy",
        _ => false,
    };

    public static BuiltinFunction? Bind(object? obj, string name) =>
        Has(obj, name) ? new BuiltinFunction(name, (_, args) => Call(obj, name, args)) : null;

    public static object? Call(object? obj, string name, CallArgs a)
    {
        if (Mutators.Contains(name) && obj is PyDict or List<object?>)
            throw new TemplateException($"access to attribute '{name}' of '{Py.TypeName(obj)}' object is unsafe.");
        return obj switch
        {
            string s => CallString(s, name, a),
            PyDict d => CallDict(d, name, a),
            IReadOnlyList<object?> l => CallList(l, name, a),
            _ => throw new TemplateException($"'{Py.TypeName(obj)}' object has no attribute '{name}'"),
        };
    }

    private static object? CallDict(PyDict d, string name, CallArgs a)
    {
        switch (name)
        {
            case "items":
            {
                var result = new List<object?>(d.Count);
                foreach (var kv in d)
                    result.Add(new object?[] { kv.Key, kv.Value });
                return result;
            }

            case "keys": return new List<object?>(d.Keys);
            case "values": return new List<object?>(d.Values);
            case "get":
            {
                var key = a.Get(0, "key");
                return key is not null && d.TryGetValue(key, out var v) ? v : a.Get(1, "default");
            }

            case "copy":
            {
                var copy = new PyDict(d.Count);
                foreach (var kv in d)
                    copy[kv.Key] = kv.Value;
                return copy;
            }

            default:
                throw new TemplateException($"'dict' object has no attribute '{name}'");
        }
    }

    private static object? CallList(IReadOnlyList<object?> l, string name, CallArgs a)
    {
        switch (name)
        {
            case "index":
                for (var i = 0; i < l.Count; i++)
                {
                    if (Py.Equal(l[i], a.Get(0, "value")))
                        return (long)i;
                }

                throw new TemplateException("value is not in list");
            case "count":
            {
                var n = 0L;
                foreach (var x in l)
                {
                    if (Py.Equal(x, a.Get(0, "value")))
                        n++;
                }

                return n;
            }

            case "copy":
                return new List<object?>(l);
            default:
                throw new TemplateException($"'{Py.TypeName(l)}' object has no attribute '{name}'");
        }
    }

    private static string Arg(CallArgs a, int i, string name)
    {
        var v = a.Get(i, name, Undefined.Plain);
        return v switch
        {
            string s => s,
            Undefined => throw new TemplateException($"{name}() missing required argument"),
            _ => throw new TemplateException($"must be str, not {Py.TypeName(v)}"),
        };
    }

    private static string? OptionalChars(CallArgs a)
    {
        var v = a.Get(0, "chars");
        return v switch
        {
            null => null,
            string s => s,
            _ => throw new TemplateException($"strip arg must be None or str, not {Py.TypeName(v)}"),
        };
    }

    public static bool IsPyWhiteSpace(char c) => char.IsWhiteSpace(c) || c is '\x1c' or '\x1d' or '\x1e' or '\x1f';

    public static string Strip(string s, string? chars, bool left, bool right)
    {
        var start = 0;
        var end = s.Length;
        if (left)
        {
            while (start < end && (chars is null ? IsPyWhiteSpace(s[start]) : chars.Contains(s[start])))
                start++;
        }

        if (right)
        {
            while (end > start && (chars is null ? IsPyWhiteSpace(s[end - 1]) : chars.Contains(s[end - 1])))
                end--;
        }

        return s[start..end];
    }

    private static object? CallString(string s, string name, CallArgs a)
    {
        switch (name)
        {
            case "startswith":
            case "endswith":
            {
                var target = s;
                if (a.Count > 1)
                    target = (string)Py.Slice(s, a[1], a.Count > 2 ? a[2] : null, null)!;
                var prefixes = a.Get(0, name == "startswith" ? "prefix" : "suffix");
                IEnumerable<object?> options = prefixes is object?[] tuple ? tuple : [prefixes];
                foreach (var p in options)
                {
                    if (p is not string ps)
                        throw new TemplateException($"{name} first arg must be str or a tuple of str, not {Py.TypeName(p)}");
                    if (name == "startswith" ? target.StartsWith(ps, StringComparison.Ordinal) : target.EndsWith(ps, StringComparison.Ordinal))
                        return true;
                }

                return false;
            }

            case "split":
            case "rsplit":
            {
                var sep = a.Get(0, "sep");
                var max = a.Get(1, "maxsplit") is { } m ? Py.ToLong(m) : -1;
                return sep switch
                {
                    null => SplitWhitespace(s, max, name == "rsplit"),
                    string sepStr => SplitSeparator(s, sepStr, max, name == "rsplit"),
                    _ => throw new TemplateException($"must be str or None, not {Py.TypeName(sep)}"),
                };
            }

            case "strip": return Strip(s, OptionalChars(a), true, true);
            case "lstrip": return Strip(s, OptionalChars(a), true, false);
            case "rstrip": return Strip(s, OptionalChars(a), false, true);
            case "replace":
            {
                var old = Arg(a, 0, "old");
                var replacement = Arg(a, 1, "new");
                var count = a.Get(2, "count") is { } c ? Py.ToLong(c) : -1;
                return Replace(s, old, replacement, count);
            }

            case "upper": return s.ToUpperInvariant();
            case "lower": return s.ToLowerInvariant();
            case "casefold": return s.ToLowerInvariant();
            case "swapcase":
            {
                var sb = new StringBuilder(s.Length);
                foreach (var ch in s)
                    sb.Append(char.IsUpper(ch) ? char.ToLowerInvariant(ch) : char.ToUpperInvariant(ch));
                return sb.ToString();
            }

            case "title": return PyTitle(s);
            case "capitalize": return Capitalize(s);
            case "format": return Format(s, a);
            case "join":
            {
                var sb = new StringBuilder();
                var first = true;
                foreach (var item in Py.Iterate(a.Get(0, "iterable")))
                {
                    if (item is not string str)
                        throw new TemplateException($"sequence item: expected str instance, {Py.TypeName(item)} found");
                    if (!first)
                        sb.Append(s);
                    first = false;
                    sb.Append(str);
                }

                return sb.ToString();
            }

            case "find": return CodePointIndex(s, s.IndexOf(Arg(a, 0, "sub"), StringComparison.Ordinal));
            case "rfind": return CodePointIndex(s, s.LastIndexOf(Arg(a, 0, "sub"), StringComparison.Ordinal));
            case "index":
            case "rindex":
            {
                var sub = Arg(a, 0, "sub");
                var i = name == "index" ? s.IndexOf(sub, StringComparison.Ordinal) : s.LastIndexOf(sub, StringComparison.Ordinal);
                if (i < 0)
                    throw new TemplateException("substring not found");
                return CodePointIndex(s, i);
            }

            case "count":
            {
                var sub = Arg(a, 0, "sub");
                if (sub.Length == 0)
                    return Py.Length(s) + 1;
                long n = 0;
                for (var i = s.IndexOf(sub, StringComparison.Ordinal); i >= 0; i = s.IndexOf(sub, i + sub.Length, StringComparison.Ordinal))
                    n++;
                return n;
            }

            case "isdigit":
            case "isdecimal":
            case "isnumeric":
                return s.Length > 0 && s.All(char.IsDigit);
            case "isalpha": return s.Length > 0 && s.All(char.IsLetter);
            case "isalnum": return s.Length > 0 && s.All(char.IsLetterOrDigit);
            case "isspace": return s.Length > 0 && s.All(IsPyWhiteSpace);
            case "isupper": return s.Any(char.IsLetter) && !s.Any(char.IsLower);
            case "islower": return s.Any(char.IsLetter) && !s.Any(char.IsUpper);
            case "splitlines":
                return SplitLines(s, Py.Truthy(a.Get(0, "keepends", false)));
            default:
                return CallStringMore(s, name, a);
        }
    }

    public static List<object?> SplitLines(string s, bool keepEnds)
    {
                var result = new List<object?>();
                var start = 0;
                for (var i = 0; i < s.Length; i++)
                {
                    if (s[i] is '\n' or '\r' or '\v' or '\f' or '\x1c' or '\x1d' or '\x1e' or '\x85' or '\u2028' or '\u2029')
                    {
                        var end = i;
                        if (s[i] == '\r' && i + 1 < s.Length && s[i + 1] == '\n')
                            i++;
                        result.Add(keepEnds ? s[start..(i + 1)] : s[start..end]);
                        start = i + 1;
                    }
                }

                if (start < s.Length)
                    result.Add(s[start..]);
                return result;
    }

    private static object? CallStringMore(string s, string name, CallArgs a)
    {
        switch (name)
        {

            case "removeprefix":
            {
                var p = Arg(a, 0, "prefix");
                return s.StartsWith(p, StringComparison.Ordinal) ? s[p.Length..] : s;
            }

            case "removesuffix":
            {
                var p = Arg(a, 0, "suffix");
                return p.Length > 0 && s.EndsWith(p, StringComparison.Ordinal) ? s[..^p.Length] : s;
            }

            case "zfill":
            {
                var width = (int)Py.ToLong(a.Get(0, "width"));
                var length = (int)Py.Length(s);
                if (length >= width)
                    return s;
                var sign = s.Length > 0 && s[0] is '+' or '-' ? 1 : 0;
                return s[..sign] + new string('0', width - length) + s[sign..];
            }

            case "center":
            case "ljust":
            case "rjust":
            {
                var width = (int)Py.ToLong(a.Get(0, "width"));
                var fill = a.Get(1, "fillchar", " ") as string ?? " ";
                return Pad(s, width, fill[0], name);
            }

            case "partition":
            case "rpartition":
            {
                var sep = Arg(a, 0, "sep");
                var i = name == "partition" ? s.IndexOf(sep, StringComparison.Ordinal) : s.LastIndexOf(sep, StringComparison.Ordinal);
                if (i < 0)
                    return name == "partition" ? new object?[] { s, "", "" } : new object?[] { "", "", s };
                return new object?[] { s[..i], sep, s[(i + sep.Length)..] };
            }

            default:
                throw new TemplateException($"'str' object has no attribute '{name}'");
        }
    }

    public static string Pad(string s, int width, char fill, string mode)
    {
        var length = (int)Py.Length(s);
        if (length >= width)
            return s;
        var total = width - length;
        return mode switch
        {
            "ljust" => s + new string(fill, total),
            "rjust" => new string(fill, total) + s,
            _ => CenterPad(s, total, width, fill),
        };
    }

    private static string CenterPad(string s, int total, int width, char fill)
    {
        // CPython: left = total / 2 + (total & width & 1).
        var left = (total / 2) + (total & width & 1);
        return new string(fill, left) + s + new string(fill, total - left);
    }

    /// <summary>Converts a UTF-16 index into Python's code-point index.</summary>
    private static long CodePointIndex(string s, int index)
    {
        if (index <= 0)
            return index;
        var surrogatePairs = 0;
        for (var i = 0; i < index; i++)
        {
            if (char.IsHighSurrogate(s[i]))
                surrogatePairs++;
        }

        return index - surrogatePairs;
    }

    public static string Replace(string s, string old, string replacement, long count)
    {
        if (count < 0)
        {
            if (old.Length == 0)
                return InsertBetweenChars(s, replacement, long.MaxValue);
            return s.Replace(old, replacement, StringComparison.Ordinal);
        }

        if (old.Length == 0)
            return InsertBetweenChars(s, replacement, count);
        var sb = new StringBuilder();
        var pos = 0;
        for (var n = 0L; n < count; n++)
        {
            var i = s.IndexOf(old, pos, StringComparison.Ordinal);
            if (i < 0)
                break;
            sb.Append(s, pos, i - pos).Append(replacement);
            pos = i + old.Length;
        }

        sb.Append(s, pos, s.Length - pos);
        return sb.ToString();
    }

    private static string InsertBetweenChars(string s, string insert, long count)
    {
        var sb = new StringBuilder();
        var n = 0L;
        foreach (var ch in Py.Chars(s))
        {
            if (n++ < count)
                sb.Append(insert);
            sb.Append((string)ch!);
        }

        if (n < count)
            sb.Append(insert);
        return sb.ToString();
    }

    private static List<object?> SplitWhitespace(string s, long max, bool fromRight)
    {
        var parts = new List<object?>();
        if (!fromRight)
        {
            var i = 0;
            while (true)
            {
                while (i < s.Length && IsPyWhiteSpace(s[i]))
                    i++;
                if (i >= s.Length)
                    break;
                if (max >= 0 && parts.Count >= max)
                {
                    parts.Add(s[i..]);
                    break;
                }

                var start = i;
                while (i < s.Length && !IsPyWhiteSpace(s[i]))
                    i++;
                parts.Add(s[start..i]);
            }

            return parts;
        }

        var j = s.Length;
        while (true)
        {
            while (j > 0 && IsPyWhiteSpace(s[j - 1]))
                j--;
            if (j <= 0)
                break;
            if (max >= 0 && parts.Count >= max)
            {
                parts.Add(s[..j]);
                break;
            }

            var end = j;
            while (j > 0 && !IsPyWhiteSpace(s[j - 1]))
                j--;
            parts.Add(s[j..end]);
        }

        parts.Reverse();
        return parts;
    }

    private static List<object?> SplitSeparator(string s, string sep, long max, bool fromRight)
    {
        if (sep.Length == 0)
            throw new TemplateException("empty separator");
        var parts = new List<object?>();
        if (!fromRight)
        {
            var pos = 0;
            while (max < 0 || parts.Count < max)
            {
                var i = s.IndexOf(sep, pos, StringComparison.Ordinal);
                if (i < 0)
                    break;
                parts.Add(s[pos..i]);
                pos = i + sep.Length;
            }

            parts.Add(s[pos..]);
            return parts;
        }

        var end = s.Length;
        while (max < 0 || parts.Count < max)
        {
            var i = end - sep.Length < 0 ? -1 : s.LastIndexOf(sep, end - sep.Length, StringComparison.Ordinal);
            if (i < 0)
                break;
            parts.Add(s[(i + sep.Length)..end]);
            end = i;
        }

        parts.Add(s[..end]);
        parts.Reverse();
        return parts;
    }

    public static string Capitalize(string s) =>
        s.Length == 0 ? s : char.ToUpperInvariant(s[0]) + s[1..].ToLowerInvariant();

    private static string PyTitle(string s)
    {
        var sb = new StringBuilder(s.Length);
        var previousCased = false;
        foreach (var c in s)
        {
            var cased = char.IsUpper(c) || char.IsLower(c);
            sb.Append(previousCased ? char.ToLowerInvariant(c) : char.ToUpperInvariant(c));
            previousCased = cased;
        }

        return sb.ToString();
    }

    /// <summary>str.format with auto-numbered, numbered and named fields; format specs pad and fix precision.</summary>
    private static string Format(string s, CallArgs a)
    {
        var sb = new StringBuilder();
        var auto = 0;
        for (var i = 0; i < s.Length; i++)
        {
            var c = s[i];
            if (c == '{')
            {
                if (i + 1 < s.Length && s[i + 1] == '{')
                {
                    sb.Append('{');
                    i++;
                    continue;
                }

                var close = s.IndexOf('}', i);
                if (close < 0)
                    throw new TemplateException("Single '{' encountered in format string");
                var field = s[(i + 1)..close];
                string? spec = null;
                var colon = field.IndexOf(':');
                if (colon >= 0)
                {
                    spec = field[(colon + 1)..];
                    field = field[..colon];
                }

                object? value;
                if (field.Length == 0)
                    value = auto < a.Count ? a[auto++] : throw new TemplateException("Replacement index out of range");
                else if (int.TryParse(field, NumberStyles.None, CultureInfo.InvariantCulture, out var idx))
                    value = idx < a.Count ? a[idx] : throw new TemplateException("Replacement index out of range");
                else
                    value = a.Has(-1, field) ? a.Get(-1, field) : throw new TemplateException($"KeyError: '{field}'");
                sb.Append(ApplySpec(value, spec));
                i = close;
            }
            else if (c == '}')
            {
                if (i + 1 < s.Length && s[i + 1] == '}')
                    i++;
                sb.Append('}');
            }
            else
            {
                sb.Append(c);
            }
        }

        return sb.ToString();
    }

    private static string ApplySpec(object? value, string? spec)
    {
        if (string.IsNullOrEmpty(spec))
            return Py.Str(value);
        if (spec.Length > 1 && spec[0] == '.' && spec[^1] == 'f' && int.TryParse(spec[1..^1], NumberStyles.None, CultureInfo.InvariantCulture, out var precision))
            return Py.ToDouble(value).ToString("F" + precision.ToString(CultureInfo.InvariantCulture), CultureInfo.InvariantCulture);
        if (spec == "d")
            return Py.ToLong(value).ToString(CultureInfo.InvariantCulture);
        return Py.Str(value);
    }
}
