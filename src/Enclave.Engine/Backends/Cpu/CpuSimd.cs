using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace Enclave.Engine.Backends.Cpu;

/// <summary>
/// The vector operations the CPU kernels are written against. Each kernel is a generic method over one of the
/// implementations below, so the JIT emits a separate, fully inlined copy per vector width (512, 256, 128 bits or
/// scalar) and the same source serves every machine. Loads never touch memory past the elements they return.
/// </summary>
internal unsafe interface ISimd<TV>
    where TV : struct
{
    static abstract int Count { get; }

    static abstract TV Zero { get; }

    static abstract TV Broadcast(float value);

    static abstract TV Load(float* source);

    static abstract void Store(TV value, float* destination);

    /// <summary>Widens Count bfloat16 values (the upper half of an fp32) to fp32.</summary>
    static abstract TV LoadBf16(ushort* source);

    /// <summary>Converts Count IEEE half values to fp32 exactly (subnormals, infinities and NaN included).</summary>
    static abstract TV LoadF16(ushort* source);

    /// <summary>
    /// Converts Count finite IEEE half values (normals, subnormals, zeros) to fp32 exactly, in about half the
    /// instructions of <see cref="LoadF16"/>; only for data known to hold no infinity or NaN.
    /// </summary>
    static abstract TV LoadF16Finite(ushort* source);

    static abstract TV Add(TV a, TV b);

    static abstract TV Subtract(TV a, TV b);

    static abstract TV Multiply(TV a, TV b);

    /// <summary>a * b + c.</summary>
    static abstract TV MultiplyAdd(TV a, TV b, TV c);

    static abstract float Sum(TV value);

    /// <summary>The larger of each pair of lanes; NaN if either is NaN.</summary>
    static abstract TV Max(TV a, TV b);

    /// <summary>Per lane: <paramref name="ifGreater"/> where a &gt; b, else <paramref name="otherwise"/>.</summary>
    static abstract TV GreaterThanSelect(TV a, TV b, TV ifGreater, TV otherwise);

    /// <summary>
    /// e^x for x ≤ 0 (−∞ included, giving 0), in fp32 throughout: x = n·ln 2 + r with |r| ≤ ln 2 / 2, e^r by the
    /// Cephes polynomial, 2^n put into the exponent field; within 2 ulp of the exact value. Results below the
    /// smallest normal (x &lt; −87.3) are 0, and NaN stays NaN. For softmax weights, whose arguments are scores less
    /// their maximum.
    /// </summary>
    static abstract TV ExpNonPositive(TV x);
}

/// <summary>The constants of <see cref="ISimd{TV}.ExpNonPositive"/>.</summary>
internal static class ExpConstants
{
    public const float Log2E = 1.44269504088896341f;
    public const float Ln2High = 0.693359375f;
    public const float Ln2Low = -2.12194440e-4f;
    public const float Lowest = -87.33654f; // ln of the smallest normal fp32: 2^-126
    public const float P0 = 1.9875691500e-4f;
    public const float P1 = 1.3981999507e-3f;
    public const float P2 = 8.3334519073e-3f;
    public const float P3 = 4.1665795894e-2f;
    public const float P4 = 1.6666665459e-1f;
    public const float P5 = 5.0000001201e-1f;
}

internal static unsafe class CpuSimd
{
    /// <summary>Widest vector the hardware accelerates: 512, 256, 128 or 1 (scalar).</summary>
    public static int BestWidth =>
        Vector512.IsHardwareAccelerated ? 512
        : Vector256.IsHardwareAccelerated ? 256
        : Vector128.IsHardwareAccelerated ? 128
        : 1;

    /// <summary>Whether a width can run here (scalar always can; the vector widths need hardware support).</summary>
    public static bool IsSupported(int width) => width switch
    {
        512 => Vector512.IsHardwareAccelerated,
        256 => Vector256.IsHardwareAccelerated,
        128 => Vector128.IsHardwareAccelerated,
        1 => true,
        _ => false,
    };

    public static string Describe(int width) => width switch
    {
        512 => "avx512",
        256 => System.Runtime.Intrinsics.X86.Avx2.IsSupported ? "avx2" : "simd256",
        128 => System.Runtime.Intrinsics.Arm.AdvSimd.IsSupported ? "neon" : "simd128",
        _ => "scalar",
    };

    /// <summary>
    /// How far ahead of its current read a single-token product asks for weights (bytes). Those products stream every
    /// weight from DRAM once, and one core's hardware prefetcher does not keep enough lines in flight on every CPU: on
    /// a 2-core Xeon (Emerald Rapids) VM, Q8_0 rows on two threads read 11–14 GB/s without it, 19 GB/s with 1 KiB
    /// ahead and 22–31 GB/s with 2–4 KiB, against 26–28 GB/s for a loop that only loads.
    /// </summary>
    internal const int WeightPrefetchDistance = 3072;

    /// <summary>Asks for the cache line <see cref="WeightPrefetchDistance"/> bytes past <paramref name="weights"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static void PrefetchWeights(byte* weights)
    {
        if (System.Runtime.Intrinsics.X86.Sse.IsSupported)
        {
            System.Runtime.Intrinsics.X86.Sse.Prefetch0(weights + WeightPrefetchDistance);
        }
    }

    /// <summary>Scalar bfloat16 to fp32.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Bf16ToSingle(ushort bits) => BitConverter.Int32BitsToSingle(bits << 16);

    /// <summary>Scalar IEEE half to fp32.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float F16ToSingle(ushort bits) => (float)BitConverter.UInt16BitsToHalf(bits);

    // Every half's fp32 value (256 KiB), as ggml keeps one: the block-quantised kernels read a half scale per 32 or 256
    // weights, and a table load is a few cycles where the portable conversion is a dozen dependent instructions.
    // Kernels copy the pointer into a local once per call: reading a static inside a loop can keep a class
    // initialisation check there, which costs registers the loop needs.
    internal static readonly float* HalfTable = BuildHalfTable();

    /// <summary>Scalar IEEE half to fp32 by table lookup (exact: the table holds the converted value of every half).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float HalfToSingle(ushort bits) => HalfTable[bits];

    private static float* BuildHalfTable()
    {
        var table = (float*)System.Runtime.InteropServices.NativeMemory.AlignedAlloc(65536 * sizeof(float), 64);
        for (var i = 0; i < 65536; i++)
        {
            table[i] = F16ToSingle((ushort)i);
        }

        return table;
    }
}

/// <summary>
/// Half to fp32 on integer lanes, shared by the vector widths. The exponent and mantissa are shifted into fp32
/// position and rebased (<see cref="Magnitude(Vector512{uint})"/>); infinities and NaN (half exponent 31) then get the
/// all-ones fp32 exponent, keeping their payload, and the sign goes back on.
/// </summary>
internal static class HalfBits
{
    public const uint HalfExponent = 0x7C00;
    public const uint SingleExponent = 0x7F800000;

    /// <summary>fp32 exponent field minus half exponent field for normals: (127 - 15) in place.</summary>
    private const uint Rebase = (127 - 15) << 23;

    /// <summary>The bits of 2^-14, the smallest normal half.</summary>
    private const uint SmallestNormalHalf = (127 - 14) << 23;

    /// <summary>
    /// The fp32 value of a half's magnitude given as its exponent and mantissa in fp32 position (bits 13-27, the
    /// rest clear). Normals: the exponent rebased by an integer add. Zeros and subnormals (exponent 0): the bits with
    /// exponent 2^-14 read as 2^-14 · (1 + m/1024), less 2^-14, both operands normal. No arithmetic sees a subnormal
    /// fp32 operand: a multiply by 2^112 did, and x86 cores without denormals-are-zero take a microcode assist on each
    /// (a Xeon ran F16 products 17 times slower with one half in eight subnormal; trained weights have a few in a
    /// thousand).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Magnitude(Vector512<uint> bits)
    {
        var normal = (bits + Vector512.Create(Rebase)).AsSingle();
        var small = (bits + Vector512.Create(SmallestNormalHalf)).AsSingle() - Vector512.Create(SmallestNormalHalf).AsSingle();
        return Vector512.ConditionalSelect(Vector512.LessThan(bits, Vector512.Create(0x00800000u)).AsSingle(), small, normal);
    }

    /// <inheritdoc cref="Magnitude(Vector512{uint})"/>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Magnitude(Vector256<uint> bits)
    {
        var normal = (bits + Vector256.Create(Rebase)).AsSingle();
        var small = (bits + Vector256.Create(SmallestNormalHalf)).AsSingle() - Vector256.Create(SmallestNormalHalf).AsSingle();
        return Vector256.ConditionalSelect(Vector256.LessThan(bits, Vector256.Create(0x00800000u)).AsSingle(), small, normal);
    }

    /// <inheritdoc cref="Magnitude(Vector512{uint})"/>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<float> Magnitude(Vector128<uint> bits)
    {
        var normal = (bits + Vector128.Create(Rebase)).AsSingle();
        var small = (bits + Vector128.Create(SmallestNormalHalf)).AsSingle() - Vector128.Create(SmallestNormalHalf).AsSingle();
        return Vector128.ConditionalSelect(Vector128.LessThan(bits, Vector128.Create(0x00800000u)).AsSingle(), small, normal);
    }

    // Without the infinity/NaN fix-up: exponent and mantissa shifted into place (the sign bit falls off the top of
    // the masked shift), rebased, then the sign shifted to bit 31 and or-ed back on.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> FiniteToSingle(Vector512<uint> h) =>
        (Magnitude((h << 13) & Vector512.Create(0x0FFFE000u)).AsUInt32() | ((h << 16) & Vector512.Create(0x80000000u))).AsSingle();

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> FiniteToSingle(Vector256<uint> h) =>
        (Magnitude((h << 13) & Vector256.Create(0x0FFFE000u)).AsUInt32() | ((h << 16) & Vector256.Create(0x80000000u))).AsSingle();

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<float> FiniteToSingle(Vector128<uint> h) =>
        (Magnitude((h << 13) & Vector128.Create(0x0FFFE000u)).AsUInt32() | ((h << 16) & Vector128.Create(0x80000000u))).AsSingle();

    /// <summary>Whether any of the halves is an infinity or NaN (exponent bits all ones).</summary>
    public static unsafe bool AnyNonFinite(ushort* values, long count)
    {
        long i = 0;
        var exponent = Vector256.Create((ushort)HalfExponent);
        for (; i + 16 <= count; i += 16)
        {
            if (Vector256.EqualsAny(Vector256.Load(values + i) & exponent, exponent))
            {
                return true;
            }
        }

        for (; i < count; i++)
        {
            if ((values[i] & HalfExponent) == HalfExponent)
            {
                return true;
            }
        }

        return false;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> ToSingle(Vector512<uint> h)
    {
        var magnitude = Magnitude((h & Vector512.Create(0x7FFFu)) << 13);
        var special = Vector512.Equals(h & Vector512.Create(HalfExponent), Vector512.Create(HalfExponent)) & Vector512.Create(SingleExponent);
        return (magnitude.AsUInt32() | special | ((h & Vector512.Create(0x8000u)) << 16)).AsSingle();
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> ToSingle(Vector256<uint> h)
    {
        var magnitude = Magnitude((h & Vector256.Create(0x7FFFu)) << 13);
        var special = Vector256.Equals(h & Vector256.Create(HalfExponent), Vector256.Create(HalfExponent)) & Vector256.Create(SingleExponent);
        return (magnitude.AsUInt32() | special | ((h & Vector256.Create(0x8000u)) << 16)).AsSingle();
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<float> ToSingle(Vector128<uint> h)
    {
        var magnitude = Magnitude((h & Vector128.Create(0x7FFFu)) << 13);
        var special = Vector128.Equals(h & Vector128.Create(HalfExponent), Vector128.Create(HalfExponent)) & Vector128.Create(SingleExponent);
        return (magnitude.AsUInt32() | special | ((h & Vector128.Create(0x8000u)) << 16)).AsSingle();
    }
}

internal readonly unsafe struct Simd512 : ISimd<Vector512<float>>
{
    public static int Count => Vector512<float>.Count;

    public static Vector512<float> Zero => Vector512<float>.Zero;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Broadcast(float value) => Vector512.Create(value);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Load(float* source) => Vector512.Load(source);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Store(Vector512<float> value, float* destination) => value.Store(destination);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> LoadBf16(ushort* source) =>
        (Vector512.WidenLower(Vector256.Load(source).ToVector512Unsafe()) << 16).AsSingle();

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> LoadF16(ushort* source) =>
        HalfBits.ToSingle(Vector512.WidenLower(Vector256.Load(source).ToVector512Unsafe()));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> LoadF16Finite(ushort* source) =>
        HalfBits.FiniteToSingle(Vector512.WidenLower(Vector256.Load(source).ToVector512Unsafe()));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Add(Vector512<float> a, Vector512<float> b) => a + b;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Subtract(Vector512<float> a, Vector512<float> b) => a - b;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Multiply(Vector512<float> a, Vector512<float> b) => a * b;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> MultiplyAdd(Vector512<float> a, Vector512<float> b, Vector512<float> c) =>
        Vector512.FusedMultiplyAdd(a, b, c);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Sum(Vector512<float> value) => Vector512.Sum(value);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Max(Vector512<float> a, Vector512<float> b) => Vector512.Max(a, b);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> GreaterThanSelect(Vector512<float> a, Vector512<float> b, Vector512<float> ifGreater, Vector512<float> otherwise) =>
        Vector512.ConditionalSelect(Vector512.GreaterThan(a, b), ifGreater, otherwise);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> ExpNonPositive(Vector512<float> x)
    {
        var lowest = Vector512.Create(ExpConstants.Lowest);
        var clamped = Vector512.MaxNative(x, lowest);
        var n = Vector512.Round(clamped * Vector512.Create(ExpConstants.Log2E));
        var r = Vector512.FusedMultiplyAdd(n, Vector512.Create(-ExpConstants.Ln2High), clamped);
        r = Vector512.FusedMultiplyAdd(n, Vector512.Create(-ExpConstants.Ln2Low), r);
        var p = Vector512.FusedMultiplyAdd(Vector512.Create(ExpConstants.P0), r, Vector512.Create(ExpConstants.P1));
        p = Vector512.FusedMultiplyAdd(p, r, Vector512.Create(ExpConstants.P2));
        p = Vector512.FusedMultiplyAdd(p, r, Vector512.Create(ExpConstants.P3));
        p = Vector512.FusedMultiplyAdd(p, r, Vector512.Create(ExpConstants.P4));
        p = Vector512.FusedMultiplyAdd(p, r, Vector512.Create(ExpConstants.P5));
        var y = Vector512.FusedMultiplyAdd(p, r * r, r) + Vector512.Create(1f);
        var scale = ((Vector512.ConvertToInt32(n) + Vector512.Create(127)) << 23).AsSingle();
        var result = Vector512.ConditionalSelect(Vector512.LessThan(x, lowest), Vector512<float>.Zero, y * scale);
        return Vector512.ConditionalSelect(Vector512.Equals(x, x), result, x); // NaN stays NaN
    }
}

internal readonly unsafe struct Simd256 : ISimd<Vector256<float>>
{
    public static int Count => Vector256<float>.Count;

    public static Vector256<float> Zero => Vector256<float>.Zero;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Broadcast(float value) => Vector256.Create(value);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Load(float* source) => Vector256.Load(source);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Store(Vector256<float> value, float* destination) => value.Store(destination);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> LoadBf16(ushort* source) =>
        (Vector256.WidenLower(Vector128.Load(source).ToVector256Unsafe()) << 16).AsSingle();

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> LoadF16(ushort* source) =>
        HalfBits.ToSingle(Vector256.WidenLower(Vector128.Load(source).ToVector256Unsafe()));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> LoadF16Finite(ushort* source) =>
        HalfBits.FiniteToSingle(Vector256.WidenLower(Vector128.Load(source).ToVector256Unsafe()));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Add(Vector256<float> a, Vector256<float> b) => a + b;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Subtract(Vector256<float> a, Vector256<float> b) => a - b;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Multiply(Vector256<float> a, Vector256<float> b) => a * b;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> MultiplyAdd(Vector256<float> a, Vector256<float> b, Vector256<float> c) =>
        Vector256.FusedMultiplyAdd(a, b, c);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Sum(Vector256<float> value) => Vector256.Sum(value);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Max(Vector256<float> a, Vector256<float> b) => Vector256.Max(a, b);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> GreaterThanSelect(Vector256<float> a, Vector256<float> b, Vector256<float> ifGreater, Vector256<float> otherwise) =>
        Vector256.ConditionalSelect(Vector256.GreaterThan(a, b), ifGreater, otherwise);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> ExpNonPositive(Vector256<float> x)
    {
        var lowest = Vector256.Create(ExpConstants.Lowest);
        var clamped = Vector256.MaxNative(x, lowest);
        var n = Vector256.Round(clamped * Vector256.Create(ExpConstants.Log2E));
        var r = Vector256.FusedMultiplyAdd(n, Vector256.Create(-ExpConstants.Ln2High), clamped);
        r = Vector256.FusedMultiplyAdd(n, Vector256.Create(-ExpConstants.Ln2Low), r);
        var p = Vector256.FusedMultiplyAdd(Vector256.Create(ExpConstants.P0), r, Vector256.Create(ExpConstants.P1));
        p = Vector256.FusedMultiplyAdd(p, r, Vector256.Create(ExpConstants.P2));
        p = Vector256.FusedMultiplyAdd(p, r, Vector256.Create(ExpConstants.P3));
        p = Vector256.FusedMultiplyAdd(p, r, Vector256.Create(ExpConstants.P4));
        p = Vector256.FusedMultiplyAdd(p, r, Vector256.Create(ExpConstants.P5));
        var y = Vector256.FusedMultiplyAdd(p, r * r, r) + Vector256.Create(1f);
        var scale = ((Vector256.ConvertToInt32(n) + Vector256.Create(127)) << 23).AsSingle();
        var result = Vector256.ConditionalSelect(Vector256.LessThan(x, lowest), Vector256<float>.Zero, y * scale);
        return Vector256.ConditionalSelect(Vector256.Equals(x, x), result, x); // NaN stays NaN
    }
}

internal readonly unsafe struct Simd128 : ISimd<Vector128<float>>
{
    public static int Count => Vector128<float>.Count;

    public static Vector128<float> Zero => Vector128<float>.Zero;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<float> Broadcast(float value) => Vector128.Create(value);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<float> Load(float* source) => Vector128.Load(source);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Store(Vector128<float> value, float* destination) => value.Store(destination);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<float> LoadBf16(ushort* source) =>
        (Vector128.WidenLower(Vector64.Load(source).ToVector128Unsafe()) << 16).AsSingle();

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<float> LoadF16(ushort* source) =>
        HalfBits.ToSingle(Vector128.WidenLower(Vector64.Load(source).ToVector128Unsafe()));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<float> LoadF16Finite(ushort* source) =>
        HalfBits.FiniteToSingle(Vector128.WidenLower(Vector64.Load(source).ToVector128Unsafe()));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<float> Add(Vector128<float> a, Vector128<float> b) => a + b;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<float> Subtract(Vector128<float> a, Vector128<float> b) => a - b;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<float> Multiply(Vector128<float> a, Vector128<float> b) => a * b;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<float> MultiplyAdd(Vector128<float> a, Vector128<float> b, Vector128<float> c) =>
        Vector128.FusedMultiplyAdd(a, b, c);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Sum(Vector128<float> value) => Vector128.Sum(value);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<float> Max(Vector128<float> a, Vector128<float> b) => Vector128.Max(a, b);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<float> GreaterThanSelect(Vector128<float> a, Vector128<float> b, Vector128<float> ifGreater, Vector128<float> otherwise) =>
        Vector128.ConditionalSelect(Vector128.GreaterThan(a, b), ifGreater, otherwise);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<float> ExpNonPositive(Vector128<float> x)
    {
        var lowest = Vector128.Create(ExpConstants.Lowest);
        var clamped = Vector128.MaxNative(x, lowest);
        var n = Vector128.Round(clamped * Vector128.Create(ExpConstants.Log2E));
        var r = Vector128.FusedMultiplyAdd(n, Vector128.Create(-ExpConstants.Ln2High), clamped);
        r = Vector128.FusedMultiplyAdd(n, Vector128.Create(-ExpConstants.Ln2Low), r);
        var p = Vector128.FusedMultiplyAdd(Vector128.Create(ExpConstants.P0), r, Vector128.Create(ExpConstants.P1));
        p = Vector128.FusedMultiplyAdd(p, r, Vector128.Create(ExpConstants.P2));
        p = Vector128.FusedMultiplyAdd(p, r, Vector128.Create(ExpConstants.P3));
        p = Vector128.FusedMultiplyAdd(p, r, Vector128.Create(ExpConstants.P4));
        p = Vector128.FusedMultiplyAdd(p, r, Vector128.Create(ExpConstants.P5));
        var y = Vector128.FusedMultiplyAdd(p, r * r, r) + Vector128.Create(1f);
        var scale = ((Vector128.ConvertToInt32(n) + Vector128.Create(127)) << 23).AsSingle();
        var result = Vector128.ConditionalSelect(Vector128.LessThan(x, lowest), Vector128<float>.Zero, y * scale);
        return Vector128.ConditionalSelect(Vector128.Equals(x, x), result, x); // NaN stays NaN
    }
}

/// <summary>One lane: the portable fallback, and the tail loop of every kernel.</summary>
internal readonly unsafe struct SimdScalar : ISimd<float>
{
    public static int Count => 1;

    public static float Zero => 0f;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Broadcast(float value) => value;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Load(float* source) => *source;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Store(float value, float* destination) => *destination = value;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float LoadBf16(ushort* source) => CpuSimd.Bf16ToSingle(*source);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float LoadF16(ushort* source) => CpuSimd.F16ToSingle(*source);

    public static float LoadF16Finite(ushort* source) => CpuSimd.F16ToSingle(*source);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Add(float a, float b) => a + b;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Subtract(float a, float b) => a - b;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Multiply(float a, float b) => a * b;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float MultiplyAdd(float a, float b, float c) => MathF.FusedMultiplyAdd(a, b, c);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Sum(float value) => value;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Max(float a, float b) => MathF.Max(a, b);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float GreaterThanSelect(float a, float b, float ifGreater, float otherwise) => a > b ? ifGreater : otherwise;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float ExpNonPositive(float x) => MathF.Exp(x);
}

/// <summary>How a kernel reads a weight element type; a generic struct argument so the branch folds away.</summary>
internal unsafe interface IWeightFormat
{
    static abstract DType DType { get; }

    static abstract TV Load<TS, TV>(byte* row, int index)
        where TS : ISimd<TV>
        where TV : struct;
}

internal readonly unsafe struct F32Weights : IWeightFormat
{
    public static DType DType => DType.F32;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static TV Load<TS, TV>(byte* row, int index)
        where TS : ISimd<TV>
        where TV : struct => TS.Load((float*)row + index);
}

internal readonly unsafe struct Bf16Weights : IWeightFormat
{
    public static DType DType => DType.BF16;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static TV Load<TS, TV>(byte* row, int index)
        where TS : ISimd<TV>
        where TV : struct => TS.LoadBf16((ushort*)row + index);
}

internal readonly unsafe struct F16Weights : IWeightFormat
{
    public static DType DType => DType.F16;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static TV Load<TS, TV>(byte* row, int index)
        where TS : ISimd<TV>
        where TV : struct => TS.LoadF16((ushort*)row + index);
}

/// <summary>F16 weights checked once to hold no infinity or NaN (every real checkpoint): the shorter conversion.</summary>
internal readonly unsafe struct FiniteF16Weights : IWeightFormat
{
    public static DType DType => DType.F16;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static TV Load<TS, TV>(byte* row, int index)
        where TS : ISimd<TV>
        where TV : struct => TS.LoadF16Finite((ushort*)row + index);
}
