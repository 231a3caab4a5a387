using System.Text;
using Enclave.Engine.Cuda.Native;

namespace Enclave.Engine.Cuda;

/// <summary>What a probe found about one GPU: whether the backend can run on it, and if not, why.</summary>
public sealed record CudaProbe(bool Usable, string Reason, int Ordinal, string Name, int ComputeMajor, int ComputeMinor, long TotalMemory, int DriverVersion)
{
    public string Describe() => Usable
        ? $"cuda:{Ordinal} {Name} (sm_{ComputeMajor}{ComputeMinor}, {TotalMemory / (1024.0 * 1024 * 1024):F0} GiB, driver {DriverVersion / 1000}.{DriverVersion % 1000 / 10})"
        : Reason;
}

/// <summary>Finds out whether a CUDA device is usable: driver present and initialised, device there, NVRTC and cuBLAS loadable.</summary>
public static class CudaDevice
{
    /// <summary>Minimum compute capability: the kernels use nothing newer than Volta, cuBLAS BF16 needs Ampere.</summary>
    public const int MinimumComputeMajor = 7;

    public static unsafe CudaProbe Probe(int ordinal = 0)
    {
        var driver = CudaDriver.TryGet(out var error);
        if (driver is null)
        {
            return Unusable(ordinal, error);
        }

        int version, count;
        if (driver.DriverGetVersion(&version) != 0)
        {
            return Unusable(ordinal, "cuDriverGetVersion failed");
        }

        var status = driver.DeviceGetCount(&count);
        if (status != 0 || count == 0)
        {
            return Unusable(ordinal, status != 0 ? $"cuDeviceGetCount failed: {driver.ErrorName(status)}" : "the NVIDIA driver is loaded but sees no CUDA device");
        }

        if (ordinal < 0 || ordinal >= count)
        {
            return Unusable(ordinal, $"no CUDA device {ordinal}: this machine has {count} (cuda:0..cuda:{count - 1})");
        }

        int device, major, minor;
        driver.Check(driver.DeviceGet(&device, ordinal), "cuDeviceGet");
        driver.Check(driver.DeviceGetAttribute(&major, CudaDriver.AttributeComputeCapabilityMajor, device), "cuDeviceGetAttribute(major)");
        driver.Check(driver.DeviceGetAttribute(&minor, CudaDriver.AttributeComputeCapabilityMinor, device), "cuDeviceGetAttribute(minor)");
        var nameBytes = stackalloc byte[256];
        driver.Check(driver.DeviceGetName(nameBytes, 256, device), "cuDeviceGetName");
        var name = Encoding.UTF8.GetString(nameBytes, new ReadOnlySpan<byte>(nameBytes, 256).IndexOf((byte)0));
        nuint total;
        driver.Check(driver.DeviceTotalMem(&total, device), "cuDeviceTotalMem");
        if (major < MinimumComputeMajor)
        {
            return new CudaProbe(false, $"{name} has compute capability {major}.{minor}; the CUDA backend needs {MinimumComputeMajor}.0 or newer", ordinal, name, major, minor, (long)total, version);
        }

        if (Nvrtc.TryGet(out error) is null)
        {
            return new CudaProbe(false, error, ordinal, name, major, minor, (long)total, version);
        }

        if (Cublas.TryGet(out error) is null)
        {
            return new CudaProbe(false, error, ordinal, name, major, minor, (long)total, version);
        }

        return new CudaProbe(true, string.Empty, ordinal, name, major, minor, (long)total, version);
    }

    /// <summary>Parses "cuda" or "cuda:N" to a device ordinal; null when the text is not a CUDA device name.</summary>
    public static int? ParseOrdinal(string device)
    {
        var d = device.Trim().ToLowerInvariant();
        if (d == "cuda")
        {
            return 0;
        }

        if (d.StartsWith("cuda:", StringComparison.Ordinal) && int.TryParse(d.AsSpan(5), out var n) && n >= 0)
        {
            return n;
        }

        return null;
    }

    private static CudaProbe Unusable(int ordinal, string reason) => new(false, reason, ordinal, string.Empty, 0, 0, 0, 0);
}
