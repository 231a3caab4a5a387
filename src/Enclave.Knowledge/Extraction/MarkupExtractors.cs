using System.Text;
using AngleSharp.Dom;
using AngleSharp.Html.Parser;
using Markdig;
using Markdig.Extensions.Tables;
using Markdig.Syntax;
using Markdig.Syntax.Inlines;

namespace Enclave.Knowledge.Extraction;

/// <summary>HTML through AngleSharp: h1–h6, paragraphs, list items, table rows and pre blocks; scripts, styles and navigation are skipped.</summary>
public static class HtmlExtractor
{
    private static readonly HashSet<string> Skipped = ["SCRIPT", "STYLE", "NOSCRIPT", "NAV", "TEMPLATE", "SVG", "HEAD"];

    public static ExtractedDocument Extract(string html)
    {
        var parser = new HtmlParser();
        using var dom = parser.ParseDocument(html);
        var doc = new ExtractedDocument { Title = dom.Title?.Trim() ?? "" };
        var description = dom.QuerySelector("meta[name=description]")?.GetAttribute("content");
        if (!string.IsNullOrWhiteSpace(description))
        {
            doc.Metadata["description"] = description.Trim();
        }

        if (dom.Body is not null)
        {
            Walk(dom.Body, doc);
        }

        return doc;
    }

    private static void Walk(IElement element, ExtractedDocument doc)
    {
        foreach (var child in element.Children)
        {
            var tag = child.TagName;
            if (Skipped.Contains(tag))
            {
                continue;
            }

            switch (tag)
            {
                case "H1" or "H2" or "H3" or "H4" or "H5" or "H6":
                    Add(doc, BlockKind.Heading, child.TextContent, tag[1] - '0');
                    break;
                case "P" or "BLOCKQUOTE" or "DT" or "DD" or "FIGCAPTION" or "CAPTION":
                    Add(doc, BlockKind.Paragraph, child.TextContent);
                    break;
                case "PRE":
                    Add(doc, BlockKind.Code, child.TextContent);
                    break;
                case "LI" when !child.Children.Any(c => c.TagName is "UL" or "OL" or "P" or "DIV"):
                    Add(doc, BlockKind.ListItem, child.TextContent);
                    break;
                case "TABLE":
                    AddTable(doc, child);
                    break;
                default:
                    if (child.Children.Length == 0)
                    {
                        Add(doc, BlockKind.Paragraph, child.TextContent);
                    }
                    else
                    {
                        // Text directly inside a container (div with text and inline tags) still counts as a paragraph.
                        var own = string.Concat(child.ChildNodes.Where(n => n.NodeType == NodeType.Text).Select(n => n.TextContent));
                        if (own.Trim().Length > 0 && child.Children.All(c => IsInline(c.TagName)))
                        {
                            Add(doc, BlockKind.Paragraph, child.TextContent);
                        }
                        else
                        {
                            Walk(child, doc);
                        }
                    }

                    break;
            }
        }
    }

    private static bool IsInline(string tag) => tag is "A" or "B" or "I" or "EM" or "STRONG" or "SPAN" or "CODE" or "SUB" or "SUP" or "BR" or "SMALL" or "MARK" or "U" or "ABBR";

    private static void AddTable(ExtractedDocument doc, IElement table)
    {
        var rows = table.QuerySelectorAll("tr").Select(r => r.Children.Where(c => c.TagName is "TD" or "TH").Select(c => Collapse(c.TextContent)).ToArray()).Where(r => r.Length > 0).ToList();
        if (rows.Count == 0)
        {
            return;
        }

        var start = rows.Count > 1 ? 1 : 0;
        foreach (var row in rows.Skip(start))
        {
            var record = start == 1 ? Records.Format(rows[0], row) : string.Join(" | ", row);
            Add(doc, BlockKind.TableRow, record);
        }
    }

    private static void Add(ExtractedDocument doc, BlockKind kind, string text, int level = 0)
    {
        var t = kind == BlockKind.Code ? text.Trim('\n', '\r') : Collapse(text);
        if (t.Length > 0)
        {
            doc.Blocks.Add(new TextBlock(kind, t, Level: level));
        }
    }

    internal static string Collapse(string text)
    {
        var sb = new StringBuilder(text.Length);
        var space = false;
        foreach (var c in text)
        {
            if (char.IsWhiteSpace(c))
            {
                space = sb.Length > 0;
                continue;
            }

            if (space)
            {
                sb.Append(' ');
                space = false;
            }

            sb.Append(c);
        }

        return sb.ToString();
    }
}

/// <summary>Markdown through Markdig (CommonMark plus pipe tables): headings, paragraphs, list items, table rows, code.</summary>
public static class MarkdownExtractor
{
    private static readonly MarkdownPipeline Pipeline = new MarkdownPipelineBuilder().UsePipeTables().UseYamlFrontMatter().Build();

    public static ExtractedDocument Extract(string markdown)
    {
        var parsed = Markdown.Parse(markdown, Pipeline);
        var doc = new ExtractedDocument();
        foreach (var block in parsed)
        {
            Add(doc, block);
        }

        doc.Title = doc.Blocks.FirstOrDefault(b => b.Kind == BlockKind.Heading && b.Level == 1)?.Text ?? "";
        return doc;
    }

    private static void Add(ExtractedDocument doc, Block block)
    {
        switch (block)
        {
            case HeadingBlock h:
                AddText(doc, BlockKind.Heading, Inline(h.Inline), h.Level);
                break;
            case ParagraphBlock p:
                AddText(doc, block.Parent is ListItemBlock ? BlockKind.ListItem : BlockKind.Paragraph, Inline(p.Inline));
                break;
            case Table table:
                var rows = table.OfType<TableRow>().Select(r => r.OfType<TableCell>().Select(c => string.Join(" ", c.OfType<ParagraphBlock>().Select(p => Inline(p.Inline)))).ToArray()).ToList();
                var header = table.OfType<TableRow>().FirstOrDefault()?.IsHeader == true ? rows[0] : null;
                foreach (var row in header is null ? rows : rows.Skip(1))
                {
                    AddText(doc, BlockKind.TableRow, header is null ? string.Join(" | ", row) : Records.Format(header, row));
                }

                break;
            case Markdig.Extensions.Yaml.YamlFrontMatterBlock:
                break;
            case FencedCodeBlock or CodeBlock:
                AddText(doc, BlockKind.Code, ((LeafBlock)block).Lines.ToString());
                break;
            case ContainerBlock container:
                foreach (var child in container)
                {
                    Add(doc, child);
                }

                break;
        }
    }

    private static void AddText(ExtractedDocument doc, BlockKind kind, string text, int level = 0)
    {
        var t = text.Trim();
        if (t.Length > 0)
        {
            doc.Blocks.Add(new TextBlock(kind, t, Level: level));
        }
    }

    private static string Inline(ContainerInline? inline)
    {
        if (inline is null)
        {
            return "";
        }

        var sb = new StringBuilder();
        foreach (var item in inline.Descendants())
        {
            switch (item)
            {
                case LiteralInline l:
                    sb.Append(l.Content.ToString());
                    break;
                case CodeInline c:
                    sb.Append(c.Content);
                    break;
                case LineBreakInline:
                    sb.Append('\n');
                    break;
            }
        }

        return sb.ToString();
    }
}
