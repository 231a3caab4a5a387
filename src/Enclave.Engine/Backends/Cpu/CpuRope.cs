using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace Enclave.Engine.Backends.Cpu;

/// <summary>
/// Rotary position embedding in place on x[T, heads, headDim]. For each token, cos/sin are computed once as
/// Hugging Face does: freq = (float)position * invFreq[i] in fp32, then fp32 cos/sin, times AttentionScaling; they are
/// kept for the next call, which reuses them when its positions and frequencies are the same (the next layer).
/// The rotation itself is x1·cos − x2·sin, x2·cos + x1·sin with separately rounded products (no FMA), which is
/// what the fp32 PyTorch expression computes. Only the first RotaryDim elements of each head rotate.
/// NeoX pairs (i, i + RotaryDim/2); GPT-J (interleaved) pairs (2i, 2i + 1).
/// </summary>
internal static unsafe class CpuRope
{
    private const int MaxHalf = 2048;

    public sealed class Job : CpuJob, IDisposable
    {
        public float* X;

        /// <summary>A second tensor rotated with the same cos/sin (the keys next to the queries), or null.</summary>
        public float* X2;
        public int Heads2;
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

        /// <summary>
        /// Each token's cos then sin values ([tokens][2][half]), kept from one call to the next: every layer of a
        /// forward pass rotates the same positions with the same frequencies, so only the first computes them.
        /// </summary>
        public float* Table;

        /// <summary>Whether this call computes <see cref="Table"/> (else it only reads it).</summary>
        public bool FillTable;

        private long _tableFloats;
        private int[] _tablePositions = [];
        private float[] _tableFrequencies = [];
        private int _tableTokens = -1;
        private float _tableScaling;

        /// <summary>
        /// Makes <see cref="Table"/> fit this call and says whether it already holds this call's values: the same
        /// positions, inverse frequencies, rotary dim and scaling as the call that filled it.
        /// </summary>
        public bool PrepareTable(int[] positions, int tokens, float[] frequencies, int half, float scaling)
        {
            if (_tableTokens == tokens && _tableFrequencies.Length == half && _tableScaling.Equals(scaling)
                && positions.AsSpan(0, tokens).SequenceEqual(_tablePositions.AsSpan(0, tokens))
                && frequencies.AsSpan(0, half).SequenceEqual(_tableFrequencies))
            {
                return true;
            }

            var floats = (long)tokens * 2 * half;
            if (floats > _tableFloats)
            {
                System.Runtime.InteropServices.NativeMemory.AlignedFree(Table);
                _tableFloats = Math.Max(floats, _tableFloats * 2);
                Table = (float*)System.Runtime.InteropServices.NativeMemory.AlignedAlloc((nuint)(_tableFloats * sizeof(float)), 64);
            }

            if (_tablePositions.Length < tokens)
            {
                _tablePositions = new int[Math.Max(tokens, _tablePositions.Length * 2)];
            }

            if (_tableFrequencies.Length != half)
            {
                _tableFrequencies = new float[half];
            }

            positions.AsSpan(0, tokens).CopyTo(_tablePositions);
            frequencies.AsSpan(0, half).CopyTo(_tableFrequencies);
            _tableScaling = scaling;
            _tableTokens = tokens;
            return false;
        }

        /// <summary>Forgets the table's contents (a call that fills it failed part-way).</summary>
        public void InvalidateTable() => _tableTokens = -1;

        public void Dispose()
        {
            System.Runtime.InteropServices.NativeMemory.AlignedFree(Table);
            Table = null;
            _tableFloats = 0;
            _tableTokens = -1;
        }

        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        public override void Execute(int index, int worker)
        {
            var half = RotaryDim / 2;
            var start = index * TokensPerItem;
            var end = Math.Min(Tokens, start + TokensPerItem);
            for (var t = start; t < end; t++)
            {
                var cos = Table + ((nint)t * 2 * half);
                var sin = cos + half;
                if (FillTable)
                {
                    var position = (float)Positions[t];
                    for (var i = 0; i < half; i++)
                    {
                        var freq = position * InverseFrequencies[i];
                        cos[i] = MathF.Cos(freq) * Scaling;
                        sin[i] = MathF.Sin(freq) * Scaling;
                    }
                }

                Rotate(X + ((nint)t * Heads * HeadDim), Heads, cos, sin, half);
                if (X2 != null)
                {
                    Rotate(X2 + ((nint)t * Heads2 * HeadDim), Heads2, cos, sin, half);
                }
            }
        }

        private void Rotate(float* token, int heads, float* cos, float* sin, int half)
        {
            for (var h = 0; h < heads; h++)
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

    public static void Run(CpuWorkerPool pool, Job job, int width, CpuTensor x, int[] positions, RopeSpec rope) =>
        Run(pool, job, width, x, null, positions, rope);

    /// <summary>
    /// Rotates <paramref name="x"/> and, when given, <paramref name="x2"/> (the same tokens and head dim, its own
    /// head count: the keys next to the queries) in one pass, each token's cos/sin computed once for both.
    /// </summary>
    public static void Run(CpuWorkerPool pool, Job job, int width, CpuTensor x, CpuTensor? x2, int[] positions, RopeSpec rope)
    {
        x.RequireDType(DType.F32);
        x2?.RequireDType(DType.F32);
        if (x.Rank != 3 || (x2 != null && (x2.Rank != 3 || x2.Shape[0] != x.Shape[0] || x2.Shape[2] != x.Shape[2])))
        {
            throw new ArgumentException($"Rope expects x as [T, heads, headDim] (a second tensor with the same T and headDim), got {x} and {x2}");
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
        job.X2 = x2 == null ? null : x2.F32Pointer;
        job.Heads2 = x2 == null ? 0 : x2.Shape[1];
        job.Positions = positions;
        job.InverseFrequencies = rope.InverseFrequencies;
        job.Heads = heads;
        job.HeadDim = headDim;
        job.RotaryDim = rope.RotaryDim;
        job.Interleaved = rope.Interleaved;
        job.Scaling = rope.AttentionScaling;
        job.Tokens = tokens;
        job.Width = width;
        job.TokensPerItem = CpuParallel.ItemsPerChunk(tokens, (heads + job.Heads2) * headDim, pool.ThreadCount);
        job.FillTable = !job.PrepareTable(positions, tokens, rope.InverseFrequencies, rope.RotaryDim / 2, rope.AttentionScaling);
        try
        {
            pool.Run(job, (tokens + job.TokensPerItem - 1) / job.TokensPerItem);
        }
        catch
        {
            job.InvalidateTable();
            throw;
        }

        job.Positions = [];
        job.InverseFrequencies = [];
        job.X2 = null;
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
