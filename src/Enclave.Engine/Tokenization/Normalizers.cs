using System.Text;

namespace Enclave.Engine.Tokenization;

/// <summary>Rewrites a text segment before pre-tokenization (tokenizer.json "normalizer").</summary>
internal abstract class Normalizer
{
    public abstract string Normalize(string text);
}

internal sealed class UnicodeNormalizer(NormalizationForm form) : Normalizer
{
    public override string Normalize(string text) => text.Length == 0 || text.IsNormalized(form) ? text : text.Normalize(form);
}

internal sealed class LowercaseNormalizer : Normalizer
{
    public override string Normalize(string text) => text.ToLowerInvariant();
}

/// <summary>Prepends a fixed string to every non-empty segment.</summary>
internal sealed class PrependNormalizer(string prepend) : Normalizer
{
    public override string Normalize(string text) => text.Length == 0 ? text : prepend + text;
}

/// <summary>Replaces every occurrence of a literal string or a regex with fixed content.</summary>
internal sealed class ReplaceNormalizer(string? literal, UnicodeRegex? regex, string content) : Normalizer
{
    public override string Normalize(string text) => Replacer.Apply(text, literal, regex, content);
}

internal sealed class StripNormalizer(bool left, bool right) : Normalizer
{
    public override string Normalize(string text) => (left, right) switch
    {
        (true, true) => text.Trim(),
        (true, false) => text.TrimStart(),
        (false, true) => text.TrimEnd(),
        _ => text,
    };
}

internal sealed class SequenceNormalizer(Normalizer[] normalizers) : Normalizer
{
    public override string Normalize(string text)
    {
        foreach (var n in normalizers)
            text = n.Normalize(text);
        return text;
    }
}

internal static class Replacer
{
    public static string Apply(string text, string? literal, UnicodeRegex? regex, string content)
    {
        if (literal is not null)
            return literal.Length == 0 ? text : text.Replace(literal, content, StringComparison.Ordinal);
        if (regex is null)
            return text;
        var matches = new List<(int Start, int End)>();
        regex.Matches(text, matches);
        if (matches.Count == 0)
            return text;
        var sb = new StringBuilder(text.Length);
        int last = 0;
        foreach (var (s, e) in matches)
        {
            sb.Append(text, last, s - last).Append(content);
            last = e;
        }
        sb.Append(text, last, text.Length - last);
        return sb.ToString();
    }
}

/// <summary>
/// BERT's normalizer, step for step as tokenizers runs it: drop NUL, U+FFFD and control characters and turn every
/// whitespace into a space (clean_text); surround CJK ideographs with spaces (handle_chinese_chars); NFD and drop
/// non-spacing marks (strip_accents, which follows lowercase when unset); lowercase.
/// </summary>
internal sealed class BertNormalizer(bool cleanText, bool handleChineseChars, bool? stripAccents, bool lowercase) : Normalizer
{
    public override string Normalize(string text)
    {
        if (cleanText || handleChineseChars)
        {
            var sb = new StringBuilder(text.Length + 8);
            foreach (var rune in text.EnumerateRunes())
            {
                var c = rune.Value;
                if (cleanText)
                {
                    if (c == 0 || c == 0xFFFD || IsControl(rune))
                        continue;
                    if (Rune.IsWhiteSpace(rune))
                    {
                        sb.Append(' ');
                        continue;
                    }
                }

                if (handleChineseChars && IsChineseChar(c))
                    sb.Append(' ').Append(rune.ToString()).Append(' ');
                else
                    sb.Append(rune.ToString());
            }

            text = sb.ToString();
        }

        if (stripAccents ?? lowercase)
        {
            var decomposed = text.Normalize(NormalizationForm.FormD);
            var sb = new StringBuilder(decomposed.Length);
            foreach (var rune in decomposed.EnumerateRunes())
            {
                if (Rune.GetUnicodeCategory(rune) != System.Globalization.UnicodeCategory.NonSpacingMark)
                    sb.Append(rune.ToString());
            }

            text = sb.ToString();
        }

        return lowercase ? text.ToLowerInvariant() : text;
    }

    /// <summary>Tab, newline and carriage return count as whitespace; other Cc, Cf, Cn and Co characters are dropped.</summary>
    private static bool IsControl(Rune rune)
    {
        if (rune.Value is '\t' or '\n' or '\r')
            return false;
        return Rune.GetUnicodeCategory(rune) is System.Globalization.UnicodeCategory.Control
            or System.Globalization.UnicodeCategory.Format
            or System.Globalization.UnicodeCategory.OtherNotAssigned
            or System.Globalization.UnicodeCategory.PrivateUse;
    }

    /// <summary>The CJK Unified Ideographs blocks BERT treats as words of their own.</summary>
    internal static bool IsChineseChar(int c) =>
        c is (>= 0x4E00 and <= 0x9FFF) or (>= 0x3400 and <= 0x4DBF) or (>= 0x20000 and <= 0x2A6DF) or (>= 0x2A700 and <= 0x2B73F)
            or (>= 0x2B740 and <= 0x2B81F) or (>= 0x2B920 and <= 0x2CEAF) or (>= 0xF900 and <= 0xFAFF) or (>= 0x2F800 and <= 0x2FA1F);
}
