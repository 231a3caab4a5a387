using System.IO.MemoryMappedFiles;

namespace Enclave.Engine.Formats;

/// <summary>
/// A whole checkpoint file mapped read-only into memory: tensors are pointers into it, never copies. Opening checks
/// the file exists and holds at least the format's fixed header, and names the file in every error.
/// </summary>
internal sealed unsafe class MappedFile : IDisposable
{
    private readonly MemoryMappedFile map;
    private readonly MemoryMappedViewAccessor view;
    private bool disposed;

    private MappedFile(MemoryMappedFile map, MemoryMappedViewAccessor view, byte* pointer, long length)
    {
        this.map = map;
        this.view = view;
        Pointer = pointer;
        Length = length;
    }

    /// <summary>Address of the file's first byte.</summary>
    public byte* Pointer { get; }

    public long Length { get; }

    /// <param name="minimum">Bytes the format's fixed header needs; <paramref name="truncated"/> explains it.</param>
    public static MappedFile Open(string path, long minimum, string truncated)
    {
        FileInfo info;
        try
        {
            info = new FileInfo(path);
            if (!info.Exists)
            {
                throw new CheckpointFormatException($"{path}: file not found");
            }
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new CheckpointFormatException($"{path}: cannot open ({e.Message})", e);
        }

        var length = info.Length;
        if (length < minimum)
        {
            throw new CheckpointFormatException($"{path}: truncated {truncated} ({length} bytes)");
        }

        MemoryMappedFile? map = null;
        MemoryMappedViewAccessor? view = null;
        try
        {
            map = MemoryMappedFile.CreateFromFile(path, FileMode.Open, null, 0, MemoryMappedFileAccess.Read);
            view = map.CreateViewAccessor(0, length, MemoryMappedFileAccess.Read);
            byte* p = null;
            view.SafeMemoryMappedViewHandle.AcquirePointer(ref p);
            return new MappedFile(map, view, p + view.PointerOffset, length);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            view?.Dispose();
            map?.Dispose();
            throw new CheckpointFormatException($"{path}: cannot memory-map ({e.Message})", e);
        }
    }

    public void Dispose()
    {
        if (disposed)
        {
            return;
        }

        disposed = true;
        view.SafeMemoryMappedViewHandle.ReleasePointer();
        view.Dispose();
        map.Dispose();
    }
}
