using System.Security.Cryptography;
using System.Text;
using Org.BouncyCastle.Crypto;
using Org.BouncyCastle.Crypto.Engines;
using Org.BouncyCastle.Crypto.Modes;
using Org.BouncyCastle.Crypto.Parameters;

namespace Enclave.Gateway.Crypto;

/// <summary>Authenticated encryption used for secrets at rest.</summary>
public static class Aead
{
    public const string Aes256Gcm = "aes-256-gcm";
    public const string Sm4Gcm = "sm4-gcm";
    public const int NonceSize = 12;
    public const int TagSize = 16;

    public static int KeySize(string algorithm) => algorithm switch
    {
        Aes256Gcm => 32,
        Sm4Gcm => 16,
        _ => throw new ArgumentException($"Unknown algorithm '{algorithm}'.", nameof(algorithm)),
    };

    /// <summary>Returns nonce || ciphertext || tag.</summary>
    public static byte[] Seal(string algorithm, byte[] key, byte[] plaintext, byte[] aad)
    {
        var nonce = RandomNumberGenerator.GetBytes(NonceSize);
        var output = new byte[NonceSize + plaintext.Length + TagSize];
        nonce.CopyTo(output, 0);
        if (algorithm == Aes256Gcm)
        {
            using var gcm = new AesGcm(key, TagSize);
            gcm.Encrypt(nonce, plaintext, output.AsSpan(NonceSize, plaintext.Length), output.AsSpan(NonceSize + plaintext.Length), aad);
            return output;
        }

        var cipher = Sm4(true, key, nonce, aad);
        var len = cipher.ProcessBytes(plaintext, 0, plaintext.Length, output, NonceSize);
        cipher.DoFinal(output, NonceSize + len);
        return output;
    }

    /// <summary>Opens nonce || ciphertext || tag; throws <see cref="CryptographicException"/> when it was altered or the key is wrong.</summary>
    public static byte[] Open(string algorithm, byte[] key, byte[] sealedData, byte[] aad)
    {
        if (sealedData.Length < NonceSize + TagSize)
        {
            throw new CryptographicException("Ciphertext too short.");
        }

        var nonce = sealedData.AsSpan(0, NonceSize).ToArray();
        var plain = new byte[sealedData.Length - NonceSize - TagSize];
        if (algorithm == Aes256Gcm)
        {
            using var gcm = new AesGcm(key, TagSize);
            gcm.Decrypt(nonce, sealedData.AsSpan(NonceSize, plain.Length), sealedData.AsSpan(NonceSize + plain.Length), plain, aad);
            return plain;
        }

        try
        {
            var cipher = Sm4(false, key, nonce, aad);
            var buffer = new byte[cipher.GetOutputSize(sealedData.Length - NonceSize)];
            var len = cipher.ProcessBytes(sealedData, NonceSize, sealedData.Length - NonceSize, buffer, 0);
            len += cipher.DoFinal(buffer, len);
            return buffer.AsSpan(0, len).ToArray();
        }
        catch (InvalidCipherTextException e)
        {
            throw new CryptographicException("SM4-GCM authentication failed.", e);
        }
    }

    private static GcmBlockCipher Sm4(bool encrypt, byte[] key, byte[] nonce, byte[] aad)
    {
        var cipher = new GcmBlockCipher(new SM4Engine());
        cipher.Init(encrypt, new AeadParameters(new KeyParameter(key), TagSize * 8, nonce, aad));
        return cipher;
    }
}

/// <summary>
/// Supplies key-encryption (master) keys by id. <see cref="FileKeyProvider"/> and
/// <see cref="EnvironmentKeyProvider"/> are built in. A KMS or PKCS#11 provider implements the same
/// two members: <see cref="CurrentKeyId"/> names the key new data keys are wrapped with (e.g. a KMS
/// key version or a PKCS#11 object label) and <see cref="GetKey"/> returns the key bytes for an id.
/// Providers whose keys never leave the module would instead wrap and unwrap data keys themselves;
/// <see cref="SecretProtector"/> only calls <see cref="GetKey"/> to wrap and unwrap, so such a
/// provider can derive a per-id wrapping key from a module operation (for example an HMAC with a
/// non-extractable key) and hand that out.
/// </summary>
public interface IKeyProvider
{
    string CurrentKeyId { get; }

    byte[] GetKey(string keyId);
}

/// <summary>Shared parsing of <c>id:base64key</c> lists; the last key listed is current.</summary>
internal static class KeyList
{
    public static (Dictionary<string, byte[]> Keys, string Current) Parse(IEnumerable<string> lines, string source)
    {
        var keys = new Dictionary<string, byte[]>(StringComparer.Ordinal);
        var current = "";
        foreach (var raw in lines)
        {
            var line = raw.Trim();
            if (line.Length == 0 || line.StartsWith('#'))
            {
                continue;
            }

            var colon = line.IndexOf(':', StringComparison.Ordinal);
            if (colon <= 0)
            {
                throw new FormatException($"{source}: expected 'id:base64key'.");
            }

            var id = line[..colon];
            byte[] key;
            try
            {
                key = Convert.FromBase64String(line[(colon + 1)..]);
            }
            catch (FormatException)
            {
                throw new FormatException($"{source}: key '{id}' is not valid base64.");
            }

            if (key.Length < 16)
            {
                throw new FormatException($"{source}: key '{id}' is {key.Length} bytes; at least 16 (32 recommended) are needed.");
            }

            keys[id] = key;
            current = id;
        }

        if (current.Length == 0)
        {
            throw new FormatException($"{source} holds no key.");
        }

        return (keys, current);
    }
}

/// <summary>
/// Master keys from an environment variable: <c>id:base64key</c> entries separated by <c>;</c> or
/// newlines, the last one current. To rotate, append the new key, restart, run
/// <c>enclave encryption rewrap</c>, then drop the old entry.
/// </summary>
public sealed class EnvironmentKeyProvider : IKeyProvider
{
    public const string DefaultVariable = "ENCLAVE_MASTER_KEYS";
    private readonly Dictionary<string, byte[]> _keys;

    public EnvironmentKeyProvider(string variable = DefaultVariable)
    {
        var value = Environment.GetEnvironmentVariable(variable);
        if (string.IsNullOrWhiteSpace(value))
        {
            throw new FormatException($"Environment variable {variable} is not set (expected 'id:base64key[;id2:base64key]').");
        }

        (_keys, CurrentKeyId) = KeyList.Parse(value.Split([';', '\n'], StringSplitOptions.RemoveEmptyEntries), "Environment variable " + variable);
    }

    public string CurrentKeyId { get; }

    public byte[] GetKey(string keyId) =>
        _keys.TryGetValue(keyId, out var k) ? k : throw new CryptographicException($"Key '{keyId}' is not in the master key variable.");
}

/// <summary>
/// Key file: one <c>id:base64key</c> per line; the last line is the current key. Old lines stay
/// so existing data keys can still be unwrapped until <see cref="SecretProtector.Rewrap"/> has run.
/// </summary>
public sealed class FileKeyProvider : IKeyProvider
{
    private readonly Dictionary<string, byte[]> _keys;

    public FileKeyProvider(string path)
    {
        (_keys, CurrentKeyId) = KeyList.Parse(File.ReadAllLines(path), "Key file " + path);
    }

    public string CurrentKeyId { get; }

    /// <summary>Opens the key file, creating it with one fresh key when it does not exist yet.</summary>
    public static FileKeyProvider OpenOrCreate(string path)
    {
        if (!File.Exists(path))
        {
            Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(path))!);
            AddKey(path);
        }

        return new FileKeyProvider(path);
    }

    /// <summary>Ids of every key in the file, oldest first.</summary>
    public IReadOnlyCollection<string> KeyIds => _keys.Keys;

    public byte[] GetKey(string keyId) =>
        _keys.TryGetValue(keyId, out var k) ? k : throw new CryptographicException($"Key '{keyId}' is not in the key file.");

    /// <summary>Appends a new random 256-bit key, making it current; creates the file (mode 0600) if needed.</summary>
    public static string AddKey(string path)
    {
        var id = "k" + DateTimeOffset.UtcNow.ToString("yyyyMMddHHmmss", System.Globalization.CultureInfo.InvariantCulture) + "-" + Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(3));
        var existed = File.Exists(path);
        File.AppendAllText(path, $"{id}:{Convert.ToBase64String(RandomNumberGenerator.GetBytes(32))}\n");
        if (!existed && !OperatingSystem.IsWindows())
        {
            File.SetUnixFileMode(path, UnixFileMode.UserRead | UnixFileMode.UserWrite);
        }

        return id;
    }
}

/// <summary>
/// Envelope encryption: each value gets a fresh data key, which is wrapped by the provider's
/// current key-encryption key. Format: <c>enc1:ALG:KEKID:WRAPPED_DEK:CIPHERTEXT</c> (base64 parts).
/// Rotation re-wraps the data key under the new key-encryption key without touching the ciphertext.
/// </summary>
public sealed class SecretProtector(IKeyProvider keys, string algorithm = Aead.Aes256Gcm)
{
    private const string Version = "enc1";
    private static readonly byte[] DekAad = Encoding.ASCII.GetBytes("enclave:dek:v1");

    public string Algorithm { get; } = Aead.KeySize(algorithm) > 0 ? algorithm : throw new ArgumentException("Unknown algorithm.", nameof(algorithm));

    public string Protect(string plaintext, string context = "")
    {
        var dek = RandomNumberGenerator.GetBytes(Aead.KeySize(Algorithm));
        var kekId = keys.CurrentKeyId;
        var wrapped = Aead.Seal(Algorithm, Kek(kekId), dek, DekAad);
        var body = Aead.Seal(Algorithm, dek, Encoding.UTF8.GetBytes(plaintext), Aad(context));
        return string.Join(':', Version, Algorithm, kekId, Convert.ToBase64String(wrapped), Convert.ToBase64String(body));
    }

    public string Unprotect(string envelope, string context = "")
    {
        var (alg, kekId, wrapped, body) = Parse(envelope);
        var dek = Aead.Open(alg, Kek(kekId, alg), wrapped, DekAad);
        return Encoding.UTF8.GetString(Aead.Open(alg, dek, body, Aad(context)));
    }

    /// <summary>Re-wraps the data key under the current key-encryption key; the ciphertext is unchanged.</summary>
    public string Rewrap(string envelope)
    {
        var (alg, kekId, wrapped, body) = Parse(envelope);
        var current = keys.CurrentKeyId;
        if (kekId == current)
        {
            return envelope;
        }

        var dek = Aead.Open(alg, Kek(kekId, alg), wrapped, DekAad);
        var rewrapped = Aead.Seal(alg, Kek(current, alg), dek, DekAad);
        return string.Join(':', Version, alg, current, Convert.ToBase64String(rewrapped), Convert.ToBase64String(body));
    }

    public static string KeyIdOf(string envelope) => Parse(envelope).KekId;

    public static bool IsEnvelope(string? value) => value is not null && value.StartsWith(Version + ":", StringComparison.Ordinal);

    /// <summary>
    /// The part of an envelope that does not change when the data key is re-wrapped (algorithm and
    /// sealed body). Hashes that must survive key rotation, such as the audit chain's, cover this.
    /// </summary>
    public static string StableForm(string envelope)
    {
        var parts = envelope.Split(':');
        return parts.Length == 5 ? string.Join(':', parts[0], parts[1], parts[4]) : envelope;
    }

    private byte[] Kek(string id, string? alg = null)
    {
        var k = keys.GetKey(id);
        var size = Aead.KeySize(alg ?? Algorithm);
        // A 256-bit master key serves SM4 (128-bit) through a labelled derivation rather than truncation.
        return k.Length == size ? k : HKDF.DeriveKey(HashAlgorithmName.SHA256, k, size, info: Encoding.ASCII.GetBytes("enclave-kek-" + (alg ?? Algorithm)));
    }

    private static byte[] Aad(string context) => Encoding.UTF8.GetBytes("enclave:secret:v1:" + context);

    private static (string Alg, string KekId, byte[] Wrapped, byte[] Body) Parse(string envelope)
    {
        var parts = envelope.Split(':');
        if (parts.Length != 5 || parts[0] != Version)
        {
            throw new FormatException("Not an enclave secret envelope.");
        }

        Aead.KeySize(parts[1]);
        return (parts[1], parts[2], Convert.FromBase64String(parts[3]), Convert.FromBase64String(parts[4]));
    }
}
