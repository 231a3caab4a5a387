namespace Enclave.Engine.Backends;

/// <summary>
/// A backend whose memory is a fixed device pool (a GPU), so the KV cache can be sized from what is left after the
/// weights: vLLM's <c>--gpu-memory-utilization</c>. Host backends do not implement it.
/// </summary>
public interface IDeviceMemory
{
    /// <summary>Free and total bytes of the device right now.</summary>
    (long Free, long Total) MemoryInfo();
}
