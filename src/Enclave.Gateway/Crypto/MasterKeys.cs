namespace Enclave.Gateway.Crypto;

/// <summary>Builds the master-key provider and protector the gateway is configured with.</summary>
public static class MasterKeys
{
    public const string File = "file";
    public const string Env = "env";

    public static string DefaultFile(string home) => Path.Combine(home, "keys", "master.keys");

    public static IKeyProvider Provider(string kind, string file, string variable) => kind switch
    {
        File => FileKeyProvider.OpenOrCreate(file),
        Env => new EnvironmentKeyProvider(variable),
        _ => throw new FormatException($"Unknown key provider '{kind}' (use file or env)."),
    };

    public static SecretProtector Protector(string kind, string file, string variable, string algorithm) =>
        new(Provider(kind, file, variable), algorithm);
}
