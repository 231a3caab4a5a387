using System.Collections;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace Enclave.Engine.Templates;

internal static partial class Py
{
    /// <summary>Turns a caller-supplied value (JSON nodes, CLR lists and dictionaries, numbers) into a template value.</summary>
    public static object? FromClr(object? v)
    {
        switch (v)
        {
            case null:
            case string:
            case bool:
            case long:
            case double:
            case Undefined:
            case PyDict:
            case Namespace:
            case ICallable:
                return v;
            case int i: return (long)i;
            case short s: return (long)s;
            case byte b: return (long)b;
            case sbyte sb: return (long)sb;
            case uint ui: return (long)ui;
            case ushort us: return (long)us;
            case ulong ul: return (long)ul;
            case float f: return (double)f;
            case decimal m: return (double)m;
            case char c: return c.ToString();
            case JsonNode node: return FromJson(node);
            case JsonElement element: return FromJsonElement(element);
            case IReadOnlyDictionary<string, object?> dict:
            {
                var result = new PyDict(dict.Count);
                foreach (var kv in dict)
                    result[kv.Key] = FromClr(kv.Value);
                return result;
            }

            case IDictionary dict:
            {
                var result = new PyDict(dict.Count);
                foreach (DictionaryEntry kv in dict)
                    result[FromClr(kv.Key) ?? "None"] = FromClr(kv.Value);
                return result;
            }

            case IEnumerable seq:
            {
                var result = new List<object?>();
                foreach (var item in seq)
                    result.Add(FromClr(item));
                return result;
            }

            default:
                return v;
        }
    }

    public static object? FromJson(JsonNode? node)
    {
        switch (node)
        {
            case null:
                return null;
            case JsonObject obj:
            {
                var result = new PyDict(obj.Count);
                foreach (var kv in obj)
                    result[kv.Key] = FromJson(kv.Value);
                return result;
            }

            case JsonArray arr:
            {
                var result = new List<object?>(arr.Count);
                foreach (var item in arr)
                    result.Add(FromJson(item));
                return result;
            }

            case JsonValue value:
            {
                // Cheap typed probes first: asking a CLR-backed value for a JsonElement serializes it.
                switch (value.GetValueKind())
                {
                    case JsonValueKind.String when value.TryGetValue<string>(out var str):
                        return str;
                    case JsonValueKind.True:
                        return true;
                    case JsonValueKind.False:
                        return false;
                    case JsonValueKind.Null:
                        return null;
                }

                // A parsed "1" reads as an integer; "1.0" and "1e2" fail TryGetValue<long> and stay floats.
                if (value.TryGetValue<long>(out var l))
                    return l;
                if (value.TryGetValue<JsonElement>(out var element))
                    return FromJsonElement(element);
                if (value.TryGetValue<string>(out var s))
                    return s;
                if (value.TryGetValue<bool>(out var b))
                    return b;
                if (value.TryGetValue<int>(out var i))
                    return (long)i;
                if (value.TryGetValue<double>(out var d))
                    return d;
                if (value.TryGetValue<float>(out var f))
                    return (double)f;
                if (value.TryGetValue<decimal>(out var m))
                    return (double)m;
                using (var doc = JsonDocument.Parse(value.ToJsonString()))
                    return FromJsonElement(doc.RootElement);
            }

            default:
                return null;
        }
    }

    private static object? FromJsonElement(JsonElement e)
    {
        switch (e.ValueKind)
        {
            case JsonValueKind.String: return e.GetString();
            case JsonValueKind.True: return true;
            case JsonValueKind.False: return false;
            case JsonValueKind.Null:
            case JsonValueKind.Undefined:
                return null;
            case JsonValueKind.Number:
            {
                // Python's json keeps "1" an int and "1.0" / "1e3" a float.
                var raw = e.GetRawText();
                if (raw.AsSpan().IndexOfAny(".eE") < 0 && e.TryGetInt64(out var l))
                    return l;
                return e.GetDouble();
            }

            case JsonValueKind.Array:
            {
                var result = new List<object?>(e.GetArrayLength());
                foreach (var item in e.EnumerateArray())
                    result.Add(FromJsonElement(item));
                return result;
            }

            case JsonValueKind.Object:
            {
                var result = new PyDict();
                foreach (var p in e.EnumerateObject())
                    result[p.Name] = FromJsonElement(p.Value);
                return result;
            }

            default:
                return null;
        }
    }

    /// <summary>Materialises an iterable the way a for loop sees it (dicts yield keys, strings characters).</summary>
    public static IReadOnlyList<object?> Iterate(object? v)
    {
        switch (v)
        {
            case List<object?> l: return l;
            case object?[] t: return t;
            case GroupTuple g: return [g.Grouper, g.List];
            case PyDict d: return [.. d.Keys];
            case string s: return Chars(s);
            case Undefined: return [];
            case Namespace ns: return [.. ns.Attributes.Keys];
            default:
                throw new TemplateException($"'{TypeName(v)}' object is not iterable");
        }
    }

    public static List<object?> Chars(string s)
    {
        var result = new List<object?>(s.Length);
        for (var i = 0; i < s.Length; i++)
        {
            if (char.IsHighSurrogate(s[i]) && i + 1 < s.Length && char.IsLowSurrogate(s[i + 1]))
            {
                result.Add(s.Substring(i, 2));
                i++;
            }
            else
            {
                result.Add(s[i].ToString());
            }
        }

        return result;
    }

    private static bool HasSurrogates(string s)
    {
        foreach (var c in s)
        {
            if (char.IsSurrogate(c))
                return true;
        }

        return false;
    }

    /// <summary>len() with Python's code-point counting for strings.</summary>
    public static long Length(object? v) => v switch
    {
        string s => HasSurrogates(s) ? Chars(s).Count : s.Length,
        List<object?> l => l.Count,
        object?[] t => t.Length,
        PyDict d => d.Count,
        Undefined => 0,
        Namespace ns => ns.Attributes.Count,
        _ => throw new TemplateException($"object of type '{TypeName(v)}' has no len()"),
    };

    public static bool Contains(object? container, object? item)
    {
        switch (container)
        {
            case string s:
                if (item is not string sub)
                    throw new TemplateException($"'in <string>' requires string as left operand, not {TypeName(item)}");
                return s.Contains(sub, StringComparison.Ordinal);
            case PyDict d:
                return item is not null && d.ContainsKey(item);
            case IReadOnlyList<object?> l:
                foreach (var x in l)
                {
                    if (Equal(x, item))
                        return true;
                }

                return false;
            case Undefined:
                return false;
            default:
                throw new TemplateException($"argument of type '{TypeName(container)}' is not iterable");
        }
    }

    /// <summary><c>obj.name</c>: Python attributes (methods) first, then items, as jinja2's getattr does.</summary>
    public static object? GetAttribute(object? obj, string name)
    {
        switch (obj)
        {
            case PyDict d:
                if (Methods.IsDictMethod(name))
                    return Methods.Bind(obj, name);
                return d.TryGetValue(name, out var v) ? v : Undefined.ForAttribute(obj, name);
            case Namespace ns:
                return ns.Attributes.TryGetValue(name, out var nv) ? nv : Undefined.ForAttribute(obj, name);
            case LoopInfo loop:
                return loop.GetAttribute(name);
            case GroupTuple g:
                return name switch
                {
                    "grouper" => g.Grouper,
                    "list" => g.List,
                    _ => Undefined.ForAttribute(obj, name),
                };
            case Undefined u:
                throw u.Fail();
            default:
                return (object?)Methods.Bind(obj, name) ?? Undefined.ForAttribute(obj, name);
        }
    }

    /// <summary><c>obj[key]</c>: items first, then attributes, as jinja2's getitem does.</summary>
    public static object? GetItem(object? obj, object? key)
    {
        switch (obj)
        {
            case PyDict d:
                if (key is not null && d.TryGetValue(key, out var v))
                    return v;
                if (key is string ks && Methods.IsDictMethod(ks))
                    return Methods.Bind(obj, ks);
                return Undefined.ForItem(obj, key);
            case IReadOnlyList<object?> list when IsNumber(key):
            {
                var i = ToLong(key);
                if (i < 0)
                    i += list.Count;
                return i >= 0 && i < list.Count ? list[(int)i] : Undefined.ForItem(obj, key);
            }

            case string s when IsNumber(key):
            {
                var chars = HasSurrogates(s) ? Chars(s) : null;
                var count = chars?.Count ?? s.Length;
                var i = ToLong(key);
                if (i < 0)
                    i += count;
                if (i < 0 || i >= count)
                    return Undefined.ForItem(obj, key);
                return chars is null ? s[(int)i].ToString() : chars[(int)i];
            }

            case GroupTuple g when IsNumber(key):
                return GetItem(new object?[] { g.Grouper, g.List }, key);
            case Undefined u:
                throw u.Fail();
            default:
                if (key is string name)
                    return GetAttribute(obj, name);
                return Undefined.ForItem(obj, key);
        }
    }

    public static object? Slice(object? obj, object? start, object? stop, object? step)
    {
        if (obj is Undefined u)
            throw u.Fail();
        var st = step is null or Undefined ? 1 : ToLong(step);
        if (st == 0)
            throw new TemplateException("slice step cannot be zero");
        IReadOnlyList<object?> items = obj switch
        {
            string s => HasSurrogates(s) ? Chars(s) : null!,
            IReadOnlyList<object?> l => l,
            _ => throw new TemplateException($"'{TypeName(obj)}' object is not subscriptable"),
        };
        var str = obj as string;
        var n = items?.Count ?? str!.Length;
        long Clamp(object? v, long defaultValue)
        {
            if (v is null or Undefined)
                return defaultValue;
            var i = ToLong(v);
            if (i < 0)
            {
                i += n;
                if (i < 0)
                    i = st < 0 ? -1 : 0;
            }
            else if (i >= n)
            {
                i = st < 0 ? n - 1 : n;
            }

            return i;
        }

        var a = Clamp(start, st < 0 ? n - 1 : 0);
        var b = Clamp(stop, st < 0 ? -1 : n);
        var picked = new List<int>();
        if (st > 0)
        {
            for (var i = a; i < b; i += st)
                picked.Add((int)i);
        }
        else
        {
            for (var i = a; i > b; i += st)
                picked.Add((int)i);
        }

        if (str is not null)
        {
            var sb = new StringBuilder(picked.Count);
            foreach (var i in picked)
            {
                if (items is null)
                    sb.Append(str[i]);
                else
                    sb.Append((string)items[i]!);
            }

            return sb.ToString();
        }

        var result = new List<object?>(picked.Count);
        foreach (var i in picked)
            result.Add(items![i]);
        return obj is object?[] ? result.ToArray() : result;
    }

    public static object? Add(object? a, object? b)
    {
        if (a is string sa && b is string sb)
            return string.Concat(sa, sb);
        if (IsNumber(a) && IsNumber(b))
        {
            if (a is double || b is double)
                return ToDouble(a) + ToDouble(b);
            return (object)checked(ToLong(a) + ToLong(b));
        }

        if (a is List<object?> la && b is List<object?> lb)
            return new List<object?>(la.Concat(lb));
        if (a is object?[] ta && b is object?[] tb)
            return ta.Concat(tb).ToArray();
        throw BinaryError("+", a, b);
    }

    public static object? Arithmetic(string op, object? a, object? b)
    {
        if (op == "*")
        {
            if (a is string s && b is long or bool)
                return Repeat(s, ToLong(b));
            if (b is string s2 && a is long or bool)
                return Repeat(s2, ToLong(a));
            if (a is IReadOnlyList<object?> && b is long or bool)
                return RepeatSequence(a, ToLong(b));
            if (b is IReadOnlyList<object?> && a is long or bool)
                return RepeatSequence(b, ToLong(a));
        }

        if (op == "%" && a is string format)
            return Builtins.PrintfFormat(format, new CallArgs(b is object?[] tuple ? [.. tuple] : [b], null), strict: b is not (List<object?> or PyDict or Undefined));
        if (!IsNumber(a) || !IsNumber(b))
            throw BinaryError(op, a, b);
        var isFloat = a is double || b is double;
        switch (op)
        {
            case "-":
                return isFloat ? ToDouble(a) - ToDouble(b) : (object)checked(ToLong(a) - ToLong(b));
            case "*":
                return isFloat ? ToDouble(a) * ToDouble(b) : (object)checked(ToLong(a) * ToLong(b));
            case "/":
            {
                var d = ToDouble(b);
                if (d == 0)
                    throw new TemplateException("division by zero");
                return ToDouble(a) / d;
            }

            case "//":
                if (isFloat)
                {
                    var d = ToDouble(b);
                    if (d == 0)
                        throw new TemplateException("float floor division by zero");
                    return FloatFloorDiv(ToDouble(a), d);
                }
                else
                {
                    var x = ToLong(a);
                    var y = ToLong(b);
                    if (y == 0)
                        throw new TemplateException("integer division or modulo by zero");
                    var q = x / y;
                    if ((x % y != 0) && ((x < 0) != (y < 0)))
                        q--;
                    return q;
                }

            case "%":
                if (isFloat)
                {
                    var x = ToDouble(a);
                    var y = ToDouble(b);
                    if (y == 0)
                        throw new TemplateException("float modulo");
                    var m = x % y;
                    if (m == 0)
                        return Math.CopySign(0.0, y);
                    if ((m < 0) != (y < 0))
                        m += y;
                    return m;
                }
                else
                {
                    var x = ToLong(a);
                    var y = ToLong(b);
                    if (y == 0)
                        throw new TemplateException("integer division or modulo by zero");
                    var m = x % y;
                    if (m != 0 && ((m < 0) != (y < 0)))
                        m += y;
                    return m;
                }

            case "**":
                if (!isFloat && ToLong(b) >= 0)
                    return IntegerPower(ToLong(a), ToLong(b));
                if (ToDouble(a) == 0 && ToDouble(b) < 0)
                    throw new TemplateException("0.0 cannot be raised to a negative power");
                return Math.Pow(ToDouble(a), ToDouble(b));
            default:
                throw new TemplateException($"unknown operator {op}");
        }
    }

    /// <summary>CPython's float floor division, derived from fmod so that x == (x // y) * y + x % y holds.</summary>
    private static double FloatFloorDiv(double x, double y)
    {
        var mod = x % y;
        var div = (x - mod) / y;
        if (mod != 0 && (y < 0) != (mod < 0))
            div -= 1.0;
        if (div == 0)
            return Math.CopySign(0.0, x / y);
        var floor = Math.Floor(div);
        if (div - floor > 0.5)
            floor += 1.0;
        return floor;
    }

    private static long IntegerPower(long x, long n)
    {
        long result = 1;
        while (n > 0)
        {
            if ((n & 1) != 0)
                result = checked(result * x);
            n >>= 1;
            if (n > 0)
                x = checked(x * x);
        }

        return result;
    }

    private static object RepeatSequence(object? sequence, long n)
    {
        var items = (IReadOnlyList<object?>)sequence!;
        var result = new List<object?>();
        for (var i = 0L; i < n; i++)
        {
            result.AddRange(items);
            if (result.Count > 10_000_000)
                throw new TemplateException("sequence repetition too large");
        }

        return sequence is object?[] ? result.ToArray() : result;
    }

    private static string Repeat(string s, long n)
    {
        if (n <= 0)
            return "";
        var sb = new StringBuilder(s.Length * (int)n);
        for (var i = 0; i < n; i++)
            sb.Append(s);
        return sb.ToString();
    }

    private static TemplateException BinaryError(string op, object? a, object? b)
    {
        if (a is Undefined ua)
            return ua.Fail();
        if (b is Undefined ub)
            return ub.Fail();
        if (op == "+" && a is string or List<object?> or object?[])
            return new TemplateException($"can only concatenate {TypeName(a)} (not \"{TypeName(b)}\") to {TypeName(a)}");
        return new TemplateException($"unsupported operand type(s) for {op}: '{TypeName(a)}' and '{TypeName(b)}'");
    }

    public static object? Negate(object? v) => v switch
    {
        long l => (object)checked(-l),
        double d => -d,
        bool b => b ? -1L : 0L,
        Undefined u => throw u.Fail(),
        _ => throw new TemplateException($"bad operand type for unary -: '{TypeName(v)}'"),
    };
}
