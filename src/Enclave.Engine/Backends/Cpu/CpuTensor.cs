using System.Runtime.InteropServices;

namespace Enclave.Engine.Backends.Cpu;

/// <summary>
/// A tensor in host memory: either a 64-byte aligned native block it owns, or a non-owning window onto memory
/// owned by something else (a memory-mapped checkpoint, or the tensor a view was taken from).
/// </summary>
public sealed unsafe class CpuTensor : DeviceTensor
{
    private byte* _data;
    private bool _ownsData;

    // Keeps the owner of borrowed memory reachable for as long as this view is.
    private readonly object? _owner;

    internal CpuTensor(DType dtype, int[] shape)
        : base(dtype, (int[])shape.Clone())
    {
        var bytes = (nuint)Math.Max(ByteCount, 1);
        _data = (byte*)NativeMemory.AlignedAlloc(bytes, 64);
        _ownsData = true;
    }

    internal CpuTensor(DType dtype, int[] shape, byte* data, object? owner)
        : base(dtype, (int[])shape.Clone())
    {
        _data = data;
        _owner = owner;
        _ownsData = false;

        // Nothing to free, so views (made per step by model code) stay off the finalizer queue.
        GC.SuppressFinalize(this);
    }

    private int _halfFinite;

    /// <summary>
    /// For F16 tensors: whether no element is an infinity or NaN, found by one scan on first use and remembered
    /// (weights are immutable), so matrix products can use the shorter half-to-float conversion.
    /// </summary>
    internal bool HalfValuesFinite
    {
        get
        {
            if (_halfFinite == 0)
            {
                _halfFinite = DType == DType.F16 && !HalfBits.AnyNonFinite((ushort*)Pointer, ElementCount) ? 1 : 2;
            }

            return _halfFinite == 1;
        }
    }

    /// <summary>Forgets the result of the finiteness scan: the contents were overwritten.</summary>
    internal void ContentsChanged() => _halfFinite = 0;

    /// <summary>
    /// For Q8_0 weights: whether the bytes are in the 16-row grouped layout of <see cref="CpuQ8_0Groups"/> rather than
    /// the file's, which every reader of the tensor (products, embedding rows) then follows. Such a tensor is not
    /// sliced or reshaped.
    /// </summary>
    internal bool Q8_0Grouped { get; set; }

    /// <summary>Whether the bytes are a window onto a read-only file mapping (a checkpoint's weights).</summary>
    internal bool MappedWeights { get; init; }

    /// <summary>Whether the backend has already looked at grouping this Q8_0 tensor (it does so once, at its first product).</summary>
    internal bool GroupingChecked { get; set; }

    /// <summary>
    /// Takes <paramref name="owned"/> (64-byte aligned native memory of <see cref="DeviceTensor.ByteCount"/> bytes) as
    /// this tensor's bytes from now on, freed on dispose; the memory read before is left to its owner.
    /// </summary>
    internal void Adopt(byte* owned)
    {
        ObjectDisposedException.ThrowIf(_data == null, this);
        if (_ownsData)
        {
            NativeMemory.AlignedFree(_data);
        }

        _data = owned;
        _ownsData = true;
        GC.ReRegisterForFinalize(this);
    }

    /// <summary>Whether this tensor frees its memory on dispose (false for views and mapped weights).</summary>
    public bool OwnsData => _ownsData;

    internal object? Owner => _owner;

    /// <summary>Address of the first element.</summary>
    internal byte* Pointer
    {
        get
        {
            ObjectDisposedException.ThrowIf(_data == null, this);
            return _data;
        }
    }

    internal float* F32Pointer
    {
        get
        {
            RequireDType(DType.F32);
            return (float*)Pointer;
        }
    }

    internal Span<byte> Bytes => new(Pointer, checked((int)ByteCount));

    internal Span<float> F32Span => new(F32Pointer, checked((int)ElementCount));

    /// <summary>Bytes from one first-dimension row to the next.</summary>
    internal long FirstDimStrideBytes => Shape.Length == 0 || Shape[0] == 0 ? 0 : ByteCount / Shape[0];

    public override DeviceTensor Reshape(params int[] shape)
    {
        CheckReshape(ElementCount, shape);
        RequireFileLayout();
        return new CpuTensor(DType, shape, Pointer, this);
    }

    public override DeviceTensor SliceRows(int start, int count)
    {
        if (Shape.Length == 0)
        {
            throw new InvalidOperationException("cannot slice a scalar tensor");
        }

        if (start < 0 || count < 0 || (long)start + count > Shape[0])
        {
            throw new ArgumentOutOfRangeException(nameof(start), $"rows [{start}, {start + count}) outside {this}");
        }

        RequireFileLayout();
        var shape = (int[])Shape.Clone();
        shape[0] = count;
        return new CpuTensor(DType, shape, Pointer + (start * FirstDimStrideBytes), this);
    }

    private void RequireFileLayout()
    {
        if (Q8_0Grouped)
        {
            throw new InvalidOperationException($"{this} holds Q8_0 weights in 16-row groups, which cannot be viewed in part or reshaped");
        }
    }

    internal void RequireDType(DType dtype)
    {
        if (DType != dtype)
        {
            throw new ArgumentException($"expected a {dtype} tensor, got {this}");
        }
    }

    protected override void Dispose(bool disposing)
    {
        if (_ownsData && _data != null)
        {
            NativeMemory.AlignedFree(_data);
        }

        _data = null;
        base.Dispose(disposing);
    }

    ~CpuTensor()
    {
        Dispose(false);
    }
}
