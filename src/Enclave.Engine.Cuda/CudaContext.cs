using System.Text;
using Enclave.Engine.Cuda.Native;

namespace Enclave.Engine.Cuda;

/// <summary>
/// One device's primary context, the stream all work is queued on, the cuBLAS handle and the loaded kernel modules.
/// Every entry point makes the context current on the calling thread first (a cheap check when it already is).
/// </summary>
internal sealed unsafe class CudaContext : IDisposable
{
    /// <summary>The dynamic shared memory a function may use without <see cref="AllowDynamicShared"/>.</summary>
    private const uint DefaultDynamicSharedBytes = 48 * 1024;

    [ThreadStatic]
    private static nint t_current;

    private readonly Dictionary<string, nint> _modules = new(StringComparer.Ordinal);
    // Keyed by (source, kernel name) without joining them: every kernel launch looks its function up here.
    private readonly Dictionary<(string Source, string Name), nint> _functions = [];
    private readonly Dictionary<nint, uint> _dynamicShared = [];
    private readonly int _device;
    private nint _context;
    private nint _stream;
    private nint _cublasHandle;

    public CudaContext(int ordinal, string? cacheDirectory = null, bool programmaticLaunch = true)
    {
        Probe = CudaDevice.Probe(ordinal);
        if (!Probe.Usable)
        {
            throw new CudaUnavailableException($"cuda:{ordinal} is not usable: {Probe.Reason}");
        }

        Driver = CudaDriver.Get();
        Nvrtc = Nvrtc.Get();
        Cublas = Cublas.Get();
        int device;
        Driver.Check(Driver.DeviceGet(&device, ordinal), "cuDeviceGet");
        _device = device;
        nint context;
        Driver.Check(Driver.PrimaryCtxRetain(&context, device), "cuDevicePrimaryCtxRetain");
        _context = context;
        Bind();
        nint stream;
        Driver.Check(Driver.StreamCreate(&stream, 1), "cuStreamCreate"); // CU_STREAM_NON_BLOCKING
        _stream = stream;
        nint handle;
        Cublas.Check(Cublas.Create(&handle), "cublasCreate");
        _cublasHandle = handle;
        Cublas.Check(Cublas.SetStream(handle, stream), "cublasSetStream");
        int sms;
        Driver.Check(Driver.DeviceGetAttribute(&sms, CudaDriver.AttributeMultiprocessorCount, device), "cuDeviceGetAttribute(multiprocessors)");
        MultiprocessorCount = sms;
        Kernels = new KernelCache(Nvrtc, Probe.ComputeMajor, Probe.ComputeMinor, cacheDirectory);
        ProgrammaticLaunch = programmaticLaunch && Probe.ComputeMajor >= 9 && Driver.LaunchKernelEx != null;
    }

    /// <summary>
    /// Whether kernels are launched with programmatic stream serialisation (Hopper and later, CUDA 12+): the next
    /// kernel on the stream may start while the previous one finishes, and waits in griddepcontrol.wait before it
    /// touches anything the previous one wrote (every kernel source does so; see common.cuh).
    /// </summary>
    public bool ProgrammaticLaunch { get; }

    public CudaProbe Probe { get; }

    public CudaDriver Driver { get; }

    public Nvrtc Nvrtc { get; }

    public Cublas Cublas { get; }

    public KernelCache Kernels { get; }

    public int MultiprocessorCount { get; }

    public nint Stream => _stream;

    public nint CublasHandle => _cublasHandle;

    /// <summary>Device frees so far: a recorded graph is only valid while no buffer it reads or writes was freed.</summary>
    public long FreeCount { get; private set; }

    /// <summary>Device allocations so far.</summary>
    public long AllocCount { get; private set; }

    /// <summary>
    /// Set while the stream is being recorded into a graph: allocating, freeing or waiting for the stream then would
    /// invalidate the recording (or record a dangling address), so those calls throw instead.
    /// </summary>
    public string? CapturingFor { get; set; }

    private void RequireNotCapturing(string call)
    {
        if (CapturingFor is not null)
        {
            throw new InvalidOperationException(
                $"{call} while {CapturingFor} is being recorded as a CUDA graph: a recorded step must not allocate, free or wait for the device (run with --enforce-eager, and report the model)");
        }
    }

    public void Bind()
    {
        ObjectDisposedException.ThrowIf(_context == 0, this);
        if (t_current != _context)
        {
            Driver.Check(Driver.CtxSetCurrent(_context), "cuCtxSetCurrent");
            t_current = _context;
        }
    }

    public ulong Alloc(long bytes)
    {
        Bind();
        RequireNotCapturing("cuMemAlloc");
        AllocCount++;
        ulong pointer;
        var status = Driver.MemAlloc(&pointer, (nuint)Math.Max(bytes, 16));
        if (status != 0)
        {
            nuint free, total;
            Driver.MemGetInfo(&free, &total);
            throw new CudaException($"cuMemAlloc({bytes} bytes) failed: {Driver.ErrorName(status)} ({free / 1048576} MiB of {total / 1048576} MiB free)");
        }

        return pointer;
    }

    public void Free(ulong pointer)
    {
        if (_context == 0)
        {
            return; // the context is gone and took its memory with it
        }

        Bind();
        RequireNotCapturing("cuMemFree");
        FreeCount++;
        Driver.Check(Driver.MemFree(pointer), "cuMemFree");
    }

    public void Synchronize()
    {
        Bind();
        RequireNotCapturing("cuStreamSynchronize");
        Driver.Check(Driver.StreamSynchronize(_stream), "cuStreamSynchronize");
    }

    /// <summary>The kernel <paramref name="name"/> from source file <paramref name="source"/>, compiled and loaded on first use.</summary>
    public nint Function(string source, string name)
    {
        var key = (source, name);
        if (_functions.TryGetValue(key, out var function))
        {
            return function;
        }

        Bind();
        if (!_modules.TryGetValue(source, out var module))
        {
            var cubin = Kernels.GetCubin(source);
            fixed (byte* p = cubin)
            {
                Driver.Check(Driver.ModuleLoadData(&module, p), $"cuModuleLoadData({source})");
            }

            _modules[source] = module;
        }

        var bytes = Encoding.ASCII.GetBytes(name + "\0");
        fixed (byte* n = bytes)
        {
            Driver.Check(Driver.ModuleGetFunction(&function, module, n), $"cuModuleGetFunction({name})");
        }

        _functions[key] = function;
        return function;
    }

    /// <summary>
    /// Lets launches of <paramref name="function"/> ask for up to <paramref name="bytes"/> of dynamic shared memory (past
    /// the 48 KB a function gets by default); once per function and size.
    /// </summary>
    public void AllowDynamicShared(nint function, uint bytes)
    {
        if (bytes <= DefaultDynamicSharedBytes || _dynamicShared.TryGetValue(function, out var allowed) && allowed >= bytes)
        {
            return;
        }

        Bind();
        Driver.Check(Driver.FuncSetAttribute(function, CudaDriver.FuncAttributeMaxDynamicSharedSizeBytes, (int)bytes), "cuFuncSetAttribute");
        _dynamicShared[function] = bytes;
    }

    public void Launch(nint function, string name, uint gridX, uint gridY, uint blockX, void** args, uint sharedBytes = 0, uint gridZ = 1)
    {
        if (gridX == 0 || gridY == 0 || gridZ == 0)
        {
            return;
        }

        if (!ProgrammaticLaunch)
        {
            Driver.Check(Driver.LaunchKernel(function, gridX, gridY, gridZ, blockX, 1, 1, sharedBytes, _stream, args, null), "cuLaunchKernel(" + name + ")");
            return;
        }

        var attribute = new CudaDriver.LaunchAttribute { Id = CudaDriver.LaunchAttributeProgrammaticStreamSerialization, Value = 1 };
        var config = new CudaDriver.LaunchConfig
        {
            GridX = gridX, GridY = gridY, GridZ = gridZ, BlockX = blockX, BlockY = 1, BlockZ = 1,
            SharedBytes = sharedBytes, Stream = _stream, Attributes = &attribute, AttributeCount = 1,
        };
        Driver.Check(Driver.LaunchKernelEx(&config, function, args, null), "cuLaunchKernelEx(" + name + ")");
    }

    public void Dispose()
    {
        if (_context == 0)
        {
            return;
        }

        Bind();
        Driver.StreamSynchronize(_stream);
        foreach (var module in _modules.Values)
        {
            Driver.ModuleUnload(module);
        }

        _modules.Clear();
        _functions.Clear();
        if (_cublasHandle != 0)
        {
            Cublas.Destroy(_cublasHandle);
            _cublasHandle = 0;
        }

        if (_stream != 0)
        {
            Driver.StreamDestroy(_stream);
            _stream = 0;
        }

        Driver.PrimaryCtxRelease(_device);
        t_current = 0;
        _context = 0;
    }
}
