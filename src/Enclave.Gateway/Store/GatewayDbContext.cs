using Microsoft.EntityFrameworkCore;
using Microsoft.EntityFrameworkCore.Design;

namespace Enclave.Gateway.Store;

/// <summary>
/// The gateway state. Each provider has its own subclass so each keeps its own committed
/// migrations; the model is identical.
/// </summary>
public abstract class GatewayDbContext(DbContextOptions options) : DbContext(options)
{
    public DbSet<UserEntity> Users => Set<UserEntity>();
    public DbSet<RoleEntity> Roles => Set<RoleEntity>();
    public DbSet<ApiKeyEntity> ApiKeys => Set<ApiKeyEntity>();
    public DbSet<AuditRecordEntity> AuditRecords => Set<AuditRecordEntity>();
    public DbSet<AuditCheckpointEntity> AuditCheckpoints => Set<AuditCheckpointEntity>();
    public DbSet<AuditAnchorEntity> AuditAnchors => Set<AuditAnchorEntity>();
    public DbSet<TokenUsageEntity> TokenUsage => Set<TokenUsageEntity>();
    public DbSet<PolicyEntity> Policies => Set<PolicyEntity>();

    protected override void OnModelCreating(ModelBuilder modelBuilder)
    {
        modelBuilder.Entity<UserEntity>(e =>
        {
            e.ToTable("users");
            e.HasKey(x => x.Id);
            e.Property(x => x.Id).HasMaxLength(64);
            e.Property(x => x.Name).HasMaxLength(128);
            e.HasIndex(x => x.Name).IsUnique();
            e.Property(x => x.DisplayName).HasMaxLength(256);
            e.Property(x => x.Status).HasMaxLength(16);
            e.Property(x => x.AllowedCidrs).HasMaxLength(2048);
        });
        modelBuilder.Entity<RoleEntity>(e =>
        {
            e.ToTable("roles");
            e.HasKey(x => x.Name);
            e.Property(x => x.Name).HasMaxLength(64);
            e.Property(x => x.Description).HasMaxLength(512);
            e.Property(x => x.Permissions).HasMaxLength(2048);
            e.Property(x => x.AllowedCidrs).HasMaxLength(2048);
        });
        modelBuilder.Entity<ApiKeyEntity>(e =>
        {
            e.ToTable("api_keys");
            e.HasKey(x => x.Id);
            e.Property(x => x.Id).HasMaxLength(64);
            e.Property(x => x.Prefix).HasMaxLength(32);
            e.HasIndex(x => x.Prefix).IsUnique();
            e.Property(x => x.Name).HasMaxLength(128);
            e.Property(x => x.UserId).HasMaxLength(64);
            e.HasIndex(x => x.UserId);
            e.Property(x => x.Role).HasMaxLength(64);
            e.Property(x => x.AllowedCidrs).HasMaxLength(2048);
            e.Property(x => x.AllowedModels).HasMaxLength(2048);
            e.Property(x => x.PromptPiiAction).HasMaxLength(16);
        });
        modelBuilder.Entity<AuditRecordEntity>(e =>
        {
            e.ToTable("audit_records");
            e.HasKey(x => x.Sequence);
            e.Property(x => x.Sequence).ValueGeneratedNever();
            e.Property(x => x.RequestId).HasMaxLength(64);
            e.Property(x => x.Principal).HasMaxLength(128);
            e.Property(x => x.Role).HasMaxLength(64);
            e.Property(x => x.SourceIp).HasMaxLength(64);
            e.Property(x => x.Method).HasMaxLength(16);
            e.Property(x => x.Endpoint).HasMaxLength(512);
            e.Property(x => x.Model).HasMaxLength(256);
            e.Property(x => x.Algorithm).HasMaxLength(16);
            e.Property(x => x.PrevHash).HasMaxLength(128);
            e.Property(x => x.Hash).HasMaxLength(128);
            e.HasIndex(x => x.TimestampMs);
            e.HasIndex(x => x.Principal);
        });
        modelBuilder.Entity<AuditCheckpointEntity>(e =>
        {
            e.ToTable("audit_checkpoints");
            e.HasKey(x => x.Id);
            e.Property(x => x.Hash).HasMaxLength(128);
            e.Property(x => x.PublicKey).HasMaxLength(128);
            e.Property(x => x.Signature).HasMaxLength(256);
            e.HasIndex(x => x.Sequence);
        });
        modelBuilder.Entity<AuditAnchorEntity>(e =>
        {
            e.ToTable("audit_anchors");
            e.HasKey(x => x.Id);
            e.Property(x => x.Hash).HasMaxLength(128);
            e.Property(x => x.ArchiveFile).HasMaxLength(1024);
        });
        modelBuilder.Entity<TokenUsageEntity>(e =>
        {
            e.ToTable("token_usage");
            e.HasKey(x => x.Counter);
            e.Property(x => x.Counter).HasMaxLength(200);
            e.HasIndex(x => x.ExpiresAtMs);
        });
        modelBuilder.Entity<PolicyEntity>(e =>
        {
            e.ToTable("policies");
            e.HasKey(x => new { x.Scope, x.Subject });
            e.Property(x => x.Scope).HasMaxLength(8);
            e.Property(x => x.Subject).HasMaxLength(128);
            e.Property(x => x.AllowedCidrs).HasMaxLength(2048);
            e.Property(x => x.AllowedModels).HasMaxLength(2048);
            e.Property(x => x.TimeWindows).HasMaxLength(512);
            e.Property(x => x.TimeZone).HasMaxLength(64);
            e.Property(x => x.PromptPiiAction).HasMaxLength(16);
            e.Property(x => x.AuditPiiAction).HasMaxLength(16);
            e.Property(x => x.BlockedPhrases).HasMaxLength(16384);
        });
    }
}

public sealed class SqliteGatewayDbContext(DbContextOptions<SqliteGatewayDbContext> options) : GatewayDbContext(options);

public sealed class PostgresGatewayDbContext(DbContextOptions<PostgresGatewayDbContext> options) : GatewayDbContext(options);

/// <summary>Used by <c>dotnet ef migrations add --context SqliteGatewayDbContext</c>.</summary>
public sealed class SqliteDesignTimeFactory : IDesignTimeDbContextFactory<SqliteGatewayDbContext>
{
    public SqliteGatewayDbContext CreateDbContext(string[] args) =>
        new(new DbContextOptionsBuilder<SqliteGatewayDbContext>().UseSqlite("Data Source=design.db").Options);
}

/// <summary>Used by <c>dotnet ef migrations add --context PostgresGatewayDbContext</c>.</summary>
public sealed class PostgresDesignTimeFactory : IDesignTimeDbContextFactory<PostgresGatewayDbContext>
{
    public PostgresGatewayDbContext CreateDbContext(string[] args) =>
        new(new DbContextOptionsBuilder<PostgresGatewayDbContext>().UseNpgsql("Host=127.0.0.1;Database=design").Options);
}
