using Enclave.Engine.Backends;
using Enclave.Engine.Backends.Cpu;

namespace Enclave.Engine.Tests.Backends;

/// <summary>
/// F16 and BF16 products on AMX-BF16 tiles (<see cref="CpuAmx.F16"/>, <see cref="CpuAmx.Bf16"/>: weights and activations
/// each split into a high and a low bf16 part) against a plain float64 reference, on shapes no tile divides, weights
/// over a wide range of exponents (F16 subnormals included) and activations with full fp32 significands; the output
/// starts NaN, so an element the kernel never writes fails.
/// </summary>
public sealed class CpuAmxHalfTests
{
    public static TheoryData<DType, int, int, int, bool> Shapes()
    {
        // Tokens: one whole tile (AmxF16MinTokens), a tile and one, padded tails over odd and even tile counts. In features:
        // 1 and 3 (one partial block, where the fp32 sum adds almost nothing to the split's own error, so the bound is
        // tight), whole blocks with a partial one (45, 103), 96, 1000, and 3300 with 77 tokens: five tiles × 104 blocks ×
        // 2 KiB of packed activations, past 1 MiB, so the kernel walks the row in three chunks and keeps its sums in
        // scratch between them. Rows: a lone partial group (5), partial last groups (31, 45, 100, 333), and 790 (50
        // groups, four a work item on three threads, the last item one whole group and a partial one).
        var data = new TheoryData<DType, int, int, int, bool>();
        foreach (var type in new[] { DType.F16, DType.BF16 })
        {
            foreach (var (tokens, inFeatures, outFeatures, bias) in new[]
            {
                (16, 32, 16, false), (17, 1, 5, true), (37, 3, 31, false), (50, 45, 45, true), (37, 103, 100, false),
                (77, 96, 333, true), (16, 1000, 64, false), (20, 64, 790, false), (77, 3300, 45, true),
            })
            {
                data.Add(type, tokens, inFeatures, outFeatures, bias);
            }
        }

        return data;
    }

    [AmxHalfTheory]
    [MemberData(nameof(Shapes))]
    public void Products_on_bf16_tiles_stay_within_the_split_bound_of_fp64(DType type, int tokens, int inFeatures, int outFeatures, bool withBias)
    {
        var random = new Random((tokens * 977) + (inFeatures * 31) + outFeatures + (int)type);
        var (bytes, w) = Weights(random, type, outFeatures * inFeatures);

        // Activations with full 24-bit significands over a range of exponents, either sign.
        var x = Enumerable.Range(0, tokens * inFeatures).Select(_ => Scaled(random, -10, 4)).ToArray();
        var bias = withBias ? Enumerable.Range(0, outFeatures).Select(_ => Scaled(random, -4, 2)).ToArray() : null;

        using var backend = new CpuBackend(3, 512);
        var y = Product(backend, type, tokens, inFeatures, outFeatures, bytes, x, bias);
        Assert.Equal(1, backend.AmxHalfProducts);

        // Per product (tools/cpu-kernels/half_amx.h): a = ahi + alo + r, |r| ≤ 2^-16·|a|, and w = whi + wlo exactly with
        // |wlo| ≤ 2^-8·|w| (BF16: wlo = 0); the kernel drops alo·wlo and r·w, at most (2^-8 + 2^-16)·2^-8 + 2^-16 of
        // |a·w| (BF16: 2^-16). The products of bf16 parts are exact in fp32, and the fp32 sum of n terms (3 per value for
        // F16, 2 for BF16, plus the bias) is off by at most n·2^-24 of the sum of their sizes, each within (1 + 2^-7) of
        // |a·w|.
        var split = type == DType.F16 ? Math.Pow(2, -15) + Math.Pow(2, -24) : Math.Pow(2, -16);
        var terms = ((type == DType.F16 ? 3 : 2) * inFeatures) + 1;
        var sum = terms * Math.Pow(2, -24) * (1 + Math.Pow(2, -7));
        for (var t = 0; t < tokens; t++)
        {
            for (var r = 0; r < outFeatures; r++)
            {
                double expected = bias?[r] ?? 0, size = Math.Abs(expected);
                for (var k = 0; k < inFeatures; k++)
                {
                    var term = w[(r * inFeatures) + k] * x[(t * inFeatures) + k];
                    expected += term;
                    size += Math.Abs(term);
                }

                var actual = y[(t * outFeatures) + r];
                Assert.False(float.IsNaN(actual), $"output {t}, {r} never written");
                var tolerance = ((split + sum) * size) + 1e-30;
                Assert.True(Math.Abs(actual - expected) <= tolerance,
                    $"[{t}, {r}]: {type} on AMX {actual:R} vs fp64 {expected:R}, error {Math.Abs(actual - expected) / size:E2} of Σ|a·w| {size:E3}, bound {tolerance / size:E2}");
            }
        }
    }

    [AmxHalfFact]
    public void F16_weights_with_an_infinity_keep_the_vector_path()
    {
        // [out, in] with +inf at row 2, column 5: that row's sum is +inf (positive activations), the others finite.
        const int Tokens = 40, In = 64, Out = 20;
        var random = new Random(5);
        var (bytes, w) = Weights(random, DType.F16, Out * In);
        bytes[((2 * In) + 5) * 2] = 0x00;
        bytes[(((2 * In) + 5) * 2) + 1] = 0x7C;
        w[(2 * In) + 5] = double.PositiveInfinity;
        var x = Enumerable.Range(0, Tokens * In).Select(_ => (float)(random.NextDouble() + 0.5)).ToArray();

        using var backend = new CpuBackend(3, 512);
        var y = Product(backend, DType.F16, Tokens, In, Out, bytes, x, null);
        Assert.Equal(0, backend.AmxHalfProducts);
        for (var t = 0; t < Tokens; t++)
        {
            for (var r = 0; r < Out; r++)
            {
                double expected = 0, size = 0;
                for (var k = 0; k < In; k++)
                {
                    expected += w[(r * In) + k] * x[(t * In) + k];
                    size += Math.Abs(w[(r * In) + k] * x[(t * In) + k]);
                }

                var actual = y[(t * Out) + r];
                Assert.True(r == 2 ? actual == float.PositiveInfinity : Math.Abs(actual - expected) <= (In + 1) * Math.Pow(2, -24) * size,
                    $"[{t}, {r}]: {actual:R} vs {expected:R}");
            }
        }
    }

    [AmxHalfTheory]
    [InlineData(DType.F16, CpuMatMul.AmxF16MinTokens)]
    [InlineData(DType.BF16, CpuMatMul.AmxBf16MinTokens)]
    public void Fewer_tokens_than_the_threshold_stay_on_the_vector_units(DType type, int minTokens)
    {
        var random = new Random(9);
        var (bytes, _) = Weights(random, type, 32 * 64);
        using var backend = new CpuBackend(3, 512);
        Product(backend, type, minTokens - 1, 64, 32, bytes, new float[(minTokens - 1) * 64], null);
        Assert.Equal(0, backend.AmxHalfProducts);
        Product(backend, type, minTokens, 64, 32, bytes, new float[minTokens * 64], null);
        Assert.Equal(1, backend.AmxHalfProducts);
        using var vectorOnly = new CpuBackend(3, 512, amx: false);
        Product(vectorOnly, type, 64, 64, 32, bytes, new float[64 * 64], null);
        Assert.Equal(0, vectorOnly.AmxHalfProducts);
    }

    /// <summary>
    /// Random weights as stored bytes and their exact values: sign × 2^e × (1 + f) with e over a wide range, rounded to
    /// F16 (e from -26: subnormals and some zeros; at most 4, so every value is finite) or truncated to BF16 (e from
    /// -40 to 10).
    /// </summary>
    private static (byte[] Bytes, double[] Values) Weights(Random random, DType type, int count)
    {
        var bytes = new byte[count * 2];
        var values = new double[count];
        for (var i = 0; i < count; i++)
        {
            ushort bits;
            if (type == DType.F16)
            {
                var half = (Half)Scaled(random, -26, 1);
                bits = BitConverter.HalfToUInt16Bits(half);
                values[i] = (double)half;
            }
            else
            {
                bits = (ushort)(BitConverter.SingleToUInt32Bits(Scaled(random, -40, 10)) >> 16);
                values[i] = BitConverter.UInt32BitsToSingle((uint)bits << 16);
            }

            bytes[2 * i] = (byte)bits;
            bytes[(2 * i) + 1] = (byte)(bits >> 8);
        }

        return (bytes, values);
    }

    /// <summary>± 2^e × (1 + f), e a whole number in [<paramref name="least"/>, <paramref name="most"/>], f in [0, 1).</summary>
    private static float Scaled(Random random, int least, int most) =>
        (float)((random.Next(2) == 0 ? -1 : 1) * Math.Pow(2, random.Next(least, most + 1)) * (1 + random.NextDouble()));

    /// <summary>y = x · wᵀ (+ bias) on <paramref name="backend"/> for raw 16-bit weights; the output starts NaN.</summary>
    private static float[] Product(CpuBackend backend, DType type, int tokens, int inFeatures, int outFeatures, byte[] weights, float[] x, float[]? bias)
    {
        using var wt = backend.Allocate(type, outFeatures, inFeatures);
        backend.UploadBytes(weights, wt);
        using var xt = CpuBackendOpsTests.F32(backend, x, tokens, inFeatures);
        using var bt = bias == null ? null : CpuBackendOpsTests.F32(backend, bias, outFeatures);
        using var yt = CpuBackendOpsTests.Poisoned(backend, tokens, outFeatures);
        backend.MatMul(xt, wt, bt, yt);
        return CpuBackendOpsTests.Download(backend, yt);
    }
}

/// <summary>A theory skipped, with the reason, where the F16 and BF16 AMX kernels do not run (no AMX-BF16, another OS, turned off).</summary>
public sealed class AmxHalfTheoryAttribute : TheoryAttribute
{
    public AmxHalfTheoryAttribute()
    {
        Skip = AmxHalfFactAttribute.SkipReason();
    }
}

/// <summary>A fact skipped, with the reason, where the F16 and BF16 AMX kernels do not run.</summary>
public sealed class AmxHalfFactAttribute : FactAttribute
{
    public AmxHalfFactAttribute()
    {
        Skip = SkipReason();
    }

    public static string? SkipReason() =>
        CpuAmx.F16 != null && CpuAmx.Bf16 != null ? null
        : !CpuAmx.IsSupported ? CpuAmx.Status
        : $"no F16/BF16 kernel on AMX-BF16 tiles here ({CpuAmx.Status})";
}
