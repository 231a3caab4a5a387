using Enclave.Engine.Backends;

namespace Enclave.Engine.Formats;

/// <summary>
/// A tensor as stored in a checkpoint file: its name, dtype, shape and the address of its little-endian bytes
/// inside a memory-mapped file. Valid as long as the owning checkpoint is open; reading it never copies.
/// </summary>
public sealed unsafe class CheckpointTensor
{
    public CheckpointTensor(string name, DType dtype, int[] shape, byte* data, long byteCount, string file, bool mapped = false)
    {
        Mapped = mapped;
        Name = name;
        DType = dtype;
        Shape = shape;
        Data = data;
        ByteCount = byteCount;
        File = file;
    }

    public string Name { get; }

    public DType DType { get; }

    public int[] Shape { get; }

    /// <summary>Pointer to the first byte of the tensor's data in the mapped file.</summary>
    public byte* Data { get; }

    public long ByteCount { get; }

    /// <summary>
    /// Whether <see cref="Data"/> lies in a read-only file mapping (not in memory a loader owns), so that a backend
    /// which keeps its own copy may drop those pages from the process: they read back from the file if touched again.
    /// </summary>
    public bool Mapped { get; }

    /// <summary>Path of the file the tensor came from, for error messages.</summary>
    public string File { get; }

    public long ElementCount
    {
        get
        {
            long count = 1;
            foreach (var d in Shape)
            {
                count *= d;
            }

            return count;
        }
    }

    public ReadOnlySpan<byte> Bytes => new(Data, checked((int)ByteCount));

    public override string ToString() => $"{Name}: {DType}[{string.Join(", ", Shape)}]";
}
