namespace Enclave.Engine.Formats.Quantization;

/// <summary>
/// OCP FP8 E4M3 ("float8_e4m3fn", as torch and DeepSeek store it): 1 sign, 4 exponent bits (bias 7), 3 mantissa
/// bits; exponent 0 is subnormal, 0x7F/0xFF are NaN, there are no infinities. Decoding is exact in float32.
/// </summary>
public static class Fp8E4M3
{
    /// <summary>All 256 codes decoded once; kernels look values up instead of re-deriving them per element.</summary>
    public static ReadOnlySpan<float> Table => table;

    private static readonly float[] table = Build();

    public static float ToSingle(byte code) => table[code];

    /// <summary>The readable definition the table is built from (and tested against).</summary>
    public static float Decode(byte code)
    {
        var sign = (code & 0x80) != 0 ? -1f : 1f;
        var exponent = (code >> 3) & 0xF;
        var mantissa = code & 0x7;
        if (exponent == 0xF && mantissa == 0x7)
        {
            return float.NaN;
        }

        return exponent == 0
            ? sign * mantissa / 8f * MathF.Pow(2, -6)
            : sign * (1f + (mantissa / 8f)) * MathF.Pow(2, exponent - 7);
    }

    private static float[] Build()
    {
        var values = new float[256];
        for (var i = 0; i < values.Length; i++)
        {
            values[i] = Decode((byte)i);
        }

        return values;
    }
}
