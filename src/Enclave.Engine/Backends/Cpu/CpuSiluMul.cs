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
            Apply(Gate + start, Up + start, Output + start, end - start, Width);
        }
    }

    /// <summary>
    /// output[i] = silu(gate[i]) * up[i] for i in [0, count), on the calling thread (output may alias either input).
    /// Each element's result depends on its own inputs alone (the vector sigmoid is element-wise), so ranges whose
    /// lengths are whole vectors compute what one call over all of them would.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    internal static void Apply(float* gatePointer, float* upPointer, float* outputPointer, long count, int width)
    {
        Span<float> sigmoid = stackalloc float[Block];
        for (long i = 0; i < count; i += Block)
        {
            var n = (int)Math.Min(Block, count - i);
            var gate = new ReadOnlySpan<float>(gatePointer + i, n);
            var up = new ReadOnlySpan<float>(upPointer + i, n);
            var output = new Span<float>(outputPointer + i, n);
            if (width == 1)
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
