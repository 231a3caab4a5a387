using System.Text.Json;
using System.Text.Json.Nodes;

namespace Enclave.Engine.Models;

/// <summary>Rotary scaling as read from either <c>rope_scaling</c> (transformers 4) or <c>rope_parameters</c> (transformers 5).</summary>
public sealed record RopeScaling(
    string Type,
    double Factor,
    double LowFreqFactor,
    double HighFreqFactor,
    int? OriginalMaxPositionEmbeddings,
    double? BetaFast,
    double? BetaSlow,
    double? Mscale,
    double? MscaleAllDim,
    double? AttentionFactor,
    bool Truncate);

/// <summary>
/// The parts of a Hugging Face <c>config.json</c> the engine needs, with the defaults transformers applies when a key
/// is absent. Unknown keys are kept in <see cref="Raw"/> for architecture-specific fields.
/// </summary>
public sealed class ModelConfig
{
    public required string Path { get; init; }

    public required string Architecture { get; init; }

    public required string ModelType { get; init; }

    public required int HiddenSize { get; init; }

    public required int IntermediateSize { get; init; }

    public required int NumHiddenLayers { get; init; }

    public required int NumAttentionHeads { get; init; }

    public required int NumKeyValueHeads { get; init; }

    public required int HeadDim { get; init; }

    public required int VocabSize { get; init; }

    public required double RmsNormEps { get; init; }

    public required int MaxPositionEmbeddings { get; init; }

    public required bool TieWordEmbeddings { get; init; }

    public required bool AttentionBias { get; init; }

    public required bool MlpBias { get; init; }

    public required double RopeTheta { get; init; }

    public RopeScaling? RopeScaling { get; init; }

    public double PartialRotaryFactor { get; init; } = 1.0;

    public string HiddenAct { get; init; } = "silu";

    public int[] EosTokenIds { get; init; } = [];

    public int? BosTokenId { get; init; }

    /// <summary>The checkpoint's declared dtype (<c>torch_dtype</c> or <c>dtype</c>), e.g. "bfloat16".</summary>
    public string? DType { get; init; }

    /// <summary>How linear weights are quantized (<c>quantization_config</c>), or null for plain float weights.</summary>
    public Formats.Quantization.QuantizationConfig? Quantization { get; init; }

    public required JsonObject Raw { get; init; }

    /// <summary>
    /// Per-frequency RoPE divisors (llama.cpp's <c>rope_freqs.weight</c>, how GGUF files carry Llama 3 scaling):
    /// when set, inverse frequency i is the unscaled one divided by factor i, and <see cref="RopeScaling"/> is unused.
    /// </summary>
    public float[]? RopeFrequencyFactors { get; internal set; }

    public static ModelConfig Load(string directoryOrFile)
    {
        var path = Directory.Exists(directoryOrFile) ? System.IO.Path.Combine(directoryOrFile, "config.json") : directoryOrFile;
        if (!File.Exists(path))
        {
            throw new ModelConfigException($"{path}: config.json not found");
        }

        JsonNode? node;
        try
        {
            node = JsonNode.Parse(File.ReadAllText(path));
        }
        catch (JsonException e)
        {
            throw new ModelConfigException($"{path}: not valid JSON ({e.Message})", e);
        }

        if (node is not JsonObject obj)
        {
            throw new ModelConfigException($"{path}: must be a JSON object");
        }

        return Parse(obj, path);
    }

    public static ModelConfig Parse(JsonObject obj, string path)
    {
        var reader = new Reader(obj, path);
        var architectures = obj["architectures"] as JsonArray;
        var architecture = architectures is { Count: > 0 } ? architectures[0]?.GetValue<string>() : null;
        if (string.IsNullOrEmpty(architecture))
        {
            throw new ModelConfigException($"{path}: 'architectures' is missing; cannot tell which model this is");
        }

        var hidden = reader.Int("hidden_size");
        var heads = reader.Int("num_attention_heads");
        if (heads <= 0 || hidden <= 0)
        {
            throw new ModelConfigException($"{path}: hidden_size and num_attention_heads must be positive");
        }

        var kvHeads = reader.IntOrNull("num_key_value_heads") ?? heads;
        if (kvHeads <= 0 || heads % kvHeads != 0)
        {
            throw new ModelConfigException($"{path}: num_attention_heads ({heads}) must be a multiple of num_key_value_heads ({kvHeads})");
        }

        var headDim = reader.IntOrNull("head_dim") ?? hidden / heads;
        var (theta, scaling) = ReadRope(obj, reader, path);
        var eos = ReadIds(obj["eos_token_id"]);
        var bos = ReadIds(obj["bos_token_id"]);
        return new ModelConfig
        {
            Path = path,
            Architecture = architecture,
            ModelType = reader.StringOrNull("model_type") ?? string.Empty,
            HiddenSize = hidden,
            IntermediateSize = reader.IntOrNull("intermediate_size") ?? 0,
            NumHiddenLayers = reader.Int("num_hidden_layers"),
            NumAttentionHeads = heads,
            NumKeyValueHeads = kvHeads,
            HeadDim = headDim,
            VocabSize = reader.Int("vocab_size"),
            RmsNormEps = reader.DoubleOrNull("rms_norm_eps") ?? 1e-6,
            MaxPositionEmbeddings = reader.IntOrNull("max_position_embeddings") ?? 2048,
            TieWordEmbeddings = reader.BoolOrNull("tie_word_embeddings") ?? false,
            AttentionBias = reader.BoolOrNull("attention_bias") ?? false,
            MlpBias = reader.BoolOrNull("mlp_bias") ?? false,
            RopeTheta = theta,
            RopeScaling = scaling,
            PartialRotaryFactor = reader.DoubleOrNull("partial_rotary_factor") ?? 1.0,
            HiddenAct = reader.StringOrNull("hidden_act") ?? "silu",
            EosTokenIds = eos,
            BosTokenId = bos.Length > 0 ? bos[0] : null,
            DType = reader.StringOrNull("torch_dtype") ?? reader.StringOrNull("dtype"),
            Quantization = Formats.Quantization.QuantizationConfig.Parse(obj, path),
            Raw = obj,
        };
    }

    internal static int[] ReadIds(JsonNode? node) => node switch
    {
        null => [],
        JsonArray array => array.Where(n => n is not null).Select(n => n!.GetValue<int>()).ToArray(),
        JsonValue v when v.TryGetValue<int>(out var id) => [id],
        _ => [],
    };

    private static (double Theta, RopeScaling? Scaling) ReadRope(JsonObject obj, Reader reader, string path)
    {
        // transformers 5 folds rope_theta and the scaling dict into rope_parameters; transformers 4 checkpoints
        // (nearly all published ones) keep rope_theta at top level and the scaling in rope_scaling.
        var parameters = obj["rope_parameters"] as JsonObject;
        var scalingNode = parameters ?? obj["rope_scaling"] as JsonObject;
        var theta = reader.DoubleOrNull("rope_theta")
                    ?? (parameters?["rope_theta"] is JsonValue tv ? tv.GetValue<double>() : (double?)null)
                    ?? 10000.0;
        if (scalingNode is null)
        {
            return (theta, null);
        }

        var sub = new Reader(scalingNode, path + " (rope scaling)");
        var type = sub.StringOrNull("rope_type") ?? sub.StringOrNull("type") ?? "default";
        if (type == "default")
        {
            return (theta, null);
        }

        string[] supported = ["linear", "llama3", "yarn"];
        if (!supported.Contains(type))
        {
            throw new ModelConfigException($"{path}: rope scaling type '{type}' is not supported (supported: default, {string.Join(", ", supported)})");
        }

        return (theta, new RopeScaling(
            type,
            sub.DoubleOrNull("factor") ?? 1.0,
            sub.DoubleOrNull("low_freq_factor") ?? 1.0,
            sub.DoubleOrNull("high_freq_factor") ?? 4.0,
            sub.IntOrNull("original_max_position_embeddings"),
            sub.DoubleOrNull("beta_fast"),
            sub.DoubleOrNull("beta_slow"),
            sub.DoubleOrNull("mscale"),
            sub.DoubleOrNull("mscale_all_dim"),
            sub.DoubleOrNull("attention_factor"),
            sub.BoolOrNull("truncate") ?? true));
    }

    /// <summary>Typed access to config keys with errors that name the file and key.</summary>
    internal readonly struct Reader(JsonObject obj, string path)
    {
        public int Int(string key) =>
            IntOrNull(key) ?? throw new ModelConfigException($"{path}: required key '{key}' is missing");

        public int? IntOrNull(string key)
        {
            var node = obj[key];
            if (node is null)
            {
                return null;
            }

            if (node is JsonValue v && v.TryGetValue<long>(out var l) && l is >= int.MinValue and <= int.MaxValue)
            {
                return (int)l;
            }

            if (node is JsonValue d && d.TryGetValue<double>(out var x) && x == Math.Floor(x) && Math.Abs(x) < int.MaxValue)
            {
                return (int)x;
            }

            throw new ModelConfigException($"{path}: '{key}' must be an integer, got {node.ToJsonString()}");
        }

        public double? DoubleOrNull(string key)
        {
            var node = obj[key];
            if (node is null)
            {
                return null;
            }

            if (node is JsonValue v && v.TryGetValue<double>(out var d))
            {
                return d;
            }

            throw new ModelConfigException($"{path}: '{key}' must be a number, got {node.ToJsonString()}");
        }

        public bool? BoolOrNull(string key)
        {
            var node = obj[key];
            if (node is null)
            {
                return null;
            }

            if (node is JsonValue v && v.TryGetValue<bool>(out var b))
            {
                return b;
            }

            throw new ModelConfigException($"{path}: '{key}' must be true or false, got {node.ToJsonString()}");
        }

        public string? StringOrNull(string key)
        {
            var node = obj[key];
            return node is JsonValue v && v.TryGetValue<string>(out var s) ? s : null;
        }
    }
}

public sealed class ModelConfigException : Exception
{
    public ModelConfigException(string message)
        : base(message)
    {
    }

    public ModelConfigException(string message, Exception inner)
        : base(message, inner)
    {
    }
}
