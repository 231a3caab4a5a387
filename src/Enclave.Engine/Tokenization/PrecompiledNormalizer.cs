using System.Buffers.Binary;
using System.Globalization;
using System.Text;

namespace Enclave.Engine.Tokenization;

/// <summary>
/// SentencePiece's precompiled normalization (the <c>Precompiled</c> normalizer of XLM-RoBERTa, bge-m3 and other
/// SentencePiece-converted tokenizers): a charsmap compiled into a darts-clone double-array trie whose leaves point
/// into a blob of NUL-terminated replacement strings. Behaves as the <c>tokenizers</c> library does: each grapheme
/// cluster shorter than 6 UTF-8 bytes is looked up whole, else code point by code point; the first (shortest) key
/// that prefixes the chunk gives its replacement, and a chunk without a key is kept as it is.
///
/// Layout of <c>precompiled_charsmap</c>: u32 trie size in bytes (little-endian), the trie's u32 units, then the
/// replacement strings.
/// </summary>
internal sealed class PrecompiledNormalizer : Normalizer
{
    private readonly uint[] units;
    private readonly byte[] replacements;

    public PrecompiledNormalizer(byte[] charsmap, string source)
    {
        if (charsmap.Length < 4)
        {
            throw new InvalidDataException($"{source}: Precompiled normalizer's precompiled_charsmap is {charsmap.Length} bytes, too short for its header");
        }

        var trieBytes = BinaryPrimitives.ReadUInt32LittleEndian(charsmap);
        if (trieBytes % 4 != 0 || trieBytes == 0 || 4L + trieBytes > charsmap.Length)
        {
            throw new InvalidDataException($"{source}: Precompiled normalizer's trie size {trieBytes} does not fit its {charsmap.Length}-byte charsmap");
        }

        units = new uint[trieBytes / 4];
        for (var i = 0; i < units.Length; i++)
        {
            units[i] = BinaryPrimitives.ReadUInt32LittleEndian(charsmap.AsSpan(4 + (i * 4)));
        }

        replacements = charsmap[(int)(4 + trieBytes)..];
    }

    public override string Normalize(string text)
    {
        if (text.Length == 0)
        {
            return text;
        }

        var output = new StringBuilder(text.Length);
        Span<byte> utf8 = stackalloc byte[64];
        var graphemes = StringInfo.GetTextElementEnumerator(text);
        while (graphemes.MoveNext())
        {
            var grapheme = (string)graphemes.Current;
            var bytes = Encoding.UTF8.GetByteCount(grapheme);
            if (bytes < 6)
            {
                Encoding.UTF8.GetBytes(grapheme, utf8);
                if (Lookup(utf8[..bytes]) is { } whole)
                {
                    output.Append(whole);
                    continue;
                }
            }

            foreach (var rune in grapheme.EnumerateRunes())
            {
                var length = rune.EncodeToUtf8(utf8);
                if (Lookup(utf8[..length]) is { } replaced)
                {
                    output.Append(replaced);
                }
                else
                {
                    output.Append(rune.ToString());
                }
            }
        }

        return output.ToString();
    }

    /// <summary>The replacement of the shortest key that prefixes <paramref name="key"/>, or null.</summary>
    private string? Lookup(ReadOnlySpan<byte> key)
    {
        // darts-clone common-prefix search: each unit holds a label byte, a flag for "a key ends here" and the offset
        // to its children; a leaf's unit holds the value, here an offset into the replacement strings.
        var node = Offset(units[0]);
        foreach (var c in key)
        {
            if (c == 0)
            {
                break;
            }

            node ^= c;
            if ((uint)node >= units.Length)
            {
                return null;
            }

            var unit = units[node];
            if ((unit & ((1u << 31) | 0xFF)) != c)
            {
                return null;
            }

            node ^= Offset(unit);
            if (((unit >> 8) & 1) == 1)
            {
                if ((uint)node >= units.Length)
                {
                    return null;
                }

                var start = (int)(units[node] & ((1u << 31) - 1));
                if (start >= replacements.Length)
                {
                    return null;
                }

                var end = Array.IndexOf(replacements, (byte)0, start);
                return Encoding.UTF8.GetString(replacements, start, (end < 0 ? replacements.Length : end) - start);
            }
        }

        return null;
    }

    private static int Offset(uint unit) => (int)((unit >> 10) << (int)((unit & (1u << 9)) >> 6));
}
