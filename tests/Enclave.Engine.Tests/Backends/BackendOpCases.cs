using Enclave.Engine.Backends;

namespace Enclave.Engine.Tests.Backends;

/// <summary>
/// A backend-neutral table of operation cases at awkward sizes (odd widths, rows that are no multiple of a vector
/// or a warp, 1 to 77 tokens, GQA, head dims 40/128, mixed prefill/decode sequences over shuffled block tables). Each
/// case builds the same inputs from a fixed seed on the backend under test and on the reference backend, fills the
/// outputs with NaN first, runs the op and compares: an element never written stays NaN and fails the case.
/// No test framework here, so the GPU check tool runs the same table.
/// </summary>
internal static class BackendOpCases
{
    public sealed record Result(string Name, double MaxError, double Tolerance, long Unwritten, long Compared)
    {
        public bool Passed => Unwritten == 0 && Compared > 0 && MaxError <= Tolerance;

        public override string ToString() =>
            $"{Name,-34} {(Passed ? "ok  " : "FAIL")} max rel error {MaxError:E2} (tolerance {Tolerance:E0}), {Compared} values, {Unwritten} unwritten";
    }

    private static readonly Dictionary<string, (Func<IBackend, float[][]> Run, double Tolerance)> Table = Build();

    public static IReadOnlyCollection<string> Names => Table.Keys;

    /// <summary>Runs one case on <paramref name="candidate"/> and on <paramref name="reference"/> and compares every output.</summary>
    public static Result Run(string name, IBackend candidate, IBackend reference, double? tolerance = null)
    {
        var (run, defaultTolerance) = Table[name];
        var expected = run(reference);
        var actual = run(candidate);
        double maxError = 0;
        long unwritten = 0, compared = 0;
        for (var o = 0; o < expected.Length; o++)
        {
            double scale = 1e-30;
            foreach (var v in expected[o])
            {
                if (!float.IsNaN(v))
                {
                    scale = Math.Max(scale, Math.Abs(v));
                }
            }

            for (var i = 0; i < expected[o].Length; i++)
            {
                float e = expected[o][i], a = actual[o][i];
                if (float.IsNaN(e))
                {
                    continue;
                }

                if (float.IsNaN(a) || float.IsInfinity(a))
                {
                    unwritten++;
                    continue;
                }

                compared++;
                maxError = Math.Max(maxError, Math.Abs(a - e) / scale);
            }
        }

        return new Result(name, maxError, tolerance ?? defaultTolerance, unwritten, compared);
    }

    private static Dictionary<string, (Func<IBackend, float[][]>, double)> Build()
    {
        var cases = new Dictionary<string, (Func<IBackend, float[][]>, double)>(StringComparer.Ordinal);
        foreach (var dtype in new[] { DType.F32, DType.F16, DType.BF16 })
        {
            var d = dtype.ToString().ToLowerInvariant();
            cases[$"embedding/{d}/vocab37x75/t5"] = (b => Embedding(b, dtype, 37, 75, 5), 0);
            cases[$"rmsnorm/{d}/3x1000"] = (b => Norm(b, dtype, 3, 1000, false), 1e-5);
            cases[$"add_rmsnorm/{d}/5x333"] = (b => Norm(b, dtype, 5, 333, true), 1e-5);
            foreach (var tokens in new[] { 1, 3, 8, 9, 77 })
            {
                cases[$"matmul/{d}/t{tokens}/72to45"] = (b => MatMul(b, dtype, tokens, 72, 45, false), 1e-5);
                cases[$"matmul/{d}/t{tokens}/70to33+bias"] = (b => MatMul(b, dtype, tokens, 70, 33, true), 1e-5);
            }

            cases[$"matmul/{d}/t1/2056to19"] = (b => MatMul(b, dtype, 1, 2056, 19, false), 1e-5);
            cases[$"matmul/{d}/t2/3080to130+bias"] = (b => MatMul(b, dtype, 2, 3080, 130, true), 1e-5);
        }

        // Block-quantised weights (CPU only): the reference dequantises them; the kernels quantise activations to
        // int8 per block of 32, which costs up to about 1% of the output scale, far below what a layout error costs.
        foreach (var dtype in new[] { DType.Q8_0, DType.Q4_0, DType.Q4_K, DType.Q5_K, DType.Q6_K })
        {
            var d = dtype.ToString().ToLowerInvariant();
            var block = dtype.BlockElements();
            foreach (var tokens in new[] { 1, 3, 5, 9, 77 })
            {
                cases[$"qmatmul/{d}/t{tokens}/{3 * block}to45"] = (b => MatMul(b, dtype, tokens, 3 * block, 45, false), 2e-2);
            }

            cases[$"qmatmul/{d}/t2/{block}to131+bias"] = (b => MatMul(b, dtype, 2, block, 131, true), 2e-2);
            cases[$"qmatmul/{d}/t1/{9 * block}to7"] = (b => MatMul(b, dtype, 1, 9 * block, 7, false), 2e-2);
        }

        cases["rmsnorm/bf16/2x3584"] = (b => Norm(b, DType.BF16, 2, 3584, false), 1e-5);
        cases["rmsnorm/bf16/in-place-heads/12x40"] = (b => Norm(b, DType.BF16, 12, 40, false, inPlace: true), 1e-5);
        cases["rope/neox/t3h5d24r16"] = (b => Rope(b, 3, 5, 24, 16, false, 1f), 1e-5);
        cases["rope/interleaved/scaled/t4h3d64"] = (b => Rope(b, 4, 3, 64, 64, true, 1.2f), 1e-5);
        cases["silu_mul/1001"] = (b => Elementwise(b, 1001, silu: true), 1e-6);
        cases["add/1001"] = (b => Elementwise(b, 1001, silu: false), 0);
        cases["gather_logit_rows/3of9x130"] = (b => Gather(b), 0);
        cases["attention/gqa3/d40/bs4/mixed"] = (b => Attention(b, 6, 2, 40, 4, [(7, 7), (1, 13), (5, 20)]), 1e-5);
        cases["attention/mha/d128/bs16/decode"] = (b => Attention(b, 4, 4, 128, 16, [(1, 1), (1, 37), (1, 100)]), 1e-5);
        cases["attention/gqa7/d64/bs5/long-prefill"] = (b => Attention(b, 7, 1, 64, 5, [(61, 61), (2, 70)]), 1e-5);
        cases["attention/gqa4/d128/bs16/split-decode"] = (b => Attention(b, 8, 2, 128, 16, [(1, 700), (1, 129), (2, 300)]), 1e-5);
        cases["attention/gqa2/d30/bs3/odd-dim"] = (b => Attention(b, 4, 2, 30, 3, [(4, 4), (1, 9), (3, 40)]), 1e-5);
        return cases;
    }

    private static float[] Values(Random random, int count, float magnitude = 1f)
    {
        var v = new float[count];
        for (var i = 0; i < v.Length; i++)
        {
            v[i] = (float)((random.NextDouble() * 2) - 1) * magnitude;
        }

        return v;
    }

    private static byte[] Encode(float[] values, DType dtype)
    {
        if (dtype.IsQuantized())
        {
            var blocks = new byte[dtype.StorageBytes(values.Length)];
            Enclave.Engine.Formats.Gguf.GgmlQuants.Quantize(dtype, values, blocks);
            return blocks;
        }

        var bytes = new byte[values.Length * dtype.SizeInBytes()];
        for (var i = 0; i < values.Length; i++)
        {
            switch (dtype)
            {
                case DType.F32:
                    BitConverter.TryWriteBytes(bytes.AsSpan(i * 4), values[i]);
                    break;
                case DType.F16:
                    BitConverter.TryWriteBytes(bytes.AsSpan(i * 2), (Half)values[i]);
                    break;
                default:
                    BitConverter.TryWriteBytes(bytes.AsSpan(i * 2), (ushort)(BitConverter.SingleToUInt32Bits(values[i]) >> 16));
                    break;
            }
        }

        return bytes;
    }

    private static DeviceTensor Weight(IBackend b, DType dtype, float[] values, params int[] shape)
    {
        var t = b.Allocate(dtype, shape);
        b.UploadBytes(Encode(values, dtype), t);
        return t;
    }

    private static DeviceTensor F32(IBackend b, float[] values, params int[] shape)
    {
        var t = b.Allocate(DType.F32, shape);
        b.Upload(values, t);
        return t;
    }

    private static DeviceTensor Poisoned(IBackend b, params int[] shape)
    {
        var t = b.Allocate(DType.F32, shape);
        b.Upload(Enumerable.Repeat(float.NaN, (int)t.ElementCount).ToArray(), t);
        return t;
    }

    private static float[] Read(IBackend b, DeviceTensor t)
    {
        var host = new float[t.ElementCount];
        b.Download(t, host);
        return host;
    }

    private static ForwardBatch Batch(int[] ids, int[] positions, int[] slots, SequenceSlice[] sequences, int[] logitRows) => new()
    {
        TokenIds = ids,
        Positions = positions,
        SlotMapping = slots,
        Sequences = sequences,
        LogitRows = logitRows,
    };

    private static ForwardBatch Simple(int tokens, int[]? ids = null, int[]? positions = null, int[]? logitRows = null) =>
        Batch(ids ?? new int[tokens], positions ?? Enumerable.Range(0, tokens).ToArray(), Enumerable.Range(0, tokens).ToArray(),
            [new SequenceSlice(0, tokens, tokens, [0])], logitRows ?? [tokens - 1]);

    private static float[][] Embedding(IBackend b, DType dtype, int vocab, int hidden, int tokens)
    {
        var random = new Random(11);
        using var table = Weight(b, dtype, Values(random, vocab * hidden), vocab, hidden);
        var ids = Enumerable.Range(0, tokens).Select(_ => random.Next(vocab)).ToArray();
        ids[^1] = vocab - 1;
        using var output = Poisoned(b, tokens, hidden);
        var batch = Simple(tokens, ids);
        b.PrepareStep(batch);
        b.Embedding(table, batch, output);
        return [Read(b, output)];
    }

    private static float[][] Norm(IBackend b, DType dtype, int rows, int n, bool add, bool inPlace = false)
    {
        var random = new Random(rows * n);
        using var weight = Weight(b, dtype, Values(random, n), n);
        using var x = F32(b, Values(random, rows * n, 3f), rows, n);
        using var residual = F32(b, Values(random, rows * n, 2f), rows, n);
        using var output = inPlace ? null : Poisoned(b, rows, n);
        var target = output ?? x;
        if (add)
        {
            b.AddRmsNorm(residual, x, weight, 1e-6f, target);
            return [Read(b, target), Read(b, residual)];
        }

        b.RmsNorm(x, weight, 1e-5f, target);
        return [Read(b, target)];
    }

    private static float[][] MatMul(IBackend b, DType dtype, int tokens, int inFeatures, int outFeatures, bool bias)
    {
        var random = new Random((tokens * 7919) + inFeatures + outFeatures);
        using var w = Weight(b, dtype, Values(random, inFeatures * outFeatures, 0.5f), outFeatures, inFeatures);
        using var bt = bias ? F32(b, Values(random, outFeatures), outFeatures) : null;
        using var x = F32(b, Values(random, tokens * inFeatures), tokens, inFeatures);
        using var y = Poisoned(b, tokens, outFeatures);
        b.MatMul(x, w, bt, y);
        return [Read(b, y)];
    }

    private static float[][] Rope(IBackend b, int tokens, int heads, int headDim, int rotary, bool interleaved, float scaling)
    {
        var random = new Random((heads * 31) + headDim);
        var frequencies = Enumerable.Range(0, rotary / 2).Select(i => (float)Math.Pow(10000, -2.0 * i / rotary)).ToArray();
        var positions = Enumerable.Range(0, tokens).Select(_ => random.Next(5000)).ToArray();
        using var x = F32(b, Values(random, tokens * heads * headDim), tokens, heads, headDim);
        var batch = Simple(tokens, positions: positions);
        b.PrepareStep(batch);
        b.Rope(x, batch, new RopeSpec(frequencies, rotary, interleaved, scaling));
        return [Read(b, x)];
    }

    private static float[][] Elementwise(IBackend b, int n, bool silu)
    {
        var random = new Random(n);
        using var x = F32(b, Values(random, n, 6f), n);
        using var y = F32(b, Values(random, n, 2f), n);
        using var output = Poisoned(b, n);
        if (silu)
        {
            b.SiluMul(x, y, output);
        }
        else
        {
            b.Add(x, y, output);
        }

        return [Read(b, output)];
    }

    private static float[][] Gather(IBackend b)
    {
        var random = new Random(9);
        using var x = F32(b, Values(random, 9 * 130), 9, 130);
        using var output = Poisoned(b, 3, 130);
        var batch = Simple(9, logitRows: [8, 0, 4]);
        b.PrepareStep(batch);
        b.GatherLogitRows(x, batch, output);
        return [Read(b, output)];
    }

    /// <summary>
    /// Several sequences in one step, each with earlier tokens already cached in shuffled blocks and this step's
    /// tokens arriving as k/v inputs. Spare cache blocks hold NaN, so reading outside the block table shows.
    /// </summary>
    private static float[][] Attention(IBackend b, int heads, int kvHeads, int headDim, int blockSize, (int Query, int Context)[] sequences)
    {
        var random = new Random((heads * 131) + (headDim * 7) + blockSize);
        var rowFloats = kvHeads * headDim;
        var blocks = sequences.Sum(s => (s.Context + blockSize - 1) / blockSize) + 3;
        var order = Enumerable.Range(0, blocks).OrderBy(_ => random.Next()).ToArray();
        var tokens = sequences.Sum(s => s.Query);
        var positions = new int[tokens];
        var slots = new int[tokens];
        var slices = new SequenceSlice[sequences.Length];
        var cacheK = Enumerable.Repeat(float.NaN, blocks * blockSize * rowFloats).ToArray();
        var cacheV = (float[])cacheK.Clone();
        var newK = new float[tokens * rowFloats];
        var newV = new float[tokens * rowFloats];
        int next = 0, start = 0;
        for (var s = 0; s < sequences.Length; s++)
        {
            var (query, context) = sequences[s];
            var table = order.Skip(next).Take((context + blockSize - 1) / blockSize).ToArray();
            next += table.Length;
            slices[s] = new SequenceSlice(start, query, context, table);
            var k = Values(random, context * rowFloats);
            var v = Values(random, context * rowFloats);
            for (var p = 0; p < context; p++)
            {
                var slot = (table[p / blockSize] * blockSize) + (p % blockSize);
                var t = start + p - (context - query);
                if (t >= start)
                {
                    positions[t] = p;
                    slots[t] = slot;
                    Array.Copy(k, p * rowFloats, newK, t * rowFloats, rowFloats);
                    Array.Copy(v, p * rowFloats, newV, t * rowFloats, rowFloats);
                }
                else
                {
                    Array.Copy(k, p * rowFloats, cacheK, slot * rowFloats, rowFloats);
                    Array.Copy(v, p * rowFloats, cacheV, slot * rowFloats, rowFloats);
                }
            }

            start += query;
        }

        var batch = Batch(new int[tokens], positions, slots, slices, [tokens - 1]);
        using var q = F32(b, Values(random, tokens * heads * headDim, 2f), tokens, heads, headDim);
        using var kt = F32(b, newK, tokens, kvHeads, headDim);
        using var vt = F32(b, newV, tokens, kvHeads, headDim);
        using var kc = F32(b, cacheK, blocks, blockSize, kvHeads, headDim);
        using var vc = F32(b, cacheV, blocks, blockSize, kvHeads, headDim);
        using var output = Poisoned(b, tokens, heads, headDim);
        b.PrepareStep(batch);
        b.Attention(q, kt, vt, kc, vc, batch, 1f / MathF.Sqrt(headDim), output);
        return [Read(b, output), Read(b, kc), Read(b, vc)];
    }
}
