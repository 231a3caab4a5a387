using Enclave.Engine.Tests.Support;
using Enclave.Operations.Registry;

namespace Enclave.Operations.Tests.Support;

internal static class StoreSeed
{
    /// <summary>Installs a copy of a fixture model into the store, as pull or import would.</summary>
    public static ModelRecord Install(ModelStore store, string name, string fixture = "tiny-qwen3")
    {
        var staging = store.StagingPath(name);
        Directory.CreateDirectory(staging);
        foreach (var f in Directory.GetFiles(Fixtures.Model(fixture)))
        {
            File.Copy(f, Path.Combine(staging, Path.GetFileName(f)));
        }

        var record = ModelStore.WriteRecord(staging, new ModelRecord { Name = name, Repo = "fixtures/" + fixture, InstalledAt = DateTimeOffset.UtcNow, Files = [] });
        store.InstallFromStaging(staging, name);
        return record;
    }
}
