using System.Net;
using System.Security.Cryptography;
using System.Text.Json;
using Enclave.Gateway.Audit;
using Enclave.Gateway.Crypto;
using Enclave.Gateway.Hosting;
using Enclave.Gateway.Store;
using Microsoft.EntityFrameworkCore;
using Microsoft.Extensions.DependencyInjection;

namespace Enclave.Gateway.Tests;

/// <summary>Envelope encryption of stored prompts and responses, and master-key rotation.</summary>
[Collection("env")]
public sealed class EncryptionTests
{
    // "Older than now" excludes a record stamped in the current millisecond; a negative retention takes them all.
    private static readonly TimeSpan EverythingSoFar = TimeSpan.FromSeconds(-1);

    private static async Task<List<AuditRecordEntity>> RawAsync(GatewayStore store)
    {
        await using var db = store.CreateContext();
        return await db.AuditRecords.AsNoTracking().OrderBy(r => r.Sequence).ToListAsync();
    }

    [Theory, SqliteCase, PostgresCase]
    public async Task Prompts_and_responses_are_encrypted_at_rest_yet_searchable_by_auditors(string provider)
    {
        await using var t = await TestStore.CreateAsync(provider);
        await using var host = await GatewayHost.StartAsync(t, o => o.EncryptAudit = true);
        using (var chat = await host.ChatAsync(await host.KeyAsync("analyst"), "the launch code is tangerine-42"))
        {
            Assert.Equal(HttpStatusCode.OK, chat.StatusCode);
        }

        var raw = (await RawAsync(t.Store)).Single();
        Assert.StartsWith("enc1:aes-256-gcm:", raw.Details);
        Assert.DoesNotContain("tangerine", raw.Details);
        Assert.True(File.Exists(MasterKeys.DefaultFile(t.Home.Path)));

        using var search = await host.SendAsync(HttpMethod.Get, "/admin/audit?text=tangerine-42", await host.KeyAsync("auditor"));
        using var doc = JsonDocument.Parse(await search.Content.ReadAsStringAsync());
        var row = doc.RootElement.GetProperty("data").EnumerateArray().Single();
        Assert.Contains("the launch code is tangerine-42", row.GetProperty("details").GetString());
        Assert.True((await host.Services.GetRequiredService<AuditLog>().VerifyChainAsync()).Intact);
    }

    [Theory]
    [InlineData(Aead.Aes256Gcm)]
    [InlineData(Aead.Sm4Gcm)]
    public async Task Rotation_rewraps_every_data_key_and_nothing_written_before_is_lost(string algorithm)
    {
        await using var t = await TestStore.CreateAsync(Providers.Sqlite);
        var home = t.Home.Path;
        var keyFile = MasterKeys.DefaultFile(home);
        var log = new AuditLog(t.Store, AuditSigner.LoadOrCreate(GatewayServiceCollectionExtensions.DefaultSigningKeyPath(home)))
        {
            CheckpointEvery = 5,
            Protector = new SecretProtector(FileKeyProvider.OpenOrCreate(keyFile), algorithm),
        };
        var oldKey = new FileKeyProvider(keyFile).CurrentKeyId;
        var written = new List<string>();
        for (var i = 0; i < 12; i++)
        {
            var details = $"{{\"request\":\"question {i} 机密\"}}";
            written.Add(details);
            await log.AppendAsync(new AuditEntry { Method = "POST", Endpoint = "/v1/chat/completions", Status = 200, Details = details });
        }

        // Some of them already archived: archives verify without any master key.
        var archive = (await log.ArchiveOlderThanAsync(EverythingSoFar, Path.Combine(home, "archive")))!.Value.File;
        for (var i = 12; i < 20; i++)
        {
            var details = $"{{\"request\":\"question {i}\"}}";
            written.Add(details);
            await log.AppendAsync(new AuditEntry { Method = "POST", Endpoint = "/v1/chat/completions", Status = 200, Details = details });
        }

        var rotate = await CliTests.EnclaveAsync(home, "encryption", "rotate");
        Assert.Equal(0, rotate.Exit);
        Assert.Contains("re-wrapped 8 data keys", rotate.Out);
        var newKey = new FileKeyProvider(keyFile).CurrentKeyId;
        Assert.NotEqual(oldKey, newKey);

        var after = await RawAsync(t.Store);
        Assert.Equal(8, after.Count);
        Assert.All(after, r => Assert.Equal(newKey, SecretProtector.KeyIdOf(r.Details!)));
        Assert.True((await log.VerifyChainAsync()).Intact);
        Assert.True((await AuditLog.VerifyArchiveAsync(archive, log.PublicKey)).Intact);

        // Drop the old key from the file: the hot records still decrypt, so rotation re-wrapped them all.
        var lines = await File.ReadAllLinesAsync(keyFile);
        await File.WriteAllLinesAsync(keyFile, lines.Where(l => !l.StartsWith(oldKey + ":", StringComparison.Ordinal)));
        var reader = new AuditLog(t.Store, AuditSigner.LoadOrCreate(GatewayServiceCollectionExtensions.DefaultSigningKeyPath(home)))
        {
            Protector = new SecretProtector(new FileKeyProvider(keyFile), algorithm),
        };
        Assert.Equal(written[12..], after.Select(reader.ReadDetails));
        var search = await CliTests.EnclaveAsync(home, "audit", "search", "--text", "question 15", "--json");
        Assert.Equal(0, search.Exit);
        Assert.Contains("question 15", search.Out);

        // Corrupting a wrapped data key is caught when the record is read.
        var broken = after[0].Copy();
        var parts = broken.Details!.Split(':');
        parts[3] = Convert.ToBase64String(RandomNumberGenerator.GetBytes(Convert.FromBase64String(parts[3]).Length));
        broken.Details = string.Join(':', parts);
        Assert.ThrowsAny<CryptographicException>(() => reader.ReadDetails(broken));
    }

    [Fact]
    public async Task Environment_key_provider_rotates_by_listing_the_new_key_last_then_rewrapping()
    {
        await using var t = await TestStore.CreateAsync(Providers.Sqlite);
        var home = t.Home.Path;
        var k1 = "k1:" + Convert.ToBase64String(RandomNumberGenerator.GetBytes(32));
        var k2 = "k2:" + Convert.ToBase64String(RandomNumberGenerator.GetBytes(32));
        var previous = Environment.GetEnvironmentVariable(EnvironmentKeyProvider.DefaultVariable);
        try
        {
            Environment.SetEnvironmentVariable(EnvironmentKeyProvider.DefaultVariable, k1);
            var log = new AuditLog(t.Store, AuditSigner.LoadOrCreate(GatewayServiceCollectionExtensions.DefaultSigningKeyPath(home)))
            {
                Protector = new SecretProtector(new EnvironmentKeyProvider()),
            };
            await log.AppendAsync(new AuditEntry { Method = "POST", Endpoint = "/v1/embeddings", Status = 200, Details = "{\"input\":\"quarterly numbers\"}" });
            Assert.Equal("k1", SecretProtector.KeyIdOf((await RawAsync(t.Store)).Single().Details!));

            Environment.SetEnvironmentVariable(EnvironmentKeyProvider.DefaultVariable, k1 + ";" + k2);
            var rewrap = await CliTests.EnclaveAsync(home, "encryption", "rewrap", "--key-provider", "env");
            Assert.Equal(0, rewrap.Exit);
            Assert.Contains("Re-wrapped 1 data keys under master key k2", rewrap.Out);

            Environment.SetEnvironmentVariable(EnvironmentKeyProvider.DefaultVariable, k2);
            var reader = new AuditLog(t.Store, AuditSigner.LoadOrCreate(GatewayServiceCollectionExtensions.DefaultSigningKeyPath(home)))
            {
                Protector = new SecretProtector(new EnvironmentKeyProvider()),
            };
            Assert.Equal("{\"input\":\"quarterly numbers\"}", reader.ReadDetails((await RawAsync(t.Store)).Single()));

            Environment.SetEnvironmentVariable(EnvironmentKeyProvider.DefaultVariable, "k3:not-base64!");
            Assert.Contains("not valid base64", Assert.Throws<FormatException>(() => new EnvironmentKeyProvider()).Message);
        }
        finally
        {
            Environment.SetEnvironmentVariable(EnvironmentKeyProvider.DefaultVariable, previous);
        }
    }
}
