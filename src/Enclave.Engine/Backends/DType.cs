namespace Enclave.Engine.Backends;

/// <summary>Element types the engine stores. Activations are F32; weights keep their checkpoint type.</summary>
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
}

public static class DTypeExtensions
{
    public static int SizeInBytes(this DType dtype) => dtype switch
    {
        DType.F32 or DType.I32 => 4,
        DType.F16 or DType.BF16 => 2,
        DType.U8 or DType.F8E4M3 => 1,
        _ => throw new ArgumentOutOfRangeException(nameof(dtype), dtype, "unknown dtype"),
    };
}
