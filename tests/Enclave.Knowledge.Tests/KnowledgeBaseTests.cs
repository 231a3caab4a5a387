using System.Text;
using Enclave.Knowledge.Retrieval;
using Enclave.Knowledge.Store;
using Enclave.Knowledge.Tests.Support;
using Microsoft.EntityFrameworkCore;
using Microsoft.Extensions.AI;

namespace Enclave.Knowledge.Tests;

public sealed class KnowledgeBaseTests : IDisposable
{
    private readonly TempDir dir = new();

    private static readonly string TinyModel = Path.Combine(RepoFiles.Root, "tests", "fixtures", "models", "tiny-qwen2-r1");

    private const string Handbook = """
        # Employee Handbook

        ## Leave
        Annual leave is fifteen working days per year. Unused days expire at the end of March.

        ## Remote work
        Staff may work remotely two days a week with their manager's approval.

        ## 报销
        差旅费用须在三十天内提交报销申请，并附上发票原件。
        """;

    public void Dispose() => dir.Dispose();

    private Task<KnowledgeBase> OpenAsync(IEmbeddingModelProvider? embeddings = null, IReranker? reranker = null) =>
        KnowledgeBase.OpenAsync(new KnowledgeOptions { Directory = dir.Path }, new BruteForceVectorIndexFactory(), embeddings, reranker);

    private static byte[] Utf8(string s) => Encoding.UTF8.GetBytes(s);

    [Fact]
    public async Task Ingested_markdown_is_found_with_citations_pointing_into_the_document_text()
    {
        await using var kb = await OpenAsync();
        await kb.CreateCollectionAsync(new CollectionSpec("hr"), "alice");
        var job = await kb.IngestAsync("hr", "handbook.md", Utf8(Handbook), null);
        Assert.Equal(JobStatus.Succeeded, job.Status);
        Assert.Equal(IngestStage.Committed, job.Stage);
        Assert.Equal(3, job.Chunks);

        var hits = await kb.SearchAsync("hr", new SearchRequest("how many days of annual leave") { Mode = RetrievalMode.Bm25 }, null);
        var top = hits[0].Citation;
        Assert.Equal("handbook.md", top.Document);
        Assert.Equal("Employee Handbook", top.Title);
        Assert.Equal("Employee Handbook > Leave", top.Heading);
        Assert.Null(top.Page);
        Assert.Equal("Annual leave is fifteen working days per year. Unused days expire at the end of March.", top.Text);
        var text = await kb.DocumentTextAsync("hr", "handbook.md", null);
        Assert.Equal(top.Text, text[top.CharStart..top.CharEnd]);

        var zh = await kb.SearchAsync("hr", new SearchRequest("差旅报销期限") { Mode = RetrievalMode.Bm25 }, null);
        Assert.Equal("Employee Handbook > 报销", zh[0].Citation.Heading);
    }

    [Fact]
    public async Task Unchanged_file_is_a_no_op_and_a_changed_file_replaces_its_chunks_everywhere()
    {
        var embedder = new HashedBagOfWordsEmbedder();
        await using var kb = await OpenAsync(embedder);
        var c = await kb.CreateCollectionAsync(new CollectionSpec("hr") { EmbeddingModel = TinyModel }, "alice");
        await kb.IngestAsync("hr", "handbook.md", Utf8(Handbook), null);
        var first = await ChunkIdsAsync(kb);
        var calls = embedder.Calls;

        var again = await kb.IngestAsync("hr", "handbook.md", Utf8(Handbook), null);
        Assert.Equal(JobStatus.Unchanged, again.Status);
        Assert.Equal(first, await ChunkIdsAsync(kb));
        Assert.Equal(calls, embedder.Calls);

        var changed = Handbook.Replace("fifteen working days", "twenty working days", StringComparison.Ordinal)
            .Replace("## Remote work\nStaff may work remotely two days a week with their manager's approval.\n", "", StringComparison.Ordinal);
        var job = await kb.IngestAsync("hr", "handbook.md", Utf8(changed), null);
        Assert.Equal(JobStatus.Succeeded, job.Status);
        var second = await ChunkIdsAsync(kb);
        Assert.Equal(2, second.Count);
        Assert.Empty(first.Intersect(second));

        foreach (var mode in new[] { RetrievalMode.Bm25, RetrievalMode.Dense, RetrievalMode.Hybrid })
        {
            var remote = await kb.SearchAsync("hr", new SearchRequest("remotely manager approval") { Mode = mode, TopK = 10 }, null);
            Assert.DoesNotContain(remote, h => h.Citation.Text.Contains("remotely", StringComparison.Ordinal));
            Assert.All(remote, h => Assert.Contains(h.Citation.ChunkId, second));
        }

        var leave = await kb.SearchAsync("hr", new SearchRequest("annual leave days") { Mode = RetrievalMode.Bm25 }, null);
        Assert.Contains("twenty working days", leave[0].Citation.Text, StringComparison.Ordinal);
        // The vector index holds exactly the live chunks: old vectors were removed.
        var vectors = BruteForceVectorIndex.Open(Path.Combine(dir.Path, "collections", c.Id.ToString(System.Globalization.CultureInfo.InvariantCulture), "vectors"));
        Assert.Equal(2, vectors.Count);

        await kb.DeleteDocumentAsync("hr", "handbook.md", null);
        Assert.Empty(await kb.SearchAsync("hr", new SearchRequest("annual leave") { Mode = RetrievalMode.Hybrid }, null));
        Assert.Empty(await ChunkIdsAsync(kb));
        vectors = BruteForceVectorIndex.Open(Path.Combine(dir.Path, "collections", c.Id.ToString(System.Globalization.CultureInfo.InvariantCulture), "vectors"));
        Assert.Equal(0, vectors.Count);
        var missing = await Assert.ThrowsAsync<KnowledgeException>(() => kb.DeleteDocumentAsync("hr", "handbook.md", null));
        Assert.Equal(404, missing.Status);
    }

    [Fact]
    public async Task A_real_encoder_and_the_hnsw_index_serve_dense_and_hybrid_search()
    {
        // The parts `enclave serve` and `enclave kb` wire in: the engine's BertModel (tiny random fixture, so only the
        // plumbing is meaningful, not the ranking) and the memory-mapped HNSW index.
        using var encoders = new EncoderEmbeddingProvider();
        var model = Path.Combine(RepoFiles.Root, "tests", "fixtures", "encoders", "tiny-bge-bert");
        await using var kb = await KnowledgeBase.OpenAsync(new KnowledgeOptions { Directory = dir.Path }, new Enclave.Knowledge.Vectors.VectorIndexFactory(), encoders, null);
        var c = await kb.CreateCollectionAsync(new CollectionSpec("hr") { EmbeddingModel = model }, "alice");
        Assert.Equal(JobStatus.Succeeded, (await kb.IngestAsync("hr", "handbook.md", Utf8(Handbook), null)).Status);
        var chunks = await ChunkIdsAsync(kb);

        using (var index = Enclave.Knowledge.Vectors.VectorIndex.Open(Path.Combine(dir.Path, "collections", c.Id.ToString(System.Globalization.CultureInfo.InvariantCulture), "vectors")))
        {
            Assert.Equal(chunks.Count, index.Count);
            Assert.Equal(64, index.Options.Dimensions); // the fixture's hidden size
        }

        foreach (var mode in new[] { RetrievalMode.Dense, RetrievalMode.Hybrid })
        {
            var hits = await kb.SearchAsync("hr", new SearchRequest("annual leave") { Mode = mode, TopK = 10 }, null);
            Assert.Equal(chunks.Order(), hits.Select(h => h.Citation.ChunkId).Order());
            Assert.All(hits, h => Assert.True(float.IsFinite((float)h.Score)));
        }

        await kb.DeleteDocumentAsync("hr", "handbook.md", null);
        Assert.Empty(await kb.SearchAsync("hr", new SearchRequest("annual leave") { Mode = RetrievalMode.Dense }, null));
    }

    private static async Task<List<long>> ChunkIdsAsync(KnowledgeBase kb)
    {
        await using var db = kb.Store.CreateContext();
        return await db.Chunks.OrderBy(x => x.Id).Select(x => x.Id).ToListAsync();
    }

    [Fact]
    public async Task Pdf_citations_carry_pages_and_running_headers_are_not_indexed()
    {
        await using var kb = await OpenAsync();
        await kb.CreateCollectionAsync(new CollectionSpec("finance"), "alice");
        var pages = new (string, string[])[]
        {
            ("Travel Policy", ["Employees book flights through the approved agency."]),
            ("Expense Claims", ["Claims must be filed within 30 days of travel."]),
            ("Approvals", ["Managers approve claims in the finance portal."]),
        };
        var job = await kb.IngestAsync("finance", "policy.pdf", Files.Pdf("Travel and Expenses", pages), null);
        Assert.Equal(JobStatus.Succeeded, job.Status);
        Assert.Contains("header/footer blocks removed", job.Notes, StringComparison.Ordinal);
        var hit = (await kb.SearchAsync("finance", new SearchRequest("when must claims be filed") { Mode = RetrievalMode.Bm25 }, null))[0];
        Assert.Equal(2, hit.Citation.Page);
        Assert.Equal("Expense Claims", hit.Citation.Heading);
        Assert.Equal("Travel and Expenses", hit.Citation.Title);
        Assert.Empty(await kb.SearchAsync("finance", new SearchRequest("ACME Confidential") { Mode = RetrievalMode.Bm25 }, null));

        var onlyPdf = await kb.SearchAsync("finance", new SearchRequest("claims") { Metadata = new Dictionary<string, string> { ["format"] = "pdf" } }, null);
        Assert.NotEmpty(onlyPdf);
        Assert.Empty(await kb.SearchAsync("finance", new SearchRequest("claims") { Metadata = new Dictionary<string, string> { ["format"] = "docx" } }, null));
    }

    [Fact]
    public async Task Personal_data_is_masked_before_storage_or_the_document_is_dropped_by_policy()
    {
        await using var kb = await OpenAsync();
        await kb.CreateCollectionAsync(new CollectionSpec("crm") { PiiPolicy = PiiPolicies.Mask }, "alice");
        await kb.CreateCollectionAsync(new CollectionSpec("strict") { PiiPolicy = PiiPolicies.Drop }, "alice");
        var text = Utf8("客户联系方式\n\n客户王五的手机是 13800138000，邮箱 wangwu@example.cn，需在周五前回访。");
        var job = await kb.IngestAsync("crm", "contacts.txt", text, null);
        Assert.Equal(JobStatus.Succeeded, job.Status);
        Assert.Contains("email, mobile", job.Notes, StringComparison.Ordinal);
        var hit = (await kb.SearchAsync("crm", new SearchRequest("王五 回访") { Mode = RetrievalMode.Bm25 }, null))[0];
        Assert.Contains("138****8000", hit.Citation.Text, StringComparison.Ordinal);
        Assert.DoesNotContain("13800138000", hit.Citation.Text, StringComparison.Ordinal);
        Assert.Empty(await kb.SearchAsync("crm", new SearchRequest("13800138000") { Mode = RetrievalMode.Bm25 }, null));
        Assert.False(FileContains(Path.Combine(dir.Path, "knowledge.db"), "13800138000"));

        var dropped = await kb.IngestAsync("strict", "contacts.txt", text, null);
        Assert.Equal(JobStatus.Failed, dropped.Status);
        Assert.Contains("policy is 'drop'", dropped.Error, StringComparison.Ordinal);
        Assert.Empty(await kb.ListDocumentsAsync("strict", null));
        var clean = await kb.IngestAsync("strict", "clean.txt", Utf8("No personal data here.\n\nJust a policy."), null);
        Assert.Equal(JobStatus.Succeeded, clean.Status);
    }

    private static bool FileContains(string path, string needle)
    {
        Microsoft.Data.Sqlite.SqliteConnection.ClearAllPools();
        var bytes = File.ReadAllBytes(path);
        foreach (var side in new[] { path + "-wal" }.Where(File.Exists))
        {
            bytes = [.. bytes, .. File.ReadAllBytes(side)];
        }

        return bytes.AsSpan().IndexOf(Encoding.UTF8.GetBytes(needle)) >= 0;
    }

    [Fact]
    public async Task Access_lists_decide_who_sees_a_collection_and_who_may_change_it()
    {
        await using var kb = await OpenAsync();
        await kb.CreateCollectionAsync(new CollectionSpec("legal") { Readers = ["role:analyst"], Writers = ["user:carol"] }, "alice");
        await kb.IngestAsync("legal", "nda.md", Utf8("# NDA\n\nThe NDA term is five years."), null);
        var analyst = new KnowledgeCaller("dave", ["analyst"]);
        var auditor = new KnowledgeCaller("erin", ["auditor"]);
        var carol = new KnowledgeCaller("carol", ["auditor"]);
        var query = new SearchRequest("NDA term") { Mode = RetrievalMode.Bm25 };

        Assert.NotEmpty(await kb.SearchAsync("legal", query, analyst));
        Assert.NotEmpty(await kb.SearchAsync("legal", query, carol));
        var hidden = await Assert.ThrowsAsync<KnowledgeException>(() => kb.SearchAsync("legal", query, auditor));
        Assert.Equal(404, hidden.Status);
        Assert.Empty(await kb.ListCollectionsAsync(auditor));
        Assert.Single(await kb.ListCollectionsAsync(analyst));

        var readOnly = await Assert.ThrowsAsync<KnowledgeException>(() => kb.SubmitAsync("legal", "x.md", Utf8("# X"), analyst));
        Assert.Equal(403, readOnly.Status);
        Assert.Equal(JobStatus.Succeeded, (await kb.IngestAsync("legal", "y.md", Utf8("# Y\n\nWriter text."), carol)).Status);
        var notOwner = await Assert.ThrowsAsync<KnowledgeException>(() => kb.DeleteCollectionAsync("legal", carol));
        Assert.Equal(403, notOwner.Status);

        await kb.SetAccessAsync("legal", [], [], new KnowledgeCaller("alice", []));
        await Assert.ThrowsAsync<KnowledgeException>(() => kb.SearchAsync("legal", query, analyst));
        Assert.NotEmpty(await kb.SearchAsync("legal", query, new KnowledgeCaller("alice", [])));
    }

    [Theory]
    [InlineData("aes-256-gcm")]
    [InlineData("sm4-gcm")]
    public async Task Encrypted_collections_keep_document_and_chunk_text_sealed_at_rest(string algorithm)
    {
        await using var kb = await OpenAsync();
        var c = await kb.CreateCollectionAsync(new CollectionSpec("secret") { Encryption = algorithm }, "alice");
        const string sentence = "Project Falcon launches on the ninth of October";
        var job = await kb.IngestAsync("secret", "falcon.md", Utf8($"# Falcon\n\n{sentence}."), null);
        Assert.Equal(JobStatus.Succeeded, job.Status);
        var hit = (await kb.SearchAsync("secret", new SearchRequest("when does Falcon launch") { Mode = RetrievalMode.Bm25 }, null))[0];
        Assert.Equal(sentence + ".", hit.Citation.Text);
        Assert.False(FileContains(Path.Combine(dir.Path, "knowledge.db"), sentence));
        var stored = Directory.GetFiles(Path.Combine(dir.Path, "collections", c.Id.ToString(System.Globalization.CultureInfo.InvariantCulture), "documents")).Single();
        Assert.StartsWith("enc1:" + algorithm + ":", File.ReadAllText(stored), StringComparison.Ordinal);
        Assert.True(File.Exists(Path.Combine(dir.Path, "keys", "knowledge.keys")));
        await using (var db = kb.Store.CreateContext())
        {
            Assert.All(await db.Chunks.ToListAsync(), x => Assert.StartsWith("enc1:", x.Text, StringComparison.Ordinal));
        }
    }

    [Fact]
    public async Task A_job_interrupted_in_the_embed_step_resumes_after_a_restart_without_redoing_earlier_steps()
    {
        var flaky = new InterruptOnceEmbedder();
        var kb = await OpenAsync(flaky);
        await kb.CreateCollectionAsync(new CollectionSpec("ops") { EmbeddingModel = TinyModel }, "alice");
        var job = await kb.SubmitAsync("ops", "runbook.md", Utf8("# Runbook\n\nRestart the gateway with systemctl.\n\n## Rollback\n\nUse the previous release tarball."), null);
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => kb.RunJobAsync(job.Id));
        var interrupted = await kb.GetJobAsync(job.Id, null);
        Assert.Equal(JobStatus.Running, interrupted.Status);
        Assert.Equal(IngestStage.Chunked, interrupted.Stage);
        Assert.Empty(await kb.SearchAsync("ops", new SearchRequest("restart gateway") { Mode = RetrievalMode.Bm25 }, null));
        long[] chunkIds;
        await using (var db = kb.Store.CreateContext())
        {
            chunkIds = [.. db.Chunks.Select(x => x.Id)];
        }

        await kb.DisposeAsync();

        await using var restarted = await OpenAsync(flaky);
        Assert.Equal([job.Id], await restarted.UnfinishedJobsAsync());
        var done = await restarted.RunJobAsync(job.Id);
        Assert.Equal(JobStatus.Succeeded, done.Status);
        await using (var db = restarted.Store.CreateContext())
        {
            Assert.Equal(chunkIds, db.Chunks.Select(x => x.Id).ToArray());
        }

        var hits = await restarted.SearchAsync("ops", new SearchRequest("restart the gateway") { Mode = RetrievalMode.Hybrid }, null);
        Assert.Equal("Runbook", hits[0].Citation.Heading);
        Assert.Empty(await restarted.UnfinishedJobsAsync());
    }

    private sealed class InterruptOnceEmbedder : IEmbeddingGenerator<string, Embedding<float>>, IEmbeddingModelProvider
    {
        private readonly HashedBagOfWordsEmbedder inner = new();
        private bool interrupted;

        public IEmbeddingGenerator<string, Embedding<float>>? Get(string modelDirectory) => this;

        public Task<GeneratedEmbeddings<Embedding<float>>> GenerateAsync(IEnumerable<string> values, EmbeddingGenerationOptions? options = null, CancellationToken cancellationToken = default)
        {
            if (!interrupted)
            {
                interrupted = true;
                throw new OperationCanceledException("process stopped");
            }

            return inner.GenerateAsync(values, options, cancellationToken);
        }

        public object? GetService(Type serviceType, object? serviceKey = null) => null;

        public void Dispose()
        {
        }
    }

    [Fact]
    public async Task Rerank_reorders_candidates_by_the_rerankers_scores_and_the_threshold_cuts()
    {
        var reranker = new LengthReranker();
        await using var kb = await OpenAsync(reranker: reranker);
        await kb.CreateCollectionAsync(new CollectionSpec("kb"), "alice");
        await kb.IngestAsync("kb", "a.md", Utf8("# A\n\nbackup policy.\n\n# B\n\nThe backup policy keeps thirty daily copies offsite.\n\n# C\n\nbackup"), null);
        var hits = await kb.SearchAsync("kb", new SearchRequest("backup policy") { Mode = RetrievalMode.Bm25, Rerank = true }, null);
        Assert.Equal(["B", "A", "C"], hits.Select(h => h.Citation.Heading));
        Assert.Equal(hits.Select(h => (float)h.Citation.Text.Length), hits.Select(h => h.Score));
        var cut = await kb.SearchAsync("kb", new SearchRequest("backup policy") { Mode = RetrievalMode.Bm25, Rerank = true, MinScore = 10 }, null);
        Assert.Equal(["B", "A"], cut.Select(h => h.Citation.Heading));
    }

    /// <summary>A reranker double scoring passages by length: only checks that scores are applied in order.</summary>
    private sealed class LengthReranker : IReranker
    {
        public Task<IReadOnlyList<float>> ScoreAsync(string query, IReadOnlyList<string> passages, CancellationToken cancellationToken) =>
            Task.FromResult<IReadOnlyList<float>>([.. passages.Select(p => (float)p.Length)]);
    }

    [Fact]
    public async Task Bad_requests_are_refused_with_what_is_wrong_and_nothing_stored_is_lost()
    {
        await using var kb = await OpenAsync();
        await kb.CreateCollectionAsync(new CollectionSpec("kb"), "alice");
        await kb.IngestAsync("kb", "a.md", Utf8("# A\n\nalpha text"), null);
        Assert.Contains("already exists", (await Assert.ThrowsAsync<KnowledgeException>(() => kb.CreateCollectionAsync(new CollectionSpec("kb"), "bob"))).Message, StringComparison.Ordinal);
        Assert.Contains("collection name", (await Assert.ThrowsAsync<KnowledgeException>(() => kb.CreateCollectionAsync(new CollectionSpec("../x"), "bob"))).Message, StringComparison.Ordinal);
        Assert.Contains("pii policy", (await Assert.ThrowsAsync<KnowledgeException>(() => kb.CreateCollectionAsync(new CollectionSpec("y") { PiiPolicy = "shred" }, "bob"))).Message, StringComparison.Ordinal);
        Assert.Contains("has no tokenizer.json", (await Assert.ThrowsAsync<KnowledgeException>(() => kb.CreateCollectionAsync(new CollectionSpec("z") { EmbeddingModel = dir.Path }, "bob"))).Message, StringComparison.Ordinal);
        Assert.Contains("unsupported file type '.exe'", (await Assert.ThrowsAsync<KnowledgeException>(() => kb.SubmitAsync("kb", "tool.exe", [1], null))).Message, StringComparison.Ordinal);
        Assert.Contains("top_k", (await Assert.ThrowsAsync<KnowledgeException>(() => kb.SearchAsync("kb", new SearchRequest("a") { TopK = 0 }, null))).Message, StringComparison.Ordinal);
        Assert.Contains("no embedding model", (await Assert.ThrowsAsync<KnowledgeException>(() => kb.SearchAsync("kb", new SearchRequest("a") { Mode = RetrievalMode.Dense }, null))).Message, StringComparison.Ordinal);

        // A corrupt replacement fails its job and leaves the current version searchable.
        await kb.IngestAsync("kb", "rows.csv", Utf8("name,city\nalpha,Shanghai\n"), null);
        var broken = await kb.IngestAsync("kb", "rows.csv", Utf8("name,city\n\"alpha,Beijing\n"), null);
        Assert.Equal(JobStatus.Failed, broken.Status);
        Assert.Contains("unterminated quoted field", broken.Error, StringComparison.Ordinal);
        var failedPdf = await kb.IngestAsync("kb", "b.pdf", Utf8("%PDF-1.7 garbage"), null);
        Assert.Equal(JobStatus.Failed, failedPdf.Status);
        Assert.Contains("b.pdf", failedPdf.Error, StringComparison.Ordinal);
        var rows = await kb.SearchAsync("kb", new SearchRequest("alpha city") { Mode = RetrievalMode.Bm25 }, null);
        Assert.Contains(rows, h => h.Citation.Text == "name: alpha; city: Shanghai");
        Assert.Equal(DocumentStatus.Ready, (await kb.ListDocumentsAsync("kb", null)).Single(d => d.Source == "rows.csv").Status);
    }
}
