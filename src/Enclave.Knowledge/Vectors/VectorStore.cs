namespace Enclave.Knowledge.Vectors;

/// <summary>
/// The vectors of an index by node number (dense, in insertion order): the caller's id, a tombstone flag and the
/// stored record of each node. Replacing or removing an id tombstones its node; Flush compacts tombstones away.
/// Nodes present when the index was opened are read from the mapped <c>vectors.GEN.bin</c>; later ones from native
/// segments. Not thread-safe by itself: the owning index serialises writers against readers.
/// </summary>
internal sealed unsafe class VectorStore : IDisposable
{
    // vectors.GEN.bin layout fields after the common header.
    private const int FieldDimensions = 0, FieldStorage = 1, FieldRecordBytes = 2, FieldIdsOffset = 3, FieldRecordsOffset = 4, FieldLength = 5, FieldCount = 6;

    private readonly SegmentedBuffer _ids;
    private readonly SegmentedBuffer _records;
    private readonly SegmentedBuffer _deleted;
    private readonly Dictionary<long, int> _nodeById;
    private readonly MappedFile? _file;

    public VectorStore(VectorIndexOptions options)
        : this(options, null, 0, 0, 0)
    {
    }

    private VectorStore(VectorIndexOptions options, MappedFile? file, long baseCount, long idsOffset, long recordsOffset)
    {
        Options = options;
        Dimensions = options.Dimensions;
        Storage = options.Storage;
        RecordBytes = VectorKernels.RecordBytes(Storage, Dimensions);
        _file = file;
        var basePointer = file is null ? null : file.Pointer;
        _ids = new SegmentedBuffer(sizeof(long), 12, file is null ? null : basePointer + idsOffset, baseCount);
        _records = new SegmentedBuffer(RecordBytes, 10, file is null ? null : basePointer + recordsOffset, baseCount);
        _deleted = new SegmentedBuffer(1, 16);
        _deleted.EnsureCapacity(baseCount);
        _nodeById = new Dictionary<long, int>((int)Math.Min(baseCount, int.MaxValue));
        NodeCount = (int)baseCount;
    }

    public VectorIndexOptions Options { get; }

    public int Dimensions { get; }

    public VectorStorage Storage { get; }

    public int RecordBytes { get; }

    /// <summary>Nodes allocated, tombstoned ones included.</summary>
    public int NodeCount { get; private set; }

    public int DeletedCount { get; private set; }

    public int LiveCount => NodeCount - DeletedCount;

    /// <summary>Native bytes this store allocated (the mapped file is counted by the page cache, not here).</summary>
    public long NativeBytes => _ids.NativeBytes + _records.NativeBytes + _deleted.NativeBytes;

    /// <summary>Maps <c>vectors.GEN.bin</c> and checks it against the header before any record is read.</summary>
    public static VectorStore Load(VectorIndexOptions options, string path, long generation, long count)
    {
        var file = MappedFile.Open(path);
        try
        {
            var fields = IndexFiles.ReadDataHeader(file, IndexFiles.VectorsMagic, generation, count, FieldCount);
            var recordBytes = VectorKernels.RecordBytes(options.Storage, options.Dimensions);
            if (fields[FieldDimensions] != options.Dimensions || fields[FieldStorage] != (long)options.Storage || fields[FieldRecordBytes] != recordBytes)
            {
                throw new InvalidDataException($"{path}: holds {fields[FieldDimensions]}-dimensional {(VectorStorage)fields[FieldStorage]} vectors, but {IndexFiles.HeaderName} says {options.Dimensions}-dimensional {options.Storage}");
            }

            var idsOffset = IndexFiles.HeaderBytes;
            var recordsOffset = IndexFiles.Align(idsOffset + count * sizeof(long));
            var length = recordsOffset + count * recordBytes;
            if (fields[FieldIdsOffset] != idsOffset || fields[FieldRecordsOffset] != recordsOffset || fields[FieldLength] != length)
            {
                throw new InvalidDataException($"{path}: section layout does not match its count ({count}); the file is corrupt");
            }

            file.ExpectLength(length);
            var store = new VectorStore(options, file, count, idsOffset, recordsOffset);
            for (var node = 0; node < (int)count; node++)
            {
                if (!store._nodeById.TryAdd(store.IdOf(node), node))
                {
                    store.Dispose();
                    throw new InvalidDataException($"{path}: id {store.IdOf(node)} appears twice; the file is corrupt");
                }

                if (options.Storage == VectorStorage.Int8 && !(*(float*)store.Record(node) >= 0 && float.IsFinite(*(float*)store.Record(node))))
                {
                    store.Dispose();
                    throw new InvalidDataException($"{path}: node {node} has an invalid int8 scale; the file is corrupt");
                }
            }

            return store;
        }
        catch
        {
            file.Dispose();
            throw;
        }
    }

    public bool TryGetNode(long id, out int node) => _nodeById.TryGetValue(id, out node);

    public long IdOf(int node) => *(long*)_ids[node];

    public bool IsDeleted(int node) => *_deleted[node] != 0;

    public byte* Record(int node) => _records[node];

    /// <summary>Similarity of an fp32 query (normalised for cosine) with a node, in the node's stored precision.</summary>
    public float Score(float* query, int node) => VectorKernels.Dot(Storage, query, _records[node], Dimensions);

    public void Decode(int node, Span<float> destination) => VectorKernels.Decode(Storage, _records[node], destination);

    /// <summary>Appends a node for <paramref name="id"/> holding an already prepared vector; tombstones its old node.</summary>
    public int Append(long id, ReadOnlySpan<float> prepared)
    {
        if (_nodeById.TryGetValue(id, out var old))
        {
            MarkDeleted(old);
        }

        var node = NodeCount;
        if (node == int.MaxValue)
        {
            throw new InvalidOperationException("the index is full (2^31 − 1 nodes); flush to compact deleted vectors");
        }

        _ids.EnsureCapacity(node + 1L);
        _records.EnsureCapacity(node + 1L);
        _deleted.EnsureCapacity(node + 1L);
        *(long*)_ids[node] = id;
        VectorKernels.Encode(Storage, prepared, _records[node]);
        _nodeById[id] = node;
        NodeCount = node + 1;
        return node;
    }

    public bool Remove(long id)
    {
        if (!_nodeById.TryGetValue(id, out var node))
        {
            return false;
        }

        MarkDeleted(node);
        return true;
    }

    private void MarkDeleted(int node)
    {
        *_deleted[node] = 1;
        DeletedCount++;
        _nodeById.Remove(IdOf(node));
    }

    /// <summary>
    /// Old node → compacted node for every live node, −1 for tombstones: the order Flush writes nodes in.
    /// </summary>
    public int[] CompactionMap()
    {
        var map = new int[NodeCount];
        var next = 0;
        for (var node = 0; node < NodeCount; node++)
        {
            map[node] = IsDeleted(node) ? -1 : next++;
        }

        return map;
    }

    /// <summary>Writes the live nodes, in order, as <c>vectors.GEN.bin</c> (atomically).</summary>
    public void Write(string path, long generation)
    {
        long count = LiveCount;
        long idsOffset = IndexFiles.HeaderBytes;
        var recordsOffset = IndexFiles.Align(idsOffset + count * sizeof(long));
        var length = recordsOffset + count * RecordBytes;
        var header = IndexFiles.DataHeader(IndexFiles.VectorsMagic, generation, count,
            [Dimensions, (long)Storage, RecordBytes, idsOffset, recordsOffset, length]);
        IndexFiles.WriteAtomically(path, stream =>
        {
            stream.Write(header);
            for (var node = 0; node < NodeCount; node++)
            {
                if (!IsDeleted(node))
                {
                    stream.Write(new ReadOnlySpan<byte>(_ids[node], sizeof(long)));
                }
            }

            Pad(stream, recordsOffset);
            for (var node = 0; node < NodeCount; node++)
            {
                if (!IsDeleted(node))
                {
                    stream.Write(new ReadOnlySpan<byte>(_records[node], RecordBytes));
                }
            }

            if (stream.Position != length)
            {
                throw new InvalidOperationException($"{path}: wrote {stream.Position} bytes, expected {length}");
            }
        });
    }

    /// <summary>Zero bytes up to <paramref name="offset"/>.</summary>
    public static void Pad(Stream stream, long offset)
    {
        Span<byte> zeros = stackalloc byte[64];
        zeros.Clear();
        while (stream.Position < offset)
        {
            stream.Write(zeros[..(int)Math.Min(64, offset - stream.Position)]);
        }
    }

    public void Dispose()
    {
        _ids.Dispose();
        _records.Dispose();
        _deleted.Dispose();
        _file?.Dispose();
    }
}
