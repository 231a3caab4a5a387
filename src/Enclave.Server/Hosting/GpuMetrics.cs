using System.Diagnostics.Metrics;
using System.Globalization;
using Enclave.Engine.Cuda.Monitoring;

namespace Enclave.Server.Hosting;

/// <summary>
/// Per-GPU gauges on the server's meter, read from an <see cref="IGpuSampleSource"/> (NVML in production). The
/// instruments are created only when the source sees at least one GPU, so a CPU-only host exports no
/// <c>enclave_gpu_*</c> series at all: an absent series cannot be mistaken for an idle, cool, empty GPU. Every
/// series carries <c>gpu</c> (NVML index), <c>uuid</c> and <c>gpu_name</c>.
/// </summary>
public sealed class GpuMetrics
{
    private static readonly TimeSpan SnapshotLifetime = TimeSpan.FromMilliseconds(500);

    private readonly IGpuSampleSource source;
    private readonly Lock gate = new();
    private IReadOnlyList<GpuSample> snapshot;
    private long snapshotTimestamp;

    private GpuMetrics(Meter meter, IGpuSampleSource source, IReadOnlyList<GpuSample> first)
    {
        this.source = source;
        snapshot = first;
        snapshotTimestamp = System.Diagnostics.Stopwatch.GetTimestamp();
        meter.CreateObservableGauge("enclave_gpu_utilization_ratio", () => Each(s => s.UtilizationRatio), description: "Share of the last sample period in which a kernel ran on the GPU (0-1).");
        meter.CreateObservableGauge("enclave_gpu_memory_bandwidth_utilization_ratio", () => Each(s => s.MemoryUtilizationRatio), description: "Share of the last sample period in which device memory was read or written (0-1).");
        meter.CreateObservableGauge("enclave_gpu_memory_used_bytes", () => Each(s => s.MemoryUsedBytes), description: "Device memory in use, by every process.");
        meter.CreateObservableGauge("enclave_gpu_memory_total_bytes", () => Each(s => s.MemoryTotalBytes), description: "Device memory installed.");
        meter.CreateObservableGauge("enclave_gpu_temperature_celsius", () => Each(s => s.TemperatureCelsius), description: "GPU core temperature.");
        meter.CreateObservableGauge("enclave_gpu_power_watts", () => Each(s => s.PowerWatts), description: "Power drawn by the board.");
        meter.CreateObservableCounter("enclave_gpu_ecc_errors_total", Ecc, description: "ECC memory errors since the driver loaded, by type (corrected, uncorrected); absent where ECC is off or unsupported.");
        meter.CreateObservableGauge("enclave_gpu_throttle_reason", Throttle, description: "1 while the clocks are held down for this reason, else 0.");
    }

    /// <summary>Registers the GPU instruments on <paramref name="meter"/> when <paramref name="source"/> sees a GPU; null otherwise.</summary>
    public static GpuMetrics? TryRegister(Meter meter, IGpuSampleSource? source)
    {
        if (source is null)
        {
            return null;
        }

        var first = source.Read();
        return first.Count == 0 ? null : new GpuMetrics(meter, source, first);
    }

    /// <summary>One NVML pass serves every instrument of a scrape.</summary>
    private IReadOnlyList<GpuSample> Current()
    {
        lock (gate)
        {
            if (System.Diagnostics.Stopwatch.GetElapsedTime(snapshotTimestamp) > SnapshotLifetime)
            {
                snapshot = source.Read();
                snapshotTimestamp = System.Diagnostics.Stopwatch.GetTimestamp();
            }

            return snapshot;
        }
    }

    private static KeyValuePair<string, object?>[] Labels(GpuSample s, params KeyValuePair<string, object?>[] extra) =>
    [
        new("gpu", s.Index.ToString(CultureInfo.InvariantCulture)),
        new("uuid", s.Uuid),
        new("gpu_name", s.Name),
        .. extra,
    ];

    private IEnumerable<Measurement<double>> Each<T>(Func<GpuSample, T?> read)
        where T : struct, IConvertible
    {
        foreach (var s in Current())
        {
            if (read(s) is { } value)
            {
                yield return new Measurement<double>(value.ToDouble(CultureInfo.InvariantCulture), Labels(s));
            }
        }
    }

    private IEnumerable<Measurement<long>> Ecc()
    {
        foreach (var s in Current())
        {
            if (s.EccCorrectedErrors is { } corrected)
            {
                yield return new Measurement<long>(corrected, Labels(s, new KeyValuePair<string, object?>("type", "corrected")));
            }

            if (s.EccUncorrectedErrors is { } uncorrected)
            {
                yield return new Measurement<long>(uncorrected, Labels(s, new KeyValuePair<string, object?>("type", "uncorrected")));
            }
        }
    }

    private IEnumerable<Measurement<int>> Throttle()
    {
        foreach (var s in Current())
        {
            if (s.ActiveThrottleReasons is not { } active)
            {
                continue;
            }

            foreach (var (_, reason) in NvmlGpuSampleSource.ThrottleReasons)
            {
                yield return new Measurement<int>(active.Contains(reason) ? 1 : 0, Labels(s, new KeyValuePair<string, object?>("reason", reason)));
            }
        }
    }
}
