using Enclave.Engine.Backends;

namespace Enclave.Engine.KvCache;

/// <summary>
/// The paged cache storage: per layer, one tensor [blocks, blockSize, heads, headDim] for each row the model's
/// <see cref="KvCacheSpec"/> declares (key and value, or a single MLA latent), owned by the backend (host memory
/// for CPU, device memory for CUDA). Which blocks belong to which sequence is tracked by <see cref="BlockPool"/>
/// and the sequences' block tables; this class only holds the memory.
/// </summary>
public sealed class PagedKvCache : IDisposable
{
    private readonly DeviceTensor[][] tensors;

    public PagedKvCache(IBackend backend, KvCacheSpec spec, int blockCount, int blockSize)
    {
        if (blockCount <= 0 || blockSize <= 0)
        {
            throw new ArgumentOutOfRangeException(nameof(blockCount), $"the KV cache needs at least one block (got {blockCount} blocks of {blockSize})");
        }

        Spec = spec;
        BlockCount = blockCount;
        BlockSize = blockSize;
        tensors = new DeviceTensor[spec.Layers][];
        for (var layer = 0; layer < spec.Layers; layer++)
        {
            tensors[layer] = spec.Tensors.Select(t => backend.Allocate(spec.DType, blockCount, blockSize, t.Heads, t.HeadDim)).ToArray();
        }
    }

    public KvCacheSpec Spec { get; }

    public int BlockCount { get; }

    public int BlockSize { get; }

    public long Bytes => Spec.BytesPerToken * BlockCount * BlockSize;

    /// <summary>How many blocks fit in a memory budget.</summary>
    public static int BlocksFor(long bytes, KvCacheSpec spec, int blockSize) =>
        (int)Math.Min(int.MaxValue, bytes / (spec.BytesPerToken * blockSize));

    /// <summary>The layer's tensor for the spec's row number <paramref name="index"/>.</summary>
    public DeviceTensor Tensor(int layer, int index) => tensors[layer][index];

    public DeviceTensor Keys(int layer) => tensors[layer][0];

    public DeviceTensor Values(int layer) => tensors[layer][1];

    public void Dispose()
    {
        foreach (var layer in tensors)
        {
            foreach (var t in layer)
            {
                t.Dispose();
            }
        }
    }
}
