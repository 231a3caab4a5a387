using Enclave.Engine.Backends;
using Enclave.Engine.KvCache;

namespace Enclave.Engine.Models.Layers;

/// <summary>One pre-norm decoder layer: its two norms, its attention (which reads and extends the layer's cache) and its feed-forward.</summary>
public interface IDecoderLayer
{
    DeviceTensor InputLayerNorm { get; }

    DeviceTensor PostAttentionLayerNorm { get; }

    /// <summary>x: [T, hidden] → output: [T, hidden], through layer <paramref name="index"/>'s cache.</summary>
    void Attend(IBackend backend, ActivationBuffers scratch, DeviceTensor x, ForwardBatch batch, PagedKvCache cache, int index, DeviceTensor output);

    IFeedForward Mlp { get; }
}

/// <summary>
/// The residual stream every supported decoder shares: embed_tokens → N × (input_layernorm → attention → residual →
/// post_attention_layernorm → mlp → residual) → norm → lm_head on the rows that need logits. Each residual add is fused
/// with the norm that follows it.
/// </summary>
public static class DecoderStack
{
    public static void Forward(IBackend backend, ActivationBuffers scratch, int hidden, float eps, DeviceTensor embedTokens,
        IReadOnlyList<IDecoderLayer> layers, DeviceTensor finalNorm, DeviceTensor lmHead, ForwardBatch batch, PagedKvCache cache, DeviceTensor logits)
    {
        var tokens = batch.TokenCount;
        backend.PrepareStep(batch);
        var residual = scratch.Get("residual", tokens, hidden); // [T, hidden]
        var normed = scratch.Get("normed", tokens, hidden);     // [T, hidden]
        var delta = scratch.Get("delta", tokens, hidden);       // [T, hidden]
        backend.Embedding(embedTokens, batch, residual);
        backend.RmsNorm(residual, layers[0].InputLayerNorm, eps, normed);
        for (var i = 0; i < layers.Count; i++)
        {
            var layer = layers[i];
            layer.Attend(backend, scratch, normed, batch, cache, i, delta);
            backend.AddRmsNorm(residual, delta, layer.PostAttentionLayerNorm, eps, normed);
            layer.Mlp.Forward(backend, scratch, normed, delta);
            var nextNorm = i + 1 < layers.Count ? layers[i + 1].InputLayerNorm : finalNorm;
            backend.AddRmsNorm(residual, delta, nextNorm, eps, normed);
        }

        if (batch.LogitRows.Length == 0)
        {
            return; // a prefill chunk that does not reach the end of its prompt only fills the cache
        }

        var rows = scratch.Get("logit_rows", batch.LogitRows.Length, hidden); // [S, hidden]
        backend.GatherLogitRows(normed, batch, rows);
        backend.MatMul(rows, lmHead, null, logits);
    }
}
