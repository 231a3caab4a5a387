using System.Collections.Concurrent;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics.X86;

namespace Enclave.Knowledge.Vectors;

/// <summary>
/// Hierarchical navigable small-world graph (Malkov &amp; Yashunin, 2018). Every node gets a random top level
/// (P(level ≥ l) = M^−l); it is linked to at most M neighbours on each upper level and 2M on level 0, chosen
/// from an efConstruction-wide beam by the paper's heuristic (keep a candidate only if it is closer to the new node
/// than to any neighbour already kept), and back-linked with the same heuristic pruning when a list overflows.
/// A search descends greedily from the entry point and runs an efSearch-wide beam on level 0.
/// <para>
/// Removed and replaced vectors are tombstones: the graph keeps routing through them but never returns them, and
/// a filter is applied inside the level-0 beam (only admitted nodes enter the result set, while every node keeps
/// routing), so a selective filter or many tombstones widen the walk instead of returning fewer than k hits.
/// Flush repairs the neighbour lists that pointed at tombstones (candidates: the live neighbours plus the
/// tombstones' own neighbours, re-selected with the heuristic) and writes a compacted graph.
/// </para>
/// <para>
/// Layout: level-0 lists are a fixed stride of 1 + 2M ints per node ([count, ids…]); a node's upper lists are
/// level × (1 + M) contiguous ints in a shared arena, found through a per-node offset. All of it lives in the mapped
/// <c>graph.GEN.bin</c> for the nodes found on Open (copy-on-write, so edits stay private until the next Flush),
/// and in native segments for nodes added since.
/// </para>
/// </summary>
public sealed unsafe class HnswVectorIndex : PersistentVectorIndex
{
    private const int MaxLevel = 15;
    private const int LockStripes = 4096;

    // graph.GEN.bin layout fields after the common header.
    private const int FieldM = 0, FieldLevelsOffset = 1, FieldLinksOffset = 2, FieldUpperOffsetsOffset = 3, FieldUpperOffset = 4,
        FieldUpperInts = 5, FieldLength = 6, FieldCount = 7;

    private readonly int _m;
    private readonly int _m0;
    private readonly double _levelMultiplier;
    private readonly object[] _stripes;
    private readonly object _entryLock = new();
    private readonly ConcurrentBag<Scratch> _scratch = [];
    private readonly Random _random = new(0x5EED);
    private SegmentedBuffer _levels = null!;
    private SegmentedBuffer _links0 = null!;
    private SegmentedBuffer _upperOffsets = null!;
    private SegmentedBuffer _upper = null!;
    private long _upperUsed;
    private MappedFile? _graphFile;
    private int _entry = -1;
    private int _topLevel = -1;

    // True while AddRange links nodes from several threads: neighbour lists are then read and written under a
    // per-node lock stripe. Plain searches never run concurrently with a writer (the index's read/write lock).
    private bool _concurrentLinking;

    private HnswVectorIndex(string directory, VectorIndexOptions options)
        : base(directory, options)
    {
        _m = options.M;
        _m0 = 2 * options.M;
        _levelMultiplier = 1 / Math.Log(options.M);
        _stripes = new object[LockStripes];
        for (var i = 0; i < LockStripes; i++)
        {
            _stripes[i] = new object();
        }

        ResetGraph();
    }

    internal static HnswVectorIndex Create(string directory, VectorIndexOptions options)
    {
        var index = new HnswVectorIndex(directory, options);
        index.Initialise();
        return index;
    }

    internal static HnswVectorIndex Open(string directory, IndexFiles.Manifest manifest)
    {
        var index = new HnswVectorIndex(directory, manifest.Options);
        index.LoadGeneration(manifest);
        return index;
    }

    private int Links0Stride => 1 + _m0;

    private int UpperStride => 1 + _m;

    private protected override long GraphNativeBytes => _levels.NativeBytes + _links0.NativeBytes + _upperOffsets.NativeBytes + _upper.NativeBytes;

    /// <summary>[count, ids…] of a node's neighbour list on one level.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private int* Links(int node, int level) =>
        level == 0 ? (int*)_links0[node] : (int*)_upper[*(long*)_upperOffsets[node] + (level - 1) * (long)UpperStride];

    private int LevelOf(int node) => *_levels[node];

    private int MaxLinks(int level) => level == 0 ? _m0 : _m;

    // ---- insertion ----

    private protected override void AddPrepared(long id, ReadOnlySpan<float> prepared)
    {
        var node = Store.Append(id, prepared);
        var level = AllocateNode(node);
        var scratch = RentScratch();
        try
        {
            Insert(node, level, scratch);
        }
        finally
        {
            _scratch.Add(scratch);
        }
    }

    /// <summary>
    /// Appends and allocates every node first (single-threaded: storage only grows here), then links them on up
    /// to <paramref name="maxDegreeOfParallelism"/> threads, each holding one node's lock stripe at a time.
    /// </summary>
    private protected override void AddPreparedRange(ReadOnlySpan<long> ids, float[] prepared, int maxDegreeOfParallelism)
    {
        var dims = Options.Dimensions;
        var nodes = new int[ids.Length];
        var levels = new int[ids.Length];
        for (var i = 0; i < ids.Length; i++)
        {
            nodes[i] = Store.Append(ids[i], prepared.AsSpan(i * dims, dims));
            levels[i] = AllocateNode(nodes[i]);
        }

        var first = 0;
        if (_entry < 0 && ids.Length > 0)
        {
            var scratch = RentScratch();
            Insert(nodes[0], levels[0], scratch);
            _scratch.Add(scratch);
            first = 1;
        }

        _concurrentLinking = true;
        try
        {
            Parallel.For(first, ids.Length, new ParallelOptions { MaxDegreeOfParallelism = maxDegreeOfParallelism },
                () => RentScratch(),
                (i, _, scratch) =>
                {
                    Insert(nodes[i], levels[i], scratch);
                    return scratch;
                },
                scratch => _scratch.Add(scratch));
        }
        finally
        {
            _concurrentLinking = false;
        }
    }

    /// <summary>Draws the node's level and makes room for its lists (all counts start at zero).</summary>
    private int AllocateNode(int node)
    {
        var level = Math.Min(MaxLevel, (int)(-Math.Log(1 - _random.NextDouble()) * _levelMultiplier));
        _levels.EnsureCapacity(node + 1L);
        _links0.EnsureCapacity(node + 1L);
        _upperOffsets.EnsureCapacity(node + 1L);
        *_levels[node] = (byte)level;
        *(long*)_upperOffsets[node] = level == 0 ? -1 : AllocateUpper(level * UpperStride);
        return level;
    }

    /// <summary>A zeroed run of ints in the upper-level arena that does not straddle two segments.</summary>
    private long AllocateUpper(int ints)
    {
        _upper.EnsureCapacity(_upperUsed + ints);
        if (_upper.ContiguousFrom(_upperUsed) < ints)
        {
            _upperUsed += _upper.ContiguousFrom(_upperUsed);
            _upper.EnsureCapacity(_upperUsed + ints);
        }

        var offset = _upperUsed;
        _upperUsed += ints;
        return offset;
    }

    private void Insert(int node, int level, Scratch scratch)
    {
        var q = VectorOf(node, scratch.NodeVector);
        int entry, top;
        lock (_entryLock)
        {
            entry = _entry;
            top = _topLevel;
            if (entry < 0)
            {
                _entry = node;
                _topLevel = level;
                return;
            }
        }

        var current = entry;
        var currentDistance = -Store.Score(q, current);
        for (var lc = top; lc > level; lc--)
        {
            GreedyStep(q, ref current, ref currentDistance, lc, scratch);
        }

        for (var lc = Math.Min(level, top); lc >= 0; lc--)
        {
            SearchLayer(q, current, Options.EfConstruction, lc, null, restricted: false, scratch);
            var count = scratch.DrainResultsAscending();
            if (count == 0)
            {
                continue;
            }

            var selected = SelectNeighbours(scratch.BeamDistances, scratch.BeamNodes, count, _m, scratch, scratch.Selected);
            var own = Links(node, lc);
            lock (Stripe(node))
            {
                for (var i = 0; i < selected; i++)
                {
                    own[1 + i] = scratch.Selected[i];
                }

                own[0] = selected;
            }

            for (var i = 0; i < selected; i++)
            {
                Connect(scratch.Selected[i], node, lc, scratch);
            }

            current = scratch.BeamNodes[0];
        }

        if (level > top)
        {
            lock (_entryLock)
            {
                if (level > _topLevel)
                {
                    _entry = node;
                    _topLevel = level;
                }
            }
        }
    }

    /// <summary>Adds <paramref name="added"/> to <paramref name="node"/>'s list, pruning with the heuristic when full.</summary>
    private void Connect(int node, int added, int level, Scratch scratch)
    {
        var max = MaxLinks(level);
        lock (Stripe(node))
        {
            var list = Links(node, level);
            var count = list[0];
            for (var i = 1; i <= count; i++)
            {
                if (list[i] == added)
                {
                    return;
                }
            }

            if (count < max)
            {
                list[1 + count] = added;
                list[0] = count + 1;
                return;
            }

            var v = VectorOf(node, scratch.PruneVector);
            for (var i = 0; i < count; i++)
            {
                scratch.PruneNodes[i] = list[1 + i];
                scratch.PruneDistances[i] = -Store.Score(v, list[1 + i]);
            }

            scratch.PruneNodes[count] = added;
            scratch.PruneDistances[count] = -Store.Score(v, added);
            Array.Sort(scratch.PruneDistances, scratch.PruneNodes, 0, count + 1);
            var kept = SelectNeighbours(scratch.PruneDistances, scratch.PruneNodes, count + 1, max, scratch, scratch.PruneSelected);
            for (var i = 0; i < kept; i++)
            {
                list[1 + i] = scratch.PruneSelected[i];
            }

            list[0] = kept;
        }
    }

    /// <summary>
    /// The paper's neighbour-selection heuristic over candidates sorted by distance to the base: a candidate is kept
    /// only if it is closer to the base than to every neighbour kept so far, which spreads links across directions
    /// and keeps clusters connected to each other.
    /// </summary>
    private int SelectNeighbours(float[] distances, int[] nodes, int count, int max, Scratch scratch, int[] selected)
    {
        var kept = 0;
        for (var i = 0; i < count && kept < max; i++)
        {
            var candidate = nodes[i];
            var candidateVector = VectorOf(candidate, scratch.PairVector);
            var good = true;
            for (var j = 0; j < kept; j++)
            {
                if (-Store.Score(candidateVector, selected[j]) < distances[i])
                {
                    good = false;
                    break;
                }
            }

            if (good)
            {
                selected[kept++] = candidate;
            }
        }

        return kept;
    }

    // ---- search ----

    /// <summary>Like <see cref="PersistentVectorIndex.Search"/> with this search's beam width instead of the option's.</summary>
    public IReadOnlyList<VectorHit> Search(ReadOnlySpan<float> query, int k, int efSearch, Func<long, bool>? filter = null)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(efSearch, 1);
        return SearchCore(query, k, filter, efSearch);
    }

    private protected override IReadOnlyList<VectorHit> SearchPrepared(float* query, int k, Func<long, bool>? filter, int efSearch)
    {
        var entry = _entry;
        if (entry < 0)
        {
            return [];
        }

        var scratch = RentScratch();
        try
        {
            var current = entry;
            var currentDistance = -Store.Score(query, current);
            for (var lc = _topLevel; lc > 0; lc--)
            {
                GreedyStep(query, ref current, ref currentDistance, lc, scratch);
            }

            var ef = Math.Max(efSearch > 0 ? efSearch : Options.EfSearch, k);
            SearchLayer(query, current, ef, 0, filter, restricted: filter is not null || Store.DeletedCount > 0, scratch);
            var results = scratch.Results;
            while (results.Count > k)
            {
                results.Pop();
            }

            var hits = new List<VectorHit>(results.Count);
            while (results.Count > 0)
            {
                hits.Add(new VectorHit(Store.IdOf(results.TopNode), results.TopKey));
                results.Pop();
            }

            return Sorted(hits);
        }
        finally
        {
            _scratch.Add(scratch);
        }
    }

    /// <summary>Moves to the closest neighbour on an upper level until no neighbour is closer (beam of one).</summary>
    private void GreedyStep(float* q, ref int current, ref float currentDistance, int level, Scratch scratch)
    {
        var changed = true;
        while (changed)
        {
            changed = false;
            var count = CopyLinks(current, level, scratch.Neighbours);
            for (var i = 0; i < count; i++)
            {
                var candidate = scratch.Neighbours[i];
                var distance = -Store.Score(q, candidate);
                if (distance < currentDistance)
                {
                    currentDistance = distance;
                    current = candidate;
                    changed = true;
                }
            }
        }
    }

    /// <summary>
    /// The ef-wide beam on one level. Results (scratch.Results, a min-heap on score: its top is the worst kept)
    /// admit only live nodes the filter accepts, while every reached node keeps routing. When the search is
    /// restricted (a filter or tombstones) and fewer than ef nodes were admitted, the beam keeps expanding past the
    /// usual stopping point, so a selective filter still fills k results when the graph reaches them.
    /// </summary>
    private void SearchLayer(float* q, int entry, int ef, int level, Func<long, bool>? filter, bool restricted, Scratch scratch)
    {
        var store = Store;
        scratch.BeginVisit(store.NodeCount);
        var visited = scratch.Visited;
        var epoch = scratch.Epoch;
        var candidates = scratch.Candidates;
        var results = scratch.Results;
        candidates.Clear();
        results.Clear();

        visited[entry] = epoch;
        var entryDistance = -store.Score(q, entry);
        candidates.Push(entryDistance, entry);
        if (Admits(entry, filter))
        {
            results.Push(-entryDistance, entry);
        }

        var bound = results.Count > 0 ? -results.TopKey : float.PositiveInfinity;
        while (candidates.Count > 0)
        {
            var distance = candidates.TopKey;
            var node = candidates.TopNode;
            if (distance > bound && (results.Count == ef || !restricted))
            {
                break;
            }

            candidates.Pop();
            var count = CopyLinks(node, level, scratch.Neighbours);
            for (var i = 0; i < count; i++)
            {
                var neighbour = scratch.Neighbours[i];
                if (visited[neighbour] == epoch)
                {
                    continue;
                }

                visited[neighbour] = epoch;
                if (Sse.IsSupported && i + 1 < count)
                {
                    // The next neighbour's record is a random address: start its first lines on their way while
                    // this one is scored (the hardware prefetcher then follows the sequential rest).
                    var next = store.Record(scratch.Neighbours[i + 1]);
                    Sse.Prefetch0(next);
                    Sse.Prefetch0(next + 64);
                }

                var d = -store.Score(q, neighbour);
                if (results.Count < ef || d < bound)
                {
                    candidates.Push(d, neighbour);
                    if (Admits(neighbour, filter))
                    {
                        if (results.Count < ef)
                        {
                            results.Push(-d, neighbour);
                        }
                        else
                        {
                            results.ReplaceTop(-d, neighbour);
                        }

                        bound = -results.TopKey;
                    }
                }
            }
        }
    }

    private bool Admits(int node, Func<long, bool>? filter) => !Store.IsDeleted(node) && (filter is null || filter(Store.IdOf(node)));

    /// <summary>Copies a neighbour list (under the node's lock stripe while other threads may be linking).</summary>
    private int CopyLinks(int node, int level, int[] destination)
    {
        var list = Links(node, level);
        if (!_concurrentLinking)
        {
            var count = Math.Min(list[0], MaxLinks(level));
            new ReadOnlySpan<int>(list + 1, count).CopyTo(destination);
            return count;
        }

        lock (Stripe(node))
        {
            var count = Math.Min(list[0], MaxLinks(level));
            new ReadOnlySpan<int>(list + 1, count).CopyTo(destination);
            return count;
        }
    }

    private object Stripe(int node) => _stripes[node & (LockStripes - 1)];

    /// <summary>A node's vector as fp32: the record itself for fp32 storage, else decoded into a pinned buffer.</summary>
    private float* VectorOf(int node, float[] pinnedBuffer)
    {
        if (Store.Storage == VectorStorage.Float32)
        {
            return (float*)Store.Record(node);
        }

        Store.Decode(node, pinnedBuffer);
        return (float*)Unsafe.AsPointer(ref MemoryMarshal.GetArrayDataReference(pinnedBuffer));
    }

    private Scratch RentScratch() => _scratch.TryTake(out var scratch) ? scratch : new Scratch(Options.Dimensions, _m0, Options.EfConstruction);

    // ---- flush: repair, compaction, persistence ----

    private protected override (int Node, int Level) WriteGraph(long generation)
    {
        if (Store.DeletedCount > 0)
        {
            RepairAroundTombstones();
        }

        var map = Store.CompactionMap();
        long count = Store.LiveCount;
        long upperInts = 0;
        for (var node = 0; node < Store.NodeCount; node++)
        {
            if (map[node] >= 0)
            {
                upperInts += LevelOf(node) * (long)UpperStride;
            }
        }

        long levelsOffset = IndexFiles.HeaderBytes;
        var linksOffset = IndexFiles.Align(levelsOffset + count);
        var upperOffsetsOffset = IndexFiles.Align(linksOffset + count * Links0Stride * sizeof(int));
        var upperOffset = IndexFiles.Align(upperOffsetsOffset + count * sizeof(long));
        var length = upperOffset + upperInts * sizeof(int);
        var header = IndexFiles.DataHeader(IndexFiles.GraphMagic, generation, count,
            [_m, levelsOffset, linksOffset, upperOffsetsOffset, upperOffset, upperInts, length]);
        var path = Path.Combine(Directory, IndexFiles.GraphName(generation));
        IndexFiles.WriteAtomically(path, stream =>
        {
            stream.Write(header);
            for (var node = 0; node < Store.NodeCount; node++)
            {
                if (map[node] >= 0)
                {
                    stream.WriteByte((byte)LevelOf(node));
                }
            }

            VectorStore.Pad(stream, linksOffset);
            var list = new int[Math.Max(Links0Stride, UpperStride)];
            for (var node = 0; node < Store.NodeCount; node++)
            {
                if (map[node] >= 0)
                {
                    WriteList(stream, node, 0, map, list, Links0Stride);
                }
            }

            VectorStore.Pad(stream, upperOffsetsOffset);
            long next = 0;
            for (var node = 0; node < Store.NodeCount; node++)
            {
                if (map[node] >= 0)
                {
                    var level = LevelOf(node);
                    var offset = level == 0 ? -1 : next;
                    next += level * (long)UpperStride;
                    stream.Write(MemoryMarshal.AsBytes(new ReadOnlySpan<long>(ref offset)));
                }
            }

            VectorStore.Pad(stream, upperOffset);
            for (var node = 0; node < Store.NodeCount; node++)
            {
                if (map[node] >= 0)
                {
                    for (var level = 1; level <= LevelOf(node); level++)
                    {
                        WriteList(stream, node, level, map, list, UpperStride);
                    }
                }
            }

            if (stream.Position != length)
            {
                throw new InvalidOperationException($"{path}: wrote {stream.Position} bytes, expected {length}");
            }
        });
        return count == 0 ? (-1, -1) : (map[_entry], _topLevel);
    }

    /// <summary>One neighbour list in compacted numbering (tombstones left out), padded to its stride.</summary>
    private void WriteList(Stream stream, int node, int level, int[] map, int[] buffer, int stride)
    {
        Array.Clear(buffer);
        var list = Links(node, level);
        var count = Math.Min(list[0], MaxLinks(level));
        var kept = 0;
        for (var i = 0; i < count; i++)
        {
            var target = map[list[1 + i]];
            if (target >= 0)
            {
                buffer[1 + kept++] = target;
            }
        }

        buffer[0] = kept;
        stream.Write(MemoryMarshal.AsBytes(buffer.AsSpan(0, stride)));
    }

    /// <summary>
    /// Before compaction: every live list that points at a tombstone is re-selected with the heuristic from its live
    /// neighbours and the tombstones' live neighbours; a list left empty is rebuilt by an efConstruction search from
    /// the entry point. A tombstoned entry point hands over to the live node with the highest level.
    /// </summary>
    private void RepairAroundTombstones()
    {
        var store = Store;
        if (store.LiveCount == 0)
        {
            _entry = -1;
            _topLevel = -1;
            return;
        }

        if (store.IsDeleted(_entry))
        {
            var best = -1;
            for (var node = 0; node < store.NodeCount; node++)
            {
                if (!store.IsDeleted(node) && (best < 0 || LevelOf(node) > LevelOf(best)))
                {
                    best = node;
                }
            }

            _entry = best;
            _topLevel = LevelOf(best);
        }

        var scratch = RentScratch();
        var seen = new HashSet<int>();
        var candidates = new List<int>();
        try
        {
            for (var node = 0; node < store.NodeCount; node++)
            {
                if (store.IsDeleted(node))
                {
                    continue;
                }

                for (var level = 0; level <= LevelOf(node); level++)
                {
                    var list = Links(node, level);
                    var count = Math.Min(list[0], MaxLinks(level));
                    var touched = false;
                    for (var i = 0; i < count && !touched; i++)
                    {
                        touched = store.IsDeleted(list[1 + i]);
                    }

                    if (touched)
                    {
                        RepairList(node, level, seen, candidates, scratch);
                    }
                }
            }
        }
        finally
        {
            _scratch.Add(scratch);
        }
    }

    private void RepairList(int node, int level, HashSet<int> seen, List<int> candidates, Scratch scratch)
    {
        var store = Store;
        seen.Clear();
        candidates.Clear();
        seen.Add(node);
        var list = Links(node, level);
        var count = Math.Min(list[0], MaxLinks(level));
        for (var i = 0; i < count; i++)
        {
            var neighbour = list[1 + i];
            if (!store.IsDeleted(neighbour))
            {
                if (seen.Add(neighbour))
                {
                    candidates.Add(neighbour);
                }

                continue;
            }

            var second = Links(neighbour, level);
            var secondCount = Math.Min(second[0], MaxLinks(level));
            for (var j = 0; j < secondCount; j++)
            {
                var candidate = second[1 + j];
                if (!store.IsDeleted(candidate) && seen.Add(candidate))
                {
                    candidates.Add(candidate);
                }
            }
        }

        var v = VectorOf(node, scratch.NodeVector);
        int kept;
        if (candidates.Count == 0)
        {
            // Nothing live within two hops: search for neighbours from the entry point as an insert would.
            var current = _entry;
            var currentDistance = -store.Score(v, current);
            for (var lc = _topLevel; lc > level; lc--)
            {
                GreedyStep(v, ref current, ref currentDistance, lc, scratch);
            }

            SearchLayer(v, current, Options.EfConstruction, level, null, restricted: true, scratch);
            var found = scratch.DrainResultsAscending();
            var write = 0;
            for (var i = 0; i < found; i++)
            {
                if (scratch.BeamNodes[i] != node)
                {
                    scratch.BeamNodes[write] = scratch.BeamNodes[i];
                    scratch.BeamDistances[write++] = scratch.BeamDistances[i];
                }
            }

            kept = SelectNeighbours(scratch.BeamDistances, scratch.BeamNodes, write, MaxLinks(level), scratch, scratch.Selected);
        }
        else
        {
            scratch.EnsureBeam(candidates.Count);
            for (var i = 0; i < candidates.Count; i++)
            {
                scratch.BeamNodes[i] = candidates[i];
                scratch.BeamDistances[i] = -store.Score(v, candidates[i]);
            }

            Array.Sort(scratch.BeamDistances, scratch.BeamNodes, 0, candidates.Count);
            kept = SelectNeighbours(scratch.BeamDistances, scratch.BeamNodes, candidates.Count, MaxLinks(level), scratch, scratch.Selected);
        }

        for (var i = 0; i < kept; i++)
        {
            list[1 + i] = scratch.Selected[i];
        }

        list[0] = kept;
    }

    private protected override void LoadGraph(IndexFiles.Manifest manifest)
    {
        var path = Path.Combine(Directory, IndexFiles.GraphName(manifest.Generation));
        var file = MappedFile.Open(path);
        try
        {
            var count = manifest.Count;
            var fields = IndexFiles.ReadDataHeader(file, IndexFiles.GraphMagic, manifest.Generation, count, FieldCount);
            var upperInts = fields[FieldUpperInts];
            long levelsOffset = IndexFiles.HeaderBytes;
            var linksOffset = IndexFiles.Align(levelsOffset + count);
            var upperOffsetsOffset = IndexFiles.Align(linksOffset + count * Links0Stride * sizeof(int));
            var upperOffset = IndexFiles.Align(upperOffsetsOffset + count * sizeof(long));
            var length = upperOffset + upperInts * sizeof(int);
            if (fields[FieldM] != _m || fields[FieldLevelsOffset] != levelsOffset || fields[FieldLinksOffset] != linksOffset
                || fields[FieldUpperOffsetsOffset] != upperOffsetsOffset || fields[FieldUpperOffset] != upperOffset || upperInts < 0 || fields[FieldLength] != length)
            {
                throw new InvalidDataException($"{path}: section layout does not match M={_m} and count {count}; the file is corrupt");
            }

            file.ExpectLength(length);
            var levels = new SegmentedBuffer(1, 16, file.Pointer + levelsOffset, count);
            var links0 = new SegmentedBuffer(Links0Stride * sizeof(int), 10, file.Pointer + linksOffset, count);
            var upperOffsets = new SegmentedBuffer(sizeof(long), 12, file.Pointer + upperOffsetsOffset, count);
            var upper = new SegmentedBuffer(sizeof(int), 16, file.Pointer + upperOffset, upperInts);
            ValidateGraph(path, manifest, levels, links0, upperOffsets, upper, upperInts);
            ReleaseGraph();
            _graphFile = file;
            _levels = levels;
            _links0 = links0;
            _upperOffsets = upperOffsets;
            _upper = upper;
            _upperUsed = upperInts;
            _entry = manifest.EntryNode;
            _topLevel = manifest.MaxLevel;
        }
        catch
        {
            file.Dispose();
            throw;
        }
    }

    /// <summary>
    /// One pass over the mapped graph so a damaged file fails on Open, naming the file, rather than sending a search
    /// outside the mapping: levels, list counts, neighbour ids, upper-list offsets and the entry point.
    /// </summary>
    private void ValidateGraph(string path, IndexFiles.Manifest manifest, SegmentedBuffer levels, SegmentedBuffer links0,
        SegmentedBuffer upperOffsets, SegmentedBuffer upper, long upperInts)
    {
        var count = manifest.Count;
        if (count == 0 ? manifest.EntryNode != -1 : manifest.EntryNode < 0 || manifest.EntryNode >= count || *levels[manifest.EntryNode] != manifest.MaxLevel)
        {
            throw new InvalidDataException($"{path}: entry point {manifest.EntryNode} (level {manifest.MaxLevel}) is not a node of this graph; the file is corrupt");
        }

        long nextUpper = 0;
        for (long node = 0; node < count; node++)
        {
            int level = *levels[node];
            var offset = *(long*)upperOffsets[node];
            if (level > manifest.MaxLevel || (level == 0 ? offset != -1 : offset != nextUpper))
            {
                throw new InvalidDataException($"{path}: node {node} has level {level} and upper offset {offset}; the file is corrupt");
            }

            nextUpper += level * (long)UpperStride;
            Check((int*)links0[node], _m0, node);
            for (var l = 1; l <= level; l++)
            {
                Check((int*)upper[offset + (l - 1) * (long)UpperStride], _m, node);
            }
        }

        if (nextUpper != upperInts)
        {
            throw new InvalidDataException($"{path}: upper lists hold {upperInts} ints, the levels need {nextUpper}; the file is corrupt");
        }

        void Check(int* list, int max, long node)
        {
            var n = list[0];
            if (n < 0 || n > max)
            {
                throw new InvalidDataException($"{path}: node {node} has {n} neighbours (at most {max}); the file is corrupt");
            }

            for (var i = 1; i <= n; i++)
            {
                if ((uint)list[i] >= (ulong)count)
                {
                    throw new InvalidDataException($"{path}: node {node} links to node {list[i]} of {count}; the file is corrupt");
                }
            }
        }
    }

    private protected override void ReleaseGraph()
    {
        _levels?.Dispose();
        _links0?.Dispose();
        _upperOffsets?.Dispose();
        _upper?.Dispose();
        _graphFile?.Dispose();
        _graphFile = null;
        ResetGraph();
    }

    private void ResetGraph()
    {
        _levels = new SegmentedBuffer(1, 16);
        _links0 = new SegmentedBuffer(Links0Stride * sizeof(int), 10);
        _upperOffsets = new SegmentedBuffer(sizeof(long), 12);
        _upper = new SegmentedBuffer(sizeof(int), 16);
        _upperUsed = 0;
        _entry = -1;
        _topLevel = -1;
    }

    /// <summary>Per-search working memory, pooled so a search allocates nothing per visited node.</summary>
    private sealed class Scratch
    {
        public Scratch(int dimensions, int m0, int efConstruction)
        {
            NodeVector = GC.AllocateUninitializedArray<float>(dimensions, pinned: true);
            PruneVector = GC.AllocateUninitializedArray<float>(dimensions, pinned: true);
            PairVector = GC.AllocateUninitializedArray<float>(dimensions, pinned: true);
            Neighbours = new int[m0 + 1];
            PruneNodes = new int[m0 + 1];
            PruneDistances = new float[m0 + 1];
            PruneSelected = new int[m0 + 1];
            Selected = new int[m0 + 1];
            BeamNodes = new int[efConstruction];
            BeamDistances = new float[efConstruction];
        }

        public int[] Visited { get; private set; } = [];

        public int Epoch { get; private set; }

        public NodeHeap Candidates { get; } = new();

        public NodeHeap Results { get; } = new();

        public float[] NodeVector { get; }

        public float[] PruneVector { get; }

        public float[] PairVector { get; }

        public int[] Neighbours { get; }

        public int[] PruneNodes { get; }

        public float[] PruneDistances { get; }

        public int[] PruneSelected { get; }

        public int[] Selected { get; }

        public int[] BeamNodes { get; private set; }

        public float[] BeamDistances { get; private set; }

        /// <summary>Starts a visit: a new epoch marks nodes, so the array is cleared only when the epoch wraps.</summary>
        public void BeginVisit(int nodeCount)
        {
            if (Visited.Length < nodeCount)
            {
                Visited = new int[Math.Max(nodeCount, Visited.Length * 2)];
                Epoch = 0;
            }

            if (++Epoch == int.MaxValue)
            {
                Array.Clear(Visited);
                Epoch = 1;
            }
        }

        public void EnsureBeam(int count)
        {
            if (BeamNodes.Length < count)
            {
                BeamNodes = new int[count];
                BeamDistances = new float[count];
            }
        }

        /// <summary>Empties Results into BeamNodes/BeamDistances, closest first; returns how many.</summary>
        public int DrainResultsAscending()
        {
            var count = Results.Count;
            EnsureBeam(count);
            for (var i = count - 1; i >= 0; i--)
            {
                BeamNodes[i] = Results.TopNode;
                BeamDistances[i] = -Results.TopKey;
                Results.Pop();
            }

            return count;
        }
    }
}
