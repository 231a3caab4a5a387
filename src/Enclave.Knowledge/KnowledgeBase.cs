using System.Collections.Concurrent;
using System.Security.Cryptography;
using System.Text.Json;
using System.Text.RegularExpressions;
using Enclave.Engine.Tokenization;
using Enclave.Gateway.Crypto;
using Enclave.Knowledge.Chunking;
using Enclave.Knowledge.Cleaning;
using Enclave.Knowledge.Extraction;
using Enclave.Knowledge.Retrieval;
using Enclave.Knowledge.Search;
using Enclave.Knowledge.Store;
using Enclave.Knowledge.Vectors;
using Microsoft.EntityFrameworkCore;
using Microsoft.Extensions.AI;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace Enclave.Knowledge;

/// <summary>
/// Collections of documents with their BM25 and vector indexes: ingestion as resumable steps
/// (extract → clean → PII scrub → chunk → embed → index → commit), retrieval with citations, and per-collection
/// access lists. The store (SQLite or PostgreSQL) is the source of truth: only chunks of a document's current
/// generation are ever returned, so replacing a document switches atomically at the commit step even though the
/// indexes are updated before it.
/// </summary>
public sealed partial class KnowledgeBase : IAsyncDisposable
{
    private readonly KnowledgeOptions options;
    private readonly IVectorIndexFactory? vectorFactory;
    private readonly IEmbeddingModelProvider? embeddings;
    private readonly ITextScrubber scrubber;
    private readonly ILogger logger;
    private readonly ConcurrentDictionary<long, Bm25Index> bm25 = new();
    private readonly ConcurrentDictionary<long, IVectorIndex> vectors = new();
    private readonly ConcurrentDictionary<string, ITokenCounter> tokenCounters = new(StringComparer.Ordinal);
    private readonly SemaphoreSlim writer = new(1, 1);
    private readonly Lazy<FileKeyProvider> keys;

    private KnowledgeBase(KnowledgeOptions options, KnowledgeStore store, IVectorIndexFactory? vectorFactory, IEmbeddingModelProvider? embeddings,
        IReranker? reranker, ITextScrubber scrubber, ILogger logger)
    {
        this.options = options;
        Store = store;
        Directory = options.ResolveDirectory();
        this.vectorFactory = vectorFactory;
        this.embeddings = embeddings;
        Reranker = reranker;
        this.scrubber = scrubber;
        this.logger = logger;
        keys = new Lazy<FileKeyProvider>(() =>
        {
            var file = options.KeyFile ?? Path.Combine(Directory, "keys", "knowledge.keys");
            if (!File.Exists(file))
            {
                System.IO.Directory.CreateDirectory(Path.GetDirectoryName(file)!);
                FileKeyProvider.AddKey(file);
            }

            return new FileKeyProvider(file);
        });
    }

    public KnowledgeStore Store { get; }

    public string Directory { get; }

    public IReranker? Reranker { get; }

    /// <summary>Opens (and migrates) the knowledge base.</summary>
    public static async Task<KnowledgeBase> OpenAsync(KnowledgeOptions options, IVectorIndexFactory? vectorFactory = null, IEmbeddingModelProvider? embeddings = null,
        IReranker? reranker = null, ITextScrubber? scrubber = null, ILogger? logger = null, CancellationToken ct = default)
    {
        var dir = options.ResolveDirectory();
        var store = KnowledgeStore.Open(dir, options.Postgres);
        await store.MigrateAsync(ct);
        return new KnowledgeBase(options, store, vectorFactory, embeddings, reranker, scrubber ?? new GatewayPiiScrubber(), logger ?? NullLogger.Instance);
    }

    // ---------------------------------------------------------------- collections and access

    [GeneratedRegex("^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
    private static partial Regex CollectionName();

    [GeneratedRegex("^(user|role):[^\\s]{1,128}$")]
    private static partial Regex PrincipalPattern();

    public async Task<KnowledgeCollection> CreateCollectionAsync(CollectionSpec spec, string owner, CancellationToken ct = default)
    {
        if (!CollectionName().IsMatch(spec.Name))
        {
            throw KnowledgeException.Invalid($"collection name '{spec.Name}' must be 1-64 letters, digits, '_', '-' or '.', starting with a letter or digit");
        }

        if (!PiiPolicies.IsValid(spec.PiiPolicy))
        {
            throw KnowledgeException.Invalid($"pii policy '{spec.PiiPolicy}' must be keep, mask or drop");
        }

        if (spec.Encryption is not null && spec.Encryption is not (Aead.Aes256Gcm or Aead.Sm4Gcm))
        {
            throw KnowledgeException.Invalid($"encryption '{spec.Encryption}' must be {Aead.Aes256Gcm} or {Aead.Sm4Gcm}");
        }

        if (spec.ChunkTokens is < 16 or > 8192 || spec.ChunkOverlap < 0 || spec.ChunkOverlap > spec.ChunkTokens / 2)
        {
            throw KnowledgeException.Invalid($"chunk size must be 16-8192 tokens and overlap 0 to half of it (got {spec.ChunkTokens}/{spec.ChunkOverlap})");
        }

        string? model = null;
        if (spec.EmbeddingModel is not null)
        {
            model = Path.GetFullPath(spec.EmbeddingModel);
            if (!File.Exists(Path.Combine(model, HfTokenizer.FileName)))
            {
                throw KnowledgeException.Invalid($"embedding model directory {model} has no {HfTokenizer.FileName}");
            }
        }

        foreach (var p in spec.Readers.Concat(spec.Writers))
        {
            if (!PrincipalPattern().IsMatch(p))
            {
                throw KnowledgeException.Invalid($"access entry '{p}' must be user:NAME or role:NAME");
            }
        }

        await using var db = Store.CreateContext();
        if (await db.Collections.AnyAsync(c => c.Name == spec.Name, ct))
        {
            throw new KnowledgeException(409, $"collection '{spec.Name}' already exists", "conflict");
        }

        var collection = new KnowledgeCollection
        {
            Name = spec.Name,
            Owner = owner,
            Description = spec.Description,
            EmbeddingModel = model,
            ChunkTokens = spec.ChunkTokens,
            ChunkOverlap = spec.ChunkOverlap,
            PiiPolicy = spec.PiiPolicy,
            Encryption = spec.Encryption,
            CreatedUtc = DateTime.UtcNow,
        };
        foreach (var p in spec.Writers.Distinct(StringComparer.Ordinal))
        {
            collection.Access.Add(new CollectionAccess { Principal = p, CanWrite = true });
        }

        foreach (var p in spec.Readers.Distinct(StringComparer.Ordinal).Except(spec.Writers, StringComparer.Ordinal))
        {
            collection.Access.Add(new CollectionAccess { Principal = p });
        }

        db.Collections.Add(collection);
        await db.SaveChangesAsync(ct);
        if (model is not null)
        {
            // Fail now, not at the first upload, when the tokenizer cannot be read.
            _ = TokenCounter(collection);
        }

        logger.LogInformation("knowledge collection {Collection} created by {Owner}", collection.Name, owner);
        return collection;
    }

    /// <summary>Collections the caller may read (all of them for a null caller: the local operator).</summary>
    public async Task<IReadOnlyList<KnowledgeCollection>> ListCollectionsAsync(KnowledgeCaller? caller, CancellationToken ct = default)
    {
        await using var db = Store.CreateContext();
        var all = await db.Collections.Include(c => c.Access).OrderBy(c => c.Name).ToListAsync(ct);
        return [.. all.Where(c => CanRead(c, caller))];
    }

    public async Task<(int Documents, int Chunks)> CountsAsync(long collectionId, CancellationToken ct = default)
    {
        await using var db = Store.CreateContext();
        var docs = await db.Documents.CountAsync(d => d.CollectionId == collectionId && d.Status == DocumentStatus.Ready, ct);
        var chunks = await (from c in db.Chunks
                            join d in db.Documents on c.DocumentId equals d.Id
                            where d.CollectionId == collectionId && d.Status == DocumentStatus.Ready && c.Generation == d.Generation
                            select c.Id).CountAsync(ct);
        return (docs, chunks);
    }

    /// <summary>The collection, if the caller may read it; otherwise not found (its existence is not disclosed).</summary>
    public async Task<KnowledgeCollection> GetCollectionAsync(string name, KnowledgeCaller? caller, CancellationToken ct = default)
    {
        await using var db = Store.CreateContext();
        var c = await db.Collections.Include(x => x.Access).FirstOrDefaultAsync(x => x.Name == name, ct);
        return c is not null && CanRead(c, caller) ? c : throw KnowledgeException.NotFound($"no knowledge collection named '{name}'");
    }

    private async Task<KnowledgeCollection> WritableAsync(string name, KnowledgeCaller? caller, CancellationToken ct)
    {
        var c = await GetCollectionAsync(name, caller, ct);
        return CanWrite(c, caller) ? c : throw KnowledgeException.Forbidden($"you may search collection '{name}' but not change it");
    }

    public static bool CanRead(KnowledgeCollection c, KnowledgeCaller? caller) =>
        caller is null || c.Owner == caller.User || caller.Principals.Any(p => c.Access.Any(a => a.Principal == p));

    public static bool CanWrite(KnowledgeCollection c, KnowledgeCaller? caller) =>
        caller is null || c.Owner == caller.User || caller.Principals.Any(p => c.Access.Any(a => a.Principal == p && a.CanWrite));

    /// <summary>Deletes a collection with its documents, chunks and indexes. Only its owner (or the local operator) may.</summary>
    public async Task DeleteCollectionAsync(string name, KnowledgeCaller? caller, CancellationToken ct = default)
    {
        var c = await GetCollectionAsync(name, caller, ct);
        if (caller is not null && c.Owner != caller.User)
        {
            throw KnowledgeException.Forbidden($"only the owner ({c.Owner}) may delete collection '{name}'");
        }

        await writer.WaitAsync(ct);
        try
        {
            await using (var db = Store.CreateContext())
            {
                await db.Jobs.Where(j => j.CollectionId == c.Id).ExecuteDeleteAsync(ct);
                await db.Collections.Where(x => x.Id == c.Id).ExecuteDeleteAsync(ct);
            }

            if (bm25.TryRemove(c.Id, out var index))
            {
                index.Dispose();
            }

            if (vectors.TryRemove(c.Id, out var v))
            {
                v.Dispose();
            }

            var dir = CollectionDirectory(c.Id);
            if (System.IO.Directory.Exists(dir))
            {
                System.IO.Directory.Delete(dir, recursive: true);
            }
        }
        finally
        {
            writer.Release();
        }
    }

    /// <summary>Replaces a collection's access list. Only its owner (or the local operator) may.</summary>
    public async Task SetAccessAsync(string name, IReadOnlyList<string> readers, IReadOnlyList<string> writers, KnowledgeCaller? caller, CancellationToken ct = default)
    {
        var c = await GetCollectionAsync(name, caller, ct);
        if (caller is not null && c.Owner != caller.User)
        {
            throw KnowledgeException.Forbidden($"only the owner ({c.Owner}) may change who can use collection '{name}'");
        }

        foreach (var p in readers.Concat(writers))
        {
            if (!PrincipalPattern().IsMatch(p))
            {
                throw KnowledgeException.Invalid($"access entry '{p}' must be user:NAME or role:NAME");
            }
        }

        await using var db = Store.CreateContext();
        await using var tx = await db.Database.BeginTransactionAsync(ct);
        await db.Access.Where(a => a.CollectionId == c.Id).ExecuteDeleteAsync(ct);
        foreach (var p in writers.Distinct(StringComparer.Ordinal))
        {
            db.Access.Add(new CollectionAccess { CollectionId = c.Id, Principal = p, CanWrite = true });
        }

        foreach (var p in readers.Distinct(StringComparer.Ordinal).Except(writers, StringComparer.Ordinal))
        {
            db.Access.Add(new CollectionAccess { CollectionId = c.Id, Principal = p });
        }

        await db.SaveChangesAsync(ct);
        await tx.CommitAsync(ct);
    }

    public async Task<IReadOnlyList<KnowledgeDocument>> ListDocumentsAsync(string collection, KnowledgeCaller? caller, CancellationToken ct = default)
    {
        var c = await GetCollectionAsync(collection, caller, ct);
        await using var db = Store.CreateContext();
        return await db.Documents.Where(d => d.CollectionId == c.Id).OrderBy(d => d.Source).ToListAsync(ct);
    }

    // ---------------------------------------------------------------- paths, indexes, sealing

    private string CollectionDirectory(long id) => Path.Combine(Directory, "collections", id.ToString(System.Globalization.CultureInfo.InvariantCulture));

    private Bm25Index Bm25(long collectionId) =>
        bm25.GetOrAdd(collectionId, id => Bm25Index.Open(Path.Combine(CollectionDirectory(id), "bm25"), options.Bm25Analyzer));

    private IVectorIndex? OpenVectors(KnowledgeCollection c, int? dimensions)
    {
        if (vectors.TryGetValue(c.Id, out var existing))
        {
            return existing;
        }

        var dir = Path.Combine(CollectionDirectory(c.Id), "vectors");
        if (vectorFactory is null)
        {
            throw new KnowledgeException(503, "no vector index is configured in this process: dense retrieval and embedding are unavailable", "vector_index_unavailable");
        }

        IVectorIndex index;
        if (System.IO.Directory.Exists(dir) && System.IO.Directory.EnumerateFileSystemEntries(dir).Any())
        {
            index = vectorFactory.Open(dir);
        }
        else if (dimensions is { } d)
        {
            System.IO.Directory.CreateDirectory(dir);
            index = vectorFactory.Create(dir, new VectorIndexOptions(d));
        }
        else
        {
            return null;
        }

        return vectors.GetOrAdd(c.Id, index);
    }

    private SecretProtector? Sealer(KnowledgeCollection c) => c.Encryption is null ? null : new SecretProtector(keys.Value, c.Encryption);

    private static string Context(KnowledgeCollection c, long documentId) =>
        $"enclave-kb/{c.Id.ToString(System.Globalization.CultureInfo.InvariantCulture)}/{documentId.ToString(System.Globalization.CultureInfo.InvariantCulture)}";

    private string Seal(KnowledgeCollection c, long documentId, string text) => Sealer(c) is { } s ? s.Protect(text, Context(c, documentId)) : text;

    private string Open(KnowledgeCollection c, long documentId, string stored) => Sealer(c) is { } s ? s.Unprotect(stored, Context(c, documentId)) : stored;

    private ITokenCounter TokenCounter(KnowledgeCollection c)
    {
        if (c.EmbeddingModel is null)
        {
            return EstimateTokenCounter.Instance;
        }

        return tokenCounters.GetOrAdd(c.EmbeddingModel, dir =>
        {
            try
            {
                return new TokenizerTokenCounter(HfTokenizer.FromDirectory(dir));
            }
            catch (Exception e) when (e is NotSupportedException or InvalidDataException or IOException or JsonException or FormatException or KeyNotFoundException)
            {
                throw KnowledgeException.Invalid($"the embedding model's tokenizer in {dir} cannot be read: {e.Message}");
            }
        });
    }

    private IEmbeddingGenerator<string, Embedding<float>> Generator(KnowledgeCollection c) =>
        c.EmbeddingModel is null
            ? throw KnowledgeException.Invalid($"collection '{c.Name}' has no embedding model: use mode bm25, or create it with an embedding model")
            : embeddings?.Get(c.EmbeddingModel)
              ?? throw new KnowledgeException(503, $"the embedding model {c.EmbeddingModel} of collection '{c.Name}' is not available in this process", "model_not_available");

    public async ValueTask DisposeAsync()
    {
        await writer.WaitAsync();
        try
        {
            foreach (var index in bm25.Values)
            {
                index.Dispose();
            }

            foreach (var v in vectors.Values)
            {
                v.Flush();
                v.Dispose();
            }

            bm25.Clear();
            vectors.Clear();
        }
        finally
        {
            writer.Release();
            writer.Dispose();
        }
    }

    internal static string Sha256Hex(byte[] bytes) => Convert.ToHexStringLower(SHA256.HashData(bytes));
}
