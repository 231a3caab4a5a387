using Enclave.Knowledge.Vectors;

namespace Enclave.Knowledge.Tests.Vectors;

/// <summary>Deletes, updates, filters, bad input and concurrency, for both index kinds.</summary>
public sealed class VectorIndexBehaviourTests
{
    private const int Dims = 48;

    private static (IVectorIndex Index, NaiveVectorReference Reference, float[] Vectors) Build(TempIndexDirectory temp, VectorIndexKind kind,
        int count, VectorStorage storage = VectorStorage.Float32, VectorMetric metric = VectorMetric.Cosine)
    {
        var options = new VectorIndexOptions(Dims, metric, storage, kind, M: 12, EfConstruction: 80, EfSearch: 64);
        var index = VectorIndex.Create(temp.Sub("index"), options);
        var reference = new NaiveVectorReference(options);
        var vectors = new SyntheticVectors(Dims, seed: 11).Generate(0, count);
        for (var i = 0; i < count; i++)
        {
            index.Add(i, vectors.AsSpan(i * Dims, Dims));
            reference.Add(i, vectors.AsSpan(i * Dims, Dims));
        }

        return (index, reference, vectors);
    }

    private static float[] Queries(int count) => new SyntheticVectors(Dims, seed: 11).Generate(1_000_000, count);

    private static double RecallAgainst(NaiveVectorReference reference, IVectorIndex index, float[] queries, int k, Func<long, bool>? filter = null)
    {
        var approximate = new List<IReadOnlyList<VectorHit>>();
        var exact = new List<IReadOnlyList<VectorHit>>();
        for (var i = 0; i < queries.Length / Dims; i++)
        {
            var query = VectorAssert.Row(queries, Dims, i);
            approximate.Add(index.Search(query, k, filter));
            exact.Add(reference.Search(query, k, filter));
        }

        return VectorAssert.Recall(approximate, exact);
    }

    [Theory]
    [InlineData(VectorIndexKind.Hnsw, VectorStorage.Float32, VectorMetric.Cosine)]
    [InlineData(VectorIndexKind.Hnsw, VectorStorage.Float16, VectorMetric.InnerProduct)]
    [InlineData(VectorIndexKind.Hnsw, VectorStorage.Int8, VectorMetric.Cosine)]
    [InlineData(VectorIndexKind.Exact, VectorStorage.Int8, VectorMetric.InnerProduct)]
    public void Removed_vectors_are_never_returned_and_stay_removed_after_flush_and_reopen(VectorIndexKind kind, VectorStorage storage, VectorMetric metric)
    {
        using var temp = new TempIndexDirectory();
        var (index, reference, _) = Build(temp, kind, 4000, storage, metric);
        var removed = new HashSet<long>();
        for (long id = 0; id < 4000; id += 3)
        {
            Assert.True(index.Remove(id));
            reference.Remove(id);
            removed.Add(id);
        }

        Assert.False(index.Remove(0));
        Assert.False(index.Remove(123_456));
        Assert.Equal(4000 - removed.Count, index.Count);
        var queries = Queries(50);
        for (var i = 0; i < 50; i++)
        {
            var hits = index.Search(VectorAssert.Row(queries, Dims, i), 10);
            Assert.Equal(10, hits.Count);
            Assert.DoesNotContain(hits, h => removed.Contains(h.Id));
        }

        Assert.True(RecallAgainst(reference, index, queries, 10) >= 0.9);
        index.Flush();
        index.Dispose();

        // Flush compacted the tombstones away and repaired the graph around them.
        using var reopened = VectorIndex.Open(temp.Sub("index"));
        Assert.Equal(4000 - removed.Count, reopened.Count);
        for (var i = 0; i < 50; i++)
        {
            Assert.DoesNotContain(reopened.Search(VectorAssert.Row(queries, Dims, i), 10), h => removed.Contains(h.Id));
        }

        var recall = RecallAgainst(reference, reopened, queries, 10);
        Assert.True(recall >= (kind == VectorIndexKind.Exact ? 0.999 : 0.9), $"recall after compaction {recall}");
    }

    [Fact]
    public void Removing_almost_everything_including_the_entry_point_keeps_the_rest_searchable()
    {
        using var temp = new TempIndexDirectory();
        var (index, _, vectors) = Build(temp, VectorIndexKind.Hnsw, 2000);
        using (index)
        {
            for (long id = 5; id < 2000; id++)
            {
                index.Remove(id);
            }

            var hits = index.Search(VectorAssert.Row(vectors, Dims, 0), 10);
            Assert.Equal([0L, 1, 2, 3, 4], hits.Select(h => h.Id).Order());
            index.Flush();
            Assert.Equal([0L, 1, 2, 3, 4], index.Search(VectorAssert.Row(vectors, Dims, 3), 10).Select(h => h.Id).Order());
            Assert.Equal(3L, index.Search(VectorAssert.Row(vectors, Dims, 3), 1)[0].Id);
            for (long id = 0; id < 5; id++)
            {
                index.Remove(id);
            }

            Assert.Empty(index.Search(VectorAssert.Row(vectors, Dims, 3), 10));
            index.Flush();
            Assert.Equal(0, index.Count);
            index.Add(42, VectorAssert.Row(vectors, Dims, 9));
            Assert.Equal(42L, Assert.Single(index.Search(VectorAssert.Row(vectors, Dims, 3), 10)).Id);
        }
    }

    [Theory]
    [InlineData(VectorIndexKind.Hnsw)]
    [InlineData(VectorIndexKind.Exact)]
    public void Adding_an_existing_id_replaces_its_vector(VectorIndexKind kind)
    {
        using var temp = new TempIndexDirectory();
        var (index, _, vectors) = Build(temp, kind, 3000);
        var oldVector = VectorAssert.Row(vectors, Dims, 77);
        var newVector = VectorAssert.Row(vectors, Dims, 2500);
        for (var i = 0; i < Dims; i++)
        {
            newVector[i] = -newVector[i] + 0.01f * i;
        }

        index.Add(77, newVector);
        Assert.Equal(3000, index.Count);
        Assert.Equal(77L, index.Search(newVector, 1)[0].Id);
        Assert.Equal(1f, index.Search(newVector, 1)[0].Score, 4);
        var oldHits = index.Search(oldVector, 5);
        Assert.DoesNotContain(oldHits, h => h.Id == 77);
        index.Flush();
        index.Dispose();
        using var reopened = VectorIndex.Open(temp.Sub("index"));
        Assert.Equal(3000, reopened.Count);
        Assert.Equal(77L, reopened.Search(newVector, 1)[0].Id);
        Assert.DoesNotContain(reopened.Search(oldVector, 5), h => h.Id == 77);
    }

    [Theory]
    [InlineData(VectorIndexKind.Hnsw)]
    [InlineData(VectorIndexKind.Exact)]
    public void A_selective_filter_still_returns_k_admitted_hits(VectorIndexKind kind)
    {
        using var temp = new TempIndexDirectory();
        var (index, reference, _) = Build(temp, kind, 20_000);
        using (index)
        {
            // 0.5% of the ids pass: post-filtering an ef-wide beam would almost always come back short.
            Func<long, bool> rare = id => id % 200 == 17;
            var queries = Queries(30);
            for (var i = 0; i < 30; i++)
            {
                var hits = index.Search(VectorAssert.Row(queries, Dims, i), 10, rare);
                Assert.Equal(10, hits.Count);
                Assert.All(hits, h => Assert.True(rare(h.Id)));
            }

            var recall = RecallAgainst(reference, index, queries, 10, rare);
            Assert.True(recall >= 0.9, $"filtered recall {recall}");

            // Fewer admitted ids than k: every one of them comes back.
            Func<long, bool> three = id => id is 5 or 9_999 or 19_998;
            Assert.Equal([5L, 9_999, 19_998], index.Search(VectorAssert.Row(queries, Dims, 0), 10, three).Select(h => h.Id).Order());
            Assert.Empty(index.Search(VectorAssert.Row(queries, Dims, 0), 10, _ => false));
        }
    }

    [Theory]
    [InlineData(VectorIndexKind.Hnsw)]
    [InlineData(VectorIndexKind.Exact)]
    public void Bad_vectors_are_refused_with_a_clear_error_and_change_nothing(VectorIndexKind kind)
    {
        using var temp = new TempIndexDirectory();
        var (index, _, vectors) = Build(temp, kind, 100);
        using (index)
        {
            var before = index.Search(VectorAssert.Row(vectors, Dims, 1), 5);
            var wrongLength = Assert.Throws<ArgumentException>(() => index.Add(500, new float[Dims + 1]));
            Assert.Contains($"{Dims + 1} dimensions", wrongLength.Message);
            Assert.Contains($"{Dims}-dimensional", wrongLength.Message);
            var query = Assert.Throws<ArgumentException>(() => index.Search(new float[Dims - 1], 5));
            Assert.Contains("query", query.Message);
            var nan = new float[Dims];
            nan[3] = float.NaN;
            Assert.Contains("non-finite", Assert.Throws<ArgumentException>(() => index.Add(501, nan)).Message);
            Assert.Contains("zero length", Assert.Throws<ArgumentException>(() => index.Add(502, new float[Dims])).Message);
            Assert.Throws<ArgumentOutOfRangeException>(() => index.Search(VectorAssert.Row(vectors, Dims, 1), -1));

            // A batch with one bad vector adds none of them.
            var batch = new float[3 * Dims];
            vectors.AsSpan(0, 2 * Dims).CopyTo(batch);
            var range = Assert.Throws<ArgumentException>(() => ((PersistentVectorIndex)index).AddRange([600, 601, 602], batch));
            Assert.Contains("602", range.Message);
            Assert.Equal(100, index.Count);
            Assert.Equal(before, index.Search(VectorAssert.Row(vectors, Dims, 1), 5));
        }

        var exists = Assert.Throws<IOException>(() => VectorIndex.Create(temp.Sub("index"), new VectorIndexOptions(Dims)));
        Assert.Contains("already holds a vector index", exists.Message);
        using var reopened = VectorIndex.Open(temp.Sub("index"));
        Assert.Contains($"{Dims}-dimensional", Assert.Throws<ArgumentException>(() => reopened.Search(new float[8], 1)).Message);
        Assert.Throws<ArgumentException>(() => VectorIndex.Create(temp.Sub("bad"), new VectorIndexOptions(0)));
        Assert.Throws<ArgumentException>(() => VectorIndex.Create(temp.Sub("bad"), new VectorIndexOptions(8, M: 1)));
    }

    [Fact]
    public void Fp16_storage_refuses_values_it_cannot_hold()
    {
        using var temp = new TempIndexDirectory();
        using var index = VectorIndex.Create(temp.Root, new VectorIndexOptions(4, VectorMetric.InnerProduct, VectorStorage.Float16));
        Assert.Contains("fp16", Assert.Throws<ArgumentException>(() => index.Add(1, [1e6f, 0, 0, 0])).Message);
        Assert.Equal(0, index.Count);
    }

    [Theory]
    [InlineData(VectorIndexKind.Hnsw)]
    [InlineData(VectorIndexKind.Exact)]
    public async Task Searches_run_concurrently_with_one_writer(VectorIndexKind kind)
    {
        using var temp = new TempIndexDirectory();
        var (index, _, _) = Build(temp, kind, 2000);
        using (index)
        {
            var extra = new SyntheticVectors(Dims, seed: 11).Generate(2000, 1500);
            var queries = Queries(16);
            using var stop = new CancellationTokenSource();
            var searches = 0;
            var readers = Enumerable.Range(0, 3).Select(r => Task.Run(() =>
            {
                var i = r;
                do
                {
                    var hits = index.Search(queries.AsSpan(i++ % 16 * Dims, Dims), 10);
                    Assert.Equal(10, hits.Count);
                    Assert.Equal(10, hits.Select(h => h.Id).Distinct().Count());
                    Assert.All(hits, h => Assert.InRange(h.Id, 0, 3499));
                    Interlocked.Increment(ref searches);
                }
                while (!stop.IsCancellationRequested);
            })).ToArray();
            SpinWait.SpinUntil(() => Volatile.Read(ref searches) >= 3);

            for (var i = 0; i < 1500; i++)
            {
                index.Add(2000 + i, extra.AsSpan(i * Dims, Dims));
                if (i % 10 == 0)
                {
                    index.Remove(i);
                }

                if (i == 750)
                {
                    index.Flush();
                }
            }

            stop.Cancel();
            await Task.WhenAll(readers);
            Assert.True(searches > 0);
            Assert.Equal(3500 - 150, index.Count);
        }
    }
}
