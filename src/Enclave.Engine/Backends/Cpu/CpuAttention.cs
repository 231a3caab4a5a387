using System.Runtime.CompilerServices;
using System.Numerics.Tensors;
using System.Runtime.Intrinsics;

namespace Enclave.Engine.Backends.Cpu;

/// <summary>
/// Paged causal attention. First this step's k/v rows are stored at their cache slots; then the queries walk their
/// sequence's cached positions 0..p (p = the query's position) through the block table, in blocks of keys: scores for
/// the block, then an online-softmax update (running max and sum, the accumulated values rescaled when the max grows),
/// so the result is exact whatever the context length and no buffer the size of the context is needed. Query head h
/// reads kv head h / (heads / kvHeads).
/// <para>
/// A sequence with more than one query (prefill) is cut into tiles: up to four vectors' worth of (token, query head)
/// rows that share one KV head, in token-major order, so a tile holds every query head of a GQA group for several
/// consecutive tokens. A tile's queries are transposed once, rows across the vector lanes; a block of keys is then
/// scored as a small matrix product (each key element broadcast against four row vectors, several keys at a time into
/// independent accumulators), the softmax update runs down the rows' lanes with the causal mask applied per lane, and
/// the values are accumulated as a second register-blocked product (four rows × up to four vectors of head_dim held
/// across the block). Keys and values are read straight from the paged cache. A one-token query (decode) keeps the
/// per-(token, head) walk, which splits the work more finely.
/// </para>
/// </summary>
internal static unsafe class CpuAttention
{
    private const int KeyBlock = 128;
    private const int MaxHeadDim = 1024;

    /// <summary>Keys scored per step of a tile's walk.</summary>
    private const int TileKeys = 64;

    /// <summary>Head_dim elements a tile's score accumulators sum before they are added to the stored scores.</summary>
    private const int ScoreChunk = 16;

    /// <summary>Rows of a tile: four vectors.</summary>
    private static int TileRows(int width) => width == 1 ? 0 : 4 * (width / 32);

    /// <summary>Scratch floats per thread for a tile: transposed queries, scores, outputs and five per-row vectors.</summary>
    private static long TileScratchFloats(int width, int headDim)
    {
        long rows = TileRows(width);
        return (rows * headDim * 2) + (rows * TileKeys) + (rows * 5);
    }

    public sealed class Job : CpuJob, IDisposable
    {
        public float* Q;
        public float* KeyCache;
        public float* ValueCache;
        public float* Output;
        public int Heads;
        public int KvHeads;
        public int HeadDim;
        public int BlockSize;
        public float Scale;
        public int Width;
        public int[] Positions = [];
        public int[] TokenSequence = [];
        public SequenceSlice[] Sequences = [];

        /// <summary>Four ints a tile: sequence, KV head, first row, row count (rows: token-major (token, group head) pairs).</summary>
        public int[] Tiles = [];
        public int TileCount;

        /// <summary>Tokens whose queries take the per-(token, head) walk; items after the tiles, <see cref="Heads"/> a token.</summary>
        public int[] Singles = [];

        private readonly CpuThreadScratch _scratch = new();

        /// <summary>Makes sure every thread has <paramref name="floats"/> of scratch for a tile; grows only.</summary>
        public void EnsureScratch(int threads, long floats) => _scratch.Ensure(threads, floats);

        public void Dispose() => _scratch.Dispose();

        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        public override void Execute(int index, int worker)
        {
            if (index < TileCount)
            {
                switch (Width)
                {
                    case 512:
                        Tile<Simd512, Vector512<float>>(index, _scratch[worker]);
                        break;
                    case 256:
                        Tile<Simd256, Vector256<float>>(index, _scratch[worker]);
                        break;
                    default:
                        Tile<Simd128, Vector128<float>>(index, _scratch[worker]);
                        break;
                }

                return;
            }

            index -= TileCount;
            var t = Singles[index / Heads];
            var h = index % Heads;
            switch (Width)
            {
                case 512:
                    Query<Simd512, Vector512<float>>(t, h);
                    break;
                case 256:
                    Query<Simd256, Vector256<float>>(t, h);
                    break;
                case 128:
                    Query<Simd128, Vector128<float>>(t, h);
                    break;
                default:
                    Query<SimdScalar, float>(t, h);
                    break;
            }
        }

        private void Query<TS, TV>(int t, int h)
            where TS : ISimd<TV>
            where TV : struct
        {
            var d = HeadDim;
            var kvHead = h / (Heads / KvHeads);
            var table = Sequences[TokenSequence[t]].BlockTable;
            var context = Positions[t] + 1;
            var q = Q + (((nint)t * Heads) + h) * d;
            var kvStride = (nint)KvHeads * d;

            var scores = stackalloc float[KeyBlock];
            var rows = stackalloc nint[KeyBlock]; // the block's key and value rows: slot × row stride + this KV head
            var acc = stackalloc float[d];
            new Span<float>(acc, d).Clear();
            var max = float.NegativeInfinity;
            var sum = 0f;

            for (var j0 = 0; j0 < context; j0 += KeyBlock)
            {
                var n = Math.Min(KeyBlock, context - j0);
                var blockMax = float.NegativeInfinity;
                for (var j = 0; j < n; j++)
                {
                    rows[j] = (Slot(table, j0 + j) * kvStride) + ((nint)kvHead * d);
                    var s = Dot<TS, TV>(q, KeyCache + rows[j], d) * Scale;
                    scores[j] = s;
                    blockMax = MathF.Max(blockMax, s);
                }

                var newMax = MathF.Max(max, blockMax);
                if (newMax > max && max != float.NegativeInfinity)
                {
                    var correction = MathF.Exp(max - newMax);
                    ScaleInPlace<TS, TV>(acc, correction, d);
                    sum *= correction;
                }

                max = newMax;
                var weights = new Span<float>(scores, n);
                if (Width == 1)
                {
                    for (var j = 0; j < n; j++)
                    {
                        weights[j] = MathF.Exp(weights[j] - max);
                    }
                }
                else
                {
                    TensorPrimitives.Subtract(weights, max, weights);
                    TensorPrimitives.Exp(weights, weights);
                }

                for (var j = 0; j < n; j++)
                {
                    sum += weights[j];
                }

                AccumulateRows<TS, TV>(acc, scores, ValueCache, rows, n, d);
            }

            var output = Output + (((nint)t * Heads) + h) * d;
            ScaleInPlace<TS, TV>(acc, 1f / sum, d);
            new ReadOnlySpan<float>(acc, d).CopyTo(new Span<float>(output, d));
        }

        /// <summary>
        /// One tile: rows [first, first + count) of a sequence's (token, group head) pairs for one KV head. Scratch:
        /// qt [d][R] (the queries, rows across lanes, padding rows zero), s [TileKeys][R] (a block's scores, then its
        /// weights), o [R][d] (the accumulated values), and per row the running max, running sum, the block's
        /// correction, the row's position and the block's max (R = four vectors).
        /// </summary>
        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        private void Tile<TS, TV>(int tile, float* scratch)
            where TS : ISimd<TV>
            where TV : struct
        {
            var sequence = Sequences[Tiles[4 * tile]];
            var kvHead = Tiles[(4 * tile) + 1];
            var first = Tiles[(4 * tile) + 2];
            var count = Tiles[(4 * tile) + 3];
            var table = sequence.BlockTable;
            var d = HeadDim;
            var group = Heads / KvHeads;
            var c = TS.Count;
            var r = 4 * c;
            var qt = scratch;
            var s = qt + ((nint)d * r);
            var o = s + (TileKeys * r);
            var runMax = o + ((nint)r * d);
            var runSum = runMax + r;
            var correction = runSum + r;
            var limit = correction + r;
            var blockMax = limit + r;
            var rowOffsets = stackalloc nint[r]; // each row's q and output offset: (token × heads + head) × d
            var keyRows = stackalloc nint[TileKeys]; // the block's key and value rows: slot × row stride + this KV head

            var keyEnd = 0;
            var minPosition = int.MaxValue;
            for (var i = 0; i < r; i++)
            {
                runMax[i] = float.NegativeInfinity;
                runSum[i] = 0f;
                if (i < count)
                {
                    var row = first + i;
                    var token = row / group;
                    var t = sequence.QueryStart + token;
                    rowOffsets[i] = (((nint)t * Heads) + (kvHead * group) + (row - (token * group))) * d;
                    var position = Positions[t];
                    limit[i] = position;
                    keyEnd = Math.Max(keyEnd, position + 1);
                    minPosition = Math.Min(minPosition, position);
                }
                else
                {
                    limit[i] = float.PositiveInfinity; // padding rows see every key (their scores are 0 and unused)
                }
            }

            for (var i = 0; i < count; i++)
            {
                var q = Q + rowOffsets[i];
                for (var k = 0; k < d; k++)
                {
                    qt[(k * r) + i] = q[k];
                }
            }

            for (var i = count; i < r; i++)
            {
                for (var k = 0; k < d; k++)
                {
                    qt[(k * r) + i] = 0f;
                }
            }

            var kvStride = (nint)KvHeads * d;
            var kvOffset = (nint)kvHead * d;
            var usedRows = (count + 3) & ~3;
            for (var j0 = 0; j0 < keyEnd; j0 += TileKeys)
            {
                var n = Math.Min(TileKeys, keyEnd - j0);
                for (var j = 0; j < n; j++)
                {
                    keyRows[j] = (Slot(table, j0 + j) * kvStride) + kvOffset;
                }

                // Scores scaled, keys past a row's position masked (keys up to the smallest position in the tile
                // are visible to every row), and the block's maximum per row.
                new Span<float>(blockMax, r).Fill(float.NegativeInfinity);
                Scores<TS, TV>(qt, KeyCache, keyRows, n, d, s, Scale, j0, Math.Max(0, minPosition + 1 - j0), limit, blockMax);

                // The online-softmax update down the rows' lanes: new max, the correction of what was accumulated,
                // the block's weights and their sum.
                for (var v = 0; v < r; v += c)
                {
                    var oldMax = TS.Load(runMax + v);
                    var newMax = TS.Max(oldMax, TS.Load(blockMax + v));
                    TS.Store(newMax, runMax + v);
                    var factor = TS.ExpNonPositive(TS.Subtract(oldMax, newMax));
                    TS.Store(factor, correction + v);
                    var sum = TS.Zero;
                    var w = s + v;
                    for (var j = 0; j < n; j++, w += r)
                    {
                        var e = TS.ExpNonPositive(TS.Subtract(TS.Load(w), newMax));
                        TS.Store(e, w);
                        sum = TS.Add(sum, e);
                    }

                    TS.Store(TS.MultiplyAdd(TS.Load(runSum + v), factor, sum), runSum + v);
                }

                AccumulateTile<TS, TV>(o, s, correction, ValueCache, keyRows, n, d, usedRows, j0 == 0);
            }

            for (var i = 0; i < count; i++)
            {
                var inverse = TS.Broadcast(1f / runSum[i]);
                var source = o + ((nint)i * d);
                var destination = Output + rowOffsets[i];
                var k = 0;
                for (; k <= d - c; k += c)
                {
                    TS.Store(TS.Multiply(TS.Load(source + k), inverse), destination + k);
                }

                for (; k < d; k++)
                {
                    destination[k] = source[k] * (1f / runSum[i]);
                }
            }
        }

        private nint Slot(int[] table, int position)
        {
            var block = position / BlockSize;
            return ((nint)table[block] * BlockSize) + (position - (block * BlockSize));
        }
    }

    /// <summary>
    /// s[j][·] = scale × the dot products of key j (keys + rows[j], d values) with every row of qt ([d][R], rows across
    /// R = four vectors of lanes), for j = 0..n−1: per head_dim element, each key's value broadcast against the four
    /// row vectors, four keys at a time into sixteen accumulators on 512-bit vectors (32 registers), two at a time
    /// otherwise. The sums run in chunks of <see cref="ScoreChunk"/> elements added up in s, which keeps each lane's
    /// chain of roundings short (one accumulator per lane over all of head_dim lost about twice the accuracy of the
    /// per-query dot product). From key index <paramref name="maskFrom"/> on, a score whose key (firstKey + j) lies
    /// past its row's position (limit) is −∞. blockMax[·] takes the maximum of each row's scores.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Scores<TS, TV>(float* qt, float* keys, nint* rows, int n, int d, float* s, float scale, int firstKey, int maskFrom, float* limit, float* blockMax)
        where TS : ISimd<TV>
        where TV : struct
    {
        var c = TS.Count;
        var r = 4 * c;
        var factor = TS.Broadcast(scale);
        var j = 0;
        if (c == 16)
        {
            for (; j + 4 <= n; j += 4)
            {
                float* k0 = keys + rows[j], k1 = keys + rows[j + 1], k2 = keys + rows[j + 2], k3 = keys + rows[j + 3];
                var row = s + (j * r);
                for (var chunk = 0; chunk < d; chunk += ScoreChunk)
                {
                    var kEnd = Math.Min(d, chunk + ScoreChunk);
                    TV a00 = TS.Zero, a01 = TS.Zero, a02 = TS.Zero, a03 = TS.Zero;
                    TV a10 = TS.Zero, a11 = TS.Zero, a12 = TS.Zero, a13 = TS.Zero;
                    TV a20 = TS.Zero, a21 = TS.Zero, a22 = TS.Zero, a23 = TS.Zero;
                    TV a30 = TS.Zero, a31 = TS.Zero, a32 = TS.Zero, a33 = TS.Zero;
                    var q = qt + ((nint)chunk * r);
                    for (var k = chunk; k < kEnd; k++, q += r)
                    {
                        TV q0 = TS.Load(q), q1 = TS.Load(q + c), q2 = TS.Load(q + (2 * c)), q3 = TS.Load(q + (3 * c));
                        var b = TS.Broadcast(k0[k]);
                        a00 = TS.MultiplyAdd(q0, b, a00);
                        a01 = TS.MultiplyAdd(q1, b, a01);
                        a02 = TS.MultiplyAdd(q2, b, a02);
                        a03 = TS.MultiplyAdd(q3, b, a03);
                        b = TS.Broadcast(k1[k]);
                        a10 = TS.MultiplyAdd(q0, b, a10);
                        a11 = TS.MultiplyAdd(q1, b, a11);
                        a12 = TS.MultiplyAdd(q2, b, a12);
                        a13 = TS.MultiplyAdd(q3, b, a13);
                        b = TS.Broadcast(k2[k]);
                        a20 = TS.MultiplyAdd(q0, b, a20);
                        a21 = TS.MultiplyAdd(q1, b, a21);
                        a22 = TS.MultiplyAdd(q2, b, a22);
                        a23 = TS.MultiplyAdd(q3, b, a23);
                        b = TS.Broadcast(k3[k]);
                        a30 = TS.MultiplyAdd(q0, b, a30);
                        a31 = TS.MultiplyAdd(q1, b, a31);
                        a32 = TS.MultiplyAdd(q2, b, a32);
                        a33 = TS.MultiplyAdd(q3, b, a33);
                    }

                    Put<TS, TV>(a00, row, chunk == 0);
                    Put<TS, TV>(a01, row + c, chunk == 0);
                    Put<TS, TV>(a02, row + (2 * c), chunk == 0);
                    Put<TS, TV>(a03, row + (3 * c), chunk == 0);
                    Put<TS, TV>(a10, row + r, chunk == 0);
                    Put<TS, TV>(a11, row + r + c, chunk == 0);
                    Put<TS, TV>(a12, row + r + (2 * c), chunk == 0);
                    Put<TS, TV>(a13, row + r + (3 * c), chunk == 0);
                    Put<TS, TV>(a20, row + (2 * r), chunk == 0);
                    Put<TS, TV>(a21, row + (2 * r) + c, chunk == 0);
                    Put<TS, TV>(a22, row + (2 * r) + (2 * c), chunk == 0);
                    Put<TS, TV>(a23, row + (2 * r) + (3 * c), chunk == 0);
                    Put<TS, TV>(a30, row + (3 * r), chunk == 0);
                    Put<TS, TV>(a31, row + (3 * r) + c, chunk == 0);
                    Put<TS, TV>(a32, row + (3 * r) + (2 * c), chunk == 0);
                    Put<TS, TV>(a33, row + (3 * r) + (3 * c), chunk == 0);
                }

                EmitKeys<TS, TV>(row, 4, j, r, c, blockMax, factor, maskFrom, firstKey, limit);
            }
        }

        for (; j + 2 <= n; j += 2)
        {
            float* k0 = keys + rows[j], k1 = keys + rows[j + 1];
            var row = s + (j * r);
            for (var chunk = 0; chunk < d; chunk += ScoreChunk)
            {
                var kEnd = Math.Min(d, chunk + ScoreChunk);
                TV a00 = TS.Zero, a01 = TS.Zero, a02 = TS.Zero, a03 = TS.Zero;
                TV a10 = TS.Zero, a11 = TS.Zero, a12 = TS.Zero, a13 = TS.Zero;
                var q = qt + ((nint)chunk * r);
                for (var k = chunk; k < kEnd; k++, q += r)
                {
                    TV q0 = TS.Load(q), q1 = TS.Load(q + c), q2 = TS.Load(q + (2 * c)), q3 = TS.Load(q + (3 * c));
                    var b = TS.Broadcast(k0[k]);
                    a00 = TS.MultiplyAdd(q0, b, a00);
                    a01 = TS.MultiplyAdd(q1, b, a01);
                    a02 = TS.MultiplyAdd(q2, b, a02);
                    a03 = TS.MultiplyAdd(q3, b, a03);
                    b = TS.Broadcast(k1[k]);
                    a10 = TS.MultiplyAdd(q0, b, a10);
                    a11 = TS.MultiplyAdd(q1, b, a11);
                    a12 = TS.MultiplyAdd(q2, b, a12);
                    a13 = TS.MultiplyAdd(q3, b, a13);
                }

                Put<TS, TV>(a00, row, chunk == 0);
                Put<TS, TV>(a01, row + c, chunk == 0);
                Put<TS, TV>(a02, row + (2 * c), chunk == 0);
                Put<TS, TV>(a03, row + (3 * c), chunk == 0);
                Put<TS, TV>(a10, row + r, chunk == 0);
                Put<TS, TV>(a11, row + r + c, chunk == 0);
                Put<TS, TV>(a12, row + r + (2 * c), chunk == 0);
                Put<TS, TV>(a13, row + r + (3 * c), chunk == 0);
            }

            EmitKeys<TS, TV>(row, 2, j, r, c, blockMax, factor, maskFrom, firstKey, limit);
        }

        for (; j < n; j++)
        {
            var k0 = keys + rows[j];
            var row = s + (j * r);
            for (var chunk = 0; chunk < d; chunk += ScoreChunk)
            {
                var kEnd = Math.Min(d, chunk + ScoreChunk);
                TV a00 = TS.Zero, a01 = TS.Zero, a02 = TS.Zero, a03 = TS.Zero;
                var q = qt + ((nint)chunk * r);
                for (var k = chunk; k < kEnd; k++, q += r)
                {
                    TV q0 = TS.Load(q), q1 = TS.Load(q + c), q2 = TS.Load(q + (2 * c)), q3 = TS.Load(q + (3 * c));
                    var b = TS.Broadcast(k0[k]);
                    a00 = TS.MultiplyAdd(q0, b, a00);
                    a01 = TS.MultiplyAdd(q1, b, a01);
                    a02 = TS.MultiplyAdd(q2, b, a02);
                    a03 = TS.MultiplyAdd(q3, b, a03);
                }

                Put<TS, TV>(a00, row, chunk == 0);
                Put<TS, TV>(a01, row + c, chunk == 0);
                Put<TS, TV>(a02, row + (2 * c), chunk == 0);
                Put<TS, TV>(a03, row + (3 * c), chunk == 0);
            }

            EmitKeys<TS, TV>(row, 1, j, r, c, blockMax, factor, maskFrom, firstKey, limit);
        }
    }

    /// <summary>Stores a chunk's partial dot products, or adds them to what earlier chunks stored.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Put<TS, TV>(TV partial, float* destination, bool first)
        where TS : ISimd<TV>
        where TV : struct => TS.Store(first ? partial : TS.Add(TS.Load(destination), partial), destination);

    /// <summary><see cref="Emit"/> for the four vectors of each of keys j .. j + keyCount − 1, whose scores start at row.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void EmitKeys<TS, TV>(float* row, int keyCount, int j, int r, int c, float* blockMax, TV factor, int maskFrom, int firstKey, float* limit)
        where TS : ISimd<TV>
        where TV : struct
    {
        for (var i = 0; i < keyCount; i++)
        {
            for (var v = 0; v < 4; v++)
            {
                Emit<TS, TV>(row + (i * r) + (v * c), blockMax + (v * c), factor, (j + i) >= maskFrom, firstKey + j + i, limit + (v * c));
            }
        }
    }

    /// <summary>One vector of scores: scaled, masked past the rows' positions when asked, stored, and folded into the block max.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Emit<TS, TV>(float* destination, float* blockMax, TV scale, bool mask, int key, float* limit)
        where TS : ISimd<TV>
        where TV : struct
    {
        var x = TS.Multiply(TS.Load(destination), scale);
        if (mask)
        {
            x = TS.GreaterThanSelect(TS.Broadcast(key), TS.Load(limit), TS.Broadcast(float.NegativeInfinity), x);
        }

        TS.Store(x, destination);
        TS.Store(TS.Max(TS.Load(blockMax), x), blockMax);
    }

    /// <summary>
    /// o[i][·] = o[i][·] · correction[i] + Σ_j w[j][i] · values[rows[j] + ·] for rows i &lt; usedRows (a multiple of
    /// four) and j = 0..n−1 in order; o is not read when <paramref name="fresh"/> (the first block). w: [n][R] with
    /// R = four vectors. Four rows at a time, their weights broadcast against up to four vectors of each value row,
    /// the accumulators held in registers across the block.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void AccumulateTile<TS, TV>(float* o, float* w, float* correction, float* values, nint* rows, int n, int d, int usedRows, bool fresh)
        where TS : ISimd<TV>
        where TV : struct
    {
        var c = TS.Count;
        var r = 4 * c;
        for (var i = 0; i < usedRows; i += 4)
        {
            float* o0 = o + ((nint)i * d), o1 = o0 + d, o2 = o1 + d, o3 = o2 + d;
            TV f0 = TS.Broadcast(correction[i]), f1 = TS.Broadcast(correction[i + 1]), f2 = TS.Broadcast(correction[i + 2]), f3 = TS.Broadcast(correction[i + 3]);
            var wi = w + i;
            var k = 0;
            if (c == 16)
            {
                for (; k + (4 * c) <= d; k += 4 * c)
                {
                    TV a00, a01, a02, a03, a10, a11, a12, a13, a20, a21, a22, a23, a30, a31, a32, a33;
                    if (fresh)
                    {
                        a00 = a01 = a02 = a03 = a10 = a11 = a12 = a13 = a20 = a21 = a22 = a23 = a30 = a31 = a32 = a33 = TS.Zero;
                    }
                    else
                    {
                        a00 = TS.Multiply(TS.Load(o0 + k), f0);
                        a01 = TS.Multiply(TS.Load(o0 + k + c), f0);
                        a02 = TS.Multiply(TS.Load(o0 + k + (2 * c)), f0);
                        a03 = TS.Multiply(TS.Load(o0 + k + (3 * c)), f0);
                        a10 = TS.Multiply(TS.Load(o1 + k), f1);
                        a11 = TS.Multiply(TS.Load(o1 + k + c), f1);
                        a12 = TS.Multiply(TS.Load(o1 + k + (2 * c)), f1);
                        a13 = TS.Multiply(TS.Load(o1 + k + (3 * c)), f1);
                        a20 = TS.Multiply(TS.Load(o2 + k), f2);
                        a21 = TS.Multiply(TS.Load(o2 + k + c), f2);
                        a22 = TS.Multiply(TS.Load(o2 + k + (2 * c)), f2);
                        a23 = TS.Multiply(TS.Load(o2 + k + (3 * c)), f2);
                        a30 = TS.Multiply(TS.Load(o3 + k), f3);
                        a31 = TS.Multiply(TS.Load(o3 + k + c), f3);
                        a32 = TS.Multiply(TS.Load(o3 + k + (2 * c)), f3);
                        a33 = TS.Multiply(TS.Load(o3 + k + (3 * c)), f3);
                    }

                    var wj = wi;
                    for (var j = 0; j < n; j++, wj += r)
                    {
                        var v = values + rows[j] + k;
                        TV v0 = TS.Load(v), v1 = TS.Load(v + c), v2 = TS.Load(v + (2 * c)), v3 = TS.Load(v + (3 * c));
                        var b = TS.Broadcast(wj[0]);
                        a00 = TS.MultiplyAdd(b, v0, a00);
                        a01 = TS.MultiplyAdd(b, v1, a01);
                        a02 = TS.MultiplyAdd(b, v2, a02);
                        a03 = TS.MultiplyAdd(b, v3, a03);
                        b = TS.Broadcast(wj[1]);
                        a10 = TS.MultiplyAdd(b, v0, a10);
                        a11 = TS.MultiplyAdd(b, v1, a11);
                        a12 = TS.MultiplyAdd(b, v2, a12);
                        a13 = TS.MultiplyAdd(b, v3, a13);
                        b = TS.Broadcast(wj[2]);
                        a20 = TS.MultiplyAdd(b, v0, a20);
                        a21 = TS.MultiplyAdd(b, v1, a21);
                        a22 = TS.MultiplyAdd(b, v2, a22);
                        a23 = TS.MultiplyAdd(b, v3, a23);
                        b = TS.Broadcast(wj[3]);
                        a30 = TS.MultiplyAdd(b, v0, a30);
                        a31 = TS.MultiplyAdd(b, v1, a31);
                        a32 = TS.MultiplyAdd(b, v2, a32);
                        a33 = TS.MultiplyAdd(b, v3, a33);
                    }

                    TS.Store(a00, o0 + k);
                    TS.Store(a01, o0 + k + c);
                    TS.Store(a02, o0 + k + (2 * c));
                    TS.Store(a03, o0 + k + (3 * c));
                    TS.Store(a10, o1 + k);
                    TS.Store(a11, o1 + k + c);
                    TS.Store(a12, o1 + k + (2 * c));
                    TS.Store(a13, o1 + k + (3 * c));
                    TS.Store(a20, o2 + k);
                    TS.Store(a21, o2 + k + c);
                    TS.Store(a22, o2 + k + (2 * c));
                    TS.Store(a23, o2 + k + (3 * c));
                    TS.Store(a30, o3 + k);
                    TS.Store(a31, o3 + k + c);
                    TS.Store(a32, o3 + k + (2 * c));
                    TS.Store(a33, o3 + k + (3 * c));
                }
            }

            for (; k + (2 * c) <= d; k += 2 * c)
            {
                TV a00, a01, a10, a11, a20, a21, a30, a31;
                if (fresh)
                {
                    a00 = a01 = a10 = a11 = a20 = a21 = a30 = a31 = TS.Zero;
                }
                else
                {
                    a00 = TS.Multiply(TS.Load(o0 + k), f0);
                    a01 = TS.Multiply(TS.Load(o0 + k + c), f0);
                    a10 = TS.Multiply(TS.Load(o1 + k), f1);
                    a11 = TS.Multiply(TS.Load(o1 + k + c), f1);
                    a20 = TS.Multiply(TS.Load(o2 + k), f2);
                    a21 = TS.Multiply(TS.Load(o2 + k + c), f2);
                    a30 = TS.Multiply(TS.Load(o3 + k), f3);
                    a31 = TS.Multiply(TS.Load(o3 + k + c), f3);
                }

                var wj = wi;
                for (var j = 0; j < n; j++, wj += r)
                {
                    var v = values + rows[j] + k;
                    TV v0 = TS.Load(v), v1 = TS.Load(v + c);
                    var b = TS.Broadcast(wj[0]);
                    a00 = TS.MultiplyAdd(b, v0, a00);
                    a01 = TS.MultiplyAdd(b, v1, a01);
                    b = TS.Broadcast(wj[1]);
                    a10 = TS.MultiplyAdd(b, v0, a10);
                    a11 = TS.MultiplyAdd(b, v1, a11);
                    b = TS.Broadcast(wj[2]);
                    a20 = TS.MultiplyAdd(b, v0, a20);
                    a21 = TS.MultiplyAdd(b, v1, a21);
                    b = TS.Broadcast(wj[3]);
                    a30 = TS.MultiplyAdd(b, v0, a30);
                    a31 = TS.MultiplyAdd(b, v1, a31);
                }

                TS.Store(a00, o0 + k);
                TS.Store(a01, o0 + k + c);
                TS.Store(a10, o1 + k);
                TS.Store(a11, o1 + k + c);
                TS.Store(a20, o2 + k);
                TS.Store(a21, o2 + k + c);
                TS.Store(a30, o3 + k);
                TS.Store(a31, o3 + k + c);
            }

            for (; k + c <= d; k += c)
            {
                TV a0, a1, a2, a3;
                if (fresh)
                {
                    a0 = a1 = a2 = a3 = TS.Zero;
                }
                else
                {
                    a0 = TS.Multiply(TS.Load(o0 + k), f0);
                    a1 = TS.Multiply(TS.Load(o1 + k), f1);
                    a2 = TS.Multiply(TS.Load(o2 + k), f2);
                    a3 = TS.Multiply(TS.Load(o3 + k), f3);
                }

                var wj = wi;
                for (var j = 0; j < n; j++, wj += r)
                {
                    var v0 = TS.Load(values + rows[j] + k);
                    a0 = TS.MultiplyAdd(TS.Broadcast(wj[0]), v0, a0);
                    a1 = TS.MultiplyAdd(TS.Broadcast(wj[1]), v0, a1);
                    a2 = TS.MultiplyAdd(TS.Broadcast(wj[2]), v0, a2);
                    a3 = TS.MultiplyAdd(TS.Broadcast(wj[3]), v0, a3);
                }

                TS.Store(a0, o0 + k);
                TS.Store(a1, o1 + k);
                TS.Store(a2, o2 + k);
                TS.Store(a3, o3 + k);
            }

            for (; k < d; k++)
            {
                float a0 = 0f, a1 = 0f, a2 = 0f, a3 = 0f;
                if (!fresh)
                {
                    a0 = o0[k] * correction[i];
                    a1 = o1[k] * correction[i + 1];
                    a2 = o2[k] * correction[i + 2];
                    a3 = o3[k] * correction[i + 3];
                }

                var wj = wi;
                for (var j = 0; j < n; j++, wj += r)
                {
                    var v0 = values[rows[j] + k];
                    a0 = MathF.FusedMultiplyAdd(wj[0], v0, a0);
                    a1 = MathF.FusedMultiplyAdd(wj[1], v0, a1);
                    a2 = MathF.FusedMultiplyAdd(wj[2], v0, a2);
                    a3 = MathF.FusedMultiplyAdd(wj[3], v0, a3);
                }

                o0[k] = a0;
                o1[k] = a1;
                o2[k] = a2;
                o3[k] = a3;
            }
        }
    }

    public static void Run(
        CpuWorkerPool pool,
        Job job,
        int width,
        CpuTensor q,
        CpuTensor k,
        CpuTensor v,
        CpuTensor keyCache,
        CpuTensor valueCache,
        ForwardBatch batch,
        float scale,
        CpuTensor output,
        ref int[] tokenSequence)
    {
        foreach (var tensor in (ReadOnlySpan<CpuTensor>)[q, k, v, keyCache, valueCache, output])
        {
            tensor.RequireDType(DType.F32);
        }

        if (q.Rank != 3 || k.Rank != 3 || v.Rank != 3 || keyCache.Rank != 4 || valueCache.Rank != 4)
        {
            throw new ArgumentException($"Attention expects q/k/v as [T, heads, headDim] and caches as [blocks, blockSize, kvHeads, headDim]; got q {q}, k {k}, v {v}, cache {keyCache}");
        }

        var tokens = q.Shape[0];
        var heads = q.Shape[1];
        var headDim = q.Shape[2];
        var kvHeads = k.Shape[1];
        var blocks = keyCache.Shape[0];
        var blockSize = keyCache.Shape[1];
        if (k.Shape[0] != tokens || k.Shape[2] != headDim || !k.Shape.AsSpan().SequenceEqual(v.Shape)
            || !keyCache.Shape.AsSpan().SequenceEqual(valueCache.Shape) || keyCache.Shape[2] != kvHeads || keyCache.Shape[3] != headDim
            || output.ElementCount != q.ElementCount || kvHeads == 0 || heads % kvHeads != 0 || headDim > MaxHeadDim || blockSize == 0)
        {
            throw new ArgumentException($"Attention shapes do not match: q {q}, k {k}, v {v}, cache {keyCache}/{valueCache}, output {output}");
        }

        if (batch.TokenCount != tokens)
        {
            throw new ArgumentException($"batch has {batch.TokenCount} tokens, q has {tokens}");
        }

        // Store this step's keys and values.
        var rowFloats = (nint)kvHeads * headDim;
        var capacity = (long)blocks * blockSize;
        var kData = k.F32Pointer;
        var vData = v.F32Pointer;
        var kCache = keyCache.F32Pointer;
        var vCache = valueCache.F32Pointer;
        for (var t = 0; t < tokens; t++)
        {
            var slot = batch.SlotMapping[t];
            if ((ulong)slot >= (ulong)capacity)
            {
                throw new ArgumentOutOfRangeException(nameof(batch), $"slot {slot} outside a cache of {capacity}");
            }

            new ReadOnlySpan<float>(kData + (t * rowFloats), (int)rowFloats).CopyTo(new Span<float>(kCache + (slot * rowFloats), (int)rowFloats));
            new ReadOnlySpan<float>(vData + (t * rowFloats), (int)rowFloats).CopyTo(new Span<float>(vCache + (slot * rowFloats), (int)rowFloats));
        }

        // Map tokens to sequences and check every position a query reads is reachable through its block table.
        if (tokenSequence.Length < tokens)
        {
            tokenSequence = new int[Math.Max(tokens, tokenSequence.Length * 2)];
        }

        for (var s = 0; s < batch.Sequences.Length; s++)
        {
            var sequence = batch.Sequences[s];
            var neededBlocks = (sequence.ContextLength + blockSize - 1) / blockSize;
            if (sequence.BlockTable.Length < neededBlocks)
            {
                throw new ArgumentException($"sequence {s} has {sequence.BlockTable.Length} blocks for {sequence.ContextLength} positions");
            }

            for (var b = 0; b < neededBlocks; b++)
            {
                if ((uint)sequence.BlockTable[b] >= (uint)blocks)
                {
                    throw new ArgumentOutOfRangeException(nameof(batch), $"block {sequence.BlockTable[b]} outside a cache of {blocks} blocks");
                }
            }

            for (var i = 0; i < sequence.QueryLength; i++)
            {
                var t = sequence.QueryStart + i;
                if ((uint)t >= (uint)tokens || (uint)batch.Positions[t] >= (uint)sequence.ContextLength)
                {
                    throw new ArgumentException($"token {t} of sequence {s} has position {batch.Positions[t]} outside its context of {sequence.ContextLength}");
                }

                tokenSequence[t] = s;
            }
        }

        // Prefill sequences as tiles of (token, group head) rows per KV head, the last tiles (the longest walks)
        // first; one-token queries as (token, head) items after them.
        var group = heads / kvHeads;
        var tileRows = TileRows(width);
        var tileCount = 0;
        var singleCount = 0;
        for (var s = 0; s < batch.Sequences.Length; s++)
        {
            var sequence = batch.Sequences[s];
            if (tileRows > 0 && sequence.QueryLength > 1)
            {
                var rows = sequence.QueryLength * group;
                var tiles = (rows + tileRows - 1) / tileRows;
                if (job.Tiles.Length < (tileCount + (tiles * kvHeads)) * 4)
                {
                    Array.Resize(ref job.Tiles, Math.Max((tileCount + (tiles * kvHeads)) * 4, job.Tiles.Length * 2));
                }

                for (var tile = tiles - 1; tile >= 0; tile--)
                {
                    for (var h = 0; h < kvHeads; h++)
                    {
                        job.Tiles[(4 * tileCount) + 0] = s;
                        job.Tiles[(4 * tileCount) + 1] = h;
                        job.Tiles[(4 * tileCount) + 2] = tile * tileRows;
                        job.Tiles[(4 * tileCount) + 3] = Math.Min(tileRows, rows - (tile * tileRows));
                        tileCount++;
                    }
                }
            }
            else
            {
                if (job.Singles.Length < singleCount + sequence.QueryLength)
                {
                    Array.Resize(ref job.Singles, Math.Max(singleCount + sequence.QueryLength, job.Singles.Length * 2));
                }

                for (var i = 0; i < sequence.QueryLength; i++)
                {
                    job.Singles[singleCount++] = sequence.QueryStart + i;
                }
            }
        }

        if (tileCount > 0)
        {
            job.EnsureScratch(pool.ThreadCount, TileScratchFloats(width, headDim));
        }

        job.Q = q.F32Pointer;
        job.KeyCache = kCache;
        job.ValueCache = vCache;
        job.Output = output.F32Pointer;
        job.Heads = heads;
        job.KvHeads = kvHeads;
        job.HeadDim = headDim;
        job.BlockSize = blockSize;
        job.Scale = scale;
        job.Width = width;
        job.Positions = batch.Positions;
        job.TokenSequence = tokenSequence;
        job.Sequences = batch.Sequences;
        job.TileCount = tileCount;
        pool.Run(job, tileCount + (singleCount * heads));
        job.Positions = [];
        job.Sequences = [];
    }

    internal static float Dot<TS, TV>(float* a, float* b, int n)
        where TS : ISimd<TV>
        where TV : struct
    {
        TV s0 = TS.Zero, s1 = TS.Zero;
        var i = 0;
        for (; i <= n - (2 * TS.Count); i += 2 * TS.Count)
        {
            s0 = TS.MultiplyAdd(TS.Load(a + i), TS.Load(b + i), s0);
            s1 = TS.MultiplyAdd(TS.Load(a + i + TS.Count), TS.Load(b + i + TS.Count), s1);
        }

        for (; i <= n - TS.Count; i += TS.Count)
        {
            s0 = TS.MultiplyAdd(TS.Load(a + i), TS.Load(b + i), s0);
        }

        var sum = TS.Sum(TS.Add(s0, s1));
        for (; i < n; i++)
        {
            sum = MathF.FusedMultiplyAdd(a[i], b[i], sum);
        }

        return sum;
    }

    /// <summary>
    /// acc[i] += Σ_j weights[j] · values[rows[j] + i] for j = 0..n−1 in order, four vectors of acc held in registers
    /// across the keys instead of loaded and stored per key: element by element the same additions in the same order
    /// as n calls of <see cref="Axpy"/>, so the same result. acc: [d]; weights: [n]; rows: [n] offsets into values.
    /// </summary>
    internal static void AccumulateRows<TS, TV>(float* acc, float* weights, float* values, nint* rows, int n, int d)
        where TS : ISimd<TV>
        where TV : struct
    {
        var i = 0;
        for (; i <= d - (4 * TS.Count); i += 4 * TS.Count)
        {
            TV a0 = TS.Load(acc + i), a1 = TS.Load(acc + i + TS.Count), a2 = TS.Load(acc + i + (2 * TS.Count)), a3 = TS.Load(acc + i + (3 * TS.Count));
            for (var j = 0; j < n; j++)
            {
                var w = TS.Broadcast(weights[j]);
                var v = values + rows[j] + i;
                a0 = TS.MultiplyAdd(w, TS.Load(v), a0);
                a1 = TS.MultiplyAdd(w, TS.Load(v + TS.Count), a1);
                a2 = TS.MultiplyAdd(w, TS.Load(v + (2 * TS.Count)), a2);
                a3 = TS.MultiplyAdd(w, TS.Load(v + (3 * TS.Count)), a3);
            }

            TS.Store(a0, acc + i);
            TS.Store(a1, acc + i + TS.Count);
            TS.Store(a2, acc + i + (2 * TS.Count));
            TS.Store(a3, acc + i + (3 * TS.Count));
        }

        for (; i < d; i++)
        {
            var a = acc[i];
            for (var j = 0; j < n; j++)
            {
                a = MathF.FusedMultiplyAdd(weights[j], values[rows[j] + i], a);
            }

            acc[i] = a;
        }
    }

    internal static void Axpy<TS, TV>(float alpha, float* x, float* y, int n)
        where TS : ISimd<TV>
        where TV : struct
    {
        var va = TS.Broadcast(alpha);
        var i = 0;
        for (; i <= n - TS.Count; i += TS.Count)
        {
            TS.Store(TS.MultiplyAdd(va, TS.Load(x + i), TS.Load(y + i)), y + i);
        }

        for (; i < n; i++)
        {
            y[i] = MathF.FusedMultiplyAdd(alpha, x[i], y[i]);
        }
    }

    internal static void ScaleInPlace<TS, TV>(float* x, float factor, int n)
        where TS : ISimd<TV>
        where TV : struct
    {
        var vf = TS.Broadcast(factor);
        var i = 0;
        for (; i <= n - TS.Count; i += TS.Count)
        {
            TS.Store(TS.Multiply(TS.Load(x + i), vf), x + i);
        }

        for (; i < n; i++)
        {
            x[i] *= factor;
        }
    }
}
