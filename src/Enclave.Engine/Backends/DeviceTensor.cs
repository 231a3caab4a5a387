namespace Enclave.Engine.Backends;

/// <summary>
/// A dense row-major tensor owned by a backend. Its data may live in host memory (CPU backend, possibly a
/// memory-mapped checkpoint) or in device memory (CUDA); callers never touch the data directly, only through
/// <see cref="IBackend"/> operations and the explicit upload/download calls.
/// </summary>
public abstract class DeviceTensor : IDisposable
{
    protected DeviceTensor(DType dtype, int[] shape)
    {
        DType = dtype;
        Shape = shape;
        long count = 1;
        foreach (var dim in shape)
        {
            if (dim < 0)
            {
                throw new ArgumentException($"negative dimension in shape [{string.Join(", ", shape)}]", nameof(shape));
            }

            count *= dim;
        }

        ElementCount = count;
        if (dtype.IsQuantized() && Columns % dtype.BlockElements() != 0)
        {
            throw new ArgumentException($"a {dtype} tensor needs a last dimension that is a multiple of {dtype.BlockElements()}, got [{string.Join(", ", shape)}]", nameof(shape));
        }
    }

    public DType DType { get; }

    public int[] Shape { get; }

    public long ElementCount { get; }

    public long ByteCount => DType.StorageBytes(ElementCount);

    public int Rank => Shape.Length;

    /// <summary>Size of the last dimension (the contiguous one).</summary>
    public int Columns => Shape.Length == 0 ? 1 : Shape[^1];

    /// <summary>Product of all dimensions but the last.</summary>
    public long Rows => Columns == 0 ? 0 : ElementCount / Columns;

    /// <summary>A view of the same data with another shape of the same element count; the view does not own the data.</summary>
    public abstract DeviceTensor Reshape(params int[] shape);

    /// <summary>A view of rows [start, start+count) along the first dimension; the view does not own the data.</summary>
    public abstract DeviceTensor SliceRows(int start, int count);

    public override string ToString() => $"{DType}[{string.Join(", ", Shape)}]";

    public void Dispose()
    {
        Dispose(true);
        GC.SuppressFinalize(this);
    }

    protected virtual void Dispose(bool disposing)
    {
    }

    protected static void CheckReshape(long elementCount, int[] shape)
    {
        long count = 1;
        foreach (var dim in shape)
        {
            count *= dim;
        }

        if (count != elementCount)
        {
            throw new ArgumentException($"cannot reshape {elementCount} elements to [{string.Join(", ", shape)}]", nameof(shape));
        }
    }
}
