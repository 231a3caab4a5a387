using System.Runtime.CompilerServices;
using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace Enclave.Engine.Backends.Cpu;

/// <summary>
/// Sustained memory read bandwidth of this machine: every thread sums its share of a 64 MB segment of a buffer
/// much larger than the caches, segment after segment, and the fastest segment counts. Timing segments of the
/// size of a model layer's weights, rather than one long pass, keeps the figure comparable with a decode step's
/// matmuls on a machine shared with other work. It is the roofline a memory-bound decode step (one pass over the
/// weights per token) is measured against.
/// </summary>
public static class MemoryBandwidth
{
    private const long SegmentBytes = 64L << 20;

    /// <param name="threads">Reading threads; 0 uses every logical processor.</param>
    /// <param name="bufferBytes">Buffer size; should dwarf the last-level cache.</param>
    /// <param name="passes">Timed passes over the whole buffer; the fastest segment of any pass counts.</param>
    /// <returns>Gigabytes (10⁹ bytes) read per second.</returns>
    public static unsafe double MeasureGBps(int threads = 0, long bufferBytes = 512L << 20, int passes = 5)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(bufferBytes, 1L << 20);
        ArgumentOutOfRangeException.ThrowIfLessThan(passes, 1);
        var floats = bufferBytes / sizeof(float) / 256 * 256;
        var data = (float*)NativeMemory.AlignedAlloc((nuint)(floats * sizeof(float)), 64);
        try
        {
            // Touch every page so the timed passes read memory, not page faults.
            for (long i = 0; i < floats; i += 1L << 28)
            {
                var n = (int)Math.Min(1L << 28, floats - i);
                new Span<float>(data + i, n).Fill(1f);
            }

            using var pool = new CpuWorkerPool(threads == 0 ? Environment.ProcessorCount : threads);
            var segmentFloats = Math.Min(floats, SegmentBytes / sizeof(float));
            var segments = floats / segmentFloats;
            var job = new SumJob { Count = segmentFloats, Chunks = pool.ThreadCount * 16 };
            var best = double.MaxValue;
            for (var p = -1; p < passes; p++)
            {
                for (var s = 0; s < segments; s++)
                {
                    job.Data = data + (s * segmentFloats);
                    var start = Stopwatch.GetTimestamp();
                    pool.Run(job, job.Chunks);
                    var elapsed = Stopwatch.GetElapsedTime(start).TotalSeconds;

                    // The first pass only warms the code and the threads up.
                    best = p < 0 ? best : Math.Min(best, elapsed);
                }
            }

            return segmentFloats * sizeof(float) / best / 1e9;
        }
        finally
        {
            NativeMemory.AlignedFree(data);
        }
    }

    private sealed unsafe class SumJob : CpuJob
    {
        public float* Data;
        public long Count;
        public int Chunks;
        public float Sink;

        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        public override void Execute(int index, int worker)
        {
            var per = Count / Chunks / 64 * 64;
            var start = index * per;
            var end = index == Chunks - 1 ? Count : start + per;
            var sum = Vector512.IsHardwareAccelerated ? Sum512(Data + start, end - start) : Sum256(Data + start, end - start);
            Sink += sum;
        }

        [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveOptimization)]
        private static float Sum512(float* p, long n)
        {
            Vector512<float> a = default, b = default, c = default, d = default;
            long i = 0;
            for (; i + 64 <= n; i += 64)
            {
                a += Vector512.LoadAligned(p + i);
                b += Vector512.LoadAligned(p + i + 16);
                c += Vector512.LoadAligned(p + i + 32);
                d += Vector512.LoadAligned(p + i + 48);
            }

            return Vector512.Sum(a + b + c + d);
        }

        [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveOptimization)]
        private static float Sum256(float* p, long n)
        {
            Vector256<float> a = default, b = default, c = default, d = default;
            long i = 0;
            for (; i + 32 <= n; i += 32)
            {
                a += Vector256.Load(p + i);
                b += Vector256.Load(p + i + 8);
                c += Vector256.Load(p + i + 16);
                d += Vector256.Load(p + i + 24);
            }

            return Vector256.Sum(a + b + c + d);
        }
    }
}
