using System.Buffers.Binary;
using System.IO.MemoryMappedFiles;
using System.Text;

namespace Enclave.Knowledge.Vectors;

/// <summary>
/// The on-disk layout of an index directory. <c>index.hdr</c> (128 bytes: magic, version, options, generation,
/// count, entry point, checksum) is the commit point: it names a generation, and <c>vectors.GEN.bin</c> /
/// <c>graph.GEN.bin</c> hold that generation's data. Flush writes the next generation's files beside the current
/// ones (temp file, fsync, rename), then replaces the header the same way; a crash at any point leaves either the
/// old header with its intact files or the new one with its files, never a mix.
/// </summary>
internal static class IndexFiles
{
    public const int HeaderBytes = 128;
    public const int Version = 1;
    public const string HeaderName = "index.hdr";
    private const int ChecksumOffset = HeaderBytes - sizeof(ulong);

    public static ReadOnlySpan<byte> IndexMagic => "ENCVIDX\0"u8;

    public static ReadOnlySpan<byte> VectorsMagic => "ENCVVEC\0"u8;

    public static ReadOnlySpan<byte> GraphMagic => "ENCVGRF\0"u8;

    public static string VectorsName(long generation) => $"vectors.{generation}.bin";

    public static string GraphName(long generation) => $"graph.{generation}.bin";

    /// <summary>What the header of an index directory records besides the options.</summary>
    public readonly record struct Manifest(VectorIndexOptions Options, long Generation, long Count, int EntryNode, int MaxLevel);

    public static void WriteManifest(string directory, Manifest manifest)
    {
        Span<byte> header = stackalloc byte[HeaderBytes];
        header.Clear();
        IndexMagic.CopyTo(header);
        var o = manifest.Options;
        BinaryPrimitives.WriteInt32LittleEndian(header[8..], Version);
        BinaryPrimitives.WriteInt32LittleEndian(header[12..], HeaderBytes);
        BinaryPrimitives.WriteInt32LittleEndian(header[16..], o.Dimensions);
        BinaryPrimitives.WriteInt32LittleEndian(header[20..], (int)o.Metric);
        BinaryPrimitives.WriteInt32LittleEndian(header[24..], (int)o.Storage);
        BinaryPrimitives.WriteInt32LittleEndian(header[28..], (int)o.Kind);
        BinaryPrimitives.WriteInt32LittleEndian(header[32..], o.M);
        BinaryPrimitives.WriteInt32LittleEndian(header[36..], o.EfConstruction);
        BinaryPrimitives.WriteInt32LittleEndian(header[40..], o.EfSearch);
        BinaryPrimitives.WriteInt32LittleEndian(header[44..], manifest.EntryNode);
        BinaryPrimitives.WriteInt64LittleEndian(header[48..], manifest.Generation);
        BinaryPrimitives.WriteInt64LittleEndian(header[56..], manifest.Count);
        BinaryPrimitives.WriteInt32LittleEndian(header[64..], manifest.MaxLevel);
        BinaryPrimitives.WriteUInt64LittleEndian(header[ChecksumOffset..], Checksum(header[..ChecksumOffset]));
        var bytes = header.ToArray();
        WriteAtomically(Path.Combine(directory, HeaderName), stream => stream.Write(bytes));
    }

    public static Manifest ReadManifest(string directory)
    {
        var path = Path.Combine(directory, HeaderName);
        if (!File.Exists(path))
        {
            throw new InvalidDataException($"{path}: no vector index here (the header file is missing)");
        }

        var header = File.ReadAllBytes(path);
        if (header.Length != HeaderBytes)
        {
            throw new InvalidDataException($"{path}: header is {header.Length} bytes, expected {HeaderBytes} (truncated or not a vector index)");
        }

        var span = header.AsSpan();
        if (!span[..8].SequenceEqual(IndexMagic))
        {
            throw new InvalidDataException($"{path}: not a vector index header (bad magic)");
        }

        var version = BinaryPrimitives.ReadInt32LittleEndian(span[8..]);
        if (version != Version)
        {
            throw new InvalidDataException($"{path}: format version {version}; this build reads version {Version}");
        }

        if (BinaryPrimitives.ReadUInt64LittleEndian(span[ChecksumOffset..]) != Checksum(span[..ChecksumOffset]))
        {
            throw new InvalidDataException($"{path}: header checksum mismatch (the file is corrupt)");
        }

        var options = new VectorIndexOptions(
            BinaryPrimitives.ReadInt32LittleEndian(span[16..]),
            (VectorMetric)BinaryPrimitives.ReadInt32LittleEndian(span[20..]),
            (VectorStorage)BinaryPrimitives.ReadInt32LittleEndian(span[24..]),
            (VectorIndexKind)BinaryPrimitives.ReadInt32LittleEndian(span[28..]),
            BinaryPrimitives.ReadInt32LittleEndian(span[32..]),
            BinaryPrimitives.ReadInt32LittleEndian(span[36..]),
            BinaryPrimitives.ReadInt32LittleEndian(span[40..]));
        try
        {
            ValidateOptions(options);
        }
        catch (ArgumentException e)
        {
            throw new InvalidDataException($"{path}: invalid options recorded ({e.Message})", e);
        }

        var manifest = new Manifest(options, BinaryPrimitives.ReadInt64LittleEndian(span[48..]), BinaryPrimitives.ReadInt64LittleEndian(span[56..]),
            BinaryPrimitives.ReadInt32LittleEndian(span[44..]), BinaryPrimitives.ReadInt32LittleEndian(span[64..]));
        if (manifest.Generation < 1 || manifest.Count < 0 || manifest.Count > int.MaxValue)
        {
            throw new InvalidDataException($"{path}: invalid generation {manifest.Generation} or count {manifest.Count}");
        }

        return manifest;
    }

    public static void ValidateOptions(VectorIndexOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        if (options.Dimensions is < 1 or > 65536)
        {
            throw new ArgumentException($"Dimensions must be between 1 and 65536, got {options.Dimensions}", nameof(options));
        }

        if (!Enum.IsDefined(options.Metric) || !Enum.IsDefined(options.Storage) || !Enum.IsDefined(options.Kind))
        {
            throw new ArgumentException($"unknown metric, storage or kind ({options.Metric}, {options.Storage}, {options.Kind})", nameof(options));
        }

        if (options.M is < 2 or > 256)
        {
            throw new ArgumentException($"M must be between 2 and 256, got {options.M}", nameof(options));
        }

        if (options.EfConstruction < 1 || options.EfSearch < 1)
        {
            throw new ArgumentException($"EfConstruction and EfSearch must be ≥ 1, got {options.EfConstruction} and {options.EfSearch}", nameof(options));
        }
    }

    /// <summary>A data file's 128-byte header: magic, version, generation, count, up to 8 layout fields, checksum.</summary>
    public static byte[] DataHeader(ReadOnlySpan<byte> magic, long generation, long count, ReadOnlySpan<long> fields)
    {
        var header = new byte[HeaderBytes];
        var span = header.AsSpan();
        magic.CopyTo(span);
        BinaryPrimitives.WriteInt32LittleEndian(span[8..], Version);
        BinaryPrimitives.WriteInt32LittleEndian(span[12..], HeaderBytes);
        BinaryPrimitives.WriteInt64LittleEndian(span[16..], generation);
        BinaryPrimitives.WriteInt64LittleEndian(span[24..], count);
        for (var i = 0; i < fields.Length; i++)
        {
            BinaryPrimitives.WriteInt64LittleEndian(span[(32 + 8 * i)..], fields[i]);
        }

        BinaryPrimitives.WriteUInt64LittleEndian(span[ChecksumOffset..], Checksum(span[..ChecksumOffset]));
        return header;
    }

    /// <summary>Validates a mapped data file's header against the manifest and returns its layout fields.</summary>
    public static long[] ReadDataHeader(MappedFile file, ReadOnlySpan<byte> magic, long generation, long count, int fieldCount)
    {
        var span = file.Span(0, HeaderBytes);
        if (!span[..8].SequenceEqual(magic))
        {
            throw new InvalidDataException($"{file.Path}: bad magic (not a {Encoding.ASCII.GetString(magic[..7])} file)");
        }

        if (BinaryPrimitives.ReadUInt64LittleEndian(span[ChecksumOffset..]) != Checksum(span[..ChecksumOffset]))
        {
            throw new InvalidDataException($"{file.Path}: header checksum mismatch (the file is corrupt)");
        }

        if (BinaryPrimitives.ReadInt32LittleEndian(span[8..]) != Version)
        {
            throw new InvalidDataException($"{file.Path}: format version {BinaryPrimitives.ReadInt32LittleEndian(span[8..])}; this build reads version {Version}");
        }

        if (BinaryPrimitives.ReadInt64LittleEndian(span[16..]) != generation || BinaryPrimitives.ReadInt64LittleEndian(span[24..]) != count)
        {
            throw new InvalidDataException($"{file.Path}: generation/count do not match {HeaderName} (files from different flushes)");
        }

        var fields = new long[fieldCount];
        for (var i = 0; i < fieldCount; i++)
        {
            fields[i] = BinaryPrimitives.ReadInt64LittleEndian(span[(32 + 8 * i)..]);
        }

        return fields;
    }

    /// <summary>Rounds a section offset up to a cache line so SIMD loads of a record never split more lines than needed.</summary>
    public static long Align(long offset) => (offset + 63) & ~63L;

    /// <summary>Writes a file next to its final name, fsyncs it, and renames it into place.</summary>
    public static void WriteAtomically(string path, Action<FileStream> write)
    {
        var temp = path + ".tmp";
        using (var stream = new FileStream(temp, FileMode.Create, FileAccess.Write, FileShare.None, bufferSize: 1 << 20))
        {
            write(stream);
            stream.Flush(flushToDisk: true);
        }

        File.Move(temp, path, overwrite: true);
    }

    private static ulong Checksum(ReadOnlySpan<byte> bytes)
    {
        // FNV-1a: enough to tell a torn or hand-edited header from a good one.
        var hash = 14695981039346656037UL;
        foreach (var b in bytes)
        {
            hash = (hash ^ b) * 1099511628211UL;
        }

        return hash;
    }
}

/// <summary>
/// A whole file mapped copy-on-write: reads come straight from the page cache (nothing copied into the managed
/// heap), and in-memory edits of mapped data (tombstones, graph repairs before the next flush) stay private to this
/// process until Flush writes a new generation; the file itself is never written through the mapping.
/// </summary>
internal sealed unsafe class MappedFile : IDisposable
{
    private readonly MemoryMappedFile _map;
    private readonly MemoryMappedViewAccessor _view;
    private byte* _pointer;

    private MappedFile(string path, MemoryMappedFile map, MemoryMappedViewAccessor view, long length)
    {
        Path = path;
        _map = map;
        _view = view;
        Length = length;
        view.SafeMemoryMappedViewHandle.AcquirePointer(ref _pointer);
        _pointer += view.PointerOffset;
    }

    public string Path { get; }

    public long Length { get; }

    public byte* Pointer => _pointer;

    public static MappedFile Open(string path)
    {
        FileStream stream;
        try
        {
            stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read | FileShare.Delete);
        }
        catch (FileNotFoundException e)
        {
            throw new InvalidDataException($"{path}: missing (the index header refers to it)", e);
        }

        var length = stream.Length;
        if (length < IndexFiles.HeaderBytes)
        {
            stream.Dispose();
            throw new InvalidDataException($"{path}: {length} bytes, shorter than its header (truncated)");
        }

        var map = MemoryMappedFile.CreateFromFile(stream, null, 0, MemoryMappedFileAccess.CopyOnWrite, HandleInheritability.None, leaveOpen: false);
        var view = map.CreateViewAccessor(0, 0, MemoryMappedFileAccess.CopyOnWrite);
        return new MappedFile(path, map, view, length);
    }

    public ReadOnlySpan<byte> Span(long offset, int length) => new(_pointer + offset, length);

    /// <summary>Throws naming the file unless it is exactly <paramref name="expected"/> bytes long.</summary>
    public void ExpectLength(long expected)
    {
        if (Length != expected)
        {
            throw new InvalidDataException($"{Path}: {Length} bytes, expected {expected} from its header ({(Length < expected ? "truncated" : "trailing data")})");
        }
    }

    public void Dispose()
    {
        if (_pointer != null)
        {
            _view.SafeMemoryMappedViewHandle.ReleasePointer();
            _pointer = null;
        }

        _view.Dispose();
        _map.Dispose();
    }
}
