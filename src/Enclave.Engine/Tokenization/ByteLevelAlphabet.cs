using System.Text;

namespace Enclave.Engine.Tokenization;

/// <summary>
/// GPT-2's reversible byte-to-character table: printable Latin-1 bytes stand for themselves, the remaining
/// bytes are shifted to U+0100 and up so every byte has a visible, non-whitespace character.
/// </summary>
internal static class ByteLevelAlphabet
{
    /// <summary>Byte value to its stand-in character.</summary>
    public static readonly char[] ByteToChar = BuildByteToChar();

    /// <summary>Stand-in character to byte, -1 where the character is not part of the alphabet.</summary>
    private static readonly short[] CharToByteTable = BuildCharToByte();

    private static char[] BuildByteToChar()
    {
        var table = new char[256];
        int next = 0;
        for (int b = 0; b < 256; b++)
        {
            bool printable = b is >= '!' and <= '~' or >= 0xA1 and <= 0xAC or >= 0xAE and <= 0xFF;
            table[b] = printable ? (char)b : (char)(256 + next++);
        }
        return table;
    }

    private static short[] BuildCharToByte()
    {
        var table = new short[512];
        Array.Fill(table, (short)-1);
        for (int b = 0; b < 256; b++)
            table[ByteToChar[b]] = (short)b;
        return table;
    }

    /// <summary>The byte a character stands for, or -1.</summary>
    public static int CharToByte(char c) => c < CharToByteTable.Length ? CharToByteTable[c] : -1;

    /// <summary>Maps the UTF-8 bytes of <paramref name="text"/> to alphabet characters, appending to <paramref name="output"/>.</summary>
    public static void Encode(ReadOnlySpan<char> text, ref ValueBuffer<char> output)
    {
        Span<byte> scratch = stackalloc byte[4];
        for (int i = 0; i < text.Length; i++)
        {
            char c = text[i];
            if (c < 0x80)
            {
                output.Add(ByteToChar[c]);
                continue;
            }
            int consumed = 1;
            Rune rune;
            if (char.IsHighSurrogate(c) && i + 1 < text.Length && char.IsLowSurrogate(text[i + 1]))
            {
                rune = new Rune(c, text[i + 1]);
                consumed = 2;
            }
            else
            {
                rune = Rune.IsValid(c) ? new Rune(c) : Rune.ReplacementChar;
            }
            int n = rune.EncodeToUtf8(scratch);
            for (int k = 0; k < n; k++)
                output.Add(ByteToChar[scratch[k]]);
            i += consumed - 1;
        }
    }
}

/// <summary>A small growable buffer that starts on a caller-provided span (usually stack memory).</summary>
internal ref struct ValueBuffer<T>
{
    private Span<T> _span;
    private T[]? _rented;
    private int _length;

    public ValueBuffer(Span<T> initial)
    {
        _span = initial;
        _rented = null;
        _length = 0;
    }

    public readonly int Length => _length;
    public readonly ReadOnlySpan<T> Span => _span[.._length];

    public void Add(T item)
    {
        if (_length == _span.Length)
            Grow();
        _span[_length++] = item;
    }

    public void AddRange(ReadOnlySpan<T> items)
    {
        while (_length + items.Length > _span.Length)
            Grow();
        items.CopyTo(_span[_length..]);
        _length += items.Length;
    }

    public void Clear() => _length = 0;

    public void RemoveLast() => _length--;

    private void Grow()
    {
        var bigger = System.Buffers.ArrayPool<T>.Shared.Rent(Math.Max(16, _span.Length * 2));
        _span[.._length].CopyTo(bigger);
        if (_rented is not null)
            System.Buffers.ArrayPool<T>.Shared.Return(_rented);
        _rented = bigger;
        _span = bigger;
    }

    public void Dispose()
    {
        if (_rented is not null)
        {
            System.Buffers.ArrayPool<T>.Shared.Return(_rented);
            _rented = null;
        }
    }
}
