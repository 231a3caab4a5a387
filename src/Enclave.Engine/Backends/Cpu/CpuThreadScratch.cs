using System.Runtime.InteropServices;

namespace Enclave.Engine.Backends.Cpu;

/// <summary>
/// One 64-byte aligned fp32 buffer per worker thread for a job's tiles, grown (never shrunk) to the largest size asked,
/// so that a job run allocates nothing once the sizes have been seen. Native memory, freed by <see cref="Dispose"/>
/// (after which it may grow again).
/// </summary>
internal sealed unsafe class CpuThreadScratch : IDisposable
{
    private float*[] _buffers = [];
    private long _floats;

    /// <summary>Worker <paramref name="worker"/>'s buffer (valid after <see cref="Ensure"/>).</summary>
    public float* this[int worker] => _buffers[worker];

    /// <summary>Makes sure each of <paramref name="threads"/> workers has a buffer of at least <paramref name="floats"/>.</summary>
    public void Ensure(int threads, long floats)
    {
        if (_buffers.Length >= threads && _floats >= floats)
        {
            return;
        }

        var size = Math.Max(floats, _floats);
        Dispose();
        _floats = size;
        _buffers = new float*[threads];
        for (var i = 0; i < threads; i++)
        {
            _buffers[i] = (float*)NativeMemory.AlignedAlloc((nuint)(size * sizeof(float)), 64);
        }
    }

    public void Dispose()
    {
        foreach (var buffer in _buffers)
        {
            NativeMemory.AlignedFree(buffer);
        }

        _buffers = [];
        _floats = 0;
    }
}
