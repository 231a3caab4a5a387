using System.Diagnostics;
using System.Globalization;
using System.Text;
using Enclave.Engine.Formats;

namespace Enclave.Engine.Backends;

/// <summary>
/// Wraps a backend and times every operation, grouped by operation and weight shape, to say where a step's time
/// goes (<c>enclave bench --profile</c>). The CPU backend runs each operation before returning, so the times are the
/// operations' own; on an asynchronous backend (CUDA) they are the host's enqueue times, and the wait for the device
/// shows up in <see cref="Download"/> (or <see cref="Argmax"/> for greedy steps). The wrapper does not offer
/// <see cref="IDecodeGraphs"/>, so a profiled CUDA run launches every op eagerly and each one is timed.
/// </summary>
public sealed class ProfilingBackend : IBackend
{
    private readonly Dictionary<OpKey, OpTotals> _totals = [];

    public ProfilingBackend(IBackend inner)
    {
        Inner = inner;
    }

    /// <summary>The backend doing the work.</summary>
    public IBackend Inner { get; }

    public string Name => Inner.Name;

    /// <summary>Forgets the times gathered so far (to leave warm-up out of the profile).</summary>
    public void Reset() => _totals.Clear();

    /// <summary>One line per operation and shape, the most expensive first, with its share of the total.</summary>
    public string Report(string title)
    {
        var rows = _totals.OrderByDescending(p => p.Value.Ticks).ToList();
        var total = rows.Sum(p => p.Value.Ticks);
        var text = new StringBuilder();
        text.AppendLine(CultureInfo.InvariantCulture, $"profile      {title}: {total * 1000.0 / Stopwatch.Frequency:F1} ms in {rows.Sum(p => p.Value.Calls)} operations");
        foreach (var (key, value) in rows)
        {
            var ms = value.Ticks * 1000.0 / Stopwatch.Frequency;
            text.AppendLine(CultureInfo.InvariantCulture, $"  {100.0 * value.Ticks / Math.Max(1, total),5:F1}%  {ms,9:F2} ms  {value.Calls,7} calls  {ms * 1000 / value.Calls,9:F1} µs/call  {key}");
        }

        return text.ToString();
    }

    private long Start() => Stopwatch.GetTimestamp();

    private void Stop(long start, string op, DeviceTensor? weight = null, long tokens = 0, DType? dtype = null)
    {
        var elapsed = Stopwatch.GetTimestamp() - start;
        var key = new OpKey(op, dtype ?? weight?.DType, weight is null ? 0 : weight.Shape[0], weight is { Rank: > 1 } ? weight.Shape[1] : 0, tokens > 1);
        ref var totals = ref System.Runtime.InteropServices.CollectionsMarshal.GetValueRefOrAddDefault(_totals, key, out _);
        totals.Ticks += elapsed;
        totals.Calls++;
    }

    public DeviceTensor Allocate(DType dtype, params int[] shape) => Inner.Allocate(dtype, shape);

    public DeviceTensor LoadWeight(CheckpointTensor source) => Inner.LoadWeight(source);

    public DeviceTensor? LoadWeightStack(ReadOnlySpan<CheckpointTensor> sources) => Inner.LoadWeightStack(sources);

    public bool StacksWeights => Inner.StacksWeights;

    public bool SupportsKvCache(KvCache.KvCacheSpec spec) => Inner.SupportsKvCache(spec);

    public void UploadBytes(ReadOnlySpan<byte> source, DeviceTensor destination)
    {
        var t = Start();
        Inner.UploadBytes(source, destination);
        Stop(t, "upload");
    }

    public void Upload(ReadOnlySpan<float> source, DeviceTensor destination)
    {
        var t = Start();
        Inner.Upload(source, destination);
        Stop(t, "upload");
    }

    public void Download(DeviceTensor source, Span<float> destination)
    {
        var t = Start();
        Inner.Download(source, destination);
        Stop(t, "download");
    }

    public void Argmax(DeviceTensor logits, Span<int> tokenIds)
    {
        var t = Start();
        Inner.Argmax(logits, tokenIds);
        Stop(t, "argmax");
    }

    public void Sample(DeviceTensor logits, ReadOnlySpan<Sampling.RowSampling> rows, Span<int> tokenIds)
    {
        var t = Start();
        Inner.Sample(logits, rows, tokenIds);
        Stop(t, "sample");
    }

    public bool SamplesOnBackend => Inner.SamplesOnBackend;

    public void PrepareStep(ForwardBatch batch)
    {
        var t = Start();
        Inner.PrepareStep(batch);
        Stop(t, "prepare step");
    }

    public void Embedding(DeviceTensor table, ForwardBatch batch, DeviceTensor output)
    {
        var t = Start();
        Inner.Embedding(table, batch, output);
        Stop(t, "embedding", table, batch.TokenCount);
    }

    public void RmsNorm(DeviceTensor x, DeviceTensor weight, float eps, DeviceTensor output)
    {
        var t = Start();
        Inner.RmsNorm(x, weight, eps, output);
        Stop(t, "rmsnorm", tokens: x.Shape[0]);
    }

    public void AddRmsNorm(DeviceTensor residual, DeviceTensor x, DeviceTensor weight, float eps, DeviceTensor output)
    {
        var t = Start();
        Inner.AddRmsNorm(residual, x, weight, eps, output);
        Stop(t, "add+rmsnorm", tokens: x.Shape[0]);
    }

    public void MatMul(DeviceTensor x, DeviceTensor weight, DeviceTensor? bias, DeviceTensor output)
    {
        var t = Start();
        Inner.MatMul(x, weight, bias, output);
        Stop(t, "matmul", weight, x.Shape[0]);
    }

    public void MatMulShared(DeviceTensor x, ReadOnlySpan<MatMulTarget> targets)
    {
        var t = Start();
        Inner.MatMulShared(x, targets);
        Stop(t, targets.Length == 3 ? "matmul shared (3)" : "matmul shared (2)", targets[0].Weight, x.Shape[0]);
    }

    public void QuantizedMatMul(DeviceTensor x, QuantizedWeight weight, DeviceTensor? bias, DeviceTensor output)
    {
        var t = Start();
        Inner.QuantizedMatMul(x, weight, bias, output);
        Stop(t, "matmul " + weight.GetType().Name, tokens: x.Shape[0]);
    }

    public void Rope(DeviceTensor x, ForwardBatch batch, RopeSpec rope)
    {
        var t = Start();
        Inner.Rope(x, batch, rope);
        Stop(t, "rope", tokens: batch.TokenCount);
    }

    public void SiluMul(DeviceTensor gate, DeviceTensor up, DeviceTensor output)
    {
        var t = Start();
        Inner.SiluMul(gate, up, output);
        Stop(t, "silu*mul", tokens: gate.Shape[0]);
    }

    public void SiluGatedMatMul(DeviceTensor x, MatMulTarget gate, MatMulTarget up)
    {
        var t = Start();
        Inner.SiluGatedMatMul(x, gate, up);
        Stop(t, "matmul silu-gated", gate.Weight, x.Shape[0]);
    }

    public bool FusesGatedMlp => Inner.FusesGatedMlp;

    public void SiluGatedMlp(DeviceTensor x, MatMulTarget gate, MatMulTarget up, MatMulTarget down)
    {
        if (!Inner.FusesGatedMlp)
        {
            IBackend.SiluGatedMlpAsParts(this, x, gate, up, down); // the parts, each timed as its own operation
            return;
        }

        var t = Start();
        Inner.SiluGatedMlp(x, gate, up, down);
        Stop(t, "gated mlp", gate.Weight, x.Shape[0]);
    }

    public void Add(DeviceTensor a, DeviceTensor b, DeviceTensor output)
    {
        var t = Start();
        Inner.Add(a, b, output);
        Stop(t, "add", tokens: a.Shape[0]);
    }

    public void Attention(DeviceTensor q, DeviceTensor k, DeviceTensor v, DeviceTensor keyCache, DeviceTensor valueCache, ForwardBatch batch, float scale, DeviceTensor output)
    {
        var t = Start();
        Inner.Attention(q, k, v, keyCache, valueCache, batch, scale, output);
        Stop(t, "attention", tokens: batch.TokenCount);
    }

    public void RopeAttention(DeviceTensor q, DeviceTensor k, DeviceTensor v, DeviceTensor keyCache, DeviceTensor valueCache, ForwardBatch batch, RopeSpec rope, float scale, DeviceTensor output)
    {
        var t = Start();
        Inner.RopeAttention(q, k, v, keyCache, valueCache, batch, rope, scale, output);
        Stop(t, "rope+attention", tokens: batch.TokenCount);
    }

    public void GatherLogitRows(DeviceTensor x, ForwardBatch batch, DeviceTensor output)
    {
        var t = Start();
        Inner.GatherLogitRows(x, batch, output);
        Stop(t, "gather logit rows", tokens: batch.TokenCount);
    }

    public void CopyColumns(DeviceTensor x, int xOffset, DeviceTensor output, int outputOffset, int count)
    {
        var t = Start();
        Inner.CopyColumns(x, xOffset, output, outputOffset, count);
        Stop(t, "copy columns", tokens: x.Shape[0]);
    }

    public void HeadMatMul(DeviceTensor x, DeviceTensor weight, DeviceTensor output)
    {
        var t = Start();
        Inner.HeadMatMul(x, weight, output);
        Stop(t, "head matmul", weight, x.Shape[0]);
    }

    public void LatentNormRope(DeviceTensor latent, DeviceTensor normWeight, float eps, ForwardBatch batch, RopeSpec rope, DeviceTensor compressed, DeviceTensor pe)
    {
        var t = Start();
        Inner.LatentNormRope(latent, normWeight, eps, batch, rope, compressed, pe);
        Stop(t, "latent norm + rope", tokens: batch.TokenCount);
    }

    public void LatentQuery(DeviceTensor q, DeviceTensor keyAbsorb, ForwardBatch batch, RopeSpec rope, DeviceTensor qFull, DeviceTensor qNope, DeviceTensor qPe, DeviceTensor qLatent)
    {
        var t = Start();
        Inner.LatentQuery(q, keyAbsorb, batch, rope, qFull, qNope, qPe, qLatent);
        Stop(t, "latent query", keyAbsorb, q.Shape[0]);
    }

    public void LatentAttention(DeviceTensor q, DeviceTensor latent, DeviceTensor latentCache, ForwardBatch batch, float scale, int valueDim, DeviceTensor output)
    {
        var t = Start();
        Inner.LatentAttention(q, latent, latentCache, batch, scale, valueDim, output);
        Stop(t, "latent attention", tokens: batch.TokenCount);
    }

    public void MoeRoute(DeviceTensor routerLogits, DeviceTensor? correctionBias, MoeRouting routing, Span<int> expertIds, Span<float> weights)
    {
        var t = Start();
        Inner.MoeRoute(routerLogits, correctionBias, routing, expertIds, weights);
        Stop(t, "moe route", tokens: routerLogits.Shape[0]);
    }

    public void GatherRows(DeviceTensor x, int[] rows, DeviceTensor output)
    {
        var t = Start();
        Inner.GatherRows(x, rows, output);
        Stop(t, "gather rows", tokens: rows.Length);
    }

    public void ScatterAddRows(DeviceTensor x, int[] rows, float[] weights, DeviceTensor output)
    {
        var t = Start();
        Inner.ScatterAddRows(x, rows, weights, output);
        Stop(t, "scatter-add rows", tokens: rows.Length);
    }

    public void GatherEmbedding(DeviceTensor table, int[] ids, DeviceTensor output)
    {
        var t = Start();
        Inner.GatherEmbedding(table, ids, output);
        Stop(t, "gather embedding", table, ids.Length);
    }

    public void LayerNorm(DeviceTensor x, DeviceTensor weight, DeviceTensor bias, float eps, DeviceTensor output)
    {
        var t = Start();
        Inner.LayerNorm(x, weight, bias, eps, output);
        Stop(t, "layernorm", tokens: x.Shape[0]);
    }

    public void Gelu(DeviceTensor x, DeviceTensor output)
    {
        var t = Start();
        Inner.Gelu(x, output);
        Stop(t, "gelu", tokens: x.Shape[0]);
    }

    public void Tanh(DeviceTensor x, DeviceTensor output)
    {
        var t = Start();
        Inner.Tanh(x, output);
        Stop(t, "tanh", tokens: x.Shape[0]);
    }

    public void BidirectionalAttention(DeviceTensor q, DeviceTensor k, DeviceTensor v, int[] sequenceStarts, float scale, DeviceTensor output)
    {
        var t = Start();
        Inner.BidirectionalAttention(q, k, v, sequenceStarts, scale, output);
        Stop(t, "bidirectional attention", tokens: q.Shape[0]);
    }

    public void Dispose() => Inner.Dispose();

    private readonly record struct OpKey(string Op, DType? WeightType, int Rows, int Columns, bool Prefill)
    {
        public override string ToString() =>
            Op + (WeightType is { } type ? $" {type}" : string.Empty) + (Rows > 0 ? $" [{Rows} x {Columns}]" : string.Empty) + (Prefill ? " (prefill)" : " (decode)");
    }

    private struct OpTotals
    {
        public long Ticks;
        public long Calls;
    }
}
