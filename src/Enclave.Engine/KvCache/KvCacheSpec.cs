namespace Enclave.Engine.KvCache;

/// <summary>What one token costs in the cache: for each layer, a key and a value row of KvHeads × HeadDim floats.</summary>
public sealed record KvCacheSpec(int Layers, int KvHeads, int HeadDim)
{
    public long BytesPerToken => (long)Layers * 2 * KvHeads * HeadDim * sizeof(float);
}
