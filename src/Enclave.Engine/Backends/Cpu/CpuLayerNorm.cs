using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace Enclave.Engine.Backends.Cpu;

/// <summary>
/// Row-wise LayerNorm, y = (x - mean) / sqrt(var + eps) * w + b, in float32 like torch.nn.LayerNorm: the mean
/// first, then the variance of the centred row (two passes, so no cancellation on rows with a large mean).
/// Weight and bias are F32 (encoders load these vectors as F32). Rows are split across the pool; y may alias x.
/// </summary>
internal static unsafe class CpuLayerNorm
{
    public sealed class Job : CpuJob
    {
        public float* X;
        public float* Weight;
        public float* Bias;
        public float* Output;
        public int Columns;
        public int Rows;
        public int RowsPerItem;
        public float Eps;
        public int Width;

        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        public override void Execute(int index, int worker)
        {
            var start = index * RowsPerItem;
            var end = Math.Min(Rows, start + RowsPerItem);
            for (var r = start; r < end; r++)
            {
                var offset = (nint)r * Columns;
                switch (Width)
                {
                    case 512:
                        Row<Simd512, Vector512<float>>(X + offset, Weight, Bias, Output + offset, Columns, Eps);
                        break;
                    case 256:
                        Row<Simd256, Vector256<float>>(X + offset, Weight, Bias, Output + offset, Columns, Eps);
                        break;
                    case 128:
                        Row<Simd128, Vector128<float>>(X + offset, Weight, Bias, Output + offset, Columns, Eps);
                        break;
                    default:
                        Row<SimdScalar, float>(X + offset, Weight, Bias, Output + offset, Columns, Eps);
                        break;
                }
            }
        }
    }

    public static void Run(CpuWorkerPool pool, Job job, int width, CpuTensor x, CpuTensor weight, CpuTensor bias, float eps, CpuTensor output)
    {
        x.RequireDType(DType.F32);
        weight.RequireDType(DType.F32);
        bias.RequireDType(DType.F32);
        output.RequireDType(DType.F32);
        var columns = x.Columns;
        if (weight.ElementCount != columns || bias.ElementCount != columns || output.ElementCount != x.ElementCount || output.Columns != columns)
        {
            throw new ArgumentException($"LayerNorm shapes do not match: x {x}, weight {weight}, bias {bias}, output {output}");
        }

        var rows = checked((int)x.Rows);
        if (rows == 0)
        {
            return;
        }

        job.X = x.F32Pointer;
        job.Weight = weight.F32Pointer;
        job.Bias = bias.F32Pointer;
        job.Output = output.F32Pointer;
        job.Columns = columns;
        job.Rows = rows;
        job.Eps = eps;
        job.Width = width;
        job.RowsPerItem = CpuParallel.ItemsPerChunk(rows, columns, pool.ThreadCount);
        pool.Run(job, (rows + job.RowsPerItem - 1) / job.RowsPerItem);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Row<TS, TV>(float* x, float* weight, float* bias, float* y, int n, float eps)
        where TS : ISimd<TV>
        where TV : struct
    {
        var acc = TS.Zero;
        var i = 0;
        for (; i <= n - TS.Count; i += TS.Count)
        {
            acc = TS.Add(acc, TS.Load(x + i));
        }

        var sum = TS.Sum(acc);
        for (; i < n; i++)
        {
            sum += x[i];
        }

        var mean = sum / n;
        var vm = TS.Broadcast(mean);
        acc = TS.Zero;
        i = 0;
        for (; i <= n - TS.Count; i += TS.Count)
        {
            var c = TS.Subtract(TS.Load(x + i), vm);
            acc = TS.MultiplyAdd(c, c, acc);
        }

        var squares = TS.Sum(acc);
        for (; i < n; i++)
        {
            var c = x[i] - mean;
            squares = MathF.FusedMultiplyAdd(c, c, squares);
        }

        var scale = 1f / MathF.Sqrt((squares / n) + eps);
        var vs = TS.Broadcast(scale);
        i = 0;
        for (; i <= n - TS.Count; i += TS.Count)
        {
            var normalised = TS.Multiply(TS.Subtract(TS.Load(x + i), vm), vs);
            TS.Store(TS.MultiplyAdd(normalised, TS.Load(weight + i), TS.Load(bias + i)), y + i);
        }

        for (; i < n; i++)
        {
            y[i] = MathF.FusedMultiplyAdd((x[i] - mean) * scale, weight[i], bias[i]);
        }
    }
}
