using System.Text;
using DocumentFormat.OpenXml;
using DocumentFormat.OpenXml.Packaging;
using DocumentFormat.OpenXml.Spreadsheet;
using W = DocumentFormat.OpenXml.Wordprocessing;

namespace Enclave.Knowledge.Extraction;

/// <summary>
/// Word documents: paragraphs styled Title/Heading N become headings, numbered paragraphs list items, and each table
/// row a record keyed by the table's first row.
/// </summary>
public static class DocxExtractor
{
    public static ExtractedDocument Extract(byte[] bytes)
    {
        using var stream = new MemoryStream(bytes, writable: false);
        using var word = WordprocessingDocument.Open(stream, false);
        var doc = new ExtractedDocument();
        doc.Title = word.PackageProperties.Title ?? "";
        if (!string.IsNullOrWhiteSpace(word.PackageProperties.Creator))
        {
            doc.Metadata["author"] = word.PackageProperties.Creator;
        }

        var body = word.MainDocumentPart?.Document?.Body ?? throw new DocumentFormatException("the document has no body");
        var styles = word.MainDocumentPart.StyleDefinitionsPart?.Styles;
        foreach (var element in body.ChildElements)
        {
            switch (element)
            {
                case W.Paragraph p:
                    AddParagraph(doc, p, styles);
                    break;
                case W.Table t:
                    AddTable(doc, t);
                    break;
            }
        }

        return doc;
    }

    private static void AddParagraph(ExtractedDocument doc, W.Paragraph p, W.Styles? styles)
    {
        var text = string.Concat(p.Descendants<W.Text>().Select(t => t.Text)).Trim();
        if (text.Length == 0)
        {
            return;
        }

        var styleId = p.ParagraphProperties?.ParagraphStyleId?.Val?.Value ?? "";
        var styleName = styles?.Elements<W.Style>().FirstOrDefault(s => s.StyleId?.Value == styleId)?.StyleName?.Val?.Value ?? styleId;
        var style = styleName.Replace(" ", "", StringComparison.Ordinal).ToLowerInvariant();
        if (style == "title")
        {
            doc.Title = doc.Title.Length == 0 ? text : doc.Title;
            doc.Blocks.Add(new TextBlock(BlockKind.Heading, text, Level: 1));
        }
        else if (style.StartsWith("heading", StringComparison.Ordinal) && int.TryParse(style.AsSpan(7), out var level))
        {
            doc.Blocks.Add(new TextBlock(BlockKind.Heading, text, Level: Math.Clamp(level, 1, 9)));
        }
        else if (p.ParagraphProperties?.NumberingProperties is not null || style.StartsWith("listparagraph", StringComparison.Ordinal))
        {
            doc.Blocks.Add(new TextBlock(BlockKind.ListItem, text));
        }
        else
        {
            doc.Blocks.Add(new TextBlock(BlockKind.Paragraph, text));
        }
    }

    private static void AddTable(ExtractedDocument doc, W.Table table)
    {
        var rows = table.Elements<W.TableRow>()
            .Select(r => r.Elements<W.TableCell>().Select(c => string.Join(" ", c.Descendants<W.Text>().Select(t => t.Text)).Trim()).ToArray())
            .ToList();
        if (rows.Count == 0)
        {
            return;
        }

        if (rows.Count == 1)
        {
            doc.Blocks.Add(new TextBlock(BlockKind.TableRow, string.Join(" | ", rows[0])));
            return;
        }

        foreach (var row in rows.Skip(1))
        {
            var record = Records.Format(rows[0], row);
            if (record.Length > 0)
            {
                doc.Blocks.Add(new TextBlock(BlockKind.TableRow, record));
            }
        }
    }
}

/// <summary>Excel workbooks: each sheet is a section headed by its name, each row below the header a record.</summary>
public static class XlsxExtractor
{
    public static ExtractedDocument Extract(byte[] bytes)
    {
        using var stream = new MemoryStream(bytes, writable: false);
        using var book = SpreadsheetDocument.Open(stream, false);
        var doc = new ExtractedDocument { Title = book.PackageProperties.Title ?? "" };
        var part = book.WorkbookPart ?? throw new DocumentFormatException("the workbook has no workbook part");
        var shared = part.SharedStringTablePart?.SharedStringTable?.Elements<SharedStringItem>().Select(s => s.InnerText).ToArray() ?? [];
        var sheetNames = new List<string>();
        foreach (var sheet in part.Workbook?.Sheets?.Elements<Sheet>() ?? [])
        {
            var name = sheet.Name?.Value ?? "Sheet";
            sheetNames.Add(name);
            if (sheet.Id?.Value is not { } relId || part.GetPartById(relId) is not WorksheetPart ws)
            {
                continue;
            }

            var rows = new List<string[]>();
            foreach (var row in ws.Worksheet?.Descendants<Row>() ?? [])
            {
                var cells = new List<string>();
                foreach (var cell in row.Elements<Cell>())
                {
                    var column = ColumnIndex(cell.CellReference?.Value);
                    while (cells.Count < column)
                    {
                        cells.Add("");
                    }

                    cells.Add(CellText(cell, shared));
                }

                if (cells.Any(c => c.Length > 0))
                {
                    rows.Add([.. cells]);
                }
            }

            if (rows.Count == 0)
            {
                continue;
            }

            doc.Blocks.Add(new TextBlock(BlockKind.Heading, name, Level: 1));
            foreach (var row in rows.Skip(1))
            {
                var record = Records.Format(rows[0], row);
                if (record.Length > 0)
                {
                    doc.Blocks.Add(new TextBlock(BlockKind.TableRow, record));
                }
            }
        }

        doc.Metadata["sheets"] = string.Join(",", sheetNames);
        return doc;
    }

    private static string CellText(Cell cell, string[] shared)
    {
        if (cell.DataType?.Value == CellValues.InlineString)
        {
            return cell.InlineString?.InnerText ?? "";
        }

        var raw = cell.CellValue?.Text ?? "";
        if (cell.DataType?.Value == CellValues.SharedString && int.TryParse(raw, out var i) && i >= 0 && i < shared.Length)
        {
            return shared[i];
        }

        if (cell.DataType?.Value == CellValues.Boolean)
        {
            return raw == "1" ? "TRUE" : "FALSE";
        }

        return raw;
    }

    /// <summary>0-based column of a reference such as "C7"; -1 when absent (cells then follow in order).</summary>
    private static int ColumnIndex(string? reference)
    {
        if (string.IsNullOrEmpty(reference))
        {
            return -1;
        }

        var index = 0;
        foreach (var c in reference)
        {
            if (!char.IsAsciiLetter(c))
            {
                break;
            }

            index = (index * 26) + (char.ToUpperInvariant(c) - 'A' + 1);
        }

        return index - 1;
    }
}
