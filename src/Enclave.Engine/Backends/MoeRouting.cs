namespace Enclave.Engine.Backends;

/// <summary>How router logits become expert scores.</summary>
public enum MoeScoring
{
    /// <summary>softmax over all experts (DeepSeek-V2).</summary>
    Softmax,

    /// <summary>independent sigmoid per expert (DeepSeek-V3).</summary>
    Sigmoid,
}

/// <summary>How a group of experts is ranked when only TopKGroups of Groups may be chosen from.</summary>
public enum MoeGroupScore
{
    /// <summary>the group's best expert score (V2's group_limited_greedy).</summary>
    Max,

    /// <summary>the sum of the group's two best scores (V3's noaux_tc).</summary>
    TopTwoSum,
}

/// <summary>
/// DeepSeekMoE routing. Selection uses score + correction bias (when the layer has one) restricted to the best
/// <see cref="TopKGroups"/> groups (experts of other groups can never be chosen, as in DeepSeek's inference code); the
/// weights are the unbiased scores of the chosen experts, optionally renormalised to sum to one, times
/// <see cref="ScalingFactor"/>.
/// </summary>
public sealed record MoeRouting(
    int Experts,
    int TopK,
    MoeScoring Scoring,
    int Groups,
    int TopKGroups,
    MoeGroupScore GroupScore,
    bool NormalizeTopK,
    float ScalingFactor);
