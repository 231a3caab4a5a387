using Enclave.Engine.Backends;
using Enclave.Engine.Backends.Cpu;
using Enclave.Engine.Formats;

namespace Enclave.Engine.Tests.Support;

/// <summary>
/// The CPU backend as a device backend lays a model out: weights stacked where a loader asks
/// (<see cref="IBackend.LoadWeightStack"/>, copied into one allocation) and MoE layers handed to
/// <see cref="IBackend.MoeExperts"/> whole (its default, host-routed implementation), so the stacked-expert path of
/// the model code runs, and is counted, on machines without a GPU.
/// </summary>
public sealed class StackingBackend : IBackend
{
    private readonly CpuBackend inner = new();

    public string Name => "stacking " + inner.Name;

    /// <summary><see cref="MoeExperts"/> calls so far.</summary>
    public int MoeExpertsCalls { get; private set; }

    /// <summary>Stacks loaded so far.</summary>
    public int Stacks { get; private set; }

    public bool StacksWeights => true;

    public int MoeExpertsOnBackendMaxPicks => 4096;

    public DeviceTensor? LoadWeightStack(ReadOnlySpan<CheckpointTensor> sources)
    {
        var dtype = sources[0].DType;
        var columns = sources[0].Shape[1];
        var rows = 0;
        foreach (var source in sources)
        {
            if (source.DType != dtype || source.Shape.Length != 2 || source.Shape[1] != columns)
            {
                return null;
            }

            rows += source.Shape[0];
        }

        var stack = inner.Allocate(dtype, rows, columns);
        var row = 0;
        foreach (var source in sources)
        {
            inner.UploadBytes(source.Bytes, stack.SliceRows(row, source.Shape[0]));
            row += source.Shape[0];
        }

        Stacks++;
        return stack;
    }

    public void MoeExperts(DeviceTensor x, DeviceTensor routerLogits, DeviceTensor? correctionBias, MoeRouting routing, DeviceTensor gateUp, DeviceTensor down, DeviceTensor output)
    {
        MoeExpertsCalls++;
        IBackend.MoeExpertsAsParts(this, x, routerLogits, correctionBias, routing, gateUp, down, output);
    }

    public void PrepareStep(ForwardBatch batch) => inner.PrepareStep(batch);

    public DeviceTensor Allocate(DType dtype, params int[] shape) => inner.Allocate(dtype, shape);

    public DeviceTensor LoadWeight(CheckpointTensor source) => inner.LoadWeight(source);

    public void UploadBytes(ReadOnlySpan<byte> source, DeviceTensor destination) => inner.UploadBytes(source, destination);

    public void Upload(ReadOnlySpan<float> source, DeviceTensor destination) => inner.Upload(source, destination);

    public void Download(DeviceTensor source, Span<float> destination) => inner.Download(source, destination);

    public void Argmax(DeviceTensor logits, Span<int> tokenIds) => inner.Argmax(logits, tokenIds);

    public void Sample(DeviceTensor logits, ReadOnlySpan<Enclave.Engine.Sampling.RowSampling> rows, Span<int> tokenIds) => inner.Sample(logits, rows, tokenIds);

    public void Embedding(DeviceTensor table, ForwardBatch batch, DeviceTensor output) => inner.Embedding(table, batch, output);

    public void RmsNorm(DeviceTensor x, DeviceTensor weight, float eps, DeviceTensor output) => inner.RmsNorm(x, weight, eps, output);

    public void AddRmsNorm(DeviceTensor residual, DeviceTensor x, DeviceTensor weight, float eps, DeviceTensor output) => inner.AddRmsNorm(residual, x, weight, eps, output);

    public void MatMul(DeviceTensor x, DeviceTensor weight, DeviceTensor? bias, DeviceTensor output) => inner.MatMul(x, weight, bias, output);

    public void QuantizedMatMul(DeviceTensor x, QuantizedWeight weight, DeviceTensor? bias, DeviceTensor output) => inner.QuantizedMatMul(x, weight, bias, output);

    public void Rope(DeviceTensor x, ForwardBatch batch, RopeSpec rope) => inner.Rope(x, batch, rope);

    public void SiluMul(DeviceTensor gate, DeviceTensor up, DeviceTensor output) => inner.SiluMul(gate, up, output);

    public void Add(DeviceTensor a, DeviceTensor b, DeviceTensor output) => inner.Add(a, b, output);

    public void Attention(DeviceTensor q, DeviceTensor k, DeviceTensor v, DeviceTensor keyCache, DeviceTensor valueCache, ForwardBatch batch, float scale, DeviceTensor output) =>
        inner.Attention(q, k, v, keyCache, valueCache, batch, scale, output);

    public void GatherLogitRows(DeviceTensor x, ForwardBatch batch, DeviceTensor output) => inner.GatherLogitRows(x, batch, output);

    public void CopyColumns(DeviceTensor x, int xOffset, DeviceTensor output, int outputOffset, int count) => inner.CopyColumns(x, xOffset, output, outputOffset, count);

    public void HeadMatMul(DeviceTensor x, DeviceTensor weight, DeviceTensor output) => inner.HeadMatMul(x, weight, output);

    public void LatentAttention(DeviceTensor q, DeviceTensor latent, DeviceTensor latentCache, ForwardBatch batch, float scale, int valueDim, DeviceTensor output) =>
        inner.LatentAttention(q, latent, latentCache, batch, scale, valueDim, output);

    public void MoeRoute(DeviceTensor routerLogits, DeviceTensor? correctionBias, MoeRouting routing, Span<int> expertIds, Span<float> weights) =>
        inner.MoeRoute(routerLogits, correctionBias, routing, expertIds, weights);

    public void GatherRows(DeviceTensor x, int[] rows, DeviceTensor output) => inner.GatherRows(x, rows, output);

    public void ScatterAddRows(DeviceTensor x, int[] rows, float[] weights, DeviceTensor output) => inner.ScatterAddRows(x, rows, weights, output);

    public void GatherEmbedding(DeviceTensor table, int[] ids, DeviceTensor output) => inner.GatherEmbedding(table, ids, output);

    public void LayerNorm(DeviceTensor x, DeviceTensor weight, DeviceTensor bias, float eps, DeviceTensor output) => inner.LayerNorm(x, weight, bias, eps, output);

    public void Gelu(DeviceTensor x, DeviceTensor output) => inner.Gelu(x, output);

    public void Tanh(DeviceTensor x, DeviceTensor output) => inner.Tanh(x, output);

    public void BidirectionalAttention(DeviceTensor q, DeviceTensor k, DeviceTensor v, int[] sequenceStarts, float scale, DeviceTensor output) =>
        inner.BidirectionalAttention(q, k, v, sequenceStarts, scale, output);

    public void Dispose() => inner.Dispose();
}
