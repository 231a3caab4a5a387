using Enclave.Engine.Backends;
using Enclave.Engine.Backends.Cpu;
using Enclave.Engine.Backends.Reference;

namespace Enclave.Cli.Commands;

/// <summary>The backend for embedding and rerank models: the CPU (or the reference yardstick); CUDA has no encoder kernels yet.</summary>
internal static class EncoderBackend
{
    public static IBackend Create(string device, int threads) => device switch
    {
        "auto" or "cpu" => new CpuBackend(threads),
        "reference" => new ReferenceBackend(),
        _ when device.StartsWith("cuda", StringComparison.Ordinal) =>
            throw new CliException($"--device {device}: embedding and rerank models run on the CPU only for now (the CUDA backend has no encoder kernels yet); use --device cpu"),
        _ => throw new CliException($"--device {device}: expected auto, cpu or reference"),
    };
}
