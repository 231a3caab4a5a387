using System.Runtime.InteropServices;
using System.Text.Json;
using System.Text.Json.Nodes;
using Enclave.Engine.Backends;
using Enclave.Engine.Models;
using Enclave.Engine.Tokenization;

namespace Enclave.Engine.Formats.Gguf;

/// <summary>
/// A llama.cpp GGUF model file read as the engine's model inputs: the tensors under their Hugging Face names (an
/// <see cref="IWeightSource"/>), a <see cref="ModelConfig"/> built from the <c>{arch}.*</c> metadata, and the
/// tokenizer and chat template from <c>tokenizer.ggml.*</c> / <c>tokenizer.chat_template</c>.
/// Tensors stay in the mapped file in their stored type, except the query and key projections of the
/// <c>llama</c> architecture, whose rows llama.cpp's converter interleaves per head (for its rotate-pairs RoPE);
/// those rows are put back in Hugging Face order once, into memory owned here.
/// For <c>deepseek2</c> (DeepSeek-V2/V3/R1) each routed expert is a 2-D view into its layer's stacked 3-D tensor
/// (no copy), and newer files' split <c>attn_k_b</c>/<c>attn_v_b</c> are joined back into kv_b_proj (F32, owned here).
/// </summary>
public sealed unsafe class GgufModel : IWeightSource
{
    private static readonly Dictionary<string, string> Architectures = new(StringComparer.Ordinal)
    {
        ["llama"] = "LlamaForCausalLM",
        ["qwen2"] = "Qwen2ForCausalLM",
        ["qwen3"] = "Qwen3ForCausalLM",
        ["deepseek2"] = "DeepseekV3ForCausalLM", // or DeepseekV2ForCausalLM: see DeepseekArchitecture
    };

    /// <summary>llama.cpp's expert_gating_func values.</summary>
    private const int GatingSoftmax = 1;
    private const int GatingSigmoid = 2;

    /// <summary>
    /// llama.cpp's converter stores DeepSeek's rope.scaling.yarn_log_multiplier as 0.1 × mscale_all_dim (its
    /// TAG_DEEPSEEK2_YARN_LOG_MUL_FIX convention) and has no key for mscale, which it takes to equal mscale_all_dim
    /// (true of every published DeepSeek checkpoint). When they differ the exporter writes mscale under this key.
    /// </summary>
    internal const string DeepseekMscaleKey = "enclave.rope.scaling.mscale";

    private readonly GgufFile file;
    private readonly Dictionary<string, CheckpointTensor> tensors = new(StringComparer.Ordinal);
    private readonly List<nint> allocations = [];
    private readonly Lazy<HfTokenizer> tokenizer;

    private GgufModel(GgufFile file)
    {
        this.file = file;
        Architecture = file.GetString("general.architecture")
            ?? throw new CheckpointFormatException($"{file.Path}: metadata 'general.architecture' is missing");
        if (!Architectures.ContainsKey(Architecture))
        {
            throw new CheckpointFormatException(
                $"{file.Path}: architecture '{Architecture}' is not supported for GGUF files (supported: {string.Join(", ", Architectures.Keys)})");
        }

        Config = BuildConfig();

        // Built on first use: a benchmark needs no tokenizer, and a 150k-token vocabulary costs time and memory.
        tokenizer = new Lazy<HfTokenizer>(() => GgufTokenizer.Build(file));
        foreach (var t in file.Tensors)
        {
            if (t.Shape.Length == 3 && GgufNames.ExpertName(t.Name, 0) is not null)
            {
                AddExpertViews(t);
                continue;
            }

            var hf = GgufNames.ToHf(t.Name);
            if (hf is null)
            {
                continue;
            }

            tensors[hf] = Architecture == "llama" && (t.Name.EndsWith(".attn_q.weight", StringComparison.Ordinal) || t.Name.EndsWith(".attn_k.weight", StringComparison.Ordinal))
                ? Unpermute(t, hf, t.Name.EndsWith(".attn_q.weight", StringComparison.Ordinal) ? Config.NumAttentionHeads : Config.NumKeyValueHeads)
                : new CheckpointTensor(hf, t.DType, t.Shape, t.Data, t.ByteCount, t.File, t.Mapped);
        }

        if (Architecture == "deepseek2")
        {
            for (var layer = 0; layer < Config.NumHiddenLayers; layer++)
            {
                JoinSplitKvB(layer);
            }
        }
    }

    public string Path => file.Path;

    /// <summary>general.architecture: llama, qwen2, qwen3 or deepseek2.</summary>
    public string Architecture { get; }

    public ModelConfig Config { get; }

    /// <summary>The embedded tokenizer; throws <see cref="CheckpointFormatException"/> when the file carries none or an unsupported one.</summary>
    public HfTokenizer Tokenizer => tokenizer.Value;

    public GgufFile File => file;

    public string Description => file.Path;

    public IEnumerable<string> TensorNames => tensors.Keys;

    public static bool IsGgufPath(string path) =>
        path.EndsWith(".gguf", StringComparison.OrdinalIgnoreCase) && System.IO.File.Exists(path);

    public static GgufModel Open(string path)
    {
        var file = GgufFile.Open(path);
        try
        {
            return new GgufModel(file);
        }
        catch (Exception e) when (e is InvalidDataException or NotSupportedException or ModelConfigException or ArgumentException)
        {
            file.Dispose();
            throw new CheckpointFormatException($"{path}: {e.Message}", e);
        }
        catch
        {
            file.Dispose();
            throw;
        }
    }

    public bool Contains(string name) => tensors.ContainsKey(name);

    public CheckpointTensor Get(string name) =>
        tensors.TryGetValue(name, out var t) ? t : throw new CheckpointFormatException(
            $"{file.Path}: tensor '{name}' ({GgufNames.ToGguf(name) ?? GgufNames.ExpertStack(name)?.GgufName}) is missing from the GGUF file");

    private ModelConfig BuildConfig()
    {
        var a = Architecture;
        long Required(string key) => file.GetInteger($"{a}.{key}") ?? throw new CheckpointFormatException($"{file.Path}: metadata '{a}.{key}' is missing");
        var hidden = Required("embedding_length");
        var heads = Required("attention.head_count");
        var tokens = file.GetArray("tokenizer.ggml.tokens");
        var vocab = file.GetInteger($"{a}.vocab_size") ?? tokens?.Count
            ?? (file.ContainsTensor("token_embd.weight") ? file.GetTensor("token_embd.weight").Shape[0] : throw new CheckpointFormatException($"{file.Path}: cannot tell the vocabulary size"));
        var json = new JsonObject
        {
            ["architectures"] = new JsonArray(a == "deepseek2" ? DeepseekArchitecture() : Architectures[a]),
            ["model_type"] = a,
            ["hidden_size"] = hidden,
            ["intermediate_size"] = Required("feed_forward_length"),
            ["num_hidden_layers"] = Required("block_count"),
            ["num_attention_heads"] = heads,
            ["num_key_value_heads"] = file.GetInteger($"{a}.attention.head_count_kv") ?? heads,
            ["head_dim"] = file.GetInteger($"{a}.attention.key_length") ?? hidden / heads,
            ["vocab_size"] = vocab,
            ["rms_norm_eps"] = file.GetFloat($"{a}.attention.layer_norm_rms_epsilon") ?? 1e-6,
            ["max_position_embeddings"] = file.GetInteger($"{a}.context_length") ?? 2048,
            ["tie_word_embeddings"] = !file.ContainsTensor("output.weight"),
            ["attention_bias"] = file.ContainsTensor("blk.0.attn_q.bias"),
            ["rope_theta"] = file.GetFloat($"{a}.rope.freq_base") ?? 10000.0,
        };
        if (file.GetInteger("tokenizer.ggml.bos_token_id") is { } bos)
        {
            json["bos_token_id"] = bos;
        }

        if (file.GetInteger("tokenizer.ggml.eos_token_id") is { } eos)
        {
            json["eos_token_id"] = eos;
        }

        var scaling = file.GetString($"{a}.rope.scaling.type");
        if (scaling is "linear" or "yarn")
        {
            var rope = new JsonObject
            {
                ["rope_type"] = scaling,
                ["factor"] = file.GetFloat($"{a}.rope.scaling.factor") ?? 1.0,
            };
            if (file.GetInteger($"{a}.rope.scaling.original_context_length") is { } original)
            {
                rope["original_max_position_embeddings"] = original;
            }

            if (file.GetFloat($"{a}.rope.scaling.yarn_beta_fast") is { } betaFast)
            {
                rope["beta_fast"] = betaFast;
            }

            if (file.GetFloat($"{a}.rope.scaling.yarn_beta_slow") is { } betaSlow)
            {
                rope["beta_slow"] = betaSlow;
            }

            if (a == "deepseek2" && file.GetFloat($"{a}.rope.scaling.yarn_log_multiplier") is { } logMultiplier)
            {
                var mscaleAllDim = logMultiplier / 0.1;
                rope["mscale_all_dim"] = mscaleAllDim;
                rope["mscale"] = file.GetFloat(DeepseekMscaleKey) ?? mscaleAllDim;
            }

            json["rope_scaling"] = rope;
        }
        else if (scaling is not null and not "none")
        {
            throw new CheckpointFormatException($"{file.Path}: rope scaling type '{scaling}' is not supported");
        }

        if (a == "deepseek2")
        {
            AddDeepseekKeys(json);
        }

        var config = ModelConfig.Parse(json, file.Path);
        if (file.ContainsTensor("rope_freqs.weight"))
        {
            // Llama 3's frequency-dependent scaling, stored by llama.cpp as one divisor per rotary frequency.
            var factors = file.GetTensor("rope_freqs.weight");
            if (factors.DType != DType.F32 || factors.ElementCount != config.HeadDim / 2)
            {
                throw new CheckpointFormatException($"{file.Path}: rope_freqs.weight is {factors}, expected F32[{config.HeadDim / 2}]");
            }

            config.RopeFrequencyFactors = MemoryMarshal.Cast<byte, float>(factors.Bytes).ToArray();
        }

        return config;
    }

    /// <summary>
    /// deepseek2 covers DeepSeek-V2 (softmax routing, no correction bias) and V3/R1 (sigmoid routing with the
    /// exp_probs_b correction bias); the bias tensor tells them apart and expert_gating_func must agree.
    /// </summary>
    private string DeepseekArchitecture()
    {
        var hasBias = file.Tensors.Any(t => t.Name.EndsWith(".exp_probs_b.bias", StringComparison.Ordinal));
        // Files written before expert_gating_func existed are DeepSeek-V2, which llama.cpp runs with softmax.
        var gating = file.GetInteger("deepseek2.expert_gating_func") ?? GatingSoftmax;
        return (hasBias, gating) switch
        {
            (true, GatingSigmoid) => "DeepseekV3ForCausalLM",
            (false, GatingSoftmax) => "DeepseekV2ForCausalLM",
            _ => throw new CheckpointFormatException(
                $"{file.Path}: deepseek2 with expert_gating_func {gating} {(hasBias ? "and" : "without")} exp_probs_b tensors is neither DeepSeek-V2 (softmax, no bias) nor V3 (sigmoid with bias)"),
        };
    }

    /// <summary>The config.json keys of DeepseekConfig from llama.cpp's deepseek2.* metadata.</summary>
    private void AddDeepseekKeys(JsonObject json)
    {
        const string a = "deepseek2";
        long Required(string key) => file.GetInteger($"{a}.{key}") ?? throw new CheckpointFormatException($"{file.Path}: metadata '{a}.{key}' is missing");
        var v3 = json["architectures"]![0]!.GetValue<string>() == "DeepseekV3ForCausalLM";
        var ropeDim = Required("rope.dimension_count");

        // Files with the _mla keys (llama.cpp's MLA layout) give the per-head widths there, and the compressed ones
        // (kv_lora_rank + rope, kv_lora_rank) under key_length/value_length; older files give the per-head widths.
        var keyLength = file.GetInteger($"{a}.attention.key_length_mla") ?? Required("attention.key_length");
        var valueLength = file.GetInteger($"{a}.attention.value_length_mla") ?? Required("attention.value_length");
        var groups = file.GetInteger($"{a}.expert_group_count") ?? 1;
        json["model_type"] = v3 ? "deepseek_v3" : "deepseek_v2";
        json["num_key_value_heads"] = json["num_attention_heads"]!.DeepClone(); // MLA: llama.cpp's head_count_kv of 1 is its MQA view
        json["head_dim"] = ropeDim; // as transformers' DeepSeek configs set it
        json["attention_bias"] = file.ContainsTensor("blk.0.attn_kv_a_mqa.bias");
        // DeepSeek-V2-Lite has no query LoRA: llama.cpp omits q_lora_rank (or writes 0), transformers writes null.
        json["q_lora_rank"] = file.GetInteger($"{a}.attention.q_lora_rank") is { } q and > 0 ? q : null;
        json["kv_lora_rank"] = Required("attention.kv_lora_rank");
        json["qk_rope_head_dim"] = ropeDim;
        json["qk_nope_head_dim"] = keyLength - ropeDim;
        json["v_head_dim"] = valueLength;
        json["n_routed_experts"] = Required("expert_count");
        json["num_experts_per_tok"] = Required("expert_used_count");
        json["n_shared_experts"] = Required("expert_shared_count");
        json["moe_intermediate_size"] = Required("expert_feed_forward_length");
        json["first_k_dense_replace"] = file.GetInteger($"{a}.leading_dense_block_count") ?? 0;
        json["n_group"] = groups;
        json["topk_group"] = file.GetInteger($"{a}.expert_group_used_count") ?? groups;
        json["topk_method"] = v3 ? "noaux_tc" : groups > 1 ? "group_limited_greedy" : "greedy";
        json["norm_topk_prob"] = file.GetBool($"{a}.expert_weights_norm") ?? false;
        json["routed_scaling_factor"] = file.GetFloat($"{a}.expert_weights_scale") ?? 1.0;
        // llama.cpp rotates adjacent pairs for deepseek2, as DeepSeek's own checkpoints do (rope_interleave).
        json["rope_interleave"] = true;
    }

    /// <summary>Each expert of a stacked [experts, rows, columns] tensor as its own [rows, columns] view into the mapped file.</summary>
    private void AddExpertViews(CheckpointTensor stacked)
    {
        var experts = stacked.Shape[0];
        if (experts <= 0 || stacked.ByteCount % experts != 0)
        {
            throw new CheckpointFormatException($"{file.Path}: tensor {stacked} cannot be split into {experts} experts");
        }

        var bytes = stacked.ByteCount / experts;
        int[] shape = [stacked.Shape[1], stacked.Shape[2]];
        for (var e = 0; e < experts; e++)
        {
            var name = GgufNames.ExpertName(stacked.Name, e)!;
            tensors[name] = new CheckpointTensor(name, stacked.DType, shape, stacked.Data + (e * bytes), bytes, stacked.File, stacked.Mapped);
        }
    }

    /// <summary>
    /// llama.cpp's MLA layout stores kv_b_proj [heads · (nope + v), rank] as attn_k_b [heads, rank, nope] (each head's
    /// key part transposed) and attn_v_b [heads, v, rank]. The model reads kv_b_proj once at load (to split it the
    /// same way), so it is joined back here in F32, which holds every stored type's values exactly.
    /// </summary>
    private void JoinSplitKvB(int layer)
    {
        var kName = $"blk.{layer}.attn_k_b.weight";
        var vName = $"blk.{layer}.attn_v_b.weight";
        if (!file.ContainsTensor(kName) && !file.ContainsTensor(vName))
        {
            return;
        }

        if (!file.ContainsTensor(kName) || !file.ContainsTensor(vName))
        {
            throw new CheckpointFormatException($"{file.Path}: layer {layer} has only one of attn_k_b and attn_v_b");
        }

        var ds = DeepseekConfig.Parse(Config, Config.Architecture == "DeepseekV3ForCausalLM");
        var heads = Config.NumAttentionHeads;
        var (rank, nope, valueDim) = (ds.KvLoraRank, ds.QkNopeHeadDim, ds.VHeadDim);
        var k = file.GetTensor(kName);
        var v = file.GetTensor(vName);
        if (!k.Shape.SequenceEqual([heads, rank, nope]) || !v.Shape.SequenceEqual([heads, valueDim, rank]))
        {
            throw new CheckpointFormatException(
                $"{file.Path}: {k} and {v} do not match the metadata's {heads} heads, kv_lora_rank {rank}, nope {nope}, v {valueDim} ([{heads}, {rank}, {nope}] and [{heads}, {valueDim}, {rank}])");
        }

        var perHead = nope + valueDim;
        var count = (long)heads * perHead * rank;
        var data = (float*)NativeMemory.AlignedAlloc((nuint)(count * sizeof(float)), 64);
        allocations.Add((nint)data);
        var joined = new Span<float>(data, checked((int)count)); // kv_b_proj: [heads * (nope + v), rank]
        var keyRow = new float[nope];
        for (var h = 0; h < heads; h++)
        {
            for (var l = 0; l < rank; l++)
            {
                GgufExport.ReadRow(k, (h * rank) + l, keyRow);
                for (var d = 0; d < nope; d++)
                {
                    joined[(((h * perHead) + d) * rank) + l] = keyRow[d];
                }
            }

            for (var j = 0; j < valueDim; j++)
            {
                GgufExport.ReadRow(v, (h * valueDim) + j, joined.Slice(((h * perHead) + nope + j) * rank, rank));
            }
        }

        var name = $"model.layers.{layer}.self_attn.kv_b_proj.weight";
        tensors[name] = new CheckpointTensor(name, DType.F32, [heads * perHead, rank], (byte*)data, count * sizeof(float), k.File);
    }

    /// <summary>
    /// llama.cpp's converter stores each head's rows as (pair index, half) where HF has (half, pair index):
    /// GGUF row h·d + 2i + j holds HF row h·d + j·d/2 + i. Rows are whole blocks, so this works for every type.
    /// </summary>
    private CheckpointTensor Unpermute(CheckpointTensor t, string hfName, int heads)
    {
        if (t.Shape.Length != 2 || t.Shape[0] % heads != 0 || t.Shape[0] / heads % 2 != 0)
        {
            throw new CheckpointFormatException($"{file.Path}: tensor '{t.Name}' {t} cannot hold {heads} heads");
        }

        var rows = t.Shape[0];
        var headDim = rows / heads;
        var half = headDim / 2;
        var rowBytes = t.ByteCount / rows;
        var data = (byte*)NativeMemory.AlignedAlloc((nuint)Math.Max(t.ByteCount, 64), 64);
        allocations.Add((nint)data);
        for (var h = 0; h < heads; h++)
        {
            for (var i = 0; i < half; i++)
            {
                for (var j = 0; j < 2; j++)
                {
                    var source = t.Data + (((long)h * headDim) + (2 * i) + j) * rowBytes;
                    var destination = data + (((long)h * headDim) + (j * half) + i) * rowBytes;
                    Buffer.MemoryCopy(source, destination, rowBytes, rowBytes);
                }
            }
        }

        return new CheckpointTensor(hfName, t.DType, t.Shape, data, t.ByteCount, t.File);
    }

    public void Dispose()
    {
        foreach (var p in allocations)
        {
            NativeMemory.AlignedFree((void*)p);
        }

        allocations.Clear();
        file.Dispose();
    }
}
