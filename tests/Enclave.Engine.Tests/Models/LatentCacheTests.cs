using Enclave.Engine.Backends;
using Enclave.Engine.Backends.Reference;
using Enclave.Engine.Formats;
using Enclave.Engine.KvCache;
using Enclave.Engine.Models;
using Enclave.Engine.Tests.Support;

namespace Enclave.Engine.Tests.Models;

/// <summary>DeepSeek models cache one compressed row per token and layer, not expanded keys and values.</summary>
public sealed class LatentCacheTests
{
    [Theory]
    [InlineData("tiny-deepseek-v3")]
    [InlineData("tiny-deepseek-v2-lite")]
    public void The_cache_holds_kv_lora_rank_plus_rope_dim_values_per_token_and_layer(string modelName)
    {
        var dir = Fixtures.Model(modelName);
        var config = ModelConfig.Load(dir);
        var rank = (int)config.Raw["kv_lora_rank"]!;
        var ropeDim = (int)config.Raw["qk_rope_head_dim"]!;
        using var backend = new ReferenceBackend();
        using var weights = SafetensorsCheckpoint.Open(dir);
        using var model = ModelRegistry.Create(config, weights, backend);

        var spec = model.KvCacheSpec;
        var row = Assert.Single(spec.Tensors);
        Assert.Equal(rank + ropeDim, row.Floats);
        Assert.Equal(config.NumHiddenLayers, spec.Layers);
        Assert.Equal((long)config.NumHiddenLayers * (rank + ropeDim) * sizeof(float), spec.BytesPerToken);

        // Three tokens fill exactly three rows of every layer's latent tensor; the rest of the cache stays untouched.
        const int blockSize = 4;
        using var cache = new PagedKvCache(backend, spec, 2, blockSize);
        Assert.Equal([2, blockSize, 1, rank + ropeDim], cache.Tensor(0, 0).Shape);
        var pool = new BlockPool(cache.BlockCount, blockSize);
        var table = new List<int>();
        var batch = ForwardParityTests.SingleSequenceBatch([5, 6, 7], 0, pool, table);
        using var logits = backend.Allocate(DType.F32, 1, config.VocabSize);
        model.Forward(batch, cache, logits);
        for (var layer = 0; layer < spec.Layers; layer++)
        {
            var stored = new float[cache.Tensor(layer, 0).ElementCount];
            backend.Download(cache.Tensor(layer, 0), stored);
            var written = Enumerable.Range(0, stored.Length / (rank + ropeDim))
                .Where(slot => stored.AsSpan(slot * (rank + ropeDim), rank + ropeDim).ContainsAnyExcept(0f))
                .ToArray();
            Assert.Equal(batch.SlotMapping.Order(), written);
        }
    }
}
