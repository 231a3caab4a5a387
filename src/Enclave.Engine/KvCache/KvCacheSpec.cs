using Enclave.Engine.Backends;

namespace Enclave.Engine.KvCache;

/// <summary>One row the cache keeps per token and layer: Heads × HeadDim floats (a key, a value, or an MLA latent).</summary>
public sealed record KvCacheTensor(string Name, int Heads, int HeadDim)
{
    public int Floats => Heads * HeadDim;
}

/// <summary>
/// What one token costs in the cache and how the model lays it out: for each layer, the same list of per-token rows.
/// Standard attention keeps a key and a value row of KvHeads × HeadDim; multi-head latent attention keeps one
/// compressed row of kv_lora_rank + qk_rope_head_dim.
/// </summary>
public sealed record KvCacheSpec(int Layers, IReadOnlyList<KvCacheTensor> Tensors)
{
    /// <summary>Separate key and value rows of kvHeads × headDim per layer.</summary>
    public KvCacheSpec(int layers, int kvHeads, int headDim)
        : this(layers, [new KvCacheTensor("key", kvHeads, headDim), new KvCacheTensor("value", kvHeads, headDim)])
    {
    }

    /// <summary>A single row per layer holding the compressed latent followed by the shared rope key.</summary>
    public static KvCacheSpec Latent(int layers, int kvLoraRank, int ropeDim) =>
        new(layers, [new KvCacheTensor("latent", 1, kvLoraRank + ropeDim)]);

    public int FloatsPerTokenPerLayer => Tensors.Sum(t => t.Floats);

    /// <summary>Element type of the cache: F32 (exact), or BF16 where the backend supports it (half the bytes read per step).</summary>
    public DType DType { get; init; } = DType.F32;

    public long BytesPerToken => (long)Layers * FloatsPerTokenPerLayer * DType.SizeInBytes();
}
