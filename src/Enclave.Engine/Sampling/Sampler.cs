namespace Enclave.Engine.Sampling;

/// <summary>A sampled token with its log-probability under the model's raw distribution and the top alternatives.</summary>
public readonly record struct SampledToken(int TokenId, float Logprob, TokenLogprob[]? TopLogprobs);

public readonly record struct TokenLogprob(int TokenId, float Logprob);

/// <summary>
/// Turns one row of logits into a token on the host: penalties, temperature, top-k / top-p / min-p, then a draw
/// from the request's own random stream (same seed, same tokens). Reuses its buffers: no allocation per token
/// unless log-probabilities are asked for.
/// </summary>
public sealed class Sampler
{
    private float[] probabilities = [];
    private int[] order = [];
    private float[] sortKeys = [];
    private float[] rawLogits = [];

    // Per-token scratch for the penalties: a stamp per vocabulary entry marks "seen at this call" without clearing.
    private int[] seenStamp = [];
    private int[] outputCounts = [];
    private readonly List<int> touched = [];
    private int stamp;

    /// <param name="logits">[vocab], modified in place.</param>
    /// <param name="history">Prompt and generated tokens so far (repetition penalty looks at both).</param>
    /// <param name="promptLength">How many leading entries of history are prompt (frequency/presence look only at the output).</param>
    /// <param name="suppress">Token ids that must not be produced at this step (e.g. EOS before min_tokens).</param>
    public SampledToken Sample(Span<float> logits, SamplingParams p, ReadOnlySpan<int> history, int promptLength, Random random, ReadOnlySpan<int> suppress = default)
    {
        TokenLogprob[]? top = null;
        var logNormaliser = 0f;
        if (p.Logprobs is not null)
        {
            // Reported log-probabilities are those of the raw model output, as vLLM reports them by default.
            logNormaliser = LogSumExp(logits);
            top = TopLogprobs(logits, p.Logprobs.Value, logNormaliser);
        }

        // The chosen token's log-probability is that of the raw logits, which the penalties below change in place:
        // keep a copy in a reused buffer (only when log-probabilities were asked for).
        var hasRaw = p.Logprobs is not null;
        if (hasRaw)
        {
            if (rawLogits.Length < logits.Length)
            {
                rawLogits = new float[logits.Length];
            }

            logits.CopyTo(rawLogits);
        }

        ApplyPenalties(logits, p, history, promptLength);
        foreach (var id in suppress)
        {
            if ((uint)id < (uint)logits.Length)
            {
                logits[id] = float.NegativeInfinity;
            }
        }

        var token = SampleRow(logits, RowSampling.For(p, random));
        var logprob = hasRaw ? rawLogits[token] - logNormaliser : 0f;
        return new SampledToken(token, logprob, top);
    }

    /// <summary>
    /// Whether <see cref="Sample"/> reduces to a bare argmax of the raw logits for these parameters: greedy, no
    /// log-probabilities, no penalty that <see cref="ApplyPenalties"/> would apply, and nothing to suppress. Callers
    /// that can take the argmax elsewhere (on the device) ask here, so the two stay in step.
    /// </summary>
    public static bool ReducesToArgMax(SamplingParams p, bool suppressesTokens) => p.IsGreedy && ReducesToRowSampling(p, suppressesTokens);

    /// <summary>
    /// Whether <see cref="Sample"/> reduces to <see cref="SampleRow"/> of the raw logits with
    /// <see cref="RowSampling.For"/>: no log-probabilities, no penalty that <see cref="ApplyPenalties"/> would apply, and
    /// nothing to suppress; greedy or not. Callers that can sample elsewhere (<see cref="Backends.IBackend.Sample"/>)
    /// ask here, so the two stay in step.
    /// </summary>
    public static bool ReducesToRowSampling(SamplingParams p, bool suppressesTokens) =>
        p.Logprobs is null && p.RepetitionPenalty == 1.0 && p.FrequencyPenalty == 0 && p.PresencePenalty == 0 && !suppressesTokens;

    /// <summary>
    /// One token from one row of logits: the argmax for a greedy row, else the draw <paramref name="row"/>.U through
    /// softmax at the temperature, top-k, min-p and top-p. The host definition of <see cref="Backends.IBackend.Sample"/>.
    /// logits: [vocab], finite or -inf (a NaN is never chosen).
    /// </summary>
    public int SampleRow(ReadOnlySpan<float> logits, in RowSampling row) =>
        row.IsGreedy ? ArgMax(logits) : Draw(logits, row);

    public static int ArgMax(ReadOnlySpan<float> values)
    {
        var best = 0;
        var bestValue = float.NegativeInfinity;
        for (var i = 0; i < values.Length; i++)
        {
            if (values[i] > bestValue)
            {
                bestValue = values[i];
                best = i;
            }
        }

        return best;
    }

    private void ApplyPenalties(Span<float> logits, SamplingParams p, ReadOnlySpan<int> history, int promptLength)
    {
        var repetition = p.RepetitionPenalty != 1.0;
        var additive = p.FrequencyPenalty != 0 || p.PresencePenalty != 0;
        if (!repetition && !additive)
        {
            return;
        }

        if (seenStamp.Length < logits.Length)
        {
            seenStamp = new int[logits.Length];
            outputCounts = new int[logits.Length];
            stamp = 0;
        }

        if (repetition)
        {
            var penalty = (float)p.RepetitionPenalty;
            var mark = NextStamp();
            foreach (var id in history)
            {
                if ((uint)id < (uint)logits.Length && seenStamp[id] != mark)
                {
                    seenStamp[id] = mark;
                    logits[id] = logits[id] > 0 ? logits[id] / penalty : logits[id] * penalty;
                }
            }
        }

        if (additive)
        {
            touched.Clear();
            foreach (var id in history[promptLength..])
            {
                if ((uint)id < (uint)logits.Length && outputCounts[id]++ == 0)
                {
                    touched.Add(id);
                }
            }

            foreach (var id in touched)
            {
                logits[id] -= (float)((p.FrequencyPenalty * outputCounts[id]) + p.PresencePenalty);
                outputCounts[id] = 0;
            }
        }
    }

    private int NextStamp()
    {
        if (++stamp == int.MaxValue)
        {
            Array.Clear(seenStamp);
            stamp = 1;
        }

        return stamp;
    }

    private int Draw(ReadOnlySpan<float> logits, in RowSampling p)
    {
        var n = logits.Length;
        if (probabilities.Length < n)
        {
            probabilities = new float[n];
            order = new int[n];
        }

        // Softmax at the temperature, in float64 for the normaliser.
        var inverseTemperature = (float)(1.0 / p.Temperature);
        // NaN is skipped (probability 0), and a row with nothing above -inf gives 0 as the argmax does.
        var max = float.NegativeInfinity;
        foreach (var v in logits)
        {
            if (v > max)
            {
                max = v;
            }
        }

        if (!(max > float.NegativeInfinity))
        {
            return 0;
        }

        double sum = 0;
        for (var i = 0; i < n; i++)
        {
            var e = MathF.Exp((logits[i] - max) * inverseTemperature);
            e = float.IsNaN(e) ? 0 : e;
            probabilities[i] = e;
            sum += e;
        }

        if (!(sum > 0))
        {
            // Only a +inf logit gets here ((inf - inf) is NaN, every other term 0), or a temperature so small that
            // 1 / T overflows: the limit of the draw is the argmax.
            return ArgMax(logits);
        }

        var probs = probabilities.AsSpan(0, n);
        for (var i = 0; i < n; i++)
        {
            probs[i] = (float)(probs[i] / sum);
        }

        // Candidates sorted by probability, most likely first. Only tokens that could survive the filters are sorted.
        var count = SortCandidates(probs, p);
        var candidates = order.AsSpan(0, count);
        if (p.TopK > 0 && p.TopK < count)
        {
            count = p.TopK;
            candidates = candidates[..count];
        }

        if (p.MinP > 0)
        {
            var threshold = probs[candidates[0]] * p.MinP;
            var keep = 1;
            while (keep < count && probs[candidates[keep]] >= threshold)
            {
                keep++;
            }

            count = keep;
            candidates = candidates[..count];
        }

        if (p.TopP < 1.0)
        {
            double cumulative = 0;
            var keep = 0;
            while (keep < count)
            {
                cumulative += probs[candidates[keep]];
                keep++;
                if (cumulative >= p.TopP)
                {
                    break;
                }
            }

            count = keep;
            candidates = candidates[..count];
        }

        double total = 0;
        foreach (var id in candidates)
        {
            total += probs[id];
        }

        // The first token whose cumulative probability reaches the draw; one of probability 0 (masked) never is, which
        // matters only for a draw of exactly 0.
        var r = p.U * total;
        foreach (var id in candidates)
        {
            r -= probs[id];
            if (r <= 0 && probs[id] > 0)
            {
                return id;
            }
        }

        return candidates[^1];
    }

    /// <summary>
    /// Fills <c>order</c> with token ids by descending probability and returns how many are meaningful. Without any
    /// filter every token is a candidate and no sort is needed. With filters, only tokens above a probability floor
    /// are sorted, the floor being lowered until the kept set provably contains everything the filters could keep.
    /// </summary>
    private int SortCandidates(Span<float> probs, in RowSampling p)
    {
        var n = probs.Length;
        if (!p.Filtered)
        {
            for (var i = 0; i < n; i++)
            {
                order[i] = i;
            }

            return n;
        }

        var maxProbability = 0f;
        foreach (var v in probs)
        {
            maxProbability = Math.Max(maxProbability, v);
        }

        var floor = 1e-4f;
        while (true)
        {
            var count = 0;
            double mass = 0;
            for (var i = 0; i < n; i++)
            {
                if (probs[i] >= floor)
                {
                    order[count++] = i;
                    mass += probs[i];
                }
            }

            var enough = (p.TopP >= 1.0 || mass >= p.TopP)
                         && (p.TopK <= 0 || count >= Math.Min(p.TopK, n))
                         && (p.MinP <= 0 || floor <= maxProbability * p.MinP)
                         && (p.TopP < 1.0 || p.TopK > 0 || p.MinP > 0);
            if (enough || floor <= 0)
            {
                if (sortKeys.Length < count)
                {
                    sortKeys = new float[probs.Length];
                }

                for (var i = 0; i < count; i++)
                {
                    sortKeys[i] = -probs[order[i]];
                }

                Array.Sort(sortKeys, order, 0, count);
                return count;
            }

            floor = floor < 1e-12f ? 0 : floor / 16;
        }
    }

    private static float LogSumExp(ReadOnlySpan<float> logits)
    {
        var max = float.NegativeInfinity;
        foreach (var v in logits)
        {
            max = Math.Max(max, v);
        }

        double sum = 0;
        foreach (var v in logits)
        {
            sum += Math.Exp(v - max);
        }

        return max + (float)Math.Log(sum);
    }

    private static TokenLogprob[] TopLogprobs(ReadOnlySpan<float> logits, int k, float logNormaliser)
    {
        var result = new TokenLogprob[k];
        var filled = 0;
        for (var i = 0; i < logits.Length; i++)
        {
            var v = logits[i] - logNormaliser;
            if (filled < k)
            {
                result[filled++] = new TokenLogprob(i, v);
                for (var j = filled - 1; j > 0 && result[j].Logprob > result[j - 1].Logprob; j--)
                {
                    (result[j], result[j - 1]) = (result[j - 1], result[j]);
                }
            }
            else if (k > 0 && v > result[k - 1].Logprob)
            {
                result[k - 1] = new TokenLogprob(i, v);
                for (var j = k - 1; j > 0 && result[j].Logprob > result[j - 1].Logprob; j--)
                {
                    (result[j], result[j - 1]) = (result[j - 1], result[j]);
                }
            }
        }

        return result;
    }
}
