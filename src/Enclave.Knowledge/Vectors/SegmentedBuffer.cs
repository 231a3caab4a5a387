using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace Enclave.Knowledge.Vectors;

/// <summary>
/// Fixed-stride elements outside the managed heap: the first <see cref="BaseCount"/> elements live in a region of a
/// memory-mapped file (what Open found on disk), later ones in native segments that double in size, so elements
/// never move once written (a pointer stays valid while the buffer lives) and growth never copies what exists.
/// Element i ≥ BaseCount is element m = i − BaseCount of the segment list: segment s holds
/// <c>first·2^s</c> elements starting at <c>first·(2^s − 1)</c>.
/// </summary>
internal sealed unsafe class SegmentedBuffer : IDisposable
{
    private const int MaxSegments = 40;
    private readonly byte* _base;
    private readonly int _firstShift;
    private readonly nint[] _segments = new nint[MaxSegments];
    private long _capacity;

    /// <param name="stride">bytes per element</param>
    /// <param name="firstSegmentShift">log2 of the first native segment's element count</param>
    /// <param name="mapped">the mapped region holding the first <paramref name="baseCount"/> elements, or null</param>
    public SegmentedBuffer(int stride, int firstSegmentShift, byte* mapped = null, long baseCount = 0)
    {
        Stride = stride;
        _firstShift = firstSegmentShift;
        _base = mapped;
        BaseCount = baseCount;
        _capacity = baseCount;
    }

    public int Stride { get; }

    public long BaseCount { get; }

    /// <summary>Native bytes allocated for elements past the mapped region.</summary>
    public long NativeBytes { get; private set; }

    public byte* this[long index]
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        get
        {
            if (index < BaseCount)
            {
                return _base + index * Stride;
            }

            var m = index - BaseCount;
            var s = BitOperations.Log2((ulong)((m >> _firstShift) + 1));
            var offset = m - (((1L << s) - 1) << _firstShift);
            return (byte*)_segments[s] + offset * Stride;
        }
    }

    /// <summary>Makes elements [0, count) addressable; new native elements start zeroed.</summary>
    public void EnsureCapacity(long count)
    {
        while (_capacity < count)
        {
            var m = _capacity - BaseCount;
            var s = BitOperations.Log2((ulong)((m >> _firstShift) + 1));
            var elements = 1L << (_firstShift + s);
            var bytes = (nuint)(elements * Stride);
            _segments[s] = (nint)NativeMemory.AlignedAlloc(bytes, 64);
            NativeMemory.Clear((void*)_segments[s], bytes);
            NativeBytes += (long)bytes;
            _capacity += elements;
        }
    }

    /// <summary>
    /// The length of the contiguous run starting at element <paramref name="index"/> (up to the end of the mapped
    /// region or of its segment), so callers can keep a run of elements from straddling two segments.
    /// </summary>
    public long ContiguousFrom(long index)
    {
        if (index < BaseCount)
        {
            return BaseCount - index;
        }

        var m = index - BaseCount;
        var s = BitOperations.Log2((ulong)((m >> _firstShift) + 1));
        var segmentEnd = ((1L << (s + 1)) - 1) << _firstShift;
        return segmentEnd - m;
    }

    public void Dispose()
    {
        for (var s = 0; s < MaxSegments; s++)
        {
            if (_segments[s] != 0)
            {
                NativeMemory.AlignedFree((void*)_segments[s]);
                _segments[s] = 0;
            }
        }

        NativeBytes = 0;
    }
}
