using System.IO.Compression;
using System.Text;
using System.Text.Json;
using Enclave.Gateway.Audit;
using Enclave.Gateway.Store;
using Microsoft.EntityFrameworkCore;

namespace Enclave.Gateway.Tests;

public sealed class AuditTests
{
    private static AuditLog NewLog(TestStore t, string algorithm = ChainHash.Sha256, int checkpointEvery = 10) =>
        new(t.Store, AuditSigner.LoadOrCreate(Path.Combine(t.Home.Path, "keys", "audit.key")), algorithm) { CheckpointEvery = checkpointEvery };

    private static async Task<AuditLog> SeededAsync(TestStore t, int count, string algorithm = ChainHash.Sha256)
    {
        var log = NewLog(t, algorithm);
        for (var i = 1; i <= count; i++)
        {
            await log.AppendAsync(new AuditEntry
            {
                Principal = "alice",
                Role = "analyst",
                Method = "POST",
                Endpoint = "/v1/chat/completions",
                Model = i % 2 == 0 ? "deepseek-r1" : "deepseek-v3",
                Status = 200,
                Details = $"{{\"request\":\"question {i}\"}}",
            });
        }

        return log;
    }

    private static async Task SqlAsync(TestStore t, string sql)
    {
        await using var db = t.Store.CreateContext();
        await db.Database.ExecuteSqlRawAsync(sql);
    }

    [Theory, SqliteCase, PostgresCase]
    public async Task Intact_chain_verifies_with_its_record_count(string provider)
    {
        await using var t = await TestStore.CreateAsync(provider);
        var log = await SeededAsync(t, 25);
        var r = await log.VerifyAsync();
        Assert.True(r.Intact, r.Message);
        Assert.Equal(25, r.RecordCount);
        await using var db = t.Store.CreateContext();
        var checkpoints = await db.AuditCheckpoints.OrderBy(c => c.Sequence).Select(c => c.Sequence).ToArrayAsync();
        Assert.Equal(new long[] { 10, 20 }, checkpoints);
    }

    [Theory, SqliteCase, PostgresCase]
    public async Task Edited_row_is_detected_at_that_record(string provider)
    {
        await using var t = await TestStore.CreateAsync(provider);
        var log = await SeededAsync(t, 25);
        await SqlAsync(t, "UPDATE audit_records SET \"Details\" = 'innocent' WHERE \"Sequence\" = 7");
        var r = await log.VerifyAsync();
        Assert.False(r.Intact);
        Assert.Equal(7, r.FirstBadSequence);
        Assert.Contains("altered", r.Message);
    }

    [Theory, SqliteCase, PostgresCase]
    public async Task Edited_status_with_recomputed_hash_breaks_the_next_link(string provider)
    {
        await using var t = await TestStore.CreateAsync(provider);
        var log = await SeededAsync(t, 25);
        await using (var db = t.Store.CreateContext())
        {
            var rec = await db.AuditRecords.SingleAsync(r => r.Sequence == 12);
            rec.Status = 403;
            rec.Hash = AuditLog.ComputeHash(rec);
            await db.SaveChangesAsync();
        }

        var r = await log.VerifyAsync();
        Assert.False(r.Intact);
        Assert.Equal(13, r.FirstBadSequence);
    }

    [Theory, SqliteCase, PostgresCase]
    public async Task Rewriting_the_whole_tail_is_caught_by_the_signed_checkpoint(string provider)
    {
        await using var t = await TestStore.CreateAsync(provider);
        var log = await SeededAsync(t, 25);
        await using (var db = t.Store.CreateContext())
        {
            var rows = await db.AuditRecords.Where(r => r.Sequence >= 15).OrderBy(r => r.Sequence).ToListAsync();
            var prev = (await db.AuditRecords.SingleAsync(r => r.Sequence == 14)).Hash;
            foreach (var row in rows)
            {
                row.Principal = "mallory";
                row.PrevHash = prev;
                row.Hash = AuditLog.ComputeHash(row);
                prev = row.Hash;
            }

            await db.SaveChangesAsync();
        }

        var r = await log.VerifyAsync();
        Assert.False(r.Intact);
        Assert.Equal(20, r.FirstBadSequence);
        Assert.Contains("checkpoint", r.Message);
    }

    [Theory, SqliteCase, PostgresCase]
    public async Task Deleted_row_is_detected(string provider)
    {
        await using var t = await TestStore.CreateAsync(provider);
        var log = await SeededAsync(t, 25);
        await SqlAsync(t, "DELETE FROM audit_records WHERE \"Sequence\" = 5");
        var r = await log.VerifyAsync();
        Assert.False(r.Intact);
        Assert.Equal(5, r.FirstBadSequence);
        Assert.Contains("missing", r.Message);
    }

    [Theory, SqliteCase, PostgresCase]
    public async Task Reordered_rows_are_detected(string provider)
    {
        await using var t = await TestStore.CreateAsync(provider);
        var log = await SeededAsync(t, 25);
        await SqlAsync(t, "UPDATE audit_records SET \"Sequence\" = -1 WHERE \"Sequence\" = 8");
        await SqlAsync(t, "UPDATE audit_records SET \"Sequence\" = 8 WHERE \"Sequence\" = 9");
        await SqlAsync(t, "UPDATE audit_records SET \"Sequence\" = 9 WHERE \"Sequence\" = -1");
        var r = await log.VerifyAsync();
        Assert.False(r.Intact);
        Assert.Equal(8, r.FirstBadSequence);
    }

    [Theory, SqliteCase, PostgresCase]
    public async Task Truncated_tail_is_detected_by_checkpoints(string provider)
    {
        await using var t = await TestStore.CreateAsync(provider);
        var log = await SeededAsync(t, 25);
        Assert.NotNull(await log.CheckpointAsync());
        await SqlAsync(t, "DELETE FROM audit_records WHERE \"Sequence\" > 22");
        var r = await log.VerifyAsync();
        Assert.False(r.Intact);
        Assert.Equal(23, r.FirstBadSequence);
        Assert.Contains("truncated", r.Message);
    }

    [Theory, SqliteCase, PostgresCase]
    public async Task Forged_checkpoint_is_detected(string provider)
    {
        await using var t = await TestStore.CreateAsync(provider);
        var log = await SeededAsync(t, 25);
        await SqlAsync(t, "UPDATE audit_checkpoints SET \"Hash\" = '" + new string('a', 64) + "' WHERE \"Sequence\" = 10");
        var r = await log.VerifyAsync();
        Assert.False(r.Intact);
        Assert.Contains("signature", r.Message);
    }

    [Theory, SqliteCase, PostgresCase]
    public async Task Concurrent_replicas_append_one_gapless_chain(string provider)
    {
        await using var t = await TestStore.CreateAsync(provider);
        var signer = AuditSigner.LoadOrCreate(Path.Combine(t.Home.Path, "keys", "audit.key"));
        var replicas = Enumerable.Range(0, 4).Select(_ => new AuditLog(t.Store, signer) { CheckpointEvery = 7 }).ToArray();
        await Task.WhenAll(replicas.Select(log => Task.Run(async () =>
        {
            for (var i = 0; i < 15; i++)
            {
                await log.AppendAsync(new AuditEntry { Method = "GET", Endpoint = "/v1/models", Status = 200 });
            }
        })));
        var r = await replicas[0].VerifyAsync();
        Assert.True(r.Intact, r.Message);
        Assert.Equal(60, r.RecordCount);
    }

    [Theory, SqliteCase, PostgresCase]
    public async Task Sm3_chains_verify_and_detect_edits(string provider)
    {
        await using var t = await TestStore.CreateAsync(provider);
        var log = await SeededAsync(t, 12, ChainHash.Sm3);
        Assert.True((await log.VerifyAsync()).Intact);
        await using (var db = t.Store.CreateContext())
        {
            Assert.All(await db.AuditRecords.ToListAsync(), r => Assert.Equal("sm3", r.Algorithm));
        }

        await SqlAsync(t, "UPDATE audit_records SET \"Model\" = 'other' WHERE \"Sequence\" = 3");
        Assert.Equal(3, (await log.VerifyAsync()).FirstBadSequence);
    }

    [Fact]
    public void Sm3_matches_the_standard_test_vector()
    {
        Assert.Equal("66c7f0f462eeedd9d1f2d46bdc10e4e24167c4875cf2f7a2297da02b8f4ba8e0", ChainHash.Hex(ChainHash.Sm3, Encoding.ASCII.GetBytes("abc")));
        Assert.Equal("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", ChainHash.Hex(ChainHash.Sha256, Encoding.ASCII.GetBytes("abc")));
    }

    [Theory, SqliteCase, PostgresCase]
    public async Task Export_archives_old_records_and_the_rest_still_verifies(string provider)
    {
        await using var t = await TestStore.CreateAsync(provider);
        var log = await SeededAsync(t, 15);
        long cut;
        await using (var db = t.Store.CreateContext())
        {
            cut = (await db.AuditRecords.SingleAsync(r => r.Sequence == 15)).TimestampMs + 1;
        }

        var file = Path.Combine(t.Home.Path, "archive", "a.jsonl.gz");
        var exported = await log.ExportAsync(DateTimeOffset.FromUnixTimeMilliseconds(cut), file);
        Assert.Equal(15, exported);
        await log.AppendAsync(new AuditEntry { Method = "GET", Endpoint = "/v1/models", Status = 200 });
        var r = await log.VerifyAsync();
        Assert.True(r.Intact, r.Message);
        Assert.Equal(1, r.RecordCount);

        await using var gz = new GZipStream(File.OpenRead(file), CompressionMode.Decompress);
        using var reader = new StreamReader(gz);
        var lines = (await reader.ReadToEndAsync()).Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal(16, lines.Length);
        using var trailer = JsonDocument.Parse(lines[^1]);
        var root = trailer.RootElement;
        Assert.Equal(15, root.GetProperty("last").GetInt64());
        var msg = Encoding.UTF8.GetBytes($"enclave-audit-archive\n{root.GetProperty("first").GetInt64()}\n{root.GetProperty("last").GetInt64()}\n{root.GetProperty("lastHash").GetString()}\n{root.GetProperty("timestampMs").GetInt64()}");
        Assert.True(AuditSigner.Verify(root.GetProperty("publicKey").GetString()!, msg, root.GetProperty("signature").GetString()!));
        msg[^1] ^= 1;
        Assert.False(AuditSigner.Verify(root.GetProperty("publicKey").GetString()!, msg, root.GetProperty("signature").GetString()!));
    }

    [Theory, SqliteCase, PostgresCase]
    public async Task Search_filters_by_principal_model_status_and_text(string provider)
    {
        await using var t = await TestStore.CreateAsync(provider);
        var log = await SeededAsync(t, 10);
        await log.AppendAsync(new AuditEntry { Principal = "bob", Method = "GET", Endpoint = "/admin/keys", Status = 403, Details = "{\"decisions\":[\"denied\"]}" });
        Assert.Single(await log.SearchAsync(new AuditQuery(Principal: "bob")));
        Assert.Equal(5, (await log.SearchAsync(new AuditQuery(Model: "deepseek-r1"))).Count);
        Assert.Single(await log.SearchAsync(new AuditQuery(Status: 403)));
        Assert.Single(await log.SearchAsync(new AuditQuery(Text: "question 7")));
        Assert.Empty(await log.SearchAsync(new AuditQuery(Since: DateTimeOffset.UtcNow.AddHours(1))));
    }
}
