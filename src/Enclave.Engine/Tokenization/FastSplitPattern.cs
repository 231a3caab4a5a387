using System.Globalization;

namespace Enclave.Engine.Tokenization;

/// <summary>
/// Hand-written matchers for the pre-tokenizer patterns that dominate real tokenizers, producing exactly the
/// matches the backtracking regex would (checked against it by a differential test) at a fraction of the cost.
/// They read code points directly, so supplementary characters are classified correctly without a shadow string.
/// </summary>
internal sealed class FastSplitPattern
{
    /// <summary>The Llama 3 / tiktoken cl100k-style pattern; Qwen2/3 use it with single digits.</summary>
    internal const string Llama3Pattern =
        @"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
    internal const string QwenPattern =
        @"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

    private enum Cls : byte { Other, Letter, Number, Space, NewLine }

    private static readonly Cls[] Ascii = BuildAscii();

    private readonly int _maxDigits;

    private FastSplitPattern(int maxDigits) => _maxDigits = maxDigits;

    public static FastSplitPattern? TryCreate(string pattern) => pattern switch
    {
        Llama3Pattern => new FastSplitPattern(3),
        QwenPattern => new FastSplitPattern(1),
        _ => null,
    };

    private static Cls[] BuildAscii()
    {
        var t = new Cls[128];
        for (int c = 0; c < 128; c++)
            t[c] = Classify((char)c);
        return t;
    }

    private static Cls Classify(int codePoint)
    {
        if (codePoint is '\r' or '\n')
            return Cls.NewLine;
        if (codePoint < 0x10000 && char.IsWhiteSpace((char)codePoint))
            return Cls.Space;
        return CharUnicodeInfo.GetUnicodeCategory(codePoint) switch
        {
            UnicodeCategory.UppercaseLetter or UnicodeCategory.LowercaseLetter or UnicodeCategory.TitlecaseLetter
                or UnicodeCategory.ModifierLetter or UnicodeCategory.OtherLetter => Cls.Letter,
            UnicodeCategory.DecimalDigitNumber or UnicodeCategory.LetterNumber or UnicodeCategory.OtherNumber => Cls.Number,
            _ => Cls.Other,
        };
    }

    /// <summary>Class of the code point at <paramref name="i"/> and its length in UTF-16 units.</summary>
    private static Cls At(ReadOnlySpan<char> s, int i, out int width)
    {
        char c = s[i];
        width = 1;
        if (c < 128)
            return Ascii[c];
        if (char.IsHighSurrogate(c) && i + 1 < s.Length && char.IsLowSurrogate(s[i + 1]))
        {
            width = 2;
            return Classify(char.ConvertToUtf32(c, s[i + 1]));
        }
        return Classify(c);
    }

    public void Matches(ReadOnlySpan<char> s, List<(int Start, int End)> output)
    {
        int p = 0;
        while (p < s.Length)
        {
            int end = MatchAt(s, p);
            output.Add((p, end));
            p = end;
        }
    }

    private static bool IsContractionLetter(char c, ReadOnlySpan<char> letters)
    {
        char lower = c is >= 'A' and <= 'Z' ? (char)(c | 0x20) : c;
        return letters.Contains(lower);
    }

    private int MatchAt(ReadOnlySpan<char> s, int p)
    {
        // (?i:'s|'t|'re|'ve|'m|'ll|'d)
        if (s[p] == '\'' && p + 1 < s.Length)
        {
            char a = s[p + 1];
            if (IsContractionLetter(a, "stmd"))
                return p + 2;
            if (p + 2 < s.Length)
            {
                char b = s[p + 2];
                char la = a is >= 'A' and <= 'Z' ? (char)(a | 0x20) : a;
                char lb = b is >= 'A' and <= 'Z' ? (char)(b | 0x20) : b;
                if ((la == 'r' && lb == 'e') || (la == 'v' && lb == 'e') || (la == 'l' && lb == 'l'))
                    return p + 3;
            }
        }

        var cls = At(s, p, out int w);
        switch (cls)
        {
            case Cls.Letter:
                return LetterRun(s, p + w);
            case Cls.Number:
            {
                int q = p + w;
                for (int n = 1; n < _maxDigits && q < s.Length && At(s, q, out int w2) == Cls.Number; n++)
                    q += w2;
                return q;
            }
            case Cls.Other:
            {
                // [^\r\n\p{L}\p{N}]?\p{L}+ : one non-letter, non-digit, non-newline char (whitespace included) before letters.
                if (p + w < s.Length && At(s, p + w, out int w2) == Cls.Letter)
                    return LetterRun(s, p + w + w2);
                return OtherRun(s, p);
            }
            case Cls.Space:
            {
                if (p + w < s.Length && At(s, p + w, out int w2) == Cls.Letter)
                    return LetterRun(s, p + w + w2);
                if (s[p] == ' ' && p + 1 < s.Length && At(s, p + 1, out _) == Cls.Other)
                    return OtherRun(s, p + 1);
                return WhitespaceAt(s, p);
            }
            default: // NewLine
                return WhitespaceAt(s, p);
        }
    }

    private static int LetterRun(ReadOnlySpan<char> s, int q)
    {
        while (q < s.Length && At(s, q, out int w) == Cls.Letter)
            q += w;
        return q;
    }

    /// <summary>[^\s\p{L}\p{N}]+[\r\n]* starting at <paramref name="q"/>.</summary>
    private static int OtherRun(ReadOnlySpan<char> s, int q)
    {
        while (q < s.Length && At(s, q, out int w) == Cls.Other)
            q += w;
        while (q < s.Length && s[q] is '\r' or '\n')
            q++;
        return q;
    }

    /// <summary>\s*[\r\n]+ | \s+(?!\S) | \s+ at a whitespace character.</summary>
    private static int WhitespaceAt(ReadOnlySpan<char> s, int p)
    {
        int q = p;
        int lastNewLine = -1;
        while (q < s.Length)
        {
            var c = At(s, q, out int w);
            if (c == Cls.NewLine)
                lastNewLine = q;
            else if (c != Cls.Space)
                break;
            q += w;
        }
        if (lastNewLine >= 0)
            return lastNewLine + 1;
        if (q == s.Length || q - p == 1)
            return q;
        return q - 1;
    }
}
