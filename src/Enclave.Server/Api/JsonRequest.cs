using System.Text.Json;
using System.Text.Json.Nodes;

namespace Enclave.Server.Api;

/// <summary>
/// Strict reading of a JSON request body: every accessor checks the JSON type and range and throws a 400
/// <see cref="ApiException"/> naming the parameter, so wrong types, huge numbers and negative values never reach the
/// engine as a 500.
/// </summary>
public sealed class JsonRequest(JsonObject body)
{
    public JsonObject Body { get; } = body;

    /// <summary>Parses UTF-8 bytes into a JSON object; malformed JSON or invalid UTF-8 is a 400.</summary>
    public static JsonRequest Parse(ReadOnlyMemory<byte> utf8)
    {
        if (utf8.IsEmpty)
        {
            throw new ApiException(400, "the request body is empty: send a JSON object");
        }

        if (!System.Text.Unicode.Utf8.IsValid(utf8.Span))
        {
            throw new ApiException(400, "the request body is not valid UTF-8");
        }

        JsonNode? node;
        try
        {
            node = JsonNode.Parse(utf8.Span, documentOptions: new JsonDocumentOptions { MaxDepth = 64 });
        }
        catch (JsonException e)
        {
            throw new ApiException(400, $"the request body is not valid JSON: {e.Message}");
        }
        catch (ArgumentException e)
        {
            throw new ApiException(400, $"the request body is not valid UTF-8 JSON: {e.Message}");
        }

        return node is JsonObject obj
            ? new JsonRequest(obj)
            : throw new ApiException(400, "the request body must be a JSON object");
    }

    public bool Has(string name) => Body.TryGetPropertyValue(name, out var v) && v is not null;

    public JsonNode? this[string name] => Body.TryGetPropertyValue(name, out var v) ? v : null;

    public string? String(string name, bool required = false)
    {
        var node = this[name];
        if (node is null)
        {
            return required ? throw ApiException.BadParam(name, $"'{name}' is required") : null;
        }

        if (node.GetValueKind() != JsonValueKind.String)
        {
            throw ApiException.BadParam(name, $"'{name}' must be a string");
        }

        return node.GetValue<string>();
    }

    public bool? Bool(string name)
    {
        var node = this[name];
        if (node is null)
        {
            return null;
        }

        return node.GetValueKind() switch
        {
            JsonValueKind.True => true,
            JsonValueKind.False => false,
            _ => throw ApiException.BadParam(name, $"'{name}' must be a boolean"),
        };
    }

    public double? Number(string name, double min, double max) => Number(this[name], name, min, max);

    public static double? Number(JsonNode? node, string name, double min, double max)
    {
        if (node is null)
        {
            return null;
        }

        if (node.GetValueKind() != JsonValueKind.Number || !node.AsValue().TryGetValue<double>(out var value) || !double.IsFinite(value))
        {
            throw ApiException.BadParam(name, $"'{name}' must be a number");
        }

        if (value < min || value > max)
        {
            throw ApiException.BadParam(name, $"'{name}' must be between {min} and {max} (got {value})");
        }

        return value;
    }

    public long? Integer(string name, long min, long max) => Integer(this[name], name, min, max);

    public static long? Integer(JsonNode? node, string name, long min, long max)
    {
        if (node is null)
        {
            return null;
        }

        if (node.GetValueKind() != JsonValueKind.Number)
        {
            throw ApiException.BadParam(name, $"'{name}' must be an integer");
        }

        var value = node.AsValue();
        if (!value.TryGetValue<long>(out var n))
        {
            // Integral doubles such as 5.0 are accepted; fractions and numbers beyond 64 bits are not.
            if (value.TryGetValue<double>(out var d) && double.IsFinite(d) && Math.Floor(d) == d && Math.Abs(d) < 9e15)
            {
                n = (long)d;
            }
            else
            {
                throw ApiException.BadParam(name, $"'{name}' must be an integer between {min} and {max}");
            }
        }

        if (n < min || n > max)
        {
            throw ApiException.BadParam(name, $"'{name}' must be between {min} and {max} (got {n})");
        }

        return n;
    }

    /// <summary>A string or an array of strings (as OpenAI's stop), or null.</summary>
    public IReadOnlyList<string>? StringOrStrings(string name)
    {
        var node = this[name];
        if (node is null)
        {
            return null;
        }

        if (node.GetValueKind() == JsonValueKind.String)
        {
            return [node.GetValue<string>()];
        }

        if (node is JsonArray array)
        {
            var list = new List<string>(array.Count);
            foreach (var item in array)
            {
                if (item is null || item.GetValueKind() != JsonValueKind.String)
                {
                    throw ApiException.BadParam(name, $"'{name}' must be a string or an array of strings");
                }

                list.Add(item.GetValue<string>());
            }

            return list;
        }

        throw ApiException.BadParam(name, $"'{name}' must be a string or an array of strings");
    }

    public IReadOnlyList<int>? Integers(string name, int max)
    {
        var node = this[name];
        if (node is null)
        {
            return null;
        }

        if (node is not JsonArray array)
        {
            throw ApiException.BadParam(name, $"'{name}' must be an array of integers");
        }

        var list = new List<int>(array.Count);
        foreach (var item in array)
        {
            list.Add((int)Integer(item ?? throw ApiException.BadParam(name, $"'{name}' must be an array of integers"), name, 0, max)!.Value);
        }

        return list;
    }

    public JsonObject? Object(string name)
    {
        var node = this[name];
        return node switch
        {
            null => null,
            JsonObject o => o,
            _ => throw ApiException.BadParam(name, $"'{name}' must be an object"),
        };
    }
}
