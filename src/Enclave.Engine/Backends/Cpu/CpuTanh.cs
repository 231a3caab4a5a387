using System.Runtime.CompilerServices;
using System.Numerics.Tensors;

namespace Enclave.Engine.Backends.Cpu;

/// <summary>y = tanh(x), element-wise through TensorPrimitives' vectorised tanh (the classifier head's activation).</summary>
internal static unsafe class CpuTanh
{
    public sealed class Job : CpuJob
    {
        public float* X;
        public float* Output;
        public long Count;
        public int Width;

        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        public override void Execute(int index, int worker)
        {
            var start = (long)index * CpuElementwise.ChunkElements;
            var n = (int)(Math.Min(Count, start + CpuElementwise.ChunkElements) - start);
            var x = new ReadOnlySpan<float>(X + start, n);
            var y = new Span<float>(Output + start, n);
            if (Width == 1)
            {
                for (var i = 0; i < n; i++)
                {
                    y[i] = MathF.Tanh(x[i]);
                }

                return;
            }

            TensorPrimitives.Tanh(x, y);
        }
    }

    public static void Run(CpuWorkerPool pool, Job job, int width, CpuTensor x, CpuTensor output)
    {
        x.RequireDType(DType.F32);
        output.RequireDType(DType.F32);
        if (x.ElementCount != output.ElementCount)
        {
            throw new ArgumentException($"Tanh shapes do not match: x {x}, output {output}");
        }

        job.X = x.F32Pointer;
        job.Output = output.F32Pointer;
        job.Count = x.ElementCount;
        job.Width = width;
        pool.Run(job, CpuElementwise.ChunkCount(job.Count));
    }
}
