using System.Runtime.CompilerServices;
using System.Numerics.Tensors;
using System.Runtime.Intrinsics;

namespace Enclave.Engine.Backends.Cpu;

/// <summary>
/// Paged causal attention. First this step's k/v rows are stored at their cache slots; then every (token, head)
/// pair, in parallel, walks its sequence's cached positions 0..p (p = the token's position) through the block
/// table, in blocks of keys: scores for the block, then an online-softmax update (running max and sum, the
/// accumulated values rescaled when the max grows), so the result is exact whatever the context length and no
/// buffer the size of the context is needed. Query head h reads kv head h / (heads / kvHeads).
/// </summary>
internal static unsafe class CpuAttention
{
    private const int KeyBlock = 128;
    private const int MaxHeadDim = 1024;

    public sealed class Job : CpuJob
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

        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        public override void Execute(int index, int worker)
        {
            switch (Width)
            {
                case 512:
                    Query<Simd512, Vector512<float>>(index);
                    break;
                case 256:
                    Query<Simd256, Vector256<float>>(index);
                    break;
                case 128:
                    Query<Simd128, Vector128<float>>(index);
                    break;
                default:
                    Query<SimdScalar, float>(index);
                    break;
            }
        }

        private void Query<TS, TV>(int index)
            where TS : ISimd<TV>
            where TV : struct
        {
            var t = index / Heads;
            var h = index - (t * Heads);
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

        private nint Slot(int[] table, int position)
        {
            var block = position / BlockSize;
            return ((nint)table[block] * BlockSize) + (position - (block * BlockSize));
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
        pool.Run(job, tokens * heads);
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
