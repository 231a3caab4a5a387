namespace Enclave.Engine.Cuda;

/// <summary>
/// Device-side timing with CUDA events on the backend's stream, and the device-to-device copy bandwidth that the
/// decode roofline is measured against.
/// </summary>
public static unsafe class CudaTimer
{
    /// <summary>Milliseconds of device time the work queued by <paramref name="enqueue"/> took (events around it, then a wait).</summary>
    public static double TimeMilliseconds(CudaBackend backend, Action enqueue)
    {
        var ctx = backend.Context;
        ctx.Bind();
        var d = ctx.Driver;
        nint start, stop;
        d.Check(d.EventCreate(&start, 0), "cuEventCreate");
        d.Check(d.EventCreate(&stop, 0), "cuEventCreate");
        try
        {
            d.Check(d.EventRecord(start, ctx.Stream), "cuEventRecord");
            enqueue();
            d.Check(d.EventRecord(stop, ctx.Stream), "cuEventRecord");
            d.Check(d.EventSynchronize(stop), "cuEventSynchronize");
            float ms;
            d.Check(d.EventElapsedTime(&ms, start, stop), "cuEventElapsedTime");
            return ms;
        }
        finally
        {
            d.EventDestroy(start);
            d.EventDestroy(stop);
        }
    }

    /// <summary>
    /// Device-to-device copy bandwidth in GB/s, counting bytes read plus bytes written: the median of
    /// <paramref name="repeats"/> copies of <paramref name="bytes"/> after two warm-ups.
    /// </summary>
    public static double CopyBandwidthGBps(CudaBackend backend, long bytes = 1L << 30, int repeats = 10)
    {
        var ctx = backend.Context;
        var src = ctx.Alloc(bytes);
        var dst = ctx.Alloc(bytes);
        try
        {
            ctx.Driver.Check(ctx.Driver.MemsetD32Async(src, 0x3f800000, (nuint)(bytes / 4), ctx.Stream), "cuMemsetD32Async");
            var times = new List<double>();
            for (var i = 0; i < repeats + 2; i++)
            {
                var ms = TimeMilliseconds(backend, () => ctx.Driver.Check(ctx.Driver.MemcpyDtoDAsync(dst, src, (nuint)bytes, ctx.Stream), "cuMemcpyDtoDAsync"));
                if (i >= 2)
                {
                    times.Add(ms);
                }
            }

            times.Sort();
            return 2.0 * bytes / (times[times.Count / 2] * 1e-3) / 1e9;
        }
        finally
        {
            ctx.Free(src);
            ctx.Free(dst);
        }
    }
}
