using Enclave.Engine.KvCache;
using Enclave.Engine.Models;
using Enclave.Engine.Tests.Support;

namespace Enclave.Engine.Tests.KvCache;

public sealed class KvCachePlanTests
{
    private const long GiB = 1L << 30;

    [Fact]
    public void TheCacheTakesWhatUtilizationLeavesAfterWeightsAndActivations()
    {
        // R1-Distill-Qwen-7B on an 80 GiB device with 15 GiB already used by weights and the runtime.
        var config = ModelConfig.Load(Path.Combine(Fixtures.RepositoryRoot, "tools", "bench", "deepseek-r1-distill-qwen-7b.json"));
        var spec = new KvCacheSpec(config.NumHiddenLayers, config.NumKeyValueHeads, config.HeadDim);
        Assert.Equal(114688, spec.BytesPerToken); // 28 layers × 2 × 4 kv heads × 128 × 4 bytes

        var plan = KvCachePlan.Create(65 * GiB, 80 * GiB, 0.9, config, spec, 512, 64, 16, 32768);
        var activations = KvCachePlan.EstimateActivationBytes(config, 512, 64) + KvCachePlan.LibraryReserveBytes;
        var expectedBytes = (long)(80 * GiB * 0.9) - (15 * GiB) - activations;
        Assert.Equal(activations, plan.ActivationBytes);
        Assert.Equal(15 * GiB, plan.UsedBytes);
        Assert.True(plan.KvBytes <= expectedBytes && plan.KvBytes > expectedBytes - (spec.BytesPerToken * 16));
        Assert.Equal(0, plan.Tokens % 16);
        Assert.Equal(plan.Tokens * spec.BytesPerToken, plan.KvBytes);
        Assert.Equal(plan.Tokens / 32768, plan.MaxFullLengthSequences);
        Assert.Contains("GiB for", plan.ToString(), StringComparison.Ordinal);

        var lower = KvCachePlan.Create(65 * GiB, 80 * GiB, 0.5, config, spec, 512, 64, 16, 32768);
        Assert.Equal(32 * GiB, plan.KvBytes - lower.KvBytes, 16 * spec.BytesPerToken); // 40% of 80 GiB less
    }

    [Fact]
    public void ModelsSharingAGpuSplitWhatIsLeft()
    {
        var config = ModelConfig.Load(Path.Combine(Fixtures.RepositoryRoot, "tools", "bench", "deepseek-r1-distill-qwen-7b.json"));
        var spec = new KvCacheSpec(config.NumHiddenLayers, config.NumKeyValueHeads, config.HeadDim);
        var alone = KvCachePlan.Create(65 * GiB, 80 * GiB, 0.9, config, spec, 512, 64, 16, 32768);

        // First of two models: half of what is left; the second then finds the first one's cache in use and takes all
        // of the rest, so both get the same.
        var first = KvCachePlan.Create(65 * GiB, 80 * GiB, 0.9, config, spec, 512, 64, 16, 32768, share: 0.5);
        Assert.Equal(alone.KvBytes / 2, first.KvBytes, 16 * spec.BytesPerToken);
        var second = KvCachePlan.Create((65 * GiB) - first.KvBytes, 80 * GiB, 0.9, config, spec, 512, 64, 16, 32768, share: 1.0);
        Assert.Equal(first.KvBytes, second.KvBytes, 16 * spec.BytesPerToken);
        Assert.Contains("50% of that for this model", first.ToString(), StringComparison.Ordinal);
    }

    [Fact]
    public void NoRoomLeftIsAClearError()
    {
        var config = ModelConfig.Load(Path.Combine(Fixtures.RepositoryRoot, "tools", "bench", "deepseek-r1-distill-qwen-7b.json"));
        var spec = new KvCacheSpec(config.NumHiddenLayers, config.NumKeyValueHeads, config.HeadDim);
        var error = Assert.Throws<InvalidOperationException>(() => KvCachePlan.Create(10 * GiB, 24 * GiB, 0.6, config, spec, 512, 64, 16, 4096));
        Assert.Contains("--gpu-memory-utilization", error.Message, StringComparison.Ordinal);
        Assert.Throws<ArgumentOutOfRangeException>(() => KvCachePlan.Create(10 * GiB, 24 * GiB, 1.5, config, spec, 512, 64, 16, 4096));
    }
}
