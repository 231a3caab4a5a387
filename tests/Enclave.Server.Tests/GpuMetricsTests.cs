using System.Globalization;
using Enclave.Engine.Cuda.Monitoring;
using Enclave.Server.Tests.Support;

namespace Enclave.Server.Tests;

/// <summary>GPU series on /metrics: their names, labels and values from given readings, and their absence without a GPU.</summary>
public sealed class GpuMetricsTests
{
    private sealed class GivenReadings(params GpuSample[] samples) : IGpuSampleSource
    {
        public IReadOnlyList<GpuSample> Read() => samples;
    }

    private static readonly GpuSample H100 = new(
        0, "GPU-4f2c1b3e-0000-1111-2222-333344445555", "NVIDIA H100 80GB HBM3",
        UtilizationRatio: 0.87, MemoryUtilizationRatio: 0.42, MemoryUsedBytes: 76_000_000_000, MemoryTotalBytes: 85_520_809_984,
        TemperatureCelsius: 71, PowerWatts: 612.5, EccCorrectedErrors: 3, EccUncorrectedErrors: 0,
        ActiveThrottleReasons: ["sw_power_cap"]);

    // A consumer board: no ECC, and a driver that reports neither power nor throttle reasons.
    private static readonly GpuSample Rtx4090 = new(
        1, "GPU-aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee", "NVIDIA GeForce RTX 4090",
        UtilizationRatio: 0, MemoryUtilizationRatio: 0, MemoryUsedBytes: 512L << 20, MemoryTotalBytes: 24L << 30,
        TemperatureCelsius: 38, PowerWatts: null, EccCorrectedErrors: null, EccUncorrectedErrors: null, ActiveThrottleReasons: null);

    // Label names in sorted order, as the exporter writes them.
    private static string Labels(GpuSample s, string? extra = null) =>
        $"{{gpu=\"{s.Index}\",gpu_name=\"{s.Name}\",{(extra is null ? string.Empty : extra + ",")}uuid=\"{s.Uuid}\"}}";

    [Fact]
    public async Task EachGpuReadingIsExportedUnderItsNameAndLabels()
    {
        var readings = new GivenReadings(H100, Rtx4090);
        await using var server = await TestServer.StartAsync(o => o.GpuSamples = () => readings);

        var lines = (await server.Http.GetStringAsync("metrics")).Split('\n');

        string Value(string series) => Assert.Single(lines, l => l.StartsWith(series + " ", StringComparison.Ordinal))[(series.Length + 1)..];
        Assert.Equal("0.87", Value("enclave_gpu_utilization_ratio" + Labels(H100)));
        Assert.Equal("0.42", Value("enclave_gpu_memory_bandwidth_utilization_ratio" + Labels(H100)));
        Assert.Equal("76000000000", Value("enclave_gpu_memory_used_bytes" + Labels(H100)));
        Assert.Equal("85520809984", Value("enclave_gpu_memory_total_bytes" + Labels(H100)));
        Assert.Equal("71", Value("enclave_gpu_temperature_celsius" + Labels(H100)));
        Assert.Equal("612.5", Value("enclave_gpu_power_watts" + Labels(H100)));
        Assert.Equal("3", Value("enclave_gpu_ecc_errors_total" + Labels(H100, "type=\"corrected\"")));
        Assert.Equal("0", Value("enclave_gpu_ecc_errors_total" + Labels(H100, "type=\"uncorrected\"")));
        Assert.Equal("1", Value("enclave_gpu_throttle_reason" + Labels(H100, "reason=\"sw_power_cap\"")));
        Assert.Equal("0", Value("enclave_gpu_throttle_reason" + Labels(H100, "reason=\"hw_thermal_slowdown\"")));
        Assert.Contains("# TYPE enclave_gpu_ecc_errors_total counter", lines);
        Assert.Contains("# TYPE enclave_gpu_memory_used_bytes gauge", lines);

        // The second board reports what it has; what it lacks is absent, not zero.
        Assert.Equal((24L << 30).ToString(CultureInfo.InvariantCulture), Value("enclave_gpu_memory_total_bytes" + Labels(Rtx4090)));
        Assert.Equal("38", Value("enclave_gpu_temperature_celsius" + Labels(Rtx4090)));
        Assert.DoesNotContain(lines, l => l.StartsWith("enclave_gpu_power_watts{", StringComparison.Ordinal) && l.Contains(Rtx4090.Uuid, StringComparison.Ordinal));
        Assert.DoesNotContain(lines, l => l.StartsWith("enclave_gpu_ecc_errors_total{", StringComparison.Ordinal) && l.Contains(Rtx4090.Uuid, StringComparison.Ordinal));
        Assert.DoesNotContain(lines, l => l.StartsWith("enclave_gpu_throttle_reason{", StringComparison.Ordinal) && l.Contains(Rtx4090.Uuid, StringComparison.Ordinal));
        Assert.Equal(8, lines.Count(l => l.StartsWith("enclave_gpu_throttle_reason{", StringComparison.Ordinal)));
    }

    [Fact]
    public async Task AHostWithoutGpusExportsNoGpuSeriesAtAll()
    {
        await using var none = await TestServer.StartAsync(o => o.GpuSamples = () => new GivenReadings());
        var text = await none.Http.GetStringAsync("metrics");
        Assert.DoesNotContain("enclave_gpu_", text, StringComparison.Ordinal);
        Assert.Contains("vllm:num_requests_running{", text, StringComparison.Ordinal); // the rest is still there

        await using var noSource = await TestServer.StartAsync(o => o.GpuSamples = () => null);
        Assert.DoesNotContain("enclave_gpu_", await noSource.Http.GetStringAsync("metrics"), StringComparison.Ordinal);
    }

    [Fact]
    public async Task TheDefaultNvmlProbeExportsGpuSeriesExactlyWhenTheHostHasAGpu()
    {
        var nvml = NvmlGpuSampleSource.TryCreate(out var reason);
        await using var server = await TestServer.StartAsync();
        var text = await server.Http.GetStringAsync("metrics");
        if (nvml is null)
        {
            Assert.False(string.IsNullOrEmpty(reason));
            Assert.DoesNotContain("enclave_gpu_", text, StringComparison.Ordinal);
        }
        else
        {
            Assert.Contains("enclave_gpu_memory_total_bytes{gpu=\"0\"", text, StringComparison.Ordinal);
        }
    }

    [Fact]
    public void NvmlReadingsArePlausibleWhereAGpuExists()
    {
        var nvml = NvmlGpuSampleSource.TryCreate(out var reason);
        if (nvml is null)
        {
            // CPU-only host: the reason names what is missing (library, driver or device).
            Assert.Matches("NVML|nvml|GPU|Linux", reason);
            return;
        }

        var samples = nvml.Read();
        Assert.Equal(nvml.DeviceCount, samples.Count);
        foreach (var s in samples)
        {
            Assert.StartsWith("GPU-", s.Uuid, StringComparison.Ordinal);
            Assert.True(s.MemoryTotalBytes > 1L << 30, $"GPU {s.Index}: {s.MemoryTotalBytes} bytes total");
            Assert.InRange(s.MemoryUsedBytes!.Value, 0, s.MemoryTotalBytes!.Value);
            Assert.InRange(s.UtilizationRatio!.Value, 0, 1);
            Assert.InRange(s.TemperatureCelsius!.Value, 1, 120);
        }
    }
}
