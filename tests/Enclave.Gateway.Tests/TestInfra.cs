using System.Reflection;
using Enclave.Gateway.Store;
using Npgsql;
using Xunit.Sdk;

namespace Enclave.Gateway.Tests;

public static class Providers
{
    public const string Sqlite = "sqlite";
    public const string Postgres = "postgres";
    public const string EnvVar = "ENCLAVE_TEST_POSTGRES";

    public static string? PostgresConnection => Environment.GetEnvironmentVariable(EnvVar) is { Length: > 0 } s ? s : null;
}

/// <summary>Supplies the SQLite case of a provider theory.</summary>
[AttributeUsage(AttributeTargets.Method)]
public sealed class SqliteCaseAttribute : DataAttribute
{
    public override IEnumerable<object[]> GetData(MethodInfo testMethod) => [[Providers.Sqlite]];
}

/// <summary>Supplies the PostgreSQL case; skipped, with the reason shown, when no server is configured.</summary>
[AttributeUsage(AttributeTargets.Method)]
public sealed class PostgresCaseAttribute : DataAttribute
{
    public PostgresCaseAttribute()
    {
        if (Providers.PostgresConnection is null)
        {
            Skip = $"{Providers.EnvVar} is not set (run .ci/install-postgres.sh and export it)";
        }
    }

    public override IEnumerable<object[]> GetData(MethodInfo testMethod) => [[Providers.Postgres]];
}

public sealed class TempDir : IDisposable
{
    public TempDir()
    {
        Path = System.IO.Path.Combine(System.IO.Path.GetTempPath(), "enclave-gw-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(Path);
    }

    public string Path { get; }

    public void Dispose()
    {
        try
        {
            Directory.Delete(Path, recursive: true);
        }
        catch (IOException)
        {
        }
        catch (UnauthorizedAccessException)
        {
        }
    }
}

/// <summary>A fresh, migrated store: a SQLite file in a temp dir, or a new PostgreSQL database dropped afterwards.</summary>
public sealed class TestStore : IAsyncDisposable
{
    private readonly string? _pgDatabase;
    private readonly string? _pgAdmin;

    private TestStore(string provider, GatewayStore store, TempDir home, string? pgDatabase, string? pgAdmin)
    {
        ProviderName = provider;
        Store = store;
        Home = home;
        _pgDatabase = pgDatabase;
        _pgAdmin = pgAdmin;
    }

    public string ProviderName { get; }
    public GatewayStore Store { get; }
    public TempDir Home { get; }

    /// <summary>The value for <c>--database</c> or <c>Enclave:Gateway:Database</c>.</summary>
    public string Database => Store.ConnectionString;

    public static async Task<TestStore> CreateAsync(string provider, bool migrate = true)
    {
        var home = new TempDir();
        GatewayStore store;
        string? db = null;
        string? admin = null;
        if (provider == Providers.Postgres)
        {
            admin = Providers.PostgresConnection ?? throw new InvalidOperationException(Providers.EnvVar + " is not set");
            db = "enclave_t_" + Guid.NewGuid().ToString("N")[..16];
            await using (var conn = new NpgsqlConnection(admin))
            {
                await conn.OpenAsync();
                await using var cmd = new NpgsqlCommand($"CREATE DATABASE \"{db}\"", conn);
                await cmd.ExecuteNonQueryAsync();
            }

            var b = new NpgsqlConnectionStringBuilder(admin) { Database = db };
            store = new GatewayStore(StoreProvider.Postgres, b.ConnectionString);
        }
        else
        {
            store = GatewayStore.Resolve(null, home.Path);
        }

        if (migrate)
        {
            await store.MigrateAsync();
        }

        return new TestStore(provider, store, home, db, admin);
    }

    public async ValueTask DisposeAsync()
    {
        if (_pgDatabase is not null && _pgAdmin is not null)
        {
            NpgsqlConnection.ClearAllPools();
            await using var conn = new NpgsqlConnection(_pgAdmin);
            await conn.OpenAsync();
            await using var cmd = new NpgsqlCommand($"DROP DATABASE IF EXISTS \"{_pgDatabase}\" WITH (FORCE)", conn);
            await cmd.ExecuteNonQueryAsync();
        }

        Home.Dispose();
    }
}

/// <summary>The Redis server of the distributed limiter tests (<c>.ci/install-redis.sh</c>).</summary>
public static class TestRedis
{
    public const string EnvVar = "ENCLAVE_TEST_REDIS";

    public static string? Connection => Environment.GetEnvironmentVariable(EnvVar) is { Length: > 0 } s ? s : null;

    /// <summary>A key prefix of its own per test, so tests sharing the server never see each other's counters.</summary>
    public static string FreshPrefix() => "enclave-test:" + Guid.NewGuid().ToString("N")[..12] + ":";
}

/// <summary>A fact that needs the Redis server; skipped, with the reason shown, when none is configured.</summary>
[AttributeUsage(AttributeTargets.Method)]
public sealed class RedisFactAttribute : FactAttribute
{
    public RedisFactAttribute()
    {
        if (TestRedis.Connection is null)
        {
            Skip = $"{TestRedis.EnvVar} is not set (run .ci/install-redis.sh and export it)";
        }
    }
}
