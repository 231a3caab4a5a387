using Enclave.Engine.Tests.Support;
using Enclave.Operations.Registry;
using Enclave.Operations.Tests.Support;

namespace Enclave.Operations.Tests;

/// <summary><c>enclave pull</c> against a real loopback hub, and the store's list/verify/rm.</summary>
public sealed class RegistryTests
{
    private const string Repo = "enclave-test/tiny-qwen3";
    private static readonly string Fixture = Fixtures.Model("tiny-qwen3");

    private static (ModelPuller Puller, HttpClient Http) Puller(ModelStore store, FixtureHub hub, HubLayout layout = HubLayout.HuggingFace)
    {
        var http = new HttpClient();
        return (new ModelPuller(store, new HubClient(http, hub.Endpoint, layout)), http);
    }

    [Fact]
    public async Task PullInstallsEveryFileVerifiedAndResumesAfterADroppedConnection()
    {
        using var home = new TempDir();
        await using var hub = await FixtureHub.StartAsync(Repo, Fixture);
        hub.DropOnce = ("model.safetensors", 200_000);
        var store = new ModelStore(home.Path);
        var (puller, http) = Puller(store, hub);
        using var _ = http;
        var updates = 0;
        var record = await puller.PullAsync(Repo, null, new PullOptions { Progress = new Counter(() => Interlocked.Increment(ref updates)), RetryDelay = TimeSpan.FromMilliseconds(10) }, CancellationToken.None);

        Assert.Equal("tiny-qwen3", record.Name);
        Assert.Equal(FixtureHub.Commit, record.Commit);
        foreach (var file in Directory.GetFiles(Fixture))
        {
            Assert.Equal(File.ReadAllBytes(file), File.ReadAllBytes(Path.Combine(store.PathOf("tiny-qwen3"), Path.GetFileName(file))));
        }

        // The first request had no Range; the second continued from where the dropped one stopped.
        var weights = hub.Downloads.Where(d => d.Path == "model.safetensors").ToList();
        Assert.Equal(2, weights.Count);
        Assert.Null(weights[0].Range);
        Assert.NotNull(weights[1].Range);
        var resumedAt = long.Parse(weights[1].Range!["bytes=".Length..^1], System.Globalization.CultureInfo.InvariantCulture);
        Assert.InRange(resumedAt, 1, 200_000);
        Assert.Equal(200_000, resumedAt);
        Assert.All(hub.Downloads.Where(d => d.Path != "model.safetensors"), d => Assert.Null(d.Range));
        Assert.True(updates > 0);
        Assert.Empty(store.Verify("tiny-qwen3"));
        Assert.Equal(["tiny-qwen3"], store.List().Select(m => m.Name));
    }

    [Theory]
    [InlineData("model.safetensors")] // LFS file: checked against the listed SHA-256
    [InlineData("tokenizer.json")] // plain git file: checked against the git blob SHA-1
    public async Task ACorruptedDownloadFailsNamingTheFileAndInstallsNothing(string corrupt)
    {
        using var home = new TempDir();
        await using var hub = await FixtureHub.StartAsync(Repo, Fixture);
        hub.Corrupt = corrupt;
        var store = new ModelStore(home.Path);
        var (puller, http) = Puller(store, hub);
        using var _ = http;

        var e = await Assert.ThrowsAsync<ModelIntegrityException>(() => puller.PullAsync(Repo, null, new PullOptions(), CancellationToken.None));
        Assert.StartsWith(corrupt + ": verification failed", e.Message);
        Assert.Empty(store.List());
        Assert.False(Directory.Exists(store.PathOf("tiny-qwen3")));
        Assert.False(Directory.Exists(store.StagingPath("tiny-qwen3")));
    }

    [Fact]
    public async Task IncludePatternsSelectFilesAndTheModelScopeLayoutWorks()
    {
        using var home = new TempDir();
        await using var hub = await FixtureHub.StartAsync(Repo, Fixture);
        var store = new ModelStore(home.Path);
        var (puller, http) = Puller(store, hub, HubLayout.ModelScope);
        using var _ = http;
        var record = await puller.PullAsync(Repo + "@master", "configs-only", new PullOptions { Include = ["*.json"] }, CancellationToken.None);

        Assert.Equal(["config.json", "generation_config.json", "reference.json", "tokenizer.json", "tokenizer_config.json"], record.Files.Select(f => f.Path));
        Assert.DoesNotContain(hub.Downloads, d => d.Path == "model.safetensors");
        var none = await Assert.ThrowsAsync<ArgumentException>(() => puller.PullAsync(Repo, "x", new PullOptions { Include = ["*.gguf"] }, CancellationToken.None));
        Assert.Contains("no file matches --include *.gguf", none.Message);
    }

    [Fact]
    public async Task AnUnknownRepositoryIsAClearError()
    {
        using var home = new TempDir();
        await using var hub = await FixtureHub.StartAsync(Repo, Fixture);
        var (puller, http) = Puller(new ModelStore(home.Path), hub);
        using var _ = http;
        var e = await Assert.ThrowsAsync<IOException>(() => puller.PullAsync("nobody/nothing", null, new PullOptions(), CancellationToken.None));
        Assert.Contains("HTTP 404 (repository or revision not found)", e.Message);
        Assert.Throws<ArgumentException>(() => HubClient.ParseReference("not a repo", HubLayout.HuggingFace));
    }

    [Fact]
    public void VerifyReportsAlteredMissingAndExtraFilesAndRmRemoves()
    {
        using var home = new TempDir();
        var store = new ModelStore(home.Path);
        var staging = store.StagingPath("m");
        Directory.CreateDirectory(staging);
        foreach (var f in Directory.GetFiles(Fixture))
        {
            File.Copy(f, Path.Combine(staging, Path.GetFileName(f)));
        }

        ModelStore.WriteRecord(staging, new ModelRecord { Name = "m", InstalledAt = DateTimeOffset.UtcNow, Files = [] });
        store.InstallFromStaging(staging, "m");
        Assert.Empty(store.Verify("m"));

        var dir = store.PathOf("m");
        var bytes = File.ReadAllBytes(Path.Combine(dir, "model.safetensors"));
        bytes[^1] ^= 1;
        File.WriteAllBytes(Path.Combine(dir, "model.safetensors"), bytes);
        File.Delete(Path.Combine(dir, "config.json"));
        File.WriteAllText(Path.Combine(dir, "extra.bin"), "x");
        var problems = store.Verify("m").ToDictionary(p => p.Path, p => p.Message);
        Assert.Contains("does not match the recorded", problems["model.safetensors"]);
        Assert.Equal("missing", problems["config.json"]);
        Assert.Equal("not part of the recorded model", problems["extra.bin"]);

        store.Remove("m");
        Assert.Empty(store.List());
        Assert.Throws<ArgumentException>(() => store.Remove("m"));
        Assert.Throws<ArgumentException>(() => store.PathOf("../escape"));
    }

    private sealed class Counter(Action tick) : IProgress<PullProgress>
    {
        public void Report(PullProgress value) => tick();
    }
}
