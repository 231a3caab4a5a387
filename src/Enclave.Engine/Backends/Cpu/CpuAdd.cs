using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace Enclave.Engine.Backends.Cpu;

/// <summary>out = a + b, element-wise over the flat data; out may alias a or b.</summary>
internal static unsafe class CpuAdd
{
    public sealed class Job : CpuJob
    {
        public float* A;
        public float* B;
        public float* Output;
        public long Count;
        public int Width;

        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        public override void Execute(int index, int worker)
        {
            var start = (long)index * CpuElementwise.ChunkElements;
            var n = (int)(Math.Min(Count, start + CpuElementwise.ChunkElements) - start);
            switch (Width)
            {
                case 512:
                    Add<Simd512, Vector512<float>>(A + start, B + start, Output + start, n);
                    break;
                case 256:
                    Add<Simd256, Vector256<float>>(A + start, B + start, Output + start, n);
                    break;
                case 128:
                    Add<Simd128, Vector128<float>>(A + start, B + start, Output + start, n);
                    break;
                default:
                    Add<SimdScalar, float>(A + start, B + start, Output + start, n);
                    break;
            }
        }
    }

    public static void Run(CpuWorkerPool pool, Job job, int width, CpuTensor a, CpuTensor b, CpuTensor output)
    {
        a.RequireDType(DType.F32);
        b.RequireDType(DType.F32);
        output.RequireDType(DType.F32);
        if (a.ElementCount != b.ElementCount || a.ElementCount != output.ElementCount)
        {
            throw new ArgumentException($"Add shapes do not match: a {a}, b {b}, output {output}");
        }

        job.A = a.F32Pointer;
        job.B = b.F32Pointer;
        job.Output = output.F32Pointer;
        job.Count = a.ElementCount;
        job.Width = width;
        pool.Run(job, CpuElementwise.ChunkCount(job.Count));
    }

    private static void Add<TS, TV>(float* a, float* b, float* output, int n)
        where TS : ISimd<TV>
        where TV : struct
    {
        var i = 0;
        for (; i <= n - TS.Count; i += TS.Count)
        {
            TS.Store(TS.Add(TS.Load(a + i), TS.Load(b + i)), output + i);
        }

        for (; i < n; i++)
        {
            output[i] = a[i] + b[i];
        }
    }
}
