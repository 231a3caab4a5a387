using System.Runtime.InteropServices;

namespace Enclave.Engine.Cuda.Native;

/// <summary>
/// The slice of NVML (libnvidia-ml.so.1, shipped with the driver) that GPU monitoring reads, bound through function
/// pointers like <see cref="CudaDriver"/> so a host without the driver gets a reason instead of a
/// DllNotFoundException. NVML needs no CUDA context, so reading it never competes with the engine for the device.
/// </summary>
internal sealed unsafe class Nvml
{
    public const int Success = 0;
    public const int ErrorNotSupported = 3;
    public const int TemperatureGpu = 0;
    public const int MemoryErrorCorrected = 0;
    public const int MemoryErrorUncorrected = 1;
    public const int AggregateEcc = 1;

    private static readonly Lazy<(Nvml? Nvml, string Error)> Shared = new(Open);

    private Nvml(nint lib)
    {
        const string L = "libnvidia-ml.so.1";
        Init = (delegate* unmanaged<int>)NativeLibraries.Export(lib, L, "nvmlInit_v2");
        ErrorStringFunction = (delegate* unmanaged<int, byte*>)NativeLibraries.Export(lib, L, "nvmlErrorString");
        DeviceGetCount = (delegate* unmanaged<uint*, int>)NativeLibraries.Export(lib, L, "nvmlDeviceGetCount_v2");
        DeviceGetHandleByIndex = (delegate* unmanaged<uint, nint*, int>)NativeLibraries.Export(lib, L, "nvmlDeviceGetHandleByIndex_v2");
        DeviceGetName = (delegate* unmanaged<nint, byte*, uint, int>)NativeLibraries.Export(lib, L, "nvmlDeviceGetName");
        DeviceGetUuid = (delegate* unmanaged<nint, byte*, uint, int>)NativeLibraries.Export(lib, L, "nvmlDeviceGetUUID");
        DeviceGetUtilizationRates = (delegate* unmanaged<nint, Utilization*, int>)NativeLibraries.Export(lib, L, "nvmlDeviceGetUtilizationRates");
        DeviceGetMemoryInfo = (delegate* unmanaged<nint, Memory*, int>)NativeLibraries.Export(lib, L, "nvmlDeviceGetMemoryInfo");
        // The v2 call (R510+) reports the driver's reserved memory apart from "used", as nvidia-smi does.
        DeviceGetMemoryInfoV2 = NativeLibrary.TryGetExport(lib, "nvmlDeviceGetMemoryInfo_v2", out var memoryV2) ? (delegate* unmanaged<nint, MemoryV2*, int>)memoryV2 : null;
        DeviceGetTemperature = (delegate* unmanaged<nint, int, uint*, int>)NativeLibraries.Export(lib, L, "nvmlDeviceGetTemperature");
        DeviceGetPowerUsage = (delegate* unmanaged<nint, uint*, int>)NativeLibraries.Export(lib, L, "nvmlDeviceGetPowerUsage");
        DeviceGetTotalEccErrors = (delegate* unmanaged<nint, int, int, ulong*, int>)NativeLibraries.Export(lib, L, "nvmlDeviceGetTotalEccErrors");
        // Drivers from R535 name it "clocks event reasons"; older ones only export the throttle-reasons spelling.
        DeviceGetClockEventReasons = NativeLibrary.TryGetExport(lib, "nvmlDeviceGetCurrentClocksEventReasons", out var events)
            ? (delegate* unmanaged<nint, ulong*, int>)events
            : (delegate* unmanaged<nint, ulong*, int>)NativeLibraries.Export(lib, L, "nvmlDeviceGetCurrentClocksThrottleReasons");
    }

    [StructLayout(LayoutKind.Sequential)]
    public struct Utilization
    {
        public uint Gpu;
        public uint Memory;
    }

    [StructLayout(LayoutKind.Sequential)]
    public struct Memory
    {
        public ulong Total;
        public ulong Free;
        public ulong Used;
    }

    [StructLayout(LayoutKind.Sequential)]
    public struct MemoryV2
    {
        /// <summary>nvmlMemory_v2: sizeof(nvmlMemory_v2_t) | 2 &lt;&lt; 24.</summary>
        public const uint StructVersion = 40u | (2u << 24);

        public uint Version;
        public ulong Total;
        public ulong Reserved;
        public ulong Free;
        public ulong Used;
    }

    public delegate* unmanaged<int> Init { get; }

    private delegate* unmanaged<int, byte*> ErrorStringFunction { get; }

    public delegate* unmanaged<uint*, int> DeviceGetCount { get; }

    public delegate* unmanaged<uint, nint*, int> DeviceGetHandleByIndex { get; }

    public delegate* unmanaged<nint, byte*, uint, int> DeviceGetName { get; }

    public delegate* unmanaged<nint, byte*, uint, int> DeviceGetUuid { get; }

    public delegate* unmanaged<nint, Utilization*, int> DeviceGetUtilizationRates { get; }

    public delegate* unmanaged<nint, Memory*, int> DeviceGetMemoryInfo { get; }

    /// <summary>Null on drivers older than R510.</summary>
    public delegate* unmanaged<nint, MemoryV2*, int> DeviceGetMemoryInfoV2 { get; }

    public delegate* unmanaged<nint, int, uint*, int> DeviceGetTemperature { get; }

    public delegate* unmanaged<nint, uint*, int> DeviceGetPowerUsage { get; }

    public delegate* unmanaged<nint, int, int, ulong*, int> DeviceGetTotalEccErrors { get; }

    public delegate* unmanaged<nint, ulong*, int> DeviceGetClockEventReasons { get; }

    /// <summary>The process-wide, initialised NVML binding, or null with the reason (no driver, no GPU, not Linux).</summary>
    public static Nvml? TryGet(out string error)
    {
        var (nvml, reason) = Shared.Value;
        error = reason;
        return nvml;
    }

    public string ErrorString(int status)
    {
        var text = ErrorStringFunction(status);
        return text == null ? "NVML error " + status : Marshal.PtrToStringUTF8((nint)text) ?? "NVML error " + status;
    }

    private static (Nvml?, string) Open()
    {
        if (!OperatingSystem.IsLinux())
        {
            return (null, "NVML is read on Linux only");
        }

        var lib = NativeLibraries.Load("NVML (libnvidia-ml.so.1)", ["libnvidia-ml.so.1", "libnvidia-ml.so"], out _, out var error);
        if (lib == 0)
        {
            return (null, error + "; is the NVIDIA driver installed?");
        }

        try
        {
            var nvml = new Nvml(lib);
            var status = nvml.Init();
            return status == Success ? (nvml, string.Empty) : (null, $"nvmlInit failed: {nvml.ErrorString(status)}");
        }
        catch (CudaUnavailableException e)
        {
            return (null, e.Message);
        }
    }
}
