using System.Text;
using Enclave.Engine.Tokenization;

namespace Enclave.Engine.Tests.Tokenization;

/// <summary>
/// The hand-written matchers must cut text exactly where the regex (with code-point classification) does.
/// </summary>
public sealed class FastSplitPatternTests
{
    // A pool biased toward the characters the pattern distinguishes: contractions, letters of several scripts,
    // digits (including supplementary ones), whitespace kinds, newlines, punctuation, symbols and emoji.
    private static readonly string[] Pool =
    [
        "'", "s", "S", "t", "re", "RE", "ve", "m", "ll", "LL", "d", "D", "\u017F", "a", "Z", "é", "e\u0301", "中", "ア", "한",
        "ب", "Ω", "\U0001D518", "\U00020000", "0", "7", "٣", "²", "\U0001D7CF", " ", "  ", "\t", "\u00A0", "\u3000", "\r", "\n",
        "\r\n", ".", ",", "!", "?", "-", "_", "(", "{", "<|", "|>", "😀", "👍🏽", "\u200D", "\uFE0F", "\uD800", "$", "¥", "—",
    ];

    public static TheoryData<string> Patterns => [FastSplitPattern.Llama3Pattern, FastSplitPattern.QwenPattern];

    [Theory]
    [MemberData(nameof(Patterns))]
    public void Fast_matcher_agrees_with_the_regex_on_random_text(string pattern)
    {
        var fast = new UnicodeRegex(pattern, "test");
        var slow = new UnicodeRegex(pattern, "test", allowFastPath: false);
        Assert.True(fast.UsesFastPath);
        Assert.False(slow.UsesFastPath);

        var rng = new Random(20261123);
        var a = new List<(int, int)>();
        var b = new List<(int, int)>();
        var sb = new StringBuilder();
        for (int iteration = 0; iteration < 20000; iteration++)
        {
            sb.Clear();
            int parts = rng.Next(1, 12);
            for (int i = 0; i < parts; i++)
                sb.Append(Pool[rng.Next(Pool.Length)]);
            var text = sb.ToString();
            a.Clear();
            b.Clear();
            fast.Matches(text, a);
            slow.Matches(text, b);
            if (!a.SequenceEqual(b))
                Assert.Fail($"{TokenizerFixtures.Show(text)}: fast {string.Join(" ", a)} regex {string.Join(" ", b)}");
        }
    }

    [Theory]
    [MemberData(nameof(Patterns))]
    public void Fast_matcher_agrees_with_the_regex_on_the_parity_corpus(string pattern)
    {
        var fast = new UnicodeRegex(pattern, "test");
        var slow = new UnicodeRegex(pattern, "test", allowFastPath: false);
        var reference = TokenizerFixtures.LoadReference("qwen3");
        foreach (var c in reference.Encode)
        {
            var a = new List<(int, int)>();
            var b = new List<(int, int)>();
            fast.Matches(c.Text, a);
            slow.Matches(c.Text, b);
            Assert.Equal(b, a);
        }
    }
}
