using System.Runtime.InteropServices;

namespace Enclave.Engine.Cuda.Native;

/// <summary>
/// Finds the CUDA shared libraries by trying each versioned name, first through the loader's own search path and
/// then in the usual toolkit folders (CUDA_HOME, /usr/local/cuda, ENCLAVE_CUDA_LIBRARY_PATH).
/// </summary>
internal static class NativeLibraries
{
    public static nint Load(string what, string[] names, out string loadedName, out string error)
    {
        var tried = new List<string>();
        foreach (var name in names)
        {
            if (NativeLibrary.TryLoad(name, out var handle))
            {
                loadedName = name;
                error = string.Empty;
                return handle;
            }

            tried.Add(name);
            foreach (var dir in SearchDirectories())
            {
                var path = Path.Combine(dir, name);
                if (File.Exists(path) && NativeLibrary.TryLoad(path, out handle))
                {
                    loadedName = path;
                    error = string.Empty;
                    return handle;
                }
            }
        }

        loadedName = string.Empty;
        error = $"{what} not found (tried {string.Join(", ", tried)} on the library path and in {string.Join(", ", SearchDirectories())})";
        return 0;
    }

    private static IEnumerable<string> SearchDirectories()
    {
        var extra = Environment.GetEnvironmentVariable("ENCLAVE_CUDA_LIBRARY_PATH");
        if (!string.IsNullOrWhiteSpace(extra))
        {
            foreach (var d in extra.Split(':', StringSplitOptions.RemoveEmptyEntries))
            {
                yield return d;
            }
        }

        var home = Environment.GetEnvironmentVariable("CUDA_HOME") ?? Environment.GetEnvironmentVariable("CUDA_PATH");
        if (!string.IsNullOrWhiteSpace(home))
        {
            yield return Path.Combine(home, "lib64");
            yield return Path.Combine(home, "lib");
        }

        yield return "/usr/local/cuda/lib64";
        yield return "/usr/local/cuda/targets/x86_64-linux/lib";
        yield return "/usr/lib/x86_64-linux-gnu";
    }

    public static unsafe nint Export(nint library, string libraryName, string symbol)
    {
        if (!NativeLibrary.TryGetExport(library, symbol, out var address))
        {
            throw new CudaUnavailableException($"{libraryName} has no export '{symbol}' (too old a version?)");
        }

        return address;
    }

    /// <summary>The symbol's address, or 0 when this library version lacks it (for optional features).</summary>
    public static nint TryExport(nint library, string symbol) =>
        NativeLibrary.TryGetExport(library, symbol, out var address) ? address : 0;
}
