using System.Text;
using Enclave.Knowledge.Retrieval;
using Enclave.Knowledge.Store;
using Enclave.Knowledge.Tests.Support;
using Npgsql;

namespace Enclave.Knowledge.Tests;

/// <summary>A PostgreSQL case, skipped with the reason shown when ENCLAVE_TEST_POSTGRES is not set.</summary>
[AttributeUsage(AttributeTargets.Method)]
public sealed class PostgresFactAttribute : FactAttribute
{
    public const string EnvVar = "ENCLAVE_TEST_POSTGRES";

    public PostgresFactAttribute()
    {
        if (string.IsNullOrEmpty(Environment.GetEnvironmentVariable(EnvVar)))
        {
            Skip = $"{EnvVar} is not set (run .ci/install-postgres.sh and export it)";
        }
    }
}

/// <summary>The chunk store on a real PostgreSQL server, in a database created for the test and dropped after it.</summary>
public sealed class PostgresStoreTests
{
    [PostgresFact]
    public async Task The_pipeline_runs_with_the_store_in_postgresql()
    {
        var admin = new NpgsqlConnectionStringBuilder(Environment.GetEnvironmentVariable(PostgresFactAttribute.EnvVar));
        var database = "enclave_kb_" + Guid.NewGuid().ToString("N")[..12];
        await using (var conn = new NpgsqlConnection(admin.ConnectionString))
        {
            await conn.OpenAsync();
            await using var create = new NpgsqlCommand($"CREATE DATABASE {database}", conn);
            await create.ExecuteNonQueryAsync();
        }

        try
        {
            using var dir = new TempDir();
            var cs = new NpgsqlConnectionStringBuilder(admin.ConnectionString) { Database = database, Pooling = false }.ConnectionString;
            await using (var kb = await KnowledgeBase.OpenAsync(new KnowledgeOptions { Directory = dir.Path, Postgres = cs }))
            {
                Assert.True(kb.Store.IsPostgres);
                await kb.CreateCollectionAsync(new CollectionSpec("pg") { Readers = ["role:analyst"], Encryption = "aes-256-gcm" }, "alice");
                var text = Encoding.UTF8.GetBytes("# 数据库\n\n生产数据库每天凌晨一点全量备份。\n\n## Restore\n\nRestores are tested every quarter.");
                Assert.Equal(JobStatus.Succeeded, (await kb.IngestAsync("pg", "db.md", text, null)).Status);
                Assert.Equal(JobStatus.Unchanged, (await kb.IngestAsync("pg", "db.md", text, null)).Status);
                var hits = await kb.SearchAsync("pg", new SearchRequest("数据库备份") { Mode = RetrievalMode.Bm25 }, new KnowledgeCaller("bob", ["analyst"]));
                Assert.Equal("生产数据库每天凌晨一点全量备份。", hits[0].Citation.Text);
                await Assert.ThrowsAsync<KnowledgeException>(() => kb.SearchAsync("pg", new SearchRequest("backup"), new KnowledgeCaller("eve", ["auditor"])));
                await kb.DeleteDocumentAsync("pg", "db.md", null);
                Assert.Empty(await kb.SearchAsync("pg", new SearchRequest("restore quarter") { Mode = RetrievalMode.Bm25 }, null));
            }

            // Reopening applies no migration twice.
            await using var again = await KnowledgeBase.OpenAsync(new KnowledgeOptions { Directory = dir.Path, Postgres = cs });
            Assert.Single(await again.ListCollectionsAsync(null));
        }
        finally
        {
            NpgsqlConnection.ClearAllPools();
            await using var conn = new NpgsqlConnection(admin.ConnectionString);
            await conn.OpenAsync();
            await using var drop = new NpgsqlCommand($"DROP DATABASE IF EXISTS {database} WITH (FORCE)", conn);
            await drop.ExecuteNonQueryAsync();
        }
    }
}
