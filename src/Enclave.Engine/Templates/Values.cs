using System.Text;

namespace Enclave.Engine.Templates;

/// <summary>
/// jinja2's default Undefined: prints as "", is falsy, iterates as empty, and raises on attribute access,
/// indexing, arithmetic and calls. It remembers why it is undefined for the error message.
/// </summary>
internal sealed class Undefined
{
    public static readonly Undefined Plain = new("value is undefined");

    private readonly string? _hint;
    private readonly string? _ownerType;
    private readonly string? _name;
    private readonly object? _key;

    public Undefined(string hint) => _hint = hint;

    // The message is only formatted when the undefined value is misused, which is rare next to
    // the common "x.field is defined" probes.
    private Undefined(string? ownerType, string? name, object? key)
    {
        _ownerType = ownerType;
        _name = name;
        _key = key;
    }

    public string Hint => _hint
        ?? (_ownerType is null ? $"'{_name}' is undefined"
            : _name is not null ? $"'{_ownerType} object' has no attribute '{_name}'"
            : $"'{_ownerType} object' has no attribute {Py.Repr(_key)}");

    public static Undefined ForName(string name) => new(null, name, null);

    public static Undefined ForAttribute(object? owner, string attribute) => new(Py.TypeName(owner), attribute, null);

    public static Undefined ForItem(object? owner, object? key) => new(Py.TypeName(owner), null, key);

    public TemplateException Fail() => new(Hint);
}

/// <summary>A Python dict: insertion ordered, keys compared with Python equality (1 == 1.0 == True).</summary>
internal sealed class PyDict : OrderedDictionary<object, object?>
{
    public PyDict()
        : base(PyKeyComparer.Instance)
    {
    }

    public PyDict(int capacity)
        : base(capacity, PyKeyComparer.Instance)
    {
    }
}

internal sealed class PyKeyComparer : IEqualityComparer<object>
{
    public static readonly PyKeyComparer Instance = new();

    public new bool Equals(object? x, object? y) => Py.Equal(x, y);

    public int GetHashCode(object obj) => obj switch
    {
        string s => string.GetHashCode(s, StringComparison.Ordinal),
        bool b => b ? 1 : 0,
        long l => l.GetHashCode(),
        double d => d == Math.Floor(d) && Math.Abs(d) < 9.2e18 ? ((long)d).GetHashCode() : d.GetHashCode(),
        object?[] tuple => TupleHash(tuple),
        List<object?> => throw new TemplateException("unhashable type: 'list'"),
        PyDict => throw new TemplateException("unhashable type: 'dict'"),
        _ => obj.GetHashCode(),
    };

    private int TupleHash(object?[] tuple)
    {
        var h = new HashCode();
        foreach (var item in tuple)
            h.Add(item is null ? 0 : GetHashCode(item));
        return h.ToHashCode();
    }
}

/// <summary>The object <c>namespace(...)</c> returns: attributes that <c>set ns.x = ...</c> may change from any scope.</summary>
internal sealed class Namespace
{
    public PyDict Attributes { get; } = new();
}

/// <summary>Positional and keyword arguments of a call.</summary>
internal sealed class CallArgs
{
    public static readonly CallArgs Empty = new([], null);

    public CallArgs(List<object?> positional, List<KeyValuePair<string, object?>>? keywords)
    {
        Positional = positional;
        Keywords = keywords;
    }

    public List<object?> Positional { get; }

    public List<KeyValuePair<string, object?>>? Keywords { get; }

    public int Count => Positional.Count;

    public object? this[int index] => Positional[index];

    /// <summary>Argument by position or keyword; <paramref name="fallback"/> when neither is given.</summary>
    public object? Get(int index, string name, object? fallback = null)
    {
        if (index >= 0 && index < Positional.Count)
            return Positional[index];
        if (Keywords is not null)
        {
            foreach (var kv in Keywords)
            {
                if (kv.Key == name)
                    return kv.Value;
            }
        }

        return fallback;
    }

    public bool Has(int index, string name)
    {
        if (index >= 0 && index < Positional.Count)
            return true;
        if (Keywords is not null)
        {
            foreach (var kv in Keywords)
            {
                if (kv.Key == name)
                    return true;
            }
        }

        return false;
    }
}

internal interface ICallable
{
    object? Call(RenderContext context, CallArgs args);
}

internal sealed class BuiltinFunction : ICallable
{
    private readonly Func<RenderContext, CallArgs, object?> _fn;

    public BuiltinFunction(string name, Func<RenderContext, CallArgs, object?> fn)
    {
        Name = name;
        _fn = fn;
    }

    public string Name { get; }

    public object? Call(RenderContext context, CallArgs args) => _fn(context, args);
}

/// <summary>What <c>groupby</c> yields: a (grouper, list) pair that also has those attribute names.</summary>
internal sealed class GroupTuple(object? grouper, List<object?> list)
{
    public object? Grouper { get; } = grouper;

    public List<object?> List { get; } = list;
}

/// <summary>The <c>loop</c> variable inside a for block.</summary>
internal sealed class LoopInfo
{
    private readonly IReadOnlyList<object?> _items;
    private object? _lastChanged = Undefined.Plain;

    public LoopInfo(IReadOnlyList<object?> items, int depth0, ICallable? recurse)
    {
        _items = items;
        Depth0 = depth0;
        Recurse = recurse;
    }

    public int Index0 { get; set; }

    public int Depth0 { get; }

    public ICallable? Recurse { get; }

    public object? GetAttribute(string name) => name switch
    {
        "index0" => (long)Index0,
        "index" => (long)Index0 + 1,
        "revindex0" => (long)(_items.Count - Index0 - 1),
        "revindex" => (long)(_items.Count - Index0),
        "first" => Index0 == 0,
        "last" => Index0 == _items.Count - 1,
        "length" => (long)_items.Count,
        "depth0" => (long)Depth0,
        "depth" => (long)Depth0 + 1,
        "previtem" => Index0 > 0 ? _items[Index0 - 1] : Undefined.ForAttribute(this, "previtem"),
        "nextitem" => Index0 + 1 < _items.Count ? _items[Index0 + 1] : Undefined.ForAttribute(this, "nextitem"),
        "cycle" => new BuiltinFunction("cycle", (_, a) =>
        {
            if (a.Count == 0)
                throw new TemplateException("no items for cycling given");
            return a[Index0 % a.Count];
        }),
        "changed" => new BuiltinFunction("changed", (_, a) =>
        {
            object? value = a.Count == 1 ? a[0] : a.Positional.ToArray();
            if (_lastChanged is not Undefined && Py.Equal(_lastChanged, value))
                return false;
            _lastChanged = value;
            return true;
        }),
        _ => Undefined.ForAttribute(this, name),
    };
}

/// <summary>Python semantics for the values templates work with.</summary>
/// <remarks>
/// Values are: null (None), <see cref="Undefined"/>, bool, long, double, string, <see cref="List{T}"/> of object
/// (list), object?[] (tuple), <see cref="PyDict"/> (dict), <see cref="Namespace"/>, <see cref="LoopInfo"/> and
/// <see cref="ICallable"/>.
/// </remarks>
internal static partial class Py
{
    public static string TypeName(object? v) => v switch
    {
        null => "NoneType",
        Undefined => "Undefined",
        bool => "bool",
        long => "int",
        double => "float",
        string => "str",
        List<object?> => "list",
        object?[] => "tuple",
        PyDict => "dict",
        Namespace => "Namespace",
        LoopInfo => "LoopContext",
        ICallable => "function",
        _ => v.GetType().Name,
    };

    public static bool Truthy(object? v) => v switch
    {
        null => false,
        bool b => b,
        long l => l != 0,
        double d => d != 0,
        string s => s.Length > 0,
        Undefined => false,
        List<object?> l => l.Count > 0,
        object?[] t => t.Length > 0,
        GroupTuple => true,
        PyDict d => d.Count > 0,
        _ => true,
    };

    public static bool IsNumber(object? v) => v is long or double or bool;

    public static double ToDouble(object? v) => v switch
    {
        long l => l,
        double d => d,
        bool b => b ? 1 : 0,
        _ => throw new TemplateException($"expected a number, got '{TypeName(v)}'"),
    };

    public static bool Equal(object? a, object? b)
    {
        if (ReferenceEquals(a, b))
            return true;
        switch (a)
        {
            case null:
                return b is null;
            case string sa:
                return b is string sb && string.Equals(sa, sb, StringComparison.Ordinal);
            case long or double or bool:
                if (!IsNumber(b))
                    return false;
                if (a is double || b is double)
                    return ToDouble(a) == ToDouble(b);
                return ToLong(a) == ToLong(b);
            case Undefined:
                return b is Undefined;
            case List<object?> la:
                return b is List<object?> lb && SequenceEqual(la, lb);
            case object?[] ta:
                return b is object?[] tb && SequenceEqual(ta, tb);
            case PyDict da:
            {
                if (b is not PyDict db || da.Count != db.Count)
                    return false;
                foreach (var kv in da)
                {
                    if (!db.TryGetValue(kv.Key, out var other) || !Equal(kv.Value, other))
                        return false;
                }

                return true;
            }

            default:
                return a.Equals(b);
        }
    }

    private static bool SequenceEqual(IReadOnlyList<object?> a, IReadOnlyList<object?> b)
    {
        if (a.Count != b.Count)
            return false;
        for (var i = 0; i < a.Count; i++)
        {
            if (!Equal(a[i], b[i]))
                return false;
        }

        return true;
    }

    public static long ToLong(object? v) => v switch
    {
        long l => l,
        bool b => b ? 1 : 0,
        double d => (long)d,
        _ => throw new TemplateException($"expected an integer, got '{TypeName(v)}'"),
    };

    /// <summary>Python ordering (&lt;): numbers, strings, and sequences lexicographically.</summary>
    public static int Compare(object? a, object? b, string op)
    {
        if (IsNumber(a) && IsNumber(b))
        {
            if (a is double || b is double)
                return ToDouble(a).CompareTo(ToDouble(b));
            return ToLong(a).CompareTo(ToLong(b));
        }

        if (a is string sa && b is string sb)
            return CompareCodePoints(sa, sb);
        if (a is IReadOnlyList<object?> la && b is IReadOnlyList<object?> lb && a.GetType() == b.GetType())
        {
            for (var i = 0; i < la.Count && i < lb.Count; i++)
            {
                if (!Equal(la[i], lb[i]))
                    return Compare(la[i], lb[i], op);
            }

            return la.Count.CompareTo(lb.Count);
        }

        if (a is Undefined u)
            throw u.Fail();
        if (b is Undefined u2)
            throw u2.Fail();
        throw new TemplateException($"'{op}' not supported between instances of '{TypeName(a)}' and '{TypeName(b)}'");
    }

    private static int CompareCodePoints(string a, string b)
    {
        var n = Math.Min(a.Length, b.Length);
        for (var i = 0; i < n; i++)
        {
            var ca = a[i];
            var cb = b[i];
            if (ca == cb)
                continue;
            // Surrogates encode code points above every BMP character.
            var ka = char.IsSurrogate(ca) ? ca + 0x10000 : ca;
            var kb = char.IsSurrogate(cb) ? cb + 0x10000 : cb;
            return ka.CompareTo(kb);
        }

        return a.Length.CompareTo(b.Length);
    }

    /// <summary>Python's <c>str()</c>, which is what <c>{{ value }}</c> prints.</summary>
    public static string Str(object? v) => v switch
    {
        string s => s,
        null => "None",
        Undefined => "",
        bool b => b ? "True" : "False",
        long l => l.ToString(System.Globalization.CultureInfo.InvariantCulture),
        double d => FloatRepr(d),
        _ => Repr(v),
    };

    public static string Repr(object? v)
    {
        var sb = new StringBuilder();
        AppendRepr(sb, v);
        return sb.ToString();
    }

    private static void AppendRepr(StringBuilder sb, object? v)
    {
        switch (v)
        {
            case string s:
                AppendStringRepr(sb, s);
                break;
            case List<object?> list:
                sb.Append('[');
                for (var i = 0; i < list.Count; i++)
                {
                    if (i > 0)
                        sb.Append(", ");
                    AppendRepr(sb, list[i]);
                }

                sb.Append(']');
                break;
            case object?[] tuple:
                sb.Append('(');
                for (var i = 0; i < tuple.Length; i++)
                {
                    if (i > 0)
                        sb.Append(", ");
                    AppendRepr(sb, tuple[i]);
                }

                if (tuple.Length == 1)
                    sb.Append(',');
                sb.Append(')');
                break;
            case PyDict dict:
            {
                sb.Append('{');
                var first = true;
                foreach (var kv in dict)
                {
                    if (!first)
                        sb.Append(", ");
                    first = false;
                    AppendRepr(sb, kv.Key);
                    sb.Append(": ");
                    AppendRepr(sb, kv.Value);
                }

                sb.Append('}');
                break;
            }

            case GroupTuple g:
                AppendRepr(sb, new object?[] { g.Grouper, g.List });
                break;
            case Namespace ns:
                sb.Append("<Namespace ");
                AppendRepr(sb, ns.Attributes);
                sb.Append('>');
                break;
            case Undefined:
                sb.Append("Undefined");
                break;
            case LoopInfo:
                sb.Append("<LoopContext>");
                break;
            case BuiltinFunction f:
                sb.Append("<function ").Append(f.Name).Append('>');
                break;
            case ICallable:
                sb.Append("<function>");
                break;
            default:
                sb.Append(Str(v));
                break;
        }
    }

    private static void AppendStringRepr(StringBuilder sb, string s)
    {
        var quote = s.Contains('\'') && !s.Contains('"') ? '"' : '\'';
        sb.Append(quote);
        for (var i = 0; i < s.Length; i++)
        {
            var c = s[i];
            switch (c)
            {
                case '\\': sb.Append("\\\\"); break;
                case '\n': sb.Append("\\n"); break;
                case '\r': sb.Append("\\r"); break;
                case '\t': sb.Append("\\t"); break;
                default:
                    if (c == quote)
                    {
                        sb.Append('\\').Append(c);
                    }
                    else if (char.IsHighSurrogate(c) && i + 1 < s.Length && char.IsLowSurrogate(s[i + 1]))
                    {
                        var cp = char.ConvertToUtf32(c, s[i + 1]);
                        if (IsPrintable(cp))
                            sb.Append(c).Append(s[i + 1]);
                        else
                            sb.Append("\\U").Append(cp.ToString("x8", System.Globalization.CultureInfo.InvariantCulture));
                        i++;
                    }
                    else if (IsPrintable(c))
                    {
                        sb.Append(c);
                    }
                    else
                    {
                        var code = (int)c;
                        var format = code < 0x100 ? "\\x" : "\\u";
                        sb.Append(format).Append(code.ToString(code < 0x100 ? "x2" : "x4", System.Globalization.CultureInfo.InvariantCulture));
                    }

                    break;
            }
        }

        sb.Append(quote);
    }

    /// <summary>str.isprintable() for one code point: everything but controls, format, separators (except
    /// the space), surrogates, private use and unassigned code points.</summary>
    private static bool IsPrintable(int cp)
    {
        if (cp == ' ')
            return true;
        if (cp < 0x7f)
            return cp >= 0x20;
        var category = cp < 0x10000 ? char.GetUnicodeCategory((char)cp) : System.Globalization.CharUnicodeInfo.GetUnicodeCategory(cp);
        return category is not (System.Globalization.UnicodeCategory.Control or System.Globalization.UnicodeCategory.Format
            or System.Globalization.UnicodeCategory.Surrogate or System.Globalization.UnicodeCategory.PrivateUse
            or System.Globalization.UnicodeCategory.OtherNotAssigned or System.Globalization.UnicodeCategory.SpaceSeparator
            or System.Globalization.UnicodeCategory.LineSeparator or System.Globalization.UnicodeCategory.ParagraphSeparator);
    }

    /// <summary>Python's <c>repr(float)</c>: shortest round-trip digits, scientific outside 1e-4 &lt;= |x| &lt; 1e16.</summary>
    public static string FloatRepr(double d)
    {
        if (double.IsNaN(d))
            return "nan";
        if (double.IsPositiveInfinity(d))
            return "inf";
        if (double.IsNegativeInfinity(d))
            return "-inf";
        if (d == 0)
            return double.IsNegative(d) ? "-0.0" : "0.0";

        // "E16" is not shortest; "R" is, so decompose it into digits and a decimal exponent.
        var r = d.ToString("R", System.Globalization.CultureInfo.InvariantCulture);
        var negative = r[0] == '-';
        if (negative)
            r = r[1..];
        var exp = 0;
        var ePos = r.IndexOfAny(['E', 'e']);
        if (ePos >= 0)
        {
            exp = int.Parse(r.AsSpan(ePos + 1), System.Globalization.CultureInfo.InvariantCulture);
            r = r[..ePos];
        }

        var dot = r.IndexOf('.');
        string digits;
        if (dot >= 0)
        {
            digits = r[..dot] + r[(dot + 1)..];
            exp += dot;
        }
        else
        {
            digits = r;
            exp += r.Length;
        }

        // digits * 10^(exp - digits.Length); normalise leading/trailing zeros.
        var lead = 0;
        while (lead < digits.Length - 1 && digits[lead] == '0')
        {
            lead++;
            exp--;
        }

        digits = digits[lead..].TrimEnd('0');
        if (digits.Length == 0)
            digits = "0";

        // Python: decimal point position decpt = exp; use scientific if decpt <= -4 or decpt > 16.
        var sb = new StringBuilder();
        if (negative)
            sb.Append('-');
        if (exp > -4 && exp <= 16)
        {
            if (exp <= 0)
            {
                sb.Append("0.").Append('0', -exp).Append(digits);
            }
            else if (exp >= digits.Length)
            {
                sb.Append(digits).Append('0', exp - digits.Length).Append(".0");
            }
            else
            {
                sb.Append(digits, 0, exp).Append('.').Append(digits, exp, digits.Length - exp);
            }
        }
        else
        {
            sb.Append(digits[0]);
            if (digits.Length > 1)
                sb.Append('.').Append(digits, 1, digits.Length - 1);
            var e = exp - 1;
            sb.Append('e').Append(e < 0 ? '-' : '+').Append(Math.Abs(e).ToString("00", System.Globalization.CultureInfo.InvariantCulture));
        }

        return sb.ToString();
    }
}
