using System.Runtime.Intrinsics;

namespace Enclave.Engine.Backends.Cpu;

/// <summary>
/// Gathers rows of an F32, F16, BF16 or block-typed table into F32 rows (token embeddings), and copies selected rows of an
/// activation (the rows whose logits are needed). Both are a few rows per step, so they run on the calling thread.
/// </summary>
internal static unsafe class CpuEmbedding
{
    public static void Embedding(int width, CpuTensor table, ReadOnlySpan<int> tokenIds, CpuTensor output)
    {
        output.RequireDType(DType.F32);
        if (table.Rank != 2)
        {
            throw new ArgumentException($"embedding table must be [vocab, hidden], got {table}");
        }

        var vocab = table.Shape[0];
        var hidden = table.Shape[1];
        if (output.Columns != hidden || output.Rows != tokenIds.Length)
        {
            throw new ArgumentException($"output {output} is not [{tokenIds.Length}, {hidden}]");
        }

        var rowBytes = (nint)table.DType.RowBytes(hidden);
        var source = table.Pointer;
        var destination = output.F32Pointer;
        for (var t = 0; t < tokenIds.Length; t++)
        {
            var id = tokenIds[t];
            if ((uint)id >= (uint)vocab)
            {
                throw new ArgumentOutOfRangeException(nameof(tokenIds), $"token id {id} outside vocabulary of {vocab}");
            }

            var row = source + (id * rowBytes);
            var y = destination + ((nint)t * hidden);
            if (table.Q8_0Grouped)
            {
                // A tied Q8_0 table is also the output head, so it is kept in the products' grouped layout.
                CpuQ8_0Groups.DequantizeRow(source, vocab, hidden, id, new Span<float>(y, hidden));
                continue;
            }

            if (table.DType.IsQuantized())
            {
                // One row per token: the reference dequantisation is cheap next to the step.
                Formats.Gguf.GgmlQuants.Dequantize(table.DType, new ReadOnlySpan<byte>(row, (int)rowBytes), new Span<float>(y, hidden));
                continue;
            }

            switch (width)
            {
                case 512:
                    Row<Simd512, Vector512<float>>(table.DType, row, y, hidden);
                    break;
                case 256:
                    Row<Simd256, Vector256<float>>(table.DType, row, y, hidden);
                    break;
                case 128:
                    Row<Simd128, Vector128<float>>(table.DType, row, y, hidden);
                    break;
                default:
                    Row<SimdScalar, float>(table.DType, row, y, hidden);
                    break;
            }
        }
    }

    public static void GatherRows(CpuTensor x, ReadOnlySpan<int> rows, CpuTensor output)
    {
        x.RequireDType(DType.F32);
        output.RequireDType(DType.F32);
        var columns = x.Columns;
        if (output.Columns != columns || output.Rows != rows.Length)
        {
            throw new ArgumentException($"output {output} is not [{rows.Length}, {columns}]");
        }

        var source = x.F32Pointer;
        var destination = output.F32Pointer;
        var count = x.Rows;
        for (var i = 0; i < rows.Length; i++)
        {
            if ((uint)rows[i] >= (ulong)count)
            {
                throw new ArgumentOutOfRangeException(nameof(rows), $"row {rows[i]} outside {x}");
            }

            new ReadOnlySpan<float>(source + ((nint)rows[i] * columns), columns)
                .CopyTo(new Span<float>(destination + ((nint)i * columns), columns));
        }
    }

    private static void Row<TS, TV>(DType dtype, byte* row, float* y, int n)
        where TS : ISimd<TV>
        where TV : struct
    {
        switch (dtype)
        {
            case DType.F32:
                new ReadOnlySpan<float>(row, n).CopyTo(new Span<float>(y, n));
                break;
            case DType.BF16:
                Widen<TS, TV, Bf16Weights>(row, y, n);
                break;
            case DType.F16:
                Widen<TS, TV, F16Weights>(row, y, n);
                break;
            default:
                throw new ArgumentException($"embedding table of type {dtype} is not supported");
        }
    }

    private static void Widen<TS, TV, TW>(byte* row, float* y, int n)
        where TS : ISimd<TV>
        where TV : struct
        where TW : IWeightFormat
    {
        var i = 0;
        for (; i <= n - TS.Count; i += TS.Count)
        {
            TS.Store(TW.Load<TS, TV>(row, i), y + i);
        }

        for (; i < n; i++)
        {
            y[i] = TW.Load<SimdScalar, float>(row, i);
        }
    }
}
