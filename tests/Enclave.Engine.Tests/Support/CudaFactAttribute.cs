using Enclave.Engine.Cuda;

namespace Enclave.Engine.Tests.Support;

/// <summary>Whether this machine has a CUDA device the backend can use, probed once per test run.</summary>
public static class CudaAvailability
{
    private static readonly Lazy<CudaProbe> Probe = new(() => CudaDevice.Probe(0));

    public static bool Usable => Probe.Value.Usable;

    public static string SkipReason => "no usable CUDA device: " + Probe.Value.Reason;
}

/// <summary>A fact that is skipped, with the probe's reason, where no usable CUDA device exists (CI has none).</summary>
public sealed class CudaFactAttribute : FactAttribute
{
    public CudaFactAttribute()
    {
        if (!CudaAvailability.Usable)
        {
            Skip = CudaAvailability.SkipReason;
        }
    }
}

/// <summary>A theory that is skipped, with the probe's reason, where no usable CUDA device exists.</summary>
public sealed class CudaTheoryAttribute : TheoryAttribute
{
    public CudaTheoryAttribute()
    {
        if (!CudaAvailability.Usable)
        {
            Skip = CudaAvailability.SkipReason;
        }
    }
}
