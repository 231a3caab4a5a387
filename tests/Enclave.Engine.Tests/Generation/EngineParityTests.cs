using Enclave.Engine.Formats;
using Enclave.Engine.Generation;
using Enclave.Engine.Models;
using Enclave.Engine.Sampling;
using Enclave.Engine.Tests.Support;

namespace Enclave.Engine.Tests.Generation;

/// <summary>
/// Greedy generation through the scheduler equals the transformers reference, whether requests run alone or
/// together, with prompts chunked across steps and a KV cache small enough to force preemption.
/// </summary>
public sealed class EngineParityTests
{
    public static TheoryData<string, string> ModelsAndBackends() => ForwardParityTestsData.All();

    [Theory]
    [MemberData(nameof(ModelsAndBackends))]
    public async Task ConcurrentGreedyRequestsMatchTheReference(string modelName, string backendName)
    {
        var reference = Fixtures.LoadReference(modelName);
        var dir = Fixtures.Model(modelName);
        using var backend = BackendFactory.Create(backendName);
        using var weights = SafetensorsCheckpoint.Open(dir);
        using var model = ModelRegistry.Create(ModelConfig.Load(dir), weights, backend);
        // A tiny token budget chunks every prompt; a cache of 24 blocks × 4 tokens cannot hold all five requests at once.
        var options = new EngineOptions { MaxNumSeqs = 8, MaxNumBatchedTokens = 7, BlockSize = 4, KvCacheBytes = model.KvCacheSpec.BytesPerToken * 4 * 24 };
        using var engine = new InferenceEngine(model, options, model.Config.EosTokenIds);
        var greedy = new SamplingParams { Temperature = 0, MaxTokens = 24, IgnoreEos = true };
        var runs = reference.Cases.Select(async c =>
        {
            var ids = new List<int>();
            await foreach (var e in engine.GenerateTokensAsync(c.PromptIds, greedy))
            {
                ids.Add(e.TokenId);
            }

            return ids;
        }).ToArray();
        var outputs = await Task.WhenAll(runs);
        for (var i = 0; i < reference.Cases.Count; i++)
        {
            var c = reference.Cases[i];
            Assert.Equal(24, outputs[i].Count);
            for (var step = 0; step < 24 && c.GreedyMargins[step] >= 1e-3; step++)
            {
                Assert.True(c.GreedyIds[step] == outputs[i][step], $"{modelName} case {i} step {step}: expected {c.GreedyIds[step]}, got {outputs[i][step]}");
            }
        }

        Assert.True(engine.Stats.Preemptions > 0, "the small cache should have forced at least one preemption");
    }

    [Fact]
    public async Task StepTimeIsSplitBetweenTheModelAndTheEngineThread()
    {
        using var tiny = new TinyEngine();
        var engine = tiny.Engine;
        Assert.Equal(0, engine.Stats.StepHostShare);
        var wall = System.Diagnostics.Stopwatch.StartNew();
        await foreach (var _ in engine.GenerateTokensAsync([1, 2, 3, 4, 5], new SamplingParams { Temperature = 0, MaxTokens = 12, IgnoreEos = true }))
        {
        }

        wall.Stop();
        var stats = engine.Stats;
        Assert.Equal(12, stats.Steps); // one prefill step and eleven decode steps
        Assert.True(stats.StepDeviceSeconds > 0, $"device {stats.StepDeviceSeconds} s");
        Assert.True(stats.StepHostSeconds > 0, $"host {stats.StepHostSeconds} s");
        Assert.True(stats.StepHostSeconds + stats.StepDeviceSeconds <= wall.Elapsed.TotalSeconds, $"{stats.StepHostSeconds} + {stats.StepDeviceSeconds} s within {wall.Elapsed.TotalSeconds} s");
        Assert.InRange(stats.StepHostShare, double.Epsilon, 1 - double.Epsilon);
    }

    [Fact]
    public async Task CancellingARequestFreesItsBlocks()
    {
        using var tiny = new TinyEngine();
        var engine = tiny.Engine;
        using var cts = new CancellationTokenSource();
        var count = 0;
        await Assert.ThrowsAnyAsync<OperationCanceledException>(async () =>
        {
            await foreach (var _ in engine.GenerateTokensAsync([1, 2, 3, 4, 5], new SamplingParams { Temperature = 0, MaxTokens = 200, IgnoreEos = true }, cts.Token))
            {
                if (++count == 3)
                {
                    Assert.True(engine.Stats.KvCacheUsage > 0);
                    cts.Cancel();
                }
            }
        });
        for (var i = 0; i < 100 && engine.Stats.KvCacheUsage > 0; i++)
        {
            await Task.Delay(10);
        }

        Assert.Equal(0, engine.Stats.KvCacheUsage);
        Assert.Equal(0, engine.Stats.Running);
    }

    [Fact]
    public void OversizedRequestsAreRefusedWithTheContextLength()
    {
        var dir = Fixtures.Model("tiny-qwen3");
        using var backend = BackendFactory.Create("reference");
        using var weights = SafetensorsCheckpoint.Open(dir);
        using var model = ModelRegistry.Create(ModelConfig.Load(dir), weights, backend);
        using var engine = new InferenceEngine(model, new EngineOptions(), []);
        var e = Assert.Throws<ContextLengthExceededException>(() => engine.Submit([1, 2, 3], new SamplingParams { MaxTokens = 600 }));
        Assert.Contains("maximum context length is 512", e.Message);
        Assert.Throws<ArgumentException>(() => engine.Submit([], new SamplingParams()));
        Assert.Throws<ArgumentException>(() => engine.Submit([5000], new SamplingParams()));
        var bad = Assert.Throws<ArgumentException>(() => engine.Submit([1], new SamplingParams { TopP = 0 }));
        Assert.Equal("top_p", bad.ParamName);
    }

    /// <summary>tiny-qwen3 on the reference backend behind an engine with a 64-block cache of 4 tokens a block.</summary>
    private sealed class TinyEngine : IDisposable
    {
        private readonly IDisposable backend;
        private readonly SafetensorsCheckpoint weights;
        private readonly CausalLM model;

        public TinyEngine()
        {
            var dir = Fixtures.Model("tiny-qwen3");
            var reference = BackendFactory.Create("reference");
            backend = reference;
            weights = SafetensorsCheckpoint.Open(dir);
            model = ModelRegistry.Create(ModelConfig.Load(dir), weights, reference);
            Engine = new InferenceEngine(model, new EngineOptions { BlockSize = 4, KvCacheBytes = model.KvCacheSpec.BytesPerToken * 4 * 64 }, []);
        }

        public InferenceEngine Engine { get; }

        public void Dispose()
        {
            Engine.Dispose();
            model.Dispose();
            weights.Dispose();
            backend.Dispose();
        }
    }
}

public sealed class KvCacheTypeTests
{
    [Theory]
    [InlineData("auto")]
    [InlineData("f32")]
    [InlineData("FP32")]
    public void Auto_and_f32_keep_an_fp32_cache(string requested)
    {
        var dir = Fixtures.Model("tiny-qwen3");
        using var backend = BackendFactory.Create("cpu");
        using var weights = SafetensorsCheckpoint.Open(dir);
        using var model = ModelRegistry.Create(ModelConfig.Load(dir), weights, backend);
        Assert.Equal(Enclave.Engine.Backends.DType.F32, InferenceEngine.KvCacheType(requested, model));
        using var engine = new InferenceEngine(model, new EngineOptions { KvCacheDtype = requested }, []);
    }

    [Theory]
    [InlineData("bf16", "keeps a BF16 cache only for standard attention on CUDA")]
    [InlineData("int3", "expected auto, f32 or bf16")]
    public void A_cache_type_the_backend_cannot_keep_is_refused_with_the_reason(string requested, string message)
    {
        var dir = Fixtures.Model("tiny-qwen3");
        using var backend = BackendFactory.Create("cpu");
        using var weights = SafetensorsCheckpoint.Open(dir);
        using var model = ModelRegistry.Create(ModelConfig.Load(dir), weights, backend);
        var e = Assert.Throws<ArgumentException>(() => new InferenceEngine(model, new EngineOptions { KvCacheDtype = requested }, []));
        Assert.Contains($"--kv-cache-dtype {requested}", e.Message);
        Assert.Contains(message, e.Message);
    }
}

internal static class ForwardParityTestsData
{
    public static TheoryData<string, string> All() => Models.ForwardParityTests.ModelsAndBackends();
}
