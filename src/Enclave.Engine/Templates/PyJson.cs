using System.Globalization;
using System.Text;

namespace Enclave.Engine.Templates;

/// <summary>
/// Python's <c>json.dumps(value, ensure_ascii=False, indent=..., sort_keys=...)</c>, which is what transformers
/// installs as the <c>tojson</c> filter: ", " and ": " separators without indent, "," and ": " with it,
/// non-ASCII text left as is, floats in repr form, and no HTML escaping.
/// </summary>
internal static class PyJson
{
    public static string Dumps(object? value, string? indent, bool sortKeys, string? itemSeparator = null, string? keySeparator = null)
    {
        var sb = new StringBuilder();
        itemSeparator ??= indent is null ? ", " : ",";
        keySeparator ??= ": ";
        Write(sb, value, indent, sortKeys, itemSeparator, keySeparator, 0);
        return sb.ToString();
    }

    private static void NewLine(StringBuilder sb, string? indent, int depth)
    {
        if (indent is null)
            return;
        sb.Append('\n');
        for (var i = 0; i < depth; i++)
            sb.Append(indent);
    }

    private static void Write(StringBuilder sb, object? value, string? indent, bool sortKeys, string itemSep, string keySep, int depth)
    {
        switch (value)
        {
            case null:
                sb.Append("null");
                break;
            case bool b:
                sb.Append(b ? "true" : "false");
                break;
            case long l:
                sb.Append(l.ToString(CultureInfo.InvariantCulture));
                break;
            case double d:
                sb.Append(double.IsNaN(d) ? "NaN" : double.IsPositiveInfinity(d) ? "Infinity" : double.IsNegativeInfinity(d) ? "-Infinity" : Py.FloatRepr(d));
                break;
            case string s:
                WriteString(sb, s);
                break;
            case IReadOnlyList<object?> list:
                if (list.Count == 0)
                {
                    sb.Append("[]");
                    break;
                }

                sb.Append('[');
                for (var i = 0; i < list.Count; i++)
                {
                    if (i > 0)
                        sb.Append(itemSep);
                    NewLine(sb, indent, depth + 1);
                    Write(sb, list[i], indent, sortKeys, itemSep, keySep, depth + 1);
                }

                NewLine(sb, indent, depth);
                sb.Append(']');
                break;
            case PyDict dict:
            {
                if (dict.Count == 0)
                {
                    sb.Append("{}");
                    break;
                }

                IEnumerable<KeyValuePair<object, object?>> entries = dict;
                if (sortKeys)
                {
                    var sorted = dict.ToList();
                    try
                    {
                        sorted.Sort((x, y) => Py.Compare(x.Key, y.Key, "<"));
                    }
                    catch (InvalidOperationException e) when (e.InnerException is TemplateException inner)
                    {
                        throw inner;
                    }

                    entries = sorted;
                }

                sb.Append('{');
                var first = true;
                foreach (var kv in entries)
                {
                    if (!first)
                        sb.Append(itemSep);
                    first = false;
                    NewLine(sb, indent, depth + 1);
                    WriteString(sb, KeyString(kv.Key));
                    sb.Append(keySep);
                    Write(sb, kv.Value, indent, sortKeys, itemSep, keySep, depth + 1);
                }

                NewLine(sb, indent, depth);
                sb.Append('}');
                break;
            }

            case Undefined:
                throw new TemplateException("Object of type Undefined is not JSON serializable");
            default:
                throw new TemplateException($"Object of type {Py.TypeName(value)} is not JSON serializable");
        }
    }

    private static string KeyString(object key) => key switch
    {
        string s => s,
        bool b => b ? "true" : "false",
        long l => l.ToString(CultureInfo.InvariantCulture),
        double d => Py.FloatRepr(d),
        _ => throw new TemplateException($"keys must be str, int, float, bool or None, not {Py.TypeName(key)}"),
    };

    private static void WriteString(StringBuilder sb, string s)
    {
        sb.Append('"');
        foreach (var c in s)
        {
            switch (c)
            {
                case '"': sb.Append("\\\""); break;
                case '\\': sb.Append("\\\\"); break;
                case '\n': sb.Append("\\n"); break;
                case '\r': sb.Append("\\r"); break;
                case '\t': sb.Append("\\t"); break;
                case '\b': sb.Append("\\b"); break;
                case '\f': sb.Append("\\f"); break;
                default:
                    if (c < 0x20)
                        sb.Append("\\u").Append(((int)c).ToString("x4", CultureInfo.InvariantCulture));
                    else
                        sb.Append(c);
                    break;
            }
        }

        sb.Append('"');
    }
}
