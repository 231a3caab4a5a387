using System.Net;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using Enclave.Operations.Doctor;
using Enclave.Operations.Registry;
using Enclave.Operations.Tests.Support;

namespace Enclave.Operations.Tests;

/// <summary>Every check's pass and fail (or warn) verdict that a CPU-only machine can produce, with real files, sockets and servers.</summary>
public sealed class DoctorTests
{
    private const long GiB = 1L << 30;
    private static readonly GpuSurvey NoGpu = new(0, null, [], "the NVIDIA driver (libcuda.so.1) not found");
    private static GpuSurvey Gpus(int count, long memory, bool usable = true, int cuda = 12040) =>
        new(cuda, "550.54.15", [.. Enumerable.Range(0, count).Select(i => new GpuInfo(i, "NVIDIA H100 80GB HBM3", memory, 9, 0, usable, usable ? "" : "cuBLAS not found"))], null);

    [Fact]
    public void CpuFeatures()
    {
        Assert.Equal(CheckStatus.Pass, Doctor.Doctor.CheckCpu(true, true, Architecture.X64).Status);
        var noAvx = Doctor.Doctor.CheckCpu(false, false, Architecture.X64);
        Assert.Equal(CheckStatus.Warn, noAvx.Status);
        Assert.Contains("neither AVX2 nor AVX-512", noAvx.Detail);
        Assert.NotNull(noAvx.Hint);
        Assert.Equal(CheckStatus.Pass, Doctor.Doctor.CheckOs().Status);
    }

    [Fact]
    public void MemoryAgainstTheLargestModel()
    {
        Assert.Equal(CheckStatus.Pass, Doctor.Doctor.CheckMemory(64 * GiB, 16 * GiB, haveGpu: false).Status);
        Assert.Equal(CheckStatus.Warn, Doctor.Doctor.CheckMemory(18 * GiB, 16 * GiB, haveGpu: false).Status);
        var fail = Doctor.Doctor.CheckMemory(8 * GiB, 16 * GiB, haveGpu: false);
        Assert.Equal(CheckStatus.Fail, fail.Status);
        Assert.Contains("enclave plan", fail.Hint);
    }

    [Fact]
    public void DiskAgainstAStagedCopyOfTheLargestModel()
    {
        using var home = new TempDir();
        Assert.NotEqual(CheckStatus.Fail, Doctor.Doctor.CheckDisk(home.Path, 1024).Status);
        var fail = Doctor.Doctor.CheckDisk(Path.Combine(home.Path, "not-yet-created"), long.MaxValue / 4);
        Assert.Equal(CheckStatus.Fail, fail.Status);
        Assert.Contains("GiB free", fail.Detail);
    }

    [Fact]
    public void GpuDriverAndMemory()
    {
        var none = Doctor.Doctor.CheckGpu(NoGpu);
        Assert.Equal(CheckStatus.Warn, none.Status); // the CPU backend still serves
        Assert.Contains("CPU backend", none.Detail);
        Assert.Equal(CheckStatus.Pass, Doctor.Doctor.CheckGpu(Gpus(2, 80 * GiB)).Status);
        Assert.Equal(CheckStatus.Warn, Doctor.Doctor.CheckGpu(Gpus(1, 80 * GiB, cuda: 11080)).Status);
        var broken = Doctor.Doctor.CheckGpu(Gpus(1, 80 * GiB, usable: false));
        Assert.Equal(CheckStatus.Fail, broken.Status);
        Assert.Contains("cuBLAS not found", broken.Detail);

        Assert.Equal(CheckStatus.Pass, Doctor.Doctor.CheckGpuMemory(Gpus(2, 80 * GiB), 60 * GiB).Status);
        Assert.Equal(CheckStatus.Warn, Doctor.Doctor.CheckGpuMemory(Gpus(1, 80 * GiB), 60 * GiB).Status);
        Assert.Equal(CheckStatus.Fail, Doctor.Doctor.CheckGpuMemory(Gpus(1, 80 * GiB), 75 * GiB).Status);
        Assert.Equal(CheckStatus.Warn, Doctor.Doctor.CheckGpuMemory(NoGpu, 1).Status);

        // The real probe on this machine: a verdict, never an exception.
        var real = Doctor.Doctor.CheckGpu(Doctor.Doctor.ProbeGpus());
        Assert.Contains(real.Status, new[] { CheckStatus.Pass, CheckStatus.Warn, CheckStatus.Fail });
    }

    [Fact]
    public void NcclOnlyMattersWithSeveralGpus()
    {
        Assert.Equal(CheckStatus.Pass, Doctor.Doctor.CheckNccl(1, present: false).Status);
        Assert.Equal(CheckStatus.Pass, Doctor.Doctor.CheckNccl(8, present: true).Status);
        var fail = Doctor.Doctor.CheckNccl(8, present: false);
        Assert.Equal(CheckStatus.Fail, fail.Status);
        Assert.Contains("libnccl2", fail.Hint);
    }

    [Fact]
    public void ClockOffsetFromChronyOrTimedatectl()
    {
        const string chrony = "Reference ID    : C0A80001 (ntp.example)\nStratum         : 3\nSystem time     : {0} seconds {1} of NTP time\nLast offset     : +0.000011 seconds\n";
        string? Chrony(string offset, string dir, string tool) => tool == "chronyc" ? string.Format(System.Globalization.CultureInfo.InvariantCulture, chrony, offset, dir) : null;
        Assert.Equal(-0.25, Doctor.Doctor.ParseChronyOffset(string.Format(System.Globalization.CultureInfo.InvariantCulture, chrony, "0.250000000", "slow")));
        Assert.Equal(CheckStatus.Pass, Doctor.Doctor.CheckClock((t, _) => Chrony("0.000012345", "fast", t)).Status);
        Assert.Equal(CheckStatus.Warn, Doctor.Doctor.CheckClock((t, _) => Chrony("0.300000000", "slow", t)).Status);
        var fail = Doctor.Doctor.CheckClock((t, _) => Chrony("2.500000000", "fast", t));
        Assert.Equal(CheckStatus.Fail, fail.Status);
        Assert.Contains("2.500000 s fast", fail.Detail);
        Assert.Equal(CheckStatus.Pass, Doctor.Doctor.CheckClock((t, _) => t == "timedatectl" ? "yes\n" : null).Status);
        Assert.Equal(CheckStatus.Warn, Doctor.Doctor.CheckClock((t, _) => t == "timedatectl" ? "no\n" : null).Status);
        Assert.Equal(CheckStatus.Warn, Doctor.Doctor.CheckClock((_, _) => null).Status);
    }

    [Fact]
    public void APortInUseFails()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        var port = ((IPEndPoint)listener.LocalEndpoint).Port;
        var busy = Doctor.Doctor.CheckPort("127.0.0.1", port);
        Assert.Equal(CheckStatus.Fail, busy.Status);
        Assert.Contains($":{port}", busy.Hint);
        listener.Stop();
        Assert.Equal(CheckStatus.Pass, Doctor.Doctor.CheckPort("127.0.0.1", port).Status);
    }

    [Fact]
    public void DataDirectoryPermissions()
    {
        using var dirs = new TempDir();
        var home = dirs.Sub("home");
        Assert.Equal(CheckStatus.Pass, Doctor.Doctor.CheckDataDirectory(home).Status);
        if (!OperatingSystem.IsWindows())
        {
            var keys = Directory.CreateDirectory(Path.Combine(home, "keys")).FullName;
            var key = Path.Combine(keys, "models.key");
            File.WriteAllText(key, "k:AAAA\n");
            File.SetUnixFileMode(key, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.OtherRead);
            var loose = Doctor.Doctor.CheckDataDirectory(home);
            Assert.Equal(CheckStatus.Warn, loose.Status);
            Assert.Contains("models.key is readable by others", loose.Detail);
        }

        var file = Path.Combine(dirs.Path, "a-file");
        File.WriteAllText(file, "");
        Assert.Equal(CheckStatus.Fail, Doctor.Doctor.CheckDataDirectory(file).Status);
    }

    private static (string Cert, string Key) WriteCertificate(string dir, string name, DateTimeOffset notBefore, DateTimeOffset notAfter)
    {
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest("CN=" + name, key, HashAlgorithmName.SHA256);
        using var cert = request.CreateSelfSigned(notBefore, notAfter);
        var certFile = Path.Combine(dir, name + ".crt");
        var keyFile = Path.Combine(dir, name + ".key");
        File.WriteAllText(certFile, cert.ExportCertificatePem());
        File.WriteAllText(keyFile, key.ExportPkcs8PrivateKeyPem());
        return (certFile, keyFile);
    }

    [Fact]
    public void TlsCertificateValidity()
    {
        using var dirs = new TempDir();
        var now = DateTimeOffset.UtcNow;
        var good = WriteCertificate(dirs.Path, "good", now.AddDays(-1), now.AddDays(365));
        var soon = WriteCertificate(dirs.Path, "soon", now.AddDays(-300), now.AddDays(10));
        var expired = WriteCertificate(dirs.Path, "expired", now.AddDays(-30), now.AddDays(-1));
        var other = WriteCertificate(dirs.Path, "other", now.AddDays(-1), now.AddDays(365));

        Assert.Equal(CheckStatus.Pass, Doctor.Doctor.CheckTls(good.Cert, good.Key, now).Status);
        Assert.Equal(CheckStatus.Warn, Doctor.Doctor.CheckTls(soon.Cert, soon.Key, now).Status);
        var exp = Doctor.Doctor.CheckTls(expired.Cert, expired.Key, now);
        Assert.Equal(CheckStatus.Fail, exp.Status);
        Assert.Contains("EXPIRED", exp.Detail);
        Assert.Equal(CheckStatus.Fail, Doctor.Doctor.CheckTls(good.Cert, other.Key, now).Status); // key of another certificate
        File.WriteAllText(Path.Combine(dirs.Path, "junk.pem"), "not a certificate");
        Assert.Equal(CheckStatus.Fail, Doctor.Doctor.CheckTls(Path.Combine(dirs.Path, "junk.pem"), null, now).Status);
    }

    [Fact]
    public async Task DatabaseReachability()
    {
        using var dirs = new TempDir();
        var home = dirs.Sub("home");
        Assert.Equal(CheckStatus.Pass, (await Doctor.Doctor.CheckDatabaseAsync(home, null, CancellationToken.None)).Status); // not configured
        await Enclave.Gateway.Store.GatewayStore.Resolve(null, home).MigrateAsync();
        Assert.Equal(CheckStatus.Pass, (await Doctor.Doctor.CheckDatabaseAsync(home, null, CancellationToken.None)).Status);

        // A fresh (empty) SQLite file has every migration pending.
        await File.WriteAllBytesAsync(Path.Combine(dirs.Path, "empty.db"), []);
        var pending = await Doctor.Doctor.CheckDatabaseAsync(home, Path.Combine(dirs.Path, "empty.db"), CancellationToken.None);
        Assert.Equal(CheckStatus.Warn, pending.Status);
        Assert.Contains("enclave db migrate", pending.Hint);

        // Nothing listens on a port we just released.
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        var port = ((IPEndPoint)listener.LocalEndpoint).Port;
        listener.Stop();
        var down = await Doctor.Doctor.CheckDatabaseAsync(home, $"Host=127.0.0.1;Port={port};Database=x;Username=x;Password=x;Timeout=3", CancellationToken.None);
        Assert.Equal(CheckStatus.Fail, down.Status);
        Assert.Contains("Postgres", down.Detail);
    }

    [Fact]
    public async Task RedisReachability()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        var port = ((IPEndPoint)listener.LocalEndpoint).Port;
        listener.Stop();
        var down = await Doctor.Doctor.CheckRedisAsync($"127.0.0.1:{port}", CancellationToken.None);
        Assert.Equal(CheckStatus.Fail, down.Status);
        Assert.Contains("not reachable", down.Detail);

        var redis = Environment.GetEnvironmentVariable("ENCLAVE_TEST_REDIS");
        if (!string.IsNullOrEmpty(redis))
        {
            var up = await Doctor.Doctor.CheckRedisAsync(redis, CancellationToken.None);
            Assert.Equal(CheckStatus.Pass, up.Status);
            Assert.Contains("PONG", up.Detail);
        }
    }

    [Fact]
    public async Task ModelHashesAndTheOverallVerdict()
    {
        using var dirs = new TempDir();
        var home = dirs.Sub("home");
        var store = new ModelStore(home);
        StoreSeed.Install(store, "qwen");
        var options = new DoctorOptions
        {
            Home = home,
            Ports = [],
            ProbeGpus = () => NoGpu,
            NcclPresent = () => false,
            TotalMemory = () => 64 * GiB,
            RunTool = (t, _) => t == "timedatectl" ? "yes" : null,
        };
        var healthy = await Doctor.Doctor.RunAsync(options);
        Assert.DoesNotContain(healthy, r => r.Status == CheckStatus.Fail);
        Assert.Equal(CheckStatus.Pass, healthy.Single(r => r.Check == "model qwen").Status);
        Assert.All(healthy.Where(r => r.Status != CheckStatus.Pass), r => Assert.False(string.IsNullOrEmpty(r.Hint)));

        File.AppendAllText(Path.Combine(store.PathOf("qwen"), "tokenizer.json"), " ");
        var broken = await Doctor.Doctor.RunAsync(options);
        var model = broken.Single(r => r.Check == "model qwen");
        Assert.Equal(CheckStatus.Fail, model.Status);
        Assert.Contains("tokenizer.json", model.Detail);

        var unknown = await Doctor.Doctor.RunAsync(new DoctorOptions { Home = home, Ports = [], Models = ["missing"], ProbeGpus = () => NoGpu, RunTool = (_, _) => null });
        Assert.Contains(unknown, r => r.Check == "models" && r.Status == CheckStatus.Fail);
    }
}
