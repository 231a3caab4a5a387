using System.Numerics.Tensors;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace Enclave.Knowledge.Vectors;

/// <summary>
/// Dot products between an fp32 query and one stored vector in its stored precision (fp32, fp16 or int8 with a
/// per-vector scale), always accumulating in fp32. Every kernel widens the stored lanes in registers, so no
/// decoded copy of the stored vector is written to memory; Vector512 where the CPU has it, Vector256 otherwise,
/// and a scalar loop for the tail or a CPU without either.
/// </summary>
internal static unsafe class VectorKernels
{
    // 2^112: multiplying a half's exponent/mantissa bits placed in float position by it rebiases 15 → 127.
    private static readonly float HalfExponentRebias = BitConverter.UInt32BitsToSingle(0x77800000);

    /// <summary>Bytes one stored vector occupies: fp32/fp16 lanes, or a float scale followed by int8 codes.</summary>
    public static int RecordBytes(VectorStorage storage, int dimensions) => storage switch
    {
        VectorStorage.Float32 => dimensions * sizeof(float),
        VectorStorage.Float16 => dimensions * sizeof(ushort),
        VectorStorage.Int8 => sizeof(float) + dimensions,
        _ => throw new ArgumentOutOfRangeException(nameof(storage), storage, "unknown vector storage"),
    };

    /// <summary>q · record, where record holds <paramref name="n"/> lanes in <paramref name="storage"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Dot(VectorStorage storage, float* q, byte* record, int n) => storage switch
    {
        VectorStorage.Float32 => TensorPrimitives.Dot(new ReadOnlySpan<float>(q, n), new ReadOnlySpan<float>(record, n)),
        VectorStorage.Float16 => DotHalf(q, (ushort*)record, n),
        _ => *(float*)record * DotInt8(q, (sbyte*)(record + sizeof(float)), n),
    };

    /// <summary>
    /// fp16 → fp32 by bit manipulation: shifting the exponent and mantissa into float position and multiplying by
    /// 2^112 rebias the exponent and turn half subnormals into the right float at once. Stored vectors are finite
    /// (checked on insert), so the inf/NaN encodings never occur.
    /// </summary>
    public static float DotHalf(float* q, ushort* h, int n)
    {
        var i = 0;
        var sum = 0f;
        if (Vector512.IsHardwareAccelerated && n >= 32)
        {
            var acc0 = Vector512<float>.Zero;
            var acc1 = Vector512<float>.Zero;
            var magic = Vector512.Create(HalfExponentRebias);
            var magnitude = Vector512.Create(0x7fffu);
            var signBit = Vector512.Create(0x8000u);
            for (; i <= n - 32; i += 32)
            {
                var (lo, hi) = Vector512.Widen(Vector512.Load(h + i));
                acc0 = Vector512.FusedMultiplyAdd(Vector512.Load(q + i), HalfToSingle(lo, magic, magnitude, signBit), acc0);
                acc1 = Vector512.FusedMultiplyAdd(Vector512.Load(q + i + 16), HalfToSingle(hi, magic, magnitude, signBit), acc1);
            }

            sum = Vector512.Sum(acc0 + acc1);
        }
        else if (Vector256.IsHardwareAccelerated && n >= 16)
        {
            var acc0 = Vector256<float>.Zero;
            var acc1 = Vector256<float>.Zero;
            var magic = Vector256.Create(HalfExponentRebias);
            var magnitude = Vector256.Create(0x7fffu);
            var signBit = Vector256.Create(0x8000u);
            for (; i <= n - 16; i += 16)
            {
                var (lo, hi) = Vector256.Widen(Vector256.Load(h + i));
                acc0 = Vector256.FusedMultiplyAdd(Vector256.Load(q + i), HalfToSingle(lo, magic, magnitude, signBit), acc0);
                acc1 = Vector256.FusedMultiplyAdd(Vector256.Load(q + i + 8), HalfToSingle(hi, magic, magnitude, signBit), acc1);
            }

            sum = Vector256.Sum(acc0 + acc1);
        }

        for (; i < n; i++)
        {
            sum += q[i] * (float)BitConverter.UInt16BitsToHalf(h[i]);
        }

        return sum;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> HalfToSingle(Vector512<uint> bits, Vector512<float> magic, Vector512<uint> magnitude, Vector512<uint> signBit) =>
        ((bits & magnitude) << 13).AsSingle() * magic | ((bits & signBit) << 16).AsSingle();

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> HalfToSingle(Vector256<uint> bits, Vector256<float> magic, Vector256<uint> magnitude, Vector256<uint> signBit) =>
        ((bits & magnitude) << 13).AsSingle() * magic | ((bits & signBit) << 16).AsSingle();

    /// <summary>q · codes (without the scale): int8 lanes widened to int32 and converted to fp32 in registers.</summary>
    public static float DotInt8(float* q, sbyte* codes, int n)
    {
        var i = 0;
        var sum = 0f;
        if (Vector512.IsHardwareAccelerated && n >= 64)
        {
            var acc0 = Vector512<float>.Zero;
            var acc1 = Vector512<float>.Zero;
            for (; i <= n - 64; i += 64)
            {
                var (s0, s1) = Vector512.Widen(Vector512.Load(codes + i));
                var (a, b) = Vector512.Widen(s0);
                var (c, d) = Vector512.Widen(s1);
                acc0 = Vector512.FusedMultiplyAdd(Vector512.Load(q + i), Vector512.ConvertToSingle(a), acc0);
                acc1 = Vector512.FusedMultiplyAdd(Vector512.Load(q + i + 16), Vector512.ConvertToSingle(b), acc1);
                acc0 = Vector512.FusedMultiplyAdd(Vector512.Load(q + i + 32), Vector512.ConvertToSingle(c), acc0);
                acc1 = Vector512.FusedMultiplyAdd(Vector512.Load(q + i + 48), Vector512.ConvertToSingle(d), acc1);
            }

            sum = Vector512.Sum(acc0 + acc1);
        }
        else if (Vector256.IsHardwareAccelerated && n >= 32)
        {
            var acc0 = Vector256<float>.Zero;
            var acc1 = Vector256<float>.Zero;
            for (; i <= n - 32; i += 32)
            {
                var (s0, s1) = Vector256.Widen(Vector256.Load(codes + i));
                var (a, b) = Vector256.Widen(s0);
                var (c, d) = Vector256.Widen(s1);
                acc0 = Vector256.FusedMultiplyAdd(Vector256.Load(q + i), Vector256.ConvertToSingle(a), acc0);
                acc1 = Vector256.FusedMultiplyAdd(Vector256.Load(q + i + 8), Vector256.ConvertToSingle(b), acc1);
                acc0 = Vector256.FusedMultiplyAdd(Vector256.Load(q + i + 16), Vector256.ConvertToSingle(c), acc0);
                acc1 = Vector256.FusedMultiplyAdd(Vector256.Load(q + i + 24), Vector256.ConvertToSingle(d), acc1);
            }

            sum = Vector256.Sum(acc0 + acc1);
        }

        for (; i < n; i++)
        {
            sum += q[i] * codes[i];
        }

        return sum;
    }

    /// <summary>Writes <paramref name="vector"/> (already normalised for cosine) into a record of the given storage.</summary>
    public static void Encode(VectorStorage storage, ReadOnlySpan<float> vector, byte* record)
    {
        var n = vector.Length;
        switch (storage)
        {
            case VectorStorage.Float32:
                vector.CopyTo(new Span<float>(record, n));
                break;
            case VectorStorage.Float16:
                TensorPrimitives.ConvertToHalf(vector, new Span<Half>(record, n));
                break;
            default:
                // Symmetric per-vector scale: the largest magnitude maps to ±127, so no lane clips.
                var maxAbs = TensorPrimitives.MaxMagnitude(vector);
                maxAbs = MathF.Abs(maxAbs);
                var scale = maxAbs / 127f;
                *(float*)record = scale;
                var codes = (sbyte*)(record + sizeof(float));
                var inverse = scale > 0 ? 1f / scale : 0f;
                for (var i = 0; i < n; i++)
                {
                    codes[i] = (sbyte)Math.Clamp(MathF.Round(vector[i] * inverse), -127f, 127f);
                }

                break;
        }
    }

    /// <summary>The stored vector back in fp32 (what every distance computed against it sees).</summary>
    public static void Decode(VectorStorage storage, byte* record, Span<float> destination)
    {
        var n = destination.Length;
        switch (storage)
        {
            case VectorStorage.Float32:
                new ReadOnlySpan<float>(record, n).CopyTo(destination);
                break;
            case VectorStorage.Float16:
                TensorPrimitives.ConvertToSingle(new ReadOnlySpan<Half>(record, n), destination);
                break;
            default:
                var scale = *(float*)record;
                var codes = (sbyte*)(record + sizeof(float));
                for (var i = 0; i < n; i++)
                {
                    destination[i] = codes[i] * scale;
                }

                break;
        }
    }

    /// <summary>
    /// Checks a caller's vector and copies it into <paramref name="destination"/>, normalised for cosine. Bad input
    /// (wrong length, NaN/infinity, a zero vector under cosine, fp16 overflow) is refused before anything changes.
    /// </summary>
    public static void Prepare(VectorIndexOptions options, ReadOnlySpan<float> vector, Span<float> destination, string what)
    {
        if (vector.Length != options.Dimensions)
        {
            throw new ArgumentException($"{what} has {vector.Length} dimensions; this index holds {options.Dimensions}-dimensional vectors", nameof(vector));
        }

        for (var i = 0; i < vector.Length; i++)
        {
            if (!float.IsFinite(vector[i]))
            {
                throw new ArgumentException($"{what} has a non-finite value at dimension {i}", nameof(vector));
            }
        }

        if (options.Metric == VectorMetric.Cosine)
        {
            var norm = TensorPrimitives.Norm(vector);
            if (!(norm > 0) || !float.IsFinite(norm))
            {
                throw new ArgumentException($"{what} has zero length, which has no direction for cosine similarity", nameof(vector));
            }

            TensorPrimitives.Divide(vector, norm, destination);
        }
        else
        {
            vector.CopyTo(destination);
            if (options.Storage == VectorStorage.Float16 && TensorPrimitives.MaxMagnitude(vector) is var max && MathF.Abs(max) > (float)Half.MaxValue)
            {
                throw new ArgumentException($"{what} has a value of magnitude {MathF.Abs(max)}, beyond what fp16 storage holds ({(float)Half.MaxValue})", nameof(vector));
            }
        }
    }
}
