using System.Text;
using System.Text.RegularExpressions;
using Enclave.Knowledge.Extraction;

namespace Enclave.Knowledge.Cleaning;

/// <summary>
/// Whitespace and Unicode normalisation. NFKC folds compatibility characters (ligatures such as "ﬁ" from PDFs,
/// full-width Latin letters and digits "ＡＢＣ１２３", the ideographic space) to their plain forms so they index and
/// match like typed text. Chinese punctuation (U+3000–U+303F and the full-width punctuation of U+FF00–U+FF65) is kept
/// as written: NFKC would turn "，！？；：" into ASCII, changing cited text and losing the distinction the sentence
/// splitter uses. Control and zero-width characters go; runs of spaces collapse; spaces between two CJK characters
/// (an artefact of PDF extraction) are removed.
/// </summary>
public static partial class TextCleaner
{
    public static string Normalize(string text)
    {
        var sb = new StringBuilder(text.Length);
        var run = new StringBuilder();
        void FlushRun()
        {
            if (run.Length > 0)
            {
                sb.Append(run.ToString().Normalize(NormalizationForm.FormKC));
                run.Clear();
            }
        }

        foreach (var c in text)
        {
            if (c == '\u3000')
            {
                run.Append(' ');
            }
            else if (IsKeptPunctuation(c))
            {
                FlushRun();
                sb.Append(c);
            }
            else if (c is '\u200B' or '\u200C' or '\u200D' or '\u2060' or '\uFEFF' or '\u00AD')
            {
                // zero-width characters and soft hyphens carry nothing a reader sees
            }
            else if (char.IsControl(c) && c is not '\n' and not '\t')
            {
                run.Append(c is '\r' ? '\n' : ' ');
            }
            else
            {
                run.Append(c);
            }
        }

        FlushRun();
        return CollapseSpaces(sb.ToString());
    }

    private static bool IsKeptPunctuation(char c) =>
        c is (> '\u3000' and <= '\u303F') or (>= '\uFF01' and <= '\uFF0F') or (>= '\uFF1A' and <= '\uFF20')
            or (>= '\uFF3B' and <= '\uFF40') or (>= '\uFF5B' and <= '\uFF65');

    private static string CollapseSpaces(string text)
    {
        var sb = new StringBuilder(text.Length);
        var lines = text.Split('\n');
        for (var i = 0; i < lines.Length; i++)
        {
            var line = SpaceRun().Replace(lines[i], " ").Trim();
            if (i > 0)
            {
                sb.Append('\n');
            }

            for (var j = 0; j < line.Length; j++)
            {
                if (line[j] == ' ' && j > 0 && j + 1 < line.Length && Cjk.IsCjk(line[j - 1]) && Cjk.IsCjk(line[j + 1]))
                {
                    continue;
                }

                sb.Append(line[j]);
            }
        }

        return MultiNewline().Replace(sb.ToString(), "\n\n").Trim();
    }

    [GeneratedRegex(@"[ \t\u00A0\u2000-\u200A\u202F\u205F]+")]
    private static partial Regex SpaceRun();

    [GeneratedRegex(@"\n{3,}")]
    private static partial Regex MultiNewline();

    /// <summary>Digits replaced by '#', case folded: "Page 3 of 10" and "Page 4 of 10" are the same boilerplate line.</summary>
    public static string Shape(string text) => Digits().Replace(text.Trim().ToLowerInvariant(), "#");

    [GeneratedRegex(@"\d+")]
    private static partial Regex Digits();
}

/// <summary>
/// Removes page furniture: in a document of at least three pages, a short block (≤ 120 characters) whose shape
/// (digits ignored) occurs on at least half of the pages is a running header or footer, not content.
/// </summary>
public static class BoilerplateFilter
{
    public static int Apply(ExtractedDocument doc)
    {
        var pages = doc.Blocks.Where(b => b.Page is not null).Select(b => b.Page).Distinct().Count();
        if (pages < 3)
        {
            return 0;
        }

        var pagesByShape = new Dictionary<string, HashSet<int>>(StringComparer.Ordinal);
        foreach (var b in doc.Blocks)
        {
            if (b.Page is { } p && b.Text.Length <= 120)
            {
                var shape = TextCleaner.Shape(b.Text);
                if (!pagesByShape.TryGetValue(shape, out var set))
                {
                    pagesByShape[shape] = set = [];
                }

                set.Add(p);
            }
        }

        var threshold = Math.Max(3, (pages + 1) / 2);
        var boilerplate = pagesByShape.Where(kv => kv.Value.Count >= threshold).Select(kv => kv.Key).ToHashSet(StringComparer.Ordinal);
        return boilerplate.Count == 0 ? 0 : doc.Blocks.RemoveAll(b => b.Page is not null && b.Text.Length <= 120 && boilerplate.Contains(TextCleaner.Shape(b.Text)));
    }
}
