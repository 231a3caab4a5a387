using System.Text.Json;

namespace Enclave.Operations.Planning;

/// <summary>
/// The parameter counts a Hugging Face <c>config.json</c> implies, split the way sizing needs them: projection
/// weights (what quantization shrinks), 16-bit weights (embeddings, lm_head, norms, biases, routers), and for MoE
/// models the routed-expert share (only <c>num_experts_per_tok</c> of it is read per token).
/// </summary>
public sealed record ModelShape
{
    public required string Name { get; init; }
    public required int Layers { get; init; }
    public required int HiddenSize { get; init; }
    public required int VocabSize { get; init; }
    public required int AttentionHeads { get; init; }
    public required int KvHeads { get; init; }
    public required int HeadDim { get; init; }
    public required int IntermediateSize { get; init; }

    /// <summary>MLA (DeepSeek-V2/V3): the cache holds kv_lora_rank + qk_rope_head_dim values per layer, shared by all heads.</summary>
    public int KvLoraRank { get; init; }
    public int QkRopeHeadDim { get; init; }
    public bool UsesMla => KvLoraRank > 0;

    public int RoutedExperts { get; init; }
    public int ExpertsPerToken { get; init; }
    public int MoeLayers { get; init; }
    public bool IsMoe => RoutedExperts > 0 && MoeLayers > 0;

    /// <summary>Layer projection weights: attention and MLP matrices, all experts included.</summary>
    public required long ProjectionParameters { get; init; }

    /// <summary>Routed-expert projection weights (a subset of <see cref="ProjectionParameters"/>).</summary>
    public long RoutedExpertParameters { get; init; }

    /// <summary>Embeddings, lm_head (when untied), norms, biases and MoE routers: kept in 16 bits by every scheme here.</summary>
    public required long SixteenBitParameters { get; init; }

    public long TotalParameters => ProjectionParameters + SixteenBitParameters;

    /// <summary>Parameters one token reads: everything but the routed experts it is not sent to.</summary>
    public long ActiveParameters => IsMoe
        ? TotalParameters - RoutedExpertParameters + RoutedExpertParameters / RoutedExperts * ExpertsPerToken
        : TotalParameters;

    /// <summary>Reads a model directory's config.json or a config file itself.</summary>
    public static ModelShape Load(string path)
    {
        var file = Directory.Exists(path) ? Path.Combine(path, "config.json") : path;
        if (!File.Exists(file))
        {
            throw new FileNotFoundException($"--model {path}: no config.json there");
        }

        JsonDocument doc;
        try
        {
            doc = JsonDocument.Parse(File.ReadAllText(file));
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"{file}: not valid JSON ({e.Message})", e);
        }

        using (doc)
        {
            var name = Directory.Exists(path) ? Path.GetFileName(Path.TrimEndingDirectorySeparator(Path.GetFullPath(path))) : Path.GetFileNameWithoutExtension(file);
            return FromConfig(doc.RootElement, name, file);
        }
    }

    public static ModelShape FromConfig(JsonElement c, string name, string source)
    {
        // A multimodal wrapper keeps the language model's numbers under text_config.
        if (c.TryGetProperty("text_config", out var text) && text.ValueKind == JsonValueKind.Object && !c.TryGetProperty("hidden_size", out _))
        {
            c = text;
        }

        int Req(string key) => c.TryGetProperty(key, out var v) && v.ValueKind == JsonValueKind.Number
            ? v.GetInt32()
            : throw new InvalidDataException($"{source}: '{key}' is missing (needed to size the model)");
        int Opt(string key, int fallback) => c.TryGetProperty(key, out var v) && v.ValueKind == JsonValueKind.Number ? v.GetInt32() : fallback;
        bool Flag(string key, bool fallback) => c.TryGetProperty(key, out var v) && v.ValueKind is JsonValueKind.True or JsonValueKind.False ? v.GetBoolean() : fallback;

        var hidden = Req("hidden_size");
        var layers = Req("num_hidden_layers");
        var vocab = Req("vocab_size");
        var heads = Req("num_attention_heads");
        var kvHeads = Opt("num_key_value_heads", heads);
        var headDim = Opt("head_dim", hidden / heads);
        var intermediate = Req("intermediate_size");
        var modelType = c.TryGetProperty("model_type", out var mt) ? mt.GetString() ?? "" : "";
        var tied = Flag("tie_word_embeddings", false);
        // Qwen2 adds biases to q, k and v; Qwen3 and Llama do not (unless attention_bias says so).
        var qkvBias = Flag("attention_bias", modelType is "qwen2" or "qwen2_moe");

        long sixteen = (long)vocab * hidden * (tied ? 1 : 2) + hidden; // embeddings, lm_head, final norm
        long projection = 0;
        long routed = 0;

        var kvLora = Opt("kv_lora_rank", 0);
        var ropeDim = Opt("qk_rope_head_dim", 0);
        long attention;
        if (kvLora > 0)
        {
            // MLA: q through an optional low-rank, kv through the shared latent plus a decoupled rope key.
            var qLora = Opt("q_lora_rank", 0);
            var nope = Req("qk_nope_head_dim");
            var vDim = Req("v_head_dim");
            long qHead = nope + ropeDim;
            long q = qLora > 0 ? (long)hidden * qLora + (long)qLora * heads * qHead : (long)hidden * heads * qHead;
            long kvA = (long)hidden * (kvLora + ropeDim);
            long kvB = (long)kvLora * heads * (nope + vDim);
            long o = (long)heads * vDim * hidden;
            attention = q + kvA + kvB + o;
            sixteen += layers * ((qLora > 0 ? qLora : 0) + (long)kvLora);
        }
        else
        {
            attention = (long)hidden * heads * headDim * 2 + (long)hidden * kvHeads * headDim * 2;
            if (qkvBias)
            {
                sixteen += layers * ((long)heads * headDim + 2L * kvHeads * headDim);
            }

            if (modelType.StartsWith("qwen3", StringComparison.Ordinal))
            {
                sixteen += layers * 2L * headDim; // q_norm, k_norm
            }
        }

        projection += layers * attention;
        sixteen += layers * 2L * hidden; // input and post-attention norms

        // MoE: DeepSeek (n_routed_experts, first_k_dense_replace, moe_layer_freq) and Qwen-MoE (num_experts).
        var experts = Opt("n_routed_experts", Opt("num_experts", 0));
        var topK = Opt("num_experts_per_tok", 0);
        var moeLayers = 0;
        if (experts > 0)
        {
            var firstDense = Opt("first_k_dense_replace", 0);
            var freq = Math.Max(1, Opt("moe_layer_freq", Opt("decoder_sparse_step", 1)));
            for (var i = 0; i < layers; i++)
            {
                if (i >= firstDense && i % freq == 0)
                {
                    moeLayers++;
                }
            }

            var moeInter = Req("moe_intermediate_size");
            var shared = Opt("n_shared_experts", 0);
            var sharedInter = Opt("shared_expert_intermediate_size", shared * moeInter);
            long expert = 3L * hidden * moeInter;
            routed = moeLayers * experts * expert;
            projection += routed + moeLayers * 3L * hidden * sharedInter;
            sixteen += moeLayers * ((long)experts * hidden + (modelType.StartsWith("deepseek_v3", StringComparison.Ordinal) ? experts : 0)); // router (+ V3 score bias)
            if (sharedInter > 0 && modelType.StartsWith("qwen", StringComparison.Ordinal))
            {
                sixteen += moeLayers * (long)hidden; // Qwen's shared-expert gate
            }
        }

        projection += (layers - moeLayers) * 3L * hidden * intermediate;

        return new ModelShape
        {
            Name = name,
            Layers = layers,
            HiddenSize = hidden,
            VocabSize = vocab,
            AttentionHeads = heads,
            KvHeads = kvHeads,
            HeadDim = headDim,
            IntermediateSize = intermediate,
            KvLoraRank = kvLora,
            QkRopeHeadDim = ropeDim,
            RoutedExperts = experts,
            ExpertsPerToken = topK,
            MoeLayers = moeLayers,
            ProjectionParameters = projection,
            RoutedExpertParameters = routed,
            SixteenBitParameters = sixteen,
        };
    }
}
