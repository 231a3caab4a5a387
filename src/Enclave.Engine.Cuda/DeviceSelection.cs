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
    /// ENCLAVE_CUDA_SPLIT_K=N caps the K chunks of skinny tensor-core products (1 turns the split off) and
    /// ENCLAVE_CUDA_MMA_DECODE=N sets the sequences × KV heads from which decode attention runs on the MMA kernel (0: never)
    /// and ENCLAVE_CUDA_MMA_DECODE_SPLITS=N caps its key spans (1: one span a sequence), and ENCLAVE_CUDA_GEMV_TOKENS=N
    /// sets the most tokens a product runs as a GEMV (0: every product on the GEMM path), ENCLAVE_CUDA_LATENT_SPLIT_BLOCKS=N
    /// the blocks a multiprocessor MLA decode attention splits contexts for, ENCLAVE_CUDA_MOE=host keeps
    /// MoE routing on the host (MoE models then run their decode steps without graphs), and ENCLAVE_CUDA_MLA_FUSED=0
    /// runs MLA's latent norm/rope and latent query as their parts, for benchmarks.
    /// </summary>
    private static CudaBackend CreateCuda(int ordinal, bool enforceEager)
    {
        var tensorCores = string.Equals(Environment.GetEnvironmentVariable("ENCLAVE_CUDA_GEMM"), "tensor-core", StringComparison.OrdinalIgnoreCase);
        var splitKLimit = WholeNumber("ENCLAVE_CUDA_SPLIT_K", 1);
        var mmaDecode = WholeNumber("ENCLAVE_CUDA_MMA_DECODE", 0);
        var mmaDecodeSplits = WholeNumber("ENCLAVE_CUDA_MMA_DECODE_SPLITS", 1);
        var gemvTokens = WholeNumber("ENCLAVE_CUDA_GEMV_TOKENS", 0);
        var latentSplitBlocks = WholeNumber("ENCLAVE_CUDA_LATENT_SPLIT_BLOCKS", 1);
        var programmaticLaunch = WholeNumber("ENCLAVE_CUDA_PDL", 0);
        var hostMoe = string.Equals(Environment.GetEnvironmentVariable("ENCLAVE_CUDA_MOE"), "host", StringComparison.OrdinalIgnoreCase);
        var fusedLatent = WholeNumber("ENCLAVE_CUDA_MLA_FUSED", 0);

        try
        {
            var backend = new CudaBackend(new CudaBackendOptions
            {
                Device = ordinal, TensorCoreGemm = tensorCores, CudaGraphs = !enforceEager, ProgrammaticLaunch = programmaticLaunch != 0,
                DeviceMoe = !hostMoe,
            });
            if (splitKLimit > 0)
            {
                backend.SplitKLimit = splitKLimit;
            }

            if (mmaDecode >= 0)
            {
                backend.MmaDecodeMinBlocks = mmaDecode;
            }

            if (mmaDecodeSplits > 0)
            {
                backend.MmaDecodeMaxSplits = mmaDecodeSplits;
            }

            if (gemvTokens >= 0)
            {
                backend.GemvLimitOverride = gemvTokens;
            }

            if (latentSplitBlocks > 0)
            {
                backend.LatentSplitBlocksPerMultiprocessor = latentSplitBlocks;
            }

            if (fusedLatent >= 0)
            {
                backend.FusedLatentOps = fusedLatent != 0;
            }

            return backend;
        }
        catch (Exception e) when (e is CudaUnavailableException or CudaException)
        {
            throw new DeviceSelectionException($"--device cuda:{ordinal}: {e.Message}");
        }
    }

    /// <summary>A benchmark knob: the whole number (at least <paramref name="minimum"/>) in an environment variable, -1 when unset.</summary>
    private static int WholeNumber(string variable, int minimum)
    {
        var text = Environment.GetEnvironmentVariable(variable);
        if (text is null)
        {
            return -1;
        }

        if (!int.TryParse(text, System.Globalization.CultureInfo.InvariantCulture, out var value) || value < minimum)
        {
            throw new DeviceSelectionException($"{variable} must be a whole number of {minimum} or more, not '{text}'");
        }

        return value;
    }
}
