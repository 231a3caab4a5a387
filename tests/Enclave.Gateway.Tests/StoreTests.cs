using Enclave.Gateway.Security;
using Enclave.Gateway.Store;
using Microsoft.EntityFrameworkCore;

namespace Enclave.Gateway.Tests;

public sealed class StoreTests
{
    [Theory, SqliteCase, PostgresCase]
    public async Task Migrations_apply_cleanly_and_seed_built_in_roles(string provider)
    {
        await using var t = await TestStore.CreateAsync(provider, migrate: false);
        Assert.NotEmpty(await t.Store.PendingMigrationsAsync());
        await t.Store.MigrateAsync();
        await t.Store.MigrateAsync();
        Assert.Empty(await t.Store.PendingMigrationsAsync());
        var roles = await RoleCatalog.ListAsync(t.Store);
        Assert.Equal(["admin", "analyst", "auditor"], roles.Select(r => r.Name).ToArray());
        Assert.All(roles, r => Assert.True(r.BuiltIn));
        Assert.Contains(Permissions.Inference, roles.Single(r => r.Name == "analyst").Permissions.Split(' '));
        Assert.DoesNotContain(Permissions.Inference, roles.Single(r => r.Name == "auditor").Permissions.Split(' '));
    }

    [Fact]
    public void Model_has_no_changes_missing_from_the_committed_migrations()
    {
        using var sqlite = new SqliteDesignTimeFactory().CreateDbContext([]);
        using var pg = new PostgresDesignTimeFactory().CreateDbContext([]);
        Assert.False(sqlite.Database.HasPendingModelChanges(), "SQLite migrations are behind the model");
        Assert.False(pg.Database.HasPendingModelChanges(), "PostgreSQL migrations are behind the model");
    }

    [Fact]
    public void Resolve_picks_the_provider_from_the_connection_string()
    {
        using var home = new TempDir();
        var def = GatewayStore.Resolve(null, home.Path);
        Assert.Equal(StoreProvider.Sqlite, def.Provider);
        Assert.Contains(Path.Combine(home.Path, "gateway.db"), def.ConnectionString);
        Assert.Equal(StoreProvider.Postgres, GatewayStore.Resolve("Host=127.0.0.1;Database=x").Provider);
        var uri = GatewayStore.Resolve("postgresql://u:p%40ss@db.local:6543/enclave");
        Assert.Equal(StoreProvider.Postgres, uri.Provider);
        Assert.Contains("Password=p@ss", uri.ConnectionString);
        Assert.Contains("Port=6543", uri.ConnectionString);
        Assert.Equal(StoreProvider.Sqlite, GatewayStore.Resolve("/tmp/x.db").Provider);
    }

    [Theory, SqliteCase, PostgresCase]
    public async Task Key_secret_is_shown_once_and_stored_only_as_hash_and_prefix(string provider)
    {
        await using var t = await TestStore.CreateAsync(provider);
        var keys = new KeyService(t.Store);
        var created = await keys.CreateAsync(new KeyCreateRequest("analyst", Name: "k1"));
        Assert.StartsWith("sk-enclave-", created.Secret);
        Assert.True(created.Secret.Length >= 50);
        await using var db = t.Store.CreateContext();
        var row = await db.ApiKeys.SingleAsync();
        Assert.Equal(created.Secret.Substring(11, 12), row.Prefix);
        Assert.Equal(ApiKeySecret.Hash(created.Secret), row.Hash);
        var raw = string.Join("|", row.Id, row.Prefix, row.Name, row.Role, Convert.ToHexString(row.Hash));
        Assert.DoesNotContain(created.Secret[11..], raw);

        var p = await keys.AuthenticateAsync(created.Secret);
        Assert.NotNull(p);
        Assert.Equal("analyst", p!.Role);
        Assert.True(p.Has(Permissions.Inference));
    }

    [Theory, SqliteCase, PostgresCase]
    public async Task Wrong_secret_with_a_valid_prefix_is_rejected(string provider)
    {
        await using var t = await TestStore.CreateAsync(provider);
        var keys = new KeyService(t.Store);
        var created = await keys.CreateAsync(new KeyCreateRequest("analyst"));
        var last = created.Secret[^1];
        var tampered = created.Secret[..^1] + (last == 'a' ? 'b' : 'a');
        Assert.Null(await keys.AuthenticateAsync(tampered));
        Assert.Null(await keys.AuthenticateAsync("sk-enclave-short"));
        Assert.Null(await keys.AuthenticateAsync("Bearer nothing"));
        Assert.Null(await keys.AuthenticateAsync(null));
        Assert.NotNull(await keys.AuthenticateAsync(created.Secret));
    }

    [Theory, SqliteCase, PostgresCase]
    public async Task Revocation_takes_effect_immediately_even_with_a_cached_principal(string provider)
    {
        await using var t = await TestStore.CreateAsync(provider);
        var keys = new KeyService(t.Store) { CacheTtl = TimeSpan.FromHours(1) };
        var created = await keys.CreateAsync(new KeyCreateRequest("analyst"));
        Assert.NotNull(await keys.AuthenticateAsync(created.Secret));
        Assert.True(await keys.RevokeAsync(created.Key.Id));
        Assert.Null(await keys.AuthenticateAsync(created.Secret));
        Assert.False(await keys.RevokeAsync("no-such-key"));
    }

    [Theory, SqliteCase, PostgresCase]
    public async Task Revocation_on_another_replica_applies_once_the_cache_bound_passes(string provider)
    {
        await using var t = await TestStore.CreateAsync(provider);
        var clock = new ManualClock(DateTimeOffset.UtcNow);
        var replicaA = new KeyService(t.Store, clock) { CacheTtl = TimeSpan.FromSeconds(5) };
        var replicaB = new KeyService(t.Store, clock) { CacheTtl = TimeSpan.FromSeconds(5) };
        var created = await replicaA.CreateAsync(new KeyCreateRequest("analyst"));
        Assert.NotNull(await replicaA.AuthenticateAsync(created.Secret));
        Assert.True(await replicaB.RevokeAsync(created.Key.Prefix));
        clock.Advance(TimeSpan.FromSeconds(6));
        Assert.Null(await replicaA.AuthenticateAsync(created.Secret));
    }

    [Theory, SqliteCase, PostgresCase]
    public async Task Expired_keys_and_keys_of_disabled_users_are_rejected(string provider)
    {
        await using var t = await TestStore.CreateAsync(provider);
        var clock = new ManualClock(DateTimeOffset.UtcNow);
        var keys = new KeyService(t.Store, clock) { CacheTtl = TimeSpan.Zero };
        var users = new UserService(t.Store, keys);
        await users.AddAsync("alice", "Alice");
        var expiring = await keys.CreateAsync(new KeyCreateRequest("analyst", ExpiresAt: clock.GetUtcNow().AddHours(1)));
        var owned = await keys.CreateAsync(new KeyCreateRequest("analyst", User: "alice"));
        Assert.NotNull(await keys.AuthenticateAsync(expiring.Secret));
        clock.Advance(TimeSpan.FromHours(2));
        Assert.Null(await keys.AuthenticateAsync(expiring.Secret));

        Assert.Equal("alice", (await keys.AuthenticateAsync(owned.Secret))!.UserName);
        Assert.True(await users.SetStatusAsync("alice", UserStatus.Disabled));
        Assert.Null(await keys.AuthenticateAsync(owned.Secret));
        await Assert.ThrowsAsync<GatewayException>(() => keys.CreateAsync(new KeyCreateRequest("analyst", ExpiresAt: clock.GetUtcNow().AddMinutes(-1))));
    }

    [Theory, SqliteCase, PostgresCase]
    public async Task Unknown_roles_users_and_duplicate_names_are_refused(string provider)
    {
        await using var t = await TestStore.CreateAsync(provider);
        var keys = new KeyService(t.Store);
        var users = new UserService(t.Store, keys);
        var e1 = await Assert.ThrowsAsync<GatewayException>(() => keys.CreateAsync(new KeyCreateRequest("root")));
        Assert.Equal("unknown_role", e1.Code);
        var e2 = await Assert.ThrowsAsync<GatewayException>(() => keys.CreateAsync(new KeyCreateRequest("analyst", User: "ghost")));
        Assert.Equal("unknown_user", e2.Code);
        await users.AddAsync("bob");
        Assert.Equal("user_exists", (await Assert.ThrowsAsync<GatewayException>(() => users.AddAsync("bob"))).Code);
        Assert.Equal("role_exists", (await Assert.ThrowsAsync<GatewayException>(() => RoleCatalog.CreateAsync(t.Store, "admin", ["inference"], null, null))).Code);
        Assert.Equal("unknown_permission", (await Assert.ThrowsAsync<GatewayException>(() => RoleCatalog.CreateAsync(t.Store, "x", ["fly"], null, null))).Code);
        Assert.Equal("invalid_cidr", (await Assert.ThrowsAsync<GatewayException>(() => keys.CreateAsync(new KeyCreateRequest("analyst", AllowedCidrs: "10.0.0.1/8")))).Code);
    }

    [Theory, SqliteCase, PostgresCase]
    public async Task Custom_role_grants_exactly_its_permissions(string provider)
    {
        await using var t = await TestStore.CreateAsync(provider);
        await RoleCatalog.CreateAsync(t.Store, "model-ops", ["models.read", "models.manage"], "Runs models", null);
        var keys = new KeyService(t.Store);
        var k = await keys.CreateAsync(new KeyCreateRequest("model-ops"));
        var p = (await keys.AuthenticateAsync(k.Secret))!;
        Assert.True(p.Has(Permissions.ModelsManage));
        Assert.False(p.Has(Permissions.Inference));
        Assert.False(p.Has(Permissions.AuditRead));
    }

    [Theory, SqliteCase, PostgresCase]
    public async Task Bootstrap_creates_one_admin_key_only_on_an_empty_store(string provider)
    {
        await using var t = await TestStore.CreateAsync(provider);
        var keys = new KeyService(t.Store);
        var first = await keys.BootstrapAsync();
        Assert.NotNull(first);
        Assert.Equal("admin", (await keys.AuthenticateAsync(first!.Secret))!.Role);
        Assert.Null(await keys.BootstrapAsync());
        Assert.Single(await keys.ListAsync());
    }

    [Theory, SqliteCase, PostgresCase]
    public async Task Last_used_time_is_recorded(string provider)
    {
        await using var t = await TestStore.CreateAsync(provider);
        var keys = new KeyService(t.Store);
        var k = await keys.CreateAsync(new KeyCreateRequest("analyst"));
        Assert.Null((await keys.ListAsync()).Single().LastUsedAtMs);
        await keys.TouchAsync(k.Key.Id);
        Assert.NotNull((await keys.ListAsync()).Single().LastUsedAtMs);
    }
}

public sealed class ManualClock(DateTimeOffset start) : TimeProvider
{
    private DateTimeOffset _now = start;

    public override DateTimeOffset GetUtcNow() => _now;

    public void Advance(TimeSpan by) => _now += by;
}
