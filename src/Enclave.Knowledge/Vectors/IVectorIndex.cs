namespace Enclave.Knowledge.Vectors;

/// <summary>Similarity measure of a vector index; scores are "higher is more similar" for both.</summary>
public enum VectorMetric
{
    Cosine,
    InnerProduct,
}

/// <summary>How an index stores vectors: full float32, half precision, or int8 with a per-vector scale.</summary>
public enum VectorStorage
{
    Float32,
    Float16,
    Int8,
}

/// <summary>Index algorithm: exact brute-force (SIMD) or an HNSW graph.</summary>
public enum VectorIndexKind
{
    Exact,
    Hnsw,
}

/// <summary>Options fixed when an index is created and persisted with it.</summary>
public sealed record VectorIndexOptions(int Dimensions, VectorMetric Metric = VectorMetric.Cosine,
    VectorStorage Storage = VectorStorage.Float32, VectorIndexKind Kind = VectorIndexKind.Hnsw,
    int M = 16, int EfConstruction = 200, int EfSearch = 64);

/// <summary>One search result: the caller's id and its similarity score (higher is better).</summary>
public readonly record struct VectorHit(long Id, float Score);

/// <summary>
/// A persistent vector index in one directory. Ids are the caller's (chunk ids); Add with an existing id replaces
/// its vector. Implementations are safe for concurrent searches and a single writer.
/// </summary>
public interface IVectorIndex : IDisposable
{
    VectorIndexOptions Options { get; }

    int Count { get; }

    void Add(long id, ReadOnlySpan<float> vector);

    bool Remove(long id);

    /// <summary>The k most similar live vectors; <paramref name="filter"/> (when given) admits ids.</summary>
    IReadOnlyList<VectorHit> Search(ReadOnlySpan<float> query, int k, Func<long, bool>? filter = null);

    /// <summary>Writes pending changes to the index directory so a later Open sees them.</summary>
    void Flush();
}
