using Enclave.Engine.Backends.Cpu;
using Enclave.Engine.Formats;
using Enclave.Engine.Generation;
using Enclave.Engine.Models;
using Enclave.Engine.Sampling;
using Enclave.Engine.Scheduling;
using Enclave.Engine.Tests.Support;

namespace Enclave.Engine.Tests.Generation;

/// <summary>
/// Steps whose rows are all decided by the raw logits and one draw (sampled or greedy, no log-probabilities, penalties
/// or suppressed tokens) choose their tokens with the backend's sampler; seeded requests must give exactly the tokens
/// of the host sampler over downloaded logits, and rows that need the host (log-probabilities, penalties, min_tokens)
/// must still take the host path and behave as before.
/// </summary>
public sealed class BackendSamplingPathTests
{
    private static readonly SamplingParams[] Sampled =
    [
        new() { Temperature = 0.8, Seed = 1, MaxTokens = 16, IgnoreEos = true },
        new() { Temperature = 1.3, TopP = 0.9, Seed = 2, MaxTokens = 16 },
        new() { Temperature = 0.7, TopK = 5, MinP = 0.05, Seed = 3, MaxTokens = 16, IgnoreEos = true },
        new() { Temperature = 1.0, TopK = 40, TopP = 0.5, Seed = 4, MaxTokens = 16 },
        new() { Temperature = 0, MaxTokens = 16, IgnoreEos = true },
    ];

    private static readonly SamplingParams[] HostOnly =
    [
        new() { Temperature = 0.9, Seed = 5, MaxTokens = 12, Logprobs = 2, IgnoreEos = true },
        new() { Temperature = 0.9, Seed = 6, MaxTokens = 12, RepetitionPenalty = 1.3, IgnoreEos = true },
        new() { Temperature = 1.1, TopP = 0.8, Seed = 7, MaxTokens = 12, FrequencyPenalty = 0.5, PresencePenalty = 0.2 },
        new() { Temperature = 0, MaxTokens = 12, Logprobs = 0 },
    ];

    [Theory]
    [InlineData("tiny-llama3")]
    [InlineData("tiny-qwen3")]
    public async Task Backend_sampling_gives_the_host_samplers_tokens(string modelName)
    {
        var backend = await GenerateAsync(modelName, Sampled, forceHostSampling: false);
        var host = await GenerateAsync(modelName, Sampled, forceHostSampling: true);
        Assert.True(backend.SampleSteps > 0, "no step took the backend sampling path");
        Assert.Equal(0, host.SampleSteps);
        Assert.Equal(0, host.ArgmaxSteps);
        Assert.Equal(host.Outputs, backend.Outputs);
        // The draws matter: sampled requests do not all reduce to the greedy tokens.
        var greedy = host.Outputs.Where((_, i) => i % Sampled.Length == Sampled.Length - 1).ToArray();
        var sampled = host.Outputs.Where((_, i) => i % Sampled.Length == 0).ToArray();
        Assert.NotEqual(greedy, sampled);
    }

    [Theory]
    [InlineData("tiny-llama3")]
    [InlineData("tiny-qwen2-r1")]
    public async Task Rows_that_need_the_host_take_the_host_path(string modelName)
    {
        var run = await GenerateAsync(modelName, HostOnly, forceHostSampling: false);
        Assert.Equal(0, run.SampleSteps);
        Assert.Equal(0, run.ArgmaxSteps);
        var forced = await GenerateAsync(modelName, HostOnly, forceHostSampling: true);
        Assert.Equal(forced.Outputs, run.Outputs);
        // Log-probabilities are still reported (the backend path reports none). They are compared to a tolerance: which
        // requests share a step depends on when each arrives, and a product's summation order on the step's token count.
        Assert.All(run.Outputs.Where((_, i) => i % HostOnly.Length == 0), o => Assert.Contains("lp", o, StringComparison.Ordinal));
        Assert.Equal(forced.Logprobs.Length, run.Logprobs.Length);
        for (var i = 0; i < run.Logprobs.Length; i++)
        {
            Assert.Equal(forced.Logprobs[i], run.Logprobs[i], 1e-4);
        }
    }

    [Theory]
    [InlineData("tiny-llama3")]
    [InlineData("tiny-qwen2-r1")]
    public async Task Min_tokens_switches_from_the_host_to_the_backend_with_the_same_tokens(string modelName)
    {
        // Stop tokens are suppressed for the first steps (host sampler); after that the same rows qualify for the backend.
        SamplingParams[] requests =
        [
            new() { Temperature = 0.9, TopP = 0.95, Seed = 8, MaxTokens = 20, MinTokens = 5 },
            new() { Temperature = 1.2, TopK = 10, Seed = 9, MaxTokens = 20, MinTokens = 3 },
        ];
        var backend = await GenerateAsync(modelName, requests, forceHostSampling: false);
        var host = await GenerateAsync(modelName, requests, forceHostSampling: true);
        Assert.True(backend.SampleSteps > 0, "no step took the backend sampling path");
        Assert.Equal(host.Outputs, backend.Outputs);
    }

    /// <summary>Outputs: each request's tokens (with its top-logprob ids) and finish reason; Logprobs: the chosen tokens' log-probabilities, in order.</summary>
    private static async Task<(string[] Outputs, double[] Logprobs, long SampleSteps, long ArgmaxSteps)> GenerateAsync(string modelName, SamplingParams[] variants, bool forceHostSampling)
    {
        var reference = Fixtures.LoadReference(modelName);
        var dir = Fixtures.Model(modelName);
        using var backend = new CpuBackend(2);
        using var weights = SafetensorsCheckpoint.Open(dir);
        using var model = ModelRegistry.Create(ModelConfig.Load(dir), weights, backend);
        var options = new EngineOptions { MaxNumSeqs = 8, MaxNumBatchedTokens = 16, BlockSize = 4, KvCacheBytes = model.KvCacheSpec.BytesPerToken * 4 * 128 };
        // Tokens the reference's greedy runs produce early are made stop tokens, so that runs finish by Stop as well as
        // by Length, and min_tokens has stop tokens to suppress.
        int[] stops = [.. reference.Cases.SelectMany(c => new[] { c.GreedyIds[2], c.GreedyIds[6] }).Distinct()];
        using var engine = new InferenceEngine(model, options, stops) { ForceHostSampling = forceHostSampling };
        var runs = reference.Cases.SelectMany(c => variants.Select(async p =>
        {
            var ids = new List<string>();
            var logprobs = new List<double>();
            FinishReason? finish = null;
            await foreach (var e in engine.GenerateTokensAsync(c.PromptIds, p))
            {
                ids.Add(e.TopLogprobs is null ? $"{e.TokenId}" : $"{e.TokenId}lp/{string.Join('/', e.TopLogprobs.Select(t => t.TokenId))}");
                if (e.TopLogprobs is not null)
                {
                    logprobs.Add(e.Logprob);
                }

                finish = e.Finish ?? finish;
            }

            return (Text: $"{string.Join(',', ids)} {finish}", Logprobs: logprobs);
        })).ToArray();
        var outputs = await Task.WhenAll(runs);
        return ([.. outputs.Select(o => o.Text)], [.. outputs.SelectMany(o => o.Logprobs)], engine.BackendSampleSteps, engine.ArgmaxSteps);
    }
}
