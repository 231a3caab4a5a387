using DocumentFormat.OpenXml;
using DocumentFormat.OpenXml.Packaging;
using DocumentFormat.OpenXml.Spreadsheet;
using UglyToad.PdfPig.Content;
using UglyToad.PdfPig.Core;
using UglyToad.PdfPig.Fonts.Standard14Fonts;
using UglyToad.PdfPig.Writer;
using W = DocumentFormat.OpenXml.Wordprocessing;

namespace Enclave.Knowledge.Tests.Support;

/// <summary>Writes real PDF, DOCX and XLSX files with the same libraries' writers, so extraction is tested on genuine files.</summary>
public static class Files
{
    /// <summary>Where a CJK TrueType font is installed (.ci/install-fonts.sh installs fonts-arphic-gbsn00lp); null when none is.</summary>
    public static string? CjkFont { get; } = new[]
    {
        "/usr/share/fonts/truetype/arphic-gbsn00lp/gbsn00lp.ttf",
    }.FirstOrDefault(File.Exists);

    /// <summary>
    /// A PDF whose pages each carry a running header and "Page N of M" footer around a heading and body lines.
    /// Each page is (heading, body lines). A CJK font is embedded when <paramref name="cjkFont"/> is given.
    /// </summary>
    public static byte[] Pdf(string title, IReadOnlyList<(string Heading, string[] Lines)> pages, string? cjkFont = null)
    {
        var builder = new PdfDocumentBuilder();
        builder.DocumentInformation.Title = title;
        builder.DocumentInformation.Author = "Enclave tests";
        var latin = builder.AddStandard14Font(Standard14Font.Helvetica);
        var font = cjkFont is null ? latin : builder.AddTrueTypeFont(File.ReadAllBytes(cjkFont));
        for (var i = 0; i < pages.Count; i++)
        {
            var page = builder.AddPage(PageSize.A4);
            page.AddText("ACME Corp Confidential", 9, new PdfPoint(50, 800), latin);
            page.AddText(pages[i].Heading, 18, new PdfPoint(50, 750), font);
            var y = 720.0;
            foreach (var line in pages[i].Lines)
            {
                if (line.Length == 0)
                {
                    y -= 20;
                    continue;
                }

                page.AddText(line, 11, new PdfPoint(50, y), font);
                y -= 14;
            }

            page.AddText($"Page {i + 1} of {pages.Count}", 9, new PdfPoint(50, 40), latin);
        }

        return builder.Build();
    }

    public static byte[] Docx(string title, Action<W.Body> fill)
    {
        using var ms = new MemoryStream();
        using (var doc = WordprocessingDocument.Create(ms, WordprocessingDocumentType.Document))
        {
            var main = doc.AddMainDocumentPart();
            main.Document = new W.Document(new W.Body());
            var styles = main.AddNewPart<StyleDefinitionsPart>();
            styles.Styles = new W.Styles(
                Style("Title", "Title"),
                Style("Heading1", "heading 1"),
                Style("Heading2", "heading 2"));
            fill(main.Document.Body!);
            doc.PackageProperties.Title = title;
            doc.PackageProperties.Creator = "Enclave tests";
        }

        return ms.ToArray();
    }

    private static W.Style Style(string id, string name) =>
        new(new W.StyleName { Val = name }) { StyleId = id, Type = W.StyleValues.Paragraph };

    public static W.Paragraph Para(string text, string? style = null, bool listItem = false)
    {
        var p = new W.Paragraph(new W.Run(new W.Text(text)));
        if (style is not null || listItem)
        {
            var props = new W.ParagraphProperties();
            if (style is not null)
            {
                props.Append(new W.ParagraphStyleId { Val = style });
            }

            if (listItem)
            {
                props.Append(new W.NumberingProperties(new W.NumberingLevelReference { Val = 0 }, new W.NumberingId { Val = 1 }));
            }

            p.PrependChild(props);
        }

        return p;
    }

    public static W.Table Table(params string[][] rows) =>
        new(rows.Select(r => new W.TableRow(r.Select(c => new W.TableCell(new W.Paragraph(new W.Run(new W.Text(c))))))));

    /// <summary>A workbook with one sheet per entry; cells are inline strings except numbers, and the first row is the header.</summary>
    public static byte[] Xlsx(params (string Sheet, string[][] Rows)[] sheets)
    {
        using var ms = new MemoryStream();
        using (var book = SpreadsheetDocument.Create(ms, SpreadsheetDocumentType.Workbook))
        {
            var wb = book.AddWorkbookPart();
            wb.Workbook = new Workbook();
            var list = wb.Workbook.AppendChild(new Sheets());
            uint id = 1;
            foreach (var (name, rows) in sheets)
            {
                var ws = wb.AddNewPart<WorksheetPart>();
                var data = new SheetData();
                for (var r = 0; r < rows.Length; r++)
                {
                    var row = new Row { RowIndex = (uint)(r + 1) };
                    for (var c = 0; c < rows[r].Length; c++)
                    {
                        if (rows[r][c].Length == 0)
                        {
                            continue;
                        }

                        var reference = $"{(char)('A' + c)}{r + 1}";
                        row.Append(double.TryParse(rows[r][c], System.Globalization.CultureInfo.InvariantCulture, out _)
                            ? new Cell { CellReference = reference, CellValue = new CellValue(rows[r][c]) }
                            : new Cell { CellReference = reference, DataType = CellValues.InlineString, InlineString = new InlineString(new Text(rows[r][c])) });
                    }

                    data.Append(row);
                }

                ws.Worksheet = new Worksheet(data);
                list.Append(new Sheet { Id = wb.GetIdOfPart(ws), SheetId = id++, Name = name });
            }
        }

        return ms.ToArray();
    }
}

/// <summary>A temporary directory removed at dispose.</summary>
public sealed class TempDir : IDisposable
{
    public string Path { get; } = System.IO.Path.Combine(System.IO.Path.GetTempPath(), "enclave-kb-" + Guid.NewGuid().ToString("N"));

    public TempDir() => Directory.CreateDirectory(Path);

    public void Dispose()
    {
        Microsoft.Data.Sqlite.SqliteConnection.ClearAllPools();
        try
        {
            Directory.Delete(Path, recursive: true);
        }
        catch (IOException)
        {
            // still held open; the temp directory is cleaned later
        }
    }
}

/// <summary>A fact that needs a CJK TrueType font to write Chinese into a PDF; skipped, saying why, when none is installed.</summary>
[AttributeUsage(AttributeTargets.Method)]
public sealed class CjkFontFactAttribute : FactAttribute
{
    public CjkFontFactAttribute()
    {
        if (Files.CjkFont is null)
        {
            Skip = "no CJK TrueType font installed (.ci/install-fonts.sh installs fonts-arphic-gbsn00lp)";
        }
    }
}
