using System.Diagnostics;
using System.Reflection;
using System.Text.RegularExpressions;
using Enclave.Engine.Cuda;

namespace Enclave.Engine.Tests.Backends;

/// <summary>
/// The CUDA kernels compile only on a GPU host (NVRTC at run time), which CI does not have. Every embedded kernel source is
/// parsed here by g++ against host stand-ins for the CUDA builtins (KernelSyntax/cuda_host_shim.h), so that an undefined
/// name, a type error or a broken template fails the build's tests rather than the first run on a GPU.
/// </summary>
public sealed partial class CudaKernelSourceTests
{
    [Fact]
    public void Every_embedded_kernel_source_parses_as_cpp17()
    {
        var assembly = typeof(CudaBackend).Assembly;
        const string prefix = "Enclave.Engine.Cuda.Kernels.";
        var names = assembly.GetManifestResourceNames().Where(n => n.StartsWith(prefix, StringComparison.Ordinal)).ToArray();
        Assert.Contains(names, n => n.EndsWith(".cu", StringComparison.Ordinal));

        var directory = Directory.CreateTempSubdirectory("enclave-kernel-syntax-");
        try
        {
            foreach (var name in names)
            {
                File.WriteAllText(Path.Combine(directory.FullName, name[prefix.Length..]), BlankInlinePtx(Read(assembly, name)));
            }

            var failures = new List<string>();
            foreach (var source in Directory.GetFiles(directory.FullName, "*.cu").Order(StringComparer.Ordinal))
            {
                var (exitCode, errors) = Gxx(directory.FullName, source);
                if (exitCode != 0)
                {
                    failures.Add($"{Path.GetFileName(source)}:\n{errors}");
                }
            }

            Assert.True(failures.Count == 0, string.Join("\n", failures));
        }
        finally
        {
            directory.Delete(recursive: true);
        }
    }

    [Fact]
    public void The_syntax_check_catches_an_undefined_name()
    {
        // The check above must be able to fail: a kernel that uses a name nothing defines.
        var directory = Directory.CreateTempSubdirectory("enclave-kernel-syntax-");
        try
        {
            var source = Path.Combine(directory.FullName, "broken.cu");
            File.WriteAllText(source, "extern \"C\" __global__ void broken(float* y) { y[threadIdx.x] = UNDEFINED_GRANULE; }\n");
            var (exitCode, errors) = Gxx(directory.FullName, source);
            Assert.NotEqual(0, exitCode);
            Assert.Contains("UNDEFINED_GRANULE", errors, StringComparison.Ordinal);
        }
        finally
        {
            directory.Delete(recursive: true);
        }
    }

    [Fact]
    public void Every_kernel_passes_the_launch_gate()
    {
        // Kernels are launched so that the next one may start early (programmatic dependent launch); one that reads or
        // writes activations without launch_gate() first would race the kernel before it.
        var assembly = typeof(CudaBackend).Assembly;
        const string prefix = "Enclave.Engine.Cuda.Kernels.";
        var kernels = 0;
        var ungated = new List<string>();
        foreach (var name in assembly.GetManifestResourceNames().Where(n => n.StartsWith(prefix, StringComparison.Ordinal) && n.EndsWith(".cu", StringComparison.Ordinal)))
        {
            foreach (var kernel in UngatedKernels(WithHeaders(assembly, prefix, Read(assembly, name)), ref kernels))
            {
                ungated.Add($"{name[prefix.Length..]}: {kernel}");
            }
        }

        Assert.True(kernels >= 30, $"only {kernels} kernels found");
        Assert.True(ungated.Count == 0, "kernels without launch_gate(): " + string.Join(", ", ungated));
    }

    [Fact]
    public void The_gate_check_catches_a_kernel_without_the_gate()
    {
        var kernels = 0;
        const string source = """
            __device__ void helper(float* y) { launch_gate(); y[0] = 1; }
            extern "C" __global__ void gated(float* y) { helper(y); }
            extern "C" __global__ void ungated(float* y) { y[0] = 2; }
            """;
        Assert.Equal(["ungated"], UngatedKernels(source, ref kernels));
        Assert.Equal(2, kernels);
    }

    /// <summary>
    /// Names the kernels of one source whose text neither calls launch_gate() nor calls a device function of the same
    /// source that does (directly or through another such function). Each kernel's text runs to the next kernel.
    /// </summary>
    private static List<string> UngatedKernels(string source, ref int kernels)
    {
        var gating = new HashSet<string>(StringComparer.Ordinal) { "launch_gate" };
        var starts = KernelName().Matches(source).ToArray();
        var functions = DeviceFunction().Matches(source).Select(m => (Name: m.Groups[1].Value, Start: m.Index)).ToArray();
        for (var changed = true; changed;)
        {
            changed = false;
            for (var i = 0; i < functions.Length; i++)
            {
                // A function's text runs to the next function or kernel, whichever comes first.
                var end = i + 1 < functions.Length ? functions[i + 1].Start : source.Length;
                end = starts.Select(k => k.Index).Where(k => k > functions[i].Start).DefaultIfEmpty(end).Min() is var k0 && k0 < end ? k0 : end;
                var body = source[functions[i].Start..end];
                if (!gating.Contains(functions[i].Name) && gating.Any(g => Regex.IsMatch(body, $@"\b{g}\s*(<[^;()]*>)?\s*\(")))
                {
                    changed = gating.Add(functions[i].Name);
                }
            }
        }

        kernels += starts.Length;
        var ungated = new List<string>();
        for (var i = 0; i < starts.Length; i++)
        {
            var end = i + 1 < starts.Length ? starts[i + 1].Index : source.Length;
            var text = source[(starts[i].Index + starts[i].Length)..end];
            if (!gating.Any(g => Regex.IsMatch(text, $@"\b{g}\s*(<[^;()]*>)?\s*\(")))
            {
                ungated.Add(starts[i].Groups[1].Value);
            }
        }

        return ungated;
    }

    [GeneratedRegex(@"__device__\s+(?:__forceinline__\s+)?[\w:<>,\s\*&]*?\b(\w+)\s*\(")]
    private static partial Regex DeviceFunction();

    [GeneratedRegex(@"__global__\s+void\s+(?:__launch_bounds__\([^)]*\)\s+)?(\w+)")]
    private static partial Regex KernelName();

    private static string Shim => Path.Combine(AppContext.BaseDirectory, "Backends", "KernelSyntax", "cuda_host_shim.h");

    /// <summary>The source with the text of the kernel headers it includes (recursively, each once) before it, so device functions from headers count.</summary>
    private static string WithHeaders(Assembly assembly, string prefix, string source)
    {
        var seen = new HashSet<string>(StringComparer.Ordinal);
        var text = new System.Text.StringBuilder();
        void Add(string code)
        {
            foreach (Match include in Regex.Matches(code, "#include \"([^\"]+\\.cuh)\""))
            {
                var header = include.Groups[1].Value;
                if (seen.Add(header))
                {
                    Add(Read(assembly, prefix + header));
                }
            }

            text.Append(code).Append('\n');
        }

        Add(source);
        return text.ToString();
    }

    private static string Read(Assembly assembly, string name)
    {
        using var stream = assembly.GetManifestResourceStream(name)!;
        using var reader = new StreamReader(stream);
        return reader.ReadToEnd();
    }

    /// <summary>asm("..." : outputs : inputs) carries PTX constraints g++ cannot take; the shim turns it into a no-op.</summary>
    private static string BlankInlinePtx(string source) => InlineAsm().Replace(source, "enclave_blanked_asm(");

    private static (int ExitCode, string Errors) Gxx(string includeDirectory, string source)
    {
        var start = new ProcessStartInfo("g++")
        {
            RedirectStandardError = true,
            RedirectStandardOutput = true,
            UseShellExecute = false,
        };
        foreach (var argument in new[] { "-x", "c++", "-std=c++17", "-fsyntax-only", "-Wno-unknown-pragmas", "-include", Shim, "-I", includeDirectory, source })
        {
            start.ArgumentList.Add(argument);
        }

        Process process;
        try
        {
            process = Process.Start(start)!;
        }
        catch (System.ComponentModel.Win32Exception e)
        {
            throw new InvalidOperationException("g++ is needed to check the CUDA kernel sources (apt-get install g++); .ci/run installs it", e);
        }

        using (process)
        {
            var errors = process.StandardError.ReadToEndAsync();
            process.StandardOutput.ReadToEnd();
            process.WaitForExit();
            return (process.ExitCode, errors.Result);
        }
    }

    [GeneratedRegex(@"\basm\s*(volatile\s*)?\(")]
    private static partial Regex InlineAsm();
}
