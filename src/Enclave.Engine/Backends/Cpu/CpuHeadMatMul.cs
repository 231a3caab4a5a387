using System.Runtime.CompilerServices;
using System.Numerics.Tensors;

namespace Enclave.Engine.Backends.Cpu;

/// <summary>
/// output[t, h, :] = weight[h] · x[t, h, :]: one small matmul per head, as the absorbed MLA projections need.
/// Parallel over (token, head) pairs; each output element is a vectorised dot product of contiguous rows.
/// </summary>
internal static unsafe class CpuHeadMatMul
{
    public sealed class Job : CpuJob
    {
        public float* X;
        public float* Weight;
        public float* Output;
        public int Heads;
        public int In;
        public int Out;

        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        public override void Execute(int index, int worker)
        {
            var head = index % Heads;
            var x = new ReadOnlySpan<float>(X + ((nint)index * In), In);
            var output = Output + ((nint)index * Out);
            var weight = Weight + ((nint)head * Out * In);
            for (var j = 0; j < Out; j++)
            {
                output[j] = TensorPrimitives.Dot(x, new ReadOnlySpan<float>(weight + ((nint)j * In), In));
            }
        }
    }

    public static void Run(CpuWorkerPool pool, Job job, CpuTensor x, CpuTensor weight, CpuTensor output)
    {
        x.RequireDType(DType.F32);
        weight.RequireDType(DType.F32);
        output.RequireDType(DType.F32);
        if (x.Rank != 3 || weight.Rank != 3 || output.Rank != 3 || weight.Shape[0] != x.Shape[1] || weight.Shape[2] != x.Shape[2]
            || output.Shape[0] != x.Shape[0] || output.Shape[1] != x.Shape[1] || output.Shape[2] != weight.Shape[1])
        {
            throw new ArgumentException($"HeadMatMul shapes do not match: x {x}, weight {weight}, output {output}");
        }

        job.X = x.F32Pointer;
        job.Weight = weight.F32Pointer;
        job.Output = output.F32Pointer;
        job.Heads = x.Shape[1];
        job.In = x.Shape[2];
        job.Out = weight.Shape[1];
        pool.Run(job, x.Shape[0] * x.Shape[1]);
    }
}
