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

    private static string Shim => Path.Combine(AppContext.BaseDirectory, "Backends", "KernelSyntax", "cuda_host_shim.h");

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
