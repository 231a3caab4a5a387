using System.Runtime.InteropServices;

namespace Enclave.Engine.Cuda.Native;

/// <summary>cuBLAS (libcublas.so.13 or .12): the tensor-core GEMMs. Column-major, as cuBLAS is.</summary>
internal sealed unsafe class Cublas
{
    public const int OpN = 0;
    public const int OpT = 1;
    public const int DataF32 = 0;
    public const int DataF16 = 2;
    public const int DataBF16 = 14;
    public const int Compute32F = 68;
    public const int GemmDefault = -1;

    private static readonly Lazy<(Cublas? Cublas, string Error)> Shared = new(Open);

    private readonly delegate* unmanaged<int, byte*> _getStatusString;

    private Cublas(nint lib, string name)
    {
        LibraryName = name;
        _getStatusString = (delegate* unmanaged<int, byte*>)NativeLibraries.Export(lib, name, "cublasGetStatusString");
        Create = (delegate* unmanaged<nint*, int>)NativeLibraries.Export(lib, name, "cublasCreate_v2");
        Destroy = (delegate* unmanaged<nint, int>)NativeLibraries.Export(lib, name, "cublasDestroy_v2");
        SetStream = (delegate* unmanaged<nint, nint, int>)NativeLibraries.Export(lib, name, "cublasSetStream_v2");
        SetWorkspace = (delegate* unmanaged<nint, ulong, nuint, int>)NativeLibraries.TryExport(lib, "cublasSetWorkspace_v2");
        GemmEx = (delegate* unmanaged<nint, int, int, int, int, int, void*, ulong, int, int, ulong, int, int, void*, ulong, int, int, int, int, int>)
            NativeLibraries.Export(lib, name, "cublasGemmEx");
        GemmStridedBatchedEx = (delegate* unmanaged<nint, int, int, int, int, int, void*, ulong, int, int, long, ulong, int, int, long, void*, ulong, int, int, long, int, int, int, int>)
            NativeLibraries.Export(lib, name, "cublasGemmStridedBatchedEx");
    }

    public string LibraryName { get; }

    public delegate* unmanaged<nint*, int> Create { get; }

    public delegate* unmanaged<nint, int> Destroy { get; }

    public delegate* unmanaged<nint, nint, int> SetStream { get; }

    /// <summary>
    /// cublasSetWorkspace_v2(handle, workspace, bytes): cuBLAS then allocates nothing itself (needed while capturing a
    /// graph); null in a cuBLAS too old to have it.
    /// </summary>
    public delegate* unmanaged<nint, ulong, nuint, int> SetWorkspace { get; }

    /// <summary>cublasGemmEx(handle, transa, transb, m, n, k, alpha, A, Atype, lda, B, Btype, ldb, beta, C, Ctype, ldc, computeType, algo).</summary>
    public delegate* unmanaged<nint, int, int, int, int, int, void*, ulong, int, int, ulong, int, int, void*, ulong, int, int, int, int, int> GemmEx { get; }

    /// <summary>
    /// cublasGemmStridedBatchedEx(handle, transa, transb, m, n, k, alpha, A, Atype, lda, strideA, B, Btype, ldb, strideB,
    /// beta, C, Ctype, ldc, strideC, batchCount, computeType, algo).
    /// </summary>
    public delegate* unmanaged<nint, int, int, int, int, int, void*, ulong, int, int, long, ulong, int, int, long, void*, ulong, int, int, long, int, int, int, int> GemmStridedBatchedEx { get; }

    public static Cublas? TryGet(out string error)
    {
        var (cublas, reason) = Shared.Value;
        error = reason;
        return cublas;
    }

    public static Cublas Get() => TryGet(out var error) ?? throw new CudaUnavailableException(error);

    private static (Cublas?, string) Open()
    {
        var lib = NativeLibraries.Load("cuBLAS", ["libcublas.so.13", "libcublas.so.12", "libcublas.so"], out var name, out var error);
        if (lib == 0)
        {
            return (null, error);
        }

        try
        {
            return (new Cublas(lib, name), string.Empty);
        }
        catch (CudaUnavailableException e)
        {
            return (null, e.Message);
        }
    }

    public void Check(int status, string call)
    {
        if (status != 0)
        {
            var text = Marshal.PtrToStringUTF8((nint)_getStatusString(status)) ?? "cuBLAS error";
            throw new CudaException($"{call} failed: {text} ({status})");
        }
    }
}
