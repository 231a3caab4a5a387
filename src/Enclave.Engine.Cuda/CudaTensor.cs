using Enclave.Engine.Backends;

namespace Enclave.Engine.Cuda;

/// <summary>A tensor in device memory: an allocation it owns, or a view (reshape, row slice) of another one.</summary>
public sealed class CudaTensor : DeviceTensor
{
    private readonly CudaContext? _owner;
    private ulong _pointer;

    internal CudaTensor(CudaContext owner, DType dtype, int[] shape, ulong pointer)
        : base(dtype, (int[])shape.Clone())
    {
        _owner = owner;
        _pointer = pointer;
        Context = owner;
    }

    private CudaTensor(CudaContext context, DType dtype, int[] shape, ulong pointer, CudaTensor parent)
        : base(dtype, (int[])shape.Clone())
    {
        Context = context;
        _pointer = pointer;
        Parent = parent;
    }

    internal CudaContext Context { get; }

    /// <summary>The tensor whose memory a view borrows (kept reachable for as long as the view is).</summary>
    internal CudaTensor? Parent { get; }

    /// <summary>Device address of the first element.</summary>
    public ulong Pointer
    {
        get
        {
            ObjectDisposedException.ThrowIf(_pointer == 0 && ByteCount > 0, this);
            return _pointer;
        }
    }

    public override DeviceTensor Reshape(params int[] shape)
    {
        CheckReshape(ElementCount, shape);
        return new CudaTensor(Context, DType, shape, Pointer, this);
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

        var shape = (int[])Shape.Clone();
        shape[0] = count;
        var rowBytes = Shape[0] == 0 ? 0 : ByteCount / Shape[0];
        return new CudaTensor(Context, DType, shape, Pointer + (ulong)(start * rowBytes), this);
    }

    protected override void Dispose(bool disposing)
    {
        // Device memory is freed only on an explicit Dispose: a finalizer runs on a thread without the context.
        if (disposing && _owner is not null && _pointer != 0)
        {
            _owner.Free(_pointer);
        }

        _pointer = 0;
        base.Dispose(disposing);
    }
}
