using Enclave.Engine.Tokenization;

namespace Enclave.Engine.Tests.Tokenization;

/// <summary>Supplementary characters must be classified by code point, not as two surrogates.</summary>
public sealed class UnicodeRegexTests
{
    private static List<(int, int)> Matches(string pattern, string text)
    {
        var list = new List<(int, int)>();
        new UnicodeRegex(pattern, "test").Matches(text, list);
        return list;
    }

    [Fact]
    public void Supplementary_letters_join_a_letter_run()
    {
        // U+1D518 MATHEMATICAL FRAKTUR CAPITAL U is a letter outside the BMP.
        Assert.Equal([(0, 4)], Matches(@"\p{L}+", "a\U0001D518b"));
    }

    [Fact]
    public void Supplementary_digits_count_as_one_digit_each()
    {
        // U+1D7CF..U+1D7D2 are mathematical bold digits 1..4 (two UTF-16 units each).
        Assert.Equal([(0, 6), (6, 8)], Matches(@"\p{N}{1,3}", "\U0001D7CF\U0001D7D0\U0001D7D1\U0001D7D2"));
    }

    [Fact]
    public void Emoji_are_symbols_and_cjk_extension_b_is_not_in_literal_cjk_ranges()
    {
        Assert.Equal([(1, 3)], Matches(@"\p{S}+", "a\U0001F600b"));
        Assert.Equal([(0, 4)], Matches(@"\p{Lo}+", "\U00020000\U00020001"));
        Assert.Empty(Matches("[\u4e00-\u9fa5\u3040-\u309f\u30a0-\u30ff]+", "\U00020000"));
    }

    [Fact]
    public void Llama3_pattern_keeps_a_supplementary_letter_inside_its_word()
    {
        const string pattern = @"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
        Assert.Equal([(0, 4), (4, 7)], Matches(pattern, "x\U0001D518y \U0001F600"));
    }

    [Fact]
    public void Lone_surrogates_do_not_break_matching()
    {
        Assert.Equal([(0, 1), (2, 3)], Matches(@"\p{L}+", "a\uD800b"));
    }
}
