using Enclave.Engine.Formats;

namespace Enclave.Engine.Backends.Reference;

/// <summary>
/// A deliberately slow, readable, single-threaded implementation of every backend operation, accumulating in
/// float64. It is the yardstick the fast kernels are tested against and a way to debug a model port
/// (<c>--device reference</c>); it copies weights to float32 and must never be used for serving.
/// </summary>
public sealed class ReferenceBackend : IBackend
{
    public string Name => "reference (scalar, float64 accumulation)";

    public DeviceTensor Allocate(DType dtype, params int[] shape) => new HostTensor(dtype, shape);

    public DeviceTensor LoadWeight(CheckpointTensor source)
    {
        var t = new HostTensor(DType.F32, source.Shape);
        var bytes = source.Bytes;
        if (source.DType.IsQuantized())
        {
            Formats.Gguf.GgmlQuants.Dequantize(source.DType, bytes, t.Data.AsSpan(0, checked((int)t.ElementCount)));
            return t;
        }

        for (var i = 0; i < t.ElementCount; i++)
        {
            t.Data[i] = ReadElement(bytes, source.DType, i);
        }

        return t;
    }

    public void UploadBytes(ReadOnlySpan<byte> source, DeviceTensor destination)
    {
        var t = (HostTensor)destination;
        for (var i = 0; i < t.ElementCount; i++)
        {
            t.Data[t.Offset + i] = ReadElement(source, t.DType, i);
        }
    }

    public void Upload(ReadOnlySpan<float> source, DeviceTensor destination) => source.CopyTo(((HostTensor)destination).Span);

    public void Download(DeviceTensor source, Span<float> destination) => ((HostTensor)source).Span.CopyTo(destination);

    /// <summary>The definition, row by row: the first strictly larger value wins, so ties keep the lowest index and NaN never wins.</summary>
    public void Argmax(DeviceTensor logits, Span<int> tokenIds)
    {
        var values = ((HostTensor)logits).Span;
        var vocab = logits.Columns;
        if (tokenIds.Length != logits.Rows)
        {
            throw new ArgumentException($"Argmax: {tokenIds.Length} ids for logits {logits}");
        }

        for (var r = 0; r < tokenIds.Length; r++)
        {
            var row = values.Slice(r * vocab, vocab);
            var best = 0;
            var bestValue = double.NegativeInfinity;
            for (var i = 0; i < row.Length; i++)
            {
                if (row[i] > bestValue)
                {
                    bestValue = row[i];
                    best = i;
                }
            }

            tokenIds[r] = best;
        }
    }

    private readonly Sampling.Sampler sampler = new();

    /// <summary>The definition: the host sampler row by row.</summary>
    public void Sample(DeviceTensor logits, ReadOnlySpan<Sampling.RowSampling> rows, Span<int> tokenIds)
    {
        var values = ((HostTensor)logits).Span;
        var vocab = logits.Columns;
        if (rows.Length != logits.Rows || tokenIds.Length != logits.Rows)
        {
            throw new ArgumentException($"Sample: {rows.Length} rows and {tokenIds.Length} ids for logits {logits}");
        }

        for (var r = 0; r < rows.Length; r++)
        {
            tokenIds[r] = sampler.SampleRow(values.Slice(r * vocab, vocab), rows[r]);
        }
    }

    public bool SamplesOnBackend => true;

    public void PrepareStep(ForwardBatch batch)
    {
    }

    public void Embedding(DeviceTensor table, ForwardBatch batch, DeviceTensor output)
    {
        var w = (HostTensor)table;
        var o = (HostTensor)output;
        var n = w.Columns;
        for (var t = 0; t < batch.TokenCount; t++)
        {
            w.Span.Slice(batch.TokenIds[t] * n, n).CopyTo(o.Span.Slice(t * n, n));
        }
    }

    public void RmsNorm(DeviceTensor x, DeviceTensor weight, float eps, DeviceTensor output)
    {
        var xs = ((HostTensor)x).Span;
        var w = ((HostTensor)weight).Span;
        var o = ((HostTensor)output).Span;
        var n = x.Columns;
        for (var r = 0; r < x.Rows; r++)
        {
            var row = xs.Slice((int)(r * n), n);
            double sum = 0;
            foreach (var v in row)
            {
                sum += (double)v * v;
            }

            // HF computes in float32: x * rsqrt(mean + eps), then casts and multiplies by weight.
            var inv = 1.0f / MathF.Sqrt((float)(sum / n) + eps);
            for (var i = 0; i < n; i++)
            {
                o[(int)(r * n) + i] = w[i] * (row[i] * inv);
            }
        }
    }

    public void AddRmsNorm(DeviceTensor residual, DeviceTensor x, DeviceTensor weight, float eps, DeviceTensor output)
    {
        Add(residual, x, residual);
        RmsNorm(residual, weight, eps, output);
    }

    public void MatMul(DeviceTensor x, DeviceTensor weight, DeviceTensor? bias, DeviceTensor output)
    {
        var xs = ((HostTensor)x).Span;
        var w = ((HostTensor)weight).Span;
        var b = bias is null ? default : ((HostTensor)bias).Span;
        var o = ((HostTensor)output).Span;
        int inDim = x.Columns, outDim = weight.Shape[0];
        if (weight.Columns != inDim || output.Columns != outDim || output.Rows != x.Rows)
        {
            throw new ArgumentException($"matmul shape mismatch: x {x}, weight {weight}, output {output}");
        }

        for (var t = 0; t < x.Rows; t++)
        {
            for (var j = 0; j < outDim; j++)
            {
                double acc = bias is null ? 0 : b[j];
                for (var k = 0; k < inDim; k++)
                {
                    acc += (double)xs[(int)(t * inDim) + k] * w[(j * inDim) + k];
                }

                o[(int)(t * outDim) + j] = (float)acc;
            }
        }
    }

    public void QuantizedMatMul(DeviceTensor x, QuantizedWeight weight, DeviceTensor? bias, DeviceTensor output)
    {
        var xs = ((HostTensor)x).Span;
        var data = ((HostTensor)weight.Data).Span;   // decoded fp8 values, or byte values of packed nibbles
        var scales = ((HostTensor)weight.Scales).Span;
        var zeros = weight.Zeros is null ? default : ((HostTensor)weight.Zeros).Span;
        var b = bias is null ? default : ((HostTensor)bias).Span;
        var o = ((HostTensor)output).Span;
        int inDim = weight.InFeatures, outDim = weight.OutFeatures;
        if (x.Columns != inDim || output.Columns != outDim || output.Rows != x.Rows)
        {
            throw new ArgumentException($"quantized matmul shape mismatch: x {x}, weight {weight}, output {output}");
        }

        var scaleColumns = weight.Scales.Columns;
        for (var j = 0; j < outDim; j++)
        {
            // Dequantize row j by the format's definition, then an ordinary float64 dot product.
            var row = new double[inDim];
            for (var k = 0; k < inDim; k++)
            {
                var scale = scales[((j / weight.BlockRows) * scaleColumns) + (k / weight.BlockColumns)];
                if (weight.Encoding == WeightEncoding.Fp8Block)
                {
                    row[k] = (double)data[(j * inDim) + k] * scale;
                }
                else
                {
                    var packed = (int)data[((j * inDim) + k) / 2];
                    var q = (k & 1) == 0 ? packed & 0xF : packed >> 4;
                    row[k] = (double)(float)((q - (int)zeros[(j * scaleColumns) + (k / weight.BlockColumns)]) * scale);
                }
            }

            for (var t = 0; t < x.Rows; t++)
            {
                double acc = bias is null ? 0 : b[j];
                for (var k = 0; k < inDim; k++)
                {
                    acc += xs[(int)(t * inDim) + k] * row[k];
                }

                o[(int)(t * outDim) + j] = (float)acc;
            }
        }
    }

    public void Rope(DeviceTensor x, ForwardBatch batch, RopeSpec rope)
    {
        var xs = ((HostTensor)x).Span;
        int heads = x.Shape[1], headDim = x.Shape[2], half = rope.RotaryDim / 2;
        for (var t = 0; t < batch.TokenCount; t++)
        {
            for (var h = 0; h < heads; h++)
            {
                var head = xs.Slice(((t * heads) + h) * headDim, headDim);
                for (var i = 0; i < half; i++)
                {
                    var freq = batch.Positions[t] * rope.InverseFrequencies[i];
                    var cos = MathF.Cos(freq) * rope.AttentionScaling;
                    var sin = MathF.Sin(freq) * rope.AttentionScaling;
                    int a = rope.Interleaved ? 2 * i : i, b = rope.Interleaved ? (2 * i) + 1 : i + half;
                    float x0 = head[a], x1 = head[b];
                    head[a] = (x0 * cos) - (x1 * sin);
                    head[b] = (x1 * cos) + (x0 * sin);
                }
            }
        }
    }

    public void SiluMul(DeviceTensor gate, DeviceTensor up, DeviceTensor output)
    {
        var g = ((HostTensor)gate).Span;
        var u = ((HostTensor)up).Span;
        var o = ((HostTensor)output).Span;
        for (var i = 0; i < g.Length; i++)
        {
            var v = (double)g[i];
            o[i] = (float)(v / (1 + Math.Exp(-v)) * u[i]);
        }
    }

    public void Add(DeviceTensor a, DeviceTensor b, DeviceTensor output)
    {
        var x = ((HostTensor)a).Span;
        var y = ((HostTensor)b).Span;
        var o = ((HostTensor)output).Span;
        for (var i = 0; i < x.Length; i++)
        {
            o[i] = x[i] + y[i];
        }
    }

    public void Attention(DeviceTensor q, DeviceTensor k, DeviceTensor v, DeviceTensor keyCache, DeviceTensor valueCache, ForwardBatch batch, float scale, DeviceTensor output)
    {
        var qs = ((HostTensor)q).Span;
        var ks = ((HostTensor)k).Span;
        var vs = ((HostTensor)v).Span;
        var kc = ((HostTensor)keyCache).Span;
        var vc = ((HostTensor)valueCache).Span;
        var o = ((HostTensor)output).Span;
        int heads = q.Shape[1], headDim = q.Shape[2], kvHeads = k.Shape[1], blockSize = keyCache.Shape[1];
        var rowWidth = kvHeads * headDim;
        for (var t = 0; t < batch.TokenCount; t++)
        {
            ks.Slice(t * rowWidth, rowWidth).CopyTo(kc.Slice(batch.SlotMapping[t] * rowWidth, rowWidth));
            vs.Slice(t * rowWidth, rowWidth).CopyTo(vc.Slice(batch.SlotMapping[t] * rowWidth, rowWidth));
        }

        var group = heads / kvHeads;
        foreach (var seq in batch.Sequences)
        {
            for (var i = 0; i < seq.QueryLength; i++)
            {
                var t = seq.QueryStart + i;
                var position = seq.ContextLength - seq.QueryLength + i;
                for (var h = 0; h < heads; h++)
                {
                    var kvh = h / group;
                    var scores = new double[position + 1];
                    var max = double.NegativeInfinity;
                    for (var p = 0; p <= position; p++)
                    {
                        var slot = (seq.BlockTable[p / blockSize] * blockSize) + (p % blockSize);
                        double dot = 0;
                        for (var d = 0; d < headDim; d++)
                        {
                            dot += (double)qs[(((t * heads) + h) * headDim) + d] * kc[(slot * rowWidth) + (kvh * headDim) + d];
                        }

                        scores[p] = dot * scale;
                        max = Math.Max(max, scores[p]);
                    }

                    double sum = 0;
                    for (var p = 0; p <= position; p++)
                    {
                        scores[p] = Math.Exp(scores[p] - max);
                        sum += scores[p];
                    }

                    for (var d = 0; d < headDim; d++)
                    {
                        double acc = 0;
                        for (var p = 0; p <= position; p++)
                        {
                            var slot = (seq.BlockTable[p / blockSize] * blockSize) + (p % blockSize);
                            acc += scores[p] * vc[(slot * rowWidth) + (kvh * headDim) + d];
                        }

                        o[(((t * heads) + h) * headDim) + d] = (float)(acc / sum);
                    }
                }
            }
        }
    }

    public void GatherLogitRows(DeviceTensor x, ForwardBatch batch, DeviceTensor output)
    {
        var xs = ((HostTensor)x).Span;
        var o = ((HostTensor)output).Span;
        var n = x.Columns;
        for (var i = 0; i < batch.LogitRows.Length; i++)
        {
            xs.Slice(batch.LogitRows[i] * n, n).CopyTo(o.Slice(i * n, n));
        }
    }

    public void CopyColumns(DeviceTensor x, int xOffset, DeviceTensor output, int outputOffset, int count)
    {
        var xs = ((HostTensor)x).Span;
        var o = ((HostTensor)output).Span;
        for (var r = 0; r < x.Rows; r++)
        {
            for (var c = 0; c < count; c++)
            {
                o[(int)(r * output.Columns) + outputOffset + c] = xs[(int)(r * x.Columns) + xOffset + c];
            }
        }
    }

    public void HeadMatMul(DeviceTensor x, DeviceTensor weight, DeviceTensor output)
    {
        var xs = ((HostTensor)x).Span;
        var w = ((HostTensor)weight).Span;
        var o = ((HostTensor)output).Span;
        int tokens = x.Shape[0], heads = x.Shape[1], inDim = x.Shape[2], outDim = weight.Shape[1];
        for (var t = 0; t < tokens; t++)
        {
            for (var h = 0; h < heads; h++)
            {
                for (var j = 0; j < outDim; j++)
                {
                    double acc = 0;
                    for (var k = 0; k < inDim; k++)
                    {
                        acc += (double)xs[(((t * heads) + h) * inDim) + k] * w[(((h * outDim) + j) * inDim) + k];
                    }

                    o[(((t * heads) + h) * outDim) + j] = (float)acc;
                }
            }
        }
    }

    public void LatentAttention(DeviceTensor q, DeviceTensor latent, DeviceTensor latentCache, ForwardBatch batch, float scale, int valueDim, DeviceTensor output)
    {
        var qs = ((HostTensor)q).Span;
        var ls = ((HostTensor)latent).Span;
        var cache = ((HostTensor)latentCache).Span;
        var o = ((HostTensor)output).Span;
        int heads = q.Shape[1], width = q.Shape[2], blockSize = latentCache.Shape[1];
        for (var t = 0; t < batch.TokenCount; t++)
        {
            ls.Slice(t * width, width).CopyTo(cache.Slice(batch.SlotMapping[t] * width, width));
        }

        foreach (var seq in batch.Sequences)
        {
            for (var i = 0; i < seq.QueryLength; i++)
            {
                var t = seq.QueryStart + i;
                var position = seq.ContextLength - seq.QueryLength + i;
                for (var h = 0; h < heads; h++)
                {
                    var query = qs.Slice(((t * heads) + h) * width, width);
                    var scores = new double[position + 1];
                    var max = double.NegativeInfinity;
                    for (var p = 0; p <= position; p++)
                    {
                        var row = cache.Slice(((seq.BlockTable[p / blockSize] * blockSize) + (p % blockSize)) * width, width);
                        double dot = 0;
                        for (var d = 0; d < width; d++)
                        {
                            dot += (double)query[d] * row[d];
                        }

                        scores[p] = dot * scale;
                        max = Math.Max(max, scores[p]);
                    }

                    double sum = 0;
                    for (var p = 0; p <= position; p++)
                    {
                        scores[p] = Math.Exp(scores[p] - max);
                        sum += scores[p];
                    }

                    for (var d = 0; d < valueDim; d++)
                    {
                        double acc = 0;
                        for (var p = 0; p <= position; p++)
                        {
                            acc += scores[p] * cache[(((seq.BlockTable[p / blockSize] * blockSize) + (p % blockSize)) * width) + d];
                        }

                        o[(((t * heads) + h) * valueDim) + d] = (float)(acc / sum);
                    }
                }
            }
        }
    }

    public void MoeRoute(DeviceTensor routerLogits, DeviceTensor? correctionBias, MoeRouting routing, Span<int> expertIds, Span<float> weights)
    {
        var logits = ((HostTensor)routerLogits).Span;
        var bias = correctionBias is null ? default : ((HostTensor)correctionBias).Span;
        int experts = routing.Experts, perGroup = experts / routing.Groups;
        for (var t = 0; t < routerLogits.Rows; t++)
        {
            var row = logits.Slice(t * experts, experts);
            var scores = new float[experts];
            if (routing.Scoring == MoeScoring.Sigmoid)
            {
                for (var e = 0; e < experts; e++)
                {
                    scores[e] = (float)(1 / (1 + Math.Exp(-(double)row[e])));
                }
            }
            else
            {
                var max = row.ToArray().Max();
                var sum = row.ToArray().Sum(v => Math.Exp((double)v - max));
                for (var e = 0; e < experts; e++)
                {
                    scores[e] = (float)(Math.Exp((double)row[e] - max) / sum);
                }
            }

            var choice = new float[experts];
            for (var e = 0; e < experts; e++)
            {
                choice[e] = correctionBias is null ? scores[e] : scores[e] + bias[e];
            }

            if (routing.Groups > 1)
            {
                var groupScores = new float[routing.Groups];
                for (var g = 0; g < routing.Groups; g++)
                {
                    var members = choice.Skip(g * perGroup).Take(perGroup).OrderByDescending(v => v).ToArray();
                    groupScores[g] = routing.GroupScore == MoeGroupScore.Max ? members[0] : members[0] + members[1];
                }

                var keep = TopIndices(groupScores, routing.TopKGroups);
                for (var e = 0; e < experts; e++)
                {
                    if (!keep.Contains(e / perGroup))
                    {
                        choice[e] = float.NegativeInfinity; // dropped groups can never be chosen, even over negative biased scores
                    }
                }
            }

            var chosen = TopIndices(choice, routing.TopK);
            var total = chosen.Sum(e => (double)scores[e]);
            for (var k = 0; k < routing.TopK; k++)
            {
                var w = (double)scores[chosen[k]];
                if (routing.NormalizeTopK)
                {
                    w = (float)w / (float)(total + 1e-20);
                }

                expertIds[(t * routing.TopK) + k] = chosen[k];
                weights[(t * routing.TopK) + k] = (float)w * routing.ScalingFactor;
            }
        }
    }

    public void GatherRows(DeviceTensor x, int[] rows, DeviceTensor output)
    {
        var xs = ((HostTensor)x).Span;
        var o = ((HostTensor)output).Span;
        var n = x.Columns;
        for (var i = 0; i < rows.Length; i++)
        {
            xs.Slice(rows[i] * n, n).CopyTo(o.Slice(i * n, n));
        }
    }

    public void ScatterAddRows(DeviceTensor x, int[] rows, float[] weights, DeviceTensor output)
    {
        var xs = ((HostTensor)x).Span;
        var o = ((HostTensor)output).Span;
        var n = x.Columns;
        for (var i = 0; i < rows.Length; i++)
        {
            for (var c = 0; c < n; c++)
            {
                o[(rows[i] * n) + c] += weights[i] * xs[(i * n) + c];
            }
        }
    }

    public void GatherEmbedding(DeviceTensor table, int[] ids, DeviceTensor output)
    {
        var w = (HostTensor)table;
        var o = (HostTensor)output;
        var n = w.Columns;
        for (var t = 0; t < ids.Length; t++)
        {
            if ((uint)ids[t] >= (uint)table.Shape[0])
            {
                throw new ArgumentOutOfRangeException(nameof(ids), $"id {ids[t]} outside a table of {table.Shape[0]} rows");
            }

            w.Span.Slice(ids[t] * n, n).CopyTo(o.Span.Slice(t * n, n));
        }
    }

    public void LayerNorm(DeviceTensor x, DeviceTensor weight, DeviceTensor bias, float eps, DeviceTensor output)
    {
        var xs = ((HostTensor)x).Span;
        var w = ((HostTensor)weight).Span;
        var b = ((HostTensor)bias).Span;
        var o = ((HostTensor)output).Span;
        var n = x.Columns;
        for (var r = 0; r < x.Rows; r++)
        {
            var row = xs.Slice((int)(r * n), n);
            double mean = 0;
            foreach (var v in row)
            {
                mean += v;
            }

            mean /= n;
            double variance = 0;
            foreach (var v in row)
            {
                variance += (v - mean) * (v - mean);
            }

            variance /= n;
            var inv = 1.0 / Math.Sqrt(variance + eps);
            for (var i = 0; i < n; i++)
            {
                o[(int)(r * n) + i] = (float)(((row[i] - mean) * inv * w[i]) + b[i]);
            }
        }
    }

    public void Gelu(DeviceTensor x, DeviceTensor output)
    {
        var xs = ((HostTensor)x).Span;
        var o = ((HostTensor)output).Span;
        for (var i = 0; i < xs.Length; i++)
        {
            double v = xs[i];
            o[i] = (float)(0.5 * v * (1 + DoubleErf.Erf(v / Math.Sqrt(2))));
        }
    }

    public void Tanh(DeviceTensor x, DeviceTensor output)
    {
        var xs = ((HostTensor)x).Span;
        var o = ((HostTensor)output).Span;
        for (var i = 0; i < xs.Length; i++)
        {
            o[i] = (float)Math.Tanh(xs[i]);
        }
    }

    public void BidirectionalAttention(DeviceTensor q, DeviceTensor k, DeviceTensor v, int[] sequenceStarts, float scale, DeviceTensor output)
    {
        var qs = ((HostTensor)q).Span;
        var ks = ((HostTensor)k).Span;
        var vs = ((HostTensor)v).Span;
        var o = ((HostTensor)output).Span;
        int heads = q.Shape[1], headDim = q.Shape[2];
        for (var s = 0; s + 1 < sequenceStarts.Length; s++)
        {
            int start = sequenceStarts[s], end = sequenceStarts[s + 1];
            var scores = new double[end - start];
            for (var t = start; t < end; t++)
            {
                for (var h = 0; h < heads; h++)
                {
                    var max = double.NegativeInfinity;
                    for (var j = start; j < end; j++)
                    {
                        double dot = 0;
                        for (var d = 0; d < headDim; d++)
                        {
                            dot += (double)qs[(((t * heads) + h) * headDim) + d] * ks[(((j * heads) + h) * headDim) + d];
                        }

                        scores[j - start] = dot * scale;
                        max = Math.Max(max, scores[j - start]);
                    }

                    double sum = 0;
                    for (var j = 0; j < scores.Length; j++)
                    {
                        scores[j] = Math.Exp(scores[j] - max);
                        sum += scores[j];
                    }

                    for (var d = 0; d < headDim; d++)
                    {
                        double acc = 0;
                        for (var j = start; j < end; j++)
                        {
                            acc += scores[j - start] * vs[(((j * heads) + h) * headDim) + d];
                        }

                        o[(((t * heads) + h) * headDim) + d] = (float)(acc / sum);
                    }
                }
            }
        }
    }

    public void Dispose()
    {
    }

    /// <summary>Indices of the k largest values, earlier index first on ties.</summary>
    private static int[] TopIndices(float[] values, int k) =>
        Enumerable.Range(0, values.Length).OrderByDescending(i => values[i]).ThenBy(i => i).Take(k).ToArray();

    private static float ReadBlockElement(ReadOnlySpan<byte> bytes, DType dtype, long index)
    {
        var block = dtype.BlockElements();
        Span<float> values = stackalloc float[block];
        Formats.Gguf.GgmlQuants.Dequantize(dtype, bytes.Slice((int)(index / block * dtype.BlockBytes()), dtype.BlockBytes()), values);
        return values[(int)(index % block)];
    }

    internal static float ReadElement(ReadOnlySpan<byte> bytes, DType dtype, long index) => dtype switch
    {
        DType.F32 => BitConverter.ToSingle(bytes.Slice((int)(index * 4), 4)),
        DType.F16 => (float)BitConverter.ToHalf(bytes.Slice((int)(index * 2), 2)),
        DType.BF16 => BitConverter.Int32BitsToSingle(BitConverter.ToUInt16(bytes.Slice((int)(index * 2), 2)) << 16),
        DType.I32 => BitConverter.ToInt32(bytes.Slice((int)(index * 4), 4)),
        DType.U8 => bytes[(int)index],
        DType.F8E4M3 => Formats.Quantization.Fp8E4M3.Decode(bytes[(int)index]),
        _ when dtype.IsQuantized() => ReadBlockElement(bytes, dtype, index),
        _ => throw new ArgumentOutOfRangeException(nameof(dtype)),
    };

    /// <summary>Host-memory float32 tensor; views share the array.</summary>
    internal sealed class HostTensor : DeviceTensor
    {
        public HostTensor(DType dtype, int[] shape)
            : this(dtype, shape, null, 0)
        {
        }

        private HostTensor(DType dtype, int[] shape, float[]? data, long offset)
            : base(dtype, shape)
        {
            Data = data ?? new float[ElementCount];
            Offset = offset;
        }

        public float[] Data { get; }

        public long Offset { get; }

        public Span<float> Span => Data.AsSpan((int)Offset, (int)ElementCount);

        public override DeviceTensor Reshape(params int[] shape)
        {
            CheckReshape(ElementCount, shape);
            return new HostTensor(DType, shape, Data, Offset);
        }

        public override DeviceTensor SliceRows(int start, int count)
        {
            var shape = (int[])Shape.Clone();
            var rowElements = ElementCount / Shape[0];
            shape[0] = count;
            return new HostTensor(DType, shape, Data, Offset + (start * rowElements));
        }
    }
}
