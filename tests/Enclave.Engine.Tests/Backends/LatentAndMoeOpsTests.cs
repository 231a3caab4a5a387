using Enclave.Engine.Backends;
using Enclave.Engine.Backends.Cpu;
using Enclave.Engine.Backends.Reference;

namespace Enclave.Engine.Tests.Backends;

/// <summary>
/// The operations added for multi-head latent attention and DeepSeekMoE, over a table of shapes, on the CPU backend
/// at every vector width against the scalar reference backend. Outputs start as NaN so an unwritten element fails.
/// </summary>
public sealed class LatentAndMoeOpsTests
{
    private static readonly Dictionary<string, Action<IBackend, IBackend>> Ops = BuildOps();

    public static TheoryData<string, int> Cases()
    {
        var data = new TheoryData<string, int>();
        foreach (var width in new[] { 512, 256, 128, 1 })
        {
            if (CpuSimd.IsSupported(width))
            {
                foreach (var name in Ops.Keys)
                {
                    data.Add(name, width);
                }
            }
        }

        return data;
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void Cpu_matches_the_reference_backend(string op, int simdWidth)
    {
        using var cpu = new CpuBackend(3, simdWidth);
        using var reference = new ReferenceBackend();
        Ops[op](cpu, reference);
    }

    /// <summary>
    /// <see cref="IBackend.MoeExperts"/>' default (host routing, one gated MLP per chosen expert over its gathered rows,
    /// weighted scatter-add) against a float64 loop over every token's picks, with F32 and BF16 stacked weights and
    /// more tokens than experts (so experts run on several rows).
    /// </summary>
    [Theory]
    [InlineData(DType.F32)]
    [InlineData(DType.BF16)]
    public void MoeExperts_default_matches_a_float64_loop(DType dtype)
    {
        const int tokens = 9, hidden = 40, inter = 24;
        var routing = new MoeRouting(16, 4, MoeScoring.Sigmoid, 4, 2, MoeGroupScore.TopTwoSum, true, 2.5f);
        var experts = routing.Experts;
        var random = new Random(77);
        var x = RandomValues(random, tokens * hidden);
        var logits = RandomValues(random, tokens * experts, 3f);
        var bias = RandomValues(random, experts, 0.5f);
        // Weights exactly representable in the stored type, so the loop reads what the backend reads.
        float Round(float v) => dtype == DType.BF16 ? BitConverter.UInt32BitsToSingle(BitConverter.SingleToUInt32Bits(v) & 0xffff0000u) : v;
        var gateUp = RandomValues(random, experts * 2 * inter * hidden, 0.3f).Select(Round).ToArray();
        var down = RandomValues(random, experts * hidden * inter, 0.3f).Select(Round).ToArray();
        var start = RandomValues(random, tokens * hidden);

        using IBackend cpu = new CpuBackend(3);
        using var xt = Upload(cpu, x, tokens, hidden);
        using var lt = Upload(cpu, logits, tokens, experts);
        using var bt = Upload(cpu, bias, experts);
        using var gut = Stored(cpu, dtype, gateUp, experts * 2 * inter, hidden);
        using var dt = Stored(cpu, dtype, down, experts * hidden, inter);
        using var output = Upload(cpu, start, tokens, hidden);
        cpu.MoeExperts(xt, lt, bt, routing, gut, dt, output);
        var actual = Download(cpu, output);

        var ids = new int[tokens * routing.TopK];
        var weights = new float[tokens * routing.TopK];
        MoeRouter.Route(logits, bias, routing, ids, weights);
        var expected = new float[tokens * hidden];
        for (var t = 0; t < tokens; t++)
        {
            var sums = new double[hidden];
            for (var k = 0; k < routing.TopK; k++)
            {
                var e = ids[(t * routing.TopK) + k];
                var h = new double[inter];
                for (var j = 0; j < inter; j++)
                {
                    double g = 0, u = 0;
                    for (var c = 0; c < hidden; c++)
                    {
                        g += (double)gateUp[(((e * 2 * inter) + j) * hidden) + c] * x[(t * hidden) + c];
                        u += (double)gateUp[(((e * 2 * inter) + inter + j) * hidden) + c] * x[(t * hidden) + c];
                    }

                    h[j] = g / (1 + Math.Exp(-g)) * u;
                }

                for (var c = 0; c < hidden; c++)
                {
                    double y = 0;
                    for (var j = 0; j < inter; j++)
                    {
                        y += down[(((e * hidden) + c) * inter) + j] * h[j];
                    }

                    sums[c] += weights[(t * routing.TopK) + k] * y;
                }
            }

            for (var c = 0; c < hidden; c++)
            {
                expected[(t * hidden) + c] = (float)(start[(t * hidden) + c] + sums[c]);
            }
        }

        Assert.Contains(ids.GroupBy(e => e), g => g.Count() > 1);
        AssertClose("MoeExperts", expected, actual, 1e-5);
    }

    private static DeviceTensor Stored(IBackend backend, DType dtype, float[] values, params int[] shape)
    {
        var t = backend.Allocate(dtype, shape);
        var bytes = new byte[values.Length * dtype.SizeInBytes()];
        for (var i = 0; i < values.Length; i++)
        {
            if (dtype == DType.BF16)
            {
                BitConverter.TryWriteBytes(bytes.AsSpan(i * 2), (ushort)(BitConverter.SingleToUInt32Bits(values[i]) >> 16));
            }
            else
            {
                BitConverter.TryWriteBytes(bytes.AsSpan(i * 4), values[i]);
            }
        }

        backend.UploadBytes(bytes, t);
        return t;
    }

    private static Dictionary<string, Action<IBackend, IBackend>> BuildOps()
    {
        var ops = new Dictionary<string, Action<IBackend, IBackend>>();
        foreach (var (rows, xWidth, xOffset, outWidth, outOffset, count) in new[] { (1, 1, 0, 1, 0, 1), (5, 40, 32, 13, 5, 8), (7, 24, 0, 56, 32, 24) })
        {
            ops[$"CopyColumns {rows}x{xWidth}[{xOffset}..+{count}] -> {outWidth}[{outOffset}]"] = (cpu, reference) =>
                Compare(cpu, reference, 0, b =>
                {
                    var random = new Random(rows + xWidth);
                    using var x = Upload(b, RandomValues(random, rows * xWidth), rows, xWidth);
                    var output = Upload(b, Enumerable.Repeat(7f, rows * outWidth).ToArray(), rows, outWidth);
                    b.CopyColumns(x, xOffset, output, outOffset, count);
                    return output;
                });
        }

        foreach (var (tokens, heads, inDim, outDim) in new[] { (1, 1, 1, 1), (5, 4, 16, 32), (3, 7, 33, 17), (2, 16, 128, 24) })
        {
            ops[$"HeadMatMul T{tokens} h{heads} {inDim}->{outDim}"] = (cpu, reference) =>
                Compare(cpu, reference, 1e-5, b =>
                {
                    var random = new Random(tokens * heads + inDim);
                    using var x = Upload(b, RandomValues(random, tokens * heads * inDim), tokens, heads, inDim);
                    using var w = Upload(b, RandomValues(random, heads * outDim * inDim), heads, outDim, inDim);
                    var output = Poisoned(b, tokens, heads, outDim);
                    b.HeadMatMul(x, w, output);
                    return output;
                });
        }

        foreach (var (heads, rank, rope, blockSize, sequences) in new[]
                 {
                     (1, 4, 2, 1, new[] { (1, 1) }),
                     (4, 32, 8, 4, new[] { (7, 7), (1, 9) }),
                     (16, 64, 16, 16, new[] { (1, 40), (3, 3), (1, 1) }),
                     (3, 33, 6, 5, new[] { (12, 20) }),
                 })
        {
            ops[$"LatentAttention h{heads} rank{rank} rope{rope} block{blockSize} seqs{sequences.Length}"] = (cpu, reference) =>
                LatentAttention(cpu, reference, heads, rank, rope, blockSize, sequences);
        }

        foreach (var routing in new[]
                 {
                     new MoeRouting(8, 2, MoeScoring.Sigmoid, 2, 1, MoeGroupScore.TopTwoSum, true, 2.5f),
                     new MoeRouting(16, 4, MoeScoring.Sigmoid, 4, 2, MoeGroupScore.TopTwoSum, false, 1f),
                     new MoeRouting(8, 2, MoeScoring.Softmax, 1, 1, MoeGroupScore.Max, false, 1f),
                     new MoeRouting(12, 3, MoeScoring.Softmax, 3, 2, MoeGroupScore.Max, true, 16f),
                     new MoeRouting(1, 1, MoeScoring.Softmax, 1, 1, MoeGroupScore.Max, false, 1f),
                 })
        {
            foreach (var withBias in new[] { false, true })
            {
                ops[$"MoeRoute {routing.Scoring} e{routing.Experts} k{routing.TopK} g{routing.Groups}/{routing.TopKGroups} {routing.GroupScore} norm={routing.NormalizeTopK} bias={withBias}"] =
                    (cpu, reference) => MoeRoute(cpu, reference, routing, withBias);
            }
        }

        foreach (var (tokens, columns, picks) in new[] { (1, 1, 1), (5, 64, 10), (9, 37, 27) })
        {
            ops[$"GatherRows T{tokens} n{columns} picks{picks}"] = (cpu, reference) =>
                Compare(cpu, reference, 0, b =>
                {
                    var random = new Random(tokens + columns);
                    var rows = Enumerable.Range(0, picks).Select(_ => random.Next(tokens)).ToArray();
                    using var x = Upload(b, RandomValues(random, tokens * columns), tokens, columns);
                    var output = Poisoned(b, picks, columns);
                    b.GatherRows(x, rows, output);
                    return output;
                });
            ops[$"ScatterAddRows T{tokens} n{columns} picks{picks}"] = (cpu, reference) =>
                Compare(cpu, reference, 1e-6, b =>
                {
                    var random = new Random(tokens * columns);
                    var rows = Enumerable.Range(0, picks).Select(_ => random.Next(tokens)).ToArray();
                    var weights = RandomValues(random, picks);
                    using var x = Upload(b, RandomValues(random, picks * columns), picks, columns);
                    var output = Upload(b, RandomValues(random, tokens * columns), tokens, columns);
                    b.ScatterAddRows(x, rows, weights, output);
                    return output;
                });
        }

        return ops;
    }

    private static void LatentAttention(IBackend cpu, IBackend reference, int heads, int rank, int rope, int blockSize, (int Query, int Context)[] sequences)
    {
        var width = rank + rope;
        var random = new Random(heads * rank + blockSize);
        var blocks = sequences.Sum(s => (s.Context + blockSize - 1) / blockSize) + 2;
        var order = Enumerable.Range(0, blocks).OrderBy(_ => random.Next()).ToArray();
        var tokens = sequences.Sum(s => s.Query);
        var positions = new int[tokens];
        var slots = new int[tokens];
        var slices = new SequenceSlice[sequences.Length];
        var cache = RandomValues(random, blocks * blockSize * width);
        int next = 0, start = 0;
        for (var s = 0; s < sequences.Length; s++)
        {
            var (query, context) = sequences[s];
            var table = order.Skip(next).Take((context + blockSize - 1) / blockSize).ToArray();
            next += table.Length;
            slices[s] = new SequenceSlice(start, query, context, table);
            for (var i = 0; i < query; i++)
            {
                var p = context - query + i;
                positions[start + i] = p;
                slots[start + i] = (table[p / blockSize] * blockSize) + (p % blockSize);
            }

            start += query;
        }

        var batch = CpuBackendOpsTests.Batch(new int[tokens], positions, slices, slotMapping: slots);
        var q = RandomValues(random, tokens * heads * width);
        var latent = RandomValues(random, tokens * width);
        var outputs = new List<float[]>();
        var caches = new List<float[]>();
        foreach (var b in new[] { cpu, reference })
        {
            using var qt = Upload(b, q, tokens, heads, width);
            using var lt = Upload(b, latent, tokens, width);
            using var ct = Upload(b, cache, blocks, blockSize, 1, width);
            using var ot = Poisoned(b, tokens, heads, rank);
            b.PrepareStep(batch);
            b.LatentAttention(qt, lt, ct, batch, 1f / MathF.Sqrt(width), rank, ot);
            outputs.Add(Download(b, ot));
            caches.Add(Download(b, ct));
        }

        AssertClose("LatentAttention", outputs[1], outputs[0], 2e-5);
        Assert.Equal(caches[1], caches[0]);
        for (var t = 0; t < tokens; t++)
        {
            Assert.Equal(latent.AsSpan(t * width, width).ToArray(), caches[0].AsSpan(slots[t] * width, width).ToArray());
        }
    }

    private static void MoeRoute(IBackend cpu, IBackend reference, MoeRouting routing, bool withBias)
    {
        const int tokens = 13;
        var random = new Random(routing.Experts * 31 + routing.TopK + (withBias ? 1 : 0));
        var logits = RandomValues(random, tokens * routing.Experts, 4f);
        var bias = RandomValues(random, routing.Experts, 0.5f);
        var ids = new List<int[]>();
        var weights = new List<float[]>();
        foreach (var b in new[] { cpu, reference })
        {
            using var lt = Upload(b, logits, tokens, routing.Experts);
            using var bt = Upload(b, bias, routing.Experts);
            var id = new int[tokens * routing.TopK];
            var w = new float[tokens * routing.TopK];
            b.MoeRoute(lt, withBias ? bt : null, routing, id, w);
            ids.Add(id);
            weights.Add(w);
        }

        Assert.Equal(ids[1], ids[0]);
        AssertClose("MoeRoute", weights[1], weights[0], 1e-6);
        for (var t = 0; t < tokens; t++)
        {
            var chosen = ids[0].AsSpan(t * routing.TopK, routing.TopK).ToArray();
            Assert.Equal(routing.TopK, chosen.Distinct().Count());
            if (routing.NormalizeTopK)
            {
                Assert.Equal(routing.ScalingFactor, weights[0].AsSpan(t * routing.TopK, routing.TopK).ToArray().Sum(), 4);
            }
        }
    }

    private static void Compare(IBackend cpu, IBackend reference, double tolerance, Func<IBackend, DeviceTensor> run)
    {
        using var fast = run(cpu);
        using var slow = run(reference);
        AssertClose("op", Download(reference, slow), Download(cpu, fast), tolerance);
    }

    private static void AssertClose(string what, float[] expected, float[] actual, double tolerance)
    {
        Assert.Equal(expected.Length, actual.Length);
        for (var i = 0; i < expected.Length; i++)
        {
            var limit = tolerance * (1 + Math.Abs(expected[i]));
            Assert.True(!float.IsNaN(actual[i]) && Math.Abs(expected[i] - actual[i]) <= limit,
                $"{what}[{i}]: expected {expected[i]}, got {actual[i]} (tolerance {limit})");
        }
    }

    private static float[] RandomValues(Random random, int count, float magnitude = 1f) =>
        CpuBackendOpsTests.RandomValues(random, count, magnitude);

    private static DeviceTensor Upload(IBackend backend, float[] values, params int[] shape)
    {
        var t = backend.Allocate(DType.F32, shape);
        backend.Upload(values, t);
        return t;
    }

    private static DeviceTensor Poisoned(IBackend backend, params int[] shape)
    {
        var t = backend.Allocate(DType.F32, shape);
        backend.Upload(Enumerable.Repeat(float.NaN, (int)t.ElementCount).ToArray(), t);
        return t;
    }

    private static float[] Download(IBackend backend, DeviceTensor t)
    {
        var values = new float[t.ElementCount];
        backend.Download(t, values);
        return values;
    }
}
