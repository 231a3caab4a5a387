using Enclave.Engine.Backends;
using Enclave.Engine.Formats;
using Enclave.Engine.KvCache;
using Enclave.Engine.Models.Layers;

namespace Enclave.Engine.Models;

/// <summary>What differs between DeepSeek-V2 and V3 around the shared decoder stack.</summary>
public sealed record DeepseekVariant(bool InterleaveFromConfig, bool CorrectionBias, MoeScoring Scoring, MoeGroupScore GroupScore);

/// <summary>
/// The DeepSeek-V2/V3 decoder stack: embed_tokens → N × (input_layernorm → multi-head latent attention → residual →
/// post_attention_layernorm → dense MLP for the first first_k_dense_replace layers, DeepSeekMoE after → residual) →
/// norm → lm_head. The cache holds one latent row (kv_lora_rank + qk_rope_head_dim floats) per token and layer.
/// Multi-token-prediction layers (num_nextn_predict_layers, stored after the last decoder layer) are not loaded.
/// Decode steps may be recorded as graphs where the backend routes the experts itself.
/// </summary>
public abstract class DeepseekStyleModel : CausalLM
{
    private readonly DeviceTensor embedTokens;
    private readonly DecoderLayer[] layers;
    private readonly DeviceTensor finalNorm;
    private readonly DeviceTensor lmHead;
    private readonly RopeSpec rope;
    private readonly float eps;
    private readonly ActivationBuffers scratch;

    protected DeepseekStyleModel(ModelConfig config, IWeightSource weights, IBackend backend, DeepseekVariant variant)
        : base(config, backend)
    {
        Deepseek = DeepseekConfig.Parse(config, variant.CorrectionBias);
        var ds = Deepseek;
        var loader = new WeightLoader(weights, backend, config);
        eps = (float)config.RmsNormEps;
        // V2 always rotates adjacent pairs (it multiplies complex numbers); V3 follows rope_interleave.
        rope = RotaryEmbedding.Create(config, ds.QkRopeHeadDim, !variant.InterleaveFromConfig || ds.RopeInterleave);
        var scale = SoftmaxScale(config, ds);
        var groups = ds.TopkMethod == "greedy" ? 1 : ds.NGroup;
        var routing = new MoeRouting(ds.NRoutedExperts, ds.NumExpertsPerTok, variant.Scoring, groups, Math.Min(ds.TopkGroup, groups),
            variant.GroupScore, variant.CorrectionBias && ds.NormTopkProb, (float)ds.RoutedScalingFactor);
        scratch = new ActivationBuffers(backend);
        embedTokens = loader.Load("model.embed_tokens.weight", config.VocabSize, config.HiddenSize);
        layers = new DecoderLayer[config.NumHiddenLayers];
        for (var i = 0; i < layers.Length; i++)
        {
            var prefix = $"model.layers.{i}";
            IFeedForward mlp = i < ds.FirstKDenseReplace
                ? new GatedMlp(loader, prefix + ".mlp", config.HiddenSize, config.IntermediateSize, false)
                : new DeepseekMoe(loader, prefix + ".mlp", ds, routing, variant.CorrectionBias);
            layers[i] = new DecoderLayer(
                loader.Load(prefix + ".input_layernorm.weight", config.HiddenSize),
                loader.Load(prefix + ".post_attention_layernorm.weight", config.HiddenSize),
                new MultiHeadLatentAttention(loader, prefix + ".self_attn", ds, scale),
                mlp,
                rope);
        }

        finalNorm = loader.Load("model.norm.weight", config.HiddenSize);
        lmHead = config.TieWordEmbeddings ? embedTokens : loader.Load("lm_head.weight", config.VocabSize, config.HiddenSize);
        WeightBytes = ActiveWeightBytes(weights, ds, config.NumHiddenLayers, ReferenceEquals(lmHead, embedTokens) ? 0 : embedTokens.ByteCount);
    }

    public DeepseekConfig Deepseek { get; }

    /// <summary>Where every MoE layer routes on the backend (<see cref="DeepseekMoe.RoutesOnBackend"/>), a decode step needs no host decision.</summary>
    public override bool SupportsDecodeGraphs => layers.All(l => l.Mlp is not DeepseekMoe moe || moe.RoutesOnBackend);

    /// <summary>Decode batches whose picks every MoE layer hands to the backend (<see cref="DeepseekMoe.BackendPickLimit"/>).</summary>
    public override int MaxRecordedDecodeBatch =>
        Math.Max(1, layers.Select(l => l.Mlp is DeepseekMoe moe ? moe.BackendPickLimit(Backend) / moe.PicksPerToken : int.MaxValue).DefaultIfEmpty(int.MaxValue).Min());

    public override KvCacheSpec KvCacheSpec => KvCacheSpec.Latent(Config.NumHiddenLayers, Deepseek.KvLoraRank, Deepseek.QkRopeHeadDim);

    /// <summary>Bytes one decode token reads: everything but the embedding table and the routed experts it does not pick.</summary>
    public override long WeightBytes { get; }

    /// <summary>qk_head_dim^-0.5, times mscale(factor, mscale_all_dim)² under YaRN scaling (V2 and V3 alike).</summary>
    public static float SoftmaxScale(ModelConfig config, DeepseekConfig ds)
    {
        var scale = 1.0 / Math.Sqrt(ds.QkHeadDim);
        if (config.RopeScaling is { } s && s.MscaleAllDim is { } all && all != 0)
        {
            var m = RotaryEmbedding.YarnMscale(s.Factor, all);
            scale *= m * m;
        }

        return (float)scale;
    }

    public override void Forward(ForwardBatch batch, PagedKvCache cache, DeviceTensor logits) =>
        DecoderStack.Forward(Backend, scratch, Config.HiddenSize, eps, embedTokens, layers, finalNorm, lmHead, batch, cache, logits);

    protected override void Dispose(bool disposing)
    {
        scratch.Dispose();
        base.Dispose(disposing);
    }

    private static long ActiveWeightBytes(IWeightSource weights, DeepseekConfig ds, int layers, long embeddingBytes)
    {
        long total = 0, routed = 0;
        foreach (var name in weights.TensorNames)
        {
            var bytes = weights.Get(name).ByteCount;
            var layer = name.StartsWith("model.layers.", StringComparison.Ordinal) && int.TryParse(name.Split('.')[2], out var l) ? l : -1;
            if (layer >= layers)
            {
                continue; // multi-token-prediction layers are not run
            }

            total += bytes;
            if (name.Contains(".mlp.experts.", StringComparison.Ordinal))
            {
                routed += bytes;
            }
        }

        return total - embeddingBytes - (routed * (ds.NRoutedExperts - ds.NumExpertsPerTok) / ds.NRoutedExperts);
    }

    private sealed record DecoderLayer(DeviceTensor InputLayerNorm, DeviceTensor PostAttentionLayerNorm, MultiHeadLatentAttention Attention, IFeedForward Mlp, RopeSpec Rope)
        : IDecoderLayer
    {
        // MLA keeps one latent row per token and layer: the cache's single tensor for this layer.
        public void Attend(IBackend backend, ActivationBuffers scratch, DeviceTensor x, ForwardBatch batch, PagedKvCache cache, int index, DeviceTensor output) =>
            Attention.Forward(backend, scratch, x, batch, Rope, cache.Tensor(index, 0), output);
    }
}
