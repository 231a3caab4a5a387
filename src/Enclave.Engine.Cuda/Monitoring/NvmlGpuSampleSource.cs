using System.Runtime.InteropServices;
using Enclave.Engine.Cuda.Native;

namespace Enclave.Engine.Cuda.Monitoring;

/// <summary>
/// GPU readings from NVML: utilisation, memory, temperature, power, ECC error counts and the reasons the clocks are
/// held down. <see cref="TryCreate"/> returns null, with the reason, on hosts without the NVIDIA driver or a GPU,
/// so a CPU-only server exports no GPU series at all.
/// </summary>
public sealed unsafe class NvmlGpuSampleSource : IGpuSampleSource
{
    /// <summary>
    /// The clock event reason bits of nvml.h (nvmlClocksEventReason*), named as they appear in the
    /// <c>reason</c> label. Idle is left out: an idle GPU at low clocks is not a problem to alert on.
    /// </summary>
    public static readonly IReadOnlyList<(ulong Bit, string Name)> ThrottleReasons =
    [
        (0x2, "applications_clocks_setting"),
        (0x4, "sw_power_cap"),
        (0x8, "hw_slowdown"),
        (0x10, "sync_boost"),
        (0x20, "sw_thermal_slowdown"),
        (0x40, "hw_thermal_slowdown"),
        (0x80, "hw_power_brake_slowdown"),
        (0x100, "display_clock_setting"),
    ];

    private readonly Nvml nvml;
    private readonly (nint Handle, string Uuid, string Name)[] devices;

    private NvmlGpuSampleSource(Nvml nvml, (nint, string, string)[] devices)
    {
        this.nvml = nvml;
        this.devices = devices;
    }

    /// <summary>The GPUs NVML sees, in NVML's index order.</summary>
    public int DeviceCount => devices.Length;

    /// <summary>An NVML reader over every GPU, or null with the reason when there is none to read.</summary>
    public static NvmlGpuSampleSource? TryCreate(out string reason)
    {
        var nvml = Nvml.TryGet(out reason);
        if (nvml is null)
        {
            return null;
        }

        uint count;
        var status = nvml.DeviceGetCount(&count);
        if (status != Nvml.Success)
        {
            reason = $"nvmlDeviceGetCount failed: {nvml.ErrorString(status)}";
            return null;
        }

        if (count == 0)
        {
            reason = "NVML reports no GPU";
            return null;
        }

        var devices = new (nint, string, string)[count];
        var text = stackalloc byte[96];
        for (uint i = 0; i < count; i++)
        {
            nint handle;
            status = nvml.DeviceGetHandleByIndex(i, &handle);
            if (status != Nvml.Success)
            {
                reason = $"nvmlDeviceGetHandleByIndex({i}) failed: {nvml.ErrorString(status)}";
                return null;
            }

            var uuid = nvml.DeviceGetUuid(handle, text, 96) == Nvml.Success ? Marshal.PtrToStringUTF8((nint)text) ?? string.Empty : string.Empty;
            var name = nvml.DeviceGetName(handle, text, 96) == Nvml.Success ? Marshal.PtrToStringUTF8((nint)text) ?? string.Empty : string.Empty;
            devices[i] = (handle, uuid, name);
        }

        reason = string.Empty;
        return new NvmlGpuSampleSource(nvml, devices);
    }

    public IReadOnlyList<GpuSample> Read()
    {
        var samples = new GpuSample[devices.Length];
        for (var i = 0; i < devices.Length; i++)
        {
            var (handle, uuid, name) = devices[i];
            Nvml.Utilization utilization;
            var haveUtilization = nvml.DeviceGetUtilizationRates(handle, &utilization) == Nvml.Success;
            var (haveMemory, memoryUsed, memoryTotal) = Memory(handle);
            uint temperature;
            var haveTemperature = nvml.DeviceGetTemperature(handle, Nvml.TemperatureGpu, &temperature) == Nvml.Success;
            uint milliwatts;
            var havePower = nvml.DeviceGetPowerUsage(handle, &milliwatts) == Nvml.Success;
            ulong corrected, uncorrected;
            var haveCorrected = nvml.DeviceGetTotalEccErrors(handle, Nvml.MemoryErrorCorrected, Nvml.AggregateEcc, &corrected) == Nvml.Success;
            var haveUncorrected = nvml.DeviceGetTotalEccErrors(handle, Nvml.MemoryErrorUncorrected, Nvml.AggregateEcc, &uncorrected) == Nvml.Success;
            ulong reasons;
            List<string>? active = null;
            if (nvml.DeviceGetClockEventReasons(handle, &reasons) == Nvml.Success)
            {
                active = [];
                foreach (var (bit, reasonName) in ThrottleReasons)
                {
                    if ((reasons & bit) != 0)
                    {
                        active.Add(reasonName);
                    }
                }
            }

            samples[i] = new GpuSample(
                i, uuid, name,
                haveUtilization ? utilization.Gpu / 100.0 : null,
                haveUtilization ? utilization.Memory / 100.0 : null,
                haveMemory ? memoryUsed : null,
                haveMemory ? memoryTotal : null,
                haveTemperature ? temperature : null,
                havePower ? milliwatts / 1000.0 : null,
                haveCorrected ? (long)corrected : null,
                haveUncorrected ? (long)uncorrected : null,
                active);
        }

        return samples;
    }

    /// <summary>Used and total device memory; used excludes what the driver reserves where the driver says so.</summary>
    private (bool Have, long Used, long Total) Memory(nint handle)
    {
        if (nvml.DeviceGetMemoryInfoV2 != null)
        {
            var v2 = new Nvml.MemoryV2 { Version = Nvml.MemoryV2.StructVersion };
            if (nvml.DeviceGetMemoryInfoV2(handle, &v2) == Nvml.Success)
            {
                return (true, (long)v2.Used, (long)v2.Total);
            }
        }

        Nvml.Memory v1;
        return nvml.DeviceGetMemoryInfo(handle, &v1) == Nvml.Success ? (true, (long)v1.Used, (long)v1.Total) : (false, 0, 0);
    }
}
