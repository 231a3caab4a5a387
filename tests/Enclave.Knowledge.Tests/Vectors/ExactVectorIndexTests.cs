using Enclave.Knowledge.Vectors;

namespace Enclave.Knowledge.Tests.Vectors;

public sealed class ExactVectorIndexTests
{
    private static float[] RandomVectors(int count, int dims, int seed)
    {
        var random = new Random(seed);
        var vectors = new float[count * dims];
        for (var i = 0; i < vectors.Length; i++)
        {
            vectors[i] = (float)(random.NextDouble() * 2 - 1);
        }

        return vectors;
    }

    // Dimensions chosen off the SIMD widths (64 int8 / 32 fp16 / 16 fp32 lanes) so the scalar tails run too.
    [Theory]
    [InlineData(VectorMetric.Cosine, VectorStorage.Float32, 100)]
    [InlineData(VectorMetric.InnerProduct, VectorStorage.Float32, 77)]
    [InlineData(VectorMetric.Cosine, VectorStorage.Float16, 133)]
    [InlineData(VectorMetric.InnerProduct, VectorStorage.Float16, 64)]
    [InlineData(VectorMetric.Cosine, VectorStorage.Int8, 333)]
    [InlineData(VectorMetric.InnerProduct, VectorStorage.Int8, 31)]
    [InlineData(VectorMetric.Cosine, VectorStorage.Int8, 7)]
    public void Matches_a_scalar_reference_in_every_storage(VectorMetric metric, VectorStorage storage, int dims)
    {
        using var temp = new TempIndexDirectory();
        var options = new VectorIndexOptions(dims, metric, storage, VectorIndexKind.Exact);
        using var index = VectorIndex.Create(temp.Root, options);
        var reference = new NaiveVectorReference(options);
        const int count = 3000;
        var vectors = RandomVectors(count, dims, seed: dims);
        for (var i = 0; i < count; i++)
        {
            index.Add(1000 + i, vectors.AsSpan(i * dims, dims));
            reference.Add(1000 + i, vectors.AsSpan(i * dims, dims));
        }

        Assert.Equal(count, index.Count);
        var queries = RandomVectors(20, dims, seed: 7 * dims);
        var tolerance = storage == VectorStorage.Float32 ? 1e-5f : 2e-3f;
        for (var i = 0; i < 20; i++)
        {
            var query = VectorAssert.Row(queries, dims, i);
            VectorAssert.SameHits(reference, reference.Search(query, 10), index.Search(query, 10), query, tolerance);
        }
    }

    [Fact]
    public void Large_index_scanned_in_parallel_partitions_matches_the_reference()
    {
        using var temp = new TempIndexDirectory();
        const int dims = 48;
        var count = ExactVectorIndex.ParallelThreshold + 7001;
        var options = new VectorIndexOptions(dims, VectorMetric.InnerProduct, VectorStorage.Float32, VectorIndexKind.Exact);
        var index = (ExactVectorIndex)VectorIndex.Create(temp.Root, options);
        using (index)
        {
            var reference = new NaiveVectorReference(options);
            var vectors = RandomVectors(count, dims, seed: 3);
            index.AddRange([.. Enumerable.Range(0, count).Select(i => (long)i)], vectors);
            for (var i = 0; i < count; i++)
            {
                reference.Add(i, vectors.AsSpan(i * dims, dims));
            }

            var queries = RandomVectors(10, dims, seed: 4);
            for (var i = 0; i < 10; i++)
            {
                var query = VectorAssert.Row(queries, dims, i);
                VectorAssert.SameHits(reference, reference.Search(query, 25), index.Search(query, 25), query, 1e-5f);
                Func<long, bool> filter = id => id % 97 == 3;
                VectorAssert.SameHits(reference, reference.Search(query, 25, filter), index.Search(query, 25, filter), query, 1e-5f);
            }
        }
    }

    [Fact]
    public void Asking_for_more_than_the_index_holds_returns_every_live_vector_best_first()
    {
        using var temp = new TempIndexDirectory();
        using var index = VectorIndex.Create(temp.Root, new VectorIndexOptions(3, Kind: VectorIndexKind.Exact));
        index.Add(1, [1, 0, 0]);
        index.Add(2, [0, 1, 0]);
        index.Add(3, [0.9f, 0.1f, 0]);
        index.Remove(2);
        var hits = index.Search([1, 0, 0], 10);
        Assert.Equal([1L, 3L], hits.Select(h => h.Id));
        Assert.Equal(1f, hits[0].Score, 5);
        Assert.Empty(index.Search([1, 0, 0], 0));
    }
}
