using System.Runtime.CompilerServices;
using System.Numerics.Tensors;

namespace Enclave.Engine.Backends.Cpu;

/// <summary>
/// out = silu(gate) * up = gate * sigmoid(gate) * up, element-wise. Works through 256-element blocks held on the
/// stack so output may alias either input; the sigmoid is TensorPrimitives' vectorised one.
/// </summary>
internal static unsafe class CpuSiluMul
{
    private const int Block = 256;

    public sealed class Job : CpuJob
    {
        public float* Gate;
        public float* Up;
        public float* Output;
        public long Count;
        public int Width;

        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        public override void Execute(int index, int worker)
        {
            var start = (long)index * CpuElementwise.ChunkElements;
            var end = Math.Min(Count, start + CpuElementwise.ChunkElements);
            Span<float> sigmoid = stackalloc float[Block];
            for (var i = start; i < end; i += Block)
            {
                var n = (int)Math.Min(Block, end - i);
                var gate = new ReadOnlySpan<float>(Gate + i, n);
                var up = new ReadOnlySpan<float>(Up + i, n);
                var output = new Span<float>(Output + i, n);
                if (Width == 1)
                {
                    for (var j = 0; j < n; j++)
                    {
                        var g = gate[j];
                        output[j] = g / (1f + MathF.Exp(-g)) * up[j];
                    }

                    continue;
                }

                var s = sigmoid[..n];
                TensorPrimitives.Sigmoid(gate, s);
                TensorPrimitives.Multiply(s, gate, s);
                TensorPrimitives.Multiply(s, up, output);
            }
        }
    }

    public static void Run(CpuWorkerPool pool, Job job, int width, CpuTensor gate, CpuTensor up, CpuTensor output)
    {
        gate.RequireDType(DType.F32);
        up.RequireDType(DType.F32);
        output.RequireDType(DType.F32);
        if (gate.ElementCount != up.ElementCount || gate.ElementCount != output.ElementCount)
        {
            throw new ArgumentException($"SiluMul shapes do not match: gate {gate}, up {up}, output {output}");
        }

        job.Gate = gate.F32Pointer;
        job.Up = up.F32Pointer;
        job.Output = output.F32Pointer;
        job.Count = gate.ElementCount;
        job.Width = width;
        pool.Run(job, CpuElementwise.ChunkCount(job.Count));
    }
}
