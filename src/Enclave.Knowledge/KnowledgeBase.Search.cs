using System.Text.Json;
using Enclave.Knowledge.Retrieval;
using Enclave.Knowledge.Store;
using Microsoft.EntityFrameworkCore;
using Microsoft.Extensions.AI;

namespace Enclave.Knowledge;

public sealed partial class KnowledgeBase
{
    /// <summary>Reciprocal rank fusion constant (Cormack et al. 2009): fused score = Σ 1 / (60 + rank).</summary>
    public const int RrfK = 60;

    /// <summary>Searches one collection the caller may read.</summary>
    public Task<IReadOnlyList<SearchHit>> SearchAsync(string collection, SearchRequest request, KnowledgeCaller? caller, CancellationToken ct = default) =>
        SearchAsync([collection], request, caller, ct);

    /// <summary>
    /// Searches several collections; every one must be readable by the caller (an unreadable one is reported as not
    /// found, so its existence is not disclosed). Results are merged by score and cut to top-k.
    /// </summary>
    public async Task<IReadOnlyList<SearchHit>> SearchAsync(IReadOnlyList<string> collections, SearchRequest request, KnowledgeCaller? caller, CancellationToken ct = default)
    {
        if (string.IsNullOrWhiteSpace(request.Query))
        {
            throw KnowledgeException.Invalid("the query is empty");
        }

        if (request.TopK is < 1 or > 100)
        {
            throw KnowledgeException.Invalid($"top_k must be between 1 and 100 (got {request.TopK})");
        }

        using var span = KnowledgeTelemetry.Source.StartActivity("knowledge.retrieve");
        span?.SetTag("enclave.kb.collections", string.Join(",", collections));
        span?.SetTag("enclave.kb.mode", request.Mode.ToString().ToLowerInvariant());
        span?.SetTag("enclave.kb.top_k", request.TopK);
        var all = new List<SearchHit>();
        foreach (var name in collections.Distinct(StringComparer.Ordinal))
        {
            var c = await GetCollectionAsync(name, caller, ct);
            all.AddRange(await SearchCollectionAsync(c, request, ct));
        }

        List<SearchHit> hits = [.. all.OrderByDescending(h => h.Score).Take(request.TopK)];
        span?.SetTag("enclave.kb.hits", hits.Count);
        return hits;
    }

    private async Task<IReadOnlyList<SearchHit>> SearchCollectionAsync(KnowledgeCollection c, SearchRequest request, CancellationToken ct)
    {
        var mode = request.Mode == RetrievalMode.Auto ? (c.EmbeddingModel is null ? RetrievalMode.Bm25 : RetrievalMode.Hybrid) : request.Mode;
        var candidates = Math.Max(request.TopK * 4, 20);
        HashSet<long>? allowedDocs = request.Metadata is { Count: > 0 } ? await DocumentsMatchingAsync(c, request.Metadata, ct) : null;

        List<(long Id, float Score)> ranked;
        switch (mode)
        {
            case RetrievalMode.Bm25:
                ranked = [.. Bm25(c.Id).Search(request.Query, candidates, request.Metadata).Select(h => (h.ChunkId, h.Score))];
                break;
            case RetrievalMode.Dense:
                ranked = await DenseAsync(c, request.Query, candidates, allowedDocs, ct);
                break;
            default:
                var lexical = Bm25(c.Id).Search(request.Query, candidates, request.Metadata).Select(h => h.ChunkId).ToList();
                var dense = (await DenseAsync(c, request.Query, candidates, allowedDocs, ct)).Select(h => h.Id).ToList();
                ranked = Fuse([lexical, dense]);
                break;
        }

        var live = await LiveChunksAsync(c, ranked.Select(r => r.Id).ToList(), ct);
        var hits = new List<SearchHit>();
        foreach (var (id, score) in ranked)
        {
            if (live.TryGetValue(id, out var citation) && (allowedDocs is null || allowedDocs.Contains(citation.DocumentId)))
            {
                hits.Add(new SearchHit(citation, score));
            }
        }

        if (request.Rerank)
        {
            var reranker = Reranker ?? throw new KnowledgeException(503, "no reranker model is configured on this server", "model_not_available");
            var scores = await reranker.ScoreAsync(request.Query, hits.Select(h => h.Citation.Text).ToList(), ct);
            if (scores.Count != hits.Count)
            {
                throw new InvalidOperationException($"the reranker returned {scores.Count} scores for {hits.Count} passages");
            }

            hits = [.. hits.Select((h, i) => h with { Score = scores[i] }).OrderByDescending(h => h.Score)];
        }

        return [.. hits.Where(h => request.MinScore is null || h.Score >= request.MinScore).Take(request.TopK)];
    }

    /// <summary>Reciprocal rank fusion of ranked id lists; ids missing from a list simply get nothing from it.</summary>
    public static List<(long Id, float Score)> Fuse(IReadOnlyList<IReadOnlyList<long>> rankings)
    {
        var scores = new Dictionary<long, float>();
        foreach (var ranking in rankings)
        {
            for (var rank = 0; rank < ranking.Count; rank++)
            {
                scores[ranking[rank]] = scores.GetValueOrDefault(ranking[rank]) + (1f / (RrfK + rank + 1));
            }
        }

        return [.. scores.OrderByDescending(kv => kv.Value).ThenBy(kv => kv.Key).Select(kv => (kv.Key, kv.Value))];
    }

    private async Task<List<(long Id, float Score)>> DenseAsync(KnowledgeCollection c, string query, int k, HashSet<long>? allowedDocs, CancellationToken ct)
    {
        var generator = Generator(c);
        var index = OpenVectors(c, null);
        if (index is null)
        {
            return [];
        }

        var embedding = await generator.GenerateAsync(query, cancellationToken: ct);
        Func<long, bool>? filter = null;
        if (allowedDocs is not null)
        {
            await using var db = Store.CreateContext();
            var ids = await db.Chunks.Where(x => x.CollectionId == c.Id && allowedDocs.Contains(x.DocumentId)).Select(x => x.Id).ToListAsync(ct);
            var set = ids.ToHashSet();
            filter = set.Contains;
        }

        return [.. index.Search(embedding.Vector.Span, k, filter).Select(h => (h.Id, h.Score))];
    }

    private async Task<HashSet<long>> DocumentsMatchingAsync(KnowledgeCollection c, IReadOnlyDictionary<string, string> metadata, CancellationToken ct)
    {
        await using var db = Store.CreateContext();
        var docs = await db.Documents.Where(d => d.CollectionId == c.Id && d.Status == DocumentStatus.Ready)
            .Select(d => new { d.Id, d.Source, d.MetadataJson }).ToListAsync(ct);
        var result = new HashSet<long>();
        foreach (var d in docs)
        {
            var m = JsonSerializer.Deserialize<Dictionary<string, string>>(d.MetadataJson) ?? [];
            m["source"] = d.Source;
            if (metadata.All(kv => m.TryGetValue(kv.Key, out var v) && v == kv.Value))
            {
                result.Add(d.Id);
            }
        }

        return result;
    }

    /// <summary>Citations for the ids that are live: their document is ready and they belong to its current generation.</summary>
    private async Task<Dictionary<long, Citation>> LiveChunksAsync(KnowledgeCollection c, List<long> ids, CancellationToken ct)
    {
        if (ids.Count == 0)
        {
            return [];
        }

        await using var db = Store.CreateContext();
        var rows = await (from x in db.Chunks
                          join d in db.Documents on x.DocumentId equals d.Id
                          where ids.Contains(x.Id) && d.CollectionId == c.Id && d.Status == DocumentStatus.Ready && x.Generation == d.Generation
                          select new { Chunk = x, d.Source, d.Title }).AsNoTracking().ToListAsync(ct);
        return rows.ToDictionary(r => r.Chunk.Id, r => new Citation(c.Name, r.Chunk.DocumentId, r.Source, r.Title, r.Chunk.Page, r.Chunk.HeadingPath,
            r.Chunk.Id, r.Chunk.CharStart, r.Chunk.CharEnd, Open(c, r.Chunk.DocumentId, r.Chunk.Text)));
    }

    /// <summary>The document's cleaned text (opened when sealed), to check or display a citation's span.</summary>
    public async Task<string> DocumentTextAsync(string collection, string source, KnowledgeCaller? caller, CancellationToken ct = default)
    {
        var c = await GetCollectionAsync(collection, caller, ct);
        await using var db = Store.CreateContext();
        var doc = await db.Documents.AsNoTracking().FirstOrDefaultAsync(d => d.CollectionId == c.Id && d.Source == source && d.Status == DocumentStatus.Ready, ct)
                  ?? throw KnowledgeException.NotFound($"collection '{collection}' has no document '{source}'");
        return Open(c, doc.Id, doc.Text);
    }
}
