using System.CommandLine;
using Enclave.Engine.Backends;
using Enclave.Engine.Backends.Cpu;
using Enclave.Engine.Backends.Reference;
using Enclave.Engine.Cuda;

namespace Enclave.Cli.Commands;

/// <summary>Options several commands share, and what they resolve to.</summary>
internal static class CommonOptions
{
    public static Option<string> Model(bool required = true) => new("--model", "-m")
    {
        Description = "Hugging Face model directory (config.json, *.safetensors, tokenizer.json)",
        Required = required,
    };

    public static Option<string> Device() => new("--device")
    {
        Description = "Where to run: auto (CUDA when a usable GPU is found, else CPU), cpu, cuda[:N], or reference (slow scalar yardstick)",
        DefaultValueFactory = _ => "auto",
    };

    public static Option<int> Threads() => new("--threads")
    {
        Description = "CPU worker threads (0 = all cores)",
        DefaultValueFactory = _ => 0,
    };

    /// <summary>The data directory: ENCLAVE_HOME, else ~/.enclave. Created on first use.</summary>
    public static string DataDirectory()
    {
        var home = Environment.GetEnvironmentVariable("ENCLAVE_HOME");
        if (string.IsNullOrWhiteSpace(home))
        {
            home = Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".enclave");
        }

        Directory.CreateDirectory(home);
        return home;
    }

    public static IBackend CreateBackend(string device, int threads)
    {
        switch (device.Trim().ToLowerInvariant())
        {
            case "auto":
                var probe = CudaDevice.Probe(0);
                if (probe.Usable)
                {
                    var gpu = CreateCuda(0);
                    Console.Error.WriteLine($"device: {gpu.Name} (--device auto found a usable GPU)");
                    return gpu;
                }

                var cpu = new CpuBackend(threads);
                Console.Error.WriteLine($"device: {cpu.Name} (--device auto: no usable CUDA device: {probe.Reason})");
                return cpu;
            case "cpu":
                return new CpuBackend(threads);
            case "reference":
                return new ReferenceBackend();
            default:
                if (CudaDevice.ParseOrdinal(device) is { } ordinal)
                {
                    var found = CudaDevice.Probe(ordinal);
                    if (!found.Usable)
                    {
                        throw new CliException($"--device {device} is not usable: {found.Reason}");
                    }

                    return CreateCuda(ordinal);
                }

                throw new CliException($"--device {device}: unknown device (expected auto, cpu, cuda, cuda:N, reference)");
        }
    }

    /// <summary>
    /// The CUDA backend on device N. ENCLAVE_CUDA_GEMM=tensor-core sends prefill-sized products with F16/BF16 weights
    /// through cuBLAS tensor cores (activations rounded to the weight type) instead of the exact fp32 kernel.
    /// </summary>
    private static CudaBackend CreateCuda(int ordinal)
    {
        var tensorCores = string.Equals(Environment.GetEnvironmentVariable("ENCLAVE_CUDA_GEMM"), "tensor-core", StringComparison.OrdinalIgnoreCase);
        try
        {
            return new CudaBackend(new CudaBackendOptions { Device = ordinal, TensorCoreGemm = tensorCores });
        }
        catch (Exception e) when (e is CudaUnavailableException or CudaException)
        {
            throw new CliException($"--device cuda:{ordinal}: {e.Message}");
        }
    }
}

/// <summary>A user error: printed as one line on stderr, exit code 2.</summary>
internal sealed class CliException(string message) : Exception(message);
