using Enclave.Engine.Backends.Cpu;
using Enclave.Engine.Backends;
using Enclave.Engine.Formats.Gguf;
using Enclave.Engine.Tests.Support;

namespace Enclave.Engine.Tests.Backends;

/// <summary>
/// The AMX Q8_0 (from grouped weights), Q5_0, Q4_K, Q5_K and Q6_K products against the AVX-VNNI kernels on the same quantised inputs (both sum the int8 products exactly,
/// so they differ only in the order of the fp32 scale sums), the Q8_0 bf16 kernel against the dequantised weights in
/// fp64, and the committed machine code against its C source.
/// </summary>
public sealed class CpuAmxTests
{
    public static TheoryData<DType, int, int, int, bool> Shapes()
    {
        // Tokens: one tile short of full, more than one tile with a padded tail; rows: a remainder past whole groups of 16;
        // blocks of 32: one (the kernel's single-block tail), three (a pair plus the tail), and long rows.
        var data = new TheoryData<DType, int, int, int, bool>();
        foreach (var type in new[] { DType.Q8_0, DType.Q5_0 })
        {
            foreach (var (tokens, blocks, outFeatures, bias) in new[] { (8, 1, 16, false), (17, 3, 45, true), (77, 32, 64, false), (33, 2, 47, true) })
            {
                data.Add(type, tokens, blocks * 32, outFeatures, bias);
            }
        }

        // Q4_K, Q5_K and Q6_K: 256 values a super-block (8 or 16 blocks); one, three and four super-blocks.
        foreach (var type in new[] { DType.Q4_K, DType.Q5_K, DType.Q6_K })
        {
            foreach (var (tokens, superBlocks, outFeatures, bias) in new[] { (8, 1, 16, false), (17, 3, 45, true), (77, 4, 64, false), (33, 1, 47, true) })
            {
                data.Add(type, tokens, superBlocks * 256, outFeatures, bias);
            }
        }

        return data;
    }

    [AmxTheory]
    [MemberData(nameof(Shapes))]
    public void Products_on_amx_tiles_agree_with_the_vnni_kernel(DType type, int tokens, int inFeatures, int outFeatures, bool withBias)
    {
        var random = new Random((tokens * 31) + inFeatures + outFeatures);
        var w = Enumerable.Range(0, inFeatures * outFeatures).Select(_ => (float)(random.NextDouble() - 0.5)).ToArray();
        var x = Enumerable.Range(0, tokens * inFeatures).Select(_ => (float)((random.NextDouble() * 4) - 2)).ToArray();
        var bias = withBias ? Enumerable.Range(0, outFeatures).Select(_ => (float)random.NextDouble()).ToArray() : null;
        var blocks = new byte[type.StorageBytes(w.Length)];
        GgmlQuants.Quantize(type, w, blocks);

        var (amx, amxProducts) = Product(type, 512, tokens, inFeatures, outFeatures, blocks, x, bias);
        var (vnni, vnniProducts) = Product(type, 256, tokens, inFeatures, outFeatures, blocks, x, bias);
        // The Q8_0 kernel reads weights in 16-row groups only (CpuQ8_0Groups); where they are not grouped
        // (ENCLAVE_CPU_Q8_REPACK=0) Q8_0 products stay on the vector kernels.
        Assert.Equal(type != DType.Q8_0 || CpuQ8_0Groups.IsSupported(512) ? 1 : 0, amxProducts);
        Assert.Equal(0, vnniProducts);
        for (var i = 0; i < amx.Length; i++)
        {
            Assert.False(float.IsNaN(amx[i]), $"output {i / outFeatures}, {i % outFeatures} never written");
            Assert.True(Math.Abs(amx[i] - vnni[i]) <= 1e-5 * Math.Max(1, Math.Abs(vnni[i])), $"[{i / outFeatures}, {i % outFeatures}]: AMX {amx[i]} vs VNNI {vnni[i]}");
        }
    }

    public static TheoryData<int, int, int, bool> Bf16Shapes()
    {
        // Tokens (from AmxBf16MinTokens): whole tiles in pairs, a pair plus a padded odd tile (49, 77), many tiles;
        // rows: one group alone, a pair plus a lone group (48), groups with a remainder on the row kernels (45, 100,
        // 31); widths: one block, an odd number of blocks (96 = 32·3), the 0.5B model's hidden and MLP widths.
        var data = new TheoryData<int, int, int, bool>();
        foreach (var (tokens, inFeatures, outFeatures, bias) in new[]
        {
            (48, 32, 16, false), (64, 96, 48, true), (49, 96, 45, false), (77, 896, 100, true), (128, 896, 64, false),
            (49, 4864, 48, false), (50, 32, 31, true), (64, 160, 80, true), (96, 64, 112, false),
        })
        {
            data.Add(tokens, inFeatures, outFeatures, bias);
        }

        return data;
    }

    [AmxBf16Theory]
    [MemberData(nameof(Bf16Shapes))]
    public void Q8_0_products_on_bf16_tiles_agree_with_the_dequantised_weights(int tokens, int inFeatures, int outFeatures, bool withBias)
    {
        var random = new Random((tokens * 131) + inFeatures + outFeatures);
        var w = Enumerable.Range(0, inFeatures * outFeatures).Select(_ => (float)(random.NextDouble() - 0.5)).ToArray();
        var x = Enumerable.Range(0, tokens * inFeatures).Select(_ => (float)((random.NextDouble() * 4) - 2)).ToArray();
        var bias = withBias ? Enumerable.Range(0, outFeatures).Select(_ => (float)random.NextDouble()).ToArray() : null;
        var blocks = new byte[DType.Q8_0.StorageBytes(w.Length)];
        GgmlQuants.Quantize(DType.Q8_0, w, blocks);
        var dequantised = new float[w.Length];
        GgmlQuants.Dequantize(DType.Q8_0, blocks, dequantised);

        using var backend = new CpuBackend(3, 512);
        var (y, amxProducts, grouped) = Product(backend, DType.Q8_0, tokens, inFeatures, outFeatures, blocks, x, bias);
        Assert.True(grouped);
        Assert.Equal(1, amxProducts);
        Assert.Equal(1, backend.AmxBf16Products);

        // Each weight (level × scale) and activation is rounded to bf16, relative error at most 2^-9 each, so a product
        // term is off by at most about 2^-8 of its size; the fp32 sum over K adds at most K·2^-24 of the sum of sizes.
        // Hence the bound (2^-8 + K·2^-23)·Σ|w·x|, which random signs keep well clear of. The rows past the last group
        // of 16 take the int8 row kernels, whose activation rounding (2^-8 of the block maximum) the bound also covers
        // for these inputs.
        var tolerance = Math.Pow(2, -8) + (inFeatures * Math.Pow(2, -23));
        for (var t = 0; t < tokens; t++)
        {
            for (var r = 0; r < outFeatures; r++)
            {
                double expected = bias?[r] ?? 0, size = 0;
                for (var k = 0; k < inFeatures; k++)
                {
                    var term = (double)dequantised[(r * inFeatures) + k] * x[(t * inFeatures) + k];
                    expected += term;
                    size += Math.Abs(term);
                }

                var actual = y[(t * outFeatures) + r];
                Assert.False(float.IsNaN(actual), $"output {t}, {r} never written");
                Assert.True(Math.Abs(actual - expected) <= (tolerance * size) + 1e-6, $"[{t}, {r}]: bf16 AMX {actual} vs fp64 {expected} (Σ|w·x| {size})");
            }
        }
    }

    [GccFact]
    public void The_committed_machine_code_is_what_the_kernel_sources_compile_to()
    {
        var generated = Path.Combine(Path.GetTempPath(), $"enclave-amx-{Environment.ProcessId}.cs");
        try
        {
            var (exitCode, output) = ExternalProcess.Run("bash", GccFactAttribute.Script, generated);
            Assert.True(exitCode == 0, output);
            Assert.Equal(File.ReadAllText(GccFactAttribute.Committed), File.ReadAllText(generated));
        }
        finally
        {
            File.Delete(generated);
        }
    }

    private static (float[] Y, long AmxProducts) Product(DType type, int width, int tokens, int inFeatures, int outFeatures, byte[] blocks, float[] x, float[]? bias)
    {
        // Q8_0 on the int8 kernel, which sums the same int8 products as the vector kernels (the bf16 kernel rounds the
        // weights and activations to bf16; it has tests of its own below).
        using var backend = new CpuBackend(3, width, amxBf16: false);
        var (y, amxProducts, _) = Product(backend, type, tokens, inFeatures, outFeatures, blocks, x, bias);
        return (y, amxProducts);
    }

    /// <summary>y = x · wᵀ (+ bias) on <paramref name="backend"/> for raw weight blocks, with the backend's AMX product count
    /// and whether the weight ended in the grouped Q8_0 layout. Outputs start NaN, so an unwritten one shows.</summary>
    internal static (float[] Y, long AmxProducts, bool Grouped) Product(CpuBackend backend, DType type, int tokens, int inFeatures, int outFeatures, byte[] blocks, float[] x, float[]? bias)
    {
        using var wt = (CpuTensor)backend.Allocate(type, outFeatures, inFeatures);
        backend.UploadBytes(blocks, wt);
        using var xt = backend.Allocate(DType.F32, tokens, inFeatures);
        backend.Upload(x, xt);
        using var bt = bias == null ? null : backend.Allocate(DType.F32, outFeatures);
        if (bt != null)
        {
            backend.Upload(bias!, bt);
        }

        using var yt = backend.Allocate(DType.F32, tokens, outFeatures);
        backend.Upload(Enumerable.Repeat(float.NaN, tokens * outFeatures).ToArray(), yt);
        backend.MatMul(xt, wt, bt, yt);
        var y = new float[tokens * outFeatures];
        backend.Download(yt, y);
        return (y, backend.AmxProducts, wt.Q8_0Grouped);
    }
}

/// <summary>A theory skipped, with the reason, where the AMX kernels do not run (no AMX, another OS, turned off).</summary>
public sealed class AmxTheoryAttribute : TheoryAttribute
{
    public AmxTheoryAttribute()
    {
        if (!CpuAmx.IsSupported)
        {
            Skip = CpuAmx.Status;
        }
    }
}

/// <summary>A theory skipped, with the reason, where the Q8_0 bf16 kernel does not run (no AMX-BF16, no grouped Q8_0 weights).</summary>
public sealed class AmxBf16TheoryAttribute : TheoryAttribute
{
    public AmxBf16TheoryAttribute()
    {
        Skip = Q8_0GroupsFactAttribute.SkipReason()
            ?? (!CpuAmx.IsSupported ? CpuAmx.Status : CpuAmx.Q8_0Bf16 == null ? $"no AMX-BF16 or AVX512-BF16 ({CpuAmx.Status})" : null);
    }
}

/// <summary>
/// A fact skipped unless this machine's gcc is the one the committed AMX machine code names (another compiler version
/// emits other, equally valid bytes, so only the same one can confirm them).
/// </summary>
public sealed class GccFactAttribute : FactAttribute
{
    public GccFactAttribute()
    {
        var named = File.ReadLines(Committed).Select(line => line.StartsWith("// Compiler: ", StringComparison.Ordinal) ? line["// Compiler: ".Length..] : null).FirstOrDefault(line => line != null);
        string? installed;
        try
        {
            var (exitCode, output) = ExternalProcess.Run("gcc", "--version");
            installed = exitCode == 0 ? output.Split('\n')[0].Trim() : null;
        }
        catch (System.ComponentModel.Win32Exception)
        {
            installed = null;
        }

        if (installed != named)
        {
            Skip = $"the committed AMX code comes from '{named}', this machine has '{installed ?? "no gcc"}'";
        }
    }

    public static string Committed => Path.Combine(Fixtures.RepositoryRoot, "src", "Enclave.Engine", "Backends", "Cpu", "AmxCode.g.cs");

    public static string Script => Path.Combine(Fixtures.RepositoryRoot, "tools", "cpu-kernels", "generate.sh");
}
