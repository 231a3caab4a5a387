using Enclave.Knowledge.Vectors;

namespace Enclave.Knowledge.Tests.Vectors;

/// <summary>Flush/Open round trips, crash safety of Flush, and damaged files.</summary>
public sealed class VectorIndexPersistenceTests
{
    private const int Dims = 40;

    private static float[] Data(long first, int count) => new SyntheticVectors(Dims, seed: 5).Generate(first, count);

    private static IVectorIndex Build(string directory, VectorIndexKind kind, VectorStorage storage, int count)
    {
        var index = VectorIndex.Create(directory, new VectorIndexOptions(Dims, VectorMetric.Cosine, storage, kind, M: 8, EfConstruction: 60, EfSearch: 50));
        var vectors = Data(0, count);
        for (var i = 0; i < count; i++)
        {
            index.Add(i * 7L, vectors.AsSpan(i * Dims, Dims));
        }

        return index;
    }

    private static List<IReadOnlyList<VectorHit>> SearchAll(IVectorIndex index, float[] queries) =>
        [.. Enumerable.Range(0, queries.Length / Dims).Select(i => index.Search(queries.AsSpan(i * Dims, Dims), 10))];

    [Theory]
    [InlineData(VectorIndexKind.Hnsw, VectorStorage.Float32)]
    [InlineData(VectorIndexKind.Hnsw, VectorStorage.Float16)]
    [InlineData(VectorIndexKind.Hnsw, VectorStorage.Int8)]
    [InlineData(VectorIndexKind.Exact, VectorStorage.Float32)]
    [InlineData(VectorIndexKind.Exact, VectorStorage.Int8)]
    public void Flush_dispose_open_gives_the_same_results_and_keeps_accepting_writes(VectorIndexKind kind, VectorStorage storage)
    {
        using var temp = new TempIndexDirectory();
        var directory = temp.Sub("index");
        var queries = Data(900_000, 30);
        List<IReadOnlyList<VectorHit>> before;
        VectorIndexOptions options;
        using (var index = Build(directory, kind, storage, 3000))
        {
            before = SearchAll(index, queries);
            options = index.Options;
            index.Flush();
            Assert.Equal(before, SearchAll(index, queries));
        }

        using (var reopened = VectorIndex.Open(directory))
        {
            Assert.Equal(options, reopened.Options);
            Assert.Equal(3000, reopened.Count);
            Assert.Equal(before, SearchAll(reopened, queries));

            // Writes after Open extend the mapped generation; the next flush carries both.
            var more = Data(3000, 500);
            for (var i = 0; i < 500; i++)
            {
                reopened.Add(100_000 + i, more.AsSpan(i * Dims, Dims));
            }

            reopened.Remove(7);
            Assert.Equal(3499, reopened.Count);
            Assert.Equal(100_000L + 123, reopened.Search(more.AsSpan(123 * Dims, Dims), 1)[0].Id);
            before = SearchAll(reopened, queries);
            reopened.Flush();
        }

        using var third = VectorIndex.Open(directory);
        Assert.Equal(3499, third.Count);
        Assert.Equal(100_000L + 123, third.Search(Data(3123, 1), 1)[0].Id);
        var after = SearchAll(third, queries);
        Assert.DoesNotContain(after.SelectMany(h => h), h => h.Id == 7);
        Assert.True(VectorAssert.Recall(after, before) >= 0.95);

        // Only the committed generation's files remain.
        Assert.Equal(kind == VectorIndexKind.Hnsw ? 3 : 2, Directory.GetFiles(directory).Length);
    }

    [Fact]
    public void A_flush_that_fails_before_its_commit_leaves_the_previous_state_readable()
    {
        using var temp = new TempIndexDirectory();
        var directory = temp.Sub("index");
        var queries = Data(900_000, 10);
        using var index = Build(directory, VectorIndexKind.Hnsw, VectorStorage.Float32, 1000);
        index.Flush();
        var committed = SearchAll(index, queries);
        var more = Data(5000, 300);
        for (var i = 0; i < 300; i++)
        {
            index.Add(50_000 + i, more.AsSpan(i * Dims, Dims));
        }

        // The header's temp path is taken by a folder, so this flush writes the new generation's data files and
        // then fails to commit, as a crash between the data and the header would leave it.
        var blocker = Path.Combine(directory, HeaderTemp);
        Directory.CreateDirectory(blocker);
        var failure = Record.Exception(() => index.Flush());
        Assert.True(failure is IOException or UnauthorizedAccessException, $"expected an I/O failure, got {failure}");
        Assert.True(Directory.GetFiles(directory, "vectors.*.bin").Length >= 2);

        using (var other = VectorIndex.Open(directory))
        {
            Assert.Equal(1000, other.Count);
            Assert.Equal(committed, SearchAll(other, queries));
        }

        // The writer still holds its changes and commits them once the obstacle is gone.
        Directory.Delete(blocker);
        Assert.Equal(1300, index.Count);
        index.Flush();
        using var reopened = VectorIndex.Open(directory);
        Assert.Equal(1300, reopened.Count);
        Assert.Equal(50_000L + 5, reopened.Search(more.AsSpan(5 * Dims, Dims), 1)[0].Id);
        Assert.Equal(3, Directory.GetFiles(directory).Length);
    }

    private const string HeaderTemp = "index.hdr.tmp";

    private static string Flushed(TempIndexDirectory temp, VectorIndexKind kind = VectorIndexKind.Hnsw)
    {
        var directory = temp.Sub("index");
        using var index = Build(directory, kind, VectorStorage.Float32, 500);
        index.Flush();
        return directory;
    }

    private static InvalidDataException OpenFails(string directory) => Assert.Throws<InvalidDataException>(() => VectorIndex.Open(directory));

    [Theory]
    [InlineData("vectors")]
    [InlineData("graph")]
    public void A_truncated_data_file_is_named_in_the_error(string kind)
    {
        using var temp = new TempIndexDirectory();
        var directory = Flushed(temp);
        var file = Directory.GetFiles(directory, kind + ".*.bin").Single();
        using (var stream = new FileStream(file, FileMode.Open))
        {
            stream.SetLength(stream.Length - 100);
        }

        var error = OpenFails(directory);
        Assert.Contains(Path.GetFileName(file), error.Message);
        Assert.Contains("truncated", error.Message);
    }

    [Fact]
    public void A_damaged_header_is_named_in_the_error()
    {
        using var temp = new TempIndexDirectory();
        var directory = Flushed(temp);
        var header = Path.Combine(directory, "index.hdr");
        var bytes = File.ReadAllBytes(header);
        bytes[17] ^= 0x40;
        File.WriteAllBytes(header, bytes);
        Assert.Contains("index.hdr", OpenFails(directory).Message);

        File.WriteAllBytes(header, bytes[..60]);
        Assert.Contains("truncated", OpenFails(directory).Message);
        File.Delete(header);
        Assert.Contains("index.hdr", OpenFails(directory).Message);
        Assert.Contains("index.hdr", OpenFails(temp.Sub("nothing-here")).Message);
    }

    [Fact]
    public void A_graph_with_an_impossible_neighbour_list_is_refused_on_open()
    {
        using var temp = new TempIndexDirectory();
        var directory = Flushed(temp);
        var graph = Directory.GetFiles(directory, "graph.*.bin").Single();
        // Level-0 lists start at the first 64-byte boundary after the 128-byte header and one level byte per node.
        var linksOffset = (128 + 500 + 63) / 64 * 64;
        using (var stream = new FileStream(graph, FileMode.Open))
        {
            stream.Position = linksOffset + 4;
            stream.Write(BitConverter.GetBytes(1_000_000));
        }

        var error = OpenFails(directory);
        Assert.Contains(Path.GetFileName(graph), error.Message);
        Assert.Contains("corrupt", error.Message);
    }

    [Fact]
    public void Damaged_or_missing_vector_data_is_named_in_the_error()
    {
        using var temp = new TempIndexDirectory();
        var directory = Flushed(temp, VectorIndexKind.Exact);
        var vectors = Directory.GetFiles(directory, "vectors.*.bin").Single();
        var bytes = File.ReadAllBytes(vectors);
        bytes[30] ^= 1;
        File.WriteAllBytes(vectors, bytes);
        Assert.Contains(Path.GetFileName(vectors), OpenFails(directory).Message);
        File.Delete(vectors);
        var missing = OpenFails(directory);
        Assert.Contains(Path.GetFileName(vectors), missing.Message);
        Assert.Contains("missing", missing.Message);
    }
}
