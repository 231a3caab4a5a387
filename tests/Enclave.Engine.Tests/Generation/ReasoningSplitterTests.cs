using Enclave.Engine.Generation;

namespace Enclave.Engine.Tests.Generation;

public sealed class ReasoningSplitterTests
{
    private const int Start = 10;
    private const int End = 11;

    [Fact]
    public void TextBeforeTheClosingTagIsReasoningAndAfterItIsTheAnswer()
    {
        var splitter = new ReasoningSplitter(new ReasoningTokens(Start, End), startsInReasoning: true);
        Assert.Equal(("Let me think.", null), splitter.Route(5, "Let me think."));
        Assert.Equal((null, null), splitter.Route(End, string.Empty));
        Assert.Equal((null, "42"), splitter.Route(6, "42"));
        Assert.Equal((null, null), splitter.Route(7, string.Empty)); // a held-back partial character prints nothing
        Assert.Equal((null, null), splitter.Route(Start, string.Empty));
        Assert.Equal(("again", null), splitter.Route(8, "again"));
    }

    [Fact]
    public void WithoutAnOpenThinkEverythingIsTheAnswerUntilAThinkTag()
    {
        var splitter = new ReasoningSplitter(Start, End, startsInReasoning: false);
        Assert.Equal((null, "Hi"), splitter.Route(5, "Hi"));
        splitter.Route(Start, string.Empty);
        Assert.Equal(("hmm", null), splitter.Route(6, "hmm"));
    }

    [Theory]
    [InlineData("<｜User｜>hi<｜Assistant｜><think>\n", true)]
    [InlineData("<｜User｜>hi<｜Assistant｜><think>\n\n</think>\n\n", false)]
    [InlineData("<|im_start|>assistant\n", false)]
    public void APromptEndingInsideThinkOpensReasoning(string prompt, bool opens) =>
        Assert.Equal(opens, ReasoningSplitter.PromptOpensThink(prompt));
}
