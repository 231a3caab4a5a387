using System.Security.Cryptography;
using System.Text;

namespace Enclave.Gateway.Security;

/// <summary>Format, generation and hashing of <c>sk-enclave-</c> secrets.</summary>
public static class ApiKeySecret
{
    public const string Scheme = "sk-enclave-";
    public const int PrefixLength = 12;
    private const int RandomBytes = 32;
    private const string Alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

    /// <summary>Returns a new secret: the scheme followed by 43 base62 characters (256 bits of entropy).</summary>
    public static string Generate()
    {
        Span<byte> bytes = stackalloc byte[RandomBytes];
        RandomNumberGenerator.Fill(bytes);
        // Base62 of a 256-bit number: rejection-free via big integer division.
        var n = new System.Numerics.BigInteger(bytes, isUnsigned: true);
        var sb = new StringBuilder(Scheme, Scheme.Length + 44);
        var chars = new char[43];
        for (var i = chars.Length - 1; i >= 0; i--)
        {
            n = System.Numerics.BigInteger.DivRem(n, 62, out var rem);
            chars[i] = Alphabet[(int)rem];
        }

        sb.Append(chars);
        return sb.ToString();
    }

    public static bool LooksValid(string? secret) =>
        secret is not null && secret.StartsWith(Scheme, StringComparison.Ordinal)
        && secret.Length >= Scheme.Length + PrefixLength + 8 && secret.Length <= 256
        && secret.AsSpan(Scheme.Length).IndexOfAnyExcept(Alphabet) < 0;

    public static string PrefixOf(string secret) => secret.Substring(Scheme.Length, PrefixLength);

    /// <summary>SHA-256 of the whole secret. The secret has 256 bits of entropy, so a slow KDF adds nothing.</summary>
    public static byte[] Hash(string secret) => SHA256.HashData(Encoding.UTF8.GetBytes(secret));

    public static bool Matches(string secret, byte[] storedHash) =>
        CryptographicOperations.FixedTimeEquals(Hash(secret), storedHash);
}
