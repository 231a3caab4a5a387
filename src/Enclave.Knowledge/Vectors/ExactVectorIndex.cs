using System.Collections.Concurrent;

namespace Enclave.Knowledge.Vectors;

/// <summary>
/// Brute-force search: every live vector is scored with the SIMD kernels in its stored precision. Small indexes
/// are scanned on the calling thread; from <see cref="ParallelThreshold"/> vectors up, contiguous partitions are
/// scanned on all cores, each into its own k-heap, and the heaps are merged. Exact by construction, so it is also
/// the reference HNSW recall is measured against.
/// </summary>
public sealed unsafe class ExactVectorIndex : PersistentVectorIndex
{
    /// <summary>Below this many nodes a scan is cheaper than handing partitions to the thread pool.</summary>
    public const int ParallelThreshold = 32_768;

    private readonly ConcurrentBag<NodeHeap> _heaps = [];

    private ExactVectorIndex(string directory, VectorIndexOptions options)
        : base(directory, options)
    {
    }

    internal static ExactVectorIndex Create(string directory, VectorIndexOptions options)
    {
        var index = new ExactVectorIndex(directory, options);
        index.Initialise();
        return index;
    }

    internal static ExactVectorIndex Open(string directory, IndexFiles.Manifest manifest)
    {
        var index = new ExactVectorIndex(directory, manifest.Options);
        index.LoadGeneration(manifest);
        return index;
    }

    private protected override void AddPrepared(long id, ReadOnlySpan<float> prepared) => Store.Append(id, prepared);

    private protected override IReadOnlyList<VectorHit> SearchPrepared(float* query, int k, Func<long, bool>? filter, int efSearch)
    {
        var nodes = Store.NodeCount;
        var partitions = nodes < ParallelThreshold ? 1 : Math.Min(Environment.ProcessorCount, nodes / (ParallelThreshold / 4));
        var heaps = new NodeHeap[partitions];
        for (var p = 0; p < partitions; p++)
        {
            heaps[p] = _heaps.TryTake(out var heap) ? heap : new NodeHeap();
            heaps[p].Clear();
        }

        try
        {
            if (partitions == 1)
            {
                Scan(query, 0, nodes, k, filter, heaps[0]);
            }
            else
            {
                var q = (nint)query;
                Parallel.For(0, partitions, p =>
                {
                    var start = (int)((long)nodes * p / partitions);
                    var end = (int)((long)nodes * (p + 1) / partitions);
                    Scan((float*)q, start, end, k, filter, heaps[p]);
                });
            }

            // Merge: the best k of all partition heaps (each already holds its partition's best k).
            var merged = heaps[0];
            for (var p = 1; p < partitions; p++)
            {
                var other = heaps[p];
                while (other.Count > 0)
                {
                    Offer(merged, k, other.TopKey, other.TopNode);
                    other.Pop();
                }
            }

            var hits = new List<VectorHit>(merged.Count);
            while (merged.Count > 0)
            {
                hits.Add(new VectorHit(Store.IdOf(merged.TopNode), merged.TopKey));
                merged.Pop();
            }

            return Sorted(hits);
        }
        finally
        {
            foreach (var heap in heaps)
            {
                _heaps.Add(heap);
            }
        }
    }

    /// <summary>
    /// Scores nodes [start, end) into a min-heap of the best k (its top is the worst kept score). The filter runs
    /// only for vectors that would enter the heap, so a costly filter is called for few of the scanned vectors.
    /// </summary>
    private void Scan(float* query, int start, int end, int k, Func<long, bool>? filter, NodeHeap heap)
    {
        var store = Store;
        for (var node = start; node < end; node++)
        {
            if (store.IsDeleted(node))
            {
                continue;
            }

            var score = store.Score(query, node);
            if (heap.Count == k && score <= heap.TopKey)
            {
                continue;
            }

            if (filter is not null && !filter(store.IdOf(node)))
            {
                continue;
            }

            Offer(heap, k, score, node);
        }
    }

    private static void Offer(NodeHeap heap, int k, float score, int node)
    {
        if (heap.Count < k)
        {
            heap.Push(score, node);
        }
        else if (score > heap.TopKey)
        {
            heap.ReplaceTop(score, node);
        }
    }

    private protected override (int Node, int Level) WriteGraph(long generation) => (-1, -1);

    private protected override void LoadGraph(IndexFiles.Manifest manifest)
    {
    }

    private protected override void ReleaseGraph()
    {
    }
}
