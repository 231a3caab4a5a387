using System.Runtime.InteropServices;

namespace Enclave.Engine.Cuda.Native;

/// <summary>
/// The slice of the CUDA driver API (libcuda.so.1) the backend uses, bound through function pointers so a missing
/// library is a clear error rather than a DllNotFoundException at the first call. <see cref="Check"/> turns every
/// status other than CUDA_SUCCESS into a <see cref="CudaException"/> naming the call.
/// </summary>
internal sealed unsafe class CudaDriver
{
    public const int AttributeComputeCapabilityMajor = 75;
    public const int AttributeComputeCapabilityMinor = 76;
    public const int AttributeMultiprocessorCount = 16;

    /// <summary>CU_STREAM_CAPTURE_MODE_THREAD_LOCAL: only this thread is barred from unsafe calls while it captures.</summary>
    public const int CaptureModeThreadLocal = 1;

    private static readonly Lazy<(CudaDriver? Driver, string Error)> Shared = new(Open);

    private readonly delegate* unmanaged<int, byte**, int> _getErrorName;

    private CudaDriver(nint lib)
    {
        const string L = "libcuda.so.1";
        _getErrorName = (delegate* unmanaged<int, byte**, int>)NativeLibraries.Export(lib, L, "cuGetErrorName");
        Init = (delegate* unmanaged<uint, int>)NativeLibraries.Export(lib, L, "cuInit");
        DriverGetVersion = (delegate* unmanaged<int*, int>)NativeLibraries.Export(lib, L, "cuDriverGetVersion");
        DeviceGetCount = (delegate* unmanaged<int*, int>)NativeLibraries.Export(lib, L, "cuDeviceGetCount");
        DeviceGet = (delegate* unmanaged<int*, int, int>)NativeLibraries.Export(lib, L, "cuDeviceGet");
        DeviceGetName = (delegate* unmanaged<byte*, int, int, int>)NativeLibraries.Export(lib, L, "cuDeviceGetName");
        DeviceGetAttribute = (delegate* unmanaged<int*, int, int, int>)NativeLibraries.Export(lib, L, "cuDeviceGetAttribute");
        DeviceTotalMem = (delegate* unmanaged<nuint*, int, int>)NativeLibraries.Export(lib, L, "cuDeviceTotalMem_v2");
        PrimaryCtxRetain = (delegate* unmanaged<nint*, int, int>)NativeLibraries.Export(lib, L, "cuDevicePrimaryCtxRetain");
        PrimaryCtxRelease = (delegate* unmanaged<int, int>)NativeLibraries.Export(lib, L, "cuDevicePrimaryCtxRelease_v2");
        CtxSetCurrent = (delegate* unmanaged<nint, int>)NativeLibraries.Export(lib, L, "cuCtxSetCurrent");
        MemGetInfo = (delegate* unmanaged<nuint*, nuint*, int>)NativeLibraries.Export(lib, L, "cuMemGetInfo_v2");
        MemAlloc = (delegate* unmanaged<ulong*, nuint, int>)NativeLibraries.Export(lib, L, "cuMemAlloc_v2");
        MemFree = (delegate* unmanaged<ulong, int>)NativeLibraries.Export(lib, L, "cuMemFree_v2");
        MemcpyHtoD = (delegate* unmanaged<ulong, void*, nuint, int>)NativeLibraries.Export(lib, L, "cuMemcpyHtoD_v2");
        MemcpyHtoDAsync = (delegate* unmanaged<ulong, void*, nuint, nint, int>)NativeLibraries.Export(lib, L, "cuMemcpyHtoDAsync_v2");
        MemcpyDtoHAsync = (delegate* unmanaged<void*, ulong, nuint, nint, int>)NativeLibraries.Export(lib, L, "cuMemcpyDtoHAsync_v2");
        MemcpyDtoDAsync = (delegate* unmanaged<ulong, ulong, nuint, nint, int>)NativeLibraries.Export(lib, L, "cuMemcpyDtoDAsync_v2");
        MemsetD32Async = (delegate* unmanaged<ulong, uint, nuint, nint, int>)NativeLibraries.Export(lib, L, "cuMemsetD32Async");
        StreamCreate = (delegate* unmanaged<nint*, uint, int>)NativeLibraries.Export(lib, L, "cuStreamCreate");
        StreamDestroy = (delegate* unmanaged<nint, int>)NativeLibraries.Export(lib, L, "cuStreamDestroy_v2");
        StreamSynchronize = (delegate* unmanaged<nint, int>)NativeLibraries.Export(lib, L, "cuStreamSynchronize");
        ModuleLoadData = (delegate* unmanaged<nint*, void*, int>)NativeLibraries.Export(lib, L, "cuModuleLoadData");
        ModuleUnload = (delegate* unmanaged<nint, int>)NativeLibraries.Export(lib, L, "cuModuleUnload");
        ModuleGetFunction = (delegate* unmanaged<nint*, nint, byte*, int>)NativeLibraries.Export(lib, L, "cuModuleGetFunction");
        FuncSetAttribute = (delegate* unmanaged<nint, int, int, int>)NativeLibraries.Export(lib, L, "cuFuncSetAttribute");
        LaunchKernel = (delegate* unmanaged<nint, uint, uint, uint, uint, uint, uint, uint, nint, void**, void**, int>)NativeLibraries.Export(lib, L, "cuLaunchKernel");
        EventCreate = (delegate* unmanaged<nint*, uint, int>)NativeLibraries.Export(lib, L, "cuEventCreate");
        EventDestroy = (delegate* unmanaged<nint, int>)NativeLibraries.Export(lib, L, "cuEventDestroy_v2");
        EventRecord = (delegate* unmanaged<nint, nint, int>)NativeLibraries.Export(lib, L, "cuEventRecord");
        EventSynchronize = (delegate* unmanaged<nint, int>)NativeLibraries.Export(lib, L, "cuEventSynchronize");
        EventElapsedTime = (delegate* unmanaged<float*, nint, nint, int>)NativeLibraries.Export(lib, L, "cuEventElapsedTime");
        StreamBeginCapture = (delegate* unmanaged<nint, int, int>)NativeLibraries.TryExport(lib, "cuStreamBeginCapture_v2");
        StreamEndCapture = (delegate* unmanaged<nint, nint*, int>)NativeLibraries.TryExport(lib, "cuStreamEndCapture");
        GraphInstantiateWithFlags = (delegate* unmanaged<nint*, nint, ulong, int>)NativeLibraries.TryExport(lib, "cuGraphInstantiateWithFlags");
        GraphLaunch = (delegate* unmanaged<nint, nint, int>)NativeLibraries.TryExport(lib, "cuGraphLaunch");
        GraphExecDestroy = (delegate* unmanaged<nint, int>)NativeLibraries.TryExport(lib, "cuGraphExecDestroy");
        GraphDestroy = (delegate* unmanaged<nint, int>)NativeLibraries.TryExport(lib, "cuGraphDestroy");
        LaunchKernelEx = (delegate* unmanaged<LaunchConfig*, nint, void**, void**, int>)NativeLibraries.TryExport(lib, "cuLaunchKernelEx");
    }

    public delegate* unmanaged<uint, int> Init { get; }

    public delegate* unmanaged<int*, int> DriverGetVersion { get; }

    public delegate* unmanaged<int*, int> DeviceGetCount { get; }

    public delegate* unmanaged<int*, int, int> DeviceGet { get; }

    public delegate* unmanaged<byte*, int, int, int> DeviceGetName { get; }

    public delegate* unmanaged<int*, int, int, int> DeviceGetAttribute { get; }

    public delegate* unmanaged<nuint*, int, int> DeviceTotalMem { get; }

    public delegate* unmanaged<nint*, int, int> PrimaryCtxRetain { get; }

    public delegate* unmanaged<int, int> PrimaryCtxRelease { get; }

    public delegate* unmanaged<nint, int> CtxSetCurrent { get; }

    public delegate* unmanaged<nuint*, nuint*, int> MemGetInfo { get; }

    public delegate* unmanaged<ulong*, nuint, int> MemAlloc { get; }

    public delegate* unmanaged<ulong, int> MemFree { get; }

    public delegate* unmanaged<ulong, void*, nuint, int> MemcpyHtoD { get; }

    public delegate* unmanaged<ulong, void*, nuint, nint, int> MemcpyHtoDAsync { get; }

    public delegate* unmanaged<void*, ulong, nuint, nint, int> MemcpyDtoHAsync { get; }

    public delegate* unmanaged<ulong, ulong, nuint, nint, int> MemcpyDtoDAsync { get; }

    public delegate* unmanaged<ulong, uint, nuint, nint, int> MemsetD32Async { get; }

    public delegate* unmanaged<nint*, uint, int> StreamCreate { get; }

    public delegate* unmanaged<nint, int> StreamDestroy { get; }

    public delegate* unmanaged<nint, int> StreamSynchronize { get; }

    public delegate* unmanaged<nint*, void*, int> ModuleLoadData { get; }

    public delegate* unmanaged<nint, int> ModuleUnload { get; }

    public delegate* unmanaged<nint*, nint, byte*, int> ModuleGetFunction { get; }

    /// <summary>cuFuncSetAttribute(function, attribute, value).</summary>
    public delegate* unmanaged<nint, int, int, int> FuncSetAttribute { get; }

    /// <summary>CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES: the most dynamic shared memory a launch may ask for (48 KB unless raised).</summary>
    public const int FuncAttributeMaxDynamicSharedSizeBytes = 8;

    public delegate* unmanaged<nint, uint, uint, uint, uint, uint, uint, uint, nint, void**, void**, int> LaunchKernel { get; }

    public delegate* unmanaged<nint*, uint, int> EventCreate { get; }

    public delegate* unmanaged<nint, int> EventDestroy { get; }

    public delegate* unmanaged<nint, nint, int> EventRecord { get; }

    public delegate* unmanaged<nint, int> EventSynchronize { get; }

    public delegate* unmanaged<float*, nint, nint, int> EventElapsedTime { get; }

    /// <summary>Whether the driver has the graph entry points (they are optional: without them every step runs eagerly).</summary>
    public bool HasGraphs => StreamBeginCapture != null && StreamEndCapture != null && GraphInstantiateWithFlags != null
                             && GraphLaunch != null && GraphExecDestroy != null && GraphDestroy != null;

    /// <summary>cuStreamBeginCapture_v2(stream, mode): later work on the stream is recorded into a graph, not run.</summary>
    public delegate* unmanaged<nint, int, int> StreamBeginCapture { get; }

    /// <summary>cuStreamEndCapture(stream, &amp;graph): ends the recording and returns it (null when it was invalidated).</summary>
    public delegate* unmanaged<nint, nint*, int> StreamEndCapture { get; }

    /// <summary>cuGraphInstantiateWithFlags(&amp;exec, graph, flags).</summary>
    public delegate* unmanaged<nint*, nint, ulong, int> GraphInstantiateWithFlags { get; }

    /// <summary>cuGraphLaunch(exec, stream).</summary>
    public delegate* unmanaged<nint, nint, int> GraphLaunch { get; }

    public delegate* unmanaged<nint, int> GraphExecDestroy { get; }

    public delegate* unmanaged<nint, int> GraphDestroy { get; }

    /// <summary>cuLaunchKernelEx(&amp;config, function, params, extra) (CUDA 12.0+; null on older drivers).</summary>
    public delegate* unmanaged<LaunchConfig*, nint, void**, void**, int> LaunchKernelEx { get; }

    /// <summary>CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION.</summary>
    public const int LaunchAttributeProgrammaticStreamSerialization = 6;

    /// <summary>CUlaunchAttribute: an id, padding to 8 bytes, then a 64-byte value union.</summary>
    [StructLayout(LayoutKind.Explicit, Size = 72)]
    public struct LaunchAttribute
    {
        [FieldOffset(0)] public int Id;
        [FieldOffset(8)] public int Value;
    }

    /// <summary>CUlaunchConfig.</summary>
    [StructLayout(LayoutKind.Sequential)]
    public struct LaunchConfig
    {
        public uint GridX, GridY, GridZ, BlockX, BlockY, BlockZ, SharedBytes;
        public nint Stream;
        public LaunchAttribute* Attributes;
        public uint AttributeCount;
    }

    /// <summary>The process-wide driver binding, or null with the reason when libcuda.so.1 cannot be loaded or initialised.</summary>
    public static CudaDriver? TryGet(out string error)
    {
        var (driver, reason) = Shared.Value;
        error = reason;
        return driver;
    }

    public static CudaDriver Get() => TryGet(out var error) ?? throw new CudaUnavailableException(error);

    private static (CudaDriver?, string) Open()
    {
        if (!OperatingSystem.IsLinux())
        {
            return (null, "the CUDA backend runs on Linux only");
        }

        var lib = NativeLibraries.Load("the NVIDIA driver (libcuda.so.1)", ["libcuda.so.1", "libcuda.so"], out _, out var error);
        if (lib == 0)
        {
            return (null, error + "; is the NVIDIA driver installed?");
        }

        try
        {
            var driver = new CudaDriver(lib);
            var status = driver.Init(0);
            if (status != 0)
            {
                return (null, $"cuInit failed: {driver.ErrorName(status)} (no usable NVIDIA GPU or driver)");
            }

            return (driver, string.Empty);
        }
        catch (CudaUnavailableException e)
        {
            return (null, e.Message);
        }
    }

    public string ErrorName(int status)
    {
        byte* name = null;
        if (_getErrorName(status, &name) == 0 && name != null)
        {
            return Marshal.PtrToStringUTF8((nint)name) ?? status.ToString();
        }

        return "CUDA error " + status;
    }

    public void Check(int status, string call)
    {
        if (status != 0)
        {
            throw new CudaException($"{call} failed: {ErrorName(status)} ({status})");
        }
    }
}
