using Enclave.Engine.Backends;
using Enclave.Engine.Backends.Reference;
using Enclave.Engine.Formats;

namespace Enclave.Server.Tests.Support;

/// <summary>
/// The reference backend with a gate in front of every step: while closed, the engine loop waits inside its step,
/// so tests can hold requests in a known state (running, waiting) without racing the engine.
/// </summary>
public sealed class GatedBackend : IBackend
{
    private readonly ReferenceBackend inner = new();
    private readonly ManualResetEventSlim open = new(true);
    private readonly SemaphoreSlim entered = new(0);

    public string Name => "gated " + inner.Name;

    public void Close() => open.Reset();

    public void Open() => open.Set();

    /// <summary>Waits until the engine has entered a step (and, if the gate is closed, is held there).</summary>
    public Task<bool> WaitForStepAsync(TimeSpan timeout) => entered.WaitAsync(timeout);

    public void PrepareStep(ForwardBatch batch)
    {
        entered.Release();
        open.Wait(TimeSpan.FromMinutes(2));
        inner.PrepareStep(batch);
    }

    public DeviceTensor Allocate(DType dtype, params int[] shape) => inner.Allocate(dtype, shape);

    public DeviceTensor LoadWeight(CheckpointTensor source) => inner.LoadWeight(source);

    public void UploadBytes(ReadOnlySpan<byte> source, DeviceTensor destination) => inner.UploadBytes(source, destination);

    public void Upload(ReadOnlySpan<float> source, DeviceTensor destination) => inner.Upload(source, destination);

    public void Download(DeviceTensor source, Span<float> destination) => inner.Download(source, destination);

    public void Argmax(DeviceTensor logits, Span<int> tokenIds) => inner.Argmax(logits, tokenIds);

    public void Sample(DeviceTensor logits, ReadOnlySpan<Enclave.Engine.Sampling.RowSampling> rows, Span<int> tokenIds) => inner.Sample(logits, rows, tokenIds);

    public bool SamplesOnBackend => inner.SamplesOnBackend;

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

    public void GatherEmbedding(DeviceTensor table, int[] ids, DeviceTensor output) => inner.GatherEmbedding(table, ids, output);

    public void LayerNorm(DeviceTensor x, DeviceTensor weight, DeviceTensor bias, float eps, DeviceTensor output) => inner.LayerNorm(x, weight, bias, eps, output);

    public void Gelu(DeviceTensor x, DeviceTensor output) => inner.Gelu(x, output);

    public void Tanh(DeviceTensor x, DeviceTensor output) => inner.Tanh(x, output);

    public void BidirectionalAttention(DeviceTensor q, DeviceTensor k, DeviceTensor v, int[] sequenceStarts, float scale, DeviceTensor output) =>
        inner.BidirectionalAttention(q, k, v, sequenceStarts, scale, output);

    public void Dispose()
    {
        open.Set();
        inner.Dispose();
        open.Dispose();
        entered.Dispose();
    }

    public void CopyColumns(DeviceTensor x, int xOffset, DeviceTensor output, int outputOffset, int count) => inner.CopyColumns(x, xOffset, output, outputOffset, count);

    public void HeadMatMul(DeviceTensor x, DeviceTensor weight, DeviceTensor output) => inner.HeadMatMul(x, weight, output);

    public void LatentAttention(DeviceTensor q, DeviceTensor latent, DeviceTensor latentCache, ForwardBatch batch, float scale, int valueDim, DeviceTensor output) =>
        inner.LatentAttention(q, latent, latentCache, batch, scale, valueDim, output);

    public void MoeRoute(DeviceTensor routerLogits, DeviceTensor? correctionBias, MoeRouting routing, Span<int> expertIds, Span<float> weights) =>
        inner.MoeRoute(routerLogits, correctionBias, routing, expertIds, weights);

    public void GatherRows(DeviceTensor x, int[] rows, DeviceTensor output) => inner.GatherRows(x, rows, output);

    public void ScatterAddRows(DeviceTensor x, int[] rows, float[] weights, DeviceTensor output) => inner.ScatterAddRows(x, rows, weights, output);
}
