namespace Enclave.Engine.Cuda.Monitoring;

/// <summary>
/// One reading of one GPU. A field is null when the device does not report it (ECC on consumer boards, power on
/// some virtual GPUs): such series are left out of /metrics rather than reported as zero.
/// </summary>
public sealed record GpuSample(
    int Index,
    string Uuid,
    string Name,
    double? UtilizationRatio,
    double? MemoryUtilizationRatio,
    long? MemoryUsedBytes,
    long? MemoryTotalBytes,
    double? TemperatureCelsius,
    double? PowerWatts,
    long? EccCorrectedErrors,
    long? EccUncorrectedErrors,
    IReadOnlyList<string>? ActiveThrottleReasons);

/// <summary>Reads every GPU of the host. Implemented over NVML; tests give their own readings.</summary>
public interface IGpuSampleSource
{
    /// <summary>One sample per GPU; empty on a host without NVIDIA GPUs.</summary>
    IReadOnlyList<GpuSample> Read();
}
