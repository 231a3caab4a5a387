namespace Enclave.Knowledge.Vectors;

/// <summary>
/// Reproducible embedding-like vectors for benchmarks and tests. Uniform noise in hundreds of dimensions has no
/// neighbourhood structure (every point is about equally far from every other), unlike real embeddings, which
/// concentrate on a low-dimensional manifold in topical clusters. So each vector is drawn from a Gaussian mixture
/// whose components are low-rank: <c>x = centre_c + B_c·z + ε</c> with z of <see cref="LatentDimensions"/>
/// dimensions and a small isotropic ε. Vector i depends only on (seed, i), so batches can be generated in any order
/// and in parallel.
/// </summary>
public sealed class SyntheticVectors
{
    public const int LatentDimensions = 24;

    private readonly int _dimensions;
    private readonly int _clusters;
    private readonly ulong _seed;
    private readonly float[] _centres; // [clusters, dims]
    private readonly float[] _bases;   // [clusters, dims, latent]

    /// <param name="dimensions">vector length</param>
    /// <param name="seed">fixes the mixture and every vector</param>
    /// <param name="clusters">mixture components (topics)</param>
    public SyntheticVectors(int dimensions, int seed, int clusters = 100)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(dimensions, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(clusters, 1);
        _dimensions = dimensions;
        _clusters = clusters;
        _seed = (ulong)seed * 0x9E3779B97F4A7C15UL + 1;
        _centres = new float[clusters * dimensions];
        _bases = new float[clusters * dimensions * LatentDimensions];
        var random = new Gaussian(_seed ^ 0xC3A5C85C97CB3127UL);
        for (var i = 0; i < _centres.Length; i++)
        {
            _centres[i] = random.Next();
        }

        // Spread along the cluster's latent directions comparable to the distance between centres, so neighbours
        // are decided inside the manifold, not by the cluster label alone.
        var scale = 0.8f / MathF.Sqrt(LatentDimensions);
        for (var i = 0; i < _bases.Length; i++)
        {
            _bases[i] = random.Next() * scale;
        }
    }

    public int Dimensions => _dimensions;

    /// <summary>Writes vectors first … first + count − 1 into <paramref name="destination"/> ([count, dims]).</summary>
    public void Fill(long first, int count, Span<float> destination)
    {
        if (destination.Length != (long)count * _dimensions)
        {
            throw new ArgumentException($"{count} vectors need {(long)count * _dimensions} floats, got {destination.Length}", nameof(destination));
        }

        Span<float> z = stackalloc float[LatentDimensions];
        for (var v = 0; v < count; v++)
        {
            var random = new Gaussian(_seed + (ulong)(first + v) * 0xD1B54A32D192ED03UL);
            var cluster = (int)(random.NextBits() % (ulong)_clusters);
            for (var j = 0; j < LatentDimensions; j++)
            {
                z[j] = random.Next();
            }

            var row = destination.Slice(v * _dimensions, _dimensions);
            var centre = _centres.AsSpan(cluster * _dimensions, _dimensions);
            var basis = _bases.AsSpan(cluster * _dimensions * LatentDimensions, _dimensions * LatentDimensions);
            for (var d = 0; d < _dimensions; d++)
            {
                var value = centre[d] + 0.1f * random.Next();
                var b = basis.Slice(d * LatentDimensions, LatentDimensions);
                for (var j = 0; j < LatentDimensions; j++)
                {
                    value += b[j] * z[j];
                }

                row[d] = value;
            }
        }
    }

    /// <summary>All of vectors first … first + count − 1 as a new [count, dims] array.</summary>
    public float[] Generate(long first, int count)
    {
        var vectors = new float[(long)count * _dimensions];
        Fill(first, count, vectors);
        return vectors;
    }

    /// <summary>SplitMix64 stream with Box–Muller normals: cheap, seedable per vector, identical on every platform.</summary>
    private struct Gaussian(ulong state)
    {
        private ulong _state = state;
        private float _spare;
        private bool _hasSpare;

        public ulong NextBits()
        {
            var z = _state += 0x9E3779B97F4A7C15UL;
            z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
            z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
            return z ^ (z >> 31);
        }

        public float Next()
        {
            if (_hasSpare)
            {
                _hasSpare = false;
                return _spare;
            }

            var u1 = ((NextBits() >> 11) + 1) * (1.0 / 9007199254740993.0);
            var u2 = (NextBits() >> 11) * (1.0 / 9007199254740992.0);
            var radius = Math.Sqrt(-2 * Math.Log(u1));
            _spare = (float)(radius * Math.Sin(2 * Math.PI * u2));
            _hasSpare = true;
            return (float)(radius * Math.Cos(2 * Math.PI * u2));
        }
    }
}
