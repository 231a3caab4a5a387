using Enclave.Engine.Formats;
using Enclave.Operations.Encryption;
using Enclave.Operations.Registry;
using Enclave.Server.Hosting;

namespace Enclave.Cli.Commands;

/// <summary>What <c>run</c>, <c>chat</c> and <c>serve</c> add from the operations side: installed model names and encrypted weights.</summary>
internal static class StoreModels
{
    /// <summary>A bare name that is no directory but an installed model resolves to the model's directory in the store.</summary>
    public static string? Resolve(string model)
    {
        if (Directory.Exists(model) || model.IndexOfAny(['/', '\\']) >= 0)
        {
            return null;
        }

        var store = new ModelStore(CommonOptions.DataDirectory());
        return store.Exists(model) ? store.PathOf(model) : null;
    }

    /// <summary>
    /// Opens an encrypted checkpoint with the key file named by ENCLAVE_WEIGHTS_KEY_FILE, else ENCLAVE_HOME/keys/models.key;
    /// null for plaintext checkpoints.
    /// </summary>
    public static IWeightSource? OpenEncrypted(string directory) =>
        EncryptedCheckpoint.IsEncrypted(directory)
            ? EncryptedWeightSource.Open(directory, EncryptedCheckpoint.KeyProvider(Environment.GetEnvironmentVariable("ENCLAVE_WEIGHTS_KEY_FILE"), CommonOptions.DataDirectory(), create: false))
            : null;

    public static void ConfigureServe(ServerOptions options)
    {
        for (var i = 0; i < options.Models.Count; i++)
        {
            if (Resolve(options.Models[i].Directory) is { } installed)
            {
                options.Models[i] = options.Models[i] with { Directory = installed };
            }
        }

        options.WeightSourceFactory = OpenEncrypted;
    }
}
