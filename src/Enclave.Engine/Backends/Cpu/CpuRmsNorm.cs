using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace Enclave.Engine.Backends.Cpu;

/// <summary>
/// Row-wise RMSNorm, y = x / sqrt(mean(x²) + eps) * w, optionally fused with the residual add that precedes it
/// (residual += x; y = RmsNorm(residual)). The weight is read in its stored type. Rows are split across the pool.
/// </summary>
internal static unsafe class CpuRmsNorm
{
    public sealed class Job : CpuJob
    {
        public float* X;
        public float* Residual;
        public byte* Weight;
        public DType WeightType;
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
            switch (Width)
            {
                case 512:
                    ProcessRows<Simd512, Vector512<float>>(start, end);
                    break;
                case 256:
                    ProcessRows<Simd256, Vector256<float>>(start, end);
                    break;
                case 128:
                    ProcessRows<Simd128, Vector128<float>>(start, end);
                    break;
                default:
                    ProcessRows<SimdScalar, float>(start, end);
                    break;
            }
        }

        private void ProcessRows<TS, TV>(int start, int end)
            where TS : ISimd<TV>
            where TV : struct
        {
            for (var r = start; r < end; r++)
            {
                var offset = (nint)r * Columns;
                switch (WeightType)
                {
                    case DType.BF16:
                        Row<TS, TV, Bf16Weights>(X + offset, Residual == null ? null : Residual + offset, Weight, Output + offset, Columns, Eps);
                        break;
                    case DType.F16:
                        Row<TS, TV, F16Weights>(X + offset, Residual == null ? null : Residual + offset, Weight, Output + offset, Columns, Eps);
                        break;
                    default:
                        Row<TS, TV, F32Weights>(X + offset, Residual == null ? null : Residual + offset, Weight, Output + offset, Columns, Eps);
                        break;
                }
            }
        }
    }

    public static void Run(CpuWorkerPool pool, Job job, int width, CpuTensor? residual, CpuTensor x, CpuTensor weight, float eps, CpuTensor output)
    {
        x.RequireDType(DType.F32);
        output.RequireDType(DType.F32);
        var columns = x.Columns;
        if (weight.ElementCount != columns || output.ElementCount != x.ElementCount || output.Columns != columns)
        {
            throw new ArgumentException($"RmsNorm shapes do not match: x {x}, weight {weight}, output {output}");
        }

        if (residual != null)
        {
            residual.RequireDType(DType.F32);
            if (residual.ElementCount != x.ElementCount || residual.Columns != columns)
            {
                throw new ArgumentException($"residual {residual} does not match x {x}");
            }
        }

        var rows = checked((int)x.Rows);
        if (rows == 0)
        {
            return;
        }

        job.X = x.F32Pointer;
        job.Residual = residual == null ? null : residual.F32Pointer;
        job.Weight = weight.Pointer;
        job.WeightType = weight.DType;
        job.Output = output.F32Pointer;
        job.Columns = columns;
        job.Rows = rows;
        job.Eps = eps;
        job.Width = width;
        job.RowsPerItem = CpuParallel.ItemsPerChunk(rows, columns, pool.ThreadCount);
        pool.Run(job, (rows + job.RowsPerItem - 1) / job.RowsPerItem);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Row<TS, TV, TW>(float* x, float* residual, byte* weight, float* y, int n, float eps)
        where TS : ISimd<TV>
        where TV : struct
        where TW : IWeightFormat
    {
        // With a residual, the normalised row is residual + x, written back to the residual first.
        var source = x;
        if (residual != null)
        {
            var j = 0;
            for (; j <= n - TS.Count; j += TS.Count)
            {
                TS.Store(TS.Add(TS.Load(residual + j), TS.Load(x + j)), residual + j);
            }

            for (; j < n; j++)
            {
                residual[j] += x[j];
            }

            source = residual;
        }

        TV s0 = TS.Zero, s1 = TS.Zero;
        var i = 0;
        for (; i <= n - (2 * TS.Count); i += 2 * TS.Count)
        {
            var a = TS.Load(source + i);
            var b = TS.Load(source + i + TS.Count);
            s0 = TS.MultiplyAdd(a, a, s0);
            s1 = TS.MultiplyAdd(b, b, s1);
        }

        for (; i <= n - TS.Count; i += TS.Count)
        {
            var a = TS.Load(source + i);
            s0 = TS.MultiplyAdd(a, a, s0);
        }

        var sum = TS.Sum(TS.Add(s0, s1));
        for (; i < n; i++)
        {
            sum = MathF.FusedMultiplyAdd(source[i], source[i], sum);
        }

        var scale = 1f / MathF.Sqrt((sum / n) + eps);
        var vs = TS.Broadcast(scale);
        var k = 0;
        for (; k <= n - TS.Count; k += TS.Count)
        {
            TS.Store(TS.Multiply(TS.Multiply(TS.Load(source + k), vs), TW.Load<TS, TV>(weight, k)), y + k);
        }

        for (; k < n; k++)
        {
            y[k] = source[k] * scale * TW.Load<SimdScalar, float>(weight, k);
        }
    }
}
