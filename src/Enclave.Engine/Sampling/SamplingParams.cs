namespace Enclave.Engine.Sampling;

/// <summary>How one request picks its tokens and when it stops. Names and semantics follow the OpenAI API and vLLM's extensions.</summary>
public sealed record SamplingParams
{
    /// <summary>0 means greedy (argmax).</summary>
    public double Temperature { get; init; } = 1.0;

    public double TopP { get; init; } = 1.0;

    /// <summary>0 or negative disables top-k.</summary>
    public int TopK { get; init; }

    public double MinP { get; init; }

    /// <summary>vLLM/HF semantics: logits of tokens seen in the prompt or output are divided (if positive) or multiplied (if negative) by this.</summary>
    public double RepetitionPenalty { get; init; } = 1.0;

    /// <summary>OpenAI semantics: subtract penalty × count of the token in the output so far.</summary>
    public double FrequencyPenalty { get; init; }

    /// <summary>OpenAI semantics: subtract penalty once if the token appeared in the output so far.</summary>
    public double PresencePenalty { get; init; }

    public long? Seed { get; init; }

    public int MaxTokens { get; init; } = 256;

    /// <summary>End-of-sequence and stop tokens are suppressed until this many tokens were generated.</summary>
    public int MinTokens { get; init; }

    public bool IgnoreEos { get; init; }

    /// <summary>Extra token ids that end generation (the model's EOS ids are added by the engine).</summary>
    public IReadOnlyList<int> StopTokenIds { get; init; } = [];

    /// <summary>Strings that end generation; they are matched across token boundaries and never appear in the output text.</summary>
    public IReadOnlyList<string> Stop { get; init; } = [];

    /// <summary>Number of most likely alternatives to report per token (null: no log-probabilities).</summary>
    public int? Logprobs { get; init; }

    public bool SkipSpecialTokens { get; init; } = true;

    public bool IsGreedy => Temperature <= 0;

    /// <summary>Throws <see cref="ArgumentException"/> naming the first invalid parameter.</summary>
    public void Validate()
    {
        static void Check(bool ok, string name, string rule)
        {
            if (!ok)
            {
                throw new ArgumentException($"{name} {rule}", name);
            }
        }

        Check(double.IsFinite(Temperature) && Temperature is >= 0 and <= 100, "temperature", "must be between 0 and 100");
        Check(double.IsFinite(TopP) && TopP is > 0 and <= 1, "top_p", "must be in (0, 1]");
        Check(TopK >= -1, "top_k", "must be -1 (disabled) or a non-negative integer");
        Check(double.IsFinite(MinP) && MinP is >= 0 and <= 1, "min_p", "must be in [0, 1]");
        Check(double.IsFinite(RepetitionPenalty) && RepetitionPenalty is > 0 and <= 100, "repetition_penalty", "must be in (0, 100]");
        Check(double.IsFinite(FrequencyPenalty) && FrequencyPenalty is >= -2 and <= 2, "frequency_penalty", "must be between -2 and 2");
        Check(double.IsFinite(PresencePenalty) && PresencePenalty is >= -2 and <= 2, "presence_penalty", "must be between -2 and 2");
        Check(MaxTokens >= 1, "max_tokens", "must be at least 1");
        Check(MinTokens >= 0 && MinTokens <= MaxTokens, "min_tokens", "must be between 0 and max_tokens");
        Check(Logprobs is null or (>= 0 and <= 20), "logprobs", "must be between 0 and 20");
        Check(Stop.Count <= 16 && Stop.All(s => !string.IsNullOrEmpty(s)), "stop", "must hold at most 16 non-empty strings");
    }
}
