using System.Numerics.Tensors;

namespace Enclave.Engine.Backends.Cpu;

/// <summary>Row and column moves for MLA and MoE dispatch: column-block copies and weighted scatter-add of rows.</summary>
internal static unsafe class CpuRows
{
    public static void CopyColumns(CpuTensor x, int xOffset, CpuTensor output, int outputOffset, int count)
    {
        x.RequireDType(DType.F32);
        output.RequireDType(DType.F32);
        if (x.Rows != output.Rows || xOffset < 0 || outputOffset < 0 || count < 0 || xOffset + count > x.Columns || outputOffset + count > output.Columns)
        {
            throw new ArgumentException($"cannot copy {count} columns from {x} at {xOffset} to {output} at {outputOffset}");
        }

        int xWidth = x.Columns, outputWidth = output.Columns;
        for (long r = 0; r < x.Rows; r++)
        {
            new ReadOnlySpan<float>(x.F32Pointer + (r * xWidth) + xOffset, count)
                .CopyTo(new Span<float>(output.F32Pointer + (r * outputWidth) + outputOffset, count));
        }
    }

    public static void ScatterAdd(CpuTensor x, int[] rows, float[] weights, CpuTensor output)
    {
        x.RequireDType(DType.F32);
        output.RequireDType(DType.F32);
        var n = x.Columns;
        if (output.Columns != n || x.Rows != rows.Length || weights.Length < rows.Length)
        {
            throw new ArgumentException($"ScatterAddRows shapes do not match: x {x}, {rows.Length} rows, output {output}");
        }

        for (var i = 0; i < rows.Length; i++)
        {
            if ((uint)rows[i] >= (ulong)output.Rows)
            {
                throw new ArgumentOutOfRangeException(nameof(rows), $"row {rows[i]} outside {output}");
            }

            var destination = new Span<float>(output.F32Pointer + ((nint)rows[i] * n), n);
            TensorPrimitives.MultiplyAdd(new ReadOnlySpan<float>(x.F32Pointer + ((nint)i * n), n), weights[i], destination, destination);
        }
    }
}
