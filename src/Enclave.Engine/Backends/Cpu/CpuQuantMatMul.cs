using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Enclave.Engine.Backends.Cpu;

/// <summary>
/// y[T, out] = x[T, in] · W[out, in]ᵀ (+ bias) with W in a ggml block format (Q8_0, Q4_0, Q4_K, Q5_K, Q6_K), read
/// in place: weights are never expanded to floats. As llama.cpp does, x is first quantised once per call to int8 in
/// blocks of 32 (one fp32 scale per block, plus the sum of each 16 values for the formats whose levels are offset),
/// then every weight block is dotted with it in integers: unsigned weight levels times signed activations with
/// AVX-VNNI's <c>vpdpbusd</c> where present, AVX2's <c>vpmaddubsw</c>/<c>vpmaddwd</c> otherwise, or a scalar loop.
/// The integer dot of each 32 values is scaled in fp32 by the weight and activation scales, and the level offsets
/// (Q4_0's 8, Q6_K's 32, the K-quant minimums) are subtracted through the activation block sums.
///
/// Output rows are cut into tiles spread over the worker pool. A tile's weight rows stay in L2 while the tokens
/// stream past in groups of four: each weight block is unpacked once and dotted with all four tokens (prefill is
/// a tiled matrix product, not repeated vector products). Buffers grow only, so steady-state calls do not allocate.
/// </summary>
internal static unsafe class CpuQuantMatMul
{
    private const int TokenGroup = 4;
    private const int TileBytes = 96 * 1024;

    /// <summary>The integer dot-product instructions a kernel uses.</summary>
    public enum Kernel
    {
        Scalar,
        Avx2,
        AvxVnni,
    }

    /// <summary>The best kernel on this machine for a backend pinned to <paramref name="simdWidth"/> (1 = scalar).</summary>
    public static Kernel KernelFor(int simdWidth) =>
        simdWidth <= 1 || !Avx2.IsSupported ? Kernel.Scalar
        : simdWidth >= 512 && AvxVnni.IsSupported ? Kernel.AvxVnni
        : simdWidth == 128 ? Kernel.Avx2
        : AvxVnni.IsSupported ? Kernel.AvxVnni : Kernel.Avx2;

    public sealed class Job : CpuJob, IDisposable
    {
        private long _capacity;

        public sbyte* Qx;
        public float* Dx;
        public short* Sx;
        public byte* W;
        public float* Bias;
        public float* Y;
        public int Tokens;
        public int In;
        public int Out;
        public int TileRows;
        public long RowBytes;
        public DType WeightType;
        public Kernel Kernel;

        /// <summary>Grows the quantised-activation buffers to hold <paramref name="values"/> values.</summary>
        public void Ensure(long values)
        {
            if (values <= _capacity)
            {
                return;
            }

            Free();
            _capacity = values;
            Qx = (sbyte*)NativeMemory.AlignedAlloc((nuint)values, 64);
            Dx = (float*)NativeMemory.AlignedAlloc((nuint)(values / 32 * sizeof(float)) + 64, 64);
            Sx = (short*)NativeMemory.AlignedAlloc((nuint)(values / 16 * sizeof(short)) + 64, 64);
        }

        public void Dispose() => Free();

        private void Free()
        {
            NativeMemory.AlignedFree(Qx);
            NativeMemory.AlignedFree(Dx);
            NativeMemory.AlignedFree(Sx);
            Qx = null;
            Dx = null;
            Sx = null;
            _capacity = 0;
        }

        // Fully optimised from the first call: these loops run once per row, and a tier-0 body (before tiering
        // replaces it) costs more than the row's integer products on small matrices.
        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        public override void Execute(int index, int worker)
        {
            var rowStart = index * TileRows;
            var rowEnd = Math.Min(Out, rowStart + TileRows);
            Span<float> results = stackalloc float[TokenGroup];
            for (var t = 0; t < Tokens; t += TokenGroup)
            {
                var tn = Math.Min(TokenGroup, Tokens - t);
                for (var r = rowStart; r < rowEnd; r++)
                {
                    var row = W + (r * RowBytes);
                    Row(row, t, tn, results);
                    var b = Bias == null ? 0f : Bias[r];
                    for (var k = 0; k < tn; k++)
                    {
                        Y[((long)(t + k) * Out) + r] = results[k] + b;
                    }
                }
            }
        }

        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        private void Row(byte* row, int t0, int tn, Span<float> results)
        {
            var blocks = In / 32;
            var qx = Qx + ((long)t0 * In);
            var dx = Dx + ((long)t0 * blocks);
            var sx = Sx + ((long)t0 * (In / 16));
            if (Kernel == Kernel.Scalar)
            {
                for (var k = 0; k < tn; k++)
                {
                    results[k] = ScalarRow(WeightType, row, In, qx + ((long)k * In), dx + ((long)k * blocks), sx + ((long)k * (In / 16)));
                }

                return;
            }

            var vnni = Kernel == Kernel.AvxVnni;
            switch (WeightType)
            {
                case DType.Q8_0:
                    RowQ8_0(row, blocks, qx, dx, In, tn, vnni, results);
                    break;
                case DType.Q4_0:
                    RowQ4_0(row, blocks, qx, dx, sx, In, tn, vnni, results);
                    break;
                case DType.Q4_K:
                case DType.Q5_K:
                    RowQ45K(row, In / 256, qx, dx, sx, In, tn, vnni, WeightType == DType.Q5_K, results);
                    break;
                case DType.Q6_K:
                    RowQ6K(row, In / 256, qx, dx, sx, In, tn, vnni, results);
                    break;
                default:
                    throw new InvalidOperationException($"{WeightType} is not a block type");
            }
        }
    }

    public static void Run(CpuWorkerPool pool, Job job, int width, CpuTensor x, CpuTensor weight, CpuTensor? bias, CpuTensor output)
    {
        x.RequireDType(DType.F32);
        output.RequireDType(DType.F32);
        if (weight.Rank != 2)
        {
            throw new ArgumentException($"weight must be [out, in], got {weight}");
        }

        var outFeatures = weight.Shape[0];
        var inFeatures = weight.Shape[1];
        if (x.Columns != inFeatures)
        {
            throw new ArgumentException($"x {x} does not match weight {weight}");
        }

        var tokens = checked((int)x.Rows);
        if (output.Columns != outFeatures || output.Rows != tokens)
        {
            throw new ArgumentException($"output {output} is not [{tokens}, {outFeatures}]");
        }

        if (bias != null && (bias.DType != DType.F32 || bias.ElementCount != outFeatures))
        {
            throw new ArgumentException($"bias {bias} is not F32[{outFeatures}]");
        }

        if (tokens == 0 || outFeatures == 0)
        {
            return;
        }

        job.Ensure((long)tokens * inFeatures);
        QuantizeActivations(x.F32Pointer, (long)tokens * inFeatures, job.Qx, job.Dx, job.Sx);

        var rowBytes = weight.DType.RowBytes(inFeatures);
        var tileRows = (int)Math.Clamp(TileBytes / rowBytes, 1, 256);
        var perThread = (outFeatures + (pool.ThreadCount * 8) - 1) / (pool.ThreadCount * 8);
        tileRows = Math.Max(1, Math.Min(tileRows, perThread));
        job.W = weight.Pointer;
        job.Bias = bias == null ? null : bias.F32Pointer;
        job.Y = output.F32Pointer;
        job.Tokens = tokens;
        job.In = inFeatures;
        job.Out = outFeatures;
        job.TileRows = tileRows;
        job.RowBytes = rowBytes;
        job.WeightType = weight.DType;
        job.Kernel = KernelFor(width);
        pool.Run(job, (outFeatures + tileRows - 1) / tileRows);
    }

    /// <summary>
    /// Symmetric int8 quantisation of x in blocks of 32: d = max|x| / 127, q = round(x / d) in [-127, 127] (never -128,
    /// so sign tricks stay exact), plus the sum of every 16 quantised values.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    internal static void QuantizeActivations(float* x, long count, sbyte* qx, float* dx, short* sx)
    {
        for (long b = 0; b < count / 32; b++)
        {
            var xb = x + (b * 32);
            var amax = 0f;
            if (Vector256.IsHardwareAccelerated)
            {
                var m = Vector256.Max(Vector256.Abs(Vector256.Load(xb)), Vector256.Abs(Vector256.Load(xb + 8)));
                m = Vector256.Max(m, Vector256.Max(Vector256.Abs(Vector256.Load(xb + 16)), Vector256.Abs(Vector256.Load(xb + 24))));
                for (var i = 0; i < 8; i++)
                {
                    amax = MathF.Max(amax, m.GetElement(i));
                }
            }
            else
            {
                for (var i = 0; i < 32; i++)
                {
                    amax = MathF.Max(amax, MathF.Abs(xb[i]));
                }
            }

            var d = amax / 127f;
            var id = d != 0 ? 1f / d : 0f;
            dx[b] = d;
            var q = qx + (b * 32);
            int s0 = 0, s1 = 0;
            for (var i = 0; i < 16; i++)
            {
                var v = (int)MathF.Round(xb[i] * id);
                q[i] = (sbyte)v;
                s0 += v;
            }

            for (var i = 16; i < 32; i++)
            {
                var v = (int)MathF.Round(xb[i] * id);
                q[i] = (sbyte)v;
                s1 += v;
            }

            sx[2 * b] = (short)s0;
            sx[(2 * b) + 1] = (short)s1;
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> Dot(Vector256<byte> unsignedLevels, Vector256<sbyte> x, bool vnni)
    {
        // Lane i of the result holds the sum over values 4i..4i+3, for both instruction sequences.
        if (vnni)
        {
            return AvxVnni.MultiplyWideningAndAdd(Vector256<int>.Zero, unsignedLevels, x);
        }

        return Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(unsignedLevels, x), Vector256.Create((short)1));
    }

    private static float Sum(Vector256<float> v) => Vector256.Sum(v);

    private static float Half(byte* p) => (float)Unsafe.ReadUnaligned<Half>(p);

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void RowQ8_0(byte* w, int blocks, sbyte* qx, float* dx, int n, int tn, bool vnni, Span<float> results)
    {
        Vector256<float> a0 = default, a1 = default, a2 = default, a3 = default;
        var nb = n / 32;
        for (var b = 0; b < blocks; b++)
        {
            var wb = w + (b * 34);
            var dw = Half(wb);
            var wv = Vector256.Load((sbyte*)(wb + 2));
            var aw = Avx2.Abs(wv);
            var xo = b * 32;
            a0 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(Dot(aw, Avx2.Sign(Vector256.Load(qx + xo), wv), vnni)), Vector256.Create(dw * dx[b]), a0);
            if (tn > 1)
            {
                a1 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(Dot(aw, Avx2.Sign(Vector256.Load(qx + n + xo), wv), vnni)), Vector256.Create(dw * dx[nb + b]), a1);
            }

            if (tn > 2)
            {
                a2 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(Dot(aw, Avx2.Sign(Vector256.Load(qx + (2 * n) + xo), wv), vnni)), Vector256.Create(dw * dx[(2 * nb) + b]), a2);
            }

            if (tn > 3)
            {
                a3 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(Dot(aw, Avx2.Sign(Vector256.Load(qx + (3 * n) + xo), wv), vnni)), Vector256.Create(dw * dx[(3 * nb) + b]), a3);
            }
        }

        results[0] = Sum(a0);
        if (tn > 1)
        {
            results[1] = Sum(a1);
        }

        if (tn > 2)
        {
            results[2] = Sum(a2);
        }

        if (tn > 3)
        {
            results[3] = Sum(a3);
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void RowQ4_0(byte* w, int blocks, sbyte* qx, float* dx, short* sx, int n, int tn, bool vnni, Span<float> results)
    {
        Span<Vector256<float>> acc = stackalloc Vector256<float>[TokenGroup];
        Span<float> offset = stackalloc float[TokenGroup];
        acc.Clear();
        offset.Clear();
        var nb = n / 32;
        var mask = Vector128.Create((byte)0x0F);
        for (var b = 0; b < blocks; b++)
        {
            var wb = w + (b * 18);
            var d = Half(wb);
            var q = Vector128.Load(wb + 2);
            var levels = Vector256.Create(q & mask, Vector128.ShiftRightLogical(q.AsUInt16(), 4).AsByte() & mask);
            for (var k = 0; k < tn; k++)
            {
                var scale = d * dx[(k * nb) + b];
                acc[k] = Fma.MultiplyAdd(Avx.ConvertToVector256Single(Dot(levels, Vector256.Load(qx + ((long)k * n) + (b * 32)), vnni)), Vector256.Create(scale), acc[k]);
                var s = sx + ((long)k * (n / 16)) + (2 * b);
                offset[k] += scale * 8 * (s[0] + s[1]);
            }
        }

        for (var k = 0; k < tn; k++)
        {
            results[k] = Sum(acc[k]) - offset[k];
        }
    }

    /// <summary>acc + dot(lo, x[0..32])·s0 + dot(hi, x[32..64])·s1, for one token (inlined so accumulators stay in registers).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> Pair(Vector256<float> acc, Vector256<byte> lo, Vector256<byte> hi, sbyte* x, float s0, float s1, bool vnni)
    {
        acc = Fma.MultiplyAdd(Avx.ConvertToVector256Single(Dot(lo, Vector256.Load(x), vnni)), Vector256.Create(s0), acc);
        return Fma.MultiplyAdd(Avx.ConvertToVector256Single(Dot(hi, Vector256.Load(x + 32), vnni)), Vector256.Create(s1), acc);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void RowQ45K(byte* w, int superBlocks, sbyte* qx, float* dx, short* sx, int n, int tn, bool vnni, bool fiveBit, Span<float> results)
    {
        Vector256<float> a0 = default, a1 = default, a2 = default, a3 = default;
        float o0 = 0, o1 = 0, o2 = 0, o3 = 0;
        var nb = n / 32;
        var ns = n / 16;
        var mask = Vector256.Create((byte)0x0F);
        var sixteen = Vector256.Create((byte)16);
        var blockBytes = fiveBit ? 176 : 144;
        Span<float> scales = stackalloc float[8];
        Span<float> mins = stackalloc float[8];
        for (var s = 0; s < superBlocks; s++)
        {
            var blk = w + (s * blockBytes);
            var d = Half(blk);
            var dmin = Half(blk + 2);
            var packed = new ReadOnlySpan<byte>(blk + 4, 12);
            for (var j = 0; j < 8; j++)
            {
                var (scale, min) = Formats.Gguf.GgmlQuants.ScaleMinK4(j, packed);
                scales[j] = d * scale;
                mins[j] = dmin * min;
            }

            var qs = fiveBit ? blk + 48 : blk + 16;
            var qh = fiveBit ? Vector256.Load(blk + 16) : default;
            for (var p = 0; p < 4; p++)
            {
                var qv = Vector256.Load(qs + (32 * p));
                var lo = qv & mask;
                var hi = Vector256.ShiftRightLogical(qv.AsUInt16(), 4).AsByte() & mask;
                if (fiveBit)
                {
                    var bitLo = Vector256.Create((byte)(1 << (2 * p)));
                    var bitHi = Vector256.Create((byte)(1 << ((2 * p) + 1)));
                    lo |= Vector256.Equals(qh & bitLo, bitLo) & sixteen;
                    hi |= Vector256.Equals(qh & bitHi, bitHi) & sixteen;
                }

                var bi = (s * 8) + (2 * p);
                float sc0 = scales[2 * p], sc1 = scales[(2 * p) + 1], m0 = mins[2 * p], m1 = mins[(2 * p) + 1];
                var xo = (long)bi * 32;

                // Token k: weights by its block scales; the minimums come off through its block sums.
                a0 = Pair(a0, lo, hi, qx + xo, sc0 * dx[bi], sc1 * dx[bi + 1], vnni);
                o0 += (m0 * dx[bi] * (sx[2 * bi] + sx[(2 * bi) + 1])) + (m1 * dx[bi + 1] * (sx[(2 * bi) + 2] + sx[(2 * bi) + 3]));
                if (tn > 1)
                {
                    var dk = dx + nb;
                    var sk = sx + ns;
                    a1 = Pair(a1, lo, hi, qx + n + xo, sc0 * dk[bi], sc1 * dk[bi + 1], vnni);
                    o1 += (m0 * dk[bi] * (sk[2 * bi] + sk[(2 * bi) + 1])) + (m1 * dk[bi + 1] * (sk[(2 * bi) + 2] + sk[(2 * bi) + 3]));
                }

                if (tn > 2)
                {
                    var dk = dx + (2 * nb);
                    var sk = sx + (2 * ns);
                    a2 = Pair(a2, lo, hi, qx + (2 * n) + xo, sc0 * dk[bi], sc1 * dk[bi + 1], vnni);
                    o2 += (m0 * dk[bi] * (sk[2 * bi] + sk[(2 * bi) + 1])) + (m1 * dk[bi + 1] * (sk[(2 * bi) + 2] + sk[(2 * bi) + 3]));
                }

                if (tn > 3)
                {
                    var dk = dx + (3 * nb);
                    var sk = sx + (3 * ns);
                    a3 = Pair(a3, lo, hi, qx + (3 * n) + xo, sc0 * dk[bi], sc1 * dk[bi + 1], vnni);
                    o3 += (m0 * dk[bi] * (sk[2 * bi] + sk[(2 * bi) + 1])) + (m1 * dk[bi + 1] * (sk[(2 * bi) + 2] + sk[(2 * bi) + 3]));
                }
            }
        }

        results[0] = Sum(a0) - o0;
        if (tn > 1)
        {
            results[1] = Sum(a1) - o1;
        }

        if (tn > 2)
        {
            results[2] = Sum(a2) - o2;
        }

        if (tn > 3)
        {
            results[3] = Sum(a3) - o3;
        }
    }

    /// <summary>acc + dot(levels, x[0..32]) scaled per 16 values, for one token of a Q6_K group.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> Sixteens(Vector256<float> acc, Vector256<byte> levels, sbyte* x, float ddx, float scA, float scB, bool vnni) =>
        Fma.MultiplyAdd(Avx.ConvertToVector256Single(Dot(levels, Vector256.Load(x), vnni)), Vector256.Create(Vector128.Create(ddx * scA), Vector128.Create(ddx * scB)), acc);

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void RowQ6K(byte* w, int superBlocks, sbyte* qx, float* dx, short* sx, int n, int tn, bool vnni, Span<float> results)
    {
        Vector256<float> a0 = default, a1 = default, a2 = default, a3 = default;
        float o0 = 0, o1 = 0, o2 = 0, o3 = 0;
        var nb = n / 32;
        var ns = n / 16;
        var low = Vector256.Create((byte)0x0F);
        var high = Vector256.Create((byte)0x30);
        for (var s = 0; s < superBlocks; s++)
        {
            var blk = w + (s * 210);
            var d = Half(blk + 208);
            for (var h = 0; h < 2; h++)
            {
                var qlA = Vector256.Load(blk + (64 * h));
                var qlB = Vector256.Load(blk + (64 * h) + 32);
                var qh = Vector256.Load(blk + 128 + (32 * h));
                var sc = (sbyte*)(blk + 192 + (8 * h));
                for (var g = 0; g < 4; g++)
                {
                    var levels = g switch
                    {
                        0 => (qlA & low) | (Vector256.ShiftLeft(qh.AsUInt16(), 4).AsByte() & high),
                        1 => (qlB & low) | (Vector256.ShiftLeft(qh.AsUInt16(), 2).AsByte() & high),
                        2 => (Vector256.ShiftRightLogical(qlA.AsUInt16(), 4).AsByte() & low) | (qh & high),
                        _ => (Vector256.ShiftRightLogical(qlB.AsUInt16(), 4).AsByte() & low) | (Vector256.ShiftRightLogical(qh.AsUInt16(), 2).AsByte() & high),
                    };
                    var bi = (s * 8) + (h * 4) + g;
                    float scA = sc[2 * g], scB = sc[(2 * g) + 1];
                    var xo = (long)bi * 32;
                    var ddx = d * dx[bi];
                    a0 = Sixteens(a0, levels, qx + xo, ddx, scA, scB, vnni);
                    o0 += 32 * ddx * ((scA * sx[2 * bi]) + (scB * sx[(2 * bi) + 1]));
                    if (tn > 1)
                    {
                        ddx = d * dx[nb + bi];
                        a1 = Sixteens(a1, levels, qx + n + xo, ddx, scA, scB, vnni);
                        o1 += 32 * ddx * ((scA * sx[ns + (2 * bi)]) + (scB * sx[ns + (2 * bi) + 1]));
                    }

                    if (tn > 2)
                    {
                        ddx = d * dx[(2 * nb) + bi];
                        a2 = Sixteens(a2, levels, qx + (2 * n) + xo, ddx, scA, scB, vnni);
                        o2 += 32 * ddx * ((scA * sx[(2 * ns) + (2 * bi)]) + (scB * sx[(2 * ns) + (2 * bi) + 1]));
                    }

                    if (tn > 3)
                    {
                        ddx = d * dx[(3 * nb) + bi];
                        a3 = Sixteens(a3, levels, qx + (3 * n) + xo, ddx, scA, scB, vnni);
                        o3 += 32 * ddx * ((scA * sx[(3 * ns) + (2 * bi)]) + (scB * sx[(3 * ns) + (2 * bi) + 1]));
                    }
                }
            }
        }

        results[0] = Sum(a0) - o0;
        if (tn > 1)
        {
            results[1] = Sum(a1) - o1;
        }

        if (tn > 2)
        {
            results[2] = Sum(a2) - o2;
        }

        if (tn > 3)
        {
            results[3] = Sum(a3) - o3;
        }
    }

    /// <summary>The portable kernel: the same integer arithmetic one value at a time.</summary>
    internal static float ScalarRow(DType type, byte* w, int n, sbyte* qx, float* dx, short* sx)
    {
        var result = 0f;
        Span<byte> levels = stackalloc byte[256];
        switch (type)
        {
            case DType.Q8_0:
                for (var b = 0; b < n / 32; b++)
                {
                    var wb = w + (b * 34);
                    var dot = 0;
                    for (var i = 0; i < 32; i++)
                    {
                        dot += ((sbyte*)(wb + 2))[i] * qx[(b * 32) + i];
                    }

                    result += Half(wb) * dx[b] * dot;
                }

                return result;
            case DType.Q4_0:
                for (var b = 0; b < n / 32; b++)
                {
                    var wb = w + (b * 18);
                    var dot = 0;
                    for (var i = 0; i < 16; i++)
                    {
                        dot += (wb[2 + i] & 0xF) * qx[(b * 32) + i];
                        dot += (wb[2 + i] >> 4) * qx[(b * 32) + 16 + i];
                    }

                    result += Half(wb) * dx[b] * (dot - (8 * (sx[2 * b] + sx[(2 * b) + 1])));
                }

                return result;
            case DType.Q4_K:
            case DType.Q5_K:
            {
                var five = type == DType.Q5_K;
                var bytes = five ? 176 : 144;
                for (var s = 0; s < n / 256; s++)
                {
                    var blk = w + (s * bytes);
                    var d = Half(blk);
                    var dmin = Half(blk + 2);
                    var packed = new ReadOnlySpan<byte>(blk + 4, 12);
                    var qs = five ? blk + 48 : blk + 16;
                    for (var p = 0; p < 4; p++)
                    {
                        for (var l = 0; l < 32; l++)
                        {
                            var q = qs[(32 * p) + l];
                            levels[(64 * p) + l] = (byte)((q & 0xF) + (five && (blk[16 + l] & (1 << (2 * p))) != 0 ? 16 : 0));
                            levels[(64 * p) + 32 + l] = (byte)((q >> 4) + (five && (blk[16 + l] & (1 << ((2 * p) + 1))) != 0 ? 16 : 0));
                        }
                    }

                    for (var j = 0; j < 8; j++)
                    {
                        var (sc, m) = Formats.Gguf.GgmlQuants.ScaleMinK4(j, packed);
                        var bi = (s * 8) + j;
                        var dot = 0;
                        for (var i = 0; i < 32; i++)
                        {
                            dot += levels[(32 * j) + i] * qx[(bi * 32) + i];
                        }

                        result += (d * sc * dx[bi] * dot) - (dmin * m * dx[bi] * (sx[2 * bi] + sx[(2 * bi) + 1]));
                    }
                }

                return result;
            }

            case DType.Q6_K:
                for (var s = 0; s < n / 256; s++)
                {
                    var blk = w + (s * 210);
                    var d = Half(blk + 208);
                    for (var h = 0; h < 2; h++)
                    {
                        var ql = blk + (64 * h);
                        var qh = blk + 128 + (32 * h);
                        for (var l = 0; l < 32; l++)
                        {
                            levels[(128 * h) + l] = (byte)((ql[l] & 0xF) | ((qh[l] & 3) << 4));
                            levels[(128 * h) + 32 + l] = (byte)((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4));
                            levels[(128 * h) + 64 + l] = (byte)((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4));
                            levels[(128 * h) + 96 + l] = (byte)((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4));
                        }
                    }

                    var scales = (sbyte*)(blk + 192);
                    for (var j = 0; j < 16; j++)
                    {
                        var bi = (s * 8) + (j / 2);
                        var dot = 0;
                        for (var i = 0; i < 16; i++)
                        {
                            dot += levels[(16 * j) + i] * qx[(s * 256) + (16 * j) + i];
                        }

                        result += d * scales[j] * dx[bi] * (dot - (32 * sx[(s * 16) + j]));
                    }
                }

                return result;
            default:
                throw new InvalidOperationException($"{type} is not a block type");
        }
    }
}
