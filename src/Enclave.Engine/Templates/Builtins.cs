using System.Globalization;
using System.Text;
using System.Text.RegularExpressions;

namespace Enclave.Engine.Templates;

/// <summary>jinja2's built-in filters, tests and globals, plus the globals transformers adds.</summary>
internal static partial class Builtins
{
    public delegate object? Filter(RenderContext c, object? value, CallArgs args);

    public delegate bool Test(RenderContext c, object? value, CallArgs args);

    public static readonly Dictionary<string, Filter> Filters = new(StringComparer.Ordinal)
    {
        ["abs"] = (_, v, _) => v switch
        {
            long l => (object)Math.Abs(l),
            double d => Math.Abs(d),
            bool b => b ? 1L : 0L,
            _ => throw new TemplateException($"bad operand type for abs(): '{Py.TypeName(v)}'"),
        },
        ["attr"] = (_, v, a) => a.Get(0, "name") is string name ? Py.GetAttribute(v, name) : Undefined.Plain,
        ["batch"] = Batch,
        ["capitalize"] = (_, v, _) => Methods.Capitalize(Py.Str(v)),
        ["center"] = (_, v, a) => Methods.Pad(Py.Str(v), (int)Py.ToLong(a.Get(0, "width", 80L)), ' ', "center"),
        ["count"] = (_, v, _) => Py.Length(v),
        ["default"] = Default,
        ["d"] = Default,
        ["dictsort"] = DictSort,
        ["escape"] = (_, v, _) => Escape(Py.Str(v)),
        ["e"] = (_, v, _) => Escape(Py.Str(v)),
        ["first"] = (_, v, _) =>
        {
            var items = Py.Iterate(v);
            return items.Count > 0 ? items[0] : new Undefined("No first item, sequence was empty.");
        },
        ["float"] = (_, v, a) => ToFloat(v, a.Get(0, "default", 0.0)),
        ["forceescape"] = (_, v, _) => Escape(Py.Str(v)),
        ["format"] = (_, v, a) => PrintfFormat(Py.Str(v), a),
        ["groupby"] = GroupBy,
        ["indent"] = Indent,
        ["int"] = (_, v, a) => ToInt(v, a.Get(0, "default", 0L), a.Get(1, "base", 10L)),
        ["items"] = (_, v, _) => v switch
        {
            PyDict d => Methods.Call(d, "items", CallArgs.Empty),
            Undefined => new List<object?>(),
            _ => throw new TemplateException($"Can only get item pairs from a mapping, not '{Py.TypeName(v)}'"),
        },
        ["join"] = Join,
        ["last"] = (_, v, _) =>
        {
            var items = Py.Iterate(v);
            return items.Count > 0 ? items[^1] : new Undefined("No last item, sequence was empty.");
        },
        ["length"] = (_, v, _) => Py.Length(v),
        ["list"] = (_, v, _) => new List<object?>(Py.Iterate(v)),
        ["lower"] = (_, v, _) => Py.Str(v).ToLowerInvariant(),
        ["map"] = Map,
        ["max"] = (c, v, a) => MinMax(c, v, a, max: true),
        ["min"] = (c, v, a) => MinMax(c, v, a, max: false),
        ["pprint"] = (_, v, _) => Py.Repr(v),
        ["reject"] = (c, v, a) => Select(c, v, a, byAttribute: false, keep: false),
        ["rejectattr"] = (c, v, a) => Select(c, v, a, byAttribute: true, keep: false),
        ["replace"] = (_, v, a) => Methods.Replace(
            Py.Str(v),
            Py.Str(a.Get(0, "old")),
            Py.Str(a.Get(1, "new")),
            a.Get(2, "count") is { } n ? Py.ToLong(n) : -1),
        ["reverse"] = (_, v, _) => v switch
        {
            string s => Py.Slice(s, null, null, -1L),
            _ => Reverse(Py.Iterate(v)),
        },
        ["round"] = Round,
        ["safe"] = (_, v, _) => v,
        ["select"] = (c, v, a) => Select(c, v, a, byAttribute: false, keep: true),
        ["selectattr"] = (c, v, a) => Select(c, v, a, byAttribute: true, keep: true),
        ["sort"] = Sort,
        ["string"] = (_, v, _) => Py.Str(v),
        ["striptags"] = (_, v, _) => string.Join(' ', TagRegex().Replace(Py.Str(v), "").Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries)),
        ["sum"] = Sum,
        ["title"] = (_, v, _) => Title(Py.Str(v)),
        ["tojson"] = ToJson,
        ["trim"] = (_, v, a) => Methods.Strip(Py.Str(v), a.Get(0, "chars") as string, true, true),
        ["truncate"] = Truncate,
        ["unique"] = Unique,
        ["upper"] = (_, v, _) => Py.Str(v).ToUpperInvariant(),
        ["wordcount"] = (_, v, _) => (long)WordRegex().Count(Py.Str(v)),
    };

    public static readonly Dictionary<string, Test> Tests = new(StringComparer.Ordinal)
    {
        ["boolean"] = (_, v, _) => v is bool,
        ["callable"] = (_, v, _) => v is ICallable or Undefined,
        ["defined"] = (_, v, _) => v is not Undefined,
        ["undefined"] = (_, v, _) => v is Undefined,
        ["none"] = (_, v, _) => v is null,
        ["string"] = (_, v, _) => v is string,
        ["number"] = (_, v, _) => v is long or double or bool,
        ["integer"] = (_, v, _) => v is long,
        ["float"] = (_, v, _) => v is double,
        ["mapping"] = (_, v, _) => v is PyDict,
        ["iterable"] = (_, v, _) => v is string or List<object?> or object?[] or PyDict or Undefined,
        ["sequence"] = (_, v, _) => v is string or List<object?> or object?[] or PyDict,
        ["true"] = (_, v, _) => v is true,
        ["false"] = (_, v, _) => v is false,
        ["odd"] = (_, v, _) => Py.Equal(Py.Arithmetic("%", v, 2L), 1L),
        ["even"] = (_, v, _) => Py.Equal(Py.Arithmetic("%", v, 2L), 0L),
        ["divisibleby"] = (_, v, a) => Py.Equal(Py.Arithmetic("%", v, a.Get(0, "num")), 0L),
        ["lower"] = (_, v, _) => Py.Str(v) is var s && s.Any(char.IsLetter) && !s.Any(char.IsUpper),
        ["upper"] = (_, v, _) => Py.Str(v) is var s && s.Any(char.IsLetter) && !s.Any(char.IsLower),
        ["escaped"] = (_, _, _) => false,
        ["sameas"] = (_, v, a) => SameAs(v, a.Get(0, "other")),
        ["in"] = (_, v, a) => Py.Contains(a.Get(0, "seq"), v),
        ["eq"] = (_, v, a) => Py.Equal(v, a.Get(0, "other")),
        ["equalto"] = (_, v, a) => Py.Equal(v, a.Get(0, "other")),
        ["=="] = (_, v, a) => Py.Equal(v, a.Get(0, "other")),
        ["ne"] = (_, v, a) => !Py.Equal(v, a.Get(0, "other")),
        ["!="] = (_, v, a) => !Py.Equal(v, a.Get(0, "other")),
        ["lt"] = (_, v, a) => Py.Compare(v, a.Get(0, "other"), "<") < 0,
        ["lessthan"] = (_, v, a) => Py.Compare(v, a.Get(0, "other"), "<") < 0,
        ["<"] = (_, v, a) => Py.Compare(v, a.Get(0, "other"), "<") < 0,
        ["le"] = (_, v, a) => Py.Compare(v, a.Get(0, "other"), "<=") <= 0,
        ["<="] = (_, v, a) => Py.Compare(v, a.Get(0, "other"), "<=") <= 0,
        ["gt"] = (_, v, a) => Py.Compare(v, a.Get(0, "other"), ">") > 0,
        ["greaterthan"] = (_, v, a) => Py.Compare(v, a.Get(0, "other"), ">") > 0,
        [">"] = (_, v, a) => Py.Compare(v, a.Get(0, "other"), ">") > 0,
        ["ge"] = (_, v, a) => Py.Compare(v, a.Get(0, "other"), ">=") >= 0,
        [">="] = (_, v, a) => Py.Compare(v, a.Get(0, "other"), ">=") >= 0,
        ["filter"] = (_, v, _) => v is string name && Filters!.ContainsKey(name),
        ["test"] = (_, v, _) => v is string name && Tests!.ContainsKey(name),
    };

    public static readonly Dictionary<string, object?> Globals = new(StringComparer.Ordinal)
    {
        ["range"] = new BuiltinFunction("range", (_, a) => Range(a)),
        ["namespace"] = new BuiltinFunction("namespace", (_, a) => MakeNamespace(a)),
        ["dict"] = new BuiltinFunction("dict", (_, a) => MakeDict(a)),
        ["joiner"] = new BuiltinFunction("joiner", (_, a) => MakeJoiner(Py.Str(a.Get(0, "sep", ", ")))),
        ["raise_exception"] = new BuiltinFunction("raise_exception", (_, a) =>
            throw new TemplateException(Py.Str(a.Get(0, "message")), 0, raisedByTemplate: true)),
        ["strftime_now"] = new BuiltinFunction("strftime_now", (c, a) =>
            Strftime.Format(c.Clock(), Py.Str(a.Get(0, "format")))),
    };

    [GeneratedRegex(@"(<!--.*?-->|<[^>]*>)", RegexOptions.Singleline)]
    private static partial Regex TagRegex();

    [GeneratedRegex(@"\w+")]
    private static partial Regex WordRegex();

    [GeneratedRegex(@"([-\s\(\{\[\<]+)")]
    private static partial Regex WordBeginningRegex();

    private static bool SameAs(object? a, object? b)
    {
        if (a is null || b is null)
            return a is null && b is null;
        if (a is bool ba && b is bool bb)
            return ba == bb;
        if (a is long la && b is long lb)
            return la == lb && la is >= -5 and <= 256;
        return ReferenceEquals(a, b);
    }

    private static object? Default(RenderContext c, object? v, CallArgs a)
    {
        var fallback = a.Get(0, "default_value", "");
        var boolean = Py.Truthy(a.Get(1, "boolean", false));
        if (v is Undefined || (boolean && !Py.Truthy(v)))
            return fallback;
        return v;
    }

    private static string Escape(string s) =>
        s.Replace("&", "&amp;").Replace(">", "&gt;").Replace("<", "&lt;").Replace("'", "&#39;").Replace("\"", "&#34;");

    private static List<object?> Reverse(IReadOnlyList<object?> items)
    {
        var result = new List<object?>(items);
        result.Reverse();
        return result;
    }

    private static object? ToInt(object? v, object? fallback, object? baseValue)
    {
        switch (v)
        {
            case Undefined u:
                throw u.Fail();
            case long:
                return v;
            case bool b:
                return b ? 1L : 0L;
            case double d:
                return double.IsFinite(d) ? (long)Math.Truncate(d) : fallback;
            case string s:
            {
                var text = s.Trim().Replace("_", "");
                var radix = (int)Py.ToLong(baseValue);
                try
                {
                    if (radix != 10)
                    {
                        var digits = text;
                        if (digits.Length > 2 && digits[0] == '0' && char.IsLetter(digits[1]))
                            digits = digits[2..];
                        return Convert.ToInt64(digits, radix);
                    }
                }
                catch (FormatException)
                {
                    return fallback;
                }
                catch (ArgumentException)
                {
                    return fallback;
                }

                if (long.TryParse(text, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out var l))
                    return l;
                if (double.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture, out var d2) && double.IsFinite(d2))
                    return (long)Math.Truncate(d2);
                return fallback;
            }

            default:
                return fallback;
        }
    }

    private static object? ToFloat(object? v, object? fallback)
    {
        switch (v)
        {
            case Undefined u:
                throw u.Fail();
            case long l:
                return (double)l;
            case double:
                return v;
            case bool b:
                return b ? 1.0 : 0.0;
            case string s:
            {
                var text = s.Trim();
                switch (text.ToLowerInvariant())
                {
                    case "inf" or "+inf" or "infinity" or "+infinity": return double.PositiveInfinity;
                    case "-inf" or "-infinity": return double.NegativeInfinity;
                    case "nan" or "+nan" or "-nan": return double.NaN;
                }

                return double.TryParse(text.Replace("_", ""), NumberStyles.Float, CultureInfo.InvariantCulture, out var d) ? d : fallback;
            }

            default:
                return fallback;
        }
    }

    /// <summary>Resolves a dotted attribute path ("a.b", "items.0") the way jinja2's make_attrgetter does.</summary>
    private static object? Attribute(object? item, string path)
    {
        foreach (var part in path.Split('.'))
        {
            object key = long.TryParse(part, NumberStyles.None, CultureInfo.InvariantCulture, out var idx) ? idx : part;
            item = Py.GetItem(item, key);
        }

        return item;
    }

    private static object? Join(RenderContext c, object? v, CallArgs a)
    {
        var sep = Py.Str(a.Get(0, "d", ""));
        var attribute = a.Get(1, "attribute") as string;
        var sb = new StringBuilder();
        var first = true;
        foreach (var item in Py.Iterate(v))
        {
            if (!first)
                sb.Append(sep);
            first = false;
            sb.Append(Py.Str(attribute is null ? item : Attribute(item, attribute)));
        }

        return sb.ToString();
    }

    private static object? Map(RenderContext c, object? v, CallArgs a)
    {
        var result = new List<object?>();
        if (!Py.Truthy(v))
            return result;
        var attribute = a.Get(-1, "attribute");
        if (attribute is string path)
        {
            var hasDefault = a.Has(-1, "default");
            var fallback = a.Get(-1, "default");
            foreach (var item in Py.Iterate(v))
            {
                var value = Attribute(item, path);
                result.Add(hasDefault && value is Undefined ? fallback : value);
            }

            return result;
        }

        if (a.Count == 0)
            throw new TemplateException("map requires a filter name or attribute");
        var name = Py.Str(a[0]);
        if (!Filters.TryGetValue(name, out var filter))
            throw new TemplateException($"No filter named '{name}'.");
        var rest = new CallArgs(a.Positional.Skip(1).ToList(), a.Keywords);
        foreach (var item in Py.Iterate(v))
            result.Add(filter(c, item, rest));
        return result;
    }

    private static List<object?> Select(RenderContext c, object? v, CallArgs a, bool byAttribute, bool keep)
    {
        var offset = 0;
        string? attribute = null;
        if (byAttribute)
        {
            attribute = Py.Str(a.Get(0, "attribute"));
            offset = 1;
        }

        Test? test = null;
        CallArgs? testArgs = null;
        if (a.Count > offset)
        {
            var name = Py.Str(a[offset]);
            if (!Tests.TryGetValue(name, out test))
                throw new TemplateException($"No test named '{name}'.");
            testArgs = new CallArgs(a.Positional.Skip(offset + 1).ToList(), a.Keywords);
        }

        var result = new List<object?>();
        if (!Py.Truthy(v))
            return result;
        foreach (var item in Py.Iterate(v))
        {
            var subject = attribute is null ? item : Attribute(item, attribute);
            var ok = test is null ? Py.Truthy(subject) : test(c, subject, testArgs!);
            if (ok == keep)
                result.Add(item);
        }

        return result;
    }

    private static object? SortKey(object? item, string? attribute, bool caseSensitive)
    {
        var key = attribute is null ? item : Attribute(item, attribute);
        return !caseSensitive && key is string s ? s.ToLowerInvariant() : key;
    }

    private static object? Sort(RenderContext c, object? v, CallArgs a)
    {
        var reverse = Py.Truthy(a.Get(0, "reverse", false));
        var caseSensitive = Py.Truthy(a.Get(1, "case_sensitive", false));
        var attribute = a.Get(2, "attribute") as string;
        var items = new List<object?>(Py.Iterate(v));
        var keys = items.Select(i => SortKey(i, attribute, caseSensitive)).ToList();
        var order = Enumerable.Range(0, items.Count).ToList();
        // Python's sort is stable; List.Sort is not, so sort indices with the index as tie-breaker.
        StableSort(order, (x, y) =>
        {
            var cmp = Py.Compare(keys[x], keys[y], "<");
            if (reverse)
                cmp = -cmp;
            return cmp != 0 ? cmp : x.CompareTo(y);
        });
        return order.Select(i => items[i]).ToList();
    }

    private static void StableSort(List<int> order, Comparison<int> comparison)
    {
        try
        {
            order.Sort(comparison);
        }
        catch (InvalidOperationException e) when (e.InnerException is TemplateException inner)
        {
            throw inner;
        }
    }

    private static object? DictSort(RenderContext c, object? v, CallArgs a)
    {
        if (v is not PyDict d)
            throw new TemplateException("dictsort expects a mapping");
        var caseSensitive = Py.Truthy(a.Get(0, "case_sensitive", false));
        var by = Py.Str(a.Get(1, "by", "key"));
        var reverse = Py.Truthy(a.Get(2, "reverse", false));
        var pairs = d.Select(kv => (object?)new object?[] { kv.Key, kv.Value }).ToList();
        var index = by == "value" ? 1 : 0;
        var order = Enumerable.Range(0, pairs.Count).ToList();
        StableSort(order, (x, y) =>
        {
            var kx = ((object?[])pairs[x]!)[index];
            var ky = ((object?[])pairs[y]!)[index];
            if (!caseSensitive)
            {
                kx = kx is string sx ? sx.ToLowerInvariant() : kx;
                ky = ky is string sy ? sy.ToLowerInvariant() : ky;
            }

            var cmp = Py.Compare(kx, ky, "<");
            if (reverse)
                cmp = -cmp;
            return cmp != 0 ? cmp : x.CompareTo(y);
        });
        return order.Select(i => pairs[i]).ToList();
    }

    private static object? Unique(RenderContext c, object? v, CallArgs a)
    {
        var caseSensitive = Py.Truthy(a.Get(0, "case_sensitive", false));
        var attribute = a.Get(1, "attribute") as string;
        var seen = new List<object?>();
        var result = new List<object?>();
        foreach (var item in Py.Iterate(v))
        {
            var key = SortKey(item, attribute, caseSensitive);
            if (seen.Any(s => Py.Equal(s, key)))
                continue;
            seen.Add(key);
            result.Add(item);
        }

        return result;
    }

    private static object? MinMax(RenderContext c, object? v, CallArgs a, bool max)
    {
        var caseSensitive = Py.Truthy(a.Get(0, "case_sensitive", false));
        var attribute = a.Get(1, "attribute") as string;
        var items = Py.Iterate(v);
        if (items.Count == 0)
            return new Undefined($"No aggregated item, sequence was empty.");
        var best = items[0];
        var bestKey = SortKey(best, attribute, caseSensitive);
        for (var i = 1; i < items.Count; i++)
        {
            var key = SortKey(items[i], attribute, caseSensitive);
            var cmp = Py.Compare(key, bestKey, "<");
            if (max ? cmp > 0 : cmp < 0)
            {
                best = items[i];
                bestKey = key;
            }
        }

        return best;
    }

    private static object? Sum(RenderContext c, object? v, CallArgs a)
    {
        var attribute = a.Get(0, "attribute") as string;
        var total = a.Get(1, "start", 0L);
        foreach (var item in Py.Iterate(v))
            total = Py.Add(total, attribute is null ? item : Attribute(item, attribute));
        return total;
    }

    private static object? Round(RenderContext c, object? v, CallArgs a)
    {
        var precision = (int)Py.ToLong(a.Get(0, "precision", 0L));
        var method = Py.Str(a.Get(1, "method", "common"));
        if (method == "common" && v is long or bool)
            return Py.ToLong(v);
        var value = Py.ToDouble(v);
        var factor = Math.Pow(10, precision);
        return method switch
        {
            "common" => RoundHalfEven(value, precision),
            "ceil" => Math.Ceiling(value * factor) / factor,
            "floor" => Math.Floor(value * factor) / factor,
            _ => throw new TemplateException("method must be common, ceil or floor"),
        };
    }

    /// <summary>
    /// Python's round(x, n): half-even on the exact binary value, so round(2.675, 2) is 2.67 because 2.675 is
    /// stored as 2.67499999...
    /// </summary>
    private static double RoundHalfEven(double x, int digits)
    {
        if (!double.IsFinite(x) || x == 0)
            return x;
        if (digits < 0)
        {
            var factor = Math.Pow(10, -digits);
            return Math.Round(x / factor, MidpointRounding.ToEven) * factor;
        }

        var bits = BitConverter.DoubleToInt64Bits(x);
        var negative = bits < 0;
        var biasedExponent = (int)((bits >> 52) & 0x7FF);
        var fraction = bits & 0xFFFFFFFFFFFFFL;
        var mantissa = biasedExponent == 0 ? fraction : fraction | (1L << 52);
        var exponent = biasedExponent == 0 ? -1074 : biasedExponent - 1075;
        var scale = -exponent;
        if (scale <= digits)
            return x;

        // |x| = mantissa * 5^scale / 10^scale exactly; keep `digits` decimals.
        var value = System.Numerics.BigInteger.Pow(5, scale) * mantissa;
        var divisor = System.Numerics.BigInteger.Pow(10, scale - digits);
        var quotient = System.Numerics.BigInteger.DivRem(value, divisor, out var remainder);
        var twice = remainder * 2;
        if (twice > divisor || (twice == divisor && !quotient.IsEven))
            quotient += 1;
        var result = double.Parse(quotient.ToString(CultureInfo.InvariantCulture) + "E-" + digits.ToString(CultureInfo.InvariantCulture), NumberStyles.Float, CultureInfo.InvariantCulture);
        return negative ? -result : result;
    }

    private static object? Batch(RenderContext c, object? v, CallArgs a)
    {
        var size = (int)Py.ToLong(a.Get(0, "linecount"));
        if (size <= 0)
            throw new TemplateException("batch size must be positive");
        var hasFill = a.Has(1, "fill_with");
        var fill = a.Get(1, "fill_with");
        var result = new List<object?>();
        List<object?>? current = null;
        foreach (var item in Py.Iterate(v))
        {
            current ??= new List<object?>(size);
            current.Add(item);
            if (current.Count == size)
            {
                result.Add(current);
                current = null;
            }
        }

        if (current is not null)
        {
            while (hasFill && current.Count < size)
                current.Add(fill);
            result.Add(current);
        }

        return result;
    }

    private static object? GroupBy(RenderContext c, object? v, CallArgs a)
    {
        var attribute = Py.Str(a.Get(0, "attribute"));
        var caseSensitive = Py.Truthy(a.Get(2, "case_sensitive", false));
        var sorted = (List<object?>)Sort(c, v, new CallArgs([false, caseSensitive, attribute], null))!;
        var result = new List<object?>();
        object? currentKey = null;
        List<object?>? group = null;
        foreach (var item in sorted)
        {
            var key = Attribute(item, attribute);
            var cmpKey = !caseSensitive && key is string s ? s.ToLowerInvariant() : key;
            var currentCmp = !caseSensitive && currentKey is string cs ? cs.ToLowerInvariant() : currentKey;
            if (group is null || !Py.Equal(cmpKey, currentCmp))
            {
                group = [];
                currentKey = key;
                result.Add(new GroupTuple(key, group));
            }

            group.Add(item);
        }

        return result;
    }

    private static object? Indent(RenderContext c, object? v, CallArgs a)
    {
        var width = a.Get(0, "width", 4L);
        var pad = width is string ws ? ws : new string(' ', (int)Py.ToLong(width));
        var first = Py.Truthy(a.Get(1, "first", false));
        var blank = Py.Truthy(a.Get(2, "blank", false));
        // jinja2 appends a newline before splitlines() so a trailing newline keeps its (empty) line.
        var lines = Methods.SplitLines(Py.Str(v) + "\n", keepEnds: false);
        var sb = new StringBuilder();
        if (first)
            sb.Append(pad);
        for (var i = 0; i < lines.Count; i++)
        {
            var line = (string)lines[i]!;
            if (i > 0)
            {
                sb.Append('\n');
                if (blank || line.Length > 0)
                    sb.Append(pad);
            }

            sb.Append(line);
        }

        return sb.ToString();
    }

    private static object? Truncate(RenderContext c, object? v, CallArgs a)
    {
        var s = Py.Str(v);
        var length = (int)Py.ToLong(a.Get(0, "length", 255L));
        var killWords = Py.Truthy(a.Get(1, "killwords", false));
        var end = Py.Str(a.Get(2, "end", "..."));
        var leeway = (int)Py.ToLong(a.Get(3, "leeway", 5L));
        if (Py.Length(s) <= length + leeway)
            return s;
        var cut = (string)Py.Slice(s, null, (long)Math.Max(0, length - (int)Py.Length(end)), null)!;
        if (killWords)
            return cut + end;
        var space = cut.LastIndexOf(' ');
        return (space >= 0 ? cut[..space] : cut) + end;
    }

    private static string Title(string s)
    {
        var sb = new StringBuilder(s.Length);
        foreach (var part in WordBeginningRegex().Split(s))
        {
            if (part.Length == 0)
                continue;
            sb.Append(char.ToUpperInvariant(part[0])).Append(part[1..].ToLowerInvariant());
        }

        return sb.ToString();
    }

    private static object? ToJson(RenderContext c, object? v, CallArgs a)
    {
        var ensureAscii = Py.Truthy(a.Get(0, "ensure_ascii", false));
        var indentValue = a.Get(1, "indent");
        string? indent = indentValue switch
        {
            null => null,
            string s => s,
            _ => new string(' ', (int)Math.Max(0, Py.ToLong(indentValue))),
        };
        string? itemSep = null;
        string? keySep = null;
        if (a.Get(2, "separators") is IReadOnlyList<object?> { Count: 2 } seps)
        {
            itemSep = Py.Str(seps[0]);
            keySep = Py.Str(seps[1]);
        }

        var sortKeys = Py.Truthy(a.Get(3, "sort_keys", false));
        var json = PyJson.Dumps(v, indent, sortKeys, itemSep, keySep);
        return ensureAscii ? AsciiEscape(json) : json;
    }

    private static string AsciiEscape(string json)
    {
        var sb = new StringBuilder(json.Length);
        foreach (var ch in json)
        {
            if (ch > 0x7e)
                sb.Append("\\u").Append(((int)ch).ToString("x4", CultureInfo.InvariantCulture));
            else
                sb.Append(ch);
        }

        return sb.ToString();
    }

    /// <summary>Python's <c>format % args</c> for the conversions templates use (%s, %r, %d, %i, %f).</summary>
    public static string PrintfFormat(string format, CallArgs a, bool strict = true)
    {
        var args = a.Positional;
        var sb = new StringBuilder();
        var next = 0;
        for (var i = 0; i < format.Length; i++)
        {
            if (format[i] != '%')
            {
                sb.Append(format[i]);
                continue;
            }

            if (i + 1 >= format.Length)
                throw new TemplateException("incomplete format");
            var spec = format[++i];
            if (spec == '%')
            {
                sb.Append('%');
                continue;
            }

            if (next >= args.Count)
                throw new TemplateException("not enough arguments for format string");
            var value = args[next++];
            sb.Append(spec switch
            {
                's' => Py.Str(value),
                'r' => Py.Repr(value),
                'd' or 'i' => Py.ToLong(value).ToString(CultureInfo.InvariantCulture),
                'f' => Py.ToDouble(value).ToString("F6", CultureInfo.InvariantCulture),
                _ => throw new TemplateException($"unsupported format character '{spec}'"),
            });
        }

        if (strict && next < args.Count)
            throw new TemplateException("not all arguments converted during string formatting");
        return sb.ToString();
    }

    private static object? Range(CallArgs a)
    {
        long start = 0, stop, step = 1;
        if (a.Count == 1)
        {
            stop = Py.ToLong(a[0]);
        }
        else if (a.Count >= 2)
        {
            start = Py.ToLong(a[0]);
            stop = Py.ToLong(a[1]);
            if (a.Count > 2)
                step = Py.ToLong(a[2]);
        }
        else
        {
            throw new TemplateException("range expected at least 1 argument, got 0");
        }

        if (step == 0)
            throw new TemplateException("range() arg 3 must not be zero");
        var result = new List<object?>();
        for (var i = start; step > 0 ? i < stop : i > stop; i += step)
        {
            if (result.Count >= 100_000)
                throw new TemplateException("Range too big. The sandbox blocks ranges larger than MAX_RANGE (100000).");
            result.Add(i);
        }

        return result;
    }

    private static PyDict MakeDict(CallArgs a)
    {
        var d = new PyDict();
        if (a.Count > 0)
        {
            if (a[0] is PyDict source)
            {
                foreach (var kv in source)
                    d[kv.Key] = kv.Value;
            }
            else
            {
                foreach (var pair in Py.Iterate(a[0]))
                {
                    var kv = Py.Iterate(pair);
                    d[kv[0] ?? "None"] = kv[1];
                }
            }
        }

        if (a.Keywords is not null)
        {
            foreach (var kv in a.Keywords)
                d[kv.Key] = kv.Value;
        }

        return d;
    }

    private static Namespace MakeNamespace(CallArgs a)
    {
        var ns = new Namespace();
        foreach (var kv in MakeDict(a))
            ns.Attributes[kv.Key] = kv.Value;
        return ns;
    }

    private static BuiltinFunction MakeJoiner(string sep)
    {
        var used = false;
        return new BuiltinFunction("joiner", (_, _) =>
        {
            if (!used)
            {
                used = true;
                return "";
            }

            return sep;
        });
    }
}
