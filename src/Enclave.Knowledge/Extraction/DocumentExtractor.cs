using System.Text;

namespace Enclave.Knowledge.Extraction;

/// <summary>Picks the reader for a file by its extension and turns its bytes into structured blocks.</summary>
public static class DocumentExtractor
{
    public static IReadOnlyList<string> SupportedExtensions { get; } =
        [".pdf", ".docx", ".xlsx", ".csv", ".html", ".htm", ".md", ".markdown", ".txt", ".text"];

    public static bool IsSupported(string fileName) =>
        SupportedExtensions.Contains(Path.GetExtension(fileName).ToLowerInvariant(), StringComparer.Ordinal);

    public static ExtractedDocument Extract(byte[] bytes, string fileName)
    {
        var ext = Path.GetExtension(fileName).ToLowerInvariant();
        ExtractedDocument doc;
        try
        {
            doc = ext switch
            {
                ".pdf" => PdfExtractor.Extract(bytes),
                ".docx" => DocxExtractor.Extract(bytes),
                ".xlsx" => XlsxExtractor.Extract(bytes),
                ".csv" => CsvExtractor.Extract(TextDecoding.Decode(bytes)),
                ".html" or ".htm" => HtmlExtractor.Extract(TextDecoding.Decode(bytes)),
                ".md" or ".markdown" => MarkdownExtractor.Extract(TextDecoding.Decode(bytes)),
                ".txt" or ".text" => PlainTextExtractor.Extract(TextDecoding.Decode(bytes)),
                _ => throw new DocumentFormatException(
                    $"{fileName}: unsupported file type '{ext}' (supported: {string.Join(", ", SupportedExtensions)})"),
            };
        }
        catch (DocumentFormatException)
        {
            throw;
        }
        catch (Exception e) when (e is not OutOfMemoryException and not OperationCanceledException)
        {
            throw new DocumentFormatException($"{fileName}: not a readable {ext.TrimStart('.').ToUpperInvariant()} file ({e.Message})", e);
        }

        if (string.IsNullOrWhiteSpace(doc.Title))
        {
            doc.Title = Path.GetFileNameWithoutExtension(fileName);
        }

        doc.Metadata["format"] = ext.TrimStart('.');
        return doc;
    }
}

/// <summary>
/// Decodes text files: a byte-order mark wins; valid UTF-8 is UTF-8; anything else is read as GB18030, the encoding
/// Chinese Windows tools still write (it is a superset of GBK and GB2312).
/// </summary>
public static class TextDecoding
{
    private static readonly Lazy<Encoding> Gb18030 = new(() =>
    {
        Encoding.RegisterProvider(CodePagesEncodingProvider.Instance);
        return Encoding.GetEncoding("GB18030");
    });

    public static string Decode(byte[] bytes)
    {
        if (bytes.AsSpan().StartsWith((ReadOnlySpan<byte>)[0xEF, 0xBB, 0xBF]))
        {
            return Encoding.UTF8.GetString(bytes, 3, bytes.Length - 3);
        }

        if (bytes.AsSpan().StartsWith((ReadOnlySpan<byte>)[0xFF, 0xFE]))
        {
            return Encoding.Unicode.GetString(bytes, 2, bytes.Length - 2);
        }

        if (bytes.AsSpan().StartsWith((ReadOnlySpan<byte>)[0xFE, 0xFF]))
        {
            return Encoding.BigEndianUnicode.GetString(bytes, 2, bytes.Length - 2);
        }

        return System.Text.Unicode.Utf8.IsValid(bytes) ? Encoding.UTF8.GetString(bytes) : Gb18030.Value.GetString(bytes);
    }
}

/// <summary>Plain text: blank lines separate paragraphs; the first short line is taken as the title.</summary>
public static class PlainTextExtractor
{
    public static ExtractedDocument Extract(string text)
    {
        var doc = new ExtractedDocument();
        foreach (var paragraph in Paragraphs(text))
        {
            doc.Blocks.Add(new TextBlock(BlockKind.Paragraph, paragraph));
        }

        if (doc.Blocks.Count > 1 && doc.Blocks[0].Text.Length <= 80 && !doc.Blocks[0].Text.Contains('\n'))
        {
            doc.Title = doc.Blocks[0].Text;
            doc.Blocks[0] = new TextBlock(BlockKind.Heading, doc.Blocks[0].Text, Level: 1);
        }

        return doc;
    }

    internal static IEnumerable<string> Paragraphs(string text)
    {
        var current = new StringBuilder();
        foreach (var raw in text.ReplaceLineEndings("\n").Split('\n'))
        {
            var line = raw.Trim();
            if (line.Length == 0)
            {
                if (current.Length > 0)
                {
                    yield return current.ToString();
                    current.Clear();
                }

                continue;
            }

            if (current.Length > 0)
            {
                current.Append('\n');
            }

            current.Append(line);
        }

        if (current.Length > 0)
        {
            yield return current.ToString();
        }
    }
}

/// <summary>CSV (RFC 4180 quoting): each row becomes one record "header: value; …" so a row is retrievable on its own.</summary>
public static class CsvExtractor
{
    public static ExtractedDocument Extract(string text)
    {
        var rows = Parse(text);
        var doc = new ExtractedDocument();
        if (rows.Count == 0)
        {
            return doc;
        }

        var header = rows[0];
        doc.Metadata["columns"] = string.Join(",", header);
        doc.Metadata["rows"] = (rows.Count - 1).ToString(System.Globalization.CultureInfo.InvariantCulture);
        for (var i = 1; i < rows.Count; i++)
        {
            var record = Records.Format(header, rows[i]);
            if (record.Length > 0)
            {
                doc.Blocks.Add(new TextBlock(BlockKind.TableRow, record));
            }
        }

        return doc;
    }

    public static List<string[]> Parse(string text)
    {
        var rows = new List<string[]>();
        var row = new List<string>();
        var field = new StringBuilder();
        var quoted = false;
        for (var i = 0; i < text.Length; i++)
        {
            var c = text[i];
            if (quoted)
            {
                if (c == '"')
                {
                    if (i + 1 < text.Length && text[i + 1] == '"')
                    {
                        field.Append('"');
                        i++;
                    }
                    else
                    {
                        quoted = false;
                    }
                }
                else
                {
                    field.Append(c);
                }

                continue;
            }

            switch (c)
            {
                case '"' when field.Length == 0:
                    quoted = true;
                    break;
                case ',':
                    row.Add(field.ToString());
                    field.Clear();
                    break;
                case '\r':
                    break;
                case '\n':
                    row.Add(field.ToString());
                    field.Clear();
                    if (row.Any(f => f.Length > 0))
                    {
                        rows.Add([.. row]);
                    }

                    row.Clear();
                    break;
                default:
                    field.Append(c);
                    break;
            }
        }

        if (quoted)
        {
            throw new DocumentFormatException($"unterminated quoted field in row {rows.Count + 1}");
        }

        if (field.Length > 0 || row.Count > 0)
        {
            row.Add(field.ToString());
            if (row.Any(f => f.Length > 0))
            {
                rows.Add([.. row]);
            }
        }

        return rows;
    }
}

/// <summary>Table rows as records: "column: value; column: value", skipping empty cells.</summary>
public static class Records
{
    public static string Format(IReadOnlyList<string> header, IReadOnlyList<string> cells)
    {
        var parts = new List<string>();
        for (var c = 0; c < cells.Count; c++)
        {
            var value = cells[c].Trim();
            if (value.Length == 0)
            {
                continue;
            }

            var name = c < header.Count && header[c].Trim().Length > 0 ? header[c].Trim() : $"column {c + 1}";
            parts.Add($"{name}: {value}");
        }

        return string.Join("; ", parts);
    }
}
