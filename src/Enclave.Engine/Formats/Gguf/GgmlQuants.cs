using System.Buffers.Binary;
using Enclave.Engine.Backends;

namespace Enclave.Engine.Formats.Gguf;

/// <summary>
/// Scalar reference conversions between fp32 and ggml's block formats, written from the format description:
/// dequantisation follows ggml's <c>dequantize_row_*</c> arithmetic operation for operation (so results are
/// bit-identical), quantisation follows the reference quantisers <c>quantize_row_*_ref</c>, including the K-quant
/// scale searches (<c>make_qkx2_quants</c> for Q4_K/Q5_K, <c>make_qx_quants</c> for Q6_K).
///
/// Block layouts (little-endian, no padding):
/// Q8_0 (32 values, 34 bytes): f16 d, i8 qs[32]; x = d * q.
/// Q4_0 (32 values, 18 bytes): f16 d, u8 qs[16]; low nibbles are values 0..15, high nibbles 16..31; x = d * (q - 8).
/// Q4_1 (32 values, 20 bytes): f16 d, f16 m, u8 qs[16] (nibbles as Q4_0); x = d * q + m.
/// Q5_0 (32 values, 22 bytes): f16 d, u8 qh[4], u8 qs[16]; the fifth bit of value j (0..31) is bit j of the
///   little-endian u32 qh, so value j &lt; 16 is low nibble j | bit j, value 16 + j high nibble j | bit 16 + j; x = d * (q - 16).
/// Q5_1 (32 values, 24 bytes): f16 d, f16 m, u8 qh[4], u8 qs[16] (levels as Q5_0); x = d * q + m.
/// Q4_K (256 values, 144 bytes): f16 d, f16 dmin, u8 scales[12] (eight 6-bit scale/min pairs), u8 qs[128];
///   sub-block j of 32 values: x = d * sc_j * q - dmin * m_j; each 64 values share 32 bytes (low nibbles first).
/// Q5_K (256 values, 176 bytes): f16 d, f16 dmin, u8 scales[12], u8 qh[32] (fifth bits), u8 qs[128].
/// Q6_K (256 values, 210 bytes): u8 ql[128] (low 4 bits), u8 qh[64] (high 2 bits), i8 scales[16], f16 d;
///   sub-block of 16 values: x = d * scale * (q - 32).
/// </summary>
public static class GgmlQuants
{
    public const int QK = 32;
    public const int QKK = 256;
    private const float GroupMaxEps = 1e-15f;

    /// <summary>Expands whole blocks into fp32. source holds dst.Length / BlockElements blocks.</summary>
    public static void Dequantize(DType dtype, ReadOnlySpan<byte> source, Span<float> destination)
    {
        var block = dtype.BlockElements();
        var blocks = destination.Length / block;
        if (destination.Length % block != 0 || source.Length < (long)blocks * dtype.BlockBytes())
        {
            throw new ArgumentException($"{destination.Length} {dtype} values need {dtype.StorageBytes(destination.Length - (destination.Length % block))} bytes in whole blocks");
        }

        var bb = dtype.BlockBytes();
        for (var i = 0; i < blocks; i++)
        {
            var src = source.Slice(i * bb, bb);
            var dst = destination.Slice(i * block, block);
            switch (dtype)
            {
                case DType.F32:
                    dst[0] = BinaryPrimitives.ReadSingleLittleEndian(src);
                    break;
                case DType.F16:
                    dst[0] = (float)BinaryPrimitives.ReadHalfLittleEndian(src);
                    break;
                case DType.BF16:
                    dst[0] = BitConverter.Int32BitsToSingle(BinaryPrimitives.ReadUInt16LittleEndian(src) << 16);
                    break;
                case DType.Q8_0:
                    DequantizeQ8_0(src, dst);
                    break;
                case DType.Q4_0:
                    DequantizeQ4_0(src, dst);
                    break;
                case DType.Q4_1:
                    DequantizeQ4_1(src, dst);
                    break;
                case DType.Q5_0:
                    DequantizeQ5(src, dst, hasMin: false);
                    break;
                case DType.Q5_1:
                    DequantizeQ5(src, dst, hasMin: true);
                    break;
                case DType.Q4_K:
                    DequantizeQ4K(src, dst);
                    break;
                case DType.Q5_K:
                    DequantizeQ5K(src, dst);
                    break;
                case DType.Q6_K:
                    DequantizeQ6K(src, dst);
                    break;
                default:
                    throw new ArgumentOutOfRangeException(nameof(dtype), dtype, "not a float or ggml block type");
            }
        }
    }

    /// <summary>Quantises whole blocks of fp32 values into destination (StorageBytes(source.Length) bytes).</summary>
    public static void Quantize(DType dtype, ReadOnlySpan<float> source, Span<byte> destination)
    {
        var block = dtype.BlockElements();
        if (source.Length % block != 0 || destination.Length < dtype.StorageBytes(source.Length))
        {
            throw new ArgumentException($"{source.Length} values are not whole {dtype} blocks of {block}, or the destination is too small");
        }

        switch (dtype)
        {
            case DType.F32:
                System.Runtime.InteropServices.MemoryMarshal.AsBytes(source).CopyTo(destination);
                return;
            case DType.F16:
                var halves = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, Half>(destination);
                for (var i = 0; i < source.Length; i++)
                {
                    halves[i] = (Half)source[i];
                }

                return;
        }

        var bb = dtype.BlockBytes();
        var blocks = source.Length / block;
        for (var i = 0; i < blocks; i++)
        {
            var src = source.Slice(i * block, block);
            var dst = destination.Slice(i * bb, bb);
            switch (dtype)
            {
                case DType.F32:
                    BinaryPrimitives.WriteSingleLittleEndian(dst, src[0]);
                    break;
                case DType.F16:
                    BinaryPrimitives.WriteHalfLittleEndian(dst, (Half)src[0]);
                    break;
                case DType.BF16:
                    BinaryPrimitives.WriteUInt16LittleEndian(dst, FloatToBf16(src[0]));
                    break;
                case DType.Q8_0:
                    QuantizeQ8_0(src, dst);
                    break;
                case DType.Q4_0:
                    QuantizeQ4_0(src, dst);
                    break;
                case DType.Q4_1:
                    QuantizeQ4_1(src, dst);
                    break;
                case DType.Q5_0:
                    QuantizeQ5_0(src, dst);
                    break;
                case DType.Q5_1:
                    QuantizeQ5_1(src, dst);
                    break;
                case DType.Q4_K:
                    QuantizeQ4K(src, dst);
                    break;
                case DType.Q5_K:
                    QuantizeQ5K(src, dst);
                    break;
                case DType.Q6_K:
                    QuantizeQ6K(src, dst);
                    break;
                default:
                    throw new ArgumentOutOfRangeException(nameof(dtype), dtype, "not a float or ggml block type");
            }
        }
    }

    /// <summary>fp32 to bf16 rounding to nearest even, NaN kept quiet (as ggml's GGML_FP32_TO_BF16).</summary>
    public static ushort FloatToBf16(float value)
    {
        var bits = BitConverter.SingleToUInt32Bits(value);
        if ((bits & 0x7fffffff) > 0x7f800000)
        {
            return (ushort)((bits >> 16) | 64);
        }

        return (ushort)((bits + (0x7fff + ((bits >> 16) & 1))) >> 16);
    }

    private static float F16(ReadOnlySpan<byte> b, int offset) => (float)BinaryPrimitives.ReadHalfLittleEndian(b[offset..]);

    private static void WriteF16(Span<byte> b, int offset, float value) => BinaryPrimitives.WriteHalfLittleEndian(b[offset..], (Half)value);

    /// <summary>ggml's nearest_int: round half to even through the 1.5·2²³ trick; valid for |x| &lt; 2²².</summary>
    internal static int NearestInt(float value)
    {
        var v = value + 12582912f;
        return (BitConverter.SingleToInt32Bits(v) & 0x007fffff) - 0x00400000;
    }

    // ---- Q8_0 ----

    private static void DequantizeQ8_0(ReadOnlySpan<byte> b, Span<float> y)
    {
        var d = F16(b, 0);
        for (var j = 0; j < QK; j++)
        {
            y[j] = (sbyte)b[2 + j] * d;
        }
    }

    private static void QuantizeQ8_0(ReadOnlySpan<float> x, Span<byte> b)
    {
        var amax = 0f;
        for (var j = 0; j < QK; j++)
        {
            amax = MathF.Max(amax, MathF.Abs(x[j]));
        }

        var d = amax / 127f;
        var id = d != 0 ? 1f / d : 0f;
        WriteF16(b, 0, d);
        for (var j = 0; j < QK; j++)
        {
            b[2 + j] = (byte)(sbyte)MathF.Round(x[j] * id, MidpointRounding.AwayFromZero);
        }
    }

    // ---- Q4_0 ----

    private static void DequantizeQ4_0(ReadOnlySpan<byte> b, Span<float> y)
    {
        var d = F16(b, 0);
        for (var j = 0; j < QK / 2; j++)
        {
            var x0 = (b[2 + j] & 0x0F) - 8;
            var x1 = (b[2 + j] >> 4) - 8;
            y[j] = x0 * d;
            y[j + (QK / 2)] = x1 * d;
        }
    }

    /// <summary>The value of largest magnitude, sign kept (the first of equals, as ggml's loop finds it).</summary>
    private static float LargestMagnitude(ReadOnlySpan<float> x)
    {
        var amax = 0f;
        var max = 0f;
        foreach (var v in x)
        {
            if (amax < MathF.Abs(v))
            {
                amax = MathF.Abs(v);
                max = v;
            }
        }

        return max;
    }

    private static void QuantizeQ4_0(ReadOnlySpan<float> x, Span<byte> b)
    {
        // The value of largest magnitude, sign kept, maps to -8 so the full [-8, 7] range is used.
        var max = LargestMagnitude(x[..QK]);
        var d = max / -8f;
        var id = d != 0 ? 1f / d : 0f;
        WriteF16(b, 0, d);
        for (var j = 0; j < QK / 2; j++)
        {
            var x0 = x[j] * id;
            var x1 = x[(QK / 2) + j] * id;
            var xi0 = Math.Min(15, (int)(sbyte)(x0 + 8.5f));
            var xi1 = Math.Min(15, (int)(sbyte)(x1 + 8.5f));
            b[2 + j] = (byte)(xi0 | (xi1 << 4));
        }
    }

    // ---- Q4_1 ----

    private static void DequantizeQ4_1(ReadOnlySpan<byte> b, Span<float> y)
    {
        var d = F16(b, 0);
        var m = F16(b, 2);
        for (var j = 0; j < QK / 2; j++)
        {
            var x0 = b[4 + j] & 0x0F;
            var x1 = b[4 + j] >> 4;

            // A product then a sum, each rounded, as ggml's C does (the JIT does not fuse them into one FMA).
            y[j] = (x0 * d) + m;
            y[j + (QK / 2)] = (x1 * d) + m;
        }
    }

    /// <summary>The block's minimum and maximum: Q4_1 and Q5_1 map [min, max] linearly onto their levels.</summary>
    private static (float Min, float Max) Range(ReadOnlySpan<float> x)
    {
        var min = float.MaxValue;
        var max = -float.MaxValue;
        for (var j = 0; j < QK; j++)
        {
            if (x[j] < min)
            {
                min = x[j];
            }

            if (x[j] > max)
            {
                max = x[j];
            }
        }

        return (min, max);
    }

    private static void QuantizeQ4_1(ReadOnlySpan<float> x, Span<byte> b)
    {
        var (min, max) = Range(x);
        var d = (max - min) / 15f;
        var id = d != 0 ? 1f / d : 0f;
        WriteF16(b, 0, d);
        WriteF16(b, 2, min);
        for (var j = 0; j < QK / 2; j++)
        {
            // Truncation after adding a half rounds the non-negative scaled values to nearest, as ggml does.
            var x0 = (x[j] - min) * id;
            var x1 = (x[(QK / 2) + j] - min) * id;
            var xi0 = Math.Min(15, (int)(sbyte)(x0 + 0.5f));
            var xi1 = Math.Min(15, (int)(sbyte)(x1 + 0.5f));
            b[4 + j] = (byte)(xi0 | (xi1 << 4));
        }
    }

    // ---- Q5_0 / Q5_1 ----

    private static void DequantizeQ5(ReadOnlySpan<byte> b, Span<float> y, bool hasMin)
    {
        var d = F16(b, 0);
        var m = hasMin ? F16(b, 2) : 0f;
        var qh = BinaryPrimitives.ReadUInt32LittleEndian(b[(hasMin ? 4 : 2)..]);
        var qs = b.Slice(hasMin ? 8 : 6, QK / 2);
        var offset = hasMin ? 0 : 16;
        for (var j = 0; j < QK / 2; j++)
        {
            var x0 = ((qs[j] & 0x0F) | (int)(((qh >> j) << 4) & 0x10)) - offset;
            var x1 = ((qs[j] >> 4) | (int)((qh >> (j + 12)) & 0x10)) - offset;
            if (hasMin)
            {
                y[j] = (x0 * d) + m;
                y[j + (QK / 2)] = (x1 * d) + m;
            }
            else
            {
                y[j] = x0 * d;
                y[j + (QK / 2)] = x1 * d;
            }
        }
    }

    /// <summary>Stores 32 five-bit levels: low four bits as Q4_0's nibbles, fifth bit of value j as bit j of qh.</summary>
    private static void PackQ5(ReadOnlySpan<int> levels, Span<byte> qh, Span<byte> qs)
    {
        uint high = 0;
        for (var j = 0; j < QK / 2; j++)
        {
            var l0 = levels[j];
            var l1 = levels[(QK / 2) + j];
            qs[j] = (byte)((l0 & 0x0F) | ((l1 & 0x0F) << 4));
            high |= (uint)((l0 & 0x10) >> 4) << j;
            high |= (uint)((l1 & 0x10) >> 4) << (j + (QK / 2));
        }

        BinaryPrimitives.WriteUInt32LittleEndian(qh, high);
    }

    private static void QuantizeQ5_0(ReadOnlySpan<float> x, Span<byte> b)
    {
        // As Q4_0: the value of largest magnitude, sign kept, maps to -16 so the full [-16, 15] range is used.
        var max = LargestMagnitude(x[..QK]);
        var d = max / -16f;
        var id = d != 0 ? 1f / d : 0f;
        WriteF16(b, 0, d);
        Span<int> levels = stackalloc int[QK];
        for (var j = 0; j < QK; j++)
        {
            levels[j] = Math.Min(31, (int)(sbyte)((x[j] * id) + 16.5f));
        }

        PackQ5(levels, b.Slice(2, 4), b.Slice(6, QK / 2));
    }

    private static void QuantizeQ5_1(ReadOnlySpan<float> x, Span<byte> b)
    {
        var (min, max) = Range(x);
        var d = (max - min) / 31f;
        var id = d != 0 ? 1f / d : 0f;
        WriteF16(b, 0, d);
        WriteF16(b, 2, min);
        Span<int> levels = stackalloc int[QK];
        for (var j = 0; j < QK; j++)
        {
            // ggml leaves this unclamped: (max - min) / d rounds to at most 31.
            levels[j] = (byte)(((x[j] - min) * id) + 0.5f);
        }

        PackQ5(levels, b.Slice(4, 4), b.Slice(8, QK / 2));
    }

    // ---- shared K-quant scale packing ----

    /// <summary>ggml's get_scale_min_k4: the 6-bit scale and min of sub-block j from the 12 packed bytes.</summary>
    internal static (int Scale, int Min) ScaleMinK4(int j, ReadOnlySpan<byte> q)
    {
        if (j < 4)
        {
            return (q[j] & 63, q[j + 4] & 63);
        }

        return ((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4), (q[j + 4] >> 4) | ((q[j] >> 6) << 4));
    }

    private static void PackScalesK4(ReadOnlySpan<float> scales, ReadOnlySpan<float> mins, float maxScale, float maxMin, Span<byte> b)
    {
        var invScale = maxScale > 0 ? 63f / maxScale : 0f;
        var invMin = maxMin > 0 ? 63f / maxMin : 0f;
        var s = b.Slice(4, 12);
        s.Clear();
        for (var j = 0; j < 8; j++)
        {
            var ls = Math.Min(63, NearestInt(invScale * scales[j]));
            var lm = Math.Min(63, NearestInt(invMin * mins[j]));
            if (j < 4)
            {
                s[j] = (byte)ls;
                s[j + 4] = (byte)lm;
            }
            else
            {
                s[j + 4] = (byte)((ls & 0xF) | ((lm & 0xF) << 4));
                s[j - 4] |= (byte)((ls >> 4) << 6);
                s[j] |= (byte)((lm >> 4) << 6);
            }
        }

        WriteF16(b, 0, maxScale / 63f);
        WriteF16(b, 2, maxMin / 63f);
    }

    /// <summary>
    /// ggml's make_qkx2_quants: an asymmetric (scale, min) fit of n values to [0, nmax] minimising the weighted
    /// squared error, trying nstep scales around the min-max one. Returns the scale; min is returned negated, as ggml does.
    /// </summary>
    internal static float MakeQkx2Quants(int n, int nmax, ReadOnlySpan<float> x, ReadOnlySpan<float> weights, Span<byte> l, out float theMin,
        Span<byte> laux, float rmin, float rdelta, int nstep)
    {
        var min = x[0];
        var max = x[0];
        var sumW = weights[0];
        var sumX = sumW * x[0];
        for (var i = 1; i < n; i++)
        {
            if (x[i] < min)
            {
                min = x[i];
            }

            if (x[i] > max)
            {
                max = x[i];
            }

            var w = weights[i];
            sumW += w;
            sumX += w * x[i];
        }

        if (min > 0)
        {
            min = 0;
        }

        if (max == min)
        {
            l[..n].Clear();
            theMin = -min;
            return 0f;
        }

        var iscale = nmax / (max - min);
        var scale = 1 / iscale;
        var bestMad = 0f;
        for (var i = 0; i < n; i++)
        {
            var li = NearestInt(iscale * (x[i] - min));
            l[i] = (byte)Math.Max(0, Math.Min(nmax, li));
            var diff = (scale * l[i]) + min - x[i];
            diff *= diff;
            bestMad += weights[i] * diff;
        }

        if (nstep < 1)
        {
            theMin = -min;
            return scale;
        }

        for (var step = 0; step <= nstep; step++)
        {
            iscale = (rmin + (rdelta * step) + nmax) / (max - min);
            float sumL = 0, sumL2 = 0, sumXL = 0;
            for (var i = 0; i < n; i++)
            {
                var li = NearestInt(iscale * (x[i] - min));
                li = Math.Max(0, Math.Min(nmax, li));
                laux[i] = (byte)li;
                var w = weights[i];
                sumL += w * li;
                sumL2 += w * li * li;
                sumXL += w * li * x[i];
            }

            var det = (sumW * sumL2) - (sumL * sumL);
            if (det > 0)
            {
                var thisScale = ((sumW * sumXL) - (sumX * sumL)) / det;
                var thisMin = ((sumL2 * sumX) - (sumL * sumXL)) / det;
                if (thisMin > 0)
                {
                    thisMin = 0;
                    thisScale = sumXL / sumL2;
                }

                var mad = 0f;
                for (var i = 0; i < n; i++)
                {
                    var diff = (thisScale * laux[i]) + thisMin - x[i];
                    diff *= diff;
                    mad += weights[i] * diff;
                }

                if (mad < bestMad)
                {
                    laux[..n].CopyTo(l);
                    bestMad = mad;
                    scale = thisScale;
                    min = thisMin;
                }
            }
        }

        theMin = -min;
        return scale;
    }

    /// <summary>
    /// ggml's make_qx_quants with rmse_type 1: a symmetric fit of n values to [-nmax, nmax-1] weighted by x², trying
    /// scales around -nmax/max and keeping the best. L receives the levels offset by nmax.
    /// </summary>
    internal static float MakeQxQuants(int n, int nmax, ReadOnlySpan<float> x, Span<byte> l)
    {
        var max = 0f;
        var amax = 0f;
        for (var i = 0; i < n; i++)
        {
            var ax = MathF.Abs(x[i]);
            if (ax > amax)
            {
                amax = ax;
                max = x[i];
            }
        }

        if (amax < GroupMaxEps)
        {
            l[..n].Clear();
            return 0f;
        }

        var iscale = -nmax / max;
        float sumLX = 0, sumL2 = 0;
        for (var i = 0; i < n; i++)
        {
            var li = NearestInt(iscale * x[i]);
            li = Math.Max(-nmax, Math.Min(nmax - 1, li));
            l[i] = (byte)(li + nmax);
            var w = x[i] * x[i];
            sumLX += w * x[i] * li;
            sumL2 += w * li * li;
        }

        var scale = sumL2 != 0 ? sumLX / sumL2 : 0f;
        var best = scale * sumLX;
        for (var step = -9; step <= 9; step++)
        {
            if (step == 0)
            {
                continue;
            }

            iscale = -(nmax + (0.1f * step)) / max;
            sumLX = 0;
            sumL2 = 0;
            for (var i = 0; i < n; i++)
            {
                var li = NearestInt(iscale * x[i]);
                li = Math.Max(-nmax, Math.Min(nmax - 1, li));
                var w = x[i] * x[i];
                sumLX += w * x[i] * li;
                sumL2 += w * li * li;
            }

            if (sumL2 > 0 && sumLX * sumLX > best * sumL2)
            {
                for (var i = 0; i < n; i++)
                {
                    var li = NearestInt(iscale * x[i]);
                    l[i] = (byte)(nmax + Math.Max(-nmax, Math.Min(nmax - 1, li)));
                }

                scale = sumLX / sumL2;
                best = scale * sumLX;
            }
        }

        return scale;
    }

    // ---- Q4_K ----

    private static void DequantizeQ4K(ReadOnlySpan<byte> b, Span<float> y)
    {
        var d = F16(b, 0);
        var min = F16(b, 2);
        var scales = b.Slice(4, 12);
        var q = b.Slice(16, 128);
        var o = 0;
        var s = 0;
        for (var j = 0; j < QKK; j += 64)
        {
            var (sc1, m1i) = ScaleMinK4(s, scales);
            var d1 = d * sc1;
            var m1 = min * m1i;
            var (sc2, m2i) = ScaleMinK4(s + 1, scales);
            var d2 = d * sc2;
            var m2 = min * m2i;
            for (var l = 0; l < 32; l++)
            {
                y[o++] = (d1 * (q[l] & 0xF)) - m1;
            }

            for (var l = 0; l < 32; l++)
            {
                y[o++] = (d2 * (q[l] >> 4)) - m2;
            }

            q = q[32..];
            s += 2;
        }
    }

    private static void QuantizeQ4K(ReadOnlySpan<float> x, Span<byte> b) => QuantizeK4Or5(x, b, 15);

    /// <summary>Q4_K and Q5_K share the scale search and packing; they differ in level count and bit layout.</summary>
    private static void QuantizeK4Or5(ReadOnlySpan<float> x, Span<byte> b, int nmax)
    {
        Span<byte> levels = stackalloc byte[QKK];
        Span<byte> laux = stackalloc byte[32];
        Span<float> weights = stackalloc float[32];
        Span<float> mins = stackalloc float[8];
        Span<float> scales = stackalloc float[8];
        float maxScale = 0, maxMin = 0;
        for (var j = 0; j < 8; j++)
        {
            var sub = x.Slice(32 * j, 32);
            var sumX2 = 0f;
            for (var l = 0; l < 32; l++)
            {
                sumX2 += sub[l] * sub[l];
            }

            var avX = MathF.Sqrt(sumX2 / 32);
            for (var l = 0; l < 32; l++)
            {
                weights[l] = avX + MathF.Abs(sub[l]);
            }

            scales[j] = nmax == 15
                ? MakeQkx2Quants(32, 15, sub, weights, levels.Slice(32 * j, 32), out mins[j], laux, -1f, 0.1f, 20)
                : MakeQkx2Quants(32, 31, sub, weights, levels.Slice(32 * j, 32), out mins[j], laux, -0.5f, 0.1f, 15);
            maxScale = MathF.Max(maxScale, scales[j]);
            maxMin = MathF.Max(maxMin, mins[j]);
        }

        PackScalesK4(scales, mins, maxScale, maxMin, b);
        var dAll = F16(b, 0);
        var minAll = F16(b, 2);
        var packed = b.Slice(4, 12);
        for (var j = 0; j < 8; j++)
        {
            var (sc, m) = ScaleMinK4(j, packed);
            var d = dAll * sc;
            if (d == 0)
            {
                continue;
            }

            var dm = minAll * m;
            for (var ii = 0; ii < 32; ii++)
            {
                var li = NearestInt((x[(32 * j) + ii] + dm) / d);
                levels[(32 * j) + ii] = (byte)Math.Max(0, Math.Min(nmax, li));
            }
        }

        if (nmax == 15)
        {
            var q = b.Slice(16, 128);
            for (var j = 0; j < QKK; j += 64)
            {
                for (var l = 0; l < 32; l++)
                {
                    q[(j / 2) + l] = (byte)(levels[j + l] | (levels[j + l + 32] << 4));
                }
            }
        }
        else
        {
            var qh = b.Slice(16, 32);
            var ql = b.Slice(48, 128);
            qh.Clear();
            byte m1 = 1, m2 = 2;
            for (var n = 0; n < QKK; n += 64)
            {
                for (var j = 0; j < 32; j++)
                {
                    int l1 = levels[n + j];
                    if (l1 > 15)
                    {
                        l1 -= 16;
                        qh[j] |= m1;
                    }

                    int l2 = levels[n + j + 32];
                    if (l2 > 15)
                    {
                        l2 -= 16;
                        qh[j] |= m2;
                    }

                    ql[(n / 2) + j] = (byte)(l1 | (l2 << 4));
                }

                m1 <<= 2;
                m2 <<= 2;
            }
        }
    }

    // ---- Q5_K ----

    private static void DequantizeQ5K(ReadOnlySpan<byte> b, Span<float> y)
    {
        var d = F16(b, 0);
        var min = F16(b, 2);
        var scales = b.Slice(4, 12);
        var qh = b.Slice(16, 32);
        var ql = b.Slice(48, 128);
        var o = 0;
        var s = 0;
        byte u1 = 1, u2 = 2;
        for (var j = 0; j < QKK; j += 64)
        {
            var (sc1, m1i) = ScaleMinK4(s, scales);
            var d1 = d * sc1;
            var m1 = min * m1i;
            var (sc2, m2i) = ScaleMinK4(s + 1, scales);
            var d2 = d * sc2;
            var m2 = min * m2i;
            for (var l = 0; l < 32; l++)
            {
                y[o++] = (d1 * ((ql[l] & 0xF) + ((qh[l] & u1) != 0 ? 16 : 0))) - m1;
            }

            for (var l = 0; l < 32; l++)
            {
                y[o++] = (d2 * ((ql[l] >> 4) + ((qh[l] & u2) != 0 ? 16 : 0))) - m2;
            }

            ql = ql[32..];
            s += 2;
            u1 <<= 2;
            u2 <<= 2;
        }
    }

    private static void QuantizeQ5K(ReadOnlySpan<float> x, Span<byte> b) => QuantizeK4Or5(x, b, 31);

    // ---- Q6_K ----

    private static void DequantizeQ6K(ReadOnlySpan<byte> b, Span<float> y)
    {
        var ql = b[..128];
        var qh = b.Slice(128, 64);
        var sc = b.Slice(192, 16);
        var d = F16(b, 208);
        var o = 0;
        for (var n = 0; n < QKK; n += 128)
        {
            for (var l = 0; l < 32; l++)
            {
                var isc = l / 16;
                var q1 = (sbyte)((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
                var q2 = (sbyte)((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
                var q3 = (sbyte)((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
                var q4 = (sbyte)((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
                y[o + l] = d * (sbyte)sc[isc] * q1;
                y[o + l + 32] = d * (sbyte)sc[isc + 2] * q2;
                y[o + l + 64] = d * (sbyte)sc[isc + 4] * q3;
                y[o + l + 96] = d * (sbyte)sc[isc + 6] * q4;
            }

            o += 128;
            ql = ql[64..];
            qh = qh[32..];
            sc = sc[8..];
        }
    }

    private static void QuantizeQ6K(ReadOnlySpan<float> x, Span<byte> b)
    {
        Span<byte> levels = stackalloc byte[QKK];
        Span<float> scales = stackalloc float[16];
        float maxScale = 0, maxAbsScale = 0;
        for (var ib = 0; ib < 16; ib++)
        {
            var scale = MakeQxQuants(16, 32, x.Slice(16 * ib, 16), levels.Slice(16 * ib, 16));
            scales[ib] = scale;
            var abs = MathF.Abs(scale);
            if (abs > maxAbsScale)
            {
                maxAbsScale = abs;
                maxScale = scale;
            }
        }

        if (maxAbsScale < GroupMaxEps)
        {
            b[..210].Clear();
            return;
        }

        var iscale = -128f / maxScale;
        WriteF16(b, 208, 1 / iscale);
        var sc = b.Slice(192, 16);
        for (var ib = 0; ib < 16; ib++)
        {
            sc[ib] = (byte)(sbyte)Math.Min(127, NearestInt(iscale * scales[ib]));
        }

        var dAll = F16(b, 208);
        for (var j = 0; j < 16; j++)
        {
            var d = dAll * (sbyte)sc[j];
            if (d == 0)
            {
                continue;
            }

            for (var ii = 0; ii < 16; ii++)
            {
                var li = NearestInt(x[(16 * j) + ii] / d);
                levels[(16 * j) + ii] = (byte)(Math.Max(-32, Math.Min(31, li)) + 32);
            }
        }

        var ql = b[..128];
        var qh = b.Slice(128, 64);
        for (var j = 0; j < QKK; j += 128)
        {
            for (var l = 0; l < 32; l++)
            {
                var q1 = levels[j + l] & 0xF;
                var q2 = levels[j + l + 32] & 0xF;
                var q3 = levels[j + l + 64] & 0xF;
                var q4 = levels[j + l + 96] & 0xF;
                ql[(j / 2) + l] = (byte)(q1 | (q3 << 4));
                ql[(j / 2) + l + 32] = (byte)(q2 | (q4 << 4));
                qh[(j / 4) + l] = (byte)((levels[j + l] >> 4) | ((levels[j + l + 32] >> 4) << 2) | ((levels[j + l + 64] >> 4) << 4) | ((levels[j + l + 96] >> 4) << 6));
            }
        }
    }
}
