using System.Numerics.Tensors;

namespace Enclave.Engine.Backends.Cpu;

/// <summary>
/// DeepSeekMoE routing on the host: vectorised scoring (sigmoid or softmax) and bias add per token, then a partial
/// selection of the best groups and experts. Ties go to the lower index.
/// </summary>
internal static unsafe class CpuMoeRoute
{
    public static void Run(CpuTensor logits, CpuTensor? bias, MoeRouting routing, Span<int> expertIds, Span<float> weights)
    {
        logits.RequireDType(DType.F32);
        bias?.RequireDType(DType.F32);
        int experts = routing.Experts, topK = routing.TopK, tokens = (int)logits.Rows;
        if (logits.Columns != experts || expertIds.Length < tokens * topK || weights.Length < tokens * topK
            || routing.Groups <= 0 || experts % routing.Groups != 0 || topK > experts || (bias is not null && bias.ElementCount != experts))
        {
            throw new ArgumentException($"MoeRoute: logits {logits} do not fit {routing}");
        }

        var perGroup = experts / routing.Groups;
        Span<float> scores = stackalloc float[experts];
        Span<float> choice = stackalloc float[experts];
        Span<float> groupScores = stackalloc float[routing.Groups];
        Span<bool> keep = stackalloc bool[routing.Groups];
        Span<int> chosen = stackalloc int[topK];
        var biasSpan = bias is null ? default : new ReadOnlySpan<float>(bias.F32Pointer, experts);
        for (var t = 0; t < tokens; t++)
        {
            var row = new ReadOnlySpan<float>(logits.F32Pointer + ((nint)t * experts), experts);
            if (routing.Scoring == MoeScoring.Sigmoid)
            {
                TensorPrimitives.Sigmoid(row, scores);
            }
            else
            {
                TensorPrimitives.SoftMax(row, scores);
            }

            if (bias is null)
            {
                scores.CopyTo(choice);
            }
            else
            {
                TensorPrimitives.Add(scores, biasSpan, choice);
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

            var taken = new bool[experts];
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
