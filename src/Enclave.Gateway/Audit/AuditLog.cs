using System.Globalization;
using System.IO.Compression;
using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization;
using Enclave.Gateway.Crypto;
using Enclave.Gateway.Store;
using Microsoft.EntityFrameworkCore;

namespace Enclave.Gateway.Audit;

/// <summary>What the caller knows about one API call or admin action.</summary>
public sealed record AuditEntry
{
    public string RequestId { get; init; } = Guid.NewGuid().ToString("N");
    public string? Principal { get; init; }
    public string? Role { get; init; }
    public string? SourceIp { get; init; }
    public string Method { get; init; } = "";
    public string Endpoint { get; init; } = "";
    public string? Model { get; init; }
    public int Status { get; init; }
    public long LatencyMs { get; init; }
    public int? PromptTokens { get; init; }
    public int? CompletionTokens { get; init; }
    public string? Details { get; init; }
}

public sealed record AuditVerifyResult(bool Intact, long RecordCount, long? FirstBadSequence, string Message);

/// <summary>What one archive file holds and whether it is intact on its own.</summary>
public sealed record ArchiveVerifyResult(
    bool Intact, long RecordCount, long FirstSequence, long LastSequence, string FirstPrevHash, string LastHash, long? FirstBadSequence, string Message);

public sealed record AuditQuery(
    DateTimeOffset? Since = null,
    DateTimeOffset? Until = null,
    string? Principal = null,
    string? Model = null,
    int? Status = null,
    string? Text = null,
    int Limit = 100);

/// <summary>
/// Append-only, hash-chained audit log. Each record's hash covers its content and the previous
/// record's hash; every <see cref="CheckpointEvery"/> records an Ed25519-signed checkpoint pins the
/// chain head so deleting the tail is detected too. Appends are serialized in-process and, across
/// processes, by the database (SQLite write transaction, PostgreSQL advisory lock).
/// </summary>
public sealed class AuditLog(GatewayStore store, AuditSigner signer, string algorithm = ChainHash.Sha256)
{
    private const long PostgresLockKey = 0x656E636C61766501;
    private readonly SemaphoreSlim _gate = new(1, 1);

    public string Algorithm { get; } = ChainHash.IsKnown(algorithm) ? algorithm : throw new ArgumentException($"Unknown audit hash '{algorithm}'.", nameof(algorithm));
    public int CheckpointEvery { get; set; } = 100;
    public string PublicKey => signer.PublicKey;

    /// <summary>When set, record details (parameters, prompt, response) are stored envelope-encrypted.</summary>
    public SecretProtector? Protector { get; set; }

    private static string DetailsContext(string requestId) => "audit:" + requestId;

    /// <summary>The record's details in clear text, decrypting them when they are stored encrypted.</summary>
    public string? ReadDetails(AuditRecordEntity r)
    {
        if (!SecretProtector.IsEnvelope(r.Details))
        {
            return r.Details;
        }

        return Protector is null
            ? throw new System.Security.Cryptography.CryptographicException($"Audit record {r.Sequence} is encrypted and no master key is configured.")
            : Protector.Unprotect(r.Details!, DetailsContext(r.RequestId));
    }

    /// <summary>The exact bytes a record's hash covers.</summary>
    public static byte[] CanonicalBytes(AuditRecordEntity r)
    {
        var sb = new StringBuilder(256);
        void Field(string? v)
        {
            if (v is null)
            {
                sb.Append("-1:");
            }
            else
            {
                sb.Append(v.Length.ToString(CultureInfo.InvariantCulture)).Append(':').Append(v);
            }

            sb.Append('\n');
        }

        Field(r.Algorithm);
        Field(r.Sequence.ToString(CultureInfo.InvariantCulture));
        Field(r.PrevHash);
        Field(r.TimestampMs.ToString(CultureInfo.InvariantCulture));
        Field(r.RequestId);
        Field(r.Principal);
        Field(r.Role);
        Field(r.SourceIp);
        Field(r.Method);
        Field(r.Endpoint);
        Field(r.Model);
        Field(r.Status.ToString(CultureInfo.InvariantCulture));
        Field(r.LatencyMs.ToString(CultureInfo.InvariantCulture));
        Field(r.PromptTokens?.ToString(CultureInfo.InvariantCulture));
        Field(r.CompletionTokens?.ToString(CultureInfo.InvariantCulture));
        // Encrypted details are hashed without their wrapped data key, so re-wrapping under a new
        // master key leaves the chain intact while the sealed body stays covered.
        Field(SecretProtector.IsEnvelope(r.Details) ? SecretProtector.StableForm(r.Details!) : r.Details);
        return Encoding.UTF8.GetBytes(sb.ToString());
    }

    public static string ComputeHash(AuditRecordEntity r) => ChainHash.Hex(r.Algorithm, CanonicalBytes(r));

    private readonly Lock _queueLock = new();
    private List<(AuditEntry Entry, TaskCompletionSource<AuditRecordEntity> Done)> _queue = [];
    private bool _writerRunning;
    private const int MaxBatch = 256;

    /// <summary>
    /// Appends a record and completes once it is committed. Concurrent callers are group-committed:
    /// one writer drains the queue into a single transaction, so throughput is not bounded by one
    /// commit per request, while each caller still waits for its own record to be durable.
    /// </summary>
    public Task<AuditRecordEntity> AppendAsync(AuditEntry entry, CancellationToken ct = default)
    {
        ct.ThrowIfCancellationRequested();
        var done = new TaskCompletionSource<AuditRecordEntity>(TaskCreationOptions.RunContinuationsAsynchronously);
        bool start;
        lock (_queueLock)
        {
            _queue.Add((entry, done));
            start = !_writerRunning;
            _writerRunning = true;
        }

        if (start)
        {
            _ = Task.Run(WriterLoopAsync, CancellationToken.None);
        }

        return done.Task;
    }

    private async Task WriterLoopAsync()
    {
        while (true)
        {
            List<(AuditEntry Entry, TaskCompletionSource<AuditRecordEntity> Done)> batch;
            lock (_queueLock)
            {
                if (_queue.Count == 0)
                {
                    _writerRunning = false;
                    return;
                }

                if (_queue.Count <= MaxBatch)
                {
                    batch = _queue;
                    _queue = [];
                }
                else
                {
                    batch = _queue.GetRange(0, MaxBatch);
                    _queue.RemoveRange(0, MaxBatch);
                }
            }

            try
            {
                var records = await WriteBatchAsync([.. batch.Select(b => b.Entry)]);
                for (var i = 0; i < batch.Count; i++)
                {
                    batch[i].Done.SetResult(records[i]);
                }
            }
            catch (Exception e)
            {
                foreach (var b in batch)
                {
                    b.Done.TrySetException(e);
                }
            }
        }
    }

    private async Task<List<AuditRecordEntity>> WriteBatchAsync(List<AuditEntry> entries)
    {
        var ct = CancellationToken.None;
        await _gate.WaitAsync(ct);
        try
        {
            await using var db = store.CreateContext();
            await using var tx = await db.Database.BeginTransactionAsync(ct);
            if (store.Provider == StoreProvider.Postgres)
            {
                await db.Database.ExecuteSqlRawAsync($"SELECT pg_advisory_xact_lock({PostgresLockKey})", ct);
            }

            var (lastSeq, lastHash) = await HeadAsync(db, ct);
            var now = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds();
            var records = new List<AuditRecordEntity>(entries.Count);
            foreach (var entry in entries)
            {
                var record = new AuditRecordEntity
                {
                    Sequence = lastSeq + 1,
                    TimestampMs = now,
                    RequestId = entry.RequestId,
                    Principal = entry.Principal,
                    Role = entry.Role,
                    SourceIp = entry.SourceIp,
                    Method = entry.Method,
                    Endpoint = entry.Endpoint,
                    Model = entry.Model,
                    Status = entry.Status,
                    LatencyMs = entry.LatencyMs,
                    PromptTokens = entry.PromptTokens,
                    CompletionTokens = entry.CompletionTokens,
                    Details = entry.Details is null || Protector is null ? entry.Details : Protector.Protect(entry.Details, DetailsContext(entry.RequestId)),
                    Algorithm = Algorithm,
                    PrevHash = lastHash,
                };
                record.Hash = ComputeHash(record);
                db.AuditRecords.Add(record);
                if (CheckpointEvery > 0 && record.Sequence % CheckpointEvery == 0)
                {
                    db.AuditCheckpoints.Add(MakeCheckpoint(record.Sequence, record.Hash));
                }

                records.Add(record);
                lastSeq = record.Sequence;
                lastHash = record.Hash;
            }

            await db.SaveChangesAsync(ct);
            await tx.CommitAsync(ct);
            return records;
        }
        finally
        {
            _gate.Release();
        }
    }

    /// <summary>Signs the current chain head (e.g. on shutdown or a timer). No-op on an empty chain.</summary>
    public async Task<AuditCheckpointEntity?> CheckpointAsync(CancellationToken ct = default)
    {
        await _gate.WaitAsync(ct);
        try
        {
            await using var db = store.CreateContext();
            var (seq, hash) = await HeadAsync(db, ct);
            if (seq == 0 || await db.AuditCheckpoints.AnyAsync(c => c.Sequence == seq, ct))
            {
                return null;
            }

            var cp = MakeCheckpoint(seq, hash);
            db.AuditCheckpoints.Add(cp);
            await db.SaveChangesAsync(ct);
            return cp;
        }
        finally
        {
            _gate.Release();
        }
    }

    private AuditCheckpointEntity MakeCheckpoint(long seq, string hash)
    {
        var ts = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds();
        return new AuditCheckpointEntity
        {
            Sequence = seq,
            Hash = hash,
            TimestampMs = ts,
            PublicKey = signer.PublicKey,
            Signature = signer.Sign(AuditSigner.CheckpointMessage(seq, hash, ts)),
        };
    }

    private static async Task<(long Seq, string Hash)> HeadAsync(GatewayDbContext db, CancellationToken ct)
    {
        var last = await db.AuditRecords.AsNoTracking().OrderByDescending(r => r.Sequence)
            .Select(r => new { r.Sequence, r.Hash }).FirstOrDefaultAsync(ct);
        if (last is not null)
        {
            return (last.Sequence, last.Hash);
        }

        var anchor = await db.AuditAnchors.AsNoTracking().OrderByDescending(a => a.Sequence).FirstOrDefaultAsync(ct);
        return anchor is null ? (0, ChainHash.Genesis) : (anchor.Sequence, anchor.Hash);
    }

    /// <summary>Walks the whole hot chain and the checkpoints; reports the first broken link.</summary>
    public async Task<AuditVerifyResult> VerifyAsync(CancellationToken ct = default)
    {
        await using var db = store.CreateContext();
        var anchor = await db.AuditAnchors.AsNoTracking().OrderByDescending(a => a.Sequence).FirstOrDefaultAsync(ct);
        var expectedSeq = (anchor?.Sequence ?? 0) + 1;
        var expectedPrev = anchor?.Hash ?? ChainHash.Genesis;
        var hashes = new Dictionary<long, string>();
        long count = 0;

        await foreach (var r in db.AuditRecords.AsNoTracking().OrderBy(r => r.Sequence).AsAsyncEnumerable().WithCancellation(ct))
        {
            if (r.Sequence != expectedSeq)
            {
                return r.Sequence > expectedSeq
                    ? Bad(count, expectedSeq, $"record {expectedSeq} is missing (next present is {r.Sequence})")
                    : Bad(count, r.Sequence, $"record {r.Sequence} is out of order");
            }

            if (!ChainHash.IsKnown(r.Algorithm))
            {
                return Bad(count, r.Sequence, $"record {r.Sequence} names unknown hash algorithm '{r.Algorithm}'");
            }

            if (!string.Equals(r.PrevHash, expectedPrev, StringComparison.Ordinal))
            {
                return Bad(count, r.Sequence, $"record {r.Sequence} does not link to the previous record (prev hash mismatch)");
            }

            if (!string.Equals(ComputeHash(r), r.Hash, StringComparison.Ordinal))
            {
                return Bad(count, r.Sequence, $"record {r.Sequence} content does not match its hash (altered)");
            }

            hashes[r.Sequence] = r.Hash;
            expectedPrev = r.Hash;
            expectedSeq++;
            count++;
        }

        var lastSeq = expectedSeq - 1;
        var checkpoints = await db.AuditCheckpoints.AsNoTracking().OrderBy(c => c.Sequence).ToListAsync(ct);
        foreach (var cp in checkpoints)
        {
            if (!string.Equals(cp.PublicKey, signer.PublicKey, StringComparison.Ordinal)
                || !AuditSigner.Verify(cp.PublicKey, AuditSigner.CheckpointMessage(cp.Sequence, cp.Hash, cp.TimestampMs), cp.Signature))
            {
                return Bad(count, cp.Sequence, $"checkpoint at record {cp.Sequence} has an invalid signature");
            }

            if (anchor is not null && cp.Sequence <= anchor.Sequence)
            {
                continue;
            }

            if (cp.Sequence > lastSeq)
            {
                return Bad(count, lastSeq + 1, $"chain truncated: signed checkpoint covers record {cp.Sequence} but the last record is {lastSeq}");
            }

            if (!string.Equals(hashes[cp.Sequence], cp.Hash, StringComparison.Ordinal))
            {
                return Bad(count, cp.Sequence, $"record {cp.Sequence} differs from its signed checkpoint");
            }
        }

        return new AuditVerifyResult(true, count, null, $"audit chain intact: {count} records");
    }

    private static AuditVerifyResult Bad(long count, long seq, string message) => new(false, count, seq, message);

    public async Task<List<AuditRecordEntity>> SearchAsync(AuditQuery q, CancellationToken ct = default)
    {
        await using var db = store.CreateContext();
        var query = db.AuditRecords.AsNoTracking().AsQueryable();
        if (q.Since is { } since)
        {
            var ms = since.ToUnixTimeMilliseconds();
            query = query.Where(r => r.TimestampMs >= ms);
        }

        if (q.Until is { } until)
        {
            var ms = until.ToUnixTimeMilliseconds();
            query = query.Where(r => r.TimestampMs < ms);
        }

        if (!string.IsNullOrEmpty(q.Principal))
        {
            query = query.Where(r => r.Principal == q.Principal);
        }

        if (!string.IsNullOrEmpty(q.Model))
        {
            query = query.Where(r => r.Model == q.Model);
        }

        if (q.Status is { } status)
        {
            query = query.Where(r => r.Status == status);
        }

        var limit = Math.Clamp(q.Limit, 1, 10_000);
        if (!string.IsNullOrEmpty(q.Text) && Protector is not null)
        {
            // Encrypted details cannot be searched by the database: decrypt and match here, newest first.
            var found = new List<AuditRecordEntity>();
            await foreach (var r in query.OrderByDescending(r => r.Sequence).Take(MaxDecryptScan).AsAsyncEnumerable().WithCancellation(ct))
            {
                var clear = Clear(r);
                if ((clear.Details?.Contains(q.Text, StringComparison.Ordinal) ?? false) || r.Endpoint.Contains(q.Text, StringComparison.Ordinal))
                {
                    found.Add(clear);
                    if (found.Count == limit)
                    {
                        break;
                    }
                }
            }

            return found;
        }

        if (!string.IsNullOrEmpty(q.Text))
        {
            var text = q.Text;
            query = query.Where(r => (r.Details != null && r.Details.Contains(text)) || r.Endpoint.Contains(text));
        }

        var rows = await query.OrderByDescending(r => r.Sequence).Take(limit).ToListAsync(ct);
        return Protector is null ? rows : [.. rows.Select(Clear)];
    }

    /// <summary>Most records a text search decrypts when details are encrypted (narrow it with --since).</summary>
    public const int MaxDecryptScan = 100_000;

    /// <summary>A copy of the record with its details decrypted (or left as they are when not encrypted).</summary>
    private AuditRecordEntity Clear(AuditRecordEntity r)
    {
        if (!SecretProtector.IsEnvelope(r.Details))
        {
            return r;
        }

        var copy = r.Copy();
        copy.Details = ReadDetails(r);
        return copy;
    }

    /// <summary>
    /// Re-wraps the data key of every encrypted record under the protector's current master key;
    /// the sealed bodies, and so the chain hashes, do not change. Returns how many were re-wrapped.
    /// </summary>
    public async Task<long> RewrapAsync(CancellationToken ct = default)
    {
        var protector = Protector ?? throw new InvalidOperationException("No master key is configured.");
        long rewrapped = 0;
        long after = 0;
        while (true)
        {
            await using var db = store.CreateContext();
            var page = await db.AuditRecords.Where(r => r.Sequence > after && r.Details != null && r.Details.StartsWith("enc1:"))
                .OrderBy(r => r.Sequence).Take(500).ToListAsync(ct);
            if (page.Count == 0)
            {
                return rewrapped;
            }

            foreach (var r in page)
            {
                var next = protector.Rewrap(r.Details!);
                if (!string.Equals(next, r.Details, StringComparison.Ordinal))
                {
                    r.Details = next;
                    rewrapped++;
                }
            }

            await db.SaveChangesAsync(ct);
            after = page[^1].Sequence;
        }
    }

    /// <summary>
    /// Moves the oldest records (timestamp before <paramref name="before"/>) into a gzip JSON-lines
    /// archive ending in a signed trailer, then removes them from the hot store and records an
    /// anchor so the remaining chain still verifies. Returns the number of records exported.
    /// Runs under the append lock (and the database's write lock), so replicas never export the
    /// same records twice and no append interleaves.
    /// </summary>
    public async Task<long> ExportAsync(DateTimeOffset before, string file, CancellationToken ct = default)
    {
        var beforeMs = before.ToUnixTimeMilliseconds();
        await _gate.WaitAsync(ct);
        try
        {
            await using var db = store.CreateContext();
            await using var tx = await db.Database.BeginTransactionAsync(ct);
            if (store.Provider == StoreProvider.Postgres)
            {
                await db.Database.ExecuteSqlRawAsync($"SELECT pg_advisory_xact_lock({PostgresLockKey})", ct);
            }

            var anchor = await db.AuditAnchors.AsNoTracking().OrderByDescending(a => a.Sequence).FirstOrDefaultAsync(ct);
            var expected = (anchor?.Sequence ?? 0) + 1;
            long first = 0, last = 0, count = 0;
            var lastHash = "";
            var fullPath = Path.GetFullPath(file);
            Directory.CreateDirectory(Path.GetDirectoryName(fullPath)!);
            var tmp = fullPath + ".partial";
            await using (var fs = File.Create(tmp))
            await using (var gz = new GZipStream(fs, CompressionLevel.Optimal))
            await using (var w = new StreamWriter(gz, new UTF8Encoding(false)))
            {
                // Only the unbroken run from the start of the hot chain: a record with a skewed
                // clock further on stays until everything before it has aged out too.
                await foreach (var r in db.AuditRecords.AsNoTracking().Where(r => r.TimestampMs < beforeMs).OrderBy(r => r.Sequence)
                    .AsAsyncEnumerable().WithCancellation(ct))
                {
                    if (r.Sequence != expected)
                    {
                        break;
                    }

                    await w.WriteLineAsync(JsonSerializer.Serialize(r));
                    first = count == 0 ? r.Sequence : first;
                    last = r.Sequence;
                    lastHash = r.Hash;
                    expected++;
                    count++;
                }

                var ts = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds();
                await w.WriteLineAsync(JsonSerializer.Serialize(new ArchiveTrailer("trailer", first, last, lastHash, ts, signer.PublicKey,
                    signer.Sign(ArchiveMessage(first, last, lastHash, ts)))));
            }

            File.Move(tmp, fullPath, overwrite: true);
            if (count == 0)
            {
                return 0;
            }

            db.AuditAnchors.Add(new AuditAnchorEntity
            {
                Sequence = last,
                Hash = lastHash,
                ArchiveFile = fullPath,
                TimestampMs = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds(),
            });
            await db.SaveChangesAsync(ct);
            await db.AuditRecords.Where(r => r.Sequence <= last).ExecuteDeleteAsync(ct);
            await tx.CommitAsync(ct);
            return count;
        }
        finally
        {
            _gate.Release();
        }
    }

    private sealed record ArchiveTrailer(
        [property: JsonPropertyName("type")] string Type,
        [property: JsonPropertyName("first")] long First,
        [property: JsonPropertyName("last")] long Last,
        [property: JsonPropertyName("lastHash")] string LastHash,
        [property: JsonPropertyName("timestampMs")] long TimestampMs,
        [property: JsonPropertyName("publicKey")] string PublicKey,
        [property: JsonPropertyName("signature")] string Signature);

    public static byte[] ArchiveMessage(long first, long last, string lastHash, long timestampMs) =>
        Encoding.UTF8.GetBytes($"enclave-audit-archive\n{first}\n{last}\n{lastHash}\n{timestampMs}");

    /// <summary>
    /// Archives every record older than <paramref name="retention"/> into <paramref name="directory"/>
    /// (one file per run, named by its sequence range). Returns the file, or null when nothing was due.
    /// </summary>
    public async Task<(string File, long Count)?> ArchiveOlderThanAsync(TimeSpan retention, string directory, CancellationToken ct = default)
    {
        var before = DateTimeOffset.UtcNow - retention;
        var beforeMs = before.ToUnixTimeMilliseconds();
        await using (var db = store.CreateContext())
        {
            if (!await db.AuditRecords.AnyAsync(r => r.TimestampMs < beforeMs, ct))
            {
                return null;
            }
        }

        var file = Path.Combine(directory, $"audit-{DateTimeOffset.UtcNow:yyyyMMddTHHmmssfff}-{Guid.NewGuid():N}.jsonl.gz");
        var n = await ExportAsync(before, file, ct);
        if (n == 0)
        {
            File.Delete(file);
            return null;
        }

        return (file, n);
    }

    /// <summary>
    /// Deletes archive files exported before <paramref name="cutoff"/> and marks their anchors pruned,
    /// so verification starts after them instead of reporting them missing. Returns the files removed.
    /// </summary>
    public async Task<List<string>> PruneArchivesAsync(DateTimeOffset cutoff, CancellationToken ct = default)
    {
        var cutoffMs = cutoff.ToUnixTimeMilliseconds();
        var removed = new List<string>();
        await using var db = store.CreateContext();
        var due = await db.AuditAnchors.Where(a => a.PrunedAtMs == null && a.TimestampMs < cutoffMs).OrderBy(a => a.Sequence).ToListAsync(ct);
        foreach (var a in due)
        {
            if (a.ArchiveFile is not null && File.Exists(a.ArchiveFile))
            {
                File.Delete(a.ArchiveFile);
                removed.Add(a.ArchiveFile);
            }

            a.PrunedAtMs = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds();
        }

        await db.SaveChangesAsync(ct);
        return removed;
    }

    /// <summary>
    /// Verifies one archive on its own: every record's hash, every link, and the Ed25519-signed
    /// trailer (made with <paramref name="trustedPublicKey"/> when given), which pins the last
    /// record so edits, deletions and truncation inside the file are all detected.
    /// </summary>
    public static async Task<ArchiveVerifyResult> VerifyArchiveAsync(string file, string? trustedPublicKey, CancellationToken ct = default)
    {
        ArchiveVerifyResult Bad(long count, long? seq, string message) => new(false, count, 0, 0, "", "", seq, message);
        if (!File.Exists(file))
        {
            return Bad(0, null, $"archive {file} does not exist");
        }

        var lines = new List<string>();
        try
        {
            await using var gz = new GZipStream(File.OpenRead(file), CompressionMode.Decompress);
            using var reader = new StreamReader(gz, Encoding.UTF8);
            while (await reader.ReadLineAsync(ct) is { } line)
            {
                if (line.Length > 0)
                {
                    lines.Add(line);
                }
            }
        }
        catch (InvalidDataException e)
        {
            return Bad(0, null, $"archive {file} is not a readable gzip file ({e.Message})");
        }

        ArchiveTrailer? trailer;
        try
        {
            trailer = lines.Count == 0 ? null : JsonSerializer.Deserialize<ArchiveTrailer>(lines[^1]);
        }
        catch (JsonException)
        {
            trailer = null;
        }

        if (trailer is null || trailer.Type != "trailer")
        {
            return Bad(0, null, "archive has no signed trailer (truncated?)");
        }

        if (trustedPublicKey is not null && !string.Equals(trailer.PublicKey, trustedPublicKey, StringComparison.Ordinal))
        {
            return Bad(0, null, "archive trailer is signed by a key other than this deployment's audit signing key");
        }

        if (!AuditSigner.Verify(trailer.PublicKey, ArchiveMessage(trailer.First, trailer.Last, trailer.LastHash, trailer.TimestampMs), trailer.Signature))
        {
            return Bad(0, null, "archive trailer has an invalid signature");
        }

        long count = 0;
        long expected = trailer.First;
        string? firstPrev = null;
        string prev = "";
        for (var i = 0; i < lines.Count - 1; i++)
        {
            AuditRecordEntity? r;
            try
            {
                r = JsonSerializer.Deserialize<AuditRecordEntity>(lines[i]);
            }
            catch (JsonException)
            {
                r = null;
            }

            if (r is null)
            {
                return Bad(count, expected, $"line {i + 1} is not an audit record");
            }

            if (r.Sequence != expected)
            {
                return Bad(count, expected, r.Sequence > expected ? $"record {expected} is missing from the archive" : $"record {r.Sequence} is out of order");
            }

            if (firstPrev is not null && !string.Equals(r.PrevHash, prev, StringComparison.Ordinal))
            {
                return Bad(count, r.Sequence, $"record {r.Sequence} does not link to the previous record (prev hash mismatch)");
            }

            if (!ChainHash.IsKnown(r.Algorithm) || !string.Equals(ComputeHash(r), r.Hash, StringComparison.Ordinal))
            {
                return Bad(count, r.Sequence, $"record {r.Sequence} content does not match its hash (altered)");
            }

            firstPrev ??= r.PrevHash;
            prev = r.Hash;
            expected++;
            count++;
        }

        if (count == 0 ? trailer.Last != 0 : trailer.Last != expected - 1 || !string.Equals(prev, trailer.LastHash, StringComparison.Ordinal))
        {
            return Bad(count, expected, $"archive ends at record {expected - 1} but its signed trailer covers up to {trailer.Last} (truncated or rewritten)");
        }

        return new ArchiveVerifyResult(true, count, trailer.First, trailer.Last, firstPrev ?? "", trailer.LastHash, null,
            $"archive intact: {count} records ({trailer.First}-{trailer.Last})");
    }

    /// <summary>
    /// Verifies the whole chain: every archive the store has anchored (in order, each linking to the
    /// one before; pruned ones are skipped), then the hot records after the last anchor.
    /// </summary>
    public async Task<AuditVerifyResult> VerifyChainAsync(CancellationToken ct = default)
    {
        List<AuditAnchorEntity> anchors;
        await using (var db = store.CreateContext())
        {
            anchors = await db.AuditAnchors.AsNoTracking().OrderBy(a => a.Sequence).ToListAsync(ct);
        }

        long expectedSeq = 1, total = 0, archives = 0;
        var expectedPrev = ChainHash.Genesis;
        foreach (var a in anchors)
        {
            if (a.PrunedAtMs is not null)
            {
                expectedSeq = a.Sequence + 1;
                expectedPrev = a.Hash;
                continue;
            }

            if (a.ArchiveFile is null || !File.Exists(a.ArchiveFile))
            {
                return Bad(total, expectedSeq, $"archive {a.ArchiveFile} holding records up to {a.Sequence} is missing");
            }

            var r = await VerifyArchiveAsync(a.ArchiveFile, signer.PublicKey, ct);
            if (!r.Intact)
            {
                return Bad(total + r.RecordCount, r.FirstBadSequence ?? expectedSeq, $"{a.ArchiveFile}: {r.Message}");
            }

            if (r.FirstSequence != expectedSeq || !string.Equals(r.FirstPrevHash, expectedPrev, StringComparison.Ordinal))
            {
                return Bad(total, expectedSeq, $"{a.ArchiveFile} does not continue the chain at record {expectedSeq}");
            }

            if (r.LastSequence != a.Sequence || !string.Equals(r.LastHash, a.Hash, StringComparison.Ordinal))
            {
                return Bad(total + r.RecordCount, r.LastSequence, $"{a.ArchiveFile} does not end where the store's anchor says (record {a.Sequence})");
            }

            total += r.RecordCount;
            archives++;
            expectedSeq = a.Sequence + 1;
            expectedPrev = a.Hash;
        }

        var hot = await VerifyAsync(ct);
        if (!hot.Intact)
        {
            return new AuditVerifyResult(false, total + hot.RecordCount, hot.FirstBadSequence, hot.Message);
        }

        return new AuditVerifyResult(true, total + hot.RecordCount, null,
            $"audit chain intact: {total + hot.RecordCount} records ({total} in {archives} archive(s), {hot.RecordCount} in the store)");
    }
}
