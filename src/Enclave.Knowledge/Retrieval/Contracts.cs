using Microsoft.Extensions.AI;

namespace Enclave.Knowledge.Retrieval;

/// <summary>A cross-encoder: one relevance score per passage for the query (higher is more relevant).</summary>
public interface IReranker
{
    Task<IReadOnlyList<float>> ScoreAsync(string query, IReadOnlyList<string> passages, CancellationToken cancellationToken);
}

/// <summary>Gives the embedding generator for a collection's embedding model directory, or null when it cannot be served here.</summary>
public interface IEmbeddingModelProvider
{
    IEmbeddingGenerator<string, Embedding<float>>? Get(string modelDirectory);
}

/// <summary>How candidates are found.</summary>
public enum RetrievalMode
{
    /// <summary>Hybrid when the collection has an embedding model, else BM25.</summary>
    Auto,
    Bm25,
    Dense,
    Hybrid,
}

/// <summary>A search request. The score threshold applies to the final score of the chosen mode (see docs/knowledge.md).</summary>
public sealed record SearchRequest(string Query)
{
    public int TopK { get; init; } = 5;

    public RetrievalMode Mode { get; init; } = RetrievalMode.Auto;

    /// <summary>Rerank the fused candidates with the configured cross-encoder.</summary>
    public bool Rerank { get; init; }

    public float? MinScore { get; init; }

    /// <summary>Document metadata that must match exactly (e.g. format=pdf).</summary>
    public IReadOnlyDictionary<string, string>? Metadata { get; init; }

    public static RetrievalMode ParseMode(string? mode) => mode?.ToLowerInvariant() switch
    {
        null or "" or "auto" => RetrievalMode.Auto,
        "bm25" => RetrievalMode.Bm25,
        "dense" => RetrievalMode.Dense,
        "hybrid" => RetrievalMode.Hybrid,
        _ => throw new ArgumentException($"mode '{mode}' is not one of auto, bm25, dense, hybrid", nameof(mode)),
    };
}

/// <summary>Where a passage comes from: enough to show and check the citation.</summary>
public sealed record Citation(
    string Collection,
    long DocumentId,
    string Document,
    string Title,
    int? Page,
    string Heading,
    long ChunkId,
    int CharStart,
    int CharEnd,
    string Text);

public sealed record SearchHit(Citation Citation, float Score);

/// <summary>Who is asking: a gateway user and their role. Collections grant access to <c>user:NAME</c> or <c>role:NAME</c>.</summary>
public sealed record KnowledgeCaller(string User, IReadOnlyCollection<string> Roles)
{
    public IEnumerable<string> Principals => Roles.Select(r => "role:" + r).Prepend("user:" + User);
}
