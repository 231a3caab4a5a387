using Enclave.Engine.Embeddings;
using Enclave.Engine.Formats;
using Enclave.Engine.Models;
using Enclave.Engine.Tests.Support;
using Microsoft.Extensions.AI;

namespace Enclave.Engine.Tests.Encoders;

/// <summary>
/// Embedding and rerank fixtures against transformers: the first token's hidden state and the pooled, normalised
/// embedding within 1e-4 (max abs) on the reference and CPU backends, one input at a time and all at once.
/// </summary>
public sealed class EncoderParityTests
{
    private const double Tolerance = 1e-4;

    public static TheoryData<string, string> EmbedderCases()
    {
        var data = new TheoryData<string, string>();
        foreach (var model in EncoderFixtures.EmbedderNames)
        {
            foreach (var backend in new[] { "reference", "cpu" })
            {
                data.Add(model, backend);
            }
        }

        return data;
    }

    public static TheoryData<string> CpuAndReference() => ["reference", "cpu"];

    [Theory]
    [MemberData(nameof(EmbedderCases))]
    public void First_token_hidden_state_matches_transformers(string model, string backendName)
    {
        using var backend = BackendFactory.Create(backendName);
        var directory = EncoderFixtures.Directory(model);
        var config = ModelConfig.Load(directory);
        using var weights = SafetensorsCheckpoint.Open(directory);
        using var encoder = ModelRegistry.CreateEncoder(config, weights, backend);
        var reference = EncoderFixtures.Load(model);
        Assert.Equal(reference.Architecture, config.Architecture);
        foreach (var c in reference.Cases)
        {
            var batch = EncoderBatch.Pack([c.Ids]);
            var hidden = new float[c.Ids.Length * config.HiddenSize];
            backend.Download(encoder.Forward(batch), hidden);
            AssertClose(c.FirstHidden, hidden.AsSpan(0, config.HiddenSize), $"{model} '{c.Text}' first hidden state");
        }
    }

    [Theory]
    [MemberData(nameof(EmbedderCases))]
    public async Task Embeddings_match_transformers_singly_and_batched(string model, string backendName)
    {
        using var backend = BackendFactory.Create(backendName);
        using var embedder = EncoderModel.Load(EncoderFixtures.Directory(model), backend);
        var reference = EncoderFixtures.Load(model);
        Assert.Equal(reference.Pooling == "cls" ? PoolingMode.Cls : PoolingMode.Mean, embedder.Sentence.Pooling);
        Assert.True(embedder.Sentence.Normalize);

        var texts = reference.Cases.Select(c => c.Text!).ToArray();
        var batched = await embedder.EmbedAsync(texts);
        Assert.Equal(reference.Cases.Sum(c => c.Ids.Length), batched.PromptTokens);
        Assert.Equal(0, batched.TruncatedInputs);
        for (var i = 0; i < texts.Length; i++)
        {
            var single = await embedder.EmbedAsync([texts[i]]);
            AssertClose(reference.Cases[i].Embedding, single.Vectors[0], $"{model} '{texts[i]}' alone");
            AssertClose(reference.Cases[i].Embedding, batched.Vectors[i], $"{model} '{texts[i]}' in a batch");
            Assert.True(single.Vectors[0].Zip(batched.Vectors[i]).All(p => Math.Abs(p.First - p.Second) <= 1e-5),
                $"{model} '{texts[i]}': batched and single embeddings differ");
        }
    }

    [Fact]
    public async Task Small_batch_limits_split_a_request_into_several_passes_with_the_same_result()
    {
        using var backend = BackendFactory.Create("cpu");
        var directory = EncoderFixtures.Directory("tiny-bge-m3");
        using var small = EncoderModel.Load(directory, backend, new EncoderOptions { MaxBatchTokens = 160, MaxBatchSequences = 2 });
        var reference = EncoderFixtures.Load("tiny-bge-m3");
        var result = await small.EmbedAsync([.. reference.Cases.Select(c => c.Text!)]);
        for (var i = 0; i < reference.Cases.Count; i++)
        {
            AssertClose(reference.Cases[i].Embedding, result.Vectors[i], $"case {i} in passes of two");
        }
    }

    [Theory]
    [MemberData(nameof(CpuAndReference))]
    public async Task Reranker_scores_match_transformers(string backendName)
    {
        using var backend = BackendFactory.Create(backendName);
        using var reranker = RerankerModel.Load(EncoderFixtures.Directory(EncoderFixtures.RerankerName), backend);
        var reference = EncoderFixtures.Load(EncoderFixtures.RerankerName);
        foreach (var group in reference.Cases.GroupBy(c => c.Query!))
        {
            var passages = group.Select(c => c.Passage!).ToArray();
            var result = await reranker.RerankAsync(group.Key, passages);
            var scores = await reranker.ScoreAsync(group.Key, passages);
            var expected = group.ToArray();
            Assert.Equal(expected.Sum(c => c.Ids.Length), result.PromptTokens);
            for (var i = 0; i < expected.Length; i++)
            {
                Assert.True(Math.Abs(expected[i].Score - result.Logits[i]) <= Tolerance, $"'{group.Key}' / '{passages[i]}': logit {result.Logits[i]} vs {expected[i].Score}");
                var sigmoid = 1 / (1 + Math.Exp(-expected[i].Score));
                Assert.True(Math.Abs(sigmoid - scores[i]) <= Tolerance, $"score {scores[i]} vs sigmoid {sigmoid}");
            }

            // One pair at a time gives the same logit as the batch.
            var alone = await reranker.RerankAsync(group.Key, [passages[^1]]);
            Assert.True(Math.Abs(alone.Logits[0] - result.Logits[^1]) <= 1e-5);
        }
    }

    [Fact]
    public async Task Works_through_the_embedding_generator_interface()
    {
        using var backend = BackendFactory.Create("cpu");
        using var model = EncoderModel.Load(EncoderFixtures.Directory("tiny-bge-bert"), backend);
        IEmbeddingGenerator<string, Embedding<float>> generator = model;
        var reference = EncoderFixtures.Load("tiny-bge-bert");
        var generated = await generator.GenerateAsync([reference.Cases[0].Text!, reference.Cases[1].Text!]);
        Assert.Equal(2, generated.Count);
        AssertClose(reference.Cases[1].Embedding, generated[1].Vector.Span, "through IEmbeddingGenerator");
        Assert.Equal(reference.Cases[0].Ids.Length + reference.Cases[1].Ids.Length, generated.Usage!.InputTokenCount);
        var metadata = generator.GetService<EmbeddingGeneratorMetadata>();
        Assert.Equal("tiny-bge-bert", metadata!.DefaultModelId);
        Assert.Equal(64, metadata.DefaultModelDimensions);
        var single = await generator.GenerateVectorAsync(reference.Cases[2].Text!);
        AssertClose(reference.Cases[2].Embedding, single.Span, "GenerateVectorAsync");
    }

    [Fact]
    public async Task Concurrent_requests_get_the_same_vectors_as_sequential_ones()
    {
        using var backend = BackendFactory.Create("cpu");
        using var model = EncoderModel.Load(EncoderFixtures.Directory("tiny-bge-m3"), backend, new EncoderOptions { MaxBatchTokens = 200 });
        var reference = EncoderFixtures.Load("tiny-bge-m3");
        var tasks = Enumerable.Range(0, 16).Select(i => Task.Run(() => model.EmbedAsync([reference.Cases[i % reference.Cases.Count].Text!]))).ToArray();
        var results = await Task.WhenAll(tasks);
        for (var i = 0; i < results.Length; i++)
        {
            AssertClose(reference.Cases[i % reference.Cases.Count].Embedding, results[i].Vectors[0], $"concurrent request {i}");
        }
    }

    [Fact]
    public async Task Long_inputs_are_truncated_to_max_seq_length_and_counted()
    {
        using var backend = BackendFactory.Create("cpu");
        using var model = EncoderModel.Load(EncoderFixtures.Directory("tiny-bge-bert"), backend);
        Assert.Equal(128, model.MaxInputTokens);
        var longText = string.Join(' ', Enumerable.Repeat("private deployment keeps data inside the network", 60));
        var result = await model.EmbedAsync([longText, "short"]);
        Assert.Equal(1, result.TruncatedInputs);
        Assert.Equal(128 + model.Tokenizer.Encode("short", addSpecialTokens: true).Length, result.PromptTokens);
        // The truncated input embeds exactly like its first 126 tokens wrapped in [CLS] ... [SEP].
        var kept = model.Tokenizer.AddSpecialTokens(model.Tokenizer.Encode(longText)[..126]).Ids;
        var byIds = await model.EmbedTokensAsync([kept]);
        AssertClose(byIds.Vectors[0], result.Vectors[0], "truncated text vs its kept tokens");
    }

    [Fact]
    public async Task Dimensions_are_refused_for_a_model_without_matryoshka_training()
    {
        using var backend = BackendFactory.Create("cpu");
        using var model = EncoderModel.Load(EncoderFixtures.Directory("tiny-bge-bert"), backend);
        var error = await Assert.ThrowsAsync<ArgumentException>(() => model.EmbedAsync(["x"], dimensions: 32));
        Assert.Contains("matryoshka", error.Message, StringComparison.Ordinal);
        Assert.Null(model.CheckDimensions(64));
    }

    [Fact]
    public void Loading_a_reranker_as_an_embedder_says_which_flag_to_use()
    {
        using var backend = BackendFactory.Create("reference");
        var error = Assert.Throws<ModelConfigException>(() => EncoderModel.Load(EncoderFixtures.Directory(EncoderFixtures.RerankerName), backend));
        Assert.Contains("--rerank-model", error.Message, StringComparison.Ordinal);
        var other = Assert.Throws<ModelConfigException>(() => RerankerModel.Load(EncoderFixtures.Directory("tiny-bge-bert"), backend));
        Assert.Contains("--embedding-model", other.Message, StringComparison.Ordinal);
    }

    private static void AssertClose(ReadOnlySpan<float> expected, ReadOnlySpan<float> actual, string what)
    {
        Assert.Equal(expected.Length, actual.Length);
        double max = 0;
        for (var i = 0; i < expected.Length; i++)
        {
            max = Math.Max(max, Math.Abs(expected[i] - actual[i]));
        }

        Assert.True(max <= Tolerance, $"{what}: max abs error {max:E2} > {Tolerance:E0}");
    }
}
