namespace Enclave.Engine.Generation;

/// <summary>
/// Splits a reasoning model's output into reasoning and answer, following vLLM's deepseek_r1 parser: text before
/// &lt;/think&gt; is reasoning, text after it is content. The R1 chat template opens &lt;think&gt; in the prompt, so
/// output starts inside the reasoning; without a &lt;/think&gt; everything is reasoning. Works on token ids, so it does
/// not matter that the tags are special tokens whose text the detokenizer skips.
/// </summary>
public sealed class ReasoningSplitter(int thinkStartId, int thinkEndId, bool startsInReasoning)
{
    public ReasoningSplitter(ReasoningTokens tokens, bool startsInReasoning)
        : this(tokens.ThinkStartId, tokens.ThinkEndId, startsInReasoning)
    {
    }

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

/// <summary>
/// The ids of &lt;think&gt; and &lt;/think&gt; for a model whose chat template uses them (DeepSeek-R1 and its distills,
/// Qwen3), or null from <see cref="Detect"/> for a model without a reasoning block.
/// </summary>
public sealed record ReasoningTokens(int ThinkStartId, int ThinkEndId)
{
    public static ReasoningTokens? Detect(Tokenization.HfTokenizer tokenizer)
    {
        var template = tokenizer.Config.ChatTemplate;
        return template is not null && template.Contains("<think>", StringComparison.Ordinal)
            && tokenizer.TokenToId("<think>") is { } start && tokenizer.TokenToId("</think>") is { } end
            ? new ReasoningTokens(start, end)
            : null;
    }
}

/// <summary>
/// One step of a chat answer with a reasoning model's thinking kept apart from the answer: at most one of
/// <see cref="Reasoning"/> and <see cref="Content"/> is set; <see cref="Token"/> is the underlying chunk.
/// </summary>
public readonly record struct ChatChunk(string? Reasoning, string? Content, TextChunk Token);
