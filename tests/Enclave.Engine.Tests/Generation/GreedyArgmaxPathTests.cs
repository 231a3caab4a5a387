using Enclave.Engine.Backends.Cpu;
using Enclave.Engine.Formats;
using Enclave.Engine.Generation;
using Enclave.Engine.Models;
using Enclave.Engine.Sampling;
using Enclave.Engine.Scheduling;
using Enclave.Engine.Tests.Support;

namespace Enclave.Engine.Tests.Generation;

/// <summary>
/// Steps whose rows are all plain greedy take the backend's argmax and download no logits; the tokens and finish
/// reasons must be exactly those of the host sampler over downloaded logits, including across the switch between the
/// two paths (min_tokens suppresses stop tokens for the first steps, which needs the host sampler).
/// </summary>
public sealed class GreedyArgmaxPathTests
{
    [Theory]
    [InlineData("tiny-llama3")]
    [InlineData("tiny-qwen2-r1")]
    [InlineData("tiny-qwen3")]
    public async Task Device_argmax_gives_the_host_samplers_tokens(string modelName)
    {
        var (fastTokens, fastSteps) = await GenerateAsync(modelName, forceHostSampling: false);
        var (slowTokens, slowSteps) = await GenerateAsync(modelName, forceHostSampling: true);
        Assert.True(fastSteps > 0, "no step took the argmax path");
        Assert.Equal(0, slowSteps);
        Assert.Equal(slowTokens.Count, fastTokens.Count);
        for (var i = 0; i < slowTokens.Count; i++)
        {
            Assert.Equal(slowTokens[i], fastTokens[i]);
        }
    }

    private static async Task<(List<string> Outputs, long ArgmaxSteps)> GenerateAsync(string modelName, bool forceHostSampling)
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
        var variants = new[]
        {
            new SamplingParams { Temperature = 0, MaxTokens = 20, IgnoreEos = true },
            new SamplingParams { Temperature = 0, MaxTokens = 20 },
            new SamplingParams { Temperature = 0, MaxTokens = 20, MinTokens = 4 },
        };
        var runs = reference.Cases.SelectMany(c => variants.Select(async p =>
        {
            var ids = new List<int>();
            FinishReason? finish = null;
            await foreach (var e in engine.GenerateTokensAsync(c.PromptIds, p))
            {
                ids.Add(e.TokenId);
                Assert.Equal(0f, e.Logprob);
                Assert.Null(e.TopLogprobs);
                finish = e.Finish ?? finish;
            }

            return $"{string.Join(',', ids)} {finish}";
        })).ToArray();
        var outputs = await Task.WhenAll(runs);
        return ([.. outputs], engine.ArgmaxSteps);
    }
}
