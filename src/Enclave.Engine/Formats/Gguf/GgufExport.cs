using System.Runtime.InteropServices;
using Enclave.Engine.Backends;
using Enclave.Engine.Models;
using Enclave.Engine.Tokenization;

namespace Enclave.Engine.Formats.Gguf;

/// <summary>
/// Writes a Llama-family checkpoint (llama, qwen2, qwen3) or a DeepSeek-V2/V3 one (deepseek2) as a GGUF file the way
/// llama.cpp's converter and quantiser lay it out: llama.cpp tensor names, <c>{arch}.*</c> metadata, the tokenizer,
/// Q/K rows interleaved per head for the llama architecture, norms and biases in F32, and the matrices in the
/// requested type or K-quant mixture. For deepseek2 the routed experts are stacked per layer into 3-D tensors and
/// kv_b_proj is split into attn_k_b/attn_v_b, as llama.cpp's converter does for its MLA layout.
/// </summary>
public static class GgufExport
{
    /// <summary>The --to names and llama.cpp's general.file_type number for each.</summary>
    public static readonly IReadOnlyDictionary<string, (DType BaseType, int FileType)> Targets = new Dictionary<string, (DType, int)>(StringComparer.OrdinalIgnoreCase)
    {
        ["f32"] = (DType.F32, 0),
        ["f16"] = (DType.F16, 1),
        ["bf16"] = (DType.BF16, 32),
        ["q8_0"] = (DType.Q8_0, 7),
        ["q4_0"] = (DType.Q4_0, 2),
        ["q4_1"] = (DType.Q4_1, 3),
        ["q5_0"] = (DType.Q5_0, 8),
        ["q5_1"] = (DType.Q5_1, 9),
        ["q4_k_m"] = (DType.Q4_K, 15),
        ["q5_k_m"] = (DType.Q5_K, 17),
        ["q6_k"] = (DType.Q6_K, 18),
    };

    private static readonly Dictionary<string, string> ArchitectureNames = new(StringComparer.Ordinal)
    {
        ["LlamaForCausalLM"] = "llama",
        ["Qwen2ForCausalLM"] = "qwen2",
        ["Qwen3ForCausalLM"] = "qwen3",
        ["DeepseekV2ForCausalLM"] = "deepseek2",
        ["DeepseekV3ForCausalLM"] = "deepseek2",
    };

    /// <summary>The HF tensors of a Llama-family model and their shapes, as the model classes load them.</summary>
    public static List<(string Name, int[] Shape)> TensorShapes(ModelConfig c)
    {
        var qRows = c.NumAttentionHeads * c.HeadDim;
        var kvRows = c.NumKeyValueHeads * c.HeadDim;
        var qkvBias = c.Architecture == "Qwen2ForCausalLM" || c.AttentionBias;
        var list = new List<(string, int[])> { ("model.embed_tokens.weight", [c.VocabSize, c.HiddenSize]) };
        for (var i = 0; i < c.NumHiddenLayers; i++)
        {
            var p = $"model.layers.{i}.";
            list.Add((p + "input_layernorm.weight", [c.HiddenSize]));
            list.Add((p + "self_attn.q_proj.weight", [qRows, c.HiddenSize]));
            list.Add((p + "self_attn.k_proj.weight", [kvRows, c.HiddenSize]));
            list.Add((p + "self_attn.v_proj.weight", [kvRows, c.HiddenSize]));
            if (qkvBias)
            {
                list.Add((p + "self_attn.q_proj.bias", [qRows]));
                list.Add((p + "self_attn.k_proj.bias", [kvRows]));
                list.Add((p + "self_attn.v_proj.bias", [kvRows]));
            }

            list.Add((p + "self_attn.o_proj.weight", [c.HiddenSize, qRows]));
            if (c.AttentionBias && c.Architecture != "Qwen2ForCausalLM")
            {
                list.Add((p + "self_attn.o_proj.bias", [c.HiddenSize]));
            }

            if (c.Architecture == "Qwen3ForCausalLM")
            {
                list.Add((p + "self_attn.q_norm.weight", [c.HeadDim]));
                list.Add((p + "self_attn.k_norm.weight", [c.HeadDim]));
            }

            list.Add((p + "post_attention_layernorm.weight", [c.HiddenSize]));
            list.Add((p + "mlp.gate_proj.weight", [c.IntermediateSize, c.HiddenSize]));
            list.Add((p + "mlp.up_proj.weight", [c.IntermediateSize, c.HiddenSize]));
            list.Add((p + "mlp.down_proj.weight", [c.HiddenSize, c.IntermediateSize]));
        }

        list.Add(("model.norm.weight", [c.HiddenSize]));
        if (!c.TieWordEmbeddings)
        {
            list.Add(("lm_head.weight", [c.VocabSize, c.HiddenSize]));
        }

        return list;
    }

    /// <summary>
    /// The type llama.cpp's quantiser gives a tensor for a target: 1-D tensors stay F32; for the K-quant mixtures
    /// the output matrix (or the embedding when tied) is Q6_K, and attn_v and ffn_down are Q6_K in the first and
    /// last eighth of the layers and every third layer between (use_more_bits). K types need rows of whole
    /// 256-value blocks; other rows (Qwen2-0.5B's 896) take llama.cpp's fallbacks, Q4_K to Q5_0, Q5_K to Q5_1 and
    /// Q6_K to Q8_0, and rows that are not even whole 32-value blocks stay F16.
    /// </summary>
    public static DType TensorType(string target, string ggufName, int[] shape, int layers, bool hasOutput)
    {
        var baseType = Targets[target].BaseType;
        if (shape.Length < 2)
        {
            return DType.F32;
        }

        if (!baseType.IsQuantized())
        {
            return baseType;
        }

        var type = baseType;
        var isOutput = ggufName == "output.weight" || (!hasOutput && ggufName == "token_embd.weight");
        var layer = ggufName.StartsWith("blk.", StringComparison.Ordinal) ? int.Parse(ggufName.Split('.')[1], System.Globalization.CultureInfo.InvariantCulture) : -1;
        if (isOutput)
        {
            type = baseType == DType.Q8_0 ? DType.Q8_0 : DType.Q6_K;
        }
        else if (target is "q4_k_m" or "q5_k_m" && (ggufName.EndsWith(".attn_v.weight", StringComparison.Ordinal) || ggufName.EndsWith(".ffn_down.weight", StringComparison.Ordinal)))
        {
            type = UseMoreBits(layer, layers) ? DType.Q6_K : baseType;
        }

        if (shape[^1] % type.BlockElements() != 0)
        {
            type = type switch
            {
                DType.Q4_K => DType.Q5_0,
                DType.Q5_K => DType.Q5_1,
                _ => DType.Q8_0,
            };
        }

        return shape[^1] % type.BlockElements() == 0 ? type : DType.F16;
    }

    /// <summary>llama.cpp's use_more_bits: the first and last eighth of the layers, and every third one between.</summary>
    public static bool UseMoreBits(int layer, int layers) =>
        layer < layers / 8 || layer >= 7 * layers / 8 || (layer - (layers / 8)) % 3 == 2;

    /// <summary>Writes <paramref name="weights"/> (a checkpoint or dummy weights of <paramref name="config"/>) to <paramref name="output"/>.</summary>
    public static void Write(ModelConfig config, IWeightSource weights, string? tokenizerDirectory, string target, string output, string name)
    {
        if (!Targets.ContainsKey(target))
        {
            throw new ArgumentException($"unknown target type '{target}' (supported: {string.Join(", ", Targets.Keys)})", nameof(target));
        }

        if (!ArchitectureNames.TryGetValue(config.Architecture, out var arch))
        {
            throw new NotSupportedException($"{config.Path}: {config.Architecture} cannot be written to GGUF (supported: {string.Join(", ", ArchitectureNames.Keys)})");
        }

        if (config.Quantization is { } quantization && weights is not DummyWeights)
        {
            // The exporter reads float weights; FP8/AWQ/GPTQ tensors would need their own dequantisation first.
            throw new NotSupportedException($"{config.Path}: a {quantization.Method} checkpoint cannot be written to GGUF; convert its unquantised (BF16/F16/F32) checkpoint");
        }

        var writer = new GgufWriter();
        writer.AddString("general.architecture", arch);
        writer.AddString("general.name", name);
        writer.AddUInt32("general.file_type", (uint)Targets[target].FileType);
        if (Targets[target].BaseType.IsQuantized())
        {
            writer.AddUInt32("general.quantization_version", 2);
        }

        writer.AddUInt32($"{arch}.context_length", (uint)config.MaxPositionEmbeddings);
        writer.AddUInt32($"{arch}.embedding_length", (uint)config.HiddenSize);
        writer.AddUInt32($"{arch}.block_count", (uint)config.NumHiddenLayers);
        writer.AddUInt32($"{arch}.feed_forward_length", (uint)config.IntermediateSize);
        writer.AddUInt32($"{arch}.attention.head_count", (uint)config.NumAttentionHeads);
        var deepseek = arch == "deepseek2" ? DeepseekConfig.Parse(config, config.Architecture == "DeepseekV3ForCausalLM") : null;
        if (deepseek is not null)
        {
            AddDeepseekMetadata(writer, config, deepseek);
        }
        else
        {
            writer.AddUInt32($"{arch}.attention.head_count_kv", (uint)config.NumKeyValueHeads);
            writer.AddUInt32($"{arch}.attention.key_length", (uint)config.HeadDim);
            writer.AddUInt32($"{arch}.attention.value_length", (uint)config.HeadDim);
        }

        writer.AddFloat32($"{arch}.attention.layer_norm_rms_epsilon", (float)config.RmsNormEps);
        writer.AddFloat32($"{arch}.rope.freq_base", (float)config.RopeTheta);
        writer.AddUInt32($"{arch}.vocab_size", (uint)config.VocabSize);
        if (config.RopeScaling is { Type: "linear" or "yarn" } scaling)
        {
            writer.AddString($"{arch}.rope.scaling.type", scaling.Type);
            writer.AddFloat32($"{arch}.rope.scaling.factor", (float)scaling.Factor);
            if (scaling.OriginalMaxPositionEmbeddings is { } original)
            {
                writer.AddUInt32($"{arch}.rope.scaling.original_context_length", (uint)original);
            }

            // llama.cpp's defaults are transformers' (32 and 1): written only when a checkpoint differs.
            if (scaling.BetaFast is { } betaFast && betaFast != 32)
            {
                writer.AddFloat32($"{arch}.rope.scaling.yarn_beta_fast", (float)betaFast);
            }

            if (scaling.BetaSlow is { } betaSlow && betaSlow != 1)
            {
                writer.AddFloat32($"{arch}.rope.scaling.yarn_beta_slow", (float)betaSlow);
            }

            if (deepseek is not null && scaling.MscaleAllDim is { } mscaleAllDim and not 0)
            {
                // llama.cpp's converter writes 0.1 × mscale_all_dim here for deepseek2 and assumes mscale equals it.
                writer.AddFloat32($"{arch}.rope.scaling.yarn_log_multiplier", (float)(0.1 * mscaleAllDim));
                if (scaling.Mscale is { } mscale and not 0 && mscale != mscaleAllDim)
                {
                    writer.AddFloat32(GgufModel.DeepseekMscaleKey, (float)mscale);
                }
            }
        }
        else if (config.RopeScaling is { Type: not "llama3" } other)
        {
            throw new NotSupportedException($"{config.Path}: rope scaling '{other.Type}' cannot be written to GGUF");
        }

        if (tokenizerDirectory is not null && File.Exists(Path.Combine(tokenizerDirectory, HfTokenizer.FileName)))
        {
            GgufTokenizer.Write(writer, tokenizerDirectory, config.VocabSize, HfTokenizer.FromDirectory(tokenizerDirectory));
        }
        else
        {
            GgufTokenizer.WriteBytesOnly(writer, config.VocabSize);
        }

        if (config.RopeScaling is { Type: "llama3" })
        {
            // llama.cpp carries Llama 3 scaling as one divisor per frequency; the engine reads it back the same way.
            var dim = config.HeadDim;
            var unscaled = RotaryEmbedding.DefaultInverseFrequencies(config.RopeTheta, dim);
            var scaled = RotaryEmbedding.Create(config).InverseFrequencies;
            var factors = new float[unscaled.Length];
            for (var i = 0; i < factors.Length; i++)
            {
                factors[i] = (float)((double)unscaled[i] / scaled[i]);
            }

            writer.AddTensor("rope_freqs.weight", DType.F32, [factors.Length], MemoryMarshal.AsBytes(factors.AsSpan()).ToArray());
        }

        if (deepseek is not null)
        {
            AddDeepseekTensors(writer, config, deepseek, weights, target);
            writer.Write(output);
            return;
        }

        var shapes = TensorShapes(config);
        var hasOutput = shapes.Any(s => s.Name == "lm_head.weight");
        foreach (var (hfName, shape) in shapes)
        {
            var ggufName = GgufNames.ToGguf(hfName)!;
            var source = weights is DummyWeights dummy ? dummy.Create(hfName, shape) : weights.Get(hfName);
            if (!source.Shape.SequenceEqual(shape))
            {
                throw new CheckpointFormatException($"{source.File}: tensor '{hfName}' has shape [{string.Join(", ", source.Shape)}], but the config implies [{string.Join(", ", shape)}]");
            }

            var type = TensorType(target, ggufName, shape, config.NumHiddenLayers, hasOutput);
            var heads = arch == "llama" && hfName.EndsWith("q_proj.weight", StringComparison.Ordinal) ? config.NumAttentionHeads
                : arch == "llama" && hfName.EndsWith("k_proj.weight", StringComparison.Ordinal) ? config.NumKeyValueHeads
                : 0;
            writer.AddTensor(ggufName, type, shape, stream => WriteTensor(stream, source, type, heads));
        }

        writer.Write(output);
    }

    /// <summary>llama.cpp's deepseek2.* keys for multi-head latent attention and DeepSeekMoE, as its converter writes them.</summary>
    private static void AddDeepseekMetadata(GgufWriter writer, ModelConfig config, DeepseekConfig ds)
    {
        const string a = "deepseek2";
        var v3 = config.Architecture == "DeepseekV3ForCausalLM";
        if (config.AttentionBias)
        {
            throw new NotSupportedException($"{config.Path}: llama.cpp's deepseek2 has no attention biases (attention_bias is true)");
        }

        // llama.cpp runs MLA as multi-query attention over the latent: one KV head whose key is the latent plus the
        // rope part and whose value is the latent; the per-head widths go under the _mla keys.
        writer.AddUInt32($"{a}.attention.head_count_kv", 1);
        writer.AddUInt32($"{a}.attention.key_length", (uint)(ds.KvLoraRank + ds.QkRopeHeadDim));
        writer.AddUInt32($"{a}.attention.value_length", (uint)ds.KvLoraRank);
        writer.AddUInt32($"{a}.attention.key_length_mla", (uint)ds.QkHeadDim);
        writer.AddUInt32($"{a}.attention.value_length_mla", (uint)ds.VHeadDim);
        writer.AddUInt32($"{a}.rope.dimension_count", (uint)ds.QkRopeHeadDim);
        if (ds.QLoraRank is { } qRank)
        {
            writer.AddUInt32($"{a}.attention.q_lora_rank", (uint)qRank);
        }

        writer.AddUInt32($"{a}.attention.kv_lora_rank", (uint)ds.KvLoraRank);
        writer.AddUInt32($"{a}.leading_dense_block_count", (uint)ds.FirstKDenseReplace);
        writer.AddUInt32($"{a}.expert_feed_forward_length", (uint)ds.MoeIntermediateSize);
        writer.AddUInt32($"{a}.expert_count", (uint)ds.NRoutedExperts);
        writer.AddUInt32($"{a}.expert_used_count", (uint)ds.NumExpertsPerTok);
        writer.AddUInt32($"{a}.expert_shared_count", (uint)ds.NSharedExperts);
        writer.AddFloat32($"{a}.expert_weights_scale", (float)ds.RoutedScalingFactor);
        if (v3 && ds.NormTopkProb)
        {
            // DeepSeek-V2 never renormalises its top-k weights (transformers ignores norm_topk_prob there).
            writer.AddBool($"{a}.expert_weights_norm", true);
        }

        writer.AddUInt32($"{a}.expert_gating_func", v3 ? 2u : 1u); // llama.cpp: 1 softmax, 2 sigmoid
        // The groups routing actually uses: V2's greedy top-k ignores n_group.
        var groups = ds.TopkMethod == "greedy" ? 1 : ds.NGroup;
        writer.AddUInt32($"{a}.expert_group_count", (uint)groups);
        writer.AddUInt32($"{a}.expert_group_used_count", (uint)Math.Min(ds.TopkGroup, groups));
    }

    /// <summary>
    /// The tensors of a DeepSeek-V2/V3 checkpoint under llama.cpp's deepseek2 names: routed experts stacked into
    /// [experts, rows, columns], kv_b_proj split into attn_k_b [heads, rank, nope] (each head's key part transposed)
    /// and attn_v_b [heads, v, rank], the router in F32. llama.cpp rotates adjacent pairs; a V3 checkpoint with
    /// rope_interleave false rotates halves, so its rope rows are interleaved here as llama's Q/K rows are.
    /// </summary>
    private static void AddDeepseekTensors(GgufWriter writer, ModelConfig c, DeepseekConfig ds, IWeightSource weights, string target)
    {
        var heads = c.NumAttentionHeads;
        var (rank, nope, rope, valueDim) = (ds.KvLoraRank, ds.QkNopeHeadDim, ds.QkRopeHeadDim, ds.VHeadDim);
        var interleaveRope = c.Architecture == "DeepseekV3ForCausalLM" && !ds.RopeInterleave;
        var hasOutput = !c.TieWordEmbeddings;

        CheckpointTensor Source(string hfName, int[] shape)
        {
            var source = weights is DummyWeights dummy ? dummy.Create(hfName, shape) : weights.Get(hfName);
            if (!source.Shape.SequenceEqual(shape))
            {
                throw new CheckpointFormatException($"{source.File}: tensor '{hfName}' has shape [{string.Join(", ", source.Shape)}], but the config implies [{string.Join(", ", shape)}]");
            }

            return source;
        }

        DType TypeOf(string ggufName, int[] shape)
        {
            if (ggufName.EndsWith(".ffn_gate_inp.weight", StringComparison.Ordinal))
            {
                return DType.F32; // llama.cpp's converter always keeps the router in F32
            }

            // llama.cpp's K-quant mixtures give every ffn_down tensor (routed and shared experts too) more bits in
            // the same layers as a dense ffn_down.
            var ruleName = ggufName.Replace(".ffn_down_exps.", ".ffn_down.", StringComparison.Ordinal).Replace(".ffn_down_shexp.", ".ffn_down.", StringComparison.Ordinal);
            // Rows that are not whole blocks (attn_k_b's nope-wide rows in small models) take TensorType's fallbacks.
            return TensorType(target, ruleName, shape, c.NumHiddenLayers, hasOutput);
        }

        // HF row of GGUF row r when the rows from ropeStart on (within each block of blockRows) are rope rows to interleave.
        int RopeRow(int r, int blockRows, int ropeStart)
        {
            var within = r % blockRows;
            if (!interleaveRope || within < ropeStart)
            {
                return r;
            }

            var i = within - ropeStart;
            return r - within + ropeStart + ((i % 2) * (rope / 2)) + (i / 2);
        }

        void Add(string hfName, int[] shape, int ropeBlockRows = 0, int ropeStart = 0)
        {
            var ggufName = GgufNames.ToGguf(hfName)!;
            var source = Source(hfName, shape);
            var type = TypeOf(ggufName, shape);
            var columns = shape[^1];
            var rows = (int)(source.ElementCount / columns);
            writer.AddTensor(ggufName, type, shape, stream => WriteRows(stream, rows, columns, type,
                (r, values) => ReadRow(source, ropeBlockRows > 0 ? RopeRow(r, ropeBlockRows, ropeStart) : r, values)));
        }

        void AddStacked(string ggufName, string[] hfNames, int rowsPerExpert, int columns)
        {
            int[] shape = [hfNames.Length, rowsPerExpert, columns];
            var sources = hfNames.Select(n => Source(n, [rowsPerExpert, columns])).ToArray();
            var type = TypeOf(ggufName, shape);
            writer.AddTensor(ggufName, type, shape, stream => WriteRows(stream, hfNames.Length * rowsPerExpert, columns, type,
                (r, values) => ReadRow(sources[r / rowsPerExpert], r % rowsPerExpert, values)));
        }

        Add("model.embed_tokens.weight", [c.VocabSize, c.HiddenSize]);
        for (var i = 0; i < c.NumHiddenLayers; i++)
        {
            var p = $"model.layers.{i}.";
            Add(p + "input_layernorm.weight", [c.HiddenSize]);
            if (ds.QLoraRank is { } qRank)
            {
                Add(p + "self_attn.q_a_proj.weight", [qRank, c.HiddenSize]);
                Add(p + "self_attn.q_a_layernorm.weight", [qRank]);
                Add(p + "self_attn.q_b_proj.weight", [heads * ds.QkHeadDim, qRank], ds.QkHeadDim, nope);
            }
            else
            {
                Add(p + "self_attn.q_proj.weight", [heads * ds.QkHeadDim, c.HiddenSize], ds.QkHeadDim, nope);
            }

            Add(p + "self_attn.kv_a_proj_with_mqa.weight", [rank + rope, c.HiddenSize], rank + rope, rank);
            Add(p + "self_attn.kv_a_layernorm.weight", [rank]);

            // kv_b_proj: [heads * (nope + v), rank], per head the nope key rows then the value rows.
            var perHead = nope + valueDim;
            var kvB = Source(p + "self_attn.kv_b_proj.weight", [heads * perHead, rank]);
            int[] kShape = [heads, rank, nope];
            var kType = TypeOf($"blk.{i}.attn_k_b.weight", kShape);
            writer.AddTensor($"blk.{i}.attn_k_b.weight", kType, kShape, stream =>
            {
                // Transposed per head, so the whole matrix is read first (once, while this tensor is written).
                var full = new float[heads * perHead * rank];
                for (var r = 0; r < heads * perHead; r++)
                {
                    ReadRow(kvB, r, full.AsSpan(r * rank, rank));
                }

                WriteRows(stream, heads * rank, nope, kType, (r, values) =>
                {
                    var (h, l) = (r / rank, r % rank);
                    for (var d = 0; d < nope; d++)
                    {
                        values[d] = full[(((h * perHead) + d) * rank) + l];
                    }
                });
            });
            int[] vShape = [heads, valueDim, rank];
            var vType = TypeOf($"blk.{i}.attn_v_b.weight", vShape);
            writer.AddTensor($"blk.{i}.attn_v_b.weight", vType, vShape, stream => WriteRows(stream, heads * valueDim, rank, vType,
                (r, values) => ReadRow(kvB, ((r / valueDim) * perHead) + nope + (r % valueDim), values)));

            Add(p + "self_attn.o_proj.weight", [c.HiddenSize, heads * valueDim]);
            Add(p + "post_attention_layernorm.weight", [c.HiddenSize]);
            if (i < ds.FirstKDenseReplace)
            {
                Add(p + "mlp.gate_proj.weight", [c.IntermediateSize, c.HiddenSize]);
                Add(p + "mlp.up_proj.weight", [c.IntermediateSize, c.HiddenSize]);
                Add(p + "mlp.down_proj.weight", [c.HiddenSize, c.IntermediateSize]);
                continue;
            }

            var experts = ds.NRoutedExperts;
            var moe = ds.MoeIntermediateSize;
            Add(p + "mlp.gate.weight", [experts, c.HiddenSize]);
            if (c.Architecture == "DeepseekV3ForCausalLM")
            {
                Add(p + "mlp.gate.e_score_correction_bias", [experts]);
            }

            string[] Experts(string projection) => Enumerable.Range(0, experts).Select(e => $"{p}mlp.experts.{e}.{projection}.weight").ToArray();
            AddStacked($"blk.{i}.ffn_gate_exps.weight", Experts("gate_proj"), moe, c.HiddenSize);
            AddStacked($"blk.{i}.ffn_up_exps.weight", Experts("up_proj"), moe, c.HiddenSize);
            AddStacked($"blk.{i}.ffn_down_exps.weight", Experts("down_proj"), c.HiddenSize, moe);
            var shared = moe * ds.NSharedExperts;
            Add(p + "mlp.shared_experts.gate_proj.weight", [shared, c.HiddenSize]);
            Add(p + "mlp.shared_experts.up_proj.weight", [shared, c.HiddenSize]);
            Add(p + "mlp.shared_experts.down_proj.weight", [c.HiddenSize, shared]);
        }

        Add("model.norm.weight", [c.HiddenSize]);
        if (hasOutput)
        {
            Add("lm_head.weight", [c.VocabSize, c.HiddenSize]);
        }
    }

    /// <summary>Converts and writes a tensor row by row (rows interleaved per head when heads &gt; 0), quantising in parallel chunks.</summary>
    private static void WriteTensor(Stream stream, CheckpointTensor source, DType type, int heads)
    {
        var columns = source.Shape[^1];
        var rows = (int)(source.ElementCount / columns);
        var headDim = heads > 0 ? rows / heads : 0;
        WriteRows(stream, rows, columns, type, (row, values) =>
        {
            var sourceRow = row;
            if (heads > 0)
            {
                // GGUF row h·d + 2i + j holds HF row h·d + j·d/2 + i.
                var h = row / headDim;
                var within = row % headDim;
                sourceRow = (h * headDim) + ((within % 2) * (headDim / 2)) + (within / 2);
            }

            ReadRow(source, sourceRow, values);
        });
    }

    /// <summary>Writes <paramref name="rows"/> rows of <paramref name="columns"/> values given by <paramref name="readRow"/> as <paramref name="type"/>, quantising in parallel chunks.</summary>
    private static void WriteRows(Stream stream, int rows, int columns, DType type, Action<int, float[]> readRow)
    {
        var rowBytes = (int)type.RowBytes(columns);
        var chunkRows = Math.Max(1, (1 << 22) / Math.Max(1, columns));
        var buffer = new byte[(long)chunkRows * rowBytes];
        for (var start = 0; start < rows; start += chunkRows)
        {
            var count = Math.Min(chunkRows, rows - start);
            Parallel.For(0, count, () => new float[columns], (r, _, values) =>
            {
                readRow(start + r, values);
                GgmlQuants.Quantize(type, values, buffer.AsSpan(r * rowBytes, rowBytes));
                return values;
            }, _ => { });
            stream.Write(buffer, 0, count * rowBytes);
        }
    }

    /// <summary>Reads row <paramref name="row"/> of a float tensor (F32, F16, BF16, or a block type) as fp32.</summary>
    public static unsafe void ReadRow(CheckpointTensor source, int row, Span<float> values)
    {
        var columns = values.Length;
        var rowBytes = source.DType.RowBytes(columns);
        var bytes = new ReadOnlySpan<byte>(source.Data + (row * rowBytes), (int)rowBytes);
        switch (source.DType)
        {
            case DType.F32:
                MemoryMarshal.Cast<byte, float>(bytes).CopyTo(values);
                break;
            case DType.F16:
                var halves = MemoryMarshal.Cast<byte, Half>(bytes);
                for (var i = 0; i < columns; i++)
                {
                    values[i] = (float)halves[i];
                }

                break;
            case DType.BF16:
                var shorts = MemoryMarshal.Cast<byte, ushort>(bytes);
                for (var i = 0; i < columns; i++)
                {
                    values[i] = BitConverter.Int32BitsToSingle(shorts[i] << 16);
                }

                break;
            default:
                GgmlQuants.Dequantize(source.DType, bytes, values);
                break;
        }
    }
}
