using System.Runtime.InteropServices;
using System.Text;

namespace Enclave.Engine.Cuda.Native;

/// <summary>NVRTC (libnvrtc.so.13 or .12): compiles the embedded CUDA C kernels to a cubin for the device at run time.</summary>
internal sealed unsafe class Nvrtc
{
    private static readonly Lazy<(Nvrtc? Nvrtc, string Error)> Shared = new(Open);

    private readonly delegate* unmanaged<int, byte*> _getErrorString;
    private readonly delegate* unmanaged<int*, int*, int> _version;
    private readonly delegate* unmanaged<nint*, byte*, byte*, int, byte**, byte**, int> _createProgram;
    private readonly delegate* unmanaged<nint, int, byte**, int> _compileProgram;
    private readonly delegate* unmanaged<nint*, int> _destroyProgram;
    private readonly delegate* unmanaged<nint, nuint*, int> _getProgramLogSize;
    private readonly delegate* unmanaged<nint, byte*, int> _getProgramLog;
    private readonly delegate* unmanaged<nint, nuint*, int> _getCubinSize;
    private readonly delegate* unmanaged<nint, byte*, int> _getCubin;

    private Nvrtc(nint lib, string name)
    {
        LibraryName = name;
        _getErrorString = (delegate* unmanaged<int, byte*>)NativeLibraries.Export(lib, name, "nvrtcGetErrorString");
        _version = (delegate* unmanaged<int*, int*, int>)NativeLibraries.Export(lib, name, "nvrtcVersion");
        _createProgram = (delegate* unmanaged<nint*, byte*, byte*, int, byte**, byte**, int>)NativeLibraries.Export(lib, name, "nvrtcCreateProgram");
        _compileProgram = (delegate* unmanaged<nint, int, byte**, int>)NativeLibraries.Export(lib, name, "nvrtcCompileProgram");
        _destroyProgram = (delegate* unmanaged<nint*, int>)NativeLibraries.Export(lib, name, "nvrtcDestroyProgram");
        _getProgramLogSize = (delegate* unmanaged<nint, nuint*, int>)NativeLibraries.Export(lib, name, "nvrtcGetProgramLogSize");
        _getProgramLog = (delegate* unmanaged<nint, byte*, int>)NativeLibraries.Export(lib, name, "nvrtcGetProgramLog");
        _getCubinSize = (delegate* unmanaged<nint, nuint*, int>)NativeLibraries.Export(lib, name, "nvrtcGetCUBINSize");
        _getCubin = (delegate* unmanaged<nint, byte*, int>)NativeLibraries.Export(lib, name, "nvrtcGetCUBIN");
        int major, minor;
        Check(_version(&major, &minor), "nvrtcVersion");
        Version = $"{major}.{minor}";
    }

    public string LibraryName { get; }

    /// <summary>"major.minor" of the loaded NVRTC; part of the cubin cache key.</summary>
    public string Version { get; }

    public static Nvrtc? TryGet(out string error)
    {
        var (nvrtc, reason) = Shared.Value;
        error = reason;
        return nvrtc;
    }

    public static Nvrtc Get() => TryGet(out var error) ?? throw new CudaUnavailableException(error);

    private static (Nvrtc?, string) Open()
    {
        var lib = NativeLibraries.Load("NVRTC (the CUDA run-time compiler)", ["libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so"], out var name, out var error);
        if (lib == 0)
        {
            return (null, error);
        }

        try
        {
            return (new Nvrtc(lib, name), string.Empty);
        }
        catch (Exception e) when (e is CudaUnavailableException or CudaException)
        {
            return (null, e.Message);
        }
    }

    /// <summary>Compiles one source (with the given headers) to a cubin; a compile error carries NVRTC's log.</summary>
    public byte[] CompileToCubin(string name, string source, IReadOnlyList<(string Name, string Source)> headers, IReadOnlyList<string> options)
    {
        var pinned = new List<GCHandle>();
        try
        {
            byte* Utf8(string s)
            {
                var bytes = Encoding.UTF8.GetBytes(s + "\0");
                var handle = GCHandle.Alloc(bytes, GCHandleType.Pinned);
                pinned.Add(handle);
                return (byte*)handle.AddrOfPinnedObject();
            }

            var headerSources = stackalloc byte*[Math.Max(1, headers.Count)];
            var headerNames = stackalloc byte*[Math.Max(1, headers.Count)];
            for (var i = 0; i < headers.Count; i++)
            {
                headerSources[i] = Utf8(headers[i].Source);
                headerNames[i] = Utf8(headers[i].Name);
            }

            nint program;
            Check(_createProgram(&program, Utf8(source), Utf8(name), headers.Count, headerSources, headerNames), "nvrtcCreateProgram(" + name + ")");
            try
            {
                var opts = stackalloc byte*[Math.Max(1, options.Count)];
                for (var i = 0; i < options.Count; i++)
                {
                    opts[i] = Utf8(options[i]);
                }

                var status = _compileProgram(program, options.Count, opts);
                if (status != 0)
                {
                    throw new CudaException($"nvrtcCompileProgram({name}) failed: {ErrorString(status)}\n{Log(program)}");
                }

                nuint size;
                Check(_getCubinSize(program, &size), "nvrtcGetCUBINSize(" + name + ")");
                var cubin = new byte[(int)size];
                fixed (byte* p = cubin)
                {
                    Check(_getCubin(program, p), "nvrtcGetCUBIN(" + name + ")");
                }

                return cubin;
            }
            finally
            {
                _destroyProgram(&program);
            }
        }
        finally
        {
            foreach (var h in pinned)
            {
                h.Free();
            }
        }
    }

    private string Log(nint program)
    {
        nuint size;
        if (_getProgramLogSize(program, &size) != 0 || size <= 1)
        {
            return string.Empty;
        }

        var log = new byte[(int)size];
        fixed (byte* p = log)
        {
            _getProgramLog(program, p);
        }

        return Encoding.UTF8.GetString(log, 0, log.Length - 1);
    }

    private string ErrorString(int status) => Marshal.PtrToStringUTF8((nint)_getErrorString(status)) ?? "NVRTC error " + status;

    private void Check(int status, string call)
    {
        if (status != 0)
        {
            throw new CudaException($"{call} failed: {ErrorString(status)} ({status})");
        }
    }
}
