using Enclave.Engine.Backends;
using Enclave.Engine.Backends.Cpu;
using Enclave.Engine.Formats.Gguf;

namespace Enclave.Engine.Tests.Backends;

/// <summary>
/// Q8_0 weights regrouped into 16-row groups (<see cref="CpuQ8_0Groups"/>): the layout round trip, embedding rows from
/// a grouped table, and products from grouped weights (vector kernels and AMX) against the kernels that read the
/// file's layout. Both sum the same int8 products exactly, so they differ only in the order of the fp32 scale sums.
/// </summary>
public sealed unsafe class CpuQ8_0GroupsTests
{
    public static TheoryData<int, int, int, bool> Shapes()
    {
        // Rows: whole groups, one group plus a remainder, remainders of 1 and 15; widths from one block to 4096;
        // tokens: each count the vector kernel specialises (1-4), a remainder of 1 past groups of four, an AMX tile
        // short of full, one past a tile, and many tiles.
        var data = new TheoryData<int, int, int, bool>();
        foreach (var tokens in new[] { 1, 2, 3, 5, 8, 17, 128 })
        {
            foreach (var (outFeatures, inFeatures, bias) in new[] { (16, 32, false), (45, 96, true), (17, 4096, false), (64, 896, true), (31, 160, false) })
            {
                data.Add(tokens, inFeatures, outFeatures, bias);
            }
        }

        return data;
    }

    [Q8_0GroupsTheory]
    [MemberData(nameof(Shapes))]
    public void Products_from_grouped_weights_agree_with_the_file_layout(int tokens, int inFeatures, int outFeatures, bool withBias)
    {
        var (blocks, x, bias) = Inputs(tokens, inFeatures, outFeatures, withBias);
        var (expected, _, fileGrouped) = Product(groups: false, amx: false, tokens, inFeatures, outFeatures, blocks, x, bias);
        var (grouped, _, isGrouped) = Product(groups: true, amx: false, tokens, inFeatures, outFeatures, blocks, x, bias);
        Assert.False(fileGrouped);
        Assert.True(isGrouped);
        AssertClose(expected, grouped, outFeatures, inFeatures);
    }

    [Q8_0GroupsAmxTheory]
    [MemberData(nameof(Shapes))]
    public void Amx_products_from_grouped_weights_agree_with_the_file_layout(int tokens, int inFeatures, int outFeatures, bool withBias)
    {
        var (blocks, x, bias) = Inputs(tokens, inFeatures, outFeatures, withBias);
        var (expected, _, _) = Product(groups: false, amx: false, tokens, inFeatures, outFeatures, blocks, x, bias);
        var (amx, amxProducts, isGrouped) = Product(groups: true, amx: true, tokens, inFeatures, outFeatures, blocks, x, bias);
        Assert.True(isGrouped);
        Assert.Equal(tokens >= CpuQuantMatMul.AmxMinTokens ? 1 : 0, amxProducts);
        AssertClose(expected, amx, outFeatures, inFeatures);
    }

    [Fact]
    public void Grouping_round_trips_every_row_exactly()
    {
        // 45 rows: two groups and a remainder of 13 in the file's layout; some blocks all zero (scale 0), some negative.
        const int rows = 45, inFeatures = 160;
        var random = new Random(7);
        var w = Enumerable.Range(0, rows * inFeatures).Select(i => i % 97 < 32 ? 0f : (float)((random.NextDouble() - 0.5) * (1 + (i % 5)))).ToArray();
        var file = new byte[DType.Q8_0.StorageBytes(w.Length)];
        GgmlQuants.Quantize(DType.Q8_0, w, file);
        var grouped = new byte[file.Length];
        fixed (byte* source = file, destination = grouped)
        {
            Assert.True(CpuQ8_0Groups.Pack(source, destination, rows, inFeatures, releaseSource: false));
            var rowBytes = (int)DType.Q8_0.RowBytes(inFeatures);
            var expected = new float[inFeatures];
            var actual = new float[inFeatures];
            for (var r = 0; r < rows; r++)
            {
                GgmlQuants.Dequantize(DType.Q8_0, file.AsSpan(r * rowBytes, rowBytes), expected);
                CpuQ8_0Groups.DequantizeRow(destination, rows, inFeatures, r, actual);
                for (var i = 0; i < inFeatures; i++)
                {
                    Assert.True(BitConverter.SingleToInt32Bits(expected[i]) == BitConverter.SingleToInt32Bits(actual[i]), $"row {r}, value {i}: {actual[i]} vs {expected[i]}");
                }
            }
        }

        // The layout itself: value 37 of row 18 (group 1, row 2; block 1, quad 1, byte 1) as level + 128, and its scale.
        var level = (sbyte)file[(18 * 170) + 34 + 2 + 5];
        Assert.Equal((byte)(level ^ 0x80), grouped[(16 * 170) + 512 + 64 + (2 * 4) + 1]);
        Assert.Equal(BitConverter.ToUInt16(file, (18 * 170) + 34), BitConverter.ToUInt16(grouped, (16 * 170) + (5 * 512) + 32 + 4));
        Assert.Equal(file.AsSpan(32 * 170).ToArray(), grouped.AsSpan(32 * 170).ToArray());
    }

    [Fact]
    public void A_scale_that_is_not_finite_leaves_the_file_layout()
    {
        var file = new byte[DType.Q8_0.StorageBytes(16 * 64)];
        GgmlQuants.Quantize(DType.Q8_0, Enumerable.Range(0, 16 * 64).Select(i => (float)Math.Sin(i)).ToArray(), file);
        BitConverter.GetBytes((ushort)0x7C00).CopyTo(file, (5 * 68) + 34);
        var grouped = new byte[file.Length];
        fixed (byte* source = file, destination = grouped)
        {
            Assert.False(CpuQ8_0Groups.Pack(source, destination, 16, 64, releaseSource: false));
        }

        using var backend = new CpuBackend(2);
        using var table = (CpuTensor)backend.Allocate(DType.Q8_0, 16, 64);
        backend.UploadBytes(file, table);
        Assert.False(table.Q8_0Grouped);
        Assert.Equal(file, table.Bytes.ToArray());
    }

    [Q8_0GroupsFact]
    public void Checkpoint_weights_are_grouped_at_their_first_product()
    {
        // A loaded weight stays a window onto the checkpoint (an embedding table that is not the output head is never
        // grouped) until a product reads it; then it is copied into groups, and the product is the same.
        const int tokens = 3, inFeatures = 128, outFeatures = 48;
        var (blocks, x, _) = Inputs(tokens, inFeatures, outFeatures, withBias: false);
        var (expected, _, _) = Product(groups: false, amx: false, tokens, inFeatures, outFeatures, blocks, x, null);
        fixed (byte* data = blocks)
        {
            using var backend = new CpuBackend(2, 512, groupQ8_0: true, amx: false);
            var source = new Enclave.Engine.Formats.CheckpointTensor("w", DType.Q8_0, [outFeatures, inFeatures], data, blocks.Length, "memory");
            using var weight = (CpuTensor)backend.LoadWeight(source);
            Assert.False(weight.Q8_0Grouped);
            using var xt = backend.Allocate(DType.F32, tokens, inFeatures);
            backend.Upload(x, xt);
            using var yt = backend.Allocate(DType.F32, tokens, outFeatures);
            backend.MatMul(xt, weight, null, yt);
            Assert.True(weight.Q8_0Grouped);
            Assert.True(weight.OwnsData);
            var y = new float[tokens * outFeatures];
            backend.Download(yt, y);
            AssertClose(expected, y, outFeatures, inFeatures);

            // The checkpoint's bytes are untouched (it was not a file mapping, so nothing was dropped either).
            var original = new byte[blocks.Length];
            Inputs(tokens, inFeatures, outFeatures, withBias: false).Blocks.CopyTo(original, 0);
            Assert.Equal(original, blocks);
        }
    }

    [Q8_0GroupsFact]
    public void Embedding_rows_come_from_a_grouped_table()
    {
        // A tied embedding is also the output head, so it is grouped; 40 rows leave 8 in the file's layout.
        const int vocab = 40, hidden = 96;
        var random = new Random(3);
        var w = Enumerable.Range(0, vocab * hidden).Select(_ => (float)(random.NextDouble() - 0.5)).ToArray();
        var file = new byte[DType.Q8_0.StorageBytes(w.Length)];
        GgmlQuants.Quantize(DType.Q8_0, w, file);
        using var backend = new CpuBackend(2);
        using var table = (CpuTensor)backend.Allocate(DType.Q8_0, vocab, hidden);
        backend.UploadBytes(file, table);
        Assert.True(table.Q8_0Grouped);
        int[] ids = [0, 17, 31, 32, 39, 5];
        using var output = backend.Allocate(DType.F32, ids.Length, hidden);
        backend.GatherEmbedding(table, ids, output);
        var actual = new float[ids.Length * hidden];
        backend.Download(output, actual);
        var expected = new float[hidden];
        var rowBytes = (int)DType.Q8_0.RowBytes(hidden);
        for (var t = 0; t < ids.Length; t++)
        {
            GgmlQuants.Dequantize(DType.Q8_0, file.AsSpan(ids[t] * rowBytes, rowBytes), expected);
            Assert.Equal(expected, actual.AsSpan(t * hidden, hidden).ToArray());
        }

        Assert.Throws<InvalidOperationException>(() => table.SliceRows(0, 16));
    }

    private static (byte[] Blocks, float[] X, float[]? Bias) Inputs(int tokens, int inFeatures, int outFeatures, bool withBias)
    {
        var random = new Random((tokens * 31) + inFeatures + outFeatures);
        var w = Enumerable.Range(0, inFeatures * outFeatures).Select(_ => (float)(random.NextDouble() - 0.5)).ToArray();
        var x = Enumerable.Range(0, tokens * inFeatures).Select(_ => (float)((random.NextDouble() * 4) - 2)).ToArray();
        var bias = withBias ? Enumerable.Range(0, outFeatures).Select(_ => (float)random.NextDouble()).ToArray() : null;
        var blocks = new byte[DType.Q8_0.StorageBytes(w.Length)];
        GgmlQuants.Quantize(DType.Q8_0, w, blocks);
        return (blocks, x, bias);
    }

    private static void AssertClose(float[] expected, float[] actual, int outFeatures, int inFeatures)
    {
        // The fp32 rounding of a sum of per-block terms grows with their number: 1e-5 relative up to 32 blocks.
        var tolerance = 1e-5 * Math.Max(1, inFeatures / 1024.0);
        for (var i = 0; i < expected.Length; i++)
        {
            Assert.False(float.IsNaN(actual[i]), $"output {i / outFeatures}, {i % outFeatures} never written");
            Assert.True(Math.Abs(actual[i] - expected[i]) <= tolerance * Math.Max(1, Math.Abs(expected[i])), $"[{i / outFeatures}, {i % outFeatures}]: grouped {actual[i]} vs file layout {expected[i]}");
        }
    }

    private static (float[] Y, long AmxProducts, bool Grouped) Product(bool groups, bool amx, int tokens, int inFeatures, int outFeatures, byte[] blocks, float[] x, float[]? bias)
    {
        // The int8 AMX kernel: it sums the same int8 products as the vector kernels (the bf16 one has tests of its own).
        using var backend = new CpuBackend(3, 512, groups, amx, amxBf16: false);
        return CpuAmxTests.Product(backend, DType.Q8_0, tokens, inFeatures, outFeatures, blocks, x, bias);
    }
}

/// <summary>A theory skipped, with the reason, where Q8_0 weights are not regrouped (no AVX-512 with AVX-VNNI, or turned off).</summary>
public sealed class Q8_0GroupsTheoryAttribute : TheoryAttribute
{
    public Q8_0GroupsTheoryAttribute()
    {
        Skip = Q8_0GroupsFactAttribute.SkipReason();
    }
}

/// <summary>As <see cref="Q8_0GroupsTheoryAttribute"/>, and where the AMX kernels do not run.</summary>
public sealed class Q8_0GroupsAmxTheoryAttribute : TheoryAttribute
{
    public Q8_0GroupsAmxTheoryAttribute()
    {
        Skip = Q8_0GroupsFactAttribute.SkipReason() ?? (CpuAmx.IsSupported ? null : CpuAmx.Status);
    }
}

/// <summary>A fact skipped, with the reason, where Q8_0 weights are not regrouped.</summary>
public sealed class Q8_0GroupsFactAttribute : FactAttribute
{
    public Q8_0GroupsFactAttribute()
    {
        Skip = SkipReason();
    }

    internal static string? SkipReason() =>
        CpuQ8_0Groups.IsSupported(512) ? null : "Q8_0 weights are not regrouped here (they need 512-bit vectors with AVX-VNNI; ENCLAVE_CPU_Q8_REPACK=0 turns it off)";
}
