using System.Numerics.Tensors;

namespace Enclave.Engine.Backends;

/// <summary>
/// DeepSeekMoE routing on the host, shared by every backend (a device backend downloads the router logits first):
/// vectorised scoring (sigmoid or softmax) and selection-bias add per token, then a partial selection of the best
/// groups and experts. Ties go to the lower index.
/// </summary>
public static class MoeRouter
{
    /// <param name="logits">Router logits [tokens, experts].</param>
    /// <param name="bias">Selection bias [experts] (e_score_correction_bias), or empty.</param>
    /// <param name="expertIds">Chosen experts [tokens * TopK], token-major.</param>
    /// <param name="weights">Their weights [tokens * TopK].</param>
    public static void Route(ReadOnlySpan<float> logits, ReadOnlySpan<float> bias, MoeRouting routing, Span<int> expertIds, Span<float> weights)
    {
        int experts = routing.Experts, topK = routing.TopK;
        var tokens = experts == 0 ? 0 : logits.Length / experts;
        if (experts <= 0 || logits.Length != tokens * experts || expertIds.Length < tokens * topK || weights.Length < tokens * topK
            || routing.Groups <= 0 || experts % routing.Groups != 0 || topK > experts || routing.TopKGroups > routing.Groups
            || (!bias.IsEmpty && bias.Length != experts))
        {
            throw new ArgumentException($"MoeRoute: {logits.Length} logits and {bias.Length} bias values do not fit {routing}");
        }

        var perGroup = experts / routing.Groups;
        Span<float> scores = stackalloc float[experts];
        Span<float> choice = stackalloc float[experts];
        Span<float> groupScores = stackalloc float[routing.Groups];
        Span<bool> keep = stackalloc bool[routing.Groups];
        Span<int> chosen = stackalloc int[topK];
        Span<bool> taken = stackalloc bool[experts];
        for (var t = 0; t < tokens; t++)
        {
            var row = logits.Slice(t * experts, experts);
            if (routing.Scoring == MoeScoring.Sigmoid)
            {
                TensorPrimitives.Sigmoid(row, scores);
            }
            else
            {
                TensorPrimitives.SoftMax(row, scores);
            }

            if (bias.IsEmpty)
            {
                scores.CopyTo(choice);
            }
            else
            {
                TensorPrimitives.Add(scores, bias, choice);
            }

            if (routing.Groups > 1)
            {
                for (var g = 0; g < routing.Groups; g++)
                {
                    var group = choice.Slice(g * perGroup, perGroup);
                    var best = TensorPrimitives.IndexOfMax(group);
                    var second = float.NegativeInfinity;
                    for (var e = 0; e < perGroup; e++)
                    {
                        if (e != best && group[e] > second)
                        {
                            second = group[e];
                        }
                    }

                    groupScores[g] = routing.GroupScore == MoeGroupScore.Max || perGroup < 2 ? group[best] : group[best] + second;
                }

                keep.Clear();
                for (var k = 0; k < routing.TopKGroups; k++)
                {
                    var g = ArgMaxExcluding(groupScores, keep);
                    keep[g] = true;
                }

                for (var g = 0; g < routing.Groups; g++)
                {
                    if (!keep[g])
                    {
                        // Experts of dropped groups can never be chosen (-inf, as DeepSeek's own inference and
                        // transformers 5 do): a kept expert with a negative biased score still beats them.
                        choice.Slice(g * perGroup, perGroup).Fill(float.NegativeInfinity);
                    }
                }
            }

            taken.Clear();
            var total = 0f;
            for (var k = 0; k < topK; k++)
            {
                chosen[k] = ArgMaxExcluding(choice, taken);
                taken[chosen[k]] = true;
                total += scores[chosen[k]];
            }

            var denominator = total + 1e-20f;
            for (var k = 0; k < topK; k++)
            {
                var w = scores[chosen[k]];
                if (routing.NormalizeTopK)
                {
                    w /= denominator;
                }

                expertIds[(t * topK) + k] = chosen[k];
                weights[(t * topK) + k] = w * routing.ScalingFactor;
            }
        }
    }

    /// <summary>
    /// Groups a step's picks by expert, stably (a counting sort): expert e owns slots offsets[e] .. offsets[e + 1] - 1,
    /// and slot s holds the token (pick index / topK) and the weight of the s-th pick in expert order, picks of one
    /// expert in pick order. expertIds, weights: [picks], token-major; offsets: [experts + 1]; rows, rowWeights: [picks].
    /// </summary>
    public static void GroupByExpert(ReadOnlySpan<int> expertIds, ReadOnlySpan<float> weights, int topK, Span<int> offsets, Span<int> rows, Span<float> rowWeights)
    {
        var experts = offsets.Length - 1;
        offsets.Clear();
        foreach (var e in expertIds)
        {
            offsets[e + 1]++;
        }

        for (var e = 0; e < experts; e++)
        {
            offsets[e + 1] += offsets[e];
        }

        // The next free slot of each expert (a few KB at most: DeepSeek layers have up to 256 experts).
        Span<int> next = experts <= 1024 ? stackalloc int[experts] : new int[experts];
        offsets[..experts].CopyTo(next);
        for (var i = 0; i < expertIds.Length; i++)
        {
            var slot = next[expertIds[i]]++;
            rows[slot] = i / topK;
            rowWeights[slot] = weights[i];
        }
    }

    private static int ArgMaxExcluding(ReadOnlySpan<float> values, ReadOnlySpan<bool> excluded)
    {
        var best = -1;
        for (var i = 0; i < values.Length; i++)
        {
            if (!excluded[i] && (best < 0 || values[i] > values[best]))
            {
                best = i;
            }
        }

        return best;
    }
}
