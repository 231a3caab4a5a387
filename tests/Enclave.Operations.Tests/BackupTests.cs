using Enclave.Gateway.Audit;
using Enclave.Gateway.Hosting;
using Enclave.Gateway.Security;
using Enclave.Gateway.Store;
using Enclave.Operations.Backup;
using Enclave.Operations.Tests.Support;
using Npgsql;

namespace Enclave.Operations.Tests;

/// <summary>Backup onto one data directory, restore onto a fresh one: same users, same keys, a verifying audit chain.</summary>
public sealed class BackupTests
{
    private sealed record Site(GatewayStore Store, string Secret, int AuditRecords);

    /// <summary>A site as the gateway leaves it: users, keys, a signed audit chain with an archived prefix, a config file.</summary>
    private static async Task<Site> SeedAsync(string home, string? database)
    {
        var store = GatewayStore.Resolve(database, home);
        await store.MigrateAsync();
        var keys = new KeyService(store);
        var users = new UserService(store, keys);
        await users.AddAsync("alice", "Alice Analyst");
        await users.AddAsync("bob");
        var created = await keys.CreateAsync(new KeyCreateRequest("admin", "ops", "alice", null, null, null, null, null, null));
        await keys.CreateAsync(new KeyCreateRequest("analyst", "bob-key", "bob", null, "10.0.0.0/8", "deepseek-r1", 60, null, null));
        var audit = new AuditLog(store, AuditSigner.LoadOrCreate(GatewayServiceCollectionExtensions.DefaultSigningKeyPath(home))) { CheckpointEvery = 5 };
        for (var i = 0; i < 12; i++)
        {
            await audit.AppendAsync(new AuditEntry { Principal = "alice", Method = "POST", Endpoint = "/v1/chat/completions", Status = 200, Details = $"{{\"n\":{i}}}" });
        }

        // Archive the first records, then add more, so the chain starts from an anchor.
        Directory.CreateDirectory(Path.Combine(home, "audit"));
        var archived = await audit.ExportAsync(DateTimeOffset.UtcNow.AddMinutes(1), Path.Combine(home, "audit", "2026-11.jsonl.gz"));
        for (var i = 0; i < 3; i++)
        {
            await audit.AppendAsync(new AuditEntry { Principal = "bob", Method = "POST", Endpoint = "/v1/completions", Status = 429 });
        }

        await audit.CheckpointAsync();
        Assert.Equal(12, archived);
        await File.WriteAllTextAsync(Path.Combine(home, "enclave.yaml"), "serve:\n  port: 8000\n");
        return new Site(store, created.Secret, 3);
    }

    private static async Task AssertSameSiteAsync(Site original, string home, GatewayStore restored)
    {
        var sourceKeys = await new KeyService(original.Store).ListAsync();
        var restoredKeys = await new KeyService(restored).ListAsync();
        Assert.Equal(sourceKeys.Select(k => (k.Id, k.Prefix, Convert.ToHexString(k.Hash), k.Role, k.UserId, k.AllowedCidrs, k.AllowedModels)),
            restoredKeys.Select(k => (k.Id, k.Prefix, Convert.ToHexString(k.Hash), k.Role, k.UserId, k.AllowedCidrs, k.AllowedModels)));
        var sourceUsers = await new UserService(original.Store, new KeyService(original.Store)).ListAsync();
        var restoredUsers = await new UserService(restored, new KeyService(restored)).ListAsync();
        Assert.Equal(sourceUsers.Select(u => (u.Id, u.Name, u.DisplayName)), restoredUsers.Select(u => (u.Id, u.Name, u.DisplayName)));

        // The original secret still authenticates, and the chain verifies with the restored signing key.
        var principal = await new KeyService(restored).AuthenticateAsync(original.Secret);
        Assert.NotNull(principal);
        Assert.Equal("admin", principal.Role);
        var verify = await new AuditLog(restored, AuditSigner.LoadOrCreate(GatewayServiceCollectionExtensions.DefaultSigningKeyPath(home))).VerifyAsync();
        Assert.True(verify.Intact, verify.Message);
        Assert.Equal(original.AuditRecords, verify.RecordCount);
        Assert.True(File.Exists(Path.Combine(home, "audit", "2026-11.jsonl.gz")));
        Assert.Equal("serve:\n  port: 8000\n", await File.ReadAllTextAsync(Path.Combine(home, "enclave.yaml")));
        if (!OperatingSystem.IsWindows())
        {
            Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(GatewayServiceCollectionExtensions.DefaultSigningKeyPath(home)));
        }
    }

    [Fact]
    public async Task SqliteRestoreOntoAFreshHomeGivesTheSameUsersKeysAndAVerifyingAuditChain()
    {
        using var dirs = new TempDir();
        var home = dirs.Sub("site");
        var site = await SeedAsync(home, null);
        var archive = Path.Combine(dirs.Path, "backup.tar");
        var secret = new BackupSecret("correct horse battery staple", null);

        var summary = await BackupService.CreateAsync(home, null, archive, secret);
        Assert.Contains(summary.Manifest.Files, f => f.Path == "db/gateway.db");
        Assert.Contains(summary.Manifest.Files, f => f.Path == "audit/2026-11.jsonl.gz");
        // Key material never appears in the clear.
        var signingKey = (await File.ReadAllTextAsync(GatewayServiceCollectionExtensions.DefaultSigningKeyPath(home))).Trim();
        Assert.DoesNotContain(signingKey, await File.ReadAllTextAsync(archive, System.Text.Encoding.Latin1));

        var fresh = Path.Combine(dirs.Path, "fresh");
        await BackupService.RestoreAsync(archive, fresh, null, secret, force: false);
        await AssertSameSiteAsync(site, fresh, GatewayStore.Resolve(null, fresh));

        // A second restore onto the now-populated home is refused unless forced.
        var again = await Assert.ThrowsAsync<ArgumentException>(() => BackupService.RestoreAsync(archive, fresh, null, secret, force: false));
        Assert.Contains("already has a gateway store", again.Message);
    }

    [Fact]
    public async Task AWrongPassphraseOrAnAlteredArchiveRestoresNothing()
    {
        using var dirs = new TempDir();
        var home = dirs.Sub("site");
        await SeedAsync(home, null);
        var archive = Path.Combine(dirs.Path, "backup.tar");
        await BackupService.CreateAsync(home, null, archive, new BackupSecret("right", null));

        var target = Path.Combine(dirs.Path, "t1");
        var wrong = await Assert.ThrowsAsync<ArgumentException>(() => BackupService.RestoreAsync(archive, target, null, new BackupSecret("wrong", null), false));
        Assert.Contains("wrong passphrase", wrong.Message);
        Assert.False(File.Exists(Path.Combine(target, "gateway.db")));
        Assert.False(Directory.Exists(Path.Combine(target, "keys")));

        var bytes = await File.ReadAllBytesAsync(archive);
        var at = bytes.AsSpan().IndexOf("serve:\n"u8);
        bytes[at] ^= 1;
        var altered = Path.Combine(dirs.Path, "altered.tar");
        await File.WriteAllBytesAsync(altered, bytes);
        var target2 = Path.Combine(dirs.Path, "t2");
        var e = await Assert.ThrowsAsync<InvalidDataException>(() => BackupService.RestoreAsync(altered, target2, null, new BackupSecret("right", null), false));
        Assert.Contains("'config/enclave.yaml' does not match its manifest hash", e.Message);
        Assert.False(File.Exists(Path.Combine(target2, "gateway.db")));
    }

    [Fact]
    public async Task KeyMaterialCanBeSealedWithAKeyFileInsteadOfAPassphrase()
    {
        using var dirs = new TempDir();
        var home = dirs.Sub("site");
        var site = await SeedAsync(home, null);
        var keyFile = Path.Combine(dirs.Path, "backup.key");
        Enclave.Gateway.Crypto.FileKeyProvider.AddKey(keyFile);
        var archive = Path.Combine(dirs.Path, "backup.tar");
        await BackupService.CreateAsync(home, null, archive, new BackupSecret(null, keyFile));
        var needKey = await Assert.ThrowsAsync<ArgumentException>(() => BackupService.RestoreAsync(archive, Path.Combine(dirs.Path, "x"), null, new BackupSecret("pass", null), false));
        Assert.Contains("give --key-file", needKey.Message);
        var fresh = Path.Combine(dirs.Path, "fresh");
        await BackupService.RestoreAsync(archive, fresh, null, new BackupSecret(null, keyFile), false);
        await AssertSameSiteAsync(site, fresh, GatewayStore.Resolve(null, fresh));
    }

    [PostgresFact]
    public async Task PostgresBackupUsesPgDumpAndRestoresOntoAnEmptyDatabase()
    {
        var admin = Environment.GetEnvironmentVariable(PostgresFactAttribute.Variable)!;
        var source = "enclave_bk_" + Guid.NewGuid().ToString("N")[..12];
        var target = "enclave_rs_" + Guid.NewGuid().ToString("N")[..12];
        await using (var conn = new NpgsqlConnection(admin))
        {
            await conn.OpenAsync();
            foreach (var db in new[] { source, target })
            {
                await using var cmd = new NpgsqlCommand($"CREATE DATABASE \"{db}\"", conn);
                await cmd.ExecuteNonQueryAsync();
            }
        }

        try
        {
            using var dirs = new TempDir();
            var home = dirs.Sub("site");
            var sourceCs = new NpgsqlConnectionStringBuilder(admin) { Database = source }.ConnectionString;
            var targetCs = new NpgsqlConnectionStringBuilder(admin) { Database = target }.ConnectionString;
            var site = await SeedAsync(home, sourceCs);
            var archive = Path.Combine(dirs.Path, "backup.tar");
            var summary = await BackupService.CreateAsync(home, sourceCs, archive, new BackupSecret("pw", null));
            Assert.Contains(summary.Manifest.Files, f => f.Path == "db/gateway.pgdump");
            Assert.Equal("postgres", summary.Manifest.Store);

            var fresh = Path.Combine(dirs.Path, "fresh");
            await BackupService.RestoreAsync(archive, fresh, targetCs, new BackupSecret("pw", null), false);
            await AssertSameSiteAsync(site, fresh, GatewayStore.Resolve(targetCs, fresh));
        }
        finally
        {
            NpgsqlConnection.ClearAllPools();
            await using var conn = new NpgsqlConnection(admin);
            await conn.OpenAsync();
            foreach (var db in new[] { source, target })
            {
                await using var cmd = new NpgsqlCommand($"DROP DATABASE IF EXISTS \"{db}\" WITH (FORCE)", conn);
                await cmd.ExecuteNonQueryAsync();
            }
        }
    }
}
