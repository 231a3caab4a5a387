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

/// <summary>Supplies key-encryption keys by id. Implemented for key files; a KMS or PKCS#11 provider implements the same.</summary>
public interface IKeyProvider
{
    string CurrentKeyId { get; }

    byte[] GetKey(string keyId);
}

/// <summary>
/// Key file: one <c>id:base64key</c> per line; the last line is the current key. Old lines stay
/// so existing data keys can still be unwrapped until <see cref="SecretProtector.Rewrap"/> has run.
/// </summary>
public sealed class FileKeyProvider : IKeyProvider
{
    private readonly Dictionary<string, byte[]> _keys = new(StringComparer.Ordinal);

    public FileKeyProvider(string path)
    {
        foreach (var raw in File.ReadAllLines(path))
        {
            var line = raw.Trim();
            if (line.Length == 0 || line.StartsWith('#'))
            {
                continue;
            }

            var colon = line.IndexOf(':', StringComparison.Ordinal);
            if (colon <= 0)
            {
                throw new FormatException($"Key file {path}: expected 'id:base64key'.");
            }

            var id = line[..colon];
            _keys[id] = Convert.FromBase64String(line[(colon + 1)..]);
            CurrentKeyId = id;
        }

        if (CurrentKeyId.Length == 0)
        {
            throw new FormatException($"Key file {path} holds no key.");
        }
    }

    public string CurrentKeyId { get; } = "";

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
