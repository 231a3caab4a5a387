using System.Globalization;
using System.Text;
using UglyToad.PdfPig;
using UglyToad.PdfPig.Content;

namespace Enclave.Knowledge.Extraction;

/// <summary>
/// PDF through PdfPig: words are grouped into lines by baseline, lines into paragraphs by vertical gaps, and a line
/// set clearly larger than the page's body text is taken as a heading. Every block keeps its 1-based page.
/// </summary>
public static class PdfExtractor
{
    private sealed record Line(string Text, double Baseline, double FontSize, double Height);

    public static ExtractedDocument Extract(byte[] bytes)
    {
        using var pdf = PdfDocument.Open(bytes);
        var doc = new ExtractedDocument { PageCount = pdf.NumberOfPages };
        doc.Title = pdf.Information.Title ?? "";
        if (!string.IsNullOrWhiteSpace(pdf.Information.Author))
        {
            doc.Metadata["author"] = pdf.Information.Author;
        }

        doc.Metadata["pages"] = pdf.NumberOfPages.ToString(CultureInfo.InvariantCulture);
        foreach (var page in pdf.GetPages())
        {
            var lines = Lines(page);
            if (lines.Count == 0)
            {
                continue;
            }

            var body = lines.Select(l => l.FontSize).Order().ElementAt(lines.Count / 2);
            var paragraph = new StringBuilder();
            Line? previous = null;
            void Flush()
            {
                if (paragraph.Length > 0)
                {
                    doc.Blocks.Add(new TextBlock(BlockKind.Paragraph, paragraph.ToString(), page.Number));
                    paragraph.Clear();
                }
            }

            foreach (var line in lines)
            {
                if (line.FontSize >= body * 1.2 && line.Text.Length <= 120)
                {
                    Flush();
                    var level = line.FontSize >= body * 1.6 ? 1 : 2;
                    doc.Blocks.Add(new TextBlock(BlockKind.Heading, line.Text, page.Number, level));
                    if (doc.Title.Length == 0 && level == 1)
                    {
                        doc.Title = line.Text;
                    }

                    previous = null;
                    continue;
                }

                // A gap of more than about one and a half lines starts a new paragraph.
                if (previous is not null && previous.Baseline - line.Baseline > Math.Max(previous.Height, line.Height) * 1.8)
                {
                    Flush();
                }

                if (paragraph.Length > 0)
                {
                    paragraph.Append(Joiner(paragraph[^1], line.Text[0]));
                }

                paragraph.Append(line.Text);
                previous = line;
            }

            Flush();
        }

        return doc;
    }

    private static List<Line> Lines(Page page)
    {
        var words = page.GetWords().Where(w => !string.IsNullOrWhiteSpace(w.Text)).ToList();
        var lines = new List<Line>();
        // Top of the page first: PDF y grows upwards.
        foreach (var group in GroupByBaseline(words))
        {
            var ordered = group.OrderBy(w => w.BoundingBox.Left).ToList();
            var text = new StringBuilder();
            Word? last = null;
            foreach (var w in ordered)
            {
                if (last is not null)
                {
                    var gap = w.BoundingBox.Left - last.BoundingBox.Right;
                    var size = Size(w);
                    if (gap > size * 0.15 && !(Cjk.IsCjk(text[^1]) && Cjk.IsCjk(w.Text[0])))
                    {
                        text.Append(' ');
                    }
                }

                text.Append(w.Text);
                last = w;
            }

            lines.Add(new Line(text.ToString().Trim(), ordered[0].BoundingBox.Bottom, ordered.Max(Size), ordered.Max(w => w.BoundingBox.Height)));
        }

        return lines;
    }

    private static IEnumerable<List<Word>> GroupByBaseline(List<Word> words)
    {
        var sorted = words.OrderByDescending(w => w.BoundingBox.Bottom).ToList();
        var current = new List<Word>();
        double? baseline = null;
        foreach (var w in sorted)
        {
            if (baseline is { } b && Math.Abs(b - w.BoundingBox.Bottom) > Size(w) * 0.5)
            {
                yield return current;
                current = [];
            }

            if (current.Count == 0)
            {
                baseline = w.BoundingBox.Bottom;
            }

            current.Add(w);
        }

        if (current.Count > 0)
        {
            yield return current;
        }
    }

    private static double Size(Word w) => w.Letters.Count > 0 ? w.Letters.Max(l => l.PointSize) : w.BoundingBox.Height;

    private static string Joiner(char before, char after) => Cjk.IsCjk(before) || Cjk.IsCjk(after) ? "" : " ";
}

/// <summary>Character classes the cleaner, chunker and token estimate share.</summary>
public static class Cjk
{
    /// <summary>Han ideographs, kana, hangul and CJK punctuation: scripts written without spaces between words.</summary>
    public static bool IsCjk(char c) =>
        c is (>= '\u4E00' and <= '\u9FFF') or (>= '\u3400' and <= '\u4DBF') or (>= '\uF900' and <= '\uFAFF')
            or (>= '\u3040' and <= '\u30FF') or (>= '\uAC00' and <= '\uD7AF') or (>= '\u3000' and <= '\u303F')
            or (>= '\uFF00' and <= '\uFFEF');
}
