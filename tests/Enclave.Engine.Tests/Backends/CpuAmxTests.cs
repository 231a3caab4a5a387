using Enclave.Engine.Backends.Cpu;
using Enclave.Engine.Backends;
using Enclave.Engine.Formats.Gguf;
using Enclave.Engine.Tests.Support;

namespace Enclave.Engine.Tests.Backends;

/// <summary>
/// The AMX Q8_0 (from grouped weights), Q5_0, Q4_K, Q5_K and Q6_K products against the AVX-VNNI kernels on the same quantised inputs (both sum the int8 products exactly,
/// so they differ only in the order of the fp32 scale sums), and the committed machine code against its C source.
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
        using var backend = new CpuBackend(3, width);
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
