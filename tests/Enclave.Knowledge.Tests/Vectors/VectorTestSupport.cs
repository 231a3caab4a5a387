using Enclave.Knowledge.Vectors;

namespace Enclave.Knowledge.Tests.Vectors;

/// <summary>A fresh directory under the temp folder, deleted with everything in it afterwards.</summary>
public sealed class TempIndexDirectory : IDisposable
{
    public TempIndexDirectory()
    {
        Root = Path.Combine(Path.GetTempPath(), "enclave-vectors-test-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(Root);
    }

    public string Root { get; }

    public string Sub(string name) => Path.Combine(Root, name);

    public void Dispose()
    {
        if (Directory.Exists(Root))
        {
            Directory.Delete(Root, recursive: true);
        }
    }
}

/// <summary>
/// Scalar, allocation-happy reference search written independently of the index: stored vectors are reproduced
/// lane by lane (cosine normalisation, fp16 rounding, int8 codes with a max-magnitude scale) and scored in double.
/// </summary>
public sealed class NaiveVectorReference(VectorIndexOptions options)
{
    private readonly Dictionary<long, float[]> _stored = [];

    public void Add(long id, ReadOnlySpan<float> vector) => _stored[id] = Store(Normalise(vector));

    public void Remove(long id) => _stored.Remove(id);

    public float ScoreOf(long id, ReadOnlySpan<float> query)
    {
        var q = Normalise(query);
        var v = _stored[id];
        double sum = 0;
        for (var i = 0; i < q.Length; i++)
        {
            sum += (double)q[i] * v[i];
        }

        return (float)sum;
    }

    public List<VectorHit> Search(ReadOnlySpan<float> query, int k, Func<long, bool>? filter = null)
    {
        var q = query.ToArray();
        return [.. _stored.Keys.Where(id => filter is null || filter(id))
            .Select(id => new VectorHit(id, ScoreOf(id, q)))
            .OrderByDescending(h => h.Score).ThenBy(h => h.Id).Take(k)];
    }

    private float[] Normalise(ReadOnlySpan<float> vector)
    {
        var copy = vector.ToArray();
        if (options.Metric == VectorMetric.Cosine)
        {
            double norm = 0;
            foreach (var x in copy)
            {
                norm += (double)x * x;
            }

            var length = (float)Math.Sqrt(norm);
            for (var i = 0; i < copy.Length; i++)
            {
                copy[i] /= length;
            }
        }

        return copy;
    }

    private float[] Store(float[] v)
    {
        switch (options.Storage)
        {
            case VectorStorage.Float16:
                return [.. v.Select(x => (float)(Half)x)];
            case VectorStorage.Int8:
                var maxAbs = v.Max(MathF.Abs);
                var scale = maxAbs / 127f;
                var inverse = scale > 0 ? 1f / scale : 0f;
                return [.. v.Select(x => Math.Clamp(MathF.Round(x * inverse), -127f, 127f) * scale)];
            default:
                return v;
        }
    }
}

public static class VectorAssert
{
    /// <summary>Recall@k: the fraction of the reference ids the approximate answers found.</summary>
    public static double Recall(IReadOnlyList<IReadOnlyList<VectorHit>> approximate, IReadOnlyList<IReadOnlyList<VectorHit>> exact)
    {
        long found = 0, total = 0;
        for (var i = 0; i < exact.Count; i++)
        {
            var truth = exact[i].Select(h => h.Id).ToHashSet();
            total += truth.Count;
            found += approximate[i].Count(h => truth.Contains(h.Id));
        }

        return (double)found / total;
    }

    /// <summary>
    /// Same ranking as the reference up to <paramref name="tolerance"/> (relative to 1 + |score|): the score at every rank matches, and every
    /// returned id really has the score reported for it (so neither a wrong id nor a wrong order passes).
    /// </summary>
    public static void SameHits(NaiveVectorReference reference, IReadOnlyList<VectorHit> expected, IReadOnlyList<VectorHit> actual,
        float[] query, float tolerance)
    {
        Assert.Equal(expected.Count, actual.Count);
        for (var i = 0; i < expected.Count; i++)
        {
            var allowed = tolerance * (1 + Math.Abs(expected[i].Score));
            Assert.True(Math.Abs(expected[i].Score - actual[i].Score) <= allowed,
                $"rank {i}: reference score {expected[i].Score}, index {actual[i].Score} (id {expected[i].Id} vs {actual[i].Id})");
            Assert.True(Math.Abs(reference.ScoreOf(actual[i].Id, query) - actual[i].Score) <= allowed,
                $"rank {i}: id {actual[i].Id} reported {actual[i].Score}, its reference score is {reference.ScoreOf(actual[i].Id, query)}");
        }

        for (var i = 1; i < actual.Count; i++)
        {
            Assert.True(actual[i - 1].Score >= actual[i].Score, $"hits not sorted best first at rank {i}");
        }
    }

    public static float[] Row(float[] vectors, int dims, int i) => vectors.AsSpan(i * dims, dims).ToArray();
}
