using Microsoft.Data.Sqlite;
using Microsoft.EntityFrameworkCore;

namespace Enclave.Knowledge.Store;

/// <summary>Opens contexts on SQLite (the embedded default, <c>ENCLAVE_HOME/knowledge/knowledge.db</c>) or PostgreSQL.</summary>
public sealed class KnowledgeStore
{
    private readonly DbContextOptions _options;

    public KnowledgeStore(bool postgres, string connectionString)
    {
        IsPostgres = postgres;
        // Its own migrations history table: the knowledge store may share a PostgreSQL database with the gateway's.
        _options = postgres
            ? new DbContextOptionsBuilder<PostgresKnowledgeDbContext>().UseNpgsql(connectionString, o => o.MigrationsHistoryTable(HistoryTable)).Options
            : new DbContextOptionsBuilder<SqliteKnowledgeDbContext>().UseSqlite(connectionString, o => o.MigrationsHistoryTable(HistoryTable)).Options;
    }

    public const string HistoryTable = "__kb_migrations";

    public bool IsPostgres { get; }

    /// <summary>SQLite file in <paramref name="directory"/>, or the PostgreSQL database of <paramref name="postgresConnection"/>.</summary>
    public static KnowledgeStore Open(string directory, string? postgresConnection = null)
    {
        if (!string.IsNullOrWhiteSpace(postgresConnection))
        {
            return new KnowledgeStore(true, postgresConnection);
        }

        Directory.CreateDirectory(directory);
        var cs = new SqliteConnectionStringBuilder { DataSource = Path.Combine(directory, "knowledge.db"), DefaultTimeout = 60 };
        return new KnowledgeStore(false, cs.ToString());
    }

    public KnowledgeDbContext CreateContext() => IsPostgres
        ? new PostgresKnowledgeDbContext((DbContextOptions<PostgresKnowledgeDbContext>)_options)
        : new SqliteKnowledgeDbContext((DbContextOptions<SqliteKnowledgeDbContext>)_options);

    public async Task MigrateAsync(CancellationToken ct = default)
    {
        await using var db = CreateContext();
        if (!IsPostgres)
        {
            // WAL lets searches read while an ingestion writes.
            await db.Database.OpenConnectionAsync(ct);
            await db.Database.ExecuteSqlRawAsync("PRAGMA journal_mode=WAL;", ct);
            await db.Database.CloseConnectionAsync();
        }

        await db.Database.MigrateAsync(ct);
    }
}
