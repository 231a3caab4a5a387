namespace Enclave.Engine.Embeddings;

/// <summary>Batching limits for embedding and rerank models; they bound activation memory per forward pass.</summary>
public sealed class EncoderOptions
{
    /// <summary>Most tokens packed into one forward pass (activations scale with this, not with the request).</summary>
    public int MaxBatchTokens { get; init; } = 8192;

    /// <summary>Most sequences in one forward pass.</summary>
    public int MaxBatchSequences { get; init; } = 256;

    /// <summary>Most inputs one request may carry (the server answers 400 beyond it).</summary>
    public int MaxInputsPerRequest { get; init; } = 2048;
}
