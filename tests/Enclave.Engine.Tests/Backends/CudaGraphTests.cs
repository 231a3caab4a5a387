using Enclave.Engine.Cuda;
using Enclave.Engine.Formats;
using Enclave.Engine.Generation;
using Enclave.Engine.Models;
using Enclave.Engine.Sampling;
using Enclave.Engine.Tests.Support;

namespace Enclave.Engine.Tests.Backends;

/// <summary>
/// Decode steps recorded as CUDA graphs and replayed give the tokens of eager launches. Skipped, with the reason,
/// where no usable CUDA device exists; GpuCheck runs the same comparison and a bit-exact logits check on the GPU host.
/// </summary>
public sealed class CudaGraphTests
{
    [CudaTheory]
    [InlineData("tiny-llama3")]
    [InlineData("tiny-qwen2-r1")]
    [InlineData("tiny-qwen3")]
    public async Task Replayed_decode_steps_give_the_eager_tokens(string modelName)
    {
        var (graphTokens, captures, replays) = await GenerateAsync(modelName, graphs: true);
        var (eagerTokens, eagerCaptures, _) = await GenerateAsync(modelName, graphs: false);
        Assert.True(captures > 0 && replays > 0, $"{captures} steps recorded, {replays} replayed");
        Assert.Equal(0, eagerCaptures);
        Assert.Equal(eagerTokens.Length, graphTokens.Length);
        for (var i = 0; i < eagerTokens.Length; i++)
        {
            Assert.Equal(eagerTokens[i], graphTokens[i]);
        }
    }

    [CudaFact]
    public void Mixture_of_experts_models_keep_decode_graphs_off()
    {
        var dir = Fixtures.Model("tiny-deepseek-v3");
        using var cuda = new CudaBackend();
        using var weights = SafetensorsCheckpoint.Open(dir);
        using var model = ModelRegistry.Create(ModelConfig.Load(dir), weights, cuda);
        using var engine = new InferenceEngine(model, new EngineOptions { BlockSize = 4, KvCacheBytes = model.KvCacheSpec.BytesPerToken * 4 * 64 }, []);
        Assert.False(engine.DecodeGraphs);
        Assert.False(cuda.DecodeGraphsEnabled);
    }

    private static async Task<(int[][] Tokens, long Captures, long Replays)> GenerateAsync(string modelName, bool graphs)
    {
        var reference = Fixtures.LoadReference(modelName);
        var dir = Fixtures.Model(modelName);
        using var cuda = new CudaBackend(new CudaBackendOptions { CudaGraphs = graphs });
        using var weights = SafetensorsCheckpoint.Open(dir);
        using var model = ModelRegistry.Create(ModelConfig.Load(dir), weights, cuda);
        var options = new EngineOptions { MaxNumSeqs = 16, MaxNumBatchedTokens = 64, BlockSize = 4, KvCacheBytes = model.KvCacheSpec.BytesPerToken * 4 * 512 };
        using var engine = new InferenceEngine(model, options, []);
        Assert.Equal(graphs, engine.DecodeGraphs);
        // Each prompt twice (the copy one token shorter), at different lengths: the decode batch shrinks from 10 to 1,
        // past the 8-token GEMV limit into the tiled kernel and cuBLAS (F32 weights), and each size is recorded and replayed.
        var prompts = reference.Cases.Select(c => c.PromptIds).Concat(reference.Cases.Select(c => c.PromptIds.Length > 1 ? c.PromptIds[1..] : c.PromptIds)).ToArray();
        var runs = prompts.Select(async (prompt, i) =>
        {
            var ids = new List<int>();
            await foreach (var e in engine.GenerateTokensAsync(prompt, new SamplingParams { Temperature = 0, MaxTokens = 32 - (2 * i), IgnoreEos = true }))
            {
                ids.Add(e.TokenId);
            }

            return ids.ToArray();
        }).ToArray();
        var tokens = await Task.WhenAll(runs);
        return (tokens, cuda.GraphCaptures, cuda.GraphReplays);
    }
}
