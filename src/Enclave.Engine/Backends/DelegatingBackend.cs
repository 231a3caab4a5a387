using Enclave.Engine.Formats;

namespace Enclave.Engine.Backends;

/// <summary>
/// A backend that hands every operation to another one, for decorators that change a few (a gate before each step, a
/// different weight layout): override those, and the rest, the optional operations included, run on the inner
/// backend as they would without the wrapper. Disposing the wrapper disposes the inner backend.
/// </summary>
public abstract class DelegatingBackend(IBackend inner) : IBackend
{
    /// <summary>The backend doing the work.</summary>
    protected IBackend Inner { get; } = inner;

    public virtual string Name => Inner.Name;

    public virtual bool SamplesOnBackend => Inner.SamplesOnBackend;

    public virtual bool StacksWeights => Inner.StacksWeights;

    public virtual bool FusesGatedMlp => Inner.FusesGatedMlp;

    public virtual int MoeExpertsOnBackendMaxPicks(int experts) => Inner.MoeExpertsOnBackendMaxPicks(experts);

    public virtual DeviceTensor Allocate(DType dtype, params int[] shape) => Inner.Allocate(dtype, shape);

    public virtual DeviceTensor LoadWeight(CheckpointTensor source) => Inner.LoadWeight(source);

    public virtual DeviceTensor? LoadWeightStack(ReadOnlySpan<CheckpointTensor> sources) => Inner.LoadWeightStack(sources);

    public virtual void UploadBytes(ReadOnlySpan<byte> source, DeviceTensor destination) => Inner.UploadBytes(source, destination);

    public virtual void Upload(ReadOnlySpan<float> source, DeviceTensor destination) => Inner.Upload(source, destination);

    public virtual void Download(DeviceTensor source, Span<float> destination) => Inner.Download(source, destination);

    public virtual void Argmax(DeviceTensor logits, Span<int> tokenIds) => Inner.Argmax(logits, tokenIds);

    public virtual void Sample(DeviceTensor logits, ReadOnlySpan<Sampling.RowSampling> rows, Span<int> tokenIds) => Inner.Sample(logits, rows, tokenIds);

    public virtual bool SupportsKvCache(KvCache.KvCacheSpec spec) => Inner.SupportsKvCache(spec);

    public virtual void PrepareStep(ForwardBatch batch) => Inner.PrepareStep(batch);

    public virtual void Embedding(DeviceTensor table, ForwardBatch batch, DeviceTensor output) => Inner.Embedding(table, batch, output);

    public virtual void RmsNorm(DeviceTensor x, DeviceTensor weight, float eps, DeviceTensor output) => Inner.RmsNorm(x, weight, eps, output);

    public virtual void AddRmsNorm(DeviceTensor residual, DeviceTensor x, DeviceTensor weight, float eps, DeviceTensor output) =>
        Inner.AddRmsNorm(residual, x, weight, eps, output);

    public virtual void MatMul(DeviceTensor x, DeviceTensor weight, DeviceTensor? bias, DeviceTensor output) => Inner.MatMul(x, weight, bias, output);

    public virtual void MatMulShared(DeviceTensor x, ReadOnlySpan<MatMulTarget> targets) => Inner.MatMulShared(x, targets);

    public virtual void QuantizedMatMul(DeviceTensor x, QuantizedWeight weight, DeviceTensor? bias, DeviceTensor output) =>
        Inner.QuantizedMatMul(x, weight, bias, output);

    public virtual void Rope(DeviceTensor x, ForwardBatch batch, RopeSpec rope) => Inner.Rope(x, batch, rope);

    public virtual void SiluMul(DeviceTensor gate, DeviceTensor up, DeviceTensor output) => Inner.SiluMul(gate, up, output);

    public virtual void SiluGatedMatMul(DeviceTensor x, MatMulTarget gate, MatMulTarget up) => Inner.SiluGatedMatMul(x, gate, up);

    public virtual void SiluGatedMlp(DeviceTensor x, MatMulTarget gate, MatMulTarget up, MatMulTarget down) => Inner.SiluGatedMlp(x, gate, up, down);

    public virtual void Add(DeviceTensor a, DeviceTensor b, DeviceTensor output) => Inner.Add(a, b, output);

    public virtual void Attention(DeviceTensor q, DeviceTensor k, DeviceTensor v, DeviceTensor keyCache, DeviceTensor valueCache, ForwardBatch batch, float scale,
        DeviceTensor output) => Inner.Attention(q, k, v, keyCache, valueCache, batch, scale, output);

    public virtual void RopeAttention(DeviceTensor q, DeviceTensor k, DeviceTensor v, DeviceTensor keyCache, DeviceTensor valueCache, ForwardBatch batch, RopeSpec rope,
        float scale, DeviceTensor output) => Inner.RopeAttention(q, k, v, keyCache, valueCache, batch, rope, scale, output);

    public virtual void GatherLogitRows(DeviceTensor x, ForwardBatch batch, DeviceTensor output) => Inner.GatherLogitRows(x, batch, output);

    public virtual void CopyColumns(DeviceTensor x, int xOffset, DeviceTensor output, int outputOffset, int count) =>
        Inner.CopyColumns(x, xOffset, output, outputOffset, count);

    public virtual void HeadMatMul(DeviceTensor x, DeviceTensor weight, DeviceTensor output) => Inner.HeadMatMul(x, weight, output);

    public virtual void LatentNormRope(DeviceTensor latent, DeviceTensor normWeight, float eps, ForwardBatch batch, RopeSpec rope, DeviceTensor compressed, DeviceTensor pe) =>
        Inner.LatentNormRope(latent, normWeight, eps, batch, rope, compressed, pe);

    public virtual void LatentQuery(DeviceTensor q, DeviceTensor keyAbsorb, ForwardBatch batch, RopeSpec rope, DeviceTensor qFull, DeviceTensor qNope, DeviceTensor qPe,
        DeviceTensor qLatent) => Inner.LatentQuery(q, keyAbsorb, batch, rope, qFull, qNope, qPe, qLatent);

    public virtual void LatentAttention(DeviceTensor q, DeviceTensor latent, DeviceTensor latentCache, ForwardBatch batch, float scale, int valueDim, DeviceTensor output) =>
        Inner.LatentAttention(q, latent, latentCache, batch, scale, valueDim, output);

    public virtual void MoeRoute(DeviceTensor routerLogits, DeviceTensor? correctionBias, MoeRouting routing, Span<int> expertIds, Span<float> weights) =>
        Inner.MoeRoute(routerLogits, correctionBias, routing, expertIds, weights);

    public virtual void MoeExperts(DeviceTensor x, DeviceTensor routerLogits, DeviceTensor? correctionBias, MoeRouting routing, DeviceTensor gateUp, DeviceTensor down,
        DeviceTensor output) => Inner.MoeExperts(x, routerLogits, correctionBias, routing, gateUp, down, output);

    public virtual void GatherRows(DeviceTensor x, int[] rows, DeviceTensor output) => Inner.GatherRows(x, rows, output);

    public virtual void ScatterAddRows(DeviceTensor x, int[] rows, float[] weights, DeviceTensor output) => Inner.ScatterAddRows(x, rows, weights, output);

    public virtual void GatherEmbedding(DeviceTensor table, int[] ids, DeviceTensor output) => Inner.GatherEmbedding(table, ids, output);

    public virtual void LayerNorm(DeviceTensor x, DeviceTensor weight, DeviceTensor bias, float eps, DeviceTensor output) => Inner.LayerNorm(x, weight, bias, eps, output);

    public virtual void Gelu(DeviceTensor x, DeviceTensor output) => Inner.Gelu(x, output);

    public virtual void Tanh(DeviceTensor x, DeviceTensor output) => Inner.Tanh(x, output);

    public virtual void BidirectionalAttention(DeviceTensor q, DeviceTensor k, DeviceTensor v, int[] sequenceStarts, float scale, DeviceTensor output) =>
        Inner.BidirectionalAttention(q, k, v, sequenceStarts, scale, output);

    public void Dispose()
    {
        Dispose(true);
        GC.SuppressFinalize(this);
    }

    protected virtual void Dispose(bool disposing)
    {
        if (disposing)
        {
            Inner.Dispose();
        }
    }
}
