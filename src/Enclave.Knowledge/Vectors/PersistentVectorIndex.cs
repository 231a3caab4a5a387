using System.Buffers;

namespace Enclave.Knowledge.Vectors;

/// <summary>
/// What the exact and the HNSW index share: input checks, the directory's generations, and the locking rule —
/// searches hold a read lock and run concurrently; Add, Remove and Flush hold the write lock, so one writer at a
/// time changes the index and never under a running search.
/// </summary>
public abstract unsafe class PersistentVectorIndex : IVectorIndex
{
    private readonly ReaderWriterLockSlim _gate = new(LockRecursionPolicy.NoRecursion);
    private long _generation;
    private bool _dirty;
    private bool _disposed;

    private protected PersistentVectorIndex(string directory, VectorIndexOptions options)
    {
        Directory = directory;
        Options = options;
        Store = new VectorStore(options);
    }

    /// <summary>The index directory.</summary>
    public string Directory { get; }

    public VectorIndexOptions Options { get; }

    public int Count
    {
        get
        {
            _gate.EnterReadLock();
            try
            {
                ThrowIfDisposed();
                return Store.LiveCount;
            }
            finally
            {
                _gate.ExitReadLock();
            }
        }
    }

    /// <summary>Bytes of native memory the index allocated beyond its mapped files.</summary>
    public long NativeBytes
    {
        get
        {
            _gate.EnterReadLock();
            try
            {
                return Store.NativeBytes + GraphNativeBytes;
            }
            finally
            {
                _gate.ExitReadLock();
            }
        }
    }

    private protected VectorStore Store { get; private set; }

    private protected virtual long GraphNativeBytes => 0;

    public void Add(long id, ReadOnlySpan<float> vector)
    {
        var prepared = ArrayPool<float>.Shared.Rent(Options.Dimensions);
        try
        {
            var span = prepared.AsSpan(0, Options.Dimensions);
            VectorKernels.Prepare(Options, vector, span, $"vector for id {id}");
            _gate.EnterWriteLock();
            try
            {
                ThrowIfDisposed();
                AddPrepared(id, span);
                _dirty = true;
            }
            finally
            {
                _gate.ExitWriteLock();
            }
        }
        finally
        {
            ArrayPool<float>.Shared.Return(prepared);
        }
    }

    /// <summary>
    /// Adds many vectors at once (<paramref name="vectors"/>: [ids.Length, Dimensions] row-major); an index that can
    /// build in parallel uses up to <paramref name="maxDegreeOfParallelism"/> threads (−1: all cores).
    /// Every vector is checked before any is added, so bad input changes nothing.
    /// </summary>
    public void AddRange(ReadOnlySpan<long> ids, ReadOnlySpan<float> vectors, int maxDegreeOfParallelism = -1)
    {
        var dims = Options.Dimensions;
        if (vectors.Length != (long)ids.Length * dims)
        {
            throw new ArgumentException($"{ids.Length} ids need {(long)ids.Length * dims} floats ({dims} per vector), got {vectors.Length}", nameof(vectors));
        }

        var prepared = new float[vectors.Length];
        for (var i = 0; i < ids.Length; i++)
        {
            VectorKernels.Prepare(Options, vectors.Slice(i * dims, dims), prepared.AsSpan(i * dims, dims), $"vector for id {ids[i]}");
        }

        _gate.EnterWriteLock();
        try
        {
            ThrowIfDisposed();
            AddPreparedRange(ids, prepared, maxDegreeOfParallelism);
            _dirty = true;
        }
        finally
        {
            _gate.ExitWriteLock();
        }
    }

    public bool Remove(long id)
    {
        _gate.EnterWriteLock();
        try
        {
            ThrowIfDisposed();
            var removed = Store.Remove(id);
            _dirty |= removed;
            return removed;
        }
        finally
        {
            _gate.ExitWriteLock();
        }
    }

    /// <summary>
    /// The k most similar live vectors, best first. <paramref name="filter"/> may be called from several threads
    /// at once (the exact index scans partitions in parallel), so it must be thread-safe.
    /// </summary>
    public IReadOnlyList<VectorHit> Search(ReadOnlySpan<float> query, int k, Func<long, bool>? filter = null) => SearchCore(query, k, filter, 0);

    /// <param name="efSearch">the HNSW beam width for this search; 0 uses the index's option</param>
    private protected IReadOnlyList<VectorHit> SearchCore(ReadOnlySpan<float> query, int k, Func<long, bool>? filter, int efSearch)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(k);
        ArgumentOutOfRangeException.ThrowIfNegative(efSearch);
        var dims = Options.Dimensions;
        var rented = dims > 4096 ? ArrayPool<float>.Shared.Rent(dims) : null;
        var prepared = rented is null ? stackalloc float[dims] : rented.AsSpan(0, dims);
        try
        {
            VectorKernels.Prepare(Options, query, prepared, "query");
            if (k == 0)
            {
                return [];
            }

            _gate.EnterReadLock();
            try
            {
                ThrowIfDisposed();
                if (Store.LiveCount == 0)
                {
                    return [];
                }

                fixed (float* q = prepared)
                {
                    return SearchPrepared(q, k, filter, efSearch);
                }
            }
            finally
            {
                _gate.ExitReadLock();
            }
        }
        finally
        {
            if (rented is not null)
            {
                ArrayPool<float>.Shared.Return(rented);
            }
        }
    }

    /// <summary>
    /// Writes the next generation (tombstones compacted away), commits it by replacing the header, then maps the
    /// new files and deletes the old ones. Until the header is replaced the previous generation stays intact.
    /// </summary>
    public void Flush()
    {
        _gate.EnterWriteLock();
        try
        {
            ThrowIfDisposed();
            if (!_dirty)
            {
                return;
            }

            var next = _generation + 1;
            var entry = WriteGraph(next);
            Store.Write(Path.Combine(Directory, IndexFiles.VectorsName(next)), next);
            var manifest = new IndexFiles.Manifest(Options, next, Store.LiveCount, entry.Node, entry.Level);
            IndexFiles.WriteManifest(Directory, manifest);
            ReleaseState();
            LoadGeneration(manifest);
            DeleteOtherGenerations();
        }
        finally
        {
            _gate.ExitWriteLock();
        }
    }

    /// <summary>Creates an empty index, committing generation 1 so that Open works at once.</summary>
    private protected void Initialise()
    {
        System.IO.Directory.CreateDirectory(Directory);
        if (File.Exists(Path.Combine(Directory, IndexFiles.HeaderName)))
        {
            throw new IOException($"{Directory}: already holds a vector index; open it instead of creating one");
        }

        _dirty = true;
        Flush();
    }

    /// <summary>Maps the generation a header names (after Open or a Flush).</summary>
    private protected void LoadGeneration(IndexFiles.Manifest manifest)
    {
        _generation = manifest.Generation;
        var store = VectorStore.Load(Options, Path.Combine(Directory, IndexFiles.VectorsName(manifest.Generation)), manifest.Generation, manifest.Count);
        try
        {
            LoadGraph(manifest);
        }
        catch
        {
            store.Dispose();
            throw;
        }

        Store.Dispose();
        Store = store;
        _dirty = false;
    }

    private void ReleaseState()
    {
        Store.Dispose();
        Store = new VectorStore(Options);
        ReleaseGraph();
    }

    private void DeleteOtherGenerations()
    {
        var keep = new HashSet<string>(StringComparer.Ordinal)
        {
            IndexFiles.HeaderName, IndexFiles.VectorsName(_generation), IndexFiles.GraphName(_generation),
        };
        foreach (var path in System.IO.Directory.EnumerateFiles(Directory))
        {
            var name = Path.GetFileName(path);
            var ours = name.StartsWith("vectors.", StringComparison.Ordinal) || name.StartsWith("graph.", StringComparison.Ordinal) || name == IndexFiles.HeaderName + ".tmp";
            if (ours && !keep.Contains(name))
            {
                File.Delete(path);
            }
        }
    }

    private protected abstract void AddPrepared(long id, ReadOnlySpan<float> prepared);

    private protected virtual void AddPreparedRange(ReadOnlySpan<long> ids, float[] prepared, int maxDegreeOfParallelism)
    {
        var dims = Options.Dimensions;
        for (var i = 0; i < ids.Length; i++)
        {
            AddPrepared(ids[i], prepared.AsSpan(i * dims, dims));
        }
    }

    private protected abstract IReadOnlyList<VectorHit> SearchPrepared(float* query, int k, Func<long, bool>? filter, int efSearch);

    /// <summary>
    /// Writes this generation's graph file (if the index has one), numbering nodes as the compacted vectors file
    /// will, and returns the graph's entry point in that numbering (−1, −1 for none).
    /// </summary>
    private protected abstract (int Node, int Level) WriteGraph(long generation);

    private protected abstract void LoadGraph(IndexFiles.Manifest manifest);

    private protected abstract void ReleaseGraph();

    /// <summary>Sorts hits best first (ties by id, so equal scores come back in a stable order).</summary>
    private protected static List<VectorHit> Sorted(List<VectorHit> hits)
    {
        hits.Sort(static (a, b) => b.Score != a.Score ? b.Score.CompareTo(a.Score) : a.Id.CompareTo(b.Id));
        return hits;
    }

    private void ThrowIfDisposed() => ObjectDisposedException.ThrowIf(_disposed, this);

    public void Dispose()
    {
        _gate.EnterWriteLock();
        try
        {
            if (_disposed)
            {
                return;
            }

            _disposed = true;
            ReleaseGraph();
            Store.Dispose();
        }
        finally
        {
            _gate.ExitWriteLock();
        }
    }
}
