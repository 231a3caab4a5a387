using Enclave.Engine.Backends;
using Enclave.Engine.Backends.Cpu;
using Enclave.Engine.Backends.Reference;
using Enclave.Engine.Formats;
using Enclave.Engine.KvCache;
using Enclave.Engine.Models;
using Enclave.Engine.Models.Layers;
using Enclave.Engine.Tests.Support;

namespace Enclave.Engine.Tests.Models;

/// <summary>
/// The model code alone (no scheduler): prefill the reference prompt in one step, compare last-position logits with
/// transformers, then decode greedily one token per step and compare the tokens.
/// </summary>
public sealed class ForwardParityTests
{
    public static TheoryData<string, string> ModelsAndBackends()
    {
        var data = new TheoryData<string, string>();
        foreach (var model in Fixtures.ModelNames)
        {
            foreach (var backend in BackendFactory.Names)
            {
                data.Add(model, backend);
            }
        }

        return data;
    }

    [Theory]
    [MemberData(nameof(ModelsAndBackends))]
    public void LogitsAndGreedyTokensMatchTransformers(string modelName, string backendName)
    {
        using var backend = BackendFactory.Create(backendName);
        using var model = AssertParity(modelName, backend).Model;
    }

    /// <summary>
    /// The DeepSeek fixtures with their experts stacked and each MoE layer handed to the backend whole
    /// (<see cref="IBackend.MoeExperts"/>), as on a GPU: the same references must hold, every MoE layer of every step
    /// must have gone that way, and the model must then allow decode graphs.
    /// </summary>
    [Theory]
    [InlineData("tiny-deepseek-v3")]
    [InlineData("tiny-deepseek-v2-lite")]
    public void StackedExpertsRoutedByTheBackendMatchTransformers(string modelName)
    {
        using var backend = new StackingBackend();
        var (model, steps) = AssertParity(modelName, backend);
        using var disposeModel = model;
        var ds = DeepseekConfig.Parse(model.Config, modelName.Contains("v3", StringComparison.Ordinal));
        var moeLayers = model.Config.NumHiddenLayers - ds.FirstKDenseReplace;
        Assert.True(moeLayers > 0);
        Assert.Equal(steps * moeLayers, backend.MoeExpertsCalls);
        Assert.True(model.SupportsDecodeGraphs);
        Assert.Equal(Math.Min(4096, StackingBackend.PicksPerExpert * ds.NRoutedExperts) / ds.NumExpertsPerTok, model.MaxRecordedDecodeBatch);
    }

    /// <summary>
    /// A prefill past the pick bound (80 tokens × top-2 over 8 experts: 20 picks an expert) routes on the host, the
    /// decode step after it on the backend, and both give the logits of the per-expert CPU path.
    /// </summary>
    [Fact]
    public void LongStepsRouteOnTheHostAndShortOnesOnTheBackend()
    {
        var dir = Fixtures.Model("tiny-deepseek-v3");
        var config = ModelConfig.Load(dir);
        using var weights = SafetensorsCheckpoint.Open(dir);
        using var stacking = new StackingBackend();
        using var cpu = new CpuBackend();
        using var stacked = ModelRegistry.Create(config, weights, stacking);
        using var plain = ModelRegistry.Create(config, weights, cpu);
        var ds = DeepseekConfig.Parse(config, true);
        var moeLayers = config.NumHiddenLayers - ds.FirstKDenseReplace;
        var random = new Random(5);
        var prompt = Enumerable.Range(0, 80).Select(_ => random.Next(config.VocabSize)).ToList();
        Assert.True(prompt.Count * ds.NumExpertsPerTok > StackingBackend.PicksPerExpert * ds.NRoutedExperts);

        var outputs = new List<float[]>();
        foreach (var (model, backend) in new (CausalLM, IBackend)[] { (stacked, stacking), (plain, cpu) })
        {
            const int blockSize = 4;
            using var cache = new PagedKvCache(backend, model.KvCacheSpec, 32, blockSize);
            var pool = new BlockPool(cache.BlockCount, blockSize);
            var table = new List<int>();
            var tokens = new List<int>(prompt);
            using var logits = backend.Allocate(DType.F32, 1, config.VocabSize);
            var host = new float[config.VocabSize];
            model.Forward(SingleSequenceBatch(tokens, 0, pool, table), cache, logits);
            backend.Download(logits, host);
            outputs.Add((float[])host.Clone());
            if (ReferenceEquals(backend, stacking))
            {
                Assert.Equal(0, stacking.MoeExpertsCalls);
            }

            tokens.Add(ArgMax(host));
            model.Forward(SingleSequenceBatch(tokens, prompt.Count, pool, table), cache, logits);
            backend.Download(logits, host);
            outputs.Add((float[])host.Clone());
        }

        Assert.Equal(moeLayers, stacking.MoeExpertsCalls);
        for (var step = 0; step < 2; step++)
        {
            var (fast, slow) = (outputs[step], outputs[2 + step]);
            var scale = slow.Max(Math.Abs);
            var error = fast.Select((v, i) => Math.Abs(v - slow[i])).Max();
            Assert.True(error <= 1e-4 * Math.Max(1, scale), $"step {step}: max logit difference {error} (scale {scale})");
        }
    }

    [Fact]
    public void HostRoutedDeepseekDoesNotAllowDecodeGraphs()
    {
        using var backend = new ReferenceBackend();
        var dir = Fixtures.Model("tiny-deepseek-v3");
        using var weights = SafetensorsCheckpoint.Open(dir);
        using var model = ModelRegistry.Create(ModelConfig.Load(dir), weights, backend);
        Assert.False(model.SupportsDecodeGraphs);
    }

    /// <summary>Runs every reference case of <paramref name="modelName"/> on <paramref name="backend"/>; returns the model (the caller disposes it) and the forward steps run.</summary>
    private static (CausalLM Model, int Steps) AssertParity(string modelName, IBackend backend)
    {
        var reference = Fixtures.LoadReference(modelName);
        var dir = Fixtures.Model(modelName);
        var steps = 0;
        using var weights = SafetensorsCheckpoint.Open(dir);
        var config = ModelConfig.Load(dir);
        var model = ModelRegistry.Create(config, weights, backend);
        Assert.Equal(reference.Architecture, config.Architecture);
        var comparedTokens = 0;
        foreach (var c in reference.Cases)
        {
            const int blockSize = 4;
            using var cache = new PagedKvCache(backend, model.KvCacheSpec, 32, blockSize);
            var pool = new BlockPool(cache.BlockCount, blockSize);
            var table = new List<int>();
            var tokens = new List<int>(c.PromptIds);
            using var logits = backend.Allocate(DType.F32, 1, config.VocabSize);
            var host = new float[config.VocabSize];
            var computed = 0;
            for (var step = 0; step < c.GreedyIds.Length; step++)
            {
                var batch = SingleSequenceBatch(tokens, computed, pool, table);
                model.Forward(batch, cache, logits);
                steps++;
                backend.Download(logits, host);
                computed = tokens.Count;
                if (step == 0)
                {
                    var scale = c.LastLogits.Max(Math.Abs);
                    var maxError = c.LastLogits.Select((v, i) => Math.Abs(v - host[i])).Max();
                    Assert.True(maxError <= 1e-3 * Math.Max(1, scale), $"{modelName}/{c.Kind}: max logit error {maxError} (scale {scale})");
                }

                var argmax = ArgMax(host);
                if (c.GreedyMargins[step] < 1e-3)
                {
                    break; // the reference's own top two are within noise: further tokens are not comparable
                }

                Assert.True(c.GreedyIds[step] == argmax, $"{modelName}/{c.Kind} step {step}: expected {c.GreedyIds[step]} (logit {host[c.GreedyIds[step]]}), got {argmax} (logit {host[argmax]}), reference margin {c.GreedyMargins[step]}");
                tokens.Add(argmax);
                comparedTokens++;
            }
        }

        // Guard against a reference whose margins are all noise: the comparison must have covered real ground.
        Assert.True(comparedTokens >= 3 * 8, $"only {comparedTokens} greedy tokens were comparable");
        return (model, steps);
    }

    internal static ForwardBatch SingleSequenceBatch(List<int> tokens, int computed, BlockPool pool, List<int> table)
    {
        Assert.True(pool.TryEnsureCapacity(table, tokens.Count));
        var count = tokens.Count - computed;
        var ids = new int[count];
        var positions = new int[count];
        var slots = new int[count];
        for (var i = 0; i < count; i++)
        {
            var p = computed + i;
            ids[i] = tokens[p];
            positions[i] = p;
            slots[i] = (table[p / pool.BlockSize] * pool.BlockSize) + (p % pool.BlockSize);
        }

        return new ForwardBatch
        {
            TokenIds = ids,
            Positions = positions,
            SlotMapping = slots,
            Sequences = [new SequenceSlice(0, count, tokens.Count, table.ToArray())],
            LogitRows = [count - 1],
        };
    }

    internal static int ArgMax(ReadOnlySpan<float> values)
    {
        var best = 0;
        for (var i = 1; i < values.Length; i++)
        {
            if (values[i] > values[best])
            {
                best = i;
            }
        }

        return best;
    }
}
