using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics.X86;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using System.Text;
using System.Text.Json.Serialization;
using System.Text.RegularExpressions;
using Enclave.Engine.Cuda;
using Enclave.Gateway.Store;
using Enclave.Operations.Registry;
using Microsoft.EntityFrameworkCore;

namespace Enclave.Operations.Doctor;

[JsonConverter(typeof(JsonStringEnumConverter<CheckStatus>))]
public enum CheckStatus
{
    [JsonStringEnumMemberName("pass")] Pass,
    [JsonStringEnumMemberName("warn")] Warn,
    [JsonStringEnumMemberName("fail")] Fail,
}

public sealed record CheckResult(
    [property: JsonPropertyName("check")] string Check,
    [property: JsonPropertyName("status")] CheckStatus Status,
    [property: JsonPropertyName("detail")] string Detail,
    [property: JsonPropertyName("hint")] string? Hint);

/// <summary>What one GPU looks like to the doctor (from the CUDA driver API probe).</summary>
public sealed record GpuInfo(int Ordinal, string Name, long TotalMemory, int ComputeMajor, int ComputeMinor, bool Usable, string Reason);

public sealed record GpuSurvey(int CudaDriverVersion, string? KernelDriverVersion, IReadOnlyList<GpuInfo> Gpus, string? Absence);

/// <summary>What the doctor checks, and the probes it uses (replaceable, so every verdict can be tested on any machine).</summary>
public sealed class DoctorOptions
{
    public required string Home { get; init; }
    public string? Database { get; init; }
    public string? Redis { get; init; }
    public string Host { get; init; } = "0.0.0.0";
    public IReadOnlyList<int> Ports { get; init; } = [8000];
    public string? TlsCertificate { get; init; }
    public string? TlsKey { get; init; }
    /// <summary>Installed models to weigh and verify; empty means every installed model.</summary>
    public IReadOnlyList<string> Models { get; init; } = [];
    public Func<GpuSurvey> ProbeGpus { get; init; } = Doctor.ProbeGpus;
    public Func<bool> NcclPresent { get; init; } = () => NativeLibrary.TryLoad("libnccl.so.2", out _) || NativeLibrary.TryLoad("libnccl.so", out _);
    public Func<long> TotalMemory { get; init; } = () => GC.GetGCMemoryInfo().TotalAvailableMemoryBytes;
    public Func<string, string[], string?> RunTool { get; init; } = Doctor.RunTool;
    public (bool Avx2, bool Avx512, Architecture Arch) Cpu { get; init; } = (Avx2.IsSupported, Avx512F.IsSupported, RuntimeInformation.ProcessArchitecture);
    public TimeProvider Time { get; init; } = TimeProvider.System;
}

/// <summary>
/// Preflight checks before install and the first step of fault diagnosis: each check passes, warns or fails with a
/// hint saying what to do. The GPU is probed through the CUDA driver API (the engine's own loader), never nvidia-smi;
/// a machine without one gets a warning, since the CPU backend still runs.
/// </summary>
public static partial class Doctor
{
    private const long GiB = 1L << 30;

    public static async Task<IReadOnlyList<CheckResult>> RunAsync(DoctorOptions o, CancellationToken ct = default)
    {
        var store = new ModelStore(o.Home);
        var models = SelectModels(store, o.Models, out var modelProblem);
        var largest = models.Count == 0 ? 0 : models.Max(m => m.TotalBytes);
        var gpus = o.ProbeGpus();
        var results = new List<CheckResult>
        {
            CheckOs(),
            CheckCpu(o.Cpu.Avx2, o.Cpu.Avx512, o.Cpu.Arch),
            CheckMemory(o.TotalMemory(), largest, gpus.Gpus.Count(g => g.Usable) > 0),
            CheckDisk(o.Home, largest),
            CheckGpu(gpus),
            CheckGpuMemory(gpus, largest),
            CheckNccl(gpus.Gpus.Count(g => g.Usable), o.NcclPresent()),
            CheckClock(o.RunTool),
        };
        results.AddRange(o.Ports.Select(p => CheckPort(o.Host, p)));
        results.Add(CheckDataDirectory(o.Home));
        if (o.TlsCertificate is not null)
        {
            results.Add(CheckTls(o.TlsCertificate, o.TlsKey, o.Time.GetUtcNow()));
        }

        results.Add(await CheckDatabaseAsync(o.Home, o.Database, ct));
        if (o.Redis is not null)
        {
            results.Add(await CheckRedisAsync(o.Redis, ct));
        }

        if (modelProblem is not null)
        {
            results.Add(modelProblem);
        }

        results.AddRange(CheckModels(store, models));
        return results;
    }

    private static List<ModelRecord> SelectModels(ModelStore store, IReadOnlyList<string> names, out CheckResult? problem)
    {
        problem = null;
        if (names.Count == 0)
        {
            return [.. store.List()];
        }

        var list = new List<ModelRecord>();
        foreach (var n in names)
        {
            try
            {
                list.Add(store.Get(n));
            }
            catch (Exception e) when (e is ArgumentException or InvalidDataException)
            {
                problem = new CheckResult("models", CheckStatus.Fail, e.Message, $"install it with 'enclave pull' or 'enclave models import', or fix --model {n}");
            }
        }

        return list;
    }

    public static CheckResult CheckOs()
    {
        var detail = $"{RuntimeInformation.OSDescription} ({RuntimeInformation.OSArchitecture})";
        return OperatingSystem.IsLinux()
            ? new CheckResult("os", CheckStatus.Pass, detail, null)
            : new CheckResult("os", CheckStatus.Warn, detail + ": production deployments are tested on Linux", "run production on a Linux x86-64 or arm64 server");
    }

    public static CheckResult CheckCpu(bool avx2, bool avx512, Architecture arch)
    {
        if (arch == Architecture.Arm64)
        {
            return new CheckResult("cpu", CheckStatus.Pass, $"{Environment.ProcessorCount} cores, arm64 (NEON)", null);
        }

        var features = avx512 ? "AVX-512 and AVX2" : avx2 ? "AVX2 (no AVX-512)" : "neither AVX2 nor AVX-512";
        var detail = $"{Environment.ProcessorCount} cores, {arch}, {features}";
        return avx2
            ? new CheckResult("cpu", CheckStatus.Pass, detail, null)
            : new CheckResult("cpu", CheckStatus.Warn, detail + ": CPU kernels fall back to scalar code, many times slower", "use a CPU with AVX2 (Haswell or newer) or serve from a GPU");
    }

    public static CheckResult CheckMemory(long total, long largestModel, bool haveGpu)
    {
        var detail = $"{total / (double)GiB:F1} GiB RAM";
        if (largestModel == 0)
        {
            return new CheckResult("memory", CheckStatus.Pass, detail + "; no model installed to weigh it against", null);
        }

        // Weights are memory-mapped: on the CPU backend they stay resident; on a GPU they pass through once.
        var need = haveGpu ? Math.Min(largestModel, 8 * GiB) : largestModel + largestModel / 5;
        detail += $", the largest model needs about {need / (double)GiB:F1} GiB {(haveGpu ? "while loading onto the GPU" : "on the CPU backend (weights + 20% for KV cache and activations)")}";
        if (total < (haveGpu ? need / 2 : largestModel))
        {
            return new CheckResult("memory", CheckStatus.Fail, detail, "add RAM or serve a smaller or quantized model (see 'enclave plan')");
        }

        return total < need
            ? new CheckResult("memory", CheckStatus.Warn, detail, "expect paging under load; add RAM or lower --max-num-seqs")
            : new CheckResult("memory", CheckStatus.Pass, detail, null);
    }

    public static CheckResult CheckDisk(string home, long largestModel)
    {
        var existing = home;
        while (!Directory.Exists(existing) && Path.GetDirectoryName(existing) is { } parent)
        {
            existing = parent;
        }

        var drive = new DriveInfo(Path.GetFullPath(existing));
        var free = drive.AvailableFreeSpace;
        // pull, import and encrypt stage a full copy before swapping it in.
        var need = Math.Max(GiB, largestModel);
        var detail = $"{free / (double)GiB:F1} GiB free of {drive.TotalSize / (double)GiB:F1} GiB under {existing}; staging a copy of the largest model needs {need / (double)GiB:F1} GiB";
        if (free < need)
        {
            return new CheckResult("disk", CheckStatus.Fail, detail, "free space or move ENCLAVE_HOME to a larger volume");
        }

        return free < drive.TotalSize / 10
            ? new CheckResult("disk", CheckStatus.Warn, detail + " (volume over 90% full)", "free space before audit archives and logs fill the volume")
            : new CheckResult("disk", CheckStatus.Pass, detail, null);
    }

    public static GpuSurvey ProbeGpus()
    {
        string? kernel = null;
        try
        {
            // The kernel module reports its version here; reading it needs neither nvidia-smi nor NVML.
            var line = File.Exists("/proc/driver/nvidia/version") ? File.ReadLines("/proc/driver/nvidia/version").FirstOrDefault() : null;
            kernel = line is null ? null : KernelVersion().Match(line) is { Success: true } m ? m.Value : line;
        }
        catch (IOException)
        {
        }

        var gpus = new List<GpuInfo>();
        var first = CudaDevice.Probe(0);
        if (first.DriverVersion == 0 && first.Name.Length == 0)
        {
            return new GpuSurvey(0, kernel, [], first.Reason);
        }

        for (var i = 0; i < 64; i++)
        {
            var p = i == 0 ? first : CudaDevice.Probe(i);
            if (p.Name.Length == 0)
            {
                break;
            }

            gpus.Add(new GpuInfo(i, p.Name, p.TotalMemory, p.ComputeMajor, p.ComputeMinor, p.Usable, p.Reason));
        }

        return new GpuSurvey(first.DriverVersion, kernel, gpus, gpus.Count == 0 ? first.Reason : null);
    }

    [GeneratedRegex(@"\b\d{3}\.\d+(\.\d+)?\b")]
    private static partial Regex KernelVersion();

    public static CheckResult CheckGpu(GpuSurvey s)
    {
        if (s.Gpus.Count == 0)
        {
            return new CheckResult("gpu", CheckStatus.Warn, "no NVIDIA GPU: " + (s.Absence ?? "none found") + "; models run on the CPU backend",
                "install the NVIDIA driver (535 or newer) if this server has a GPU");
        }

        var cuda = $"CUDA {s.CudaDriverVersion / 1000}.{s.CudaDriverVersion % 1000 / 10}";
        var detail = $"driver {s.KernelDriverVersion ?? "?"}, {cuda}; " + string.Join("; ", s.Gpus.Select(g => $"cuda:{g.Ordinal} {g.Name} sm_{g.ComputeMajor}{g.ComputeMinor} {g.TotalMemory / (double)GiB:F0} GiB"));
        var unusable = s.Gpus.FirstOrDefault(g => !g.Usable);
        if (unusable is not null)
        {
            return new CheckResult("gpu", CheckStatus.Fail, detail + $"; cuda:{unusable.Ordinal} is unusable: {unusable.Reason}", "install the CUDA runtime libraries (NVRTC, cuBLAS) of the driver's CUDA version, or use a Volta or newer GPU");
        }

        return s.CudaDriverVersion < 12000
            ? new CheckResult("gpu", CheckStatus.Warn, detail + ": the driver supports only " + cuda, "upgrade the NVIDIA driver to one supporting CUDA 12 (535 or newer)")
            : new CheckResult("gpu", CheckStatus.Pass, detail, null);
    }

    public static CheckResult CheckGpuMemory(GpuSurvey s, long largestModel)
    {
        var usable = s.Gpus.Where(g => g.Usable).ToList();
        if (usable.Count == 0)
        {
            return new CheckResult("gpu-memory", CheckStatus.Warn, "no usable GPU to hold the models", "see the gpu check");
        }

        var total = usable.Sum(g => g.TotalMemory);
        var detail = $"{total / (double)GiB:F1} GiB on {usable.Count} GPU(s); largest model {largestModel / (double)GiB:F1} GiB of weights";
        if (largestModel == 0)
        {
            return new CheckResult("gpu-memory", CheckStatus.Pass, detail, null);
        }

        if (largestModel > total * 9 / 10)
        {
            return new CheckResult("gpu-memory", CheckStatus.Fail, detail + " (weights alone exceed 90% of GPU memory)", "add GPUs, quantize, or choose a smaller model; 'enclave plan' sizes it");
        }

        return largestModel > total * 7 / 10
            ? new CheckResult("gpu-memory", CheckStatus.Warn, detail + " (under 30% left for the KV cache)", "expect short contexts or few concurrent sequences; 'enclave plan' sizes it")
            : new CheckResult("gpu-memory", CheckStatus.Pass, detail, null);
    }

    public static CheckResult CheckNccl(int gpuCount, bool present)
    {
        if (present)
        {
            return new CheckResult("nccl", CheckStatus.Pass, "libnccl.so.2 loads", null);
        }

        return gpuCount > 1
            ? new CheckResult("nccl", CheckStatus.Fail, $"{gpuCount} GPUs but libnccl.so.2 is not loadable: multi-GPU parallelism needs it", "install NCCL (Debian/Ubuntu: libnccl2 from NVIDIA's CUDA repository)")
            : new CheckResult("nccl", CheckStatus.Pass, $"not needed with {gpuCount} GPU(s); libnccl.so.2 is absent", null);
    }

    public static CheckResult CheckClock(Func<string, string[], string?> run)
    {
        var chrony = run("chronyc", ["tracking"]);
        if (chrony is not null && ParseChronyOffset(chrony) is { } offset)
        {
            var detail = string.Create(CultureInfo.InvariantCulture, $"chrony: system clock {Math.Abs(offset):F6} s {(offset >= 0 ? "fast" : "slow")} of NTP time");
            return Math.Abs(offset) > 1 ? new CheckResult("clock", CheckStatus.Fail, detail, "audit timestamps and TLS need a synchronised clock: check the NTP sources ('chronyc sources')")
                : Math.Abs(offset) > 0.1 ? new CheckResult("clock", CheckStatus.Warn, detail, "the offset is large; check 'chronyc sources'")
                : new CheckResult("clock", CheckStatus.Pass, detail, null);
        }

        var timedatectl = run("timedatectl", ["show", "-p", "NTPSynchronized", "--value"]);
        if (timedatectl is not null)
        {
            return timedatectl.Trim() == "yes"
                ? new CheckResult("clock", CheckStatus.Pass, "systemd-timesyncd: NTP synchronised", null)
                : new CheckResult("clock", CheckStatus.Warn, "timedatectl reports the clock is not NTP-synchronised", "enable time sync: 'timedatectl set-ntp true' or install chrony");
        }

        return new CheckResult("clock", CheckStatus.Warn, "no NTP daemon found to ask (neither chronyc nor timedatectl answered)", "install chrony and point it at your site's time source");
    }

    /// <summary>Reads "System time : 0.000012 seconds fast|slow of NTP time" from <c>chronyc tracking</c>; fast is positive.</summary>
    public static double? ParseChronyOffset(string text)
    {
        var m = ChronySystemTime().Match(text);
        if (!m.Success || !double.TryParse(m.Groups[1].Value, NumberStyles.Float, CultureInfo.InvariantCulture, out var v))
        {
            return null;
        }

        return m.Groups[2].Value == "slow" ? -v : v;
    }

    [GeneratedRegex(@"System time\s*:\s*([0-9.eE+-]+)\s+seconds\s+(fast|slow)")]
    private static partial Regex ChronySystemTime();

    public static string? RunTool(string tool, string[] args)
    {
        try
        {
            var psi = new ProcessStartInfo(tool) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
            foreach (var a in args)
            {
                psi.ArgumentList.Add(a);
            }

            using var p = Process.Start(psi);
            if (p is null)
            {
                return null;
            }

            var output = p.StandardOutput.ReadToEndAsync();
            if (!p.WaitForExit(5000))
            {
                p.Kill();
                return null;
            }

            return p.ExitCode == 0 ? output.Result : null;
        }
        catch (System.ComponentModel.Win32Exception)
        {
            return null;
        }
    }

    public static CheckResult CheckPort(string host, int port)
    {
        var name = $"port {port}";
        try
        {
            var address = host is "0.0.0.0" or "*" ? IPAddress.Any : IPAddress.TryParse(host, out var ip) ? ip : Dns.GetHostAddresses(host)[0];
            using var socket = new Socket(address.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
            socket.Bind(new IPEndPoint(address, port));
            socket.Listen();
            return new CheckResult(name, CheckStatus.Pass, $"{host}:{port} is free", null);
        }
        catch (SocketException e)
        {
            return new CheckResult(name, CheckStatus.Fail, $"cannot listen on {host}:{port}: {e.SocketErrorCode}", $"stop what uses it ('ss -ltnp sport = :{port}') or serve with --port");
        }
    }

    public static CheckResult CheckDataDirectory(string home)
    {
        if (File.Exists(home))
        {
            return new CheckResult("data-directory", CheckStatus.Fail, $"{home} is a file, not a directory", "point ENCLAVE_HOME at a directory");
        }

        try
        {
            Directory.CreateDirectory(home);
            var probe = Path.Combine(home, ".doctor-" + Guid.NewGuid().ToString("N")[..8]);
            File.WriteAllText(probe, "ok");
            File.Delete(probe);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return new CheckResult("data-directory", CheckStatus.Fail, $"{home} is not writable: {e.Message}", $"chown the directory to the service user and chmod 700 {home}");
        }

        if (!OperatingSystem.IsWindows())
        {
            var keys = Path.Combine(home, "keys");
            var loose = new List<string>();
            var mode = File.GetUnixFileMode(home);
            if ((mode & (UnixFileMode.OtherWrite | UnixFileMode.GroupWrite)) != 0)
            {
                loose.Add($"{home} is group/world-writable");
            }

            if (Directory.Exists(keys))
            {
                foreach (var f in Directory.EnumerateFiles(keys))
                {
                    if ((File.GetUnixFileMode(f) & (UnixFileMode.GroupRead | UnixFileMode.OtherRead | UnixFileMode.GroupWrite | UnixFileMode.OtherWrite)) != 0)
                    {
                        loose.Add($"{f} is readable by others");
                    }
                }
            }

            if (loose.Count > 0)
            {
                return new CheckResult("data-directory", CheckStatus.Warn, string.Join("; ", loose), $"chmod 700 {home} {keys} && chmod 600 {keys}/*");
            }
        }

        return new CheckResult("data-directory", CheckStatus.Pass, $"{home} is writable, key files are private", null);
    }

    public static CheckResult CheckTls(string certFile, string? keyFile, DateTimeOffset now)
    {
        X509Certificate2 cert;
        try
        {
            cert = keyFile is null ? X509Certificate2.CreateFromPemFile(certFile) : X509Certificate2.CreateFromPemFile(certFile, keyFile);
        }
        catch (Exception e) when (e is CryptographicException or IOException or ArgumentException)
        {
            return new CheckResult("tls", CheckStatus.Fail, $"{certFile}{(keyFile is null ? "" : " + " + keyFile)}: cannot load as PEM: {e.Message}",
                "give a PEM certificate and its matching PEM private key (--tls-cert/--tls-key)");
        }

        using (cert)
        {
            var detail = $"{cert.Subject}, valid {cert.NotBefore:yyyy-MM-dd} to {cert.NotAfter:yyyy-MM-dd}";
            if (keyFile is not null && !cert.HasPrivateKey)
            {
                return new CheckResult("tls", CheckStatus.Fail, detail + ": the key does not match the certificate", "use the private key the certificate was issued for");
            }

            if (now < cert.NotBefore)
            {
                return new CheckResult("tls", CheckStatus.Fail, detail + ": not valid yet", "check the clock, or the certificate's dates");
            }

            if (now > cert.NotAfter)
            {
                return new CheckResult("tls", CheckStatus.Fail, detail + ": EXPIRED", "renew the certificate");
            }

            return cert.NotAfter - now < TimeSpan.FromDays(30)
                ? new CheckResult("tls", CheckStatus.Warn, detail + $": expires in {(cert.NotAfter - now).TotalDays:F0} days", "renew the certificate soon")
                : new CheckResult("tls", CheckStatus.Pass, detail, null);
        }
    }

    public static async Task<CheckResult> CheckDatabaseAsync(string home, string? database, CancellationToken ct)
    {
        if (string.IsNullOrWhiteSpace(database) && !File.Exists(Path.Combine(home, "gateway.db")))
        {
            return new CheckResult("database", CheckStatus.Pass, "not configured: the embedded SQLite store is created under ENCLAVE_HOME on first start", null);
        }

        GatewayStore store;
        try
        {
            store = GatewayStore.Resolve(database, home);
        }
        catch (Exception e) when (e is ArgumentException or FormatException or UriFormatException)
        {
            return new CheckResult("database", CheckStatus.Fail, $"--database is not a usable connection string: {e.Message}", "use Host=...;Database=...;Username=... or a SQLite file path");
        }

        try
        {
            using var timeout = CancellationTokenSource.CreateLinkedTokenSource(ct);
            timeout.CancelAfter(TimeSpan.FromSeconds(10));
            await using var db = store.CreateContext();
            if (!await db.Database.CanConnectAsync(timeout.Token))
            {
                return new CheckResult("database", CheckStatus.Fail, $"{store.Provider} store is not reachable", "check the server is running and the connection string (host, port, credentials)");
            }

            var pending = await store.PendingMigrationsAsync(timeout.Token);
            return pending.Count > 0
                ? new CheckResult("database", CheckStatus.Warn, $"{store.Provider} store reachable; {pending.Count} migration(s) pending", "run 'enclave db migrate' (serve also migrates on start)")
                : new CheckResult("database", CheckStatus.Pass, $"{store.Provider} store reachable and up to date", null);
        }
        catch (Exception e) when (e is not OperationCanceledException || !ct.IsCancellationRequested)
        {
            return new CheckResult("database", CheckStatus.Fail, $"{store.Provider} store: {e.GetBaseException().Message}", "check the server is running and the connection string (host, port, credentials)");
        }
    }

    /// <summary>Redis answers an inline <c>PING</c> with <c>+PONG</c> (or <c>-NOAUTH</c> when a password is set: still reachable).</summary>
    public static async Task<CheckResult> CheckRedisAsync(string endpoint, CancellationToken ct)
    {
        var colon = endpoint.LastIndexOf(':');
        var host = colon > 0 ? endpoint[..colon] : endpoint;
        var port = colon > 0 && int.TryParse(endpoint[(colon + 1)..], out var p) ? p : 6379;
        try
        {
            using var timeout = CancellationTokenSource.CreateLinkedTokenSource(ct);
            timeout.CancelAfter(TimeSpan.FromSeconds(5));
            using var client = new TcpClient();
            await client.ConnectAsync(host, port, timeout.Token);
            var stream = client.GetStream();
            await stream.WriteAsync("PING\r\n"u8.ToArray(), timeout.Token);
            var buffer = new byte[128];
            var n = await stream.ReadAsync(buffer, timeout.Token);
            var reply = Encoding.ASCII.GetString(buffer, 0, n).Trim();
            if (reply == "+PONG")
            {
                return new CheckResult("redis", CheckStatus.Pass, $"{host}:{port} answers PONG", null);
            }

            return reply.StartsWith("-NOAUTH", StringComparison.Ordinal)
                ? new CheckResult("redis", CheckStatus.Pass, $"{host}:{port} is reachable (password required)", null)
                : new CheckResult("redis", CheckStatus.Fail, $"{host}:{port} answered '{reply}' to PING: not a Redis server?", "check the Redis address");
        }
        catch (Exception e) when (e is SocketException or IOException or OperationCanceledException && !ct.IsCancellationRequested)
        {
            return new CheckResult("redis", CheckStatus.Fail, $"{host}:{port} is not reachable: {e.Message}", "start Redis or fix --redis HOST:PORT");
        }
    }

    public static IEnumerable<CheckResult> CheckModels(ModelStore store, IReadOnlyList<ModelRecord> models)
    {
        if (models.Count == 0)
        {
            yield return new CheckResult("models", CheckStatus.Warn, "no model installed", "install one with 'enclave pull OWNER/NAME' or 'enclave models import BUNDLE'");
            yield break;
        }

        foreach (var m in models)
        {
            var problems = store.Verify(m.Name);
            yield return problems.Count == 0
                ? new CheckResult("model " + m.Name, CheckStatus.Pass, $"{m.Files.Count} files, {m.TotalBytes / (double)GiB:F2} GiB, hashes match", null)
                : new CheckResult("model " + m.Name, CheckStatus.Fail, $"{problems.Count} file(s) differ: {problems[0].Path}: {problems[0].Message}",
                    $"restore the model: 'enclave models rm {m.Name}' then pull or import it again");
        }
    }
}
