using Enclave.Engine.Backends;
using Enclave.Engine.Backends.Reference;
using Enclave.Engine.Cuda;

namespace Enclave.Engine.Tests.Support;

/// <summary>Every backend the table-driven tests run on; "cuda" only where a usable device exists.</summary>
public static class BackendFactory
{
    public static readonly string[] Names = CudaAvailability.Usable ? ["reference", "cpu", "cuda"] : ["reference", "cpu"];

    public static IBackend Create(string name) => name switch
    {
        "reference" => new ReferenceBackend(),
        "cpu" => new Enclave.Engine.Backends.Cpu.CpuBackend(),
        "cuda" => new CudaBackend(),
        _ => throw new ArgumentOutOfRangeException(nameof(name), name, "unknown backend"),
    };
}
