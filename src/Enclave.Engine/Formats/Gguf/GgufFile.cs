using System.IO.MemoryMappedFiles;
using System.Text;
using Enclave.Engine.Backends;

namespace Enclave.Engine.Formats.Gguf;

/// <summary>
/// One memory-mapped GGUF file (versions 2 and 3). Layout: magic "GGUF", u32 version, u64 tensor count, u64
/// metadata count, the metadata key-value pairs, the tensor infos (name, dimensions innermost first, ggml type,
/// offset into the data section), padding to <c>general.alignment</c> (32 by default), then the data. Everything
/// is validated at open: counts and lengths against the file size, known value and tensor types, offsets aligned,
/// inside the file and not overlapping. Tensors are exposed with Hugging Face's dimension order (outermost first)
/// and read in place.
/// </summary>
public sealed unsafe class GgufFile : IDisposable
{
    public const uint Magic = 0x46554747; // "GGUF" little-endian
    public const int DefaultAlignment = 32;
    private const int MaxDims = 4;
    private const long MaxStringBytes = 1L << 30;

    private readonly MappedFile file;
    private readonly byte* basePointer;
    private readonly long length;
    private readonly Dictionary<string, GgufMetadata> metadata = new(StringComparer.Ordinal);
    private readonly List<GgufMetadata> metadataInOrder = [];
    private readonly Dictionary<string, CheckpointTensor> tensors = new(StringComparer.Ordinal);
    private readonly List<CheckpointTensor> tensorsInOrder = [];
    private long position;
    private bool disposed;

    private GgufFile(string path)
    {
        Path = path;
        file = MappedFile.Open(path, 24, "GGUF file; the header alone needs 24 bytes");
        basePointer = file.Pointer;
        length = file.Length;
    }

    public string Path { get; }

    public uint Version { get; private set; }

    public int Alignment { get; private set; } = DefaultAlignment;

    /// <summary>File offset of the data section (tensor offsets are relative to it).</summary>
    public long DataOffset { get; private set; }

    public IReadOnlyList<GgufMetadata> Metadata => metadataInOrder;

    public IReadOnlyList<CheckpointTensor> Tensors => tensorsInOrder;

    public static GgufFile Open(string path)
    {
        var file = new GgufFile(path);
        try
        {
            file.Parse();
        }
        catch (Exception e) when (e is not CheckpointFormatException)
        {
            file.Dispose();
            throw new CheckpointFormatException($"{path}: corrupt GGUF file ({e.Message})", e);
        }
        catch
        {
            file.Dispose();
            throw;
        }

        return file;
    }

    public bool TryGet(string key, out GgufMetadata value) => metadata.TryGetValue(key, out value!);

    public bool ContainsKey(string key) => metadata.ContainsKey(key);

    public bool ContainsTensor(string name) => tensors.ContainsKey(name);

    public CheckpointTensor GetTensor(string name) =>
        tensors.TryGetValue(name, out var t) ? t : throw new CheckpointFormatException($"{Path}: tensor '{name}' is missing from the GGUF file");

    public string? GetString(string key) => metadata.TryGetValue(key, out var m)
        ? m.Value as string ?? throw Wrong(key, m, "a string")
        : null;

    public long? GetInteger(string key)
    {
        if (!metadata.TryGetValue(key, out var m))
        {
            return null;
        }

        return m.Value switch
        {
            byte v => v,
            sbyte v => v,
            ushort v => v,
            short v => v,
            uint v => v,
            int v => v,
            ulong v => checked((long)v),
            long v => v,
            _ => throw Wrong(key, m, "an integer"),
        };
    }

    public double? GetFloat(string key)
    {
        if (!metadata.TryGetValue(key, out var m))
        {
            return null;
        }

        return m.Value switch
        {
            float v => v,
            double v => v,
            _ => GetInteger(key),
        };
    }

    public bool? GetBool(string key) => metadata.TryGetValue(key, out var m)
        ? m.Value as bool? ?? throw Wrong(key, m, "a bool")
        : null;

    public GgufArray? GetArray(string key) => metadata.TryGetValue(key, out var m)
        ? m.Value as GgufArray ?? throw Wrong(key, m, "an array")
        : null;

    private CheckpointFormatException Wrong(string key, GgufMetadata m, string expected) =>
        new($"{Path}: metadata '{key}' is {m.Type}, expected {expected}");

    private void Parse()
    {
        var magic = ReadU32();
        if (magic != Magic)
        {
            throw new CheckpointFormatException($"{Path}: not a GGUF file (magic 0x{magic:x8}, expected \"GGUF\")");
        }

        Version = ReadU32();
        if (Version is not (2 or 3))
        {
            throw new CheckpointFormatException($"{Path}: GGUF version {Version} is not supported (only versions 2 and 3 are)");
        }

        var tensorCount = ReadU64();
        var kvCount = ReadU64();

        // Each entry takes at least 8 bytes, so counts beyond the file size are lies that would loop for ages.
        if (tensorCount > (ulong)length / 8 || kvCount > (ulong)length / 8)
        {
            throw new CheckpointFormatException($"{Path}: header claims {tensorCount} tensors and {kvCount} metadata entries, more than a file of {length} bytes can hold");
        }

        for (ulong i = 0; i < kvCount; i++)
        {
            var key = ReadString("a metadata key");
            var type = ReadValueType(key);
            var value = ReadValue(type, key);
            var entry = new GgufMetadata(key, type, value);
            if (!metadata.TryAdd(key, entry))
            {
                throw new CheckpointFormatException($"{Path}: metadata key '{key}' appears twice");
            }

            metadataInOrder.Add(entry);
        }

        if (metadata.TryGetValue("general.alignment", out var alignment))
        {
            var a = alignment.Value is uint u ? (long)u : GetInteger("general.alignment")!.Value;
            if (a <= 0 || (a & (a - 1)) != 0 || a > 1 << 20)
            {
                throw new CheckpointFormatException($"{Path}: general.alignment is {a}; it must be a power of two");
            }

            Alignment = (int)a;
        }

        var infos = new List<(string Name, int[] Shape, uint Type, ulong Offset)>();
        for (ulong i = 0; i < tensorCount; i++)
        {
            var name = ReadString("a tensor name");
            var dims = ReadU32();
            if (dims is 0 or > MaxDims)
            {
                throw new CheckpointFormatException($"{Path}: tensor '{name}' has {dims} dimensions (1 to {MaxDims} are valid)");
            }

            var ne = new long[dims];
            for (var d = 0; d < dims; d++)
            {
                var v = ReadU64();
                if (v > int.MaxValue)
                {
                    throw new CheckpointFormatException($"{Path}: tensor '{name}' dimension {d} is {v}, too large");
                }

                ne[d] = (long)v;
            }

            var type = ReadU32();
            var offset = ReadU64();

            // GGUF lists the contiguous dimension first; the engine's shapes put it last.
            var shape = new int[dims];
            for (var d = 0; d < dims; d++)
            {
                shape[d] = (int)ne[dims - 1 - d];
            }

            infos.Add((name, shape, type, offset));
        }

        DataOffset = (position + Alignment - 1) / Alignment * Alignment;
        if (DataOffset > length)
        {
            throw new CheckpointFormatException($"{Path}: truncated GGUF file (data section would start at {DataOffset}, file is {length} bytes)");
        }

        var dataLength = length - DataOffset;
        var extents = new List<(ulong Begin, ulong End, string Name)>();
        foreach (var (name, shape, typeId, offset) in infos)
        {
            if (!GgmlTypes.IsSupported(typeId))
            {
                throw new CheckpointFormatException(
                    $"{Path}: tensor '{name}' has ggml type {GgmlTypes.Name(typeId)}, which is not supported (supported: F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K)");
            }

            var dtype = GgmlTypes.ToDType((GgmlType)typeId);
            long elements = 1;
            foreach (var d in shape)
            {
                elements *= d;
            }

            if (shape[^1] % dtype.BlockElements() != 0)
            {
                throw new CheckpointFormatException($"{Path}: tensor '{name}' rows of {shape[^1]} values are not whole {dtype} blocks of {dtype.BlockElements()}");
            }

            var bytes = dtype.StorageBytes(elements);
            if (offset % (ulong)Alignment != 0)
            {
                throw new CheckpointFormatException($"{Path}: tensor '{name}' starts at data offset {offset}, not a multiple of the alignment {Alignment}");
            }

            if (offset > (ulong)dataLength || (ulong)bytes > (ulong)dataLength - offset)
            {
                throw new CheckpointFormatException(
                    $"{Path}: tensor '{name}' ({bytes} bytes at data offset {offset}) extends past the end of the file (data section is {dataLength} bytes; truncated?)");
            }

            extents.Add((offset, offset + (ulong)bytes, name));
            var tensor = new CheckpointTensor(name, dtype, shape, basePointer + DataOffset + (long)offset, bytes, Path, mapped: true);
            if (!tensors.TryAdd(name, tensor))
            {
                throw new CheckpointFormatException($"{Path}: tensor '{name}' appears twice");
            }

            tensorsInOrder.Add(tensor);
        }

        extents.Sort((a, b) => a.Begin.CompareTo(b.Begin));
        for (var i = 1; i < extents.Count; i++)
        {
            if (extents[i].Begin < extents[i - 1].End)
            {
                throw new CheckpointFormatException($"{Path}: tensors '{extents[i - 1].Name}' and '{extents[i].Name}' overlap");
            }
        }
    }

    private GgufValueType ReadValueType(string key)
    {
        var type = ReadU32();
        if (type > (uint)GgufValueType.Float64)
        {
            throw new CheckpointFormatException($"{Path}: metadata '{key}' has unknown value type {type}");
        }

        return (GgufValueType)type;
    }

    private object ReadValue(GgufValueType type, string key)
    {
        switch (type)
        {
            case GgufValueType.UInt8: return Read<byte>();
            case GgufValueType.Int8: return Read<sbyte>();
            case GgufValueType.UInt16: return Read<ushort>();
            case GgufValueType.Int16: return Read<short>();
            case GgufValueType.UInt32: return Read<uint>();
            case GgufValueType.Int32: return Read<int>();
            case GgufValueType.Float32: return Read<float>();
            case GgufValueType.UInt64: return Read<ulong>();
            case GgufValueType.Int64: return Read<long>();
            case GgufValueType.Float64: return Read<double>();
            case GgufValueType.Bool:
                var b = Read<byte>();
                return b switch
                {
                    0 => false,
                    1 => true,
                    _ => throw new CheckpointFormatException($"{Path}: metadata '{key}' is a bool holding {b}"),
                };
            case GgufValueType.String:
                return ReadString($"metadata '{key}'");
            case GgufValueType.Array:
                var elementType = ReadValueType(key);
                var count = ReadU64();
                if (count > (ulong)(length - position))
                {
                    throw new CheckpointFormatException($"{Path}: metadata '{key}' claims {count} array elements, more than the file holds");
                }

                return new GgufArray(elementType, ReadArray(elementType, (int)count, key));
            default:
                throw new CheckpointFormatException($"{Path}: metadata '{key}' has unknown value type {(uint)type}");
        }
    }

    private Array ReadArray(GgufValueType type, int count, string key)
    {
        switch (type)
        {
            case GgufValueType.UInt8: return ReadPrimitiveArray<byte>(count);
            case GgufValueType.Int8: return ReadPrimitiveArray<sbyte>(count);
            case GgufValueType.UInt16: return ReadPrimitiveArray<ushort>(count);
            case GgufValueType.Int16: return ReadPrimitiveArray<short>(count);
            case GgufValueType.UInt32: return ReadPrimitiveArray<uint>(count);
            case GgufValueType.Int32: return ReadPrimitiveArray<int>(count);
            case GgufValueType.Float32: return ReadPrimitiveArray<float>(count);
            case GgufValueType.UInt64: return ReadPrimitiveArray<ulong>(count);
            case GgufValueType.Int64: return ReadPrimitiveArray<long>(count);
            case GgufValueType.Float64: return ReadPrimitiveArray<double>(count);
            case GgufValueType.Bool:
                var bools = new bool[count];
                for (var i = 0; i < count; i++)
                {
                    bools[i] = Read<byte>() != 0;
                }

                return bools;
            case GgufValueType.String:
                var strings = new string[count];
                for (var i = 0; i < count; i++)
                {
                    strings[i] = ReadString($"element {i} of metadata '{key}'");
                }

                return strings;
            case GgufValueType.Array:
                var arrays = new GgufArray[count];
                for (var i = 0; i < count; i++)
                {
                    var inner = ReadValueType(key);
                    var n = ReadU64();
                    if (n > (ulong)(length - position))
                    {
                        throw new CheckpointFormatException($"{Path}: metadata '{key}' claims {n} nested array elements, more than the file holds");
                    }

                    arrays[i] = new GgufArray(inner, ReadArray(inner, (int)n, key));
                }

                return arrays;
            default:
                throw new CheckpointFormatException($"{Path}: metadata '{key}' has unknown array element type {(uint)type}");
        }
    }

    private T[] ReadPrimitiveArray<T>(int count)
        where T : unmanaged
    {
        var bytes = (long)count * sizeof(T);
        Need(bytes, "an array");
        var result = new ReadOnlySpan<T>(basePointer + position, count).ToArray();
        position += bytes;
        return result;
    }

    private string ReadString(string what)
    {
        var n = ReadU64();
        if (n > MaxStringBytes)
        {
            throw new CheckpointFormatException($"{Path}: {what} claims a length of {n} bytes");
        }

        Need((long)n, what);
        string s;
        try
        {
            s = new UTF8Encoding(false, true).GetString(basePointer + position, (int)n);
        }
        catch (DecoderFallbackException e)
        {
            throw new CheckpointFormatException($"{Path}: {what} at offset {position} is not valid UTF-8", e);
        }

        position += (long)n;
        return s;
    }

    private uint ReadU32() => Read<uint>();

    private ulong ReadU64() => Read<ulong>();

    private T Read<T>()
        where T : unmanaged
    {
        Need(sizeof(T), "a value");
        var v = System.Runtime.CompilerServices.Unsafe.ReadUnaligned<T>(basePointer + position);
        position += sizeof(T);
        return v;
    }

    private void Need(long bytes, string what)
    {
        if (bytes < 0 || position + bytes > length)
        {
            throw new CheckpointFormatException($"{Path}: truncated GGUF file (reading {what} at offset {position} needs {bytes} bytes; the file has {length})");
        }
    }

    public void Dispose()
    {
        if (disposed)
        {
            return;
        }

        disposed = true;
        file.Dispose();
    }
}
