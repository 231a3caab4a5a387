using Enclave.Engine.Cuda;
using Enclave.Engine.Cuda.Native;

namespace Enclave.Tools.GpuCheck;

/// <summary>
/// cuBLAS BF16 GEMM throughput with fp32 accumulation, timed with CUDA events: the practical tensor-core peak that
/// prefill TFLOP/s are compared with. Shapes: a square 8192³ product and the 7B model's MLP up-projection at 4096
/// tokens (4096 × 3584 → 18944). Each is called the way the backend calls it (W transposed, x as is), once with a
/// BF16 output and once with the F32 output the backend asks for.
/// </summary>
internal static unsafe class GemmPeak
{
    public static void Run(CudaBackend backend)
    {
        var best = 0.0;
        foreach (var (tokens, inDim, outDim) in new[] { (8192, 8192, 8192), (4096, 3584, 18944) })
        {
            foreach (var outputType in new[] { Cublas.DataBF16, Cublas.DataF32 })
            {
                var tflops = Measure(backend, tokens, inDim, outDim, outputType);
                best = Math.Max(best, tflops);
                Console.WriteLine($"gemm-peak    bf16 {tokens}x{inDim}x{outDim} ({(outputType == Cublas.DataF32 ? "f32" : "bf16")} out): {tflops:F1} TFLOP/s");
            }
        }

        Console.WriteLine($"gemm-peak    best {best:F1} TFLOP/s");
    }

    private static double Measure(CudaBackend backend, int tokens, int inDim, int outDim, int outputType)
    {
        var ctx = backend.Context;
        long wBytes = 2L * outDim * inDim, xBytes = 2L * tokens * inDim, oBytes = (outputType == Cublas.DataF32 ? 4L : 2L) * tokens * outDim;
        ulong w = ctx.Alloc(wBytes), x = ctx.Alloc(xBytes), o = ctx.Alloc(oBytes);
        try
        {
            // Non-zero operands (0.0625 and 0.03125 in bf16): zeros would understate the power draw and so overstate the peak.
            ctx.Driver.Check(ctx.Driver.MemsetD32Async(w, 0x3d803d80u, (nuint)(wBytes / 4), ctx.Stream), "cuMemsetD32Async");
            ctx.Driver.Check(ctx.Driver.MemsetD32Async(x, 0x3d003d00u, (nuint)(xBytes / 4), ctx.Stream), "cuMemsetD32Async");
            void Gemm()
            {
                float alpha = 1, beta = 0;
                var cublas = ctx.Cublas;
                cublas.Check(
                    cublas.GemmEx(ctx.CublasHandle, Cublas.OpT, Cublas.OpN, outDim, tokens, inDim, &alpha, w, Cublas.DataBF16, inDim, x, Cublas.DataBF16, inDim, &beta, o, outputType, outDim, Cublas.Compute32F, Cublas.GemmDefault),
                    "cublasGemmEx");
            }

            for (var i = 0; i < 3; i++)
            {
                Gemm();
            }

            const int repeats = 20;
            var ms = CudaTimer.TimeMilliseconds(backend, () =>
            {
                for (var i = 0; i < repeats; i++)
                {
                    Gemm();
                }
            }) / repeats;
            return 2.0 * tokens * inDim * outDim / (ms * 1e-3) / 1e12;
        }
        finally
        {
            ctx.Synchronize();
            ctx.Free(w);
            ctx.Free(x);
            ctx.Free(o);
        }
    }
}
