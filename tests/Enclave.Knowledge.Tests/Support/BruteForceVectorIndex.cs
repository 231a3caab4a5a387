using System.Numerics.Tensors;
using Enclave.Knowledge.Vectors;

namespace Enclave.Knowledge.Tests.Support;

/// <summary>
/// Exact search over vectors kept in memory and written to one file on Flush: the reference the knowledge base's
/// tests run against, independent of the production index.
/// </summary>
public sealed class BruteForceVectorIndex : IVectorIndex
{
    private readonly string file;
    private readonly Dictionary<long, float[]> vectors = [];
    private readonly Lock gate = new();

    private BruteForceVectorIndex(string directory, VectorIndexOptions options)
    {
        file = Path.Combine(directory, "vectors.bin");
        Options = options;
    }

    public VectorIndexOptions Options { get; }

    public int Count
    {
        get
        {
            lock (gate)
            {
                return vectors.Count;
            }
        }
    }

    public static IVectorIndex Create(string directory, VectorIndexOptions options)
    {
        Directory.CreateDirectory(directory);
        var index = new BruteForceVectorIndex(directory, options);
        index.Flush();
        return index;
    }

    public static IVectorIndex Open(string directory)
    {
        var path = Path.Combine(directory, "vectors.bin");
        if (!File.Exists(path))
        {
            throw new InvalidDataException($"{path} is missing");
        }

        using var reader = new BinaryReader(File.OpenRead(path));
        var dims = reader.ReadInt32();
        var index = new BruteForceVectorIndex(directory, new VectorIndexOptions(dims, Kind: VectorIndexKind.Exact));
        var count = reader.ReadInt32();
        for (var i = 0; i < count; i++)
        {
            var id = reader.ReadInt64();
            var v = new float[dims];
            for (var d = 0; d < dims; d++)
            {
                v[d] = reader.ReadSingle();
            }

            index.vectors[id] = v;
        }

        return index;
    }

    public void Add(long id, ReadOnlySpan<float> vector)
    {
        if (vector.Length != Options.Dimensions)
        {
            throw new ArgumentException($"expected {Options.Dimensions} dimensions, got {vector.Length}", nameof(vector));
        }

        lock (gate)
        {
            vectors[id] = vector.ToArray();
        }
    }

    public bool Remove(long id)
    {
        lock (gate)
        {
            return vectors.Remove(id);
        }
    }

    public IReadOnlyList<VectorHit> Search(ReadOnlySpan<float> query, int k, Func<long, bool>? filter = null)
    {
        var q = query.ToArray();
        lock (gate)
        {
            return [.. vectors.Where(kv => filter is null || filter(kv.Key))
                .Select(kv => new VectorHit(kv.Key, TensorPrimitives.CosineSimilarity(q, kv.Value)))
                .OrderByDescending(h => h.Score).ThenBy(h => h.Id).Take(k)];
        }
    }

    public void Flush()
    {
        lock (gate)
        {
            using var writer = new BinaryWriter(File.Create(file));
            writer.Write(Options.Dimensions);
            writer.Write(vectors.Count);
            foreach (var (id, v) in vectors)
            {
                writer.Write(id);
                foreach (var x in v)
                {
                    writer.Write(x);
                }
            }
        }
    }

    public void Dispose()
    {
    }
}

public sealed class BruteForceVectorIndexFactory : IVectorIndexFactory
{
    public IVectorIndex Create(string directory, VectorIndexOptions options) => BruteForceVectorIndex.Create(directory, options);

    public IVectorIndex Open(string directory) => BruteForceVectorIndex.Open(directory);
}
