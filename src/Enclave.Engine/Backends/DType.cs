namespace Enclave.Engine.Backends;

/// <summary>Element types the engine stores. Activations are F32; weights keep their checkpoint type.</summary>
public enum DType
{
    F32,
    F16,
    BF16,
    I32,
}

public static class DTypeExtensions
{
    public static int SizeInBytes(this DType dtype) => dtype switch
    {
        DType.F32 or DType.I32 => 4,
        DType.F16 or DType.BF16 => 2,
        _ => throw new ArgumentOutOfRangeException(nameof(dtype), dtype, "unknown dtype"),
    };
}
