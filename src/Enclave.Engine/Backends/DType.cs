namespace Enclave.Engine.Backends;

/// <summary>
/// Element types the engine stores. Activations are F32; weights keep their checkpoint type. The Q* types are
/// ggml's block-quantised formats, kept in their blocks along the last (contiguous) dimension: a row of n values
/// is n / BlockElements blocks of BlockBytes bytes.
/// </summary>
public enum DType
{
    F32,
    F16,
    BF16,
    I32,

    /// <summary>Raw bytes: packed 4-bit weights (two per byte) and their per-group zero points.</summary>
    U8,

    /// <summary>OCP FP8 E4M3 ("float8_e4m3fn"): 1 sign, 4 exponent (bias 7), 3 mantissa bits, no infinities.</summary>
    F8E4M3,

    /// <summary>GGUF block-quantised types (ggml's layouts); sizes are per block, see RowBytes.</summary>
    Q8_0,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q4_K,
    Q5_K,
    Q6_K,
}

public static class DTypeExtensions
{
    /// <summary>Bytes per element of an unquantised type; a block type has no per-element size.</summary>
    public static int SizeInBytes(this DType dtype) => dtype switch
    {
        DType.F32 or DType.I32 => 4,
        DType.F16 or DType.BF16 => 2,
        DType.U8 or DType.F8E4M3 => 1,
        _ when dtype.IsQuantized() => throw new ArgumentOutOfRangeException(nameof(dtype), dtype, "a block-quantised type has no per-element size; use RowBytes"),
        _ => throw new ArgumentOutOfRangeException(nameof(dtype), dtype, "unknown dtype"),
    };

    public static bool IsQuantized(this DType dtype) => dtype is DType.Q8_0 or DType.Q4_0 or DType.Q4_1 or DType.Q5_0 or DType.Q5_1 or DType.Q4_K or DType.Q5_K or DType.Q6_K;

    /// <summary>Values per block (1 for unquantised types).</summary>
    public static int BlockElements(this DType dtype) => dtype switch
    {
        DType.Q8_0 or DType.Q4_0 or DType.Q4_1 or DType.Q5_0 or DType.Q5_1 => 32,
        DType.Q4_K or DType.Q5_K or DType.Q6_K => 256,
        _ => 1,
    };

    /// <summary>Bytes per block (the element size for unquantised types).</summary>
    public static int BlockBytes(this DType dtype) => dtype switch
    {
        DType.Q8_0 => 34,
        DType.Q4_0 => 18,
        DType.Q4_1 => 20,
        DType.Q5_0 => 22,
        DType.Q5_1 => 24,
        DType.Q4_K => 144,
        DType.Q5_K => 176,
        DType.Q6_K => 210,
        _ => dtype.SizeInBytes(),
    };

    /// <summary>Bytes of <paramref name="elements"/> values; for a block type the count must be whole blocks.</summary>
    public static long StorageBytes(this DType dtype, long elements)
    {
        var block = dtype.BlockElements();
        if (elements % block != 0)
        {
            throw new ArgumentException($"{elements} values are not a whole number of {dtype} blocks of {block}");
        }

        return elements / block * dtype.BlockBytes();
    }

    /// <summary>Bytes of one row of <paramref name="columns"/> values.</summary>
    public static long RowBytes(this DType dtype, int columns) => dtype.StorageBytes(columns);
}
