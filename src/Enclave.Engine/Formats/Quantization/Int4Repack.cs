using Enclave.Engine.Backends;

namespace Enclave.Engine.Formats.Quantization;

/// <summary>
/// Rearranges AWQ and GPTQ 4-bit tensors into the engine's row-major int4 layout, once at load time: per output row,
/// the input dimension's nibbles two per byte (low nibble = even input index), then one scale and one zero point per
/// group. Same bits, same size (4 bits a weight plus 5 bytes a group); no dequantized copy is ever made — kernels
/// rebuild w = (q - zero) · scale on the fly, exactly as the publishers' kernels do.
/// </summary>
public static class Int4Repack
{
    // AWQ packs the eight columns of a 32-bit word in this order: nibble n holds column AwqOrder[n].
    private static readonly int[] AwqOrder = [0, 2, 4, 6, 1, 3, 5, 7];

    public sealed record Result(byte[] Data, float[] Scales, byte[] Zeros, int Groups);

    /// <summary>
    /// AutoAWQ GEMM: qweight I32 [in, out/8], qzeros I32 [in/group, out/8], scales F16 [in/group, out].
    /// </summary>
    public static Result FromAwq(CheckpointTensor qweight, CheckpointTensor qzeros, CheckpointTensor scales, int inFeatures, int outFeatures, int group)
    {
        var groups = CheckGroups(qweight, inFeatures, group);
        Expect(qweight, DType.I32, inFeatures, outFeatures / 8);
        Expect(qzeros, DType.I32, groups, outFeatures / 8);
        Expect(scales, DType.F16, groups, outFeatures);
        var nibbleOf = new int[8];
        for (var n = 0; n < 8; n++)
        {
            nibbleOf[AwqOrder[n]] = n;
        }

        var words = Words(qweight);
        var zeroWords = Words(qzeros);
        var scaleValues = Halves(scales);
        var data = new byte[(long)outFeatures * inFeatures / 2];
        var zeros = new byte[outFeatures * groups];
        var rowScales = new float[outFeatures * groups];
        for (var i = 0; i < inFeatures; i++)
        {
            for (var o = 0; o < outFeatures; o++)
            {
                var q = (words[(i * (outFeatures / 8)) + (o / 8)] >> (4 * nibbleOf[o % 8])) & 0xF;
                SetNibble(data, ((long)o * inFeatures) + i, q);
            }
        }

        for (var g = 0; g < groups; g++)
        {
            for (var o = 0; o < outFeatures; o++)
            {
                zeros[(o * groups) + g] = (byte)((zeroWords[(g * (outFeatures / 8)) + (o / 8)] >> (4 * nibbleOf[o % 8])) & 0xF);
                rowScales[(o * groups) + g] = scaleValues[(g * outFeatures) + o];
            }
        }

        return new Result(data, rowScales, zeros, groups);
    }

    /// <summary>
    /// GPTQ with desc_act=false: qweight I32 [in/8, out] (nibble i%8 of word i/8), qzeros I32 [in/group, out/8]
    /// (nibble o%8), scales F16 [in/group, out], g_idx I32 [in] which must be i / group.
    /// </summary>
    public static Result FromGptq(CheckpointTensor qweight, CheckpointTensor qzeros, CheckpointTensor scales, CheckpointTensor? gIdx, int inFeatures, int outFeatures, int group, int zeroOffset)
    {
        var groups = CheckGroups(qweight, inFeatures, group);
        if (inFeatures % 8 != 0)
        {
            throw new CheckpointFormatException($"{qweight.File}: '{qweight.Name}' packs 8 inputs a word, but in_features {inFeatures} is not a multiple of 8");
        }

        Expect(qweight, DType.I32, inFeatures / 8, outFeatures);
        Expect(qzeros, DType.I32, groups, (outFeatures + 7) / 8);
        Expect(scales, DType.F16, groups, outFeatures);
        if (gIdx is not null)
        {
            Expect(gIdx, DType.I32, inFeatures);
            var g = Words(gIdx);
            for (var i = 0; i < inFeatures; i++)
            {
                if (g[i] != i / group)
                {
                    throw new CheckpointFormatException(
                        $"{gIdx.File}: '{gIdx.Name}'[{i}] is {g[i]}, not {i / group}: this is an act-order (desc_act) checkpoint, which is not supported");
                }
            }
        }

        var words = Words(qweight);
        var zeroWords = Words(qzeros);
        var scaleValues = Halves(scales);
        var zeroColumns = (outFeatures + 7) / 8;
        var data = new byte[(long)outFeatures * inFeatures / 2];
        var zeros = new byte[outFeatures * groups];
        var rowScales = new float[outFeatures * groups];
        for (var i = 0; i < inFeatures; i++)
        {
            for (var o = 0; o < outFeatures; o++)
            {
                var q = (words[((i / 8) * outFeatures) + o] >> (4 * (i % 8))) & 0xF;
                SetNibble(data, ((long)o * inFeatures) + i, q);
            }
        }

        for (var g = 0; g < groups; g++)
        {
            for (var o = 0; o < outFeatures; o++)
            {
                var z = ((zeroWords[(g * zeroColumns) + (o / 8)] >> (4 * (o % 8))) & 0xF) + zeroOffset;
                zeros[(o * groups) + g] = (byte)z;
                rowScales[(o * groups) + g] = scaleValues[(g * outFeatures) + o];
            }
        }

        return new Result(data, rowScales, zeros, groups);
    }

    /// <summary>The readable definition kernels must match: w[o, i] = (q[o, i] - zero[o, g]) · scale[o, g].</summary>
    public static float Dequantize(Result r, int inFeatures, int group, int o, int i)
    {
        var packed = r.Data[(((long)o * inFeatures) + i) / 2];
        var q = (i & 1) == 0 ? packed & 0xF : packed >> 4;
        var g = (o * r.Groups) + (i / group);
        return (q - r.Zeros[g]) * r.Scales[g];
    }

    private static int CheckGroups(CheckpointTensor qweight, int inFeatures, int group)
    {
        if (inFeatures % group != 0)
        {
            throw new CheckpointFormatException(
                $"{qweight.File}: '{qweight.Name}' has in_features {inFeatures}, not a multiple of group_size {group}");
        }

        return inFeatures / group;
    }

    private static void Expect(CheckpointTensor t, DType dtype, params int[] shape)
    {
        if (t.DType != dtype || !t.Shape.SequenceEqual(shape))
        {
            throw new CheckpointFormatException(
                $"{t.File}: '{t.Name}' is {t.DType}[{string.Join(", ", t.Shape)}], expected {dtype}[{string.Join(", ", shape)}] for this quantization_config");
        }
    }

    private static void SetNibble(byte[] data, long index, int value)
    {
        ref var b = ref data[index / 2];
        b = (index & 1) == 0 ? (byte)((b & 0xF0) | value) : (byte)((b & 0x0F) | (value << 4));
    }

    private static ReadOnlySpan<int> Words(CheckpointTensor t) => System.Runtime.InteropServices.MemoryMarshal.Cast<byte, int>(t.Bytes);

    private static float[] Halves(CheckpointTensor t)
    {
        var halves = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, Half>(t.Bytes);
        var values = new float[halves.Length];
        for (var i = 0; i < halves.Length; i++)
        {
            values[i] = (float)halves[i];
        }

        return values;
    }
}
