using System.Buffers.Binary;
using Enclave.Engine.Backends;
using Enclave.Engine.Backends.Cpu;
using Enclave.Engine.Formats;
using Enclave.Engine.Formats.Gguf;
using Xunit;

namespace Enclave.Engine.Tests.Formats;

/// <summary>
/// ggml block formats against values worked out by hand from the format description, quantise/dequantise round
/// trips, the GGUF reader and writer, their error messages, and the integer-dot kernels against a float64 product
/// of the dequantised weights.
/// </summary>
public sealed class GgufFormatTests : IDisposable
{
    private readonly GgufModelTests.TempFolder temp = new();

    public void Dispose() => temp.Dispose();

    private static float[] Dequantize(DType type, byte[] block)
    {
        var values = new float[type.BlockElements()];
        GgmlQuants.Dequantize(type, block, values);
        return values;
    }

    private static void WriteHalf(byte[] b, int offset, float value) => BinaryPrimitives.WriteHalfLittleEndian(b.AsSpan(offset), (Half)value);

    [Fact]
    public void Q8_0_is_scale_times_signed_byte()
    {
        var block = new byte[34];
        WriteHalf(block, 0, 0.5f);
        for (var i = 0; i < 32; i++)
        {
            block[2 + i] = (byte)(sbyte)(i * 9 - 128 + (i == 31 ? 7 : 0));
        }

        var y = Dequantize(DType.Q8_0, block);
        for (var i = 0; i < 32; i++)
        {
            Assert.Equal(0.5f * (sbyte)block[2 + i], y[i]);
        }

        Assert.Equal(-64f, y[0]);
    }

    [Fact]
    public void Q4_0_puts_low_nibbles_first_and_offsets_by_eight()
    {
        var block = new byte[18];
        WriteHalf(block, 0, 2f);
        for (var j = 0; j < 16; j++)
        {
            block[2 + j] = (byte)(j | ((15 - j) << 4));
        }

        var y = Dequantize(DType.Q4_0, block);
        for (var j = 0; j < 16; j++)
        {
            Assert.Equal((j - 8) * 2f, y[j]);
            Assert.Equal((15 - j - 8) * 2f, y[j + 16]);
        }
    }

    [Fact]
    public void Q4_1_adds_the_block_minimum_to_unsigned_nibbles()
    {
        var block = new byte[20];
        WriteHalf(block, 0, 0.5f);
        WriteHalf(block, 2, -3f);
        for (var j = 0; j < 16; j++)
        {
            block[4 + j] = (byte)(j | ((15 - j) << 4));
        }

        var y = Dequantize(DType.Q4_1, block);
        for (var j = 0; j < 16; j++)
        {
            Assert.Equal((j * 0.5f) - 3f, y[j]);
            Assert.Equal(((15 - j) * 0.5f) - 3f, y[j + 16]);
        }
    }

    /// <summary>The level of value v (0..31) of a Q5_0/Q5_1 block as the format describes it: nibble v of qs (low nibbles first) plus 16 times bit v of the little-endian u32 qh.</summary>
    private static int Q5Level(byte[] block, int qhOffset, int v)
    {
        var qs = block[qhOffset + 4 + (v % 16)];
        var nibble = v < 16 ? qs & 0xF : qs >> 4;
        var qh = BinaryPrimitives.ReadUInt32LittleEndian(block.AsSpan(qhOffset));
        return nibble + (int)(16 * ((qh >> v) & 1));
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Q5_0_and_Q5_1_take_the_fifth_bit_of_value_j_from_bit_j_of_qh(bool hasMin)
    {
        var type = hasMin ? DType.Q5_1 : DType.Q5_0;
        var block = new byte[type.BlockBytes()];
        WriteHalf(block, 0, hasMin ? 0.25f : 2f);
        if (hasMin)
        {
            WriteHalf(block, 2, 1.5f);
        }

        var qhOffset = hasMin ? 4 : 2;
        BinaryPrimitives.WriteUInt32LittleEndian(block.AsSpan(qhOffset), 0xA5C30F96);
        for (var i = 0; i < 16; i++)
        {
            block[qhOffset + 4 + i] = (byte)((i * 37) + 11);
        }

        var y = Dequantize(type, block);
        for (var v = 0; v < 32; v++)
        {
            var level = Q5Level(block, qhOffset, v);
            Assert.Equal(hasMin ? (level * 0.25f) + 1.5f : (level - 16) * 2f, y[v]);
        }

        // Value 1 (bit 1 of 0x96 set, low nibble of 11 + 37 = 48 is 0) and value 16 (bit 16, of 0xC3, set; high nibble of 11 is 0).
        Assert.Equal(16, Q5Level(block, qhOffset, 1));
        Assert.Equal(16, Q5Level(block, qhOffset, 16));
        Assert.Equal(hasMin ? (16 * 0.25f) + 1.5f : 0f, y[16]);
    }

    [Fact]
    public void Q4_1_and_Q5_1_quantisers_map_the_block_minimum_to_level_zero_and_the_maximum_to_the_top()
    {
        // Values -1.6 .. 1.5 in steps of 0.1: min -1.6 is the offset, (max - min) / 15 or / 31 the step.
        var x = Enumerable.Range(0, 32).Select(i => (i - 16) * 0.1f).ToArray();
        foreach (var (type, top) in new[] { (DType.Q4_1, 15), (DType.Q5_1, 31) })
        {
            var block = new byte[type.BlockBytes()];
            GgmlQuants.Quantize(type, x, block);
            Assert.Equal((float)(Half)((x[31] - x[0]) / top), (float)BinaryPrimitives.ReadHalfLittleEndian(block));
            Assert.Equal((float)(Half)x[0], (float)BinaryPrimitives.ReadHalfLittleEndian(block.AsSpan(2)));
            var y = Dequantize(type, block);
            Assert.Equal((float)(Half)x[0], y[0]);
            var d = (float)BinaryPrimitives.ReadHalfLittleEndian(block);
            Assert.Equal((top * d) + (float)(Half)x[0], y[31]);
            for (var i = 0; i < 32; i++)
            {
                Assert.True(Math.Abs(y[i] - x[i]) <= (0.5f * d) + 5e-3f, $"{type}: value {i} {y[i]} vs {x[i]}");
            }
        }
    }

    [Fact]
    public void Q5_0_quantiser_maps_the_largest_magnitude_to_minus_sixteen_keeping_its_sign()
    {
        // The largest magnitude is -1.6, so d = -1.6 / -16 = 0.1 and the levels are x / 0.1 + 16.
        var x = Enumerable.Range(0, 32).Select(i => (i - 16) * 0.1f).ToArray();
        var block = new byte[22];
        GgmlQuants.Quantize(DType.Q5_0, x, block);
        Assert.Equal((float)(Half)(x[0] / -16f), (float)BinaryPrimitives.ReadHalfLittleEndian(block));
        Assert.Equal(0, Q5Level(block, 2, 0));
        Assert.Equal(16, Q5Level(block, 2, 16));
        Assert.Equal(31, Q5Level(block, 2, 31));
        for (var v = 0; v < 32; v++)
        {
            Assert.Equal(v, Q5Level(block, 2, v));
        }

        // Largest magnitude positive (3.2): d = -0.2, so 3.2 maps to level 0 and zero still to 16.
        var flipped = x.Select(v => -v).ToArray();
        flipped[5] = 3.2f;
        GgmlQuants.Quantize(DType.Q5_0, flipped, block);
        Assert.Equal((float)(Half)(3.2f / -16f), (float)BinaryPrimitives.ReadHalfLittleEndian(block));
        Assert.Equal(0, Q5Level(block, 2, 5));
        Assert.Equal(16, Q5Level(block, 2, 16));
    }

    /// <summary>Packs eight 6-bit scales and mins the way the format describes: the first four in the low six bits of bytes 0-3 / 4-7, the last four split into low nibbles (bytes 8-11) and top two bits (bits 6-7 of bytes 0-7).</summary>
    private static byte[] PackK4Scales(int[] sc, int[] m)
    {
        var q = new byte[12];
        for (var j = 0; j < 4; j++)
        {
            q[j] = (byte)(sc[j] | ((sc[j + 4] >> 4) << 6));
            q[j + 4] = (byte)(m[j] | ((m[j + 4] >> 4) << 6));
            q[j + 8] = (byte)((sc[j + 4] & 0xF) | ((m[j + 4] & 0xF) << 4));
        }

        return q;
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Q4_K_and_Q5_K_apply_six_bit_scales_and_minimums_per_32_values(bool fiveBit)
    {
        int[] sc = [1, 2, 3, 4, 17, 33, 50, 63];
        int[] m = [0, 5, 10, 15, 20, 40, 60, 63];
        var type = fiveBit ? DType.Q5_K : DType.Q4_K;
        var block = new byte[type.BlockBytes()];
        WriteHalf(block, 0, 0.25f);
        WriteHalf(block, 2, 0.5f);
        PackK4Scales(sc, m).CopyTo(block, 4);
        var qsOffset = fiveBit ? 48 : 16;
        for (var i = 0; i < 128; i++)
        {
            block[qsOffset + i] = (byte)((i * 37) + 11);
        }

        if (fiveBit)
        {
            for (var i = 0; i < 32; i++)
            {
                block[16 + i] = (byte)((i * 53) ^ 0x5A);
            }
        }

        var y = Dequantize(type, block);
        for (var e = 0; e < 256; e++)
        {
            // Sub-block j = e / 32; sub-blocks 2p and 2p+1 share the 32 bytes of pair p, low then high nibbles.
            var j = e / 32;
            var b = block[qsOffset + (32 * (j / 2)) + (e % 32)];
            var level = j % 2 == 0 ? b & 0xF : b >> 4;
            if (fiveBit && ((block[16 + (e % 32)] >> j) & 1) != 0)
            {
                level += 16;
            }

            Assert.Equal((0.25f * sc[j] * level) - (0.5f * m[j]), y[e]);
        }
    }

    [Fact]
    public void Q6_K_combines_four_low_and_two_high_bits_with_signed_scales_per_16_values()
    {
        var block = new byte[210];
        for (var i = 0; i < 192; i++)
        {
            block[i] = (byte)((i * 71) + 3);
        }

        for (var i = 0; i < 16; i++)
        {
            block[192 + i] = (byte)(sbyte)((i * 13) - 100);
        }

        WriteHalf(block, 208, 0.125f);
        var y = Dequantize(DType.Q6_K, block);
        for (var e = 0; e < 256; e++)
        {
            var h = e / 128;
            var r = e % 128;
            var g = r / 32;
            var l = r % 32;
            var ql = block[(64 * h) + ((g % 2) * 32) + l];
            var low = g < 2 ? ql & 0xF : ql >> 4;
            var high = (block[128 + (32 * h) + l] >> (2 * g)) & 3;
            var q = (low | (high << 4)) - 32;
            var scale = (sbyte)block[192 + (8 * h) + (r / 16)];
            Assert.Equal(0.125f * scale * q, y[e]);
        }
    }

    public static TheoryData<DType, double> RoundTripBounds() => new()
    {
        // Root-mean-square error relative to the data's RMS for Gaussian values.
        { DType.Q8_0, 0.01 },
        { DType.Q4_0, 0.12 },
        { DType.Q4_1, 0.1 },
        { DType.Q5_0, 0.05 },
        { DType.Q5_1, 0.05 },
        { DType.Q4_K, 0.1 },
        { DType.Q5_K, 0.05 },
        { DType.Q6_K, 0.025 },
    };

    [Theory]
    [MemberData(nameof(RoundTripBounds))]
    public void Quantisation_round_trips_within_the_format_precision(DType type, double relativeRmse)
    {
        var random = new Random(7);
        var x = new float[4096];
        for (var i = 0; i < x.Length; i++)
        {
            x[i] = (float)(Math.Sqrt(-2 * Math.Log(1 - random.NextDouble())) * Math.Cos(2 * Math.PI * random.NextDouble()));
        }

        var blocks = new byte[type.StorageBytes(x.Length)];
        GgmlQuants.Quantize(type, x, blocks);
        var y = new float[x.Length];
        GgmlQuants.Dequantize(type, blocks, y);
        var rms = Math.Sqrt(x.Average(v => (double)v * v));
        var err = Math.Sqrt(x.Select((v, i) => (double)(v - y[i]) * (v - y[i])).Average());
        Assert.True(err <= relativeRmse * rms, $"{type}: rmse {err / rms:E3} of the RMS");
        Assert.True(err > 0, $"{type}: a lossy format cannot be exact on Gaussian data");

        // Values already on the grid quantise to themselves.
        var again = new byte[blocks.Length];
        GgmlQuants.Quantize(type, y, again);
        var z = new float[x.Length];
        GgmlQuants.Dequantize(type, again, z);
        var drift = Math.Sqrt(y.Select((v, i) => (double)(v - z[i]) * (v - z[i])).Average());
        Assert.True(drift <= 0.25 * err, $"{type}: re-quantising dequantised values drifted by {drift}");
    }

    [Fact]
    public void Q8_0_quantiser_rounds_to_the_nearest_step_of_max_over_127()
    {
        var x = Enumerable.Range(0, 32).Select(i => (i - 16) * 0.1f).ToArray();
        var block = new byte[34];
        GgmlQuants.Quantize(DType.Q8_0, x, block);
        var d = (float)BinaryPrimitives.ReadHalfLittleEndian(block);
        Assert.Equal((float)(Half)(1.6f / 127), d);
        Assert.Equal(-127, (sbyte)block[2]);
        Assert.Equal(0, (sbyte)block[2 + 16]);
        Assert.Equal((sbyte)Math.Round(1.5f * 127 / 1.6f, MidpointRounding.AwayFromZero), (sbyte)block[2 + 31]);
    }

    [Fact]
    public void Writer_and_reader_round_trip_metadata_of_every_type_and_aligned_tensors()
    {
        var writer = new GgufWriter { Alignment = 64 };
        writer.Add("u8", GgufValueType.UInt8, (byte)200);
        writer.Add("i8", GgufValueType.Int8, (sbyte)-5);
        writer.Add("u16", GgufValueType.UInt16, (ushort)60000);
        writer.Add("i16", GgufValueType.Int16, (short)-30000);
        writer.AddUInt32("u32", 4000000000);
        writer.AddInt32("i32", -2000000000);
        writer.AddFloat32("f32", 1.5f);
        writer.AddBool("bool", true);
        writer.AddString("str", "héllo ✓");
        writer.Add("u64", GgufValueType.UInt64, ulong.MaxValue);
        writer.Add("i64", GgufValueType.Int64, long.MinValue);
        writer.Add("f64", GgufValueType.Float64, Math.PI);
        writer.AddArray("strings", GgufValueType.String, new[] { "a", "", "ü" });
        writer.AddArray("ints", GgufValueType.Int32, new[] { 1, -2, 3 });
        writer.AddArray("nested", GgufValueType.Array, new[] { new GgufArray(GgufValueType.Float32, new[] { 1f, 2f }) });
        var f32 = Enumerable.Range(0, 15).Select(i => i * 0.5f).ToArray();
        writer.AddTensor("a", DType.F32, [3, 5], System.Runtime.InteropServices.MemoryMarshal.AsBytes(f32.AsSpan()).ToArray());
        var q = new byte[DType.Q8_0.StorageBytes(128)];
        GgmlQuants.Quantize(DType.Q8_0, Enumerable.Range(0, 128).Select(i => (float)Math.Sin(i)).ToArray(), q);
        writer.AddTensor("b", DType.Q8_0, [2, 64], q);
        var path = Path.Combine(temp.Path, "all.gguf");
        writer.Write(path);

        using var file = GgufFile.Open(path);
        Assert.Equal(3u, file.Version);
        Assert.Equal(64, file.Alignment);
        Assert.Equal((byte)200, file.Metadata.Single(m => m.Key == "u8").Value);
        Assert.Equal(-5L, file.GetInteger("i8"));
        Assert.Equal(60000L, file.GetInteger("u16"));
        Assert.Equal(-30000L, file.GetInteger("i16"));
        Assert.Equal(4000000000L, file.GetInteger("u32"));
        Assert.Equal(-2000000000L, file.GetInteger("i32"));
        Assert.Equal(1.5, file.GetFloat("f32"));
        Assert.True(file.GetBool("bool"));
        Assert.Equal("héllo ✓", file.GetString("str"));
        Assert.Equal(ulong.MaxValue, file.Metadata.Single(m => m.Key == "u64").Value);
        Assert.Equal(long.MinValue, file.GetInteger("i64"));
        Assert.Equal(Math.PI, file.GetFloat("f64"));
        Assert.Equal(new[] { "a", "", "ü" }, file.GetArray("strings")!.Items);
        Assert.Equal(new[] { 1, -2, 3 }, file.GetArray("ints")!.Items);
        var nested = (GgufArray[])file.GetArray("nested")!.Items;
        Assert.Equal(new[] { 1f, 2f }, nested[0].Items);
        var a = file.GetTensor("a");
        Assert.Equal([3, 5], a.Shape);
        Assert.Equal(f32, System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(a.Bytes).ToArray());
        var b = file.GetTensor("b");
        Assert.Equal(DType.Q8_0, b.DType);
        Assert.Equal([2, 64], b.Shape);
        Assert.Equal(q, b.Bytes.ToArray());
        Assert.Equal(0, file.DataOffset % 64);
        Assert.Equal(file.DataOffset + 64 + ((q.Length + 63) / 64 * 64), new FileInfo(path).Length);
        Assert.Throws<CheckpointFormatException>(() => file.GetString("u32"));
    }

    private string Valid()
    {
        var writer = new GgufWriter();
        writer.AddString("general.architecture", "llama");
        writer.AddTensor("t", DType.F32, [4, 8], new byte[128]);
        var path = Path.Combine(temp.Path, Guid.NewGuid().ToString("N") + ".gguf");
        writer.Write(path);
        return path;
    }

    [Fact]
    public void Corrupt_files_fail_with_a_message_naming_the_file()
    {
        var path = Valid();
        var bytes = File.ReadAllBytes(path);

        void Expect(byte[] content, string fragment)
        {
            var broken = Path.Combine(temp.Path, Guid.NewGuid().ToString("N") + ".gguf");
            File.WriteAllBytes(broken, content);
            var e = Assert.Throws<CheckpointFormatException>(() => GgufFile.Open(broken).Dispose());
            Assert.Contains(broken, e.Message);
            Assert.Contains(fragment, e.Message);
        }

        var magic = (byte[])bytes.Clone();
        magic[0] = (byte)'X';
        Expect(magic, "not a GGUF file");
        var version = (byte[])bytes.Clone();
        version[4] = 1;
        Expect(version, "version 1");
        Expect(bytes[..^64], "past the end of the file");
        Expect(bytes[..40], "truncated");

        // The tensor's type id sits just before its u64 offset at the end of the tensor info.
        var text = System.Text.Encoding.ASCII.GetBytes("t");
        var infoStart = IndexOf(bytes, [1, 0, 0, 0, 0, 0, 0, 0, text[0], 2, 0, 0, 0]);
        Assert.True(infoStart > 0);
        var q2k = (byte[])bytes.Clone();
        q2k[infoStart + 9 + 4 + 16] = 10;
        Expect(q2k, "Q2_K");
        Assert.Throws<CheckpointFormatException>(() => GgufFile.Open(Path.Combine(temp.Path, "missing.gguf")));
    }

    private static int IndexOf(byte[] haystack, byte[] needle)
    {
        for (var i = 0; i + needle.Length <= haystack.Length; i++)
        {
            if (haystack.AsSpan(i, needle.Length).SequenceEqual(needle))
            {
                return i;
            }
        }

        return -1;
    }

    public static TheoryData<DType, int, int, int, int> KernelCases()
    {
        var data = new TheoryData<DType, int, int, int, int>();
        foreach (var type in new[] { DType.Q8_0, DType.Q4_0, DType.Q4_1, DType.Q5_0, DType.Q5_1, DType.Q4_K, DType.Q5_K, DType.Q6_K })
        {
            foreach (var width in new[] { 512, 256, 128, 1 })
            {
                if (!CpuSimd.IsSupported(width))
                {
                    continue;
                }

                var block = type.BlockElements();
                data.Add(type, width, 1, 5 * block, 37);
                data.Add(type, width, 6, 3 * block, 9);
                data.Add(type, width, 9, block, 131);
            }
        }

        return data;
    }

    /// <summary>Each kernel (scalar, AVX2, AVX-VNNI, picked by the pinned width) against a float64 product of the dequantised weights.</summary>
    [Theory]
    [MemberData(nameof(KernelCases))]
    public void Quantised_kernels_match_the_dequantised_float64_product(DType type, int width, int tokens, int inFeatures, int outFeatures)
    {
        var random = new Random(inFeatures + outFeatures + tokens);
        var w = Enumerable.Range(0, inFeatures * outFeatures).Select(_ => (float)(random.NextDouble() - 0.5)).ToArray();
        var x = Enumerable.Range(0, tokens * inFeatures).Select(_ => (float)(random.NextDouble() * 4 - 2)).ToArray();
        var bias = Enumerable.Range(0, outFeatures).Select(_ => (float)random.NextDouble()).ToArray();
        var blocks = new byte[type.StorageBytes(w.Length)];
        GgmlQuants.Quantize(type, w, blocks);
        var dequantised = new float[w.Length];
        GgmlQuants.Dequantize(type, blocks, dequantised);

        using var backend = new CpuBackend(3, width);
        using var wt = backend.Allocate(type, outFeatures, inFeatures);
        backend.UploadBytes(blocks, wt);
        using var xt = backend.Allocate(DType.F32, tokens, inFeatures);
        backend.Upload(x, xt);
        using var bt = backend.Allocate(DType.F32, outFeatures);
        backend.Upload(bias, bt);
        using var yt = backend.Allocate(DType.F32, tokens, outFeatures);
        backend.Upload(Enumerable.Repeat(float.NaN, tokens * outFeatures).ToArray(), yt);
        backend.MatMul(xt, wt, bt, yt);
        var y = new float[tokens * outFeatures];
        backend.Download(yt, y);

        for (var t = 0; t < tokens; t++)
        {
            for (var o = 0; o < outFeatures; o++)
            {
                double expected = bias[o], magnitude = 0;
                for (var i = 0; i < inFeatures; i++)
                {
                    expected += (double)x[(t * inFeatures) + i] * dequantised[(o * inFeatures) + i];
                    magnitude += Math.Abs((double)x[(t * inFeatures) + i] * dequantised[(o * inFeatures) + i]);
                }

                // Activations are int8 per block of 32: each product moves by at most half a step of max|x|/127.
                var actual = y[(t * outFeatures) + o];
                Assert.False(float.IsNaN(actual), $"{type}/{width}: output [{t}, {o}] never written");
                Assert.True(Math.Abs(actual - expected) <= (magnitude * 2.0 / 127) + 1e-4, $"{type}/{width}: [{t}, {o}] {actual} vs {expected} (magnitude {magnitude})");
            }
        }
    }

    [Theory]
    [InlineData("qmatmul/q8_0/t9/96to45")]
    [InlineData("qmatmul/q4_0/t77/96to45")]
    [InlineData("qmatmul/q4_1/t77/96to45")]
    [InlineData("qmatmul/q5_0/t5/96to45")]
    [InlineData("qmatmul/q5_1/t2/32to131+bias")]
    [InlineData("qmatmul/q5_1/t1/288to7")]
    [InlineData("qmatmul/q4_k/t5/768to45")]
    [InlineData("qmatmul/q5_k/t2/256to131+bias")]
    [InlineData("qmatmul/q6_k/t1/2304to7")]
    public void Quantised_matmul_op_table_cases_pass_on_every_width(string name)
    {
        Assert.Contains(name, Enclave.Engine.Tests.Backends.BackendOpCases.Names);
        using var reference = new Enclave.Engine.Backends.Reference.ReferenceBackend();
        foreach (var width in new[] { 512, 256, 128, 1 }.Where(CpuSimd.IsSupported))
        {
            using var cpu = new CpuBackend(3, width);
            var result = Enclave.Engine.Tests.Backends.BackendOpCases.Run(name, cpu, reference);
            Assert.True(result.Passed, $"width {width}: {result}");
        }
    }
}
