using System.Reflection;
using System.Security.Cryptography;
using System.Text;
using Enclave.Engine.Cuda.Native;

namespace Enclave.Engine.Cuda;

/// <summary>
/// Compiles the embedded kernel sources with NVRTC for one compute capability and keeps the cubins on disk, keyed by
/// a hash of the source (headers included), the target architecture and the NVRTC version, so a second start compiles
/// nothing. The folder is $ENCLAVE_HOME/cuda-cache, else the temp folder's enclave-cuda-cache.
/// </summary>
internal sealed class KernelCache
{
    private const string ResourcePrefix = "Enclave.Engine.Cuda.Kernels.";
    private readonly Nvrtc _nvrtc;
    private readonly string _arch;
    private readonly (string Name, string Source)[] _headers;

    public KernelCache(Nvrtc nvrtc, int major, int minor, string? directory = null)
    {
        _nvrtc = nvrtc;
        _arch = $"sm_{major}{minor}";
        var home = Environment.GetEnvironmentVariable("ENCLAVE_HOME");
        Directory = directory ?? (string.IsNullOrWhiteSpace(home)
            ? Path.Combine(Path.GetTempPath(), "enclave-cuda-cache")
            : Path.Combine(home, "cuda-cache"));
        _headers = [.. ResourceNames().Where(n => n.EndsWith(".cuh", StringComparison.Ordinal)).Select(n => (n, ReadSource(n)))];
    }

    public string Directory { get; }

    /// <summary>
    /// Macro definitions from ENCLAVE_CUDA_KERNEL_DEFINES ("NAME=VALUE NAME2 ..."), passed as -D to the compiles of the
    /// sources that use them: the tuning constants the kernels leave overridable (e.g. FB_MIN_BLOCKS_128 in
    /// flash_prefill_bf16.cu), for comparisons without a rebuild. They are part of the cache key, so each set compiles
    /// once.
    /// </summary>
    private static readonly string[] ExtraDefines =
        [.. (Environment.GetEnvironmentVariable("ENCLAVE_CUDA_KERNEL_DEFINES") ?? "").Split(' ', StringSplitOptions.RemoveEmptyEntries)];

    /// <summary>The -D options of <see cref="ExtraDefines"/> whose name the source itself uses, so only those sources compile again.</summary>
    private static IEnumerable<string> DefinesFor(string source) =>
        ExtraDefines.Where(d => source.Contains(d.Split('=')[0], StringComparison.Ordinal)).Select(d => "-D" + d);

    /// <summary>How many sources were compiled (not found in the cache) by this instance.</summary>
    public int Compiled { get; private set; }

    public static IEnumerable<string> ResourceNames() =>
        typeof(KernelCache).Assembly.GetManifestResourceNames()
            .Where(n => n.StartsWith(ResourcePrefix, StringComparison.Ordinal))
            .Select(n => n[ResourcePrefix.Length..]);

    public static string ReadSource(string name)
    {
        using var stream = typeof(KernelCache).Assembly.GetManifestResourceStream(ResourcePrefix + name)
                           ?? throw new InvalidOperationException($"kernel source {name} is not embedded");
        using var reader = new StreamReader(stream, Encoding.UTF8);
        return reader.ReadToEnd();
    }

    /// <summary>The cubin of one kernel source (e.g. "rmsnorm.cu"), from the disk cache or freshly compiled.</summary>
    public byte[] GetCubin(string sourceName)
    {
        var source = ReadSource(sourceName);
        string[] options = ["--gpu-architecture=" + _arch, "--std=c++17", "-default-device", "--fmad=true", .. DefinesFor(source)];
        var key = new StringBuilder().Append(source).Append('\0').Append(_arch).Append('\0').Append(_nvrtc.Version).Append('\0').AppendJoin(' ', options);
        foreach (var (name, text) in _headers)
        {
            key.Append('\0').Append(name).Append('\0').Append(text);
        }

        var hash = Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(key.ToString())))[..24];
        var path = Path.Combine(Directory, $"{Path.GetFileNameWithoutExtension(sourceName)}-{_arch}-nvrtc{_nvrtc.Version}-{hash}.cubin");
        if (File.Exists(path))
        {
            try
            {
                return File.ReadAllBytes(path);
            }
            catch (IOException)
            {
                // Unreadable cache entry: compile again below.
            }
        }

        var cubin = _nvrtc.CompileToCubin(sourceName, source, _headers, options);
        Compiled++;
        try
        {
            System.IO.Directory.CreateDirectory(Directory);
            var temp = path + "." + Environment.ProcessId + ".tmp";
            File.WriteAllBytes(temp, cubin);
            File.Move(temp, path, overwrite: true);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            // A read-only cache folder costs a compile per start, nothing more.
        }

        return cubin;
    }

    public static Assembly Assembly => typeof(KernelCache).Assembly;
}
