using System.Text;
using Org.BouncyCastle.Crypto.Parameters;
using Org.BouncyCastle.Crypto.Signers;
using Org.BouncyCastle.Security;

namespace Enclave.Gateway.Audit;

/// <summary>Ed25519 signing of audit checkpoints, with the private key kept in a file (mode 0600).</summary>
public sealed class AuditSigner
{
    private readonly Ed25519PrivateKeyParameters _private;

    private AuditSigner(Ed25519PrivateKeyParameters key)
    {
        _private = key;
        PublicKey = Convert.ToBase64String(key.GeneratePublicKey().GetEncoded());
    }

    public string PublicKey { get; }

    /// <summary>Loads the key from <paramref name="path"/>, creating it on first use.</summary>
    public static AuditSigner LoadOrCreate(string path)
    {
        if (File.Exists(path))
        {
            var seed = Convert.FromBase64String(File.ReadAllText(path).Trim());
            return new AuditSigner(new Ed25519PrivateKeyParameters(seed, 0));
        }

        Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(path))!);
        var key = new Ed25519PrivateKeyParameters(new SecureRandom());
        var tmp = path + ".tmp";
        File.WriteAllText(tmp, Convert.ToBase64String(key.GetEncoded()) + "\n");
        if (!OperatingSystem.IsWindows())
        {
            File.SetUnixFileMode(tmp, UnixFileMode.UserRead | UnixFileMode.UserWrite);
        }

        try
        {
            File.Move(tmp, path, overwrite: false);
        }
        catch (IOException)
        {
            // Another process created it first; use theirs.
            File.Delete(tmp);
            return LoadOrCreate(path);
        }

        return new AuditSigner(key);
    }

    public static byte[] CheckpointMessage(long sequence, string hash, long timestampMs) =>
        Encoding.UTF8.GetBytes($"enclave-audit-checkpoint\n{sequence}\n{hash}\n{timestampMs}");

    public string Sign(byte[] message)
    {
        var signer = new Ed25519Signer();
        signer.Init(true, _private);
        signer.BlockUpdate(message, 0, message.Length);
        return Convert.ToBase64String(signer.GenerateSignature());
    }

    public static bool Verify(string publicKey, byte[] message, string signature)
    {
        try
        {
            var verifier = new Ed25519Signer();
            verifier.Init(false, new Ed25519PublicKeyParameters(Convert.FromBase64String(publicKey), 0));
            verifier.BlockUpdate(message, 0, message.Length);
            return verifier.VerifySignature(Convert.FromBase64String(signature));
        }
        catch (FormatException)
        {
            return false;
        }
        catch (ArgumentException)
        {
            return false;
        }
    }
}
