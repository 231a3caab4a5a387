using System.Globalization;
using System.IO.Compression;
using System.Text;
using System.Text.Json;
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
        Field(r.Details);
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
                    Details = entry.Details,
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

        if (!string.IsNullOrEmpty(q.Text))
        {
            var text = q.Text;
            query = query.Where(r => (r.Details != null && r.Details.Contains(text)) || r.Endpoint.Contains(text));
        }

        return await query.OrderByDescending(r => r.Sequence).Take(Math.Clamp(q.Limit, 1, 10_000)).ToListAsync(ct);
    }

    /// <summary>
    /// Moves the oldest records (timestamp before <paramref name="before"/>) into a gzip JSON-lines
    /// archive ending in a signed trailer, then removes them from the hot store and records an
    /// anchor so the remaining chain still verifies. Returns the number of records exported.
    /// </summary>
    public async Task<long> ExportAsync(DateTimeOffset before, string file, CancellationToken ct = default)
    {
        var beforeMs = before.ToUnixTimeMilliseconds();
        await _gate.WaitAsync(ct);
        try
        {
            await using var db = store.CreateContext();
            var records = await db.AuditRecords.AsNoTracking().OrderBy(r => r.Sequence).ToListAsync(ct);
            var prefix = records.TakeWhile(r => r.TimestampMs < beforeMs).ToList();
            Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(file))!);
            await using (var fs = File.Create(file))
            await using (var gz = new GZipStream(fs, CompressionLevel.Optimal))
            await using (var w = new StreamWriter(gz, new UTF8Encoding(false)))
            {
                foreach (var r in prefix)
                {
                    await w.WriteLineAsync(JsonSerializer.Serialize(r));
                }

                var first = prefix.Count > 0 ? prefix[0].Sequence : 0;
                var last = prefix.Count > 0 ? prefix[^1].Sequence : 0;
                var lastHash = prefix.Count > 0 ? prefix[^1].Hash : "";
                var ts = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds();
                var msg = Encoding.UTF8.GetBytes($"enclave-audit-archive\n{first}\n{last}\n{lastHash}\n{ts}");
                await w.WriteLineAsync(JsonSerializer.Serialize(new
                {
                    type = "trailer",
                    first,
                    last,
                    lastHash,
                    timestampMs = ts,
                    publicKey = signer.PublicKey,
                    signature = signer.Sign(msg),
                }));
            }

            if (prefix.Count == 0)
            {
                return 0;
            }

            var lastRecord = prefix[^1];
            await using var tx = await db.Database.BeginTransactionAsync(ct);
            db.AuditAnchors.Add(new AuditAnchorEntity
            {
                Sequence = lastRecord.Sequence,
                Hash = lastRecord.Hash,
                ArchiveFile = Path.GetFullPath(file),
                TimestampMs = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds(),
            });
            await db.SaveChangesAsync(ct);
            var lastSeq = lastRecord.Sequence;
            await db.AuditRecords.Where(r => r.Sequence <= lastSeq).ExecuteDeleteAsync(ct);
            await tx.CommitAsync(ct);
            return prefix.Count;
        }
        finally
        {
            _gate.Release();
        }
    }
}
