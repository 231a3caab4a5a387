using Enclave.Engine.Backends;
using Enclave.Engine.Backends.Cpu;
using Enclave.Engine.Backends.Reference;

namespace Enclave.Engine.Cuda;

/// <summary>A --device value that cannot be honoured; the message says why.</summary>
public sealed class DeviceSelectionException(string message) : Exception(message);

/// <summary>
/// Turns a <c>--device</c> value (auto, cpu, reference, cuda, cuda:N) into a backend. Shared by every command that
/// runs a model, so they all choose and explain the same way.
/// </summary>
public static class DeviceSelection
{
    /// <param name="device">auto picks CUDA when a usable GPU is found, else the CPU.</param>
    /// <param name="threads">CPU worker threads (0 = all cores).</param>
    /// <param name="report">Receives one line saying which device was chosen and why (for auto).</param>
    /// <param name="enforceEager">No CUDA graphs: every decode step launches its ops from the host (--enforce-eager).</param>
    public static IBackend Create(string device, int threads, Action<string>? report = null, bool enforceEager = false)
    {
        switch (device.Trim().ToLowerInvariant())
        {
            case "auto":
                var probe = CudaDevice.Probe(0);
                if (probe.Usable)
                {
                    var gpu = CreateCuda(0, enforceEager);
                    report?.Invoke($"device: {gpu.Name} (--device auto found a usable GPU)");
                    return gpu;
                }

                var cpu = new CpuBackend(threads);
                report?.Invoke($"device: {cpu.Name} (--device auto: no usable CUDA device: {probe.Reason})");
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
                        throw new DeviceSelectionException($"--device {device} is not usable: {found.Reason}");
                    }

                    return CreateCuda(ordinal, enforceEager);
                }

                throw new DeviceSelectionException($"--device {device}: unknown device (expected auto, cpu, cuda, cuda:N, reference)");
        }
    }

    /// <summary>
    /// The CUDA backend on device N. ENCLAVE_CUDA_GEMM=tensor-core sends prefill-sized products with F16/BF16 weights
    /// through cuBLAS tensor cores (activations rounded to the weight type) instead of the exact fp32 kernel;
    /// ENCLAVE_CUDA_SPLIT_K=N caps the K chunks of skinny tensor-core products (1 turns the split off), for benchmarks.
    /// </summary>
    private static CudaBackend CreateCuda(int ordinal, bool enforceEager)
    {
        var tensorCores = string.Equals(Environment.GetEnvironmentVariable("ENCLAVE_CUDA_GEMM"), "tensor-core", StringComparison.OrdinalIgnoreCase);
        var splitK = Environment.GetEnvironmentVariable("ENCLAVE_CUDA_SPLIT_K");
        var splitKLimit = 0;
        if (splitK is not null && (!int.TryParse(splitK, System.Globalization.CultureInfo.InvariantCulture, out splitKLimit) || splitKLimit < 1))
        {
            throw new DeviceSelectionException($"ENCLAVE_CUDA_SPLIT_K must be a whole number of 1 or more, not '{splitK}'");
        }

        try
        {
            var backend = new CudaBackend(new CudaBackendOptions { Device = ordinal, TensorCoreGemm = tensorCores, CudaGraphs = !enforceEager });
            if (splitKLimit > 0)
            {
                backend.SplitKLimit = splitKLimit;
            }

            return backend;
        }
        catch (Exception e) when (e is CudaUnavailableException or CudaException)
        {
            throw new DeviceSelectionException($"--device cuda:{ordinal}: {e.Message}");
        }
    }
}
