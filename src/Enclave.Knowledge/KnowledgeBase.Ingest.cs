using System.Text.Json;
using Enclave.Knowledge.Chunking;
using Enclave.Knowledge.Cleaning;
using Enclave.Knowledge.Extraction;
using Enclave.Knowledge.Retrieval;
using Enclave.Knowledge.Search;
using Enclave.Knowledge.Store;
using Microsoft.EntityFrameworkCore;
using Microsoft.Extensions.AI;
using Microsoft.Extensions.Logging;

namespace Enclave.Knowledge;

public sealed partial class KnowledgeBase
{
    /// <summary>
    /// Records an ingestion job for a file and keeps its bytes (sealed when the collection is encrypted) so the job can
    /// run or resume later. A file whose content hash equals the document's current version gives a job that is
    /// already <see cref="JobStatus.Unchanged"/>.
    /// </summary>
    public async Task<IngestJob> SubmitAsync(string collection, string source, byte[] content, KnowledgeCaller? caller, CancellationToken ct = default)
    {
        var c = await WritableAsync(collection, caller, ct);
        source = source.Replace('\\', '/').Trim();
        if (source.Length == 0 || source.Length > 1024)
        {
            throw KnowledgeException.Invalid("the document name must be 1-1024 characters");
        }

        if (!DocumentExtractor.IsSupported(source))
        {
            throw KnowledgeException.Invalid($"{source}: unsupported file type '{Path.GetExtension(source)}' (supported: {string.Join(", ", DocumentExtractor.SupportedExtensions)})");
        }

        if (content.LongLength > options.MaxDocumentBytes)
        {
            throw new KnowledgeException(413, $"{source} is {content.LongLength} bytes, more than the {options.MaxDocumentBytes} accepted", "request_too_large");
        }

        var hash = Sha256Hex(content);
        var now = DateTime.UtcNow;
        var job = new IngestJob
        {
            Id = "kbjob-" + Guid.NewGuid().ToString("N"),
            CollectionId = c.Id,
            Source = source,
            ContentHash = hash,
            CreatedUtc = now,
            UpdatedUtc = now,
        };
        await using var db = Store.CreateContext();
        var existing = await db.Documents.FirstOrDefaultAsync(d => d.CollectionId == c.Id && d.Source == source, ct);
        job.DocumentId = existing?.Id;
        if (existing is { Status: DocumentStatus.Ready } && existing.ContentHash == hash)
        {
            job.Status = JobStatus.Unchanged;
            job.Stage = IngestStage.Committed;
            db.Jobs.Add(job);
            await db.SaveChangesAsync(ct);
            return job;
        }

        var pending = await db.Jobs.FirstOrDefaultAsync(j => j.CollectionId == c.Id && j.Source == source && j.ContentHash == hash
                                                             && (j.Status == JobStatus.Queued || j.Status == JobStatus.Running), ct);
        if (pending is not null)
        {
            return pending;
        }

        var files = Path.Combine(CollectionDirectory(c.Id), "incoming");
        System.IO.Directory.CreateDirectory(files);
        job.StoredFile = Path.Combine(files, job.Id + ".bin");
        await WriteStoredFileAsync(c, job.StoredFile, content, ct);
        db.Jobs.Add(job);
        await db.SaveChangesAsync(ct);
        return job;
    }

    /// <summary>Submits and runs a job to its end (the CLI path); returns the finished job.</summary>
    public async Task<IngestJob> IngestAsync(string collection, string source, byte[] content, KnowledgeCaller? caller, CancellationToken ct = default)
    {
        var job = await SubmitAsync(collection, source, content, caller, ct);
        return job.Status is JobStatus.Queued or JobStatus.Running ? await RunJobAsync(job.Id, ct) : job;
    }

    public async Task<IngestJob> GetJobAsync(string id, KnowledgeCaller? caller, CancellationToken ct = default)
    {
        await using var db = Store.CreateContext();
        var job = await db.Jobs.AsNoTracking().FirstOrDefaultAsync(j => j.Id == id, ct);
        var c = job is null ? null : await db.Collections.Include(x => x.Access).FirstOrDefaultAsync(x => x.Id == job.CollectionId, ct);
        return job is not null && c is not null && CanRead(c, caller) ? job : throw KnowledgeException.NotFound($"no ingestion job '{id}'");
    }

    /// <summary>Jobs left queued or running by a previous process, oldest first.</summary>
    public async Task<IReadOnlyList<string>> UnfinishedJobsAsync(CancellationToken ct = default)
    {
        await using var db = Store.CreateContext();
        return await db.Jobs.Where(j => j.Status == JobStatus.Queued || j.Status == JobStatus.Running)
            .OrderBy(j => j.CreatedUtc).Select(j => j.Id).ToListAsync(ct);
    }

    /// <summary>
    /// Runs a job from the step after the last one it recorded. Steps: chunk (extract, clean, scrub and chunk; chunks
    /// are stored under a new generation, invisible to search), embed, index (BM25), commit (the document switches to
    /// the new generation in one transaction), then old chunks leave the indexes.
    /// </summary>
    public async Task<IngestJob> RunJobAsync(string jobId, CancellationToken ct = default)
    {
        await writer.WaitAsync(ct);
        try
        {
            return await RunJobLockedAsync(jobId, ct);
        }
        finally
        {
            writer.Release();
        }
    }

    private async Task<IngestJob> RunJobLockedAsync(string jobId, CancellationToken ct)
    {
        await using var db = Store.CreateContext();
        var job = await db.Jobs.FirstOrDefaultAsync(j => j.Id == jobId, ct) ?? throw KnowledgeException.NotFound($"no ingestion job '{jobId}'");
        if (job.Status is not (JobStatus.Queued or JobStatus.Running))
        {
            return job;
        }

        var c = await db.Collections.FirstOrDefaultAsync(x => x.Id == job.CollectionId, ct);
        if (c is null)
        {
            job.Status = JobStatus.Failed;
            job.Error = "the collection was deleted";
            await db.SaveChangesAsync(ct);
            return job;
        }

        job.Status = JobStatus.Running;
        job.UpdatedUtc = DateTime.UtcNow;
        await db.SaveChangesAsync(ct);
        try
        {
            if (job.Stage == IngestStage.Queued)
            {
                await ChunkStepAsync(db, c, job, ct);
            }

            if (job.Stage == IngestStage.Chunked)
            {
                await EmbedStepAsync(db, c, job, ct);
            }

            if (job.Stage == IngestStage.Embedded)
            {
                await IndexStepAsync(db, c, job, ct);
            }

            if (job.Stage == IngestStage.Indexed)
            {
                await CommitStepAsync(db, c, job, ct);
            }

            logger.LogInformation("knowledge job {Job} {Collection}/{Source}: {Chunks} chunks", job.Id, c.Name, job.Source, job.Chunks);
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            logger.LogWarning(e, "knowledge job {Job} {Collection}/{Source} failed", job.Id, c.Name, job.Source);
            await FailAsync(job.Id, e is DocumentFormatException or PiiRejectedException or KnowledgeException or InvalidOperationException
                ? e.Message : $"{e.GetType().Name}: {e.Message}");
            await using var fresh = Store.CreateContext();
            return await fresh.Jobs.AsNoTracking().FirstAsync(j => j.Id == job.Id, CancellationToken.None);
        }

        return job;
    }

    private async Task FailAsync(string jobId, string error)
    {
        await using var db = Store.CreateContext();
        var job = await db.Jobs.FirstAsync(j => j.Id == jobId);
        job.Status = JobStatus.Failed;
        job.Error = error;
        job.UpdatedUtc = DateTime.UtcNow;
        if (job.DocumentId is { } docId)
        {
            // Chunks of the failed version never became live; the previous version (if any) stays as it was.
            var doc = await db.Documents.FirstOrDefaultAsync(d => d.Id == docId);
            var c = await db.Collections.FirstOrDefaultAsync(x => x.Id == job.CollectionId);
            if (doc is not null && c is not null && job.Generation != doc.Generation)
            {
                // The failed version may already be in the indexes (a failure after the embed or index step): take it out.
                var orphans = await db.Chunks.Where(x => x.DocumentId == docId && x.Generation == job.Generation).Select(x => x.Id).ToListAsync();
                if (orphans.Count > 0)
                {
                    Bm25(c.Id).DeleteGeneration(docId, job.Generation);
                    RemoveVectors(c, orphans);
                }

                await db.Chunks.Where(x => x.DocumentId == docId && x.Generation == job.Generation).ExecuteDeleteAsync();
            }

            if (doc is not null)
            {
                if (doc.Status == DocumentStatus.Ingesting)
                {
                    doc.Status = DocumentStatus.Failed;
                    doc.Error = error;
                }
            }
        }

        await db.SaveChangesAsync();
        TryDelete(job.StoredFile);
    }

    private async Task ChunkStepAsync(KnowledgeDbContext db, Store.KnowledgeCollection c, IngestJob job, CancellationToken ct)
    {
        var bytes = await ReadStoredFileAsync(c, job.StoredFile, ct);
        var extracted = DocumentExtractor.Extract(bytes, job.Source);
        var notes = new List<string>();

        // Clean: Unicode/whitespace per block, then page furniture across pages.
        for (var i = 0; i < extracted.Blocks.Count; i++)
        {
            var b = extracted.Blocks[i];
            extracted.Blocks[i] = b with { Text = TextCleaner.Normalize(b.Text) };
        }

        extracted.Blocks.RemoveAll(b => b.Text.Length == 0);
        var boilerplate = BoilerplateFilter.Apply(extracted);
        if (boilerplate > 0)
        {
            notes.Add($"{boilerplate} header/footer blocks removed");
        }

        // PII: before anything is stored or embedded.
        if (c.PiiPolicy != PiiPolicies.Keep)
        {
            var found = new SortedSet<string>(StringComparer.Ordinal);
            for (var i = 0; i < extracted.Blocks.Count; i++)
            {
                var r = scrubber.Scrub(extracted.Blocks[i].Text, mask: c.PiiPolicy == PiiPolicies.Mask);
                found.UnionWith(r.FoundTypes);
                extracted.Blocks[i] = extracted.Blocks[i] with { Text = r.Text };
            }

            var title = scrubber.Scrub(extracted.Title, mask: c.PiiPolicy == PiiPolicies.Mask);
            found.UnionWith(title.FoundTypes);
            extracted.Title = title.Text;
            if (found.Count > 0 && c.PiiPolicy == PiiPolicies.Drop)
            {
                throw new PiiRejectedException([.. found]);
            }

            if (found.Count > 0)
            {
                notes.Add("personal data masked: " + string.Join(", ", found));
            }
        }

        var chunked = new Chunker(TokenCounter(c), c.ChunkTokens, c.ChunkOverlap).Chunk(extracted.Blocks);
        if (chunked.DuplicatesRemoved > 0)
        {
            notes.Add($"{chunked.DuplicatesRemoved} duplicate chunks removed");
        }

        await using var tx = await db.Database.BeginTransactionAsync(ct);
        var doc = job.DocumentId is { } id ? await db.Documents.FirstOrDefaultAsync(d => d.Id == id, ct) : null;
        doc ??= await db.Documents.FirstOrDefaultAsync(d => d.CollectionId == c.Id && d.Source == job.Source, ct);
        if (doc is null)
        {
            doc = new KnowledgeDocument
            {
                CollectionId = c.Id,
                Source = job.Source,
                Title = extracted.Title,
                Status = DocumentStatus.Ingesting,
                UpdatedUtc = DateTime.UtcNow,
            };
            db.Documents.Add(doc);
            await db.SaveChangesAsync(ct);
        }

        job.DocumentId = doc.Id;
        job.Generation = doc.Generation + 1;
        await db.Chunks.Where(x => x.DocumentId == doc.Id && x.Generation == job.Generation).ExecuteDeleteAsync(ct);
        var ordinal = 0;
        foreach (var d in chunked.Chunks)
        {
            db.Chunks.Add(new KnowledgeChunk
            {
                CollectionId = c.Id,
                DocumentId = doc.Id,
                Generation = job.Generation,
                Ordinal = ordinal++,
                Text = Seal(c, doc.Id, d.Text),
                Page = d.Page,
                HeadingPath = d.HeadingPath,
                CharStart = d.CharStart,
                CharEnd = d.CharEnd,
                TokenCount = d.Tokens,
            });
        }

        var metadata = new Dictionary<string, string>(extracted.Metadata, StringComparer.Ordinal);
        job.PendingTitle = extracted.Title;
        job.PendingText = Seal(c, doc.Id, chunked.Text);
        job.PendingMetadataJson = JsonSerializer.Serialize(metadata);
        job.PendingPageCount = extracted.PageCount;
        job.Chunks = chunked.Chunks.Count;
        job.Notes = string.Join("; ", notes);
        job.Stage = IngestStage.Chunked;
        job.UpdatedUtc = DateTime.UtcNow;
        await db.SaveChangesAsync(ct);
        await tx.CommitAsync(ct);
    }

    private async Task<List<(KnowledgeChunk Chunk, string Text)>> JobChunksAsync(KnowledgeDbContext db, Store.KnowledgeCollection c, IngestJob job, CancellationToken ct)
    {
        var chunks = await db.Chunks.AsNoTracking().Where(x => x.DocumentId == job.DocumentId && x.Generation == job.Generation)
            .OrderBy(x => x.Ordinal).ToListAsync(ct);
        return [.. chunks.Select(x => (x, Open(c, x.DocumentId, x.Text)))];
    }

    private async Task EmbedStepAsync(KnowledgeDbContext db, Store.KnowledgeCollection c, IngestJob job, CancellationToken ct)
    {
        if (c.EmbeddingModel is not null)
        {
            var generator = Generator(c);
            var chunks = await JobChunksAsync(db, c, job, ct);
            for (var i = 0; i < chunks.Count; i += options.EmbeddingBatchSize)
            {
                var batch = chunks.Skip(i).Take(options.EmbeddingBatchSize).ToList();
                var embedded = await generator.GenerateAsync(batch.Select(b => EmbeddingText(job.PendingTitle, b.Chunk.HeadingPath, b.Text)), cancellationToken: ct);
                if (embedded.Count != batch.Count)
                {
                    throw new InvalidOperationException($"the embedding model returned {embedded.Count} vectors for {batch.Count} texts");
                }

                var dims = embedded[0].Vector.Length;
                if (c.VectorDimensions is { } expected && expected != dims)
                {
                    throw new InvalidOperationException($"the embedding model returned {dims}-dimensional vectors; collection '{c.Name}' holds {expected}");
                }

                if (c.VectorDimensions is null)
                {
                    c.VectorDimensions = dims;
                    await db.SaveChangesAsync(ct);
                }

                var index = OpenVectors(c, dims)!;
                for (var k = 0; k < batch.Count; k++)
                {
                    index.Add(batch[k].Chunk.Id, embedded[k].Vector.Span);
                }
            }

            if (vectors.TryGetValue(c.Id, out var v))
            {
                v.Flush();
            }
        }

        job.Stage = IngestStage.Embedded;
        job.UpdatedUtc = DateTime.UtcNow;
        await db.SaveChangesAsync(ct);
    }

    /// <summary>The text embedded for a chunk: title and headings give a passage its context.</summary>
    private static string EmbeddingText(string title, string heading, string text) =>
        string.Join("\n", new[] { title, heading, text }.Where(s => s.Length > 0).Distinct(StringComparer.Ordinal));

    private async Task IndexStepAsync(KnowledgeDbContext db, Store.KnowledgeCollection c, IngestJob job, CancellationToken ct)
    {
        var chunks = await JobChunksAsync(db, c, job, ct);
        var metadata = JsonSerializer.Deserialize<Dictionary<string, string>>(job.PendingMetadataJson) ?? [];
        metadata["source"] = job.Source;
        Bm25(c.Id).Add(chunks.Select(x => new Bm25Entry(x.Chunk.Id, x.Chunk.DocumentId, x.Chunk.Generation, x.Text, x.Chunk.HeadingPath, job.PendingTitle, metadata)));
        job.Stage = IngestStage.Indexed;
        job.UpdatedUtc = DateTime.UtcNow;
        await db.SaveChangesAsync(ct);
    }

    private async Task CommitStepAsync(KnowledgeDbContext db, Store.KnowledgeCollection c, IngestJob job, CancellationToken ct)
    {
        var docId = job.DocumentId!.Value;
        List<long> stale;
        await using (var tx = await db.Database.BeginTransactionAsync(ct))
        {
            var doc = await db.Documents.FirstAsync(d => d.Id == docId, ct);
            stale = await db.Chunks.Where(x => x.DocumentId == docId && x.Generation != job.Generation).Select(x => x.Id).ToListAsync(ct);
            doc.Generation = job.Generation;
            doc.Status = DocumentStatus.Ready;
            doc.Error = null;
            doc.Title = job.PendingTitle;
            doc.Text = job.PendingText;
            doc.MetadataJson = job.PendingMetadataJson;
            doc.PageCount = job.PendingPageCount;
            doc.ContentHash = job.ContentHash;
            doc.UpdatedUtc = DateTime.UtcNow;
            await db.Chunks.Where(x => x.DocumentId == docId && x.Generation != job.Generation).ExecuteDeleteAsync(ct);
            job.Stage = IngestStage.Committed;
            job.Status = JobStatus.Succeeded;
            job.PendingText = "";
            job.UpdatedUtc = DateTime.UtcNow;
            await db.SaveChangesAsync(ct);
            await tx.CommitAsync(ct);
        }

        // The switch is done; what follows only tidies the indexes (search ignores stale ids meanwhile).
        if (stale.Count > 0)
        {
            Bm25(c.Id).DeleteDocument(docId, keepGeneration: job.Generation);
            RemoveVectors(c, stale);
        }

        var kept = Path.Combine(CollectionDirectory(c.Id), "documents", docId.ToString(System.Globalization.CultureInfo.InvariantCulture) + ".bin");
        System.IO.Directory.CreateDirectory(Path.GetDirectoryName(kept)!);
        File.Move(job.StoredFile, kept, overwrite: true);
        job.StoredFile = kept;
        await db.SaveChangesAsync(ct);
    }

    private void RemoveVectors(Store.KnowledgeCollection c, IReadOnlyCollection<long> ids)
    {
        if (ids.Count == 0 || c.VectorDimensions is null || vectorFactory is null)
        {
            return;
        }

        var index = OpenVectors(c, c.VectorDimensions);
        if (index is null)
        {
            return;
        }

        foreach (var id in ids)
        {
            index.Remove(id);
        }

        index.Flush();
    }

    /// <summary>Deletes a document: its chunks, its BM25 entries, its vectors and its stored file.</summary>
    public async Task DeleteDocumentAsync(string collection, string source, KnowledgeCaller? caller, CancellationToken ct = default)
    {
        var c = await WritableAsync(collection, caller, ct);
        await writer.WaitAsync(ct);
        try
        {
            await using var db = Store.CreateContext();
            var doc = await db.Documents.FirstOrDefaultAsync(d => d.CollectionId == c.Id && d.Source == source, ct)
                      ?? throw KnowledgeException.NotFound($"collection '{collection}' has no document '{source}'");
            var ids = await db.Chunks.Where(x => x.DocumentId == doc.Id).Select(x => x.Id).ToListAsync(ct);
            await db.Documents.Where(d => d.Id == doc.Id).ExecuteDeleteAsync(ct);
            Bm25(c.Id).DeleteDocument(doc.Id);
            RemoveVectors(c, ids);
            TryDelete(Path.Combine(CollectionDirectory(c.Id), "documents", doc.Id.ToString(System.Globalization.CultureInfo.InvariantCulture) + ".bin"));
        }
        finally
        {
            writer.Release();
        }
    }

    /// <summary>Stored files are sealed as one envelope of their base64 when the collection is encrypted.</summary>
    private async Task WriteStoredFileAsync(Store.KnowledgeCollection c, string path, byte[] content, CancellationToken ct)
    {
        if (Sealer(c) is { } s)
        {
            await File.WriteAllTextAsync(path, s.Protect(Convert.ToBase64String(content), Context(c, 0)), ct);
        }
        else
        {
            await File.WriteAllBytesAsync(path, content, ct);
        }
    }

    private async Task<byte[]> ReadStoredFileAsync(Store.KnowledgeCollection c, string path, CancellationToken ct)
    {
        if (!File.Exists(path))
        {
            throw new InvalidOperationException($"the uploaded file of this job is gone ({path})");
        }

        return Sealer(c) is { } s
            ? Convert.FromBase64String(s.Unprotect(await File.ReadAllTextAsync(path, ct), Context(c, 0)))
            : await File.ReadAllBytesAsync(path, ct);
    }

    private static void TryDelete(string path)
    {
        try
        {
            if (path.Length > 0)
            {
                File.Delete(path);
            }
        }
        catch (IOException)
        {
            // left for the next cleanup; it is never read again
        }
    }
}
