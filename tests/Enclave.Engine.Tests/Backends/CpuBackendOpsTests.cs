using System.Runtime.InteropServices;
using Enclave.Engine.Backends;
using Enclave.Engine.Backends.Cpu;

namespace Enclave.Engine.Tests.Backends;

/// <summary>
/// Every backend operation over a table of awkward shapes (odd sizes, one token and 37, widths that are not a
/// multiple of any vector, 7 query heads sharing 1 kv head, head dims 24/64/80/128, mixed sequences over
/// scattered multi-block tables, all three weight types), on every vector width this machine runs, against the
/// float64 reference. Outputs are filled with NaN first, so an element a kernel forgets to write fails.
/// </summary>
public sealed class CpuBackendOpsTests
{
    private static readonly Dictionary<string, Action<CpuBackend>> Ops = BuildOps();

    public static TheoryData<string, int> Cases()
    {
        var data = new TheoryData<string, int>();
        foreach (var width in new[] { 512, 256, 128, 1 })
        {
            if (!CpuSimd.IsSupported(width))
            {
                continue;
            }

            foreach (var name in Ops.Keys)
            {
                data.Add(name, width);
            }
        }

        return data;
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void Op_matches_the_float64_reference(string op, int simdWidth)
    {
        // Three threads on any machine, so work is always split and the pool's hand-off is exercised.
        using var backend = new CpuBackend(3, simdWidth);
        Ops[op](backend);
    }

    public static TheoryData<string, int> AttentionTableCases()
    {
        var data = new TheoryData<string, int>();
        foreach (var width in new[] { 512, 256, 128, 1 }.Where(CpuSimd.IsSupported))
        {
            foreach (var name in BackendOpCases.Names.Where(n => n.StartsWith("attention", StringComparison.Ordinal) || n.StartsWith("rope_attention", StringComparison.Ordinal)))
            {
                data.Add(name, width);
            }
        }

        return data;
    }

    /// <summary>The backend-neutral table's attention cases (decode batches, prefill over cached prefixes, GQA 1 to 16).</summary>
    [Theory]
    [MemberData(nameof(AttentionTableCases))]
    public void Attention_table_case_matches_the_reference(string name, int simdWidth)
    {
        using var backend = new CpuBackend(3, simdWidth);
        using var reference = new Enclave.Engine.Backends.Reference.ReferenceBackend();
        var result = BackendOpCases.Run(name, backend, reference);
        Assert.True(result.Passed, result.ToString());
    }

    public static TheoryData<int> Widths() => [.. new[] { 512, 256, 128, 1 }.Where(CpuSimd.IsSupported)];

    /// <summary>
    /// A NaN in one query row reaches that row's output and no other, on the prefill tiles (rows of several tokens
    /// and heads side by side in the vector lanes) and on the per-query decode walk alike.
    /// </summary>
    [Theory]
    [MemberData(nameof(Widths))]
    public void A_nan_query_row_poisons_its_own_output_only(int simdWidth)
    {
        const int heads = 14, kvHeads = 2, headDim = 64, blockSize = 16;
        using var backend = new CpuBackend(3, simdWidth);
        var random = new Random(7);
        var rowFloats = kvHeads * headDim;
        int prefill = 20, decodeContext = 9, tokens = prefill + 1;
        var blocks = 4;
        var q = RandomValues(random, tokens * heads * headDim, 1f);
        q[(((5 * heads) + 3) * headDim) + 17] = float.NaN; // prefill token 5, head 3
        q[(((prefill * heads) + 0) * headDim) + 2] = float.NaN; // the decode token, head 0
        var positions = Enumerable.Range(0, prefill).Append(decodeContext - 1).ToArray();
        var slots = Enumerable.Range(0, prefill).Append((2 * blockSize) + decodeContext - 1).ToArray();
        var cache = RandomValues(random, blocks * blockSize * rowFloats, 1f);
        var batch = Batch(new int[tokens], positions, [new SequenceSlice(0, prefill, prefill, [0, 1]), new SequenceSlice(prefill, 1, decodeContext, [2])], slotMapping: slots);
        using var qt = F32(backend, q, tokens, heads, headDim);
        using var kt = F32(backend, RandomValues(random, tokens * rowFloats, 1f), tokens, kvHeads, headDim);
        using var vt = F32(backend, RandomValues(random, tokens * rowFloats, 1f), tokens, kvHeads, headDim);
        using var kc = F32(backend, cache, blocks, blockSize, kvHeads, headDim);
        using var vc = F32(backend, (float[])cache.Clone(), blocks, blockSize, kvHeads, headDim);
        using var yt = Poisoned(backend, tokens, heads, headDim);
        backend.PrepareStep(batch);
        backend.Attention(qt, kt, vt, kc, vc, batch, 0.125f, yt);

        var y = Download(backend, yt);
        for (var t = 0; t < tokens; t++)
        {
            for (var h = 0; h < heads; h++)
            {
                var row = y.AsSpan(((t * heads) + h) * headDim, headDim);
                var poisoned = (t == 5 && h == 3) || (t == prefill && h == 0);
                foreach (var value in row)
                {
                    Assert.True(poisoned ? float.IsNaN(value) : float.IsFinite(value), $"token {t} head {h}: {value}");
                }
            }
        }
    }

    [Fact]
    public void The_table_covers_every_vector_width_this_machine_accelerates()
    {
        var widths = Cases().Select(row => (int)row[1]).Distinct().ToArray();
        Assert.Contains(CpuSimd.BestWidth, widths);
        Assert.Contains(1, widths);
    }

    private static Dictionary<string, Action<CpuBackend>> BuildOps()
    {
        var ops = new Dictionary<string, Action<CpuBackend>>();
        var dtypes = new[] { DType.F32, DType.F16, DType.BF16 };

        foreach (var dtype in dtypes)
        {
            foreach (var (tokens, inFeatures, outFeatures, bias) in new[]
            {
                (1, 1, 1, false), (1, 77, 29, true), (37, 77, 29, false), (37, 16, 64, true), (4, 33, 8, false),
                (5, 300, 131, false), (1, 1536, 37, false), (9, 130, 67, true), (37, 3, 5, true),
            })
            {
                ops[$"MatMul {dtype} T={tokens} in={inFeatures} out={outFeatures}{(bias ? " +bias" : string.Empty)}"] =
                    b => MatMul(b, dtype, tokens, inFeatures, outFeatures, bias);
            }

            foreach (var (rows, columns) in new[] { (1, 1), (1, 7), (37, 77), (3, 1536), (2, 33) })
            {
                ops[$"RmsNorm {dtype} {rows}x{columns}"] = b => RmsNorm(b, dtype, rows, columns, fused: false);
                ops[$"AddRmsNorm {dtype} {rows}x{columns}"] = b => RmsNorm(b, dtype, rows, columns, fused: true);
            }

            foreach (var (tokens, hidden) in new[] { (1, 7), (37, 77), (5, 64) })
            {
                ops[$"Embedding {dtype} T={tokens} hidden={hidden}"] = b => Embedding(b, dtype, tokens, hidden);
            }
        }

        // Tiny F16 weights are mostly subnormal halves, which take the conversion's slow branch.
        ops["MatMul F16 subnormal weights T=5 in=77 out=9"] = b => MatMul(b, DType.F16, 5, 77, 9, false, 1e-4f);
        ops["Embedding F16 every bit pattern"] = b => EveryBitPattern(b, DType.F16);

        // Weights without infinities or NaN take the shorter conversion; a weight holding either must not.
        ops["MatMul F16 every finite bit pattern T=256"] = b => EveryFiniteHalfThroughMatMul(b, 256);
        ops["MatMul F16 every finite bit pattern T=3"] = b => EveryFiniteHalfThroughMatMul(b, 3);
        ops["MatMul F16 every finite bit pattern T=1, column by column"] = EveryFiniteHalfOneTokenAtATime;
        ops["MatMul F16 weights with infinity and NaN"] = NonFiniteHalfWeights;
        ops["Embedding BF16 every bit pattern"] = b => EveryBitPattern(b, DType.BF16);

        foreach (var count in new[] { 1, 37 * 77, 40_003 })
        {
            ops[$"SiluMul n={count}"] = b => SiluMul(b, count);
            ops[$"Add n={count}"] = b => Add(b, count, aliasOutput: false);
            ops[$"Add n={count} into a"] = b => Add(b, count, aliasOutput: true);
        }

        ops["GatherLogitRows 3 of 37x77"] = b => GatherLogitRows(b, 37, 77, [36, 0, 17]);
        ops["GatherLogitRows 1 of 1x5"] = b => GatherLogitRows(b, 1, 5, [0]);

        foreach (var tokens in new[] { 1, 37 })
        {
            foreach (var (heads, headDim, rotaryDim) in new[] { (7, 24, 24), (2, 64, 64), (3, 80, 80), (1, 128, 128), (2, 64, 32), (2, 80, 36) })
            {
                foreach (var interleaved in new[] { false, true })
                {
                    var scaling = headDim == 80 ? 1.3f : 1f;
                    ops[$"Rope T={tokens} heads={heads} dim={headDim} rotary={rotaryDim}{(interleaved ? " interleaved" : string.Empty)} scale={scaling}"] =
                        b => Rope(b, tokens, heads, headDim, rotaryDim, interleaved, scaling);
                }
            }
        }

        // (heads, kvHeads, headDim, blockSize, sequences as (query tokens, context length), q magnitude)
        foreach (var (heads, kvHeads, headDim, blockSize, sequences, magnitude) in new[]
        {
            (7, 1, 24, 16, new[] { (37, 37) }, 1f),
            (4, 2, 64, 4, new[] { (1, 9), (5, 20), (1, 1) }, 1f),
            (8, 8, 80, 16, new[] { (1, 300) }, 1f),
            (2, 1, 128, 8, new[] { (3, 3), (1, 200), (33, 290) }, 1f),
            (7, 1, 64, 32, new[] { (1, 1), (2, 140) }, 16f),
            // Prefill tiles: (token, group head) rows cut into tiles of four vectors, keys in blocks of 64. A 128-token
            // prompt at the Qwen2-0.5B shape; GQA 7 behind a cached prefix next to a decode token and a short prompt;
            // GQA 2 with a remainder tile; GQA 6 at head_dim 128; head_dims 96 and 33 (vector and scalar remainders);
            // larger queries whose scores spread wide.
            (14, 2, 64, 16, new[] { (128, 128) }, 1f),
            (14, 2, 64, 16, new[] { (77, 200), (1, 50), (9, 9) }, 1f),
            (6, 3, 64, 16, new[] { (70, 70), (2, 65) }, 1f),
            (12, 2, 128, 16, new[] { (45, 45), (19, 150) }, 1f),
            (4, 4, 96, 8, new[] { (67, 130), (3, 3) }, 1f),
            (2, 2, 33, 5, new[] { (13, 100), (1, 7), (5, 5) }, 1f),
            (7, 1, 64, 32, new[] { (41, 140) }, 16f),
        })
        {
            var shape = string.Join(",", sequences.Select(s => $"{s.Item1}/{s.Item2}"));
            ops[$"Attention heads={heads} kv={kvHeads} dim={headDim} block={blockSize} seqs={shape} |q|={magnitude}"] =
                b => Attention(b, heads, kvHeads, headDim, blockSize, sequences, magnitude);
        }

        return ops;
    }

    private static void MatMul(CpuBackend backend, DType dtype, int tokens, int inFeatures, int outFeatures, bool withBias, float weightMagnitude = 0.5f)
    {
        var random = new Random(HashCode.Combine(dtype, tokens, inFeatures, outFeatures));
        var x = RandomValues(random, tokens * inFeatures, 1f);
        var (weightBytes, weight) = RandomWeights(random, dtype, outFeatures * inFeatures, weightMagnitude);
        var bias = withBias ? RandomValues(random, outFeatures, 1f) : null;

        using var xt = F32(backend, x, tokens, inFeatures);
        using var wt = Raw(backend, dtype, weightBytes, outFeatures, inFeatures);
        using var bt = bias == null ? null : F32(backend, bias, outFeatures);
        using var yt = Poisoned(backend, tokens, outFeatures);
        var amxProducts = backend.AmxHalfProducts;
        backend.MatMul(xt, wt, bt, yt);

        var expected = ReferenceOps.MatMul(Widen(x), tokens, inFeatures, weight, outFeatures, bias == null ? null : Widen(bias));
        var magnitude = ReferenceOps.MatMul(Abs(Widen(x)), tokens, inFeatures, Abs(weight), outFeatures, bias == null ? null : Abs(Widen(bias)));
        if (backend.AmxHalfProducts != amxProducts)
        {
            // F16 and BF16 on AMX tiles: each product within about 2^-15 of its size, plus an fp32 sum of up to 3·in
            // terms (the argument is in CpuAmxHalfTests); then the same product on the vector units, to the bound below.
            AssertClose("MatMul on AMX tiles", expected, Download(backend, yt),
                i => 1e-6 + ((Math.Pow(2, -14) + (((3 * inFeatures) + 1) * Math.Pow(2, -23))) * magnitude[i]));
            using var vectors = new CpuBackend(3, backend.SimdWidth, amx: false);
            using var vectorY = Poisoned(vectors, tokens, outFeatures);
            vectors.MatMul(xt, wt, bt, vectorY);
            AssertClose("MatMul", expected, Download(vectors, vectorY), i => 1e-6 + (2e-6 * magnitude[i]));
            return;
        }

        // fp32 accumulation: the error grows with the sum of the magnitudes of the terms.
        AssertClose("MatMul", expected, Download(backend, yt), i => 1e-6 + (2e-6 * magnitude[i]));
    }

    private static void RmsNorm(CpuBackend backend, DType dtype, int rows, int columns, bool fused)
    {
        var random = new Random(HashCode.Combine(dtype, rows, columns, fused));
        var x = RandomValues(random, rows * columns, 2f);
        var residual = RandomValues(random, rows * columns, 2f);
        var (weightBytes, weight) = RandomWeights(random, dtype, columns, 1.5f);
        const float Eps = 1e-6f;

        using var xt = F32(backend, x, rows, columns);
        using var rt = F32(backend, residual, rows, columns);
        using var wt = Raw(backend, dtype, weightBytes, columns);
        using var yt = Poisoned(backend, rows, columns);
        double[] normalised;
        if (fused)
        {
            backend.AddRmsNorm(rt, xt, wt, Eps, yt);
            var sum = ReferenceOps.Add(Widen(residual), Widen(x));
            AssertClose("AddRmsNorm residual", sum, Download(backend, rt), i => 1e-6 * (1 + Math.Abs(sum[i])));
            normalised = ReferenceOps.RmsNorm(sum, columns, weight, Eps);
        }
        else
        {
            backend.RmsNorm(xt, wt, Eps, yt);
            normalised = ReferenceOps.RmsNorm(Widen(x), columns, weight, Eps);
        }

        AssertClose(fused ? "AddRmsNorm" : "RmsNorm", normalised, Download(backend, yt), i => 2e-6 * (1 + Math.Abs(normalised[i])));
    }

    private static void Embedding(CpuBackend backend, DType dtype, int tokens, int hidden)
    {
        const int Vocab = 11;
        var random = new Random(HashCode.Combine(dtype, tokens, hidden));
        var (tableBytes, table) = RandomWeights(random, dtype, Vocab * hidden, 1f);
        var ids = Enumerable.Range(0, tokens).Select(_ => random.Next(Vocab)).ToArray();
        ids[^1] = Vocab - 1;
        var batch = Batch(ids, ids.Select((_, i) => i).ToArray(), [new SequenceSlice(0, tokens, tokens, [0])]);

        using var tt = Raw(backend, dtype, tableBytes, Vocab, hidden);
        using var yt = Poisoned(backend, tokens, hidden);
        backend.PrepareStep(batch);
        backend.Embedding(tt, batch, yt);

        // The widened values must be exact.
        AssertClose("Embedding", ReferenceOps.Embedding(table, hidden, ids), Download(backend, yt), _ => 0);
    }

    /// <summary>All 65536 16-bit patterns as a [256, 256] table: the widening must give .NET's own conversion, bit for bit.</summary>
    private static void EveryBitPattern(CpuBackend backend, DType dtype)
    {
        var patterns = Enumerable.Range(0, 65536).Select(i => (ushort)i).ToArray();
        var ids = Enumerable.Range(0, 256).Reverse().ToArray();
        var batch = Batch(ids, new int[256], [new SequenceSlice(0, 256, 1, [0])]);
        using var table = Raw(backend, dtype, MemoryMarshal.AsBytes(patterns.AsSpan()).ToArray(), 256, 256);
        using var yt = Poisoned(backend, 256, 256);
        backend.Embedding(table, batch, yt);
        var actual = Download(backend, yt);
        for (var t = 0; t < 256; t++)
        {
            for (var c = 0; c < 256; c++)
            {
                var bits = patterns[(ids[t] * 256) + c];
                var expected = dtype == DType.F16 ? (float)BitConverter.UInt16BitsToHalf(bits) : BitConverter.UInt32BitsToSingle((uint)bits << 16);
                var got = actual[(t * 256) + c];
                if (float.IsNaN(expected))
                {
                    Assert.True(float.IsNaN(got), $"{dtype} 0x{bits:X4} gave {got}, expected NaN");
                }
                else
                {
                    Assert.True(BitConverter.SingleToUInt32Bits(expected) == BitConverter.SingleToUInt32Bits(got), $"{dtype} 0x{bits:X4} gave {got:R}, expected {expected:R}");
                }
            }
        }
    }

    /// <summary>
    /// All finite halves as weights [256, 256] (infinities and NaN zeroed) times one-hot activations, so each output
    /// is one weight widened: it must equal .NET's conversion exactly, in the decode and the widening prefill path.
    /// </summary>
    private static void EveryFiniteHalfThroughMatMul(CpuBackend backend, int tokens)
    {
        var patterns = Enumerable.Range(0, 65536).Select(i => (ushort)((i & 0x7C00) == 0x7C00 ? 0 : i)).ToArray();
        var columns = Enumerable.Range(0, tokens).Select(t => tokens == 256 ? t : (t * 127) % 256).ToArray();
        var x = new float[tokens * 256];
        for (var t = 0; t < tokens; t++)
        {
            x[(t * 256) + columns[t]] = 1f;
        }

        using var xt = F32(backend, x, tokens, 256);
        using var wt = Raw(backend, DType.F16, MemoryMarshal.AsBytes(patterns.AsSpan()).ToArray(), 256, 256);
        using var yt = Poisoned(backend, tokens, 256);
        backend.MatMul(xt, wt, null, yt);
        var actual = Download(backend, yt);
        for (var t = 0; t < tokens; t++)
        {
            for (var r = 0; r < 256; r++)
            {
                var bits = patterns[(r * 256) + columns[t]];
                var expected = (float)BitConverter.UInt16BitsToHalf(bits);
                Assert.True(expected == actual[(t * 256) + r], $"F16 0x{bits:X4} through MatMul gave {actual[(t * 256) + r]:R}, expected {expected:R}");
            }
        }
    }

    /// <summary>The single-token kernels (which read halves in even/odd pairs on 512-bit vectors): each column picked in turn.</summary>
    private static void EveryFiniteHalfOneTokenAtATime(CpuBackend backend)
    {
        var patterns = Enumerable.Range(0, 65536).Select(i => (ushort)((i & 0x7C00) == 0x7C00 ? 0 : i)).ToArray();
        using var wt = Raw(backend, DType.F16, MemoryMarshal.AsBytes(patterns.AsSpan()).ToArray(), 256, 256);
        using var xt = backend.Allocate(DType.F32, 1, 256);
        using var yt = Poisoned(backend, 1, 256);
        var x = new float[256];
        for (var column = 0; column < 256; column++)
        {
            Array.Clear(x);
            x[column] = 1f;
            backend.Upload(x, xt);
            backend.MatMul(xt, wt, null, yt);
            var actual = Download(backend, yt);
            for (var r = 0; r < 256; r++)
            {
                var bits = patterns[(r * 256) + column];
                var expected = (float)BitConverter.UInt16BitsToHalf(bits);
                Assert.True(expected == actual[r], $"F16 0x{bits:X4} through a one-token MatMul gave {actual[r]:R}, expected {expected:R}");
            }
        }
    }

    private static void NonFiniteHalfWeights(CpuBackend backend)
    {
        // Rows: +inf, -inf, NaN and 1.0 in column 3; the activations pick column 3.
        ushort[] halves = [.. Enumerable.Repeat((ushort)0, 4 * 8)];
        halves[3] = 0x7C00;
        halves[8 + 3] = 0xFC00;
        halves[16 + 3] = 0x7E00;
        halves[24 + 3] = 0x3C00;
        var x = new float[8];
        x[3] = 2f;
        using var xt = F32(backend, x, 1, 8);
        using var wt = Raw(backend, DType.F16, MemoryMarshal.AsBytes(halves.AsSpan()).ToArray(), 4, 8);
        using var yt = Poisoned(backend, 1, 4);
        backend.MatMul(xt, wt, null, yt);
        var y = Download(backend, yt);
        Assert.Equal(float.PositiveInfinity, y[0]);
        Assert.Equal(float.NegativeInfinity, y[1]);
        Assert.True(float.IsNaN(y[2]), $"NaN weight gave {y[2]}");
        Assert.Equal(2f, y[3]);
    }

    private static void SiluMul(CpuBackend backend, int count)
    {
        var random = new Random(count);
        var gate = RandomValues(random, count, 8f);
        var up = RandomValues(random, count, 2f);
        using var gt = F32(backend, gate, count);
        using var ut = F32(backend, up, count);
        using var yt = Poisoned(backend, count);
        backend.SiluMul(gt, ut, yt);
        var expected = ReferenceOps.SiluMul(Widen(gate), Widen(up));
        AssertClose("SiluMul", expected, Download(backend, yt), i => 1e-6 + (1e-6 * Math.Abs(expected[i])));
    }

    private static void Add(CpuBackend backend, int count, bool aliasOutput)
    {
        var random = new Random(count + (aliasOutput ? 1 : 0));
        var a = RandomValues(random, count, 4f);
        var b = RandomValues(random, count, 4f);
        using var at = F32(backend, a, count);
        using var bt = F32(backend, b, count);
        using var yt = aliasOutput ? null : Poisoned(backend, count);
        backend.Add(at, bt, yt ?? at);

        // A sum of two floats rounded once: the reference rounded to fp32 must match exactly.
        var expected = ReferenceOps.Add(Widen(a), Widen(b)).Select(v => (double)(float)v).ToArray();
        AssertClose("Add", expected, Download(backend, yt ?? at), _ => 0);
    }

    private static void GatherLogitRows(CpuBackend backend, int tokens, int columns, int[] rows)
    {
        var random = new Random(tokens * columns);
        var x = RandomValues(random, tokens * columns, 1f);
        var batch = Batch(new int[tokens], Enumerable.Range(0, tokens).ToArray(), [new SequenceSlice(0, tokens, tokens, [0])], rows);
        using var xt = F32(backend, x, tokens, columns);
        using var yt = Poisoned(backend, rows.Length, columns);
        backend.PrepareStep(batch);
        backend.GatherLogitRows(xt, batch, yt);
        var expected = rows.SelectMany(r => Widen(x).Skip(r * columns).Take(columns)).ToArray();
        AssertClose("GatherLogitRows", expected, Download(backend, yt), _ => 0);
    }

    private static void Rope(CpuBackend backend, int tokens, int heads, int headDim, int rotaryDim, bool interleaved, float scaling)
    {
        var random = new Random(HashCode.Combine(tokens, heads, headDim, rotaryDim, interleaved));
        var x = RandomValues(random, tokens * heads * headDim, 3f);
        var positions = Enumerable.Range(0, tokens).Select(_ => random.Next(40_000)).ToArray();
        positions[0] = 0;
        var inverse = Enumerable.Range(0, rotaryDim / 2).Select(i => (float)(1.0 / Math.Pow(1_000_000.0, 2.0 * i / rotaryDim))).ToArray();
        var rope = new RopeSpec(inverse, rotaryDim, interleaved, scaling);
        var batch = Batch(new int[tokens], positions, [new SequenceSlice(0, tokens, positions.Max() + 1, [0])]);

        using var xt = F32(backend, x, tokens, heads, headDim);
        backend.PrepareStep(batch);
        backend.Rope(xt, batch, rope);
        var expected = ReferenceOps.Rope(Widen(x), tokens, heads, headDim, positions, rope);

        // cos/sin in fp32 against float64 of the same fp32 angle: about an ulp of each product.
        AssertClose("Rope", expected, Download(backend, xt), i => 1e-6 * (1 + Math.Abs(expected[i])) * scaling * 3);
    }

    private static void Attention(CpuBackend backend, int heads, int kvHeads, int headDim, int blockSize, (int Query, int Context)[] sequences, float magnitude)
    {
        var random = new Random(HashCode.Combine(heads, kvHeads, headDim, blockSize, sequences.Length));
        var blocksNeeded = sequences.Sum(s => (s.Context + blockSize - 1) / blockSize);
        var blocks = blocksNeeded + 3;
        var rowFloats = kvHeads * headDim;

        // Scatter every sequence's blocks over the cache in a shuffled order; the spare blocks stay NaN.
        var free = Enumerable.Range(0, blocks).OrderBy(_ => random.Next()).ToArray();
        var next = 0;
        var tokens = sequences.Sum(s => s.Query);
        var positions = new int[tokens];
        var slots = new int[tokens];
        var tokenSequence = new int[tokens];
        var slices = new SequenceSlice[sequences.Length];
        var keys = new double[sequences.Length][];
        var values = new double[sequences.Length][];
        var cacheK = Enumerable.Repeat(float.NaN, blocks * blockSize * rowFloats).ToArray();
        var cacheV = (float[])cacheK.Clone();
        var newK = new float[tokens * rowFloats];
        var newV = new float[tokens * rowFloats];
        var start = 0;
        for (var s = 0; s < sequences.Length; s++)
        {
            var (query, context) = sequences[s];
            var table = free.Skip(next).Take((context + blockSize - 1) / blockSize).ToArray();
            next += table.Length;
            slices[s] = new SequenceSlice(start, query, context, table);
            var k = RandomValues(random, context * rowFloats, 1f);
            var v = RandomValues(random, context * rowFloats, 1f);
            keys[s] = Widen(k);
            values[s] = Widen(v);
            for (var p = 0; p < context; p++)
            {
                var slot = (table[p / blockSize] * blockSize) + (p % blockSize);
                var t = start + p - (context - query);
                if (t >= start)
                {
                    // A token of this step: its k/v arrive as inputs and the op must store them.
                    positions[t] = p;
                    slots[t] = slot;
                    tokenSequence[t] = s;
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

        var q = RandomValues(random, tokens * heads * headDim, magnitude);
        var scale = 1f / MathF.Sqrt(headDim);
        var batch = Batch(new int[tokens], positions, slices, slotMapping: slots);

        using var qt = F32(backend, q, tokens, heads, headDim);
        using var kt = F32(backend, newK, tokens, kvHeads, headDim);
        using var vt = F32(backend, newV, tokens, kvHeads, headDim);
        using var kc = F32(backend, cacheK, blocks, blockSize, kvHeads, headDim);
        using var vc = F32(backend, cacheV, blocks, blockSize, kvHeads, headDim);
        using var yt = Poisoned(backend, tokens, heads, headDim);
        backend.PrepareStep(batch);
        backend.Attention(qt, kt, vt, kc, vc, batch, scale, yt);

        var expected = ReferenceOps.Attention(Widen(q), heads, kvHeads, headDim, positions, tokenSequence, keys, values, scale);
        AssertClose("Attention", expected, Download(backend, yt), i => 2e-6 + (2e-6 * Math.Abs(expected[i])));

        // The new rows landed at their slots.
        var storedK = Download(backend, kc);
        var storedV = Download(backend, vc);
        for (var t = 0; t < tokens; t++)
        {
            for (var j = 0; j < rowFloats; j++)
            {
                Assert.Equal(newK[(t * rowFloats) + j], storedK[(slots[t] * rowFloats) + j]);
                Assert.Equal(newV[(t * rowFloats) + j], storedV[(slots[t] * rowFloats) + j]);
            }
        }
    }

    internal static ForwardBatch Batch(int[] ids, int[] positions, SequenceSlice[] sequences, int[]? logitRows = null, int[]? slotMapping = null) => new()
    {
        TokenIds = ids,
        Positions = positions,
        SlotMapping = slotMapping ?? new int[ids.Length],
        Sequences = sequences,
        LogitRows = logitRows ?? [ids.Length - 1],
    };

    internal static float[] RandomValues(Random random, int count, float magnitude)
    {
        var values = new float[count];
        for (var i = 0; i < count; i++)
        {
            values[i] = (float)(((random.NextDouble() * 2) - 1) * magnitude);
        }

        return values;
    }

    /// <summary>Random weights in the given type: the stored bytes, and the exact values those bytes hold.</summary>
    internal static (byte[] Bytes, double[] Values) RandomWeights(Random random, DType dtype, int count, float magnitude)
    {
        var values = RandomValues(random, count, magnitude);
        var exact = new double[count];
        byte[] bytes;
        switch (dtype)
        {
            case DType.F32:
                bytes = MemoryMarshal.AsBytes(values.AsSpan()).ToArray();
                exact = Widen(values);
                break;
            case DType.F16:
                var halves = values.Select(v => (Half)v).ToArray();
                bytes = MemoryMarshal.AsBytes(halves.AsSpan()).ToArray();
                exact = halves.Select(h => (double)h).ToArray();
                break;
            case DType.BF16:
                var bf16 = values.Select(v => (ushort)(BitConverter.SingleToUInt32Bits(v) >> 16)).ToArray();
                bytes = MemoryMarshal.AsBytes(bf16.AsSpan()).ToArray();
                exact = bf16.Select(b => (double)BitConverter.UInt32BitsToSingle((uint)b << 16)).ToArray();
                break;
            default:
                throw new ArgumentOutOfRangeException(nameof(dtype));
        }

        return (bytes, exact);
    }

    internal static DeviceTensor F32(CpuBackend backend, float[] values, params int[] shape)
    {
        var tensor = backend.Allocate(DType.F32, shape);
        backend.Upload(values, tensor);
        return tensor;
    }

    internal static DeviceTensor Raw(CpuBackend backend, DType dtype, byte[] bytes, params int[] shape)
    {
        var tensor = backend.Allocate(dtype, shape);
        backend.UploadBytes(bytes, tensor);
        return tensor;
    }

    internal static DeviceTensor Poisoned(CpuBackend backend, params int[] shape)
    {
        var tensor = backend.Allocate(DType.F32, shape);
        backend.Upload(Enumerable.Repeat(float.NaN, (int)tensor.ElementCount).ToArray(), tensor);
        return tensor;
    }

    internal static float[] Download(CpuBackend backend, DeviceTensor tensor)
    {
        var values = new float[tensor.ElementCount];
        backend.Download(tensor, values);
        return values;
    }

    private static double[] Widen(float[] values) => values.Select(v => (double)v).ToArray();

    private static double[] Abs(double[] values) => values.Select(Math.Abs).ToArray();

    internal static void AssertClose(string what, double[] expected, float[] actual, Func<int, double> tolerance)
    {
        Assert.Equal(expected.Length, actual.Length);
        var failures = 0;
        var first = -1;
        for (var i = 0; i < expected.Length; i++)
        {
            var error = Math.Abs(actual[i] - expected[i]);
            if (!(error <= tolerance(i)))
            {
                failures++;
                first = first < 0 ? i : first;
            }
        }

        Assert.True(
            failures == 0,
            failures == 0 ? string.Empty : $"{what}: {failures} of {expected.Length} elements out of tolerance; first at {first}: expected {expected[first]:R}, got {actual[first]:R} (tolerance {tolerance(first):G3})");
    }
}
