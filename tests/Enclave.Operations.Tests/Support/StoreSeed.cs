using Enclave.Engine.Tests.Support;
using Enclave.Operations.Registry;

namespace Enclave.Operations.Tests.Support;

internal static class StoreSeed
{
    /// <summary>Installs a copy of a fixture model into the store (enclave models add).</summary>
    public static ModelRecord Install(ModelStore store, string name, string fixture = "tiny-qwen3") => store.Add(Fixtures.Model(fixture), name);
}
