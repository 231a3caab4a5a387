using Enclave.Engine.Backends;
using Enclave.Engine.Backends.Reference;

namespace Enclave.Engine.Tests.Support;

/// <summary>Every backend the table-driven tests run on.</summary>
public static class BackendFactory
{
    public static readonly string[] Names = ["reference", "cpu"];

    public static IBackend Create(string name) => name switch
    {
        "reference" => new ReferenceBackend(),
        "cpu" => new Enclave.Engine.Backends.Cpu.CpuBackend(),
        _ => throw new ArgumentOutOfRangeException(nameof(name), name, "unknown backend"),
    };
}
