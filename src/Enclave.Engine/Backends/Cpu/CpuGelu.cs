using System.Runtime.CompilerServices;
using System.Numerics.Tensors;

namespace Enclave.Engine.Backends.Cpu;

/// <summary>
/// The exact (erf) GELU, y = x/2 · (1 + erf(x/√2)), element-wise. erf is Abramowitz and Stegun 7.1.26
/// (|error| ≤ 1.5e-7, far below float32 parity needs), evaluated with TensorPrimitives' vectorised operations over
/// 256-element blocks held on the stack, so y may alias x. Not the tanh approximation ("gelu_new").
/// </summary>
internal static unsafe class CpuGelu
{
    private const int Block = 256;
    private const float P = 0.3275911f;
    private const float A1 = 0.254829592f;
    private const float A2 = -0.284496736f;
    private const float A3 = 1.421413741f;
    private const float A4 = -1.453152027f;
    private const float A5 = 1.061405429f;
    private const float InvSqrt2 = 0.70710678118654752f;

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
            var end = Math.Min(Count, start + CpuElementwise.ChunkElements);
            Span<float> z = stackalloc float[Block];
            Span<float> t = stackalloc float[Block];
            Span<float> e = stackalloc float[Block];
            for (var i = start; i < end; i += Block)
            {
                var n = (int)Math.Min(Block, end - i);
                var x = new ReadOnlySpan<float>(X + i, n);
                var y = new Span<float>(Output + i, n);
                if (Width == 1)
                {
                    for (var j = 0; j < n; j++)
                    {
                        y[j] = Scalar(x[j]);
                    }

                    continue;
                }

                var zs = z[..n];
                var ts = t[..n];
                var es = e[..n];
                TensorPrimitives.Abs(x, zs);
                TensorPrimitives.Multiply(zs, InvSqrt2, zs);                  // z = |x| / √2
                TensorPrimitives.Multiply(zs, P, ts);
                TensorPrimitives.Add(ts, 1f, ts);
                TensorPrimitives.Reciprocal(ts, ts);                          // t = 1 / (1 + p z)
                TensorPrimitives.Multiply(zs, zs, es);
                TensorPrimitives.Negate(es, es);
                TensorPrimitives.Exp(es, es);                                 // e = exp(-z²)
                TensorPrimitives.Multiply(ts, A5, zs);                        // Horner in t, reusing z
                TensorPrimitives.Add(zs, A4, zs);
                TensorPrimitives.MultiplyAdd(zs, ts, A3, zs);
                TensorPrimitives.MultiplyAdd(zs, ts, A2, zs);
                TensorPrimitives.MultiplyAdd(zs, ts, A1, zs);
                TensorPrimitives.Multiply(zs, ts, zs);
                TensorPrimitives.Multiply(zs, es, zs);                        // 1 - erf(|x|/√2)
                TensorPrimitives.Subtract(1f, zs, zs);
                TensorPrimitives.CopySign(zs, x, zs);                         // erf(x/√2)
                TensorPrimitives.Add(zs, 1f, zs);
                TensorPrimitives.Multiply(zs, x, zs);
                TensorPrimitives.Multiply(zs, 0.5f, y);
            }
        }
    }

    public static void Run(CpuWorkerPool pool, Job job, int width, CpuTensor x, CpuTensor output)
    {
        x.RequireDType(DType.F32);
        output.RequireDType(DType.F32);
        if (x.ElementCount != output.ElementCount)
        {
            throw new ArgumentException($"Gelu shapes do not match: x {x}, output {output}");
        }

        job.X = x.F32Pointer;
        job.Output = output.F32Pointer;
        job.Count = x.ElementCount;
        job.Width = width;
        pool.Run(job, CpuElementwise.ChunkCount(job.Count));
    }

    internal static float Scalar(float x)
    {
        var z = MathF.Abs(x) * InvSqrt2;
        var t = 1f / MathF.FusedMultiplyAdd(P, z, 1f);
        var poly = ((((((((A5 * t) + A4) * t) + A3) * t) + A2) * t) + A1) * t;
        var erf = MathF.CopySign(1f - (poly * MathF.Exp(-z * z)), x);
        return 0.5f * x * (1f + erf);
    }
}
