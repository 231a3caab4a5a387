using Enclave.Engine.Tokenization;
using Enclave.Knowledge.Chunking;
using Enclave.Knowledge.Cleaning;
using Enclave.Knowledge.Extraction;
using Enclave.Knowledge.Tests.Support;

namespace Enclave.Knowledge.Tests;

public sealed class CleaningAndChunkingTests
{
    [Fact]
    public void Normalisation_folds_full_width_latin_and_ligatures_but_keeps_chinese_punctuation()
    {
        Assert.Equal("ABC 123 file", TextCleaner.Normalize("ＡＢＣ\u3000１２３ \uFB01le"));
        Assert.Equal("你好，世界！这是“测试”。", TextCleaner.Normalize("你好，世界！这是“测试”。"));
        Assert.Equal("数据安全", TextCleaner.Normalize("数 据 安\u200B全"));
        Assert.Equal("a b\n\nc", TextCleaner.Normalize("a \t  b\r\n\n\n\n c"));
        Assert.Equal("English words stay apart", TextCleaner.Normalize("English  words stay\u00A0apart"));
    }

    [Fact]
    public void Headers_and_footers_repeated_across_pages_are_removed_but_content_is_kept()
    {
        var doc = new ExtractedDocument();
        for (var p = 1; p <= 4; p++)
        {
            doc.Blocks.Add(new TextBlock(BlockKind.Paragraph, "ACME Corp Confidential", p));
            doc.Blocks.Add(new TextBlock(BlockKind.Paragraph, $"Body text of page {p} that differs per page: {new string('x', p)}", p));
            doc.Blocks.Add(new TextBlock(BlockKind.Paragraph, $"Page {p} of 4", p));
        }

        doc.Blocks.Add(new TextBlock(BlockKind.Paragraph, "Only twice", 1));
        doc.Blocks.Add(new TextBlock(BlockKind.Paragraph, "Only twice", 2));
        Assert.Equal(8, BoilerplateFilter.Apply(doc));
        Assert.Equal(6, doc.Blocks.Count);
        Assert.DoesNotContain(doc.Blocks, b => b.Text.StartsWith("Page ", StringComparison.Ordinal) || b.Text.Contains("Confidential", StringComparison.Ordinal));
    }

    [Fact]
    public void Gateway_detector_masks_personal_data_and_reports_types()
    {
        var scrubber = new GatewayPiiScrubber();
        var r = scrubber.Scrub("联系人张三，手机 13800138000，邮箱 zhang.san@example.cn。", mask: true);
        Assert.Equal("联系人张三，手机 138****8000，邮箱 z***@example.cn。", r.Text);
        Assert.Equal(["email", "mobile"], r.FoundTypes);
        var kept = scrubber.Scrub("Order 20231101000123 shipped.", mask: true);
        Assert.Empty(kept.FoundTypes);
    }

    [Fact]
    public void Sentences_split_on_chinese_and_english_ends_but_not_inside_numbers()
    {
        var text = "系统于3.5版本上线。是否需要审批？需要！见附件；谢谢……Version 2.1 shipped. Is it live? Yes! \"Done.\" e.g.x stays";
        var parts = SentenceSplitter.Split(text).Select(s => text.Substring(s.Start, s.Length)).ToList();
        Assert.Equal(
            ["系统于3.5版本上线。", "是否需要审批？", "需要！", "见附件；", "谢谢……", "Version 2.1 shipped.", "Is it live?", "Yes!", "\"Done.\"", "e.g.x stays"],
            parts);
    }

    [Fact]
    public void Chunks_respect_the_budget_follow_headings_overlap_and_point_into_the_text()
    {
        var blocks = new List<TextBlock> { new(BlockKind.Heading, "Security", Level: 1), new(BlockKind.Heading, "Passwords", Level: 2) };
        for (var i = 0; i < 12; i++)
        {
            blocks.Add(new TextBlock(BlockKind.Paragraph, $"Rule {i}: passwords rotate every ninety days and never repeat.", Page: 1 + (i / 6)));
        }

        blocks.Add(new TextBlock(BlockKind.Heading, "Backups", Level: 2));
        blocks.Add(new TextBlock(BlockKind.ListItem, "Nightly full backup at 02:00."));
        blocks.Add(new TextBlock(BlockKind.ListItem, "Nightly full backup at 02:00."));
        var counter = EstimateTokenCounter.Instance;
        var result = new Chunker(counter, maxTokens: 40, overlapTokens: 20).Chunk(blocks);
        Assert.All(result.Chunks, c => Assert.True(c.Tokens <= 40, $"{c.Tokens} tokens: {c.Text}"));
        Assert.All(result.Chunks, c => Assert.Equal(c.Text, result.Text[c.CharStart..c.CharEnd]));
        var passwords = result.Chunks.Where(c => c.HeadingPath == "Security > Passwords").ToList();
        Assert.True(passwords.Count >= 4);
        Assert.Equal(1, passwords[0].Page);
        Assert.Equal(2, passwords[^1].Page);
        // Overlap: each continuation starts with the last rule of the previous chunk.
        for (var i = 1; i < passwords.Count; i++)
        {
            var lastRule = passwords[i - 1].Text.Split("\n\n")[^1];
            Assert.StartsWith(lastRule, passwords[i].Text, StringComparison.Ordinal);
        }

        var backups = Assert.Single(result.Chunks, c => c.HeadingPath == "Security > Backups");
        Assert.Equal("Nightly full backup at 02:00.\n\nNightly full backup at 02:00.", backups.Text);
        Assert.Equal(0, result.DuplicatesRemoved);
    }

    [Fact]
    public void A_long_chinese_paragraph_is_split_at_sentence_ends_and_duplicate_chunks_dropped()
    {
        var paragraph = string.Concat(Enumerable.Range(0, 10).Select(i => $"第{i}条规定员工必须遵守信息安全制度。"));
        var blocks = new List<TextBlock>
        {
            new(BlockKind.Heading, "制度", Level: 1),
            new(BlockKind.Paragraph, paragraph),
            new(BlockKind.Heading, "附录", Level: 1),
            new(BlockKind.Paragraph, "重复的段落。"),
            new(BlockKind.Heading, "附录二", Level: 1),
            new(BlockKind.Paragraph, "重复的段落。"),
        };
        var result = new Chunker(EstimateTokenCounter.Instance, maxTokens: 40, overlapTokens: 0).Chunk(blocks);
        var rules = result.Chunks.Where(c => c.HeadingPath == "制度").ToList();
        Assert.True(rules.Count > 1);
        Assert.All(rules, c => Assert.EndsWith("。", c.Text, StringComparison.Ordinal));
        Assert.Equal(paragraph, string.Concat(rules.Select(c => c.Text)));
        Assert.Equal(1, result.DuplicatesRemoved);
        Assert.Single(result.Chunks, c => c.Text == "重复的段落。");
    }

    [Fact]
    public void Budget_is_counted_with_the_models_tokenizer_when_there_is_one()
    {
        var tokenizer = HfTokenizer.FromDirectory(Path.Combine(RepoFiles.Root, "tests", "fixtures", "models", "tiny-qwen2-r1"));
        var counter = new TokenizerTokenCounter(tokenizer);
        var text = "Enclave keeps enterprise documents inside the network. 数据不出内网。";
        Assert.Equal(tokenizer.Encode(text).Length, counter.Count(text));
        var blocks = Enumerable.Range(0, 20).Select(i => new TextBlock(BlockKind.Paragraph, $"Paragraph {i}: {text}")).ToList();
        var result = new Chunker(counter, maxTokens: 64, overlapTokens: 0).Chunk(blocks);
        Assert.All(result.Chunks, c => Assert.True(tokenizer.Encode(c.Text).Length <= 64));
        Assert.True(result.Chunks.Count > 3);
    }

    [Fact]
    public void Estimate_counts_cjk_characters_and_latin_word_pieces()
    {
        Assert.Equal(4, EstimateTokenCounter.Instance.Count("数据安全"));
        Assert.Equal(4, EstimateTokenCounter.Instance.Count("internationalization"[..16]));
        Assert.Equal(6, EstimateTokenCounter.Instance.Count("Hello, 世界."));
    }
}
