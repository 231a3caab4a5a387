using System.ClientModel;
using System.Text.Json.Nodes;
using Enclave.Engine.Tests.Encoders;
using Enclave.Server.Tests.Support;
using OpenAI.Embeddings;

namespace Enclave.Server.Tests;

/// <summary>
/// /v1/embeddings through the official OpenAI SDK and /v1/rerank, /rerank over HTTP, against a real server with the
/// encoder fixtures; the numbers are checked against the transformers references.
/// </summary>
public sealed class EmbeddingAndRerankTests : IAsyncLifetime
{
    private const double Tolerance = 1e-4;
    private TestServer server = null!;
    private string matryoshkaDirectory = null!;

    public async Task InitializeAsync()
    {
        // A copy of tiny-bge-m3 that declares Matryoshka training, so 'dimensions' is allowed for it.
        matryoshkaDirectory = Path.Combine(Path.GetTempPath(), "enclave-matryoshka-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(matryoshkaDirectory);
        foreach (var file in Directory.EnumerateFiles(EncoderFixtures.Directory("tiny-bge-m3"), "*", SearchOption.AllDirectories))
        {
            var target = Path.Combine(matryoshkaDirectory, Path.GetRelativePath(EncoderFixtures.Directory("tiny-bge-m3"), file));
            Directory.CreateDirectory(Path.GetDirectoryName(target)!);
            File.Copy(file, target);
        }

        var config = JsonNode.Parse(File.ReadAllText(Path.Combine(matryoshkaDirectory, "config.json")))!.AsObject();
        config["matryoshka_dimensions"] = new JsonArray(64, 32, 16);
        File.WriteAllText(Path.Combine(matryoshkaDirectory, "config.json"), config.ToJsonString());

        server = await TestServer.StartAsync(options =>
        {
            options.EmbeddingModels.Add(new("bge-bert", EncoderFixtures.Directory("tiny-bge-bert")));
            options.EmbeddingModels.Add(new("bge-m3", EncoderFixtures.Directory("tiny-bge-m3")));
            options.EmbeddingModels.Add(new("bge-m3-matryoshka", matryoshkaDirectory));
            options.RerankModels.Add(new("bge-reranker", EncoderFixtures.Directory(EncoderFixtures.RerankerName)));
            options.Encoders = new Enclave.Engine.Embeddings.EncoderOptions { MaxInputsPerRequest = 8, MaxBatchTokens = 256 };
        });
    }

    public async Task DisposeAsync()
    {
        await server.DisposeAsync();
        Directory.Delete(matryoshkaDirectory, recursive: true);
    }

    [Theory]
    [InlineData("bge-bert", "tiny-bge-bert")]
    [InlineData("bge-m3", "tiny-bge-m3")]
    public async Task Sdk_embeddings_equal_transformers_with_usage(string served, string fixture)
    {
        var reference = EncoderFixtures.Load(fixture);
        var texts = reference.Cases.Select(c => c.Text!).Where(t => t.Length > 0).ToArray();
        var client = server.Sdk().GetEmbeddingClient(served);
        OpenAIEmbeddingCollection result = await client.GenerateEmbeddingsAsync(texts);
        Assert.Equal(served, result.Model);
        Assert.Equal(texts.Length, result.Count);
        Assert.Equal(reference.Cases.Where(c => c.Text!.Length > 0).Sum(c => c.Ids.Length), result.Usage.InputTokenCount);
        for (var i = 0; i < texts.Length; i++)
        {
            Assert.Equal(i, result[i].Index);
            AssertClose(reference.Cases[i].Embedding, result[i].ToFloats().Span, $"{served} '{texts[i]}'");
        }
    }

    [Fact]
    public async Task Float_and_base64_formats_carry_the_same_vector()
    {
        var reference = EncoderFixtures.Load("tiny-bge-bert");
        var asFloat = await server.PostAsync("v1/embeddings", new JsonObject { ["model"] = "bge-bert", ["input"] = reference.Cases[1].Text, ["encoding_format"] = "float" });
        Assert.Equal(200, asFloat.Status);
        var floats = asFloat.Body!["data"]![0]!["embedding"]!.AsArray().Select(v => v!.GetValue<float>()).ToArray();
        AssertClose(reference.Cases[1].Embedding, floats, "float format");
        Assert.Equal(reference.Cases[1].Ids.Length, asFloat.Body["usage"]!["prompt_tokens"]!.GetValue<int>());
        Assert.Null(asFloat.Body["warnings"]);

        var asBase64 = await server.PostAsync("v1/embeddings", new JsonObject { ["model"] = "bge-bert", ["input"] = reference.Cases[1].Text, ["encoding_format"] = "base64" });
        var bytes = Convert.FromBase64String(asBase64.Body!["data"]![0]!["embedding"]!.GetValue<string>());
        Assert.Equal(floats, System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(bytes).ToArray());
    }

    [Fact]
    public async Task Token_id_inputs_embed_like_the_text_they_came_from()
    {
        var reference = EncoderFixtures.Load("tiny-bge-m3");
        var client = server.Sdk().GetEmbeddingClient("bge-m3");
        OpenAIEmbeddingCollection result = await client.GenerateEmbeddingsAsync([reference.Cases[0].Ids.AsMemory(), reference.Cases[3].Ids.AsMemory()]);
        AssertClose(reference.Cases[0].Embedding, result[0].ToFloats().Span, "token ids of case 0");
        AssertClose(reference.Cases[3].Embedding, result[1].ToFloats().Span, "token ids of case 3");
        Assert.Equal(reference.Cases[0].Ids.Length + reference.Cases[3].Ids.Length, result.Usage.InputTokenCount);
    }

    [Fact]
    public async Task Dimensions_shorten_and_renormalise_only_where_the_model_allows_it()
    {
        var client = server.Sdk().GetEmbeddingClient("bge-m3-matryoshka");
        var full = (await client.GenerateEmbeddingAsync("混合检索")).Value.ToFloats().ToArray();
        var shortened = (await client.GenerateEmbeddingAsync("混合检索", new EmbeddingGenerationOptions { Dimensions = 16 })).Value.ToFloats().ToArray();
        Assert.Equal(16, shortened.Length);
        var norm = Math.Sqrt(full.Take(16).Sum(v => (double)v * v));
        AssertClose([.. full.Take(16).Select(v => (float)(v / norm))], shortened, "first 16 values, renormalised");

        var listed = await Assert.ThrowsAsync<ClientResultException>(() => client.GenerateEmbeddingAsync("x", new EmbeddingGenerationOptions { Dimensions = 20 }));
        Assert.Equal(400, listed.Status);
        Assert.Contains("64, 32, 16", listed.Message, StringComparison.Ordinal);

        var plain = server.Sdk().GetEmbeddingClient("bge-bert");
        var refused = await Assert.ThrowsAsync<ClientResultException>(() => plain.GenerateEmbeddingAsync("x", new EmbeddingGenerationOptions { Dimensions = 32 }));
        Assert.Equal(400, refused.Status);
        Assert.Contains("matryoshka", refused.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Long_inputs_are_truncated_with_a_warning()
    {
        var text = string.Join(' ', Enumerable.Repeat("private deployment keeps data inside the network", 60));
        var (status, body, _) = await server.PostAsync("v1/embeddings", new JsonObject { ["model"] = "bge-bert", ["input"] = new JsonArray(text, "short") });
        Assert.Equal(200, status);
        Assert.Contains("1 of 2 inputs were longer than the model's 128 tokens", body!["warnings"]![0]!.GetValue<string>(), StringComparison.Ordinal);
    }

    public static TheoryData<string, int, string, string> BadEmbeddingRequests() => new()
    {
        { "{\"model\":\"bge-bert\",\"input\":\"\"}", 400, "input", "empty string" },
        { "{\"model\":\"bge-bert\",\"input\":[]}", 400, "input", "empty array" },
        { "{\"model\":\"bge-bert\",\"input\":[\"a\",\"\"]}", 400, "input", "input[1]" },
        { "{\"model\":\"bge-bert\",\"input\":[[1,2],[]]}", 400, "input", "input[1]" },
        { "{\"model\":\"bge-bert\",\"input\":[1,2,99999]}", 400, "input", "between" },
        { "{\"model\":\"bge-bert\",\"input\":{\"a\":1}}", 400, "input", "array of strings" },
        { "{\"model\":\"bge-bert\"}", 400, "input", "required" },
        { "{\"model\":\"bge-bert\",\"input\":[\"1\",\"2\",\"3\",\"4\",\"5\",\"6\",\"7\",\"8\",\"9\"]}", 400, "input", "at most 8" },
        { "{\"model\":\"bge-bert\",\"input\":\"x\",\"encoding_format\":\"int8\"}", 400, "encoding_format", "base64" },
        { "{\"model\":\"bge-bert\",\"input\":\"x\",\"dimensions\":0}", 400, "dimensions", "" },
        { "{\"model\":\"nope\",\"input\":\"x\"}", 404, "model", "does not exist" },
        { "{\"model\":\"tiny-qwen3\",\"input\":\"x\"}", 400, "model", "generative" },
        { "{\"model\":\"bge-reranker\",\"input\":\"x\"}", 400, "model", "rerank" },
        { "{\"input\":\"x\"}", 400, "model", "more than one" },
    };

    [Theory]
    [MemberData(nameof(BadEmbeddingRequests))]
    public async Task Bad_embedding_requests_get_an_openai_error(string json, int status, string param, string message)
    {
        var (actual, body, _) = await server.PostAsync("v1/embeddings", json);
        Assert.Equal(status, actual);
        var error = body!["error"]!;
        Assert.Equal(param, error["param"]?.GetValue<string>());
        Assert.Contains(message, error["message"]!.GetValue<string>(), StringComparison.Ordinal);
        Assert.NotNull(error["type"]);
    }

    [Theory]
    [InlineData("v1/rerank")]
    [InlineData("rerank")]
    public async Task Rerank_sorts_documents_by_the_cross_encoder_score(string path)
    {
        var reference = EncoderFixtures.Load(EncoderFixtures.RerankerName);
        var cases = reference.Cases.Where(c => c.Query == reference.Cases[2].Query).ToArray();
        var documents = cases.Select(c => c.Passage!).ToArray();
        var (status, body, _) = await server.PostAsync(path, new JsonObject
        {
            ["model"] = "bge-reranker",
            ["query"] = cases[0].Query,
            ["documents"] = new JsonArray([.. documents.Select(d => (JsonNode)d)]),
        });
        Assert.Equal(200, status);
        Assert.Equal("bge-reranker", body!["model"]!.GetValue<string>());
        Assert.Equal(cases.Sum(c => c.Ids.Length), body["usage"]!["total_tokens"]!.GetValue<int>());
        var results = body["results"]!.AsArray();
        Assert.Equal(documents.Length, results.Count);
        var scores = results.Select(r => r!["relevance_score"]!.GetValue<double>()).ToArray();
        Assert.Equal(scores.OrderByDescending(s => s), scores);
        foreach (var r in results)
        {
            var index = r!["index"]!.GetValue<int>();
            var expected = 1 / (1 + Math.Exp(-cases[index].Score));
            Assert.True(Math.Abs(expected - r["relevance_score"]!.GetValue<double>()) <= Tolerance, $"document {index}: {r["relevance_score"]} vs {expected}");
            Assert.Equal(documents[index], r["document"]!["text"]!.GetValue<string>());
        }
    }

    [Fact]
    public async Task Rerank_honours_top_n_and_return_documents()
    {
        var (status, body, _) = await server.PostAsync("v1/rerank", new JsonObject
        {
            ["query"] = "什么是私有化部署？",
            ["documents"] = new JsonArray("私有化部署是指模型和数据都运行在企业自己的服务器上。", "今天的天气很好，适合出去散步。", "API keys are hashed."),
            ["top_n"] = 2,
            ["return_documents"] = false,
        });
        Assert.Equal(200, status);
        var results = body!["results"]!.AsArray();
        Assert.Equal(2, results.Count);
        Assert.All(results, r => Assert.Null(r!["document"]));
    }

    public static TheoryData<string, int, string, string> BadRerankRequests() => new()
    {
        { "{\"model\":\"bge-reranker\",\"query\":\"q\",\"documents\":[]}", 400, "documents", "must not be empty" },
        { "{\"model\":\"bge-reranker\",\"documents\":[\"a\"]}", 400, "query", "required" },
        { "{\"model\":\"bge-reranker\",\"query\":\"q\"}", 400, "documents", "required" },
        { "{\"model\":\"bge-reranker\",\"query\":\"q\",\"documents\":[1]}", 400, "documents", "documents[0]" },
        { "{\"model\":\"bge-reranker\",\"query\":\"q\",\"documents\":[\"a\"],\"top_n\":0}", 400, "top_n", "" },
        { "{\"model\":\"bge-reranker\",\"query\":\"q\",\"documents\":[\"1\",\"2\",\"3\",\"4\",\"5\",\"6\",\"7\",\"8\",\"9\"]}", 400, "documents", "at most 8" },
        { "{\"model\":\"bge-bert\",\"query\":\"q\",\"documents\":[\"a\"]}", 400, "model", "embedding" },
        { "{\"model\":\"nope\",\"query\":\"q\",\"documents\":[\"a\"]}", 404, "model", "does not exist" },
    };

    [Theory]
    [MemberData(nameof(BadRerankRequests))]
    public async Task Bad_rerank_requests_get_an_openai_error(string json, int status, string param, string message)
    {
        var (actual, body, _) = await server.PostAsync("v1/rerank", json);
        Assert.Equal(status, actual);
        Assert.Equal(param, body!["error"]!["param"]?.GetValue<string>());
        Assert.Contains(message, body["error"]!["message"]!.GetValue<string>(), StringComparison.Ordinal);
    }

    [Fact]
    public async Task Models_list_says_what_each_model_is_for()
    {
        var models = await server.Sdk().GetOpenAIModelClient().GetModelsAsync();
        Assert.Contains(models.Value, m => m.Id == "bge-m3");
        var body = JsonNode.Parse(await server.Http.GetStringAsync("v1/models"))!;
        var types = body["data"]!.AsArray().ToDictionary(m => m!["id"]!.GetValue<string>(), m => m!["type"]!.GetValue<string>());
        Assert.Equal("embedding", types["bge-bert"]);
        Assert.Equal("rerank", types["bge-reranker"]);
        Assert.Equal("generate", types["tiny-qwen3"]);
    }

    [Fact]
    public async Task Chat_with_an_embedding_model_is_refused_plainly()
    {
        var (status, body, _) = await server.PostAsync("v1/chat/completions", "{\"model\":\"bge-m3\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}");
        Assert.Equal(400, status);
        Assert.Contains("embedding model", body!["error"]!["message"]!.GetValue<string>(), StringComparison.Ordinal);
    }

    private static void AssertClose(ReadOnlySpan<float> expected, ReadOnlySpan<float> actual, string what)
    {
        Assert.Equal(expected.Length, actual.Length);
        double max = 0;
        for (var i = 0; i < expected.Length; i++)
        {
            max = Math.Max(max, Math.Abs(expected[i] - actual[i]));
        }

        Assert.True(max <= Tolerance, $"{what}: max abs error {max:E2}");
    }
}
