using Microsoft.EntityFrameworkCore;
using Microsoft.EntityFrameworkCore.Design;

namespace Enclave.Knowledge.Store;

/// <summary>Collections, documents, chunks and ingestion jobs. One model, a SQLite and a PostgreSQL context for migrations.</summary>
public abstract class KnowledgeDbContext(DbContextOptions options) : DbContext(options)
{
    public DbSet<KnowledgeCollection> Collections => Set<KnowledgeCollection>();

    public DbSet<CollectionAccess> Access => Set<CollectionAccess>();

    public DbSet<KnowledgeDocument> Documents => Set<KnowledgeDocument>();

    public DbSet<KnowledgeChunk> Chunks => Set<KnowledgeChunk>();

    public DbSet<IngestJob> Jobs => Set<IngestJob>();

    protected override void OnModelCreating(ModelBuilder b)
    {
        b.Entity<KnowledgeCollection>(e =>
        {
            e.ToTable("kb_collections");
            e.HasIndex(x => x.Name).IsUnique();
            e.Property(x => x.Name).HasMaxLength(64);
            e.Property(x => x.PiiPolicy).HasMaxLength(16);
            e.HasMany(x => x.Access).WithOne().HasForeignKey(x => x.CollectionId).OnDelete(DeleteBehavior.Cascade);
        });
        b.Entity<CollectionAccess>(e =>
        {
            e.ToTable("kb_access");
            e.HasIndex(x => new { x.CollectionId, x.Principal }).IsUnique();
        });
        b.Entity<KnowledgeDocument>(e =>
        {
            e.ToTable("kb_documents");
            e.HasIndex(x => new { x.CollectionId, x.Source }).IsUnique();
            e.HasOne<KnowledgeCollection>().WithMany().HasForeignKey(x => x.CollectionId).OnDelete(DeleteBehavior.Cascade);
        });
        b.Entity<KnowledgeChunk>(e =>
        {
            e.ToTable("kb_chunks");
            e.HasIndex(x => new { x.DocumentId, x.Generation });
            e.HasOne<KnowledgeDocument>().WithMany().HasForeignKey(x => x.DocumentId).OnDelete(DeleteBehavior.Cascade);
        });
        b.Entity<IngestJob>(e =>
        {
            e.ToTable("kb_jobs");
            e.HasIndex(x => new { x.CollectionId, x.Status });
        });
    }
}

public sealed class SqliteKnowledgeDbContext(DbContextOptions<SqliteKnowledgeDbContext> options) : KnowledgeDbContext(options);

public sealed class PostgresKnowledgeDbContext(DbContextOptions<PostgresKnowledgeDbContext> options) : KnowledgeDbContext(options);

/// <summary>Used by <c>dotnet ef migrations add --context SqliteKnowledgeDbContext</c>.</summary>
public sealed class SqliteKnowledgeDesignTimeFactory : IDesignTimeDbContextFactory<SqliteKnowledgeDbContext>
{
    public SqliteKnowledgeDbContext CreateDbContext(string[] args) =>
        new(new DbContextOptionsBuilder<SqliteKnowledgeDbContext>().UseSqlite("Data Source=design.db").Options);
}

/// <summary>Used by <c>dotnet ef migrations add --context PostgresKnowledgeDbContext</c>.</summary>
public sealed class PostgresKnowledgeDesignTimeFactory : IDesignTimeDbContextFactory<PostgresKnowledgeDbContext>
{
    public PostgresKnowledgeDbContext CreateDbContext(string[] args) =>
        new(new DbContextOptionsBuilder<PostgresKnowledgeDbContext>().UseNpgsql("Host=127.0.0.1;Database=design").Options);
}
