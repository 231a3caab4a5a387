using Microsoft.Data.Sqlite;
using Microsoft.EntityFrameworkCore;

namespace Enclave.Gateway.Store;

public enum StoreProvider
{
    Sqlite,
    Postgres,
}

/// <summary>Opens contexts on the configured provider and applies migrations.</summary>
public sealed class GatewayStore
{
    private readonly DbContextOptions _options;

    public GatewayStore(StoreProvider provider, string connectionString)
    {
        Provider = provider;
        ConnectionString = connectionString;
        // Built once: options are immutable, and reusing them lets EF share its internal
        // service provider and compiled model across the many short-lived contexts.
        _options = provider == StoreProvider.Postgres
            ? new DbContextOptionsBuilder<PostgresGatewayDbContext>().UseNpgsql(connectionString).Options
            : new DbContextOptionsBuilder<SqliteGatewayDbContext>().UseSqlite(connectionString).Options;
    }

    public StoreProvider Provider { get; }
    public string ConnectionString { get; }

    /// <summary>
    /// Resolves the store from an explicit connection string (<c>--database</c>) or, when none is
    /// given, the SQLite file <c>gateway.db</c> under <c>ENCLAVE_HOME</c>.
    /// </summary>
    public static GatewayStore Resolve(string? database, string? enclaveHome = null)
    {
        if (!string.IsNullOrWhiteSpace(database))
        {
            var d = database.Trim();
            if (d.StartsWith("postgres://", StringComparison.OrdinalIgnoreCase)
                || d.StartsWith("postgresql://", StringComparison.OrdinalIgnoreCase))
            {
                return new GatewayStore(StoreProvider.Postgres, FromUri(new Uri(d)));
            }

            if (d.Contains("Host=", StringComparison.OrdinalIgnoreCase) || d.Contains("Server=", StringComparison.OrdinalIgnoreCase))
            {
                return new GatewayStore(StoreProvider.Postgres, d);
            }

            if (d.Contains('=', StringComparison.Ordinal))
            {
                return new GatewayStore(StoreProvider.Sqlite, SqliteDefaults(d));
            }

            return new GatewayStore(StoreProvider.Sqlite, SqliteDefaults("Data Source=" + d));
        }

        var home = EnclaveHome.Resolve(enclaveHome);
        Directory.CreateDirectory(home);
        return new GatewayStore(StoreProvider.Sqlite, SqliteDefaults("Data Source=" + Path.Combine(home, "gateway.db")));
    }

    private static string SqliteDefaults(string cs)
    {
        var b = new SqliteConnectionStringBuilder(cs);
        if (b.DefaultTimeout == 30)
        {
            b.DefaultTimeout = 60;
        }

        return b.ToString();
    }

    private static string FromUri(Uri uri)
    {
        var userInfo = uri.UserInfo.Split(':', 2);
        var parts = new List<string>
        {
            "Host=" + uri.Host,
            "Port=" + (uri.Port > 0 ? uri.Port : 5432),
            "Database=" + uri.AbsolutePath.TrimStart('/'),
        };
        if (userInfo.Length > 0 && userInfo[0].Length > 0)
        {
            parts.Add("Username=" + Uri.UnescapeDataString(userInfo[0]));
        }

        if (userInfo.Length > 1)
        {
            parts.Add("Password=" + Uri.UnescapeDataString(userInfo[1]));
        }

        return string.Join(';', parts);
    }

    public GatewayDbContext CreateContext() => Provider switch
    {
        StoreProvider.Postgres => new PostgresGatewayDbContext((DbContextOptions<PostgresGatewayDbContext>)_options),
        _ => new SqliteGatewayDbContext((DbContextOptions<SqliteGatewayDbContext>)_options),
    };

    /// <summary>Applies pending migrations and seeds the built-in roles. Safe to call repeatedly and concurrently.</summary>
    public async Task MigrateAsync(CancellationToken ct = default)
    {
        await using (var db = CreateContext())
        {
            if (Provider == StoreProvider.Sqlite)
            {
                // WAL lets readers proceed during the audit writer's transaction.
                await db.Database.OpenConnectionAsync(ct);
                await db.Database.ExecuteSqlRawAsync("PRAGMA journal_mode=WAL;", ct);
                await db.Database.CloseConnectionAsync();
            }

            await db.Database.MigrateAsync(ct);
        }

        await Security.RoleCatalog.SeedBuiltInRolesAsync(this, ct);
    }

    public async Task<IReadOnlyList<string>> PendingMigrationsAsync(CancellationToken ct = default)
    {
        await using var db = CreateContext();
        return [.. await db.Database.GetPendingMigrationsAsync(ct)];
    }
}

/// <summary>The data directory shared by every enclave command.</summary>
public static class EnclaveHome
{
    public static string Resolve(string? explicitHome = null)
    {
        if (!string.IsNullOrWhiteSpace(explicitHome))
        {
            return explicitHome;
        }

        var env = Environment.GetEnvironmentVariable("ENCLAVE_HOME");
        if (!string.IsNullOrWhiteSpace(env))
        {
            return env;
        }

        return Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".enclave");
    }
}
