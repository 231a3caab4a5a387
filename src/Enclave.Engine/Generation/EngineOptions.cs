namespace Enclave.Engine.Generation;

/// <summary>Engine limits, bound from configuration or command-line flags (names follow vLLM's).</summary>
public sealed class EngineOptions
{
    /// <summary>Most sequences in one step (--max-num-seqs).</summary>
    public int MaxNumSeqs { get; set; } = 64;

    /// <summary>Token budget of one step; long prompts are prefilled in chunks of this size (--max-num-batched-tokens).</summary>
    public int MaxNumBatchedTokens { get; set; } = 512;

    /// <summary>Memory for the paged KV cache in bytes (--kv-cache-memory); 0 picks a size from the context length and sequence limit.</summary>
    public long KvCacheBytes { get; set; }

    /// <summary>
    /// Fraction of a GPU's memory the engine may fill (--gpu-memory-utilization, vLLM's default 0.9); with no
    /// --kv-cache-memory, the KV cache takes what the weights and activations leave of it. Ignored on the CPU.
    /// </summary>
    public double GpuMemoryUtilization { get; set; } = 0.9;

    /// <summary>
    /// Part of what is left of that allowance this engine's KV cache takes (1 = all): a server loading N models onto
    /// one GPU gives the first 1/N of the rest, the next 1/(N−1) of what then remains, and so on.
    /// </summary>
    public double GpuMemoryShare { get; set; } = 1.0;

    /// <summary>A copy with another <see cref="GpuMemoryShare"/>.</summary>
    public EngineOptions WithGpuMemoryShare(double share)
    {
        var copy = (EngineOptions)MemberwiseClone();
        copy.GpuMemoryShare = share;
        return copy;
    }

    /// <summary>
    /// Element type of the KV cache (--kv-cache-dtype): auto (fp32, exact), f32, or bf16 (CUDA, standard attention:
    /// half the memory, so twice the tokens, and half the bytes each attention step reads; values rounded to bf16).
    /// </summary>
    public string KvCacheDtype { get; set; } = "auto";

    /// <summary>Tokens per KV-cache block.</summary>
    public int BlockSize { get; set; } = 16;

    /// <summary>Requests allowed to wait for a slot before new ones are refused (HTTP 429).</summary>
    public int MaxWaiting { get; set; } = 256;

    /// <summary>Reuse the K/V of full blocks across requests that share a prefix (--enable-prefix-caching, on by default).</summary>
    public bool EnablePrefixCaching { get; set; } = true;

    /// <summary>Context length limit (prompt + generated); 0 uses the model's max_position_embeddings.</summary>
    public int MaxModelLen { get; set; }
}
