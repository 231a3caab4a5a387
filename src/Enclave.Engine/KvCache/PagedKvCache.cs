using Enclave.Engine.Backends;

namespace Enclave.Engine.KvCache;

/// <summary>
/// The paged K/V storage: per layer, key and value tensors [blocks, blockSize, kvHeads, headDim] owned by the
/// backend (host memory for CPU, device memory for CUDA). Which blocks belong to which sequence is tracked by
/// <see cref="BlockPool"/> and the sequences' block tables; this class only holds the memory.
/// </summary>
public sealed class PagedKvCache : IDisposable
{
    private readonly DeviceTensor[] keys;
    private readonly DeviceTensor[] values;

    public PagedKvCache(IBackend backend, KvCacheSpec spec, int blockCount, int blockSize)
    {
        if (blockCount <= 0 || blockSize <= 0)
        {
            throw new ArgumentOutOfRangeException(nameof(blockCount), $"the KV cache needs at least one block (got {blockCount} blocks of {blockSize})");
        }

        Spec = spec;
        BlockCount = blockCount;
        BlockSize = blockSize;
        keys = new DeviceTensor[spec.Layers];
        values = new DeviceTensor[spec.Layers];
        for (var layer = 0; layer < spec.Layers; layer++)
        {
            keys[layer] = backend.Allocate(DType.F32, blockCount, blockSize, spec.KvHeads, spec.HeadDim);
            values[layer] = backend.Allocate(DType.F32, blockCount, blockSize, spec.KvHeads, spec.HeadDim);
        }
    }

    public KvCacheSpec Spec { get; }

    public int BlockCount { get; }

    public int BlockSize { get; }

    public long Bytes => Spec.BytesPerToken * BlockCount * BlockSize;

    /// <summary>How many blocks fit in a memory budget.</summary>
    public static int BlocksFor(long bytes, KvCacheSpec spec, int blockSize) =>
        (int)Math.Min(int.MaxValue, bytes / (spec.BytesPerToken * blockSize));

    public DeviceTensor Keys(int layer) => keys[layer];

    public DeviceTensor Values(int layer) => values[layer];

    public void Dispose()
    {
        foreach (var t in keys)
        {
            t.Dispose();
        }

        foreach (var t in values)
        {
            t.Dispose();
        }
    }
}
