using Enclave.Engine.Models;

namespace Enclave.Engine.KvCache;

/// <summary>
/// How much device memory the paged KV cache gets, as vLLM decides it: the device may fill to
/// <c>utilization × total</c>; what is in use already (weights, CUDA context, libraries) and the step's activations
/// come off, the rest is KV cache. Written out so start-up can log every term and tests can check the arithmetic.
/// </summary>
public sealed record KvCachePlan(long TotalBytes, long UsedBytes, double Utilization, double Share, long ActivationBytes, long KvBytes, long Tokens, int MaxFullLengthSequences)
{
    /// <summary>Bytes kept for libraries' own workspaces (cuBLAS, NVRTC-loaded modules) on top of the estimate.</summary>
    public const long LibraryReserveBytes = 512L << 20;

    public static KvCachePlan Create(long freeBytes, long totalBytes, double utilization, ModelConfig config, KvCacheSpec spec,
        int maxNumBatchedTokens, int maxNumSeqs, int blockSize, int maxModelLen, double share = 1.0)
    {
        if (utilization is <= 0 or > 1)
        {
            throw new ArgumentOutOfRangeException(nameof(utilization), utilization, "--gpu-memory-utilization must be in (0, 1]");
        }

        var used = totalBytes - freeBytes;
        var activations = EstimateActivationBytes(config, maxNumBatchedTokens, maxNumSeqs) + LibraryReserveBytes;
        if (share is <= 0 or > 1)
        {
            throw new ArgumentOutOfRangeException(nameof(share), share, "the KV cache's share of the remaining GPU memory must be in (0, 1]");
        }

        var kv = (long)(((long)(totalBytes * utilization) - used - activations) * share);
        if (kv < spec.BytesPerToken * blockSize)
        {
            throw new InvalidOperationException(
                $"no room for the KV cache: {totalBytes * utilization / 1073741824.0:F1} GiB allowed by --gpu-memory-utilization {utilization}, "
                + $"{used / 1073741824.0:F1} GiB already used (weights and runtime), {activations / 1073741824.0:F1} GiB kept for activations; "
                + "raise --gpu-memory-utilization or lower --max-num-batched-tokens");
        }

        var tokens = kv / spec.BytesPerToken / blockSize * blockSize;
        return new KvCachePlan(totalBytes, used, utilization, share, activations, tokens * spec.BytesPerToken, tokens,
            (int)Math.Min(int.MaxValue, tokens / Math.Max(1, maxModelLen)));
    }

    /// <summary>
    /// fp32 activations of one step at the token budget: the residual stream and its normed copy, q/k/v and the
    /// attention output, the MLP's gate, up and product, the logits of every sequence, doubled for the buffers the
    /// layers keep side by side. An estimate on the safe side, not a profile.
    /// </summary>
    public static long EstimateActivationBytes(ModelConfig config, int maxNumBatchedTokens, int maxNumSeqs)
    {
        long perToken = (4L * config.HiddenSize) + (3L * config.NumAttentionHeads * config.HeadDim) + (3L * Math.Max(config.IntermediateSize, config.HiddenSize));
        return 2 * sizeof(float) * ((perToken * maxNumBatchedTokens) + ((long)maxNumSeqs * config.VocabSize));
    }

    public override string ToString() =>
        $"{KvBytes / 1073741824.0:F2} GiB for {Tokens} tokens ({MaxFullLengthSequences} sequences at full length): "
        + $"{Utilization * 100:F0}% of {TotalBytes / 1073741824.0:F1} GiB minus {UsedBytes / 1073741824.0:F2} GiB in use and "
        + $"{ActivationBytes / 1073741824.0:F2} GiB for activations" + (Share < 1 ? $", {Share * 100:F0}% of that for this model" : string.Empty);
}
