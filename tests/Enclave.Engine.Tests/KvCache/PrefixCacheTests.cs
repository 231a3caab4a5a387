using Enclave.Engine.Formats;
using Enclave.Engine.Generation;
using Enclave.Engine.KvCache;
using Enclave.Engine.Models;
using Enclave.Engine.Sampling;
using Enclave.Engine.Tests.Support;

namespace Enclave.Engine.Tests.KvCache;

/// <summary>Automatic prefix caching: chained block hashes, shared reference-counted blocks, LRU eviction.</summary>
public sealed class PrefixCacheTests
{
    private static List<int> Range(int start, int count) => [.. Enumerable.Range(start, count)];

    /// <summary>Allocates blocks for a whole token list as if it had been computed, and names its full blocks.</summary>
    private static (List<int> Table, List<BlockHash> Hashes) Compute(BlockPool pool, List<int> tokens)
    {
        var table = new List<int>();
        var hashes = new List<BlockHash>();
        pool.AcquireCachedPrefix(tokens, table, hashes);
        Assert.True(pool.TryEnsureCapacity(table, tokens.Count));
        pool.RegisterFullBlocks(tokens, tokens.Count, table, hashes);
        return (table, hashes);
    }

    [Fact]
    public void ASharedPrefixReusesTheSameBlocksWithReferenceCounts()
    {
        var pool = new BlockPool(16, 4);
        var a = Range(100, 10); // blocks [100..103], [104..107], partial [108, 109]
        var (tableA, _) = Compute(pool, a);
        var b = Range(100, 8).Concat([7, 7, 7]).ToList();
        var tableB = new List<int>();
        var hashesB = new List<BlockHash>();
        var hit = pool.AcquireCachedPrefix(b, tableB, hashesB);

        Assert.Equal(8, hit);
        Assert.Equal(tableA.Take(2), tableB);
        Assert.Equal(2, pool.ReferenceCount(tableA[0]));
        Assert.Equal(2, pool.ReferenceCount(tableA[1]));
        Assert.Equal(1, pool.ReferenceCount(tableA[2]));
        Assert.Equal(8, pool.PrefixHitTokens);
        Assert.Equal(10 + 11, pool.PrefixQueryTokens);
    }

    [Fact]
    public void HashesAreChainedSoAnEqualBlockAfterADifferentParentMisses()
    {
        var pool = new BlockPool(16, 4);
        Compute(pool, [1, 2, 3, 4, 5, 6, 7, 8, 9]);
        var table = new List<int>();
        // Second block equal to the first sequence's second block, but the first block differs.
        var hit = pool.AcquireCachedPrefix([0, 2, 3, 4, 5, 6, 7, 8, 9], table, []);
        Assert.Equal(0, hit);
        Assert.Empty(table);
    }

    [Fact]
    public void AtLeastOneTokenIsLeftToCompute()
    {
        var pool = new BlockPool(16, 4);
        var tokens = Range(0, 8);
        Compute(pool, tokens);
        var table = new List<int>();
        Assert.Equal(4, pool.AcquireCachedPrefix(tokens, table, []));
        Assert.Single(table);
    }

    [Fact]
    public void ReleasedCachedBlocksStayReusableUntilEvictedLeastRecentlyFreedFirst()
    {
        var pool = new BlockPool(4, 4);
        var (tableA, _) = Compute(pool, Range(0, 5)); // 2 blocks, one full
        var (tableB, _) = Compute(pool, Range(50, 5)); // 2 blocks, one full
        var cachedA = tableA[0];
        pool.Release(tableA);
        pool.Release(tableB);
        Assert.Equal(4, pool.FreeBlocks);
        Assert.Equal(0, pool.UsedBlocks);
        Assert.Equal(2, pool.CachedBlocks);

        // A's prefix comes back from the free queue without recomputation.
        var again = new List<int>();
        Assert.Equal(4, pool.AcquireCachedPrefix(Range(0, 5), again, []));
        Assert.Equal(cachedA, again[0]);
        Assert.Equal(1, pool.ReferenceCount(cachedA));
        pool.Release(again);

        // Three fresh blocks evict the least recently freed: B's full block goes, A's (freed last) stays.
        var fresh = new List<int>();
        Assert.True(pool.TryEnsureCapacity(fresh, 12));
        Assert.DoesNotContain(cachedA, fresh);
        Assert.Equal(1, pool.CachedBlocks);
        Assert.Equal(0, pool.AcquireCachedPrefix(Range(50, 5), new List<int>(), []));
        pool.Release(fresh);
        Assert.Equal(4, pool.AcquireCachedPrefix(Range(0, 5), new List<int>(), []));
    }

    [Fact]
    public void DisabledCachingNeverHits()
    {
        var pool = new BlockPool(8, 4, enablePrefixCaching: false);
        Compute(pool, Range(0, 9));
        Assert.Equal(0, pool.AcquireCachedPrefix(Range(0, 9), new List<int>(), []));
        Assert.Equal(0, pool.CachedBlocks);
    }

    [Fact]
    public async Task RequestsSharingAPrefixHitTheCacheAndGenerateTheSameTokens()
    {
        var dir = Fixtures.Model("tiny-qwen3");
        using var backend = BackendFactory.Create("reference");
        using var weights = SafetensorsCheckpoint.Open(dir);
        using var model = ModelRegistry.Create(ModelConfig.Load(dir), weights, backend);
        var system = Enumerable.Range(10, 40).ToArray();
        int[][] prompts = [[.. system, 300, 301, 302], [.. system, 400, 401], [.. system, 300, 301, 302]];
        var greedy = new SamplingParams { Temperature = 0, MaxTokens = 12, IgnoreEos = true };

        async Task<(List<int>[] Outputs, EngineStats Stats)> Run(bool caching)
        {
            var options = new EngineOptions { MaxNumSeqs = 4, BlockSize = 8, EnablePrefixCaching = caching };
            using var engine = new InferenceEngine(model, options, model.Config.EosTokenIds);
            var outputs = new List<int>[prompts.Length];
            for (var i = 0; i < prompts.Length; i++)
            {
                outputs[i] = [];
                await foreach (var e in engine.GenerateTokensAsync(prompts[i], greedy))
                {
                    outputs[i].Add(e.TokenId);
                }
            }

            return (outputs, engine.Stats);
        }

        var (cachedOutputs, stats) = await Run(true);
        var (plainOutputs, plainStats) = await Run(false);
        Assert.Equal(0, plainStats.PrefixCacheHits);
        // The 40-token shared prefix is 5 full blocks for the 2nd and 3rd request; the 3rd also shares more.
        Assert.True(stats.PrefixCacheHits >= 80, $"expected at least 80 cached prompt tokens, got {stats.PrefixCacheHits}");
        Assert.True(stats.PrefixCacheHitRate > 0.5);
        for (var i = 0; i < prompts.Length; i++)
        {
            Assert.Equal(plainOutputs[i], cachedOutputs[i]);
        }
    }
}
