using System.Runtime.CompilerServices;
using System.Numerics.Tensors;
using System.Runtime.Intrinsics;

namespace Enclave.Engine.Backends.Cpu;

/// <summary>
/// Encoder self-attention over packed sequences: every (token, head) pair, in parallel, attends to all keys of its
/// own sequence (no causal mask, no cache). Keys are walked in blocks with an online softmax (running max and sum,
/// the accumulator rescaled when the max grows), as in <see cref="CpuAttention"/>, so no buffer the size of the
/// sequence is needed and the result is exact for any length. Packing replaces the padding mask of a padded batch:
/// a sequence never sees another's tokens, and no work is spent on padding.
/// </summary>
internal static unsafe class CpuBidirectionalAttention
{
    private const int KeyBlock = 128;
    private const int MaxHeadDim = 1024;

    public sealed class Job : CpuJob
    {
        public float* Q;
        public float* K;
        public float* V;
        public float* Output;
        public int Heads;
        public int HeadDim;
        public float Scale;
        public int Width;
        public int[] SequenceStarts = [];

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

            // The sequence holding token t: the last start that is <= t.
            var found = Array.BinarySearch(SequenceStarts, t);
            var s = found >= 0 ? found : ~found - 1;
            while (s + 1 < SequenceStarts.Length - 1 && SequenceStarts[s + 1] == t)
            {
                s++; // skip empty sequences that start at the same token
            }

            int start = SequenceStarts[s], end = SequenceStarts[s + 1];
            var rowStride = (nint)Heads * d;
            var q = Q + ((nint)t * rowStride) + ((nint)h * d);
            var scores = stackalloc float[KeyBlock];
            var acc = stackalloc float[d];
            new Span<float>(acc, d).Clear();
            var max = float.NegativeInfinity;
            var sum = 0f;
            for (var j0 = start; j0 < end; j0 += KeyBlock)
            {
                var n = Math.Min(KeyBlock, end - j0);
                var blockMax = float.NegativeInfinity;
                for (var j = 0; j < n; j++)
                {
                    var score = CpuAttention.Dot<TS, TV>(q, K + ((nint)(j0 + j) * rowStride) + ((nint)h * d), d) * Scale;
                    scores[j] = score;
                    blockMax = MathF.Max(blockMax, score);
                }

                var newMax = MathF.Max(max, blockMax);
                if (newMax > max && max != float.NegativeInfinity)
                {
                    var correction = MathF.Exp(max - newMax);
                    CpuAttention.ScaleInPlace<TS, TV>(acc, correction, d);
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
                    CpuAttention.Axpy<TS, TV>(weights[j], V + ((nint)(j0 + j) * rowStride) + ((nint)h * d), acc, d);
                }
            }

            CpuAttention.ScaleInPlace<TS, TV>(acc, 1f / sum, d);
            new ReadOnlySpan<float>(acc, d).CopyTo(new Span<float>(Output + ((nint)t * rowStride) + ((nint)h * d), d));
        }
    }

    public static void Run(CpuWorkerPool pool, Job job, int width, CpuTensor q, CpuTensor k, CpuTensor v, int[] sequenceStarts, float scale, CpuTensor output)
    {
        foreach (var tensor in (ReadOnlySpan<CpuTensor>)[q, k, v, output])
        {
            tensor.RequireDType(DType.F32);
        }

        if (q.Rank != 3 || !q.Shape.AsSpan().SequenceEqual(k.Shape) || !q.Shape.AsSpan().SequenceEqual(v.Shape) || output.ElementCount != q.ElementCount)
        {
            throw new ArgumentException($"BidirectionalAttention expects q, k, v and output as [T, heads, headDim]; got q {q}, k {k}, v {v}, output {output}");
        }

        var tokens = q.Shape[0];
        if (q.Shape[2] > MaxHeadDim)
        {
            throw new ArgumentException($"head_dim {q.Shape[2]} exceeds {MaxHeadDim}");
        }

        CheckSequenceStarts(sequenceStarts, tokens);
        job.Q = q.F32Pointer;
        job.K = k.F32Pointer;
        job.V = v.F32Pointer;
        job.Output = output.F32Pointer;
        job.Heads = q.Shape[1];
        job.HeadDim = q.Shape[2];
        job.Scale = scale;
        job.Width = width;
        job.SequenceStarts = sequenceStarts;
        pool.Run(job, tokens * job.Heads);
        job.SequenceStarts = [];
    }

    /// <summary>Starts must run from 0 to T without going backwards.</summary>
    internal static void CheckSequenceStarts(int[] sequenceStarts, int tokens)
    {
        if (sequenceStarts.Length < 2 || sequenceStarts[0] != 0 || sequenceStarts[^1] != tokens)
        {
            throw new ArgumentException($"sequence starts must run from 0 to {tokens} tokens, got [{string.Join(", ", sequenceStarts)}]");
        }

        for (var s = 1; s < sequenceStarts.Length; s++)
        {
            if (sequenceStarts[s] < sequenceStarts[s - 1])
            {
                throw new ArgumentException($"sequence starts must not decrease, got [{string.Join(", ", sequenceStarts)}]");
            }
        }
    }
}
