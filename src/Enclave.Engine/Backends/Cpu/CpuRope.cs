using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace Enclave.Engine.Backends.Cpu;

/// <summary>
/// Rotary position embedding in place on x[T, heads, headDim]. For each token, cos/sin are computed once as
/// Hugging Face does: freq = (float)position * invFreq[i] in fp32, then fp32 cos/sin, times AttentionScaling.
/// The rotation itself is x1·cos − x2·sin, x2·cos + x1·sin with separately rounded products (no FMA), which is
/// what the fp32 PyTorch expression computes. Only the first RotaryDim elements of each head rotate.
/// NeoX pairs (i, i + RotaryDim/2); GPT-J (interleaved) pairs (2i, 2i + 1).
/// </summary>
internal static unsafe class CpuRope
{
    private const int MaxHalf = 2048;

    public sealed class Job : CpuJob
    {
        public float* X;
        public int[] Positions = [];
        public float[] InverseFrequencies = [];
        public int Heads;
        public int HeadDim;
        public int RotaryDim;
        public bool Interleaved;
        public float Scaling;
        public int TokensPerItem;
        public int Tokens;
        public int Width;

        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        public override void Execute(int index, int worker)
        {
            var half = RotaryDim / 2;
            var cos = stackalloc float[half];
            var sin = stackalloc float[half];
            var start = index * TokensPerItem;
            var end = Math.Min(Tokens, start + TokensPerItem);
            for (var t = start; t < end; t++)
            {
                var position = (float)Positions[t];
                for (var i = 0; i < half; i++)
                {
                    var freq = position * InverseFrequencies[i];
                    cos[i] = MathF.Cos(freq) * Scaling;
                    sin[i] = MathF.Sin(freq) * Scaling;
                }

                var token = X + ((nint)t * Heads * HeadDim);
                for (var h = 0; h < Heads; h++)
                {
                    var head = token + ((nint)h * HeadDim);
                    if (Interleaved)
                    {
                        RotatePairs(head, cos, sin, half);
                        continue;
                    }

                    switch (Width)
                    {
                        case 512:
                            RotateHalf<Simd512, Vector512<float>>(head, cos, sin, half);
                            break;
                        case 256:
                            RotateHalf<Simd256, Vector256<float>>(head, cos, sin, half);
                            break;
                        case 128:
                            RotateHalf<Simd128, Vector128<float>>(head, cos, sin, half);
                            break;
                        default:
                            RotateHalf<SimdScalar, float>(head, cos, sin, half);
                            break;
                    }
                }
            }
        }
    }

    public static void Run(CpuWorkerPool pool, Job job, int width, CpuTensor x, int[] positions, RopeSpec rope)
    {
        x.RequireDType(DType.F32);
        if (x.Rank != 3)
        {
            throw new ArgumentException($"Rope expects x as [T, heads, headDim], got {x}");
        }

        var tokens = x.Shape[0];
        var heads = x.Shape[1];
        var headDim = x.Shape[2];
        if (positions.Length < tokens)
        {
            throw new ArgumentException($"batch has {positions.Length} positions for {tokens} tokens");
        }

        if (rope.RotaryDim <= 0 || rope.RotaryDim > headDim || rope.RotaryDim % 2 != 0 || rope.RotaryDim / 2 > MaxHalf)
        {
            throw new ArgumentException($"rotary dim {rope.RotaryDim} does not fit head dim {headDim}");
        }

        if (rope.InverseFrequencies.Length < rope.RotaryDim / 2)
        {
            throw new ArgumentException($"{rope.InverseFrequencies.Length} inverse frequencies for rotary dim {rope.RotaryDim}");
        }

        if (tokens == 0)
        {
            return;
        }

        job.X = x.F32Pointer;
        job.Positions = positions;
        job.InverseFrequencies = rope.InverseFrequencies;
        job.Heads = heads;
        job.HeadDim = headDim;
        job.RotaryDim = rope.RotaryDim;
        job.Interleaved = rope.Interleaved;
        job.Scaling = rope.AttentionScaling;
        job.Tokens = tokens;
        job.Width = width;
        job.TokensPerItem = CpuParallel.ItemsPerChunk(tokens, heads * headDim, pool.ThreadCount);
        pool.Run(job, (tokens + job.TokensPerItem - 1) / job.TokensPerItem);
        job.Positions = [];
        job.InverseFrequencies = [];
    }

    private static void RotateHalf<TS, TV>(float* head, float* cos, float* sin, int half)
        where TS : ISimd<TV>
        where TV : struct
    {
        var i = 0;
        for (; i <= half - TS.Count; i += TS.Count)
        {
            var x1 = TS.Load(head + i);
            var x2 = TS.Load(head + half + i);
            var c = TS.Load(cos + i);
            var s = TS.Load(sin + i);
            TS.Store(TS.Subtract(TS.Multiply(x1, c), TS.Multiply(x2, s)), head + i);
            TS.Store(TS.Add(TS.Multiply(x2, c), TS.Multiply(x1, s)), head + half + i);
        }

        for (; i < half; i++)
        {
            var x1 = head[i];
            var x2 = head[half + i];
            head[i] = (x1 * cos[i]) - (x2 * sin[i]);
            head[half + i] = (x2 * cos[i]) + (x1 * sin[i]);
        }
    }

    private static void RotatePairs(float* head, float* cos, float* sin, int half)
    {
        for (var i = 0; i < half; i++)
        {
            var x1 = head[2 * i];
            var x2 = head[(2 * i) + 1];
            head[2 * i] = (x1 * cos[i]) - (x2 * sin[i]);
            head[(2 * i) + 1] = (x2 * cos[i]) + (x1 * sin[i]);
        }
    }
}
