using System.Text;
using Enclave.Knowledge.Extraction;
using Enclave.Knowledge.Tests.Support;

namespace Enclave.Knowledge.Tests;

public sealed class ExtractionTests
{
    private static readonly (string, string[])[] PolicyPages =
    [
        ("Travel Policy", ["Employees book flights through the approved agency.", "Economy class is the default for trips under six hours."]),
        ("Expense Claims", ["Claims must be filed within 30 days of travel.", "Receipts are required for every item above 50 EUR."]),
        ("Approvals", ["Managers approve claims in the finance portal.", "", "Exceptions need the CFO's written approval."]),
    ];

    [Fact]
    public void Pdf_pages_headings_and_metadata_are_read_and_running_headers_are_recognisable()
    {
        var doc = DocumentExtractor.Extract(Files.Pdf("Travel and Expenses", PolicyPages), "policy.pdf");
        Assert.Equal("Travel and Expenses", doc.Title);
        Assert.Equal(3, doc.PageCount);
        Assert.Equal("Enclave tests", doc.Metadata["author"]);
        Assert.Equal("pdf", doc.Metadata["format"]);
        var headings = doc.Blocks.Where(b => b.Kind == BlockKind.Heading).ToList();
        Assert.Equal(["Travel Policy", "Expense Claims", "Approvals"], headings.Select(h => h.Text));
        Assert.Equal([1, 2, 3], headings.Select(h => h.Page!.Value));
        var claims = Assert.Single(doc.Blocks, b => b.Text.Contains("within 30 days", StringComparison.Ordinal));
        Assert.Equal(2, claims.Page);
        Assert.Equal(BlockKind.Paragraph, claims.Kind);
        Assert.Equal("Claims must be filed within 30 days of travel. Receipts are required for every item above 50 EUR.", claims.Text);
        // A vertical gap separates paragraphs.
        Assert.Contains(doc.Blocks, b => b.Page == 3 && b.Text == "Exceptions need the CFO's written approval.");
        Assert.Equal(3, doc.Blocks.Count(b => b.Text == "ACME Corp Confidential"));
    }

    [CjkFontFact]
    public void Pdf_with_chinese_text_is_extracted_when_a_cjk_font_is_installed()
    {
        var pages = new (string, string[])[]
        {
            ("数据安全制度", ["所有客户数据必须加密存储。", "访问生产数据库需要审批。"]),
            ("备份策略", ["每天凌晨两点进行全量备份。"]),
        };
        var doc = DocumentExtractor.Extract(Files.Pdf("数据安全", pages, Files.CjkFont!), "security.pdf");
        Assert.Equal(["数据安全制度", "备份策略"], doc.Blocks.Where(b => b.Kind == BlockKind.Heading).Select(b => b.Text));
        var p1 = Assert.Single(doc.Blocks, b => b.Page == 1 && b.Kind == BlockKind.Paragraph && b.Text.StartsWith("所有", StringComparison.Ordinal));
        Assert.Equal("所有客户数据必须加密存储。访问生产数据库需要审批。", p1.Text);
        Assert.Contains(doc.Blocks, b => b.Page == 2 && b.Text == "每天凌晨两点进行全量备份。");
    }

    [Fact]
    public void Docx_title_headings_lists_and_table_rows_as_records()
    {
        var bytes = Files.Docx("员工手册", body =>
        {
            body.Append(Files.Para("员工手册", "Title"));
            body.Append(Files.Para("考勤", "Heading1"));
            body.Append(Files.Para("工作时间为周一至周五九点到六点。"));
            body.Append(Files.Para("迟到三次记为旷工半天", listItem: true));
            body.Append(Files.Para("Leave", "Heading2"));
            body.Append(Files.Table(["Type", "Days"], ["Annual", "15"], ["Sick", "10"]));
        });
        var doc = DocumentExtractor.Extract(bytes, "handbook.docx");
        Assert.Equal("员工手册", doc.Title);
        Assert.Equal("Enclave tests", doc.Metadata["author"]);
        Assert.Equal(
            [
                (BlockKind.Heading, "员工手册", 1), (BlockKind.Heading, "考勤", 1), (BlockKind.Paragraph, "工作时间为周一至周五九点到六点。", 0),
                (BlockKind.ListItem, "迟到三次记为旷工半天", 0), (BlockKind.Heading, "Leave", 2),
                (BlockKind.TableRow, "Type: Annual; Days: 15", 0), (BlockKind.TableRow, "Type: Sick; Days: 10", 0),
            ],
            doc.Blocks.Select(b => (b.Kind, b.Text, b.Level)));
    }

    [Fact]
    public void Xlsx_sheets_become_sections_and_rows_records()
    {
        var bytes = Files.Xlsx(
            ("供应商", [["名称", "城市", "评级"], ["华东物流", "上海", "A"], ["北方电子", "", "B"]]),
            ("Prices", [["Item", "Price"], ["Laptop", "899.5"]]));
        var doc = DocumentExtractor.Extract(bytes, "vendors.xlsx");
        Assert.Equal("供应商,Prices", doc.Metadata["sheets"]);
        Assert.Equal(
            ["供应商", "名称: 华东物流; 城市: 上海; 评级: A", "名称: 北方电子; 评级: B", "Prices", "Item: Laptop; Price: 899.5"],
            doc.Blocks.Select(b => b.Text));
        Assert.Equal(BlockKind.Heading, doc.Blocks[0].Kind);
        Assert.Equal(BlockKind.TableRow, doc.Blocks[1].Kind);
    }

    [Fact]
    public void Csv_rows_are_records_with_quoted_fields()
    {
        var csv = "id,name,note\n1,\"Zhang, San\",\"said \"\"hi\"\"\"\n2,李四,\n";
        var doc = DocumentExtractor.Extract(Encoding.UTF8.GetBytes(csv), "people.csv");
        Assert.Equal(["id: 1; name: Zhang, San; note: said \"hi\"", "id: 2; name: 李四"], doc.Blocks.Select(b => b.Text));
        Assert.Equal("2", doc.Metadata["rows"]);
    }

    [Fact]
    public void Html_structure_without_scripts_or_navigation()
    {
        const string html = """
            <html><head><title>IT 服务台</title><meta name="description" content="Helpdesk FAQ"><style>p{}</style></head>
            <body><nav><a href="/">Home</a></nav>
            <h1>服务台</h1><p>工作日 <b>8:00-20:00</b> 提供支持。</p>
            <h2>Password reset</h2><ul><li>Open the portal</li><li>Choose <i>reset</i></li></ul>
            <table><tr><th>Level</th><th>Response</th></tr><tr><td>P1</td><td>15 minutes</td></tr></table>
            <script>alert(1)</script></body></html>
            """;
        var doc = DocumentExtractor.Extract(Encoding.UTF8.GetBytes(html), "helpdesk.html");
        Assert.Equal("IT 服务台", doc.Title);
        Assert.Equal("Helpdesk FAQ", doc.Metadata["description"]);
        Assert.Equal(
            [
                (BlockKind.Heading, "服务台"), (BlockKind.Paragraph, "工作日 8:00-20:00 提供支持。"), (BlockKind.Heading, "Password reset"),
                (BlockKind.ListItem, "Open the portal"), (BlockKind.ListItem, "Choose reset"), (BlockKind.TableRow, "Level: P1; Response: 15 minutes"),
            ],
            doc.Blocks.Select(b => (b.Kind, b.Text)));
    }

    [Fact]
    public void Markdown_headings_lists_tables_and_code()
    {
        const string md = """
            ---
            author: ops
            ---
            # Incident Runbook

            Call the on-call engineer **first**.

            ## Steps
            - Page the owner
            - Open a bridge

            | Severity | Target |
            |---|---|
            | Sev1 | 30 min |

            ```
            kubectl rollout undo
            ```
            """;
        var doc = DocumentExtractor.Extract(Encoding.UTF8.GetBytes(md), "runbook.md");
        Assert.Equal("Incident Runbook", doc.Title);
        Assert.Equal(
            [
                (BlockKind.Heading, "Incident Runbook"), (BlockKind.Paragraph, "Call the on-call engineer first."), (BlockKind.Heading, "Steps"),
                (BlockKind.ListItem, "Page the owner"), (BlockKind.ListItem, "Open a bridge"), (BlockKind.TableRow, "Severity: Sev1; Target: 30 min"),
                (BlockKind.Code, "kubectl rollout undo"),
            ],
            doc.Blocks.Select(b => (b.Kind, b.Text)));
    }

    [Fact]
    public void Gb18030_text_is_decoded_and_utf8_bom_stripped()
    {
        Encoding.RegisterProvider(CodePagesEncodingProvider.Instance);
        var gb = Encoding.GetEncoding("GB18030").GetBytes("报销制度\n\n差旅费用须在三十天内报销。");
        var doc = DocumentExtractor.Extract(gb, "notes.txt");
        Assert.Equal("报销制度", doc.Title);
        Assert.Equal("差旅费用须在三十天内报销。", doc.Blocks[1].Text);
        var bom = DocumentExtractor.Extract([0xEF, 0xBB, 0xBF, .. "Hello\n\nWorld"u8.ToArray()], "bom.txt");
        Assert.Equal("Hello", bom.Title);
    }

    [Fact]
    public void Broken_and_unsupported_files_are_refused_with_their_name()
    {
        var broken = Assert.Throws<DocumentFormatException>(() => DocumentExtractor.Extract("not a pdf"u8.ToArray(), "report.pdf"));
        Assert.Contains("report.pdf", broken.Message, StringComparison.Ordinal);
        Assert.Contains("PDF", broken.Message, StringComparison.Ordinal);
        var unknown = Assert.Throws<DocumentFormatException>(() => DocumentExtractor.Extract([1, 2, 3], "image.png"));
        Assert.Contains("unsupported file type '.png'", unknown.Message, StringComparison.Ordinal);
        Assert.Throws<DocumentFormatException>(() => DocumentExtractor.Extract("a,\"b\n"u8.ToArray(), "x.csv"));
    }
}
