using System.Buffers;
using System.Globalization;
using System.Text.RegularExpressions;

namespace Enclave.Engine.Tokenization;

/// <summary>
/// A regex that classifies characters by Unicode code point, as the Oniguruma engine behind Hugging Face
/// tokenizers does. .NET matches UTF-16 code units and sees a supplementary character (emoji, CJK extension B,
/// mathematical letters) as two surrogates of category Cs, so <c>\p{L}</c>, <c>\p{S}</c> and friends would miss
/// it. Before matching, every surrogate pair is replaced by one BMP stand-in of the same general category (picked
/// outside ASCII and the CJK/kana ranges real pre-tokenizer patterns name literally); matches on that shadow text
/// are mapped back to the original indices.
/// </summary>
internal sealed class UnicodeRegex
{
    private static readonly char[] StandIns = BuildStandIns();
    private static readonly SearchValues<char> Surrogates = SearchValues.Create(BuildSurrogateRange());

    private readonly Regex _regex;
    private readonly FastSplitPattern? _fast;

    public UnicodeRegex(string pattern, string source, bool allowFastPath = true)
    {
        _fast = allowFastPath ? FastSplitPattern.TryCreate(pattern) : null;
        try
        {
            _regex = new Regex(ConvertPattern(pattern), RegexOptions.CultureInvariant | RegexOptions.Compiled);
        }
        catch (ArgumentException e)
        {
            throw new NotSupportedException($"{source}: regex '{pattern}' cannot be used: {e.Message}", e);
        }
    }

    public string Pattern => _regex.ToString();

    internal bool UsesFastPath => _fast is not null;

    /// <summary>Appends the non-empty matches in <paramref name="text"/> as [start, end) pairs.</summary>
    public void Matches(ReadOnlySpan<char> text, List<(int Start, int End)> output)
    {
        if (_fast is not null)
        {
            _fast.Matches(text, output);
            return;
        }
        if (text.IndexOfAny(Surrogates) < 0)
        {
            foreach (var m in _regex.EnumerateMatches(text))
            {
                if (m.Length > 0)
                    output.Add((m.Index, m.Index + m.Length));
            }
            return;
        }

        var shadow = ArrayPool<char>.Shared.Rent(text.Length);
        var map = ArrayPool<int>.Shared.Rent(text.Length + 1);
        try
        {
            int n = 0;
            for (int i = 0; i < text.Length; i++)
            {
                char c = text[i];
                map[n] = i;
                if (char.IsHighSurrogate(c) && i + 1 < text.Length && char.IsLowSurrogate(text[i + 1]))
                {
                    int cp = char.ConvertToUtf32(c, text[i + 1]);
                    shadow[n++] = StandIns[(int)CharUnicodeInfo.GetUnicodeCategory(cp)];
                    i++;
                }
                else
                {
                    shadow[n++] = c;
                }
            }
            map[n] = text.Length;
            foreach (var m in _regex.EnumerateMatches(shadow.AsSpan(0, n)))
            {
                if (m.Length > 0)
                    output.Add((map[m.Index], map[m.Index + m.Length]));
            }
        }
        finally
        {
            ArrayPool<char>.Shared.Return(shadow);
            ArrayPool<int>.Shared.Return(map);
        }
    }

    /// <summary>
    /// Oniguruma syntax that .NET reads differently. The patterns shipped with real tokenizers use only the common
    /// subset (classes, \p{..}, lookahead, inline (?i:)), so only a few escapes need rewriting.
    /// </summary>
    internal static string ConvertPattern(string pattern)
    {
        if (!pattern.Contains('\\'))
            return pattern;
        var sb = new System.Text.StringBuilder(pattern.Length + 8);
        for (int i = 0; i < pattern.Length; i++)
        {
            char c = pattern[i];
            if (c == '\\' && i + 1 < pattern.Length)
            {
                char n = pattern[i + 1];
                switch (n)
                {
                    case 'h': sb.Append("[0-9a-fA-F]"); i++; continue;        // Oniguruma: hex digit
                    case 'H': sb.Append("[^0-9a-fA-F]"); i++; continue;
                    default:
                        sb.Append(c).Append(n);
                        i++;
                        continue;
                }
            }
            sb.Append(c);
        }
        return sb.ToString();
    }

    private static string BuildSurrogateRange()
    {
        var chars = new char[0xE000 - 0xD800];
        for (int i = 0; i < chars.Length; i++)
            chars[i] = (char)(0xD800 + i);
        return new string(chars);
    }

    private static char[] BuildStandIns()
    {
        int count = Enum.GetValues<UnicodeCategory>().Length;
        var table = new char[count];
        var found = new bool[count];
        for (int c = 0xA0; c <= 0xFFFD; c++)
        {
            if (c is >= 0x3040 and <= 0x30FF or >= 0x4E00 and <= 0x9FFF or >= 0xD800 and <= 0xDFFF)
                continue;
            char ch = (char)c;
            if (char.IsWhiteSpace(ch))
                continue;
            int cat = (int)char.GetUnicodeCategory(ch);
            if (!found[cat])
            {
                found[cat] = true;
                table[cat] = ch;
            }
        }
        // Categories with no usable BMP stand-in never occur outside the BMP; map them to "unassigned".
        char unassigned = table[(int)UnicodeCategory.OtherNotAssigned];
        for (int i = 0; i < count; i++)
        {
            if (!found[i])
                table[i] = unassigned;
        }
        return table;
    }
}
