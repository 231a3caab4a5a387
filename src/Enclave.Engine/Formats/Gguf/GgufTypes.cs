using Enclave.Engine.Backends;

namespace Enclave.Engine.Formats.Gguf;

/// <summary>Metadata value types of the GGUF key-value section (the numbers are the file's).</summary>
public enum GgufValueType : uint
{
    UInt8 = 0,
    Int8 = 1,
    UInt16 = 2,
    Int16 = 3,
    UInt32 = 4,
    Int32 = 5,
    Float32 = 6,
    Bool = 7,
    String = 8,
    Array = 9,
    UInt64 = 10,
    Int64 = 11,
    Float64 = 12,
}

/// <summary>ggml tensor type ids as stored in GGUF tensor infos; only the ones the engine reads are named.</summary>
public enum GgmlType : uint
{
    F32 = 0,
    F16 = 1,
    Q4_0 = 2,
    Q4_1 = 3,
    Q5_0 = 6,
    Q5_1 = 7,
    Q8_0 = 8,
    Q4_K = 12,
    Q5_K = 13,
    Q6_K = 14,
    BF16 = 30,
}

/// <summary>A metadata array: its element type and the values (a typed .NET array: string[], int[], float[] ...).</summary>
public sealed record GgufArray(GgufValueType ElementType, Array Items)
{
    public int Count => Items.Length;
}

/// <summary>One metadata entry: the value is a boxed scalar of the matching .NET type, a string, or a <see cref="GgufArray"/>.</summary>
public sealed record GgufMetadata(string Key, GgufValueType Type, object Value);

public static class GgmlTypes
{
    public static DType ToDType(GgmlType type) => type switch
    {
        GgmlType.F32 => DType.F32,
        GgmlType.F16 => DType.F16,
        GgmlType.BF16 => DType.BF16,
        GgmlType.Q8_0 => DType.Q8_0,
        GgmlType.Q4_0 => DType.Q4_0,
        GgmlType.Q4_1 => DType.Q4_1,
        GgmlType.Q5_0 => DType.Q5_0,
        GgmlType.Q5_1 => DType.Q5_1,
        GgmlType.Q4_K => DType.Q4_K,
        GgmlType.Q5_K => DType.Q5_K,
        GgmlType.Q6_K => DType.Q6_K,
        _ => throw new ArgumentOutOfRangeException(nameof(type), type, "unsupported ggml type"),
    };

    public static GgmlType FromDType(DType dtype) => dtype switch
    {
        DType.F32 => GgmlType.F32,
        DType.F16 => GgmlType.F16,
        DType.BF16 => GgmlType.BF16,
        DType.Q8_0 => GgmlType.Q8_0,
        DType.Q4_0 => GgmlType.Q4_0,
        DType.Q4_1 => GgmlType.Q4_1,
        DType.Q5_0 => GgmlType.Q5_0,
        DType.Q5_1 => GgmlType.Q5_1,
        DType.Q4_K => GgmlType.Q4_K,
        DType.Q5_K => GgmlType.Q5_K,
        DType.Q6_K => GgmlType.Q6_K,
        _ => throw new ArgumentOutOfRangeException(nameof(dtype), dtype, "no ggml type for this dtype"),
    };

    public static bool IsSupported(uint id) => Enum.IsDefined(typeof(GgmlType), id);

    /// <summary>Names ggml gives the types, for error messages about files using types the engine does not read.</summary>
    public static string Name(uint id) => id switch
    {
        0 => "F32", 1 => "F16", 2 => "Q4_0", 3 => "Q4_1", 6 => "Q5_0", 7 => "Q5_1", 8 => "Q8_0", 9 => "Q8_1",
        10 => "Q2_K", 11 => "Q3_K", 12 => "Q4_K", 13 => "Q5_K", 14 => "Q6_K", 15 => "Q8_K", 16 => "IQ2_XXS",
        17 => "IQ2_XS", 18 => "IQ3_XXS", 19 => "IQ1_S", 20 => "IQ4_NL", 21 => "IQ3_S", 22 => "IQ2_S", 23 => "IQ4_XS",
        24 => "I8", 25 => "I16", 26 => "I32", 27 => "I64", 28 => "F64", 29 => "IQ1_M", 30 => "BF16",
        34 => "TQ1_0", 35 => "TQ2_0", 39 => "MXFP4",
        _ => $"type {id}",
    };
}
