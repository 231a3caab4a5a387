using Enclave.Engine.Backends;

namespace Enclave.Engine.Models.Layers;

/// <summary>
/// DeepseekV2Attention / DeepseekV3Attention (multi-head latent attention) in the weight-absorbed form.
/// The query comes from q_proj, or q_a_proj → q_a_layernorm → q_b_proj with a query LoRA, and splits per head into
/// a nope and a rope part. kv_a_proj_with_mqa gives the compressed latent (kv_lora_rank, then kv_a_layernorm) and
/// one rope key shared by all heads; only these two are cached. kv_b_proj is never applied to the cache: its key
/// half is folded into the query (q_nope · W_UK per head) and its value half applied after attention (W_UV per
/// head), so every step, prefill included, attends against the latent rows directly.
/// </summary>
public sealed class MultiHeadLatentAttention
{
    private readonly Linear? qProj;
    private readonly Linear? qAProj;
    private readonly DeviceTensor? qALayerNorm;
    private readonly Linear? qBProj;
    private readonly Linear kvAProjWithMqa;
    private readonly DeviceTensor kvALayerNorm;
    private readonly DeviceTensor keyAbsorb;   // [heads, kv_lora_rank, qk_nope_head_dim]: W_UKᵀ per head
    private readonly DeviceTensor valueAbsorb; // [heads, v_head_dim, kv_lora_rank]: W_UV per head
    private readonly Linear oProj;
    private readonly int heads;
    private readonly int nope;
    private readonly int rope;
    private readonly int rank;
    private readonly int valueDim;

    // q_a_layernorm and kv_a_layernorm are built without the config's rms_norm_eps in transformers, so they use 1e-6.
    private const float LoraNormEps = 1e-6f;

    public MultiHeadLatentAttention(WeightLoader loader, string prefix, DeepseekConfig ds, float scale)
    {
        var c = loader.Config;
        heads = c.NumAttentionHeads;
        nope = ds.QkNopeHeadDim;
        rope = ds.QkRopeHeadDim;
        rank = ds.KvLoraRank;
        valueDim = ds.VHeadDim;
        Scale = scale;
        var qWidth = heads * ds.QkHeadDim;
        if (ds.QLoraRank is { } qRank)
        {
            qAProj = Linear.Load(loader, prefix + ".q_a_proj", c.HiddenSize, qRank, c.AttentionBias);
            qALayerNorm = loader.Load(prefix + ".q_a_layernorm.weight", qRank);
            qBProj = Linear.Load(loader, prefix + ".q_b_proj", qRank, qWidth, false);
        }
        else
        {
            qProj = Linear.Load(loader, prefix + ".q_proj", c.HiddenSize, qWidth, false);
        }

        kvAProjWithMqa = Linear.Load(loader, prefix + ".kv_a_proj_with_mqa", c.HiddenSize, rank + rope, c.AttentionBias);
        kvALayerNorm = loader.Load(prefix + ".kv_a_layernorm.weight", rank);
        oProj = Linear.Load(loader, prefix + ".o_proj", heads * valueDim, c.HiddenSize, c.AttentionBias);
        (keyAbsorb, valueAbsorb) = Absorb(loader, prefix + ".kv_b_proj.weight");
    }

    public float Scale { get; }

    /// <summary>x: [T, hidden] → output: [T, hidden]; reads and extends this layer's latent cache [blocks, blockSize, 1, rank + rope].</summary>
    public void Forward(IBackend backend, ActivationBuffers scratch, DeviceTensor x, ForwardBatch batch, RopeSpec ropeSpec,
        DeviceTensor latentCache, DeviceTensor output)
    {
        var tokens = (int)x.Rows;
        var rows = tokens * heads;
        var q = scratch.Get("mla.q", tokens, heads * (nope + rope)); // [T, heads * (nope + rope)]
        if (qAProj is not null && qBProj is not null && qALayerNorm is not null)
        {
            var qa = scratch.Get("mla.q_a", tokens, qAProj.OutFeatures); // [T, q_lora_rank]
            qAProj.Forward(backend, x, qa);
            backend.RmsNorm(qa, qALayerNorm, LoraNormEps, qa);
            qBProj.Forward(backend, qa, q);
        }
        else
        {
            qProj!.Forward(backend, x, q);
        }

        // The cached row: kv_a_proj_with_mqa, then kv_a_layernorm on its compressed part and rope on its k_pe part.
        var latent = scratch.Get("mla.latent", tokens, rank + rope); // [T, rank + rope]
        kvAProjWithMqa.Forward(backend, x, latent);
        backend.LatentNormRope(latent, kvALayerNorm, LoraNormEps, batch, ropeSpec,
            scratch.Get("mla.kv_c", tokens, rank), scratch.Get("mla.k_pe", tokens, rope));

        // The query folded into latent space: [W_UK q_nope | rope(q_pe)] per head.
        var qFull = scratch.Get("mla.q_full", rows, rank + rope); // [T * heads, rank + rope]
        backend.LatentQuery(q.Reshape(tokens, heads, nope + rope), keyAbsorb, batch, ropeSpec, qFull,
            scratch.Get("mla.q_nope", rows, nope), scratch.Get("mla.q_pe", rows, rope), scratch.Get("mla.q_latent", rows, rank));

        var context = scratch.Get("mla.context", rows, rank); // [T * heads, rank]
        backend.LatentAttention(qFull.Reshape(tokens, heads, rank + rope), latent, latentCache, batch, Scale, rank,
            context.Reshape(tokens, heads, rank));
        var values = scratch.Get("mla.values", tokens, heads * valueDim); // [T, heads * v_head_dim]
        backend.HeadMatMul(context.Reshape(tokens, heads, rank), valueAbsorb, values.Reshape(tokens, heads, valueDim));
        oProj.Forward(backend, values, output);
    }

    /// <summary>
    /// Splits kv_b_proj [heads * (nope + v), rank] into W_UKᵀ [heads, rank, nope] and W_UV [heads, v, rank], kept in
    /// F32: for DeepSeek-V3 that is 2 × 128 × 128 × 512 × 4 bytes = 64 MiB per layer, twice the bf16 original.
    /// </summary>
    private (DeviceTensor Key, DeviceTensor Value) Absorb(WeightLoader loader, string name)
    {
        var perHead = nope + valueDim;
        var w = loader.ReadF32(name, heads * perHead, rank);
        var key = new float[heads * rank * nope];
        var value = new float[heads * valueDim * rank];
        for (var h = 0; h < heads; h++)
        {
            for (var d = 0; d < nope; d++)
            {
                for (var l = 0; l < rank; l++)
                {
                    key[(((h * rank) + l) * nope) + d] = w[(((h * perHead) + d) * rank) + l];
                }
            }

            w.AsSpan(((h * perHead) + nope) * rank, valueDim * rank).CopyTo(value.AsSpan(h * valueDim * rank));
        }

        var backend = loader.Backend;
        var keyTensor = backend.Allocate(DType.F32, heads, rank, nope);
        var valueTensor = backend.Allocate(DType.F32, heads, valueDim, rank);
        backend.Upload(key, keyTensor);
        backend.Upload(value, valueTensor);
        return (keyTensor, valueTensor);
    }
}
