using System.Security.Cryptography;
using Org.BouncyCastle.Crypto.Digests;

namespace Enclave.Gateway.Audit;

/// <summary>Hash functions the audit chain can use: SHA-256 (default) or SM3 (GB/T 32905).</summary>
public static class ChainHash
{
    public const string Sha256 = "sha256";
    public const string Sm3 = "sm3";

    public static string Genesis { get; } = new('0', 64);

    public static bool IsKnown(string algorithm) => algorithm is Sha256 or Sm3;

    public static string Hex(string algorithm, byte[] data) => Convert.ToHexStringLower(Compute(algorithm, data));

    public static byte[] Compute(string algorithm, byte[] data)
    {
        switch (algorithm)
        {
            case Sha256:
                return SHA256.HashData(data);
            case Sm3:
                var d = new SM3Digest();
                d.BlockUpdate(data, 0, data.Length);
                var output = new byte[d.GetDigestSize()];
                d.DoFinal(output, 0);
                return output;
            default:
                throw new ArgumentException($"Unknown audit hash algorithm '{algorithm}'.", nameof(algorithm));
        }
    }
}
