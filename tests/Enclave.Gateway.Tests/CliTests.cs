using System.CommandLine;
using Enclave.Gateway.Cli;
using Enclave.Gateway.Security;
using Enclave.Gateway.Store;
using Microsoft.EntityFrameworkCore;

namespace Enclave.Gateway.Tests;

[CollectionDefinition("env", DisableParallelization = true)]
public sealed class EnvCollection;

/// <summary>Runs the gateway verbs in-process under a root command, as the main CLI will.</summary>
[Collection("env")]
public sealed class CliTests
{
    internal sealed record Run(int Exit, string Out, string Err)
    {
        public string LastLine => Out.TrimEnd('\n').Split('\n')[^1];
    }

    internal static async Task<Run> EnclaveAsync(string home, params string[] args)
    {
        var root = new RootCommand("enclave");
        foreach (var c in GatewayCommands.Create())
        {
            root.Add(c);
        }

        var previous = Environment.GetEnvironmentVariable("ENCLAVE_HOME");
        Environment.SetEnvironmentVariable("ENCLAVE_HOME", home);
        try
        {
            using var o = new StringWriter();
            using var e = new StringWriter();
            var exit = await root.Parse(args).InvokeAsync(new InvocationConfiguration { Output = o, Error = e });
            return new Run(exit, o.ToString().Replace("\r\n", "\n", StringComparison.Ordinal), e.ToString());
        }
        finally
        {
            Environment.SetEnvironmentVariable("ENCLAVE_HOME", previous);
        }
    }

    private static string[] Db(TestStore t, params string[] args) =>
        t.ProviderName == Providers.Postgres ? [.. args, "--database", t.Database] : args;

    [Fact]
    public void Exposes_the_documented_verbs()
    {
        var names = GatewayCommands.Create().ToDictionary(c => c.Name, c => c.Subcommands.Select(s => s.Name).ToArray());
        Assert.Equal(["keys", "users", "roles", "policies", "audit", "encryption", "db"], names.Keys.ToArray());
        Assert.Equal(["create", "list", "revoke"], names["keys"]);
        Assert.Equal(["add", "list", "disable", "enable"], names["users"]);
        Assert.Equal(["list", "create"], names["roles"]);
        Assert.Equal(["verify", "search", "export"], names["audit"]);
        Assert.Equal(["migrate", "status"], names["db"]);
        Assert.Equal(["list", "set", "rm"], names["policies"]);
        Assert.Equal(["rotate", "rewrap"], names["encryption"]);
    }

    [Theory, SqliteCase, PostgresCase]
    public async Task Keys_create_prints_the_secret_last_and_it_authenticates(string provider)
    {
        await using var t = await TestStore.CreateAsync(provider);
        var home = t.Home.Path;
        Assert.Equal(0, (await EnclaveAsync(home, Db(t, "users", "add", "dave", "--display-name", "Dave"))).Exit);
        var run = await EnclaveAsync(home, Db(t, "keys", "create", "--role", "analyst", "--name", "ci", "--user", "dave", "--expires", "2099-01-01"));
        Assert.Equal(0, run.Exit);
        var secret = run.LastLine;
        Assert.StartsWith("sk-enclave-", secret);
        var store = provider == Providers.Postgres ? t.Store : GatewayStore.Resolve(null, home);
        var keys = new KeyService(store);
        var p = await keys.AuthenticateAsync(secret);
        Assert.Equal("dave", p!.UserName);
        Assert.Equal(new DateTimeOffset(2099, 1, 1, 0, 0, 0, TimeSpan.Zero).ToUnixTimeMilliseconds(), p.ExpiresAtMs);

        var list = await EnclaveAsync(home, Db(t, "keys", "list"));
        Assert.Contains(secret[..23], list.Out);
        Assert.DoesNotContain(secret, list.Out);
        Assert.Contains("active", list.Out);

        var revoke = await EnclaveAsync(home, Db(t, "keys", "revoke", secret[..23]));
        Assert.Equal(0, revoke.Exit);
        Assert.Null(await new KeyService(store).AuthenticateAsync(secret));
        Assert.Contains("revoked", (await EnclaveAsync(home, Db(t, "keys", "list"))).Out);
        Assert.Equal(1, (await EnclaveAsync(home, Db(t, "keys", "revoke", "nope"))).Exit);
    }

    [Fact]
    public async Task Keys_create_refuses_unknown_roles_and_missing_role()
    {
        using var home = new TempDir();
        var bad = await EnclaveAsync(home.Path, "keys", "create", "--role", "superuser");
        Assert.Equal(1, bad.Exit);
        Assert.Contains("superuser", bad.Err);
        Assert.NotEqual(0, (await EnclaveAsync(home.Path, "keys", "create")).Exit);
    }

    [Fact]
    public async Task Users_and_roles_commands_round_trip()
    {
        using var home = new TempDir();
        Assert.Equal(0, (await EnclaveAsync(home.Path, "users", "add", "erin")).Exit);
        Assert.Equal(0, (await EnclaveAsync(home.Path, "users", "disable", "erin")).Exit);
        Assert.Contains("disabled", (await EnclaveAsync(home.Path, "users", "list")).Out);
        Assert.Equal(1, (await EnclaveAsync(home.Path, "users", "disable", "nobody")).Exit);

        Assert.Equal(0, (await EnclaveAsync(home.Path, "roles", "create", "ops", "--permissions", "models.read,models.manage")).Exit);
        var roles = await EnclaveAsync(home.Path, "roles", "list");
        Assert.Contains("ops", roles.Out);
        Assert.Contains("models.read,models.manage", roles.Out);
        Assert.Contains("auditor", roles.Out);
        Assert.Equal(1, (await EnclaveAsync(home.Path, "roles", "create", "bad", "--permissions", "teleport")).Exit);
    }

    [Theory, SqliteCase, PostgresCase]
    public async Task Audit_verify_exits_zero_with_the_count_then_names_the_first_bad_record(string provider)
    {
        await using var t = await TestStore.CreateAsync(provider);
        var home = t.Home.Path;
        var store = provider == Providers.Postgres ? t.Store : GatewayStore.Resolve(null, home);
        var log = new Audit.AuditLog(store, Audit.AuditSigner.LoadOrCreate(Hosting.GatewayServiceCollectionExtensions.DefaultSigningKeyPath(home))) { CheckpointEvery = 5 };
        for (var i = 0; i < 12; i++)
        {
            await log.AppendAsync(new Audit.AuditEntry { Principal = i % 2 == 0 ? "ann" : "ben", Method = "POST", Endpoint = "/v1/chat/completions", Model = "deepseek-v3", Status = 200, Details = "{\"n\":" + i + "}" });
        }

        var ok = await EnclaveAsync(home, Db(t, "audit", "verify"));
        Assert.Equal(0, ok.Exit);
        Assert.Contains("12", ok.Out);

        var search = await EnclaveAsync(home, Db(t, "audit", "search", "--principal", "ann", "--json"));
        Assert.Equal(6, search.Out.Split('\n', StringSplitOptions.RemoveEmptyEntries).Length);

        await using (var db = store.CreateContext())
        {
            await db.Database.ExecuteSqlRawAsync("UPDATE audit_records SET \"Principal\" = 'zed' WHERE \"Sequence\" = 4");
        }

        var broken = await EnclaveAsync(home, Db(t, "audit", "verify"));
        Assert.NotEqual(0, broken.Exit);
        Assert.Contains("record 4", broken.Err);
    }

    [Fact]
    public async Task Audit_export_moves_records_to_an_archive_and_verify_still_passes()
    {
        using var home = new TempDir();
        var store = GatewayStore.Resolve(null, home.Path);
        await store.MigrateAsync();
        var log = new Audit.AuditLog(store, Audit.AuditSigner.LoadOrCreate(Hosting.GatewayServiceCollectionExtensions.DefaultSigningKeyPath(home.Path)));
        for (var i = 0; i < 4; i++)
        {
            await log.AppendAsync(new Audit.AuditEntry { Method = "GET", Endpoint = "/v1/models", Status = 200 });
        }

        var file = Path.Combine(home.Path, "old.jsonl.gz");
        var export = await EnclaveAsync(home.Path, "audit", "export", "--before", DateTimeOffset.UtcNow.AddMinutes(1).ToString("o"), "-o", file);
        Assert.Equal(0, export.Exit);
        Assert.Contains("Exported 4", export.Out);
        Assert.True(File.Exists(file));
        await log.AppendAsync(new Audit.AuditEntry { Method = "GET", Endpoint = "/v1/models", Status = 200 });

        // The whole chain still verifies across the archive and the store; the archive verifies alone.
        var verify = await EnclaveAsync(home.Path, "audit", "verify");
        Assert.Equal(0, verify.Exit);
        Assert.Contains("OK 5 records", verify.Out);
        var alone = await EnclaveAsync(home.Path, "audit", "verify", "--archive", file);
        Assert.Equal(0, alone.Exit);
        Assert.Contains("OK 4 records (1-4)", alone.Out);

        using (var elsewhere = new TempDir())
        {
            // Away from the deployment's key file, the public key is given instead.
            Assert.Equal(1, (await EnclaveAsync(elsewhere.Path, "audit", "verify", "--archive", file)).Exit);
            Assert.Equal(0, (await EnclaveAsync(elsewhere.Path, "audit", "verify", "--archive", file, "--public-key", log.PublicKey)).Exit);
        }

        ArchiveEditor.Rewrite(file, lines => lines[1] = lines[1].Replace("/v1/models", "/v1/elsewhere", StringComparison.Ordinal));
        var tampered = await EnclaveAsync(home.Path, "audit", "verify", "--archive", file);
        Assert.Equal(2, tampered.Exit);
        Assert.Contains("record 2", tampered.Err);
        var chain = await EnclaveAsync(home.Path, "audit", "verify");
        Assert.Equal(2, chain.Exit);
        Assert.Contains("record 2", chain.Err);
    }

    [Theory, SqliteCase, PostgresCase]
    public async Task Policies_set_list_and_rm_round_trip_and_bad_input_is_refused(string provider)
    {
        await using var t = await TestStore.CreateAsync(provider);
        var home = t.Home.Path;
        Assert.Equal(0, (await EnclaveAsync(home, Db(t, "users", "add", "nina"))).Exit);
        var set = await EnclaveAsync(home, Db(t, "policies", "set", "user", "nina", "--rpm", "30", "--daily-tokens", "50000",
            "--time-windows", "mon-fri 08:00-18:00", "--time-zone", "Asia/Shanghai", "--blocked-phrase", "内部资料", "--blocked-phrase", "internal only"));
        Assert.Equal(0, set.Exit);
        Assert.Contains("rpm=30", set.Out);

        // Only the options given change; --unset clears one.
        var again = await EnclaveAsync(home, Db(t, "policies", "set", "user", "nina", "--tpm", "9000", "--unset", "rpm"));
        Assert.Equal(0, again.Exit);
        var list = await EnclaveAsync(home, Db(t, "policies", "list", "--json"));
        using var doc = System.Text.Json.JsonDocument.Parse(list.Out.Trim());
        var p = doc.RootElement;
        Assert.Equal("user", p.GetProperty("scope").GetString());
        Assert.Equal(System.Text.Json.JsonValueKind.Null, p.GetProperty("requests_per_minute").ValueKind);
        Assert.Equal(9000, p.GetProperty("tokens_per_minute").GetInt32());
        Assert.Equal(50000, p.GetProperty("daily_token_budget").GetInt64());
        Assert.Equal("mon-fri 08:00-18:00", p.GetProperty("time_windows").GetString());
        Assert.Equal(new[] { "内部资料", "internal only" }, p.GetProperty("blocked_phrases").EnumerateArray().Select(e => e.GetString()!).ToArray());

        var bad = await EnclaveAsync(home, Db(t, "policies", "set", "user", "nina", "--time-windows", "weekdays"));
        Assert.Equal(1, bad.Exit);
        Assert.Contains("Time window 'weekdays'", bad.Err);
        Assert.Equal(1, (await EnclaveAsync(home, Db(t, "policies", "set", "user", "nobody", "--rpm", "1"))).Exit);
        Assert.Equal(1, (await EnclaveAsync(home, Db(t, "policies", "set", "user", "nina", "--unset", "colour"))).Exit);
        Assert.Contains("daily_token_budget\":50000", (await EnclaveAsync(home, Db(t, "policies", "list", "--json"))).Out.Replace(" ", "", StringComparison.Ordinal));

        Assert.Equal(0, (await EnclaveAsync(home, Db(t, "policies", "rm", "user", "nina"))).Exit);
        Assert.Equal("", (await EnclaveAsync(home, Db(t, "policies", "list"))).Out);
        Assert.Equal(1, (await EnclaveAsync(home, Db(t, "policies", "rm", "user", "nina"))).Exit);
    }

    [Fact]
    public async Task Db_migrate_creates_the_store_under_enclave_home()
    {
        using var home = new TempDir();
        Assert.Equal(3, (await EnclaveAsync(home.Path, "db", "status")).Exit);
        var run = await EnclaveAsync(home.Path, "db", "migrate");
        Assert.Equal(0, run.Exit);
        Assert.True(File.Exists(Path.Combine(home.Path, "gateway.db")));
        Assert.Equal(0, (await EnclaveAsync(home.Path, "db", "status")).Exit);
    }
}
