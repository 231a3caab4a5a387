namespace Enclave.Engine.Sampling;

/// <summary>
/// How one logits row becomes a token when nothing but the raw logits and one uniform draw decide it (see
/// <see cref="Sampler.ReducesToRowSampling"/>): greedy when <see cref="Temperature"/> is 0 (argmax, no draw), else
/// softmax at the temperature, then top-k, min-p, top-p, and the draw <see cref="U"/> in [0, 1) that
/// <see cref="Sampler.Sample"/> would have taken from the request's random stream. Carried to
/// <see cref="Backends.IBackend.Sample"/>, so the same seed gives the same tokens on the host and on the backend.
/// </summary>
public readonly record struct RowSampling(double Temperature, int TopK, double TopP, double MinP, double U)
{
    /// <summary>The argmax row (temperature 0, no draw).</summary>
    public static RowSampling Greedy => default;

    public bool IsGreedy => Temperature <= 0;

    /// <summary>Whether a filter is on; without one the host walks the whole vocabulary in index order, with one in descending probability.</summary>
    public bool Filtered => TopK > 0 || TopP < 1.0 || MinP > 0;

    /// <summary>
    /// The row for one sampled token of a request: greedy takes no draw, anything else takes exactly the one draw
    /// <see cref="Sampler.Sample"/> takes from the request's stream.
    /// </summary>
    public static RowSampling For(SamplingParams p, Random random) =>
        p.IsGreedy ? Greedy : new RowSampling(p.Temperature, p.TopK, p.TopP, p.MinP, random.NextDouble());
}
