namespace Enclave.Engine.Backends;

/// <summary>How a <see cref="QuantizedWeight"/> encodes its values.</summary>
public enum WeightEncoding
{
    /// <summary>
    /// FP8 e4m3 values [out, in] with one F32 scale per [BlockRows, BlockColumns] block (DeepSeek's
    /// <c>weight_scale_inv</c>, which despite its name multiplies): w = fp8 · scale. Edge blocks may be partial.
    /// </summary>
    Fp8Block,

    /// <summary>
    /// 4-bit values [out, in/2] (low nibble = even input), per-(row, group) F32 scale and U8 zero point:
    /// w = (q − zero) · scale, groups of BlockColumns along the input.
    /// </summary>
    Int4Group,
}

/// <summary>
/// A linear layer's weight [out, in] kept in its quantized form on the backend; kernels dequantize tiles on the fly
/// and never hold a full-precision copy. Owned by the layer that loaded it; all three tensors live wherever the
/// backend keeps weights (host memory, possibly memory-mapped, for the CPU).
/// </summary>
public sealed class QuantizedWeight(WeightEncoding encoding, int outFeatures, int inFeatures, int blockRows, int blockColumns,
    DeviceTensor data, DeviceTensor scales, DeviceTensor? zeros) : IDisposable
{
    public WeightEncoding Encoding { get; } = encoding;

    public int OutFeatures { get; } = outFeatures;

    public int InFeatures { get; } = inFeatures;

    /// <summary>Rows sharing one scale (1 for the int4 encodings).</summary>
    public int BlockRows { get; } = blockRows;

    /// <summary>Input columns sharing one scale (the group size for int4).</summary>
    public int BlockColumns { get; } = blockColumns;

    /// <summary>F8E4M3 [out, in] or U8 [out, in/2].</summary>
    public DeviceTensor Data { get; } = data;

    /// <summary>F32 [ceil(out / BlockRows), ceil(in / BlockColumns)].</summary>
    public DeviceTensor Scales { get; } = scales;

    /// <summary>U8 [out, in / BlockColumns] for Int4Group; null for Fp8Block.</summary>
    public DeviceTensor? Zeros { get; } = zeros;

    /// <summary>Bytes held on the backend, for memory reports.</summary>
    public long ByteCount => Data.ByteCount + Scales.ByteCount + (Zeros?.ByteCount ?? 0);

    public override string ToString() => $"{Encoding}[{OutFeatures}, {InFeatures}] block [{BlockRows}, {BlockColumns}]";

    public void Dispose()
    {
        Data.Dispose();
        Scales.Dispose();
        Zeros?.Dispose();
    }
}
