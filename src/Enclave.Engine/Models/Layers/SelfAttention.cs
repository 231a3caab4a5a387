using Enclave.Engine.Backends;

namespace Enclave.Engine.Models.Layers;

/// <summary>
/// Grouped-query self-attention as in LlamaAttention / Qwen2Attention / Qwen3Attention: q/k/v projections (with bias
/// for Qwen2), optional per-head q/k RMSNorm (Qwen3), RoPE, paged-cache attention, o_proj.
/// </summary>
public sealed class SelfAttention
{
    private readonly Linear qProj;
    private readonly Linear kProj;
    private readonly Linear vProj;
    private readonly Linear oProj;
    private readonly DeviceTensor? qNorm;
    private readonly DeviceTensor? kNorm;
    private readonly int heads;
    private readonly int kvHeads;
    private readonly int headDim;
    private readonly float eps;
    private readonly float scale;

    public SelfAttention(WeightLoader loader, string prefix, bool qkvBias, bool outputBias, bool qkNorm)
    {
        var c = loader.Config;
        heads = c.NumAttentionHeads;
        kvHeads = c.NumKeyValueHeads;
        headDim = c.HeadDim;
        eps = (float)c.RmsNormEps;
        scale = 1.0f / MathF.Sqrt(headDim);
        // One allocation where the backend stacks weights: the q/k/v products then run as one (k and v alone are small).
        var qkv = loader.LoadLinears([prefix + ".q_proj", prefix + ".k_proj", prefix + ".v_proj"], c.HiddenSize, [heads * headDim, kvHeads * headDim, kvHeads * headDim], qkvBias);
        (qProj, kProj, vProj) = (qkv[0], qkv[1], qkv[2]);
        oProj = Linear.Load(loader, prefix + ".o_proj", heads * headDim, c.HiddenSize, outputBias);
        if (qkNorm)
        {
            qNorm = loader.Load(prefix + ".q_norm.weight", headDim);
            kNorm = loader.Load(prefix + ".k_norm.weight", headDim);
        }
    }

    /// <summary>x: [T, hidden] → output: [T, hidden]; reads and extends this layer's paged K/V cache.</summary>
    public void Forward(IBackend backend, ActivationBuffers scratch, DeviceTensor x, ForwardBatch batch, RopeSpec rope,
        DeviceTensor keyCache, DeviceTensor valueCache, DeviceTensor output)
    {
        var tokens = (int)x.Rows;
        var q = scratch.Get("attn.q", tokens, heads * headDim);    // [T, heads * headDim]
        var k = scratch.Get("attn.k", tokens, kvHeads * headDim);  // [T, kvHeads * headDim]
        var v = scratch.Get("attn.v", tokens, kvHeads * headDim);  // [T, kvHeads * headDim]
        var o = scratch.Get("attn.o", tokens, heads * headDim);    // [T, heads * headDim]
        Linear.ForwardShared(backend, x, qProj, q, kProj, k, vProj, v);
        if (qNorm is not null && kNorm is not null)
        {
            var qHeads = q.Reshape(tokens * heads, headDim);
            var kHeads = k.Reshape(tokens * kvHeads, headDim);
            backend.RmsNorm(qHeads, qNorm, eps, qHeads);
            backend.RmsNorm(kHeads, kNorm, eps, kHeads);
        }

        var q3 = q.Reshape(tokens, heads, headDim);
        var k3 = k.Reshape(tokens, kvHeads, headDim);
        backend.RopeAttention(q3, k3, v.Reshape(tokens, kvHeads, headDim), keyCache, valueCache, batch, rope, scale,
            o.Reshape(tokens, heads, headDim));
        oProj.Forward(backend, o, output);
    }
}
