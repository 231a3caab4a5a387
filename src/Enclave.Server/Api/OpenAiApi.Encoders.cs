using System.Runtime.InteropServices;
using System.Text.Json;
using System.Text.Json.Nodes;
using Enclave.Engine.Embeddings;
using Microsoft.AspNetCore.Http;

namespace Enclave.Server.Api;

/// <summary>/v1/embeddings (OpenAI's shape) and /v1/rerank, /rerank (the Jina/Cohere shape vLLM and TEI serve).</summary>
public sealed partial class OpenAiApi
{
    private async Task Embeddings(HttpContext ctx)
    {
        var r = await ReadBody(ctx);
        var model = catalog.ResolveEmbedding(r.String("model"));
        RequestLog.For(ctx).Model = model.Name;
        var format = r.String("encoding_format") ?? "float";
        if (format is not ("float" or "base64"))
        {
            throw ApiException.BadParam("encoding_format", $"'encoding_format' must be \"float\" or \"base64\", got \"{format}\"");
        }

        int? dimensions = r.Has("dimensions") ? (int)r.Integer("dimensions", 1, int.MaxValue)!.Value : null;
        if (model.CheckDimensions(dimensions) is { } problem)
        {
            throw ApiException.BadParam("dimensions", problem);
        }

        var (texts, tokens) = EmbeddingInputs(r, model);
        var limit = options.Encoders.MaxInputsPerRequest;
        var count = texts?.Count ?? tokens!.Count;
        if (count > limit)
        {
            throw ApiException.BadParam("input", $"'input' has {count} items; this server accepts at most {limit} per request");
        }

        var result = texts is not null
            ? await model.EmbedAsync(texts, dimensions, ctx.RequestAborted)
            : await model.EmbedTokensAsync(tokens!, dimensions, ctx.RequestAborted);
        RequestLog.For(ctx).PromptTokens = result.PromptTokens;

        ctx.Response.ContentType = "application/json";
        await using var writer = new Utf8JsonWriter(ctx.Response.Body);
        writer.WriteStartObject();
        writer.WriteString("object", "list");
        writer.WriteStartArray("data");
        for (var i = 0; i < result.Vectors.Length; i++)
        {
            writer.WriteStartObject();
            writer.WriteString("object", "embedding");
            writer.WriteNumber("index", i);
            if (format == "base64")
            {
                // Little-endian float32 bytes, as OpenAI returns them.
                writer.WriteBase64String("embedding", MemoryMarshal.AsBytes(result.Vectors[i].AsSpan()));
            }
            else
            {
                writer.WriteStartArray("embedding");
                foreach (var v in result.Vectors[i])
                {
                    writer.WriteNumberValue(v);
                }

                writer.WriteEndArray();
            }

            writer.WriteEndObject();
            if (writer.BytesPending > 1 << 16)
            {
                await writer.FlushAsync(ctx.RequestAborted);
            }
        }

        writer.WriteEndArray();
        writer.WriteString("model", model.Name);
        writer.WriteStartObject("usage");
        writer.WriteNumber("prompt_tokens", result.PromptTokens);
        writer.WriteNumber("total_tokens", result.PromptTokens);
        writer.WriteEndObject();
        WriteTruncationWarning(writer, result.TruncatedInputs, count, model.MaxInputTokens);
        writer.WriteEndObject();
        await writer.FlushAsync(ctx.RequestAborted);
    }

    /// <summary>'input' as OpenAI takes it: a string, an array of strings, an array of token ids, or an array of such arrays.</summary>
    private static (IReadOnlyList<string>? Texts, IReadOnlyList<int[]>? Tokens) EmbeddingInputs(JsonRequest r, EncoderModel model)
    {
        const string Shape = "'input' must be a string, an array of strings, an array of token ids or an array of token-id arrays";
        var node = r["input"] ?? throw ApiException.BadParam("input", "'input' is required");
        if (node.GetValueKind() == JsonValueKind.String)
        {
            var text = node.GetValue<string>();
            return text.Length == 0 ? throw ApiException.BadParam("input", "'input' must not be an empty string") : ([text], null);
        }

        if (node is not JsonArray array)
        {
            throw ApiException.BadParam("input", Shape);
        }

        if (array.Count == 0)
        {
            throw ApiException.BadParam("input", "'input' must not be an empty array");
        }

        var maxId = model.Tokenizer.VocabSize - 1;
        switch (array[0]?.GetValueKind())
        {
            case JsonValueKind.String:
            {
                var texts = new List<string>(array.Count);
                foreach (var item in array)
                {
                    if (item?.GetValueKind() != JsonValueKind.String)
                    {
                        throw ApiException.BadParam("input", Shape);
                    }

                    var text = item.GetValue<string>();
                    if (text.Length == 0)
                    {
                        throw ApiException.BadParam("input", $"'input[{texts.Count}]' must not be an empty string");
                    }

                    texts.Add(text);
                }

                return (texts, null);
            }

            case JsonValueKind.Number:
                return (null, [TokenIds(array, "input", maxId)]);
            case JsonValueKind.Array:
            {
                var lists = new List<int[]>(array.Count);
                foreach (var item in array)
                {
                    if (item is not JsonArray ids || ids.Count == 0)
                    {
                        throw ApiException.BadParam("input", item is JsonArray ? $"'input[{lists.Count}]' must not be an empty array" : Shape);
                    }

                    lists.Add(TokenIds(ids, $"input[{lists.Count}]", maxId));
                }

                return (null, lists);
            }

            default:
                throw ApiException.BadParam("input", Shape);
        }
    }

    private static int[] TokenIds(JsonArray array, string name, int maxId)
    {
        var ids = new int[array.Count];
        for (var i = 0; i < ids.Length; i++)
        {
            if (array[i] is not JsonValue v || v.GetValueKind() != JsonValueKind.Number)
            {
                throw ApiException.BadParam("input", $"'{name}' must hold only token ids (integers)");
            }

            ids[i] = (int)JsonRequest.Integer(v, name, 0, maxId)!.Value;
        }

        return ids;
    }

    private async Task Rerank(HttpContext ctx)
    {
        var r = await ReadBody(ctx);
        var model = catalog.ResolveReranker(r.String("model"));
        RequestLog.For(ctx).Model = model.Name;
        var query = r.String("query", required: true)!;
        if (query.Length == 0)
        {
            throw ApiException.BadParam("query", "'query' must not be empty");
        }

        var documents = Documents(r);
        var limit = options.Encoders.MaxInputsPerRequest;
        if (documents.Count > limit)
        {
            throw ApiException.BadParam("documents", $"'documents' has {documents.Count} items; this server accepts at most {limit} per request");
        }

        var topN = r.Has("top_n") ? (int)r.Integer("top_n", 1, int.MaxValue)!.Value : documents.Count;
        var returnDocuments = r.Bool("return_documents") ?? true;
        var result = await model.RerankAsync(query, documents, ctx.RequestAborted);
        RequestLog.For(ctx).PromptTokens = result.PromptTokens;

        // Highest relevance first; equal scores keep the documents' order.
        var order = Enumerable.Range(0, documents.Count).OrderByDescending(i => result.Scores[i]).ThenBy(i => i).Take(topN);
        var results = new JsonArray();
        foreach (var i in order)
        {
            var item = new JsonObject { ["index"] = i, ["relevance_score"] = result.Scores[i] };
            if (returnDocuments)
            {
                item["document"] = new JsonObject { ["text"] = documents[i] };
            }

            results.Add((JsonNode)item);
        }

        var body = new JsonObject
        {
            ["id"] = NewId("rerank-"),
            ["model"] = model.Name,
            ["usage"] = new JsonObject { ["prompt_tokens"] = result.PromptTokens, ["total_tokens"] = result.PromptTokens },
            ["results"] = results,
        };
        if (result.TruncatedInputs > 0)
        {
            body["warnings"] = new JsonArray((JsonNode)TruncationWarning(result.TruncatedInputs, documents.Count, model.MaxInputTokens));
        }

        await WriteJson(ctx, body);
    }

    /// <summary>'documents' as strings, or as objects with a "text" (Cohere's other form).</summary>
    private static List<string> Documents(JsonRequest r)
    {
        if (r["documents"] is not JsonArray array)
        {
            throw ApiException.BadParam("documents", r.Has("documents") ? "'documents' must be an array of strings" : "'documents' is required");
        }

        if (array.Count == 0)
        {
            throw ApiException.BadParam("documents", "'documents' must not be empty");
        }

        var documents = new List<string>(array.Count);
        foreach (var item in array)
        {
            var text = item switch
            {
                JsonValue v when v.GetValueKind() == JsonValueKind.String => v.GetValue<string>(),
                JsonObject o when o["text"] is JsonValue t && t.GetValueKind() == JsonValueKind.String => t.GetValue<string>(),
                _ => throw ApiException.BadParam("documents", $"'documents[{documents.Count}]' must be a string (or an object with a \"text\" string)"),
            };
            documents.Add(text);
        }

        return documents;
    }

    private static string TruncationWarning(int truncated, int total, int maxTokens) =>
        $"{truncated} of {total} inputs were longer than the model's {maxTokens} tokens and were truncated";

    private static void WriteTruncationWarning(Utf8JsonWriter writer, int truncated, int total, int maxTokens)
    {
        if (truncated == 0)
        {
            return;
        }

        writer.WriteStartArray("warnings");
        writer.WriteStringValue(TruncationWarning(truncated, total, maxTokens));
        writer.WriteEndArray();
    }
}
