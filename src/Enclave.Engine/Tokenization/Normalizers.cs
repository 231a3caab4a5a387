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
