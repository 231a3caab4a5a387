using Enclave.Engine.Backends.Cpu;
using Enclave.Engine.Formats;
using Enclave.Engine.Generation;
using Enclave.Engine.Sampling;
using Enclave.Engine.Tests.Support;
using Enclave.Gateway.Crypto;
using Enclave.Operations.Encryption;
using Enclave.Operations.Tests.Support;
using Microsoft.Extensions.Logging;

namespace Enclave.Operations.Tests;

/// <summary>Weights encrypted at rest load into memory and generate exactly what the plaintext checkpoint does.</summary>
public sealed class EncryptionTests
{
    private static string CopyFixture(TempDir dirs, string name)
    {
        var dir = dirs.Sub(name);
        foreach (var f in Directory.GetFiles(Fixtures.Model("tiny-qwen3")))
        {
            File.Copy(f, Path.Combine(dir, Path.GetFileName(f)));
        }

        return dir;
    }

    private static async Task<int[]> GreedyAsync(string directory, Func<string, IWeightSource>? open, int[] prompt, int tokens)
    {
        await using var lm = LanguageModel.Load(directory, new CpuBackend(2), new EngineOptions(), ownsBackend: true, openWeights: open);
        var ids = new List<int>();
        await foreach (var chunk in lm.GenerateAsync(prompt, new SamplingParams { Temperature = 0, MaxTokens = tokens, IgnoreEos = true, SkipSpecialTokens = false }))
        {
            ids.Add(chunk.TokenId);
        }

        return [.. ids];
    }

    [Theory]
    [InlineData(Aead.Aes256Gcm)]
    [InlineData(Aead.Sm4Gcm)]
    public async Task AnEncryptedCheckpointGeneratesTheSameGreedyTokensAsThePlainOne(string algorithm)
    {
        using var dirs = new TempDir();
        var dir = CopyFixture(dirs, "model");
        var plainBytes = File.ReadAllBytes(Path.Combine(dir, "model.safetensors"));
        var keyFile = Path.Combine(dirs.Path, "models.key");
        FileKeyProvider.AddKey(keyFile);

        // Small chunks so the tiny fixture spans many of them.
        var header = EncryptedCheckpoint.Encrypt(dir, new FileKeyProvider(keyFile), algorithm, chunkSize: 64 * 1024);

        Assert.False(File.Exists(Path.Combine(dir, "model.safetensors")));
        var cipher = File.ReadAllBytes(Path.Combine(dir, "model.safetensors.enc"));
        Assert.Equal(plainBytes.Length + header.Files[0].Chunks * 28, cipher.Length);
        Assert.True(header.Files[0].Chunks > 1);
        Assert.Equal(-1, cipher.AsSpan().IndexOf(plainBytes.AsSpan(8, 64))); // the safetensors header is not readable

        var reference = Fixtures.LoadReference("tiny-qwen3").Cases[0];
        var comparable = reference.GreedyMargins.TakeWhile(m => m >= 1e-3).Count();
        var plain = await GreedyAsync(Fixtures.Model("tiny-qwen3"), null, reference.PromptIds, comparable);
        var encrypted = await GreedyAsync(dir, d => EncryptedWeightSource.Open(d, new FileKeyProvider(keyFile)), reference.PromptIds, comparable);

        Assert.Equal(reference.GreedyIds.Take(comparable), plain);
        Assert.Equal(plain, encrypted);
    }

    [Fact]
    public void AnAlteredChunkOrTheWrongKeyIsRefusedClearly()
    {
        using var dirs = new TempDir();
        var dir = CopyFixture(dirs, "model");
        var keyFile = Path.Combine(dirs.Path, "models.key");
        FileKeyProvider.AddKey(keyFile);
        EncryptedCheckpoint.Encrypt(dir, new FileKeyProvider(keyFile), Aead.Aes256Gcm, chunkSize: 64 * 1024);

        var otherKey = Path.Combine(dirs.Path, "other.key");
        FileKeyProvider.AddKey(otherKey);
        var wrong = Assert.ThrowsAny<Exception>(() => EncryptedWeightSource.Open(dir, new FileKeyProvider(otherKey)));
        Assert.Contains("is not in the key file", wrong.Message);

        var path = Path.Combine(dir, "model.safetensors.enc");
        var bytes = File.ReadAllBytes(path);
        bytes[3 * (64 * 1024 + 28) + 100] ^= 1; // inside chunk 3
        File.WriteAllBytes(path, bytes);
        var altered = Assert.Throws<CheckpointFormatException>(() => EncryptedWeightSource.Open(dir, new FileKeyProvider(keyFile)));
        Assert.Contains("chunk 3 of", altered.Message);
        Assert.Contains("fails authentication", altered.Message);

        Assert.Throws<ArgumentException>(() => EncryptedCheckpoint.Encrypt(dir, new FileKeyProvider(keyFile)));
    }

    [Fact]
    public async Task ServeAnswersFromAnEncryptedCheckpointExactlyAsFromThePlainOne()
    {
        using var dirs = new TempDir();
        var dir = CopyFixture(dirs, "model");
        var keyFile = Path.Combine(dirs.Path, "models.key");
        FileKeyProvider.AddKey(keyFile);
        EncryptedCheckpoint.Encrypt(dir, new FileKeyProvider(keyFile), Aead.Aes256Gcm, chunkSize: 64 * 1024);

        var options = new Enclave.Server.Hosting.ServerOptions
        {
            Host = "127.0.0.1",
            Port = 0,
            NoAuth = true,
            BackendFactory = _ => new CpuBackend(threads: 1),
            // What 'enclave serve' installs: encrypted directories open through the key file, others as usual.
            WeightSourceFactory = d => EncryptedCheckpoint.IsEncrypted(d) ? EncryptedWeightSource.Open(d, new FileKeyProvider(keyFile)) : null,
        };
        options.Models.Add(new Enclave.Server.Hosting.ModelSpec("plain", Fixtures.Model("tiny-qwen3")));
        options.Models.Add(new Enclave.Server.Hosting.ModelSpec("encrypted", dir));
        await using var server = await Enclave.Server.Hosting.EnclaveServer.StartAsync(options, b => b.ClearProviders());
        await server.Loading;
        using var http = new HttpClient { BaseAddress = server.Address };

        async Task<string> CompleteAsync(string model)
        {
            var body = $$"""{"model":"{{model}}","prompt":"Hello","max_tokens":6,"temperature":0,"ignore_eos":true}""";
            using var response = await http.PostAsync("/v1/completions", new StringContent(body, System.Text.Encoding.UTF8, "application/json"));
            var text = await response.Content.ReadAsStringAsync();
            Assert.True(response.IsSuccessStatusCode, text);
            using var doc = System.Text.Json.JsonDocument.Parse(text);
            return doc.RootElement.GetProperty("choices")[0].GetProperty("text").GetString()!;
        }

        Assert.Equal(await CompleteAsync("plain"), await CompleteAsync("encrypted"));
    }
}
