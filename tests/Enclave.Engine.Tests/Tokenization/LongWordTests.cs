using System.Text;
using Enclave.Engine.Tokenization;

namespace Enclave.Engine.Tests.Tokenization;

/// <summary>
/// LlamaTokenizer-class inputs reach BPE as one long word; cutting it at safe ▁ boundaries must not change ids.
/// </summary>
public sealed class LongWordTests
{
    private static string LongText()
    {
        var sb = new StringBuilder();
        foreach (var c in TokenizerFixtures.LoadReference("llama2").Encode)
            sb.Append(c.Text).Append("  ").Append(c.Text.ToUpperInvariant()).Append('\n');
        return sb.ToString();
    }

    [Fact]
    public void Piecewise_encoding_of_a_long_word_equals_whole_word_encoding()
    {
        var dir = TokenizerFixtures.TokenizerDirectory("llama2");
        var piecewise = HfTokenizer.FromDirectory(dir);
        var whole = HfTokenizer.FromDirectory(dir);
        whole.Model.SplitLongWords = false;
        Assert.True(piecewise.Model.MetaspaceBoundariesSafe);

        var text = LongText();
        Assert.True(text.Length > 2000);
        Assert.Equal(whole.Encode(text, addSpecialTokens: true), piecewise.Encode(text, addSpecialTokens: true));
    }

    [Fact]
    public void Boundaries_are_not_used_when_merges_can_cross_them()
    {
        // DeepSeek's byte-level vocabulary has no ▁, so under the Llama rebuild ▁ is dropped and merges join
        // across it ("leading spaces" -> "lead", "ings", "paces"): splitting there would change ids.
        var deepseek = HfTokenizer.FromDirectory(TokenizerFixtures.TokenizerDirectory("deepseek_v3"));
        Assert.False(deepseek.Model.MetaspaceBoundariesSafe);
    }
}
