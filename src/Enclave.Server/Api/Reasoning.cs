namespace Enclave.Server.Api;

/// <summary>
/// Splits a reasoning model's output into reasoning and answer, following vLLM's deepseek_r1 parser: text before
/// &lt;/think&gt; is reasoning, text after it is content. The R1 chat template opens &lt;think&gt; in the prompt, so
/// output starts inside the reasoning; without a &lt;/think&gt; everything is reasoning. Works on token ids, so it does
/// not matter that the tags are special tokens whose text the detokenizer skips.
/// </summary>
public sealed class ReasoningSplitter(int thinkStartId, int thinkEndId, bool startsInReasoning)
{
    private bool inReasoning = startsInReasoning;

    /// <summary>Routes one chunk's text; the tags themselves produce no text.</summary>
    public (string? Reasoning, string? Content) Route(int tokenId, string text)
    {
        if (tokenId == thinkStartId)
        {
            inReasoning = true;
            return (null, null);
        }

        if (tokenId == thinkEndId)
        {
            inReasoning = false;
            return (null, null);
        }

        if (text.Length == 0)
        {
            return (null, null);
        }

        return inReasoning ? (text, null) : (null, text);
    }

    /// <summary>Whether a rendered prompt leaves the model inside a &lt;think&gt; block.</summary>
    public static bool PromptOpensThink(string renderedPrompt)
    {
        var trimmed = renderedPrompt.AsSpan().TrimEnd();
        var open = trimmed.LastIndexOf("<think>", StringComparison.Ordinal);
        return open >= 0 && trimmed[open..].IndexOf("</think>", StringComparison.Ordinal) < 0 && trimmed.EndsWith("<think>", StringComparison.Ordinal);
    }
}
