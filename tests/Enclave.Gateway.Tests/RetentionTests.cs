using Enclave.Gateway.Audit;
using Enclave.Gateway.Hosting;
using Microsoft.EntityFrameworkCore;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;

namespace Enclave.Gateway.Tests;

public sealed class RetentionTests
{
    // "Older than now" excludes a record stamped in the current millisecond; a negative retention takes them all.
    private static readonly TimeSpan EverythingSoFar = TimeSpan.FromSeconds(-1);

    private static AuditLog NewLog(TestStore t) =>
        new(t.Store, AuditSigner.LoadOrCreate(Path.Combine(t.Home.Path, "keys", "audit.key"))) { CheckpointEvery = 4 };

    private static async Task AppendAsync(AuditLog log, int count, string tag)
    {
        for (var i = 0; i < count; i++)
        {
            await log.AppendAsync(new AuditEntry { Principal = tag, Method = "POST", Endpoint = "/v1/chat/completions", Status = 200, Details = $"{{\"n\":\"{tag}-{i}\"}}" });
        }
    }

    [Theory, SqliteCase, PostgresCase]
    public async Task Chain_verifies_across_several_archives_and_the_hot_store(string provider)
    {
        await using var t = await TestStore.CreateAsync(provider);
        var log = NewLog(t);
        var dir = Path.Combine(t.Home.Path, "archive");
        await AppendAsync(log, 6, "a");
        var first = await log.ArchiveOlderThanAsync(EverythingSoFar, dir);
        await AppendAsync(log, 5, "b");
        var second = await log.ArchiveOlderThanAsync(EverythingSoFar, dir);
        await AppendAsync(log, 3, "c");
        Assert.Equal(6, first!.Value.Count);
        Assert.Equal(5, second!.Value.Count);
        Assert.Null(await log.ArchiveOlderThanAsync(TimeSpan.FromDays(90), dir));

        var whole = await log.VerifyChainAsync();
        Assert.True(whole.Intact, whole.Message);
        Assert.Equal(14, whole.RecordCount);
        Assert.Equal(3, (await log.VerifyAsync()).RecordCount);
        var alone = await AuditLog.VerifyArchiveAsync(second.Value.File, log.PublicKey);
        Assert.True(alone.Intact, alone.Message);
        Assert.Equal((7L, 11L), (alone.FirstSequence, alone.LastSequence));
        await using var db = t.Store.CreateContext();
        Assert.Equal(3, await db.AuditRecords.CountAsync());
    }

    [Theory, SqliteCase, PostgresCase]
    public async Task Tampered_truncated_replaced_or_missing_archives_are_detected(string provider)
    {
        await using var t = await TestStore.CreateAsync(provider);
        var log = NewLog(t);
        var dir = Path.Combine(t.Home.Path, "archive");
        await AppendAsync(log, 5, "a");
        var file = (await log.ArchiveOlderThanAsync(EverythingSoFar, dir))!.Value.File;
        await AppendAsync(log, 2, "b");
        var pristine = await File.ReadAllBytesAsync(file);

        // An edited record.
        ArchiveEditor.Rewrite(file, l => l[2] = l[2].Replace("a-2", "a-X", StringComparison.Ordinal));
        var edited = await AuditLog.VerifyArchiveAsync(file, log.PublicKey);
        Assert.False(edited.Intact);
        Assert.Equal(3, edited.FirstBadSequence);
        var chain = await log.VerifyChainAsync();
        Assert.False(chain.Intact);
        Assert.Equal(3, chain.FirstBadSequence);

        // The last record cut off (the signed trailer still names it).
        await File.WriteAllBytesAsync(file, pristine);
        ArchiveEditor.Rewrite(file, l => l.RemoveAt(4));
        Assert.Contains("truncated", (await AuditLog.VerifyArchiveAsync(file, log.PublicKey)).Message);

        // A re-signed archive from another key.
        await File.WriteAllBytesAsync(file, pristine);
        var other = new AuditLog(t.Store, AuditSigner.LoadOrCreate(Path.Combine(t.Home.Path, "keys", "other.key")));
        Assert.True((await AuditLog.VerifyArchiveAsync(file, log.PublicKey)).Intact);
        Assert.Contains("key other than", (await AuditLog.VerifyArchiveAsync(file, other.PublicKey)).Message);

        // A record dropped from the middle.
        ArchiveEditor.Rewrite(file, l => l.RemoveAt(1));
        Assert.Equal(2, (await AuditLog.VerifyArchiveAsync(file, log.PublicKey)).FirstBadSequence);

        // The file gone.
        File.Delete(file);
        var missing = await log.VerifyChainAsync();
        Assert.False(missing.Intact);
        Assert.Contains("missing", missing.Message);
        Assert.Equal(1, missing.FirstBadSequence);
    }

    [Theory, SqliteCase, PostgresCase]
    public async Task Retention_service_keeps_recent_records_and_prunes_old_archives(string provider)
    {
        await using var t = await TestStore.CreateAsync(provider);
        var log = NewLog(t);
        var dir = Path.Combine(t.Home.Path, "archive");
        await AppendAsync(log, 4, "old");
        var archived = (await log.ArchiveOlderThanAsync(EverythingSoFar, dir))!.Value.File;
        await AppendAsync(log, 3, "new");

        var options = Options.Create(new GatewayOptions { Home = t.Home.Path, AuditArchiveDirectory = dir, AuditRetentionDays = 90, AuditArchiveKeepDays = 1826 });
        var service = new AuditRetentionService(options, log, new Limits.TokenUsageStore(t.Store), TimeProvider.System, NullLogger<AuditRetentionService>.Instance);
        await service.RunOnceAsync(CancellationToken.None);
        // Records younger than 90 days stay hot; the young archive stays too.
        Assert.Equal(3, (await log.VerifyAsync()).RecordCount);
        Assert.True(File.Exists(archived));

        // Five years on (as seen by the pruner), the archive is deleted and verification starts after it.
        var pruned = await log.PruneArchivesAsync(DateTimeOffset.UtcNow.AddDays(1));
        Assert.Equal([archived], pruned);
        Assert.False(File.Exists(archived));
        var r = await log.VerifyChainAsync();
        Assert.True(r.Intact, r.Message);
        Assert.Equal(3, r.RecordCount);
    }
}
