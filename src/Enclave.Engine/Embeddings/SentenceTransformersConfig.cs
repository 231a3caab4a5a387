using System.Text.Json;
using System.Text.Json.Nodes;
using Enclave.Engine.Models;

namespace Enclave.Engine.Embeddings;

/// <summary>How token states become one vector, per sentence-transformers' Pooling module.</summary>
public enum PoolingMode
{
    /// <summary>The first token's state ([CLS] / &lt;s&gt;): bge-small/base/large, bge-m3.</summary>
    Cls,

    /// <summary>The mean over the sequence's tokens (special tokens included, as sentence-transformers does).</summary>
    Mean,

    /// <summary>The last token's state (decoder-style embedders).</summary>
    LastToken,
}

/// <summary>
/// What the sentence-transformers files beside an embedding model say: modules.json (is there a Normalize module?),
/// the Pooling module's config.json (which mode), sentence_bert_config.json (max_seq_length), and, in config.json,
/// whether the model was trained for Matryoshka truncation (is_matryoshka / matryoshka_dimensions, as vLLM reads them).
/// Without modules.json the bge convention applies: CLS pooling, L2 normalisation.
/// </summary>
public sealed record SentenceTransformersConfig(
    PoolingMode Pooling,
    bool Normalize,
    int? MaxSeqLength,
    bool IsMatryoshka,
    int[]? MatryoshkaDimensions,
    bool FromFiles)
{
    public static SentenceTransformersConfig Load(string directory, ModelConfig config)
    {
        var matryoshkaDimensions = config.Raw["matryoshka_dimensions"] is JsonArray dims
            ? dims.Where(d => d is not null).Select(d => d!.GetValue<int>()).ToArray()
            : null;
        var isMatryoshka = (config.Raw["is_matryoshka"] is JsonValue m && m.TryGetValue<bool>(out var flag) && flag) || matryoshkaDimensions is not null;
        var maxSeqLength = ReadObject(Path.Combine(directory, "sentence_bert_config.json"))?["max_seq_length"] is JsonValue v && v.TryGetValue<int>(out var max) ? max : (int?)null;

        var modulesPath = Path.Combine(directory, "modules.json");
        if (!File.Exists(modulesPath))
        {
            return new SentenceTransformersConfig(PoolingMode.Cls, true, maxSeqLength, isMatryoshka, matryoshkaDimensions, FromFiles: false);
        }

        if (ParseFile(modulesPath) is not JsonArray modules)
        {
            throw new ModelConfigException($"{modulesPath}: must be a JSON array of modules");
        }

        string? poolingPath = null;
        var normalize = false;
        foreach (var module in modules.OfType<JsonObject>())
        {
            var type = module["type"]?.GetValue<string>() ?? "";
            var path = module["path"]?.GetValue<string>() ?? "";
            if (type.EndsWith(".Pooling", StringComparison.Ordinal))
            {
                poolingPath = Path.Combine(directory, path, "config.json");
            }
            else if (type.EndsWith(".Normalize", StringComparison.Ordinal))
            {
                normalize = true;
            }
            else if (!type.EndsWith(".Transformer", StringComparison.Ordinal))
            {
                throw new ModelConfigException($"{modulesPath}: module '{type}' is not supported (Transformer, Pooling and Normalize are)");
            }
        }

        var pooling = PoolingMode.Cls;
        if (poolingPath is not null)
        {
            var p = ReadObject(poolingPath) ?? throw new ModelConfigException($"{poolingPath}: the Pooling module's config.json is missing");
            bool On(string key) => p[key] is JsonValue b && b.TryGetValue<bool>(out var on) && on;
            string[] unsupported = ["pooling_mode_max_tokens", "pooling_mode_mean_sqrt_len_tokens", "pooling_mode_weightedmean_tokens"];
            var chosen = new List<PoolingMode>();
            if (On("pooling_mode_cls_token"))
            {
                chosen.Add(PoolingMode.Cls);
            }

            if (On("pooling_mode_mean_tokens"))
            {
                chosen.Add(PoolingMode.Mean);
            }

            if (On("pooling_mode_lasttoken"))
            {
                chosen.Add(PoolingMode.LastToken);
            }

            var other = unsupported.FirstOrDefault(On);
            if (other is not null || chosen.Count != 1)
            {
                throw new ModelConfigException($"{poolingPath}: exactly one of cls, mean or lasttoken pooling must be on (got {(other ?? string.Join("+", chosen))})");
            }

            pooling = chosen[0];
        }

        return new SentenceTransformersConfig(pooling, normalize, maxSeqLength, isMatryoshka, matryoshkaDimensions, FromFiles: true);
    }

    private static JsonNode? ParseFile(string path)
    {
        try
        {
            return JsonNode.Parse(File.ReadAllText(path));
        }
        catch (JsonException e)
        {
            throw new ModelConfigException($"{path}: not valid JSON ({e.Message})", e);
        }
    }

    private static JsonObject? ReadObject(string path) => File.Exists(path) ? ParseFile(path) as JsonObject : null;
}
