using System.IO.MemoryMappedFiles;
using System.Text.Json;
using Enclave.Engine.Backends;

namespace Enclave.Engine.Formats;

/// <summary>
/// One memory-mapped <c>.safetensors</c> file. Layout: an 8-byte little-endian header length N, N bytes of JSON
/// mapping tensor names to {dtype, shape, data_offsets: [begin, end)} relative to the data section, then the data.
/// The header is validated completely at open (offsets inside the file, sizes matching shapes, no overlaps), so a
/// truncated or lying file fails here with its name rather than later with garbage.
/// </summary>
public sealed unsafe class SafetensorsFile : IDisposable
{
    private const long MaxHeaderBytes = 100L * 1024 * 1024;
    private readonly MappedFile? file;
    private readonly byte* basePointer;
    private readonly Dictionary<string, CheckpointTensor> tensors = new(StringComparer.Ordinal);
    private bool disposed;

    public SafetensorsFile(string path)
    {
        Path = path;
        file = MappedFile.Open(path, 8, "safetensors file; the 8-byte header length is missing");
        basePointer = file.Pointer;
        var length = file.Length;
        try
        {
            ParseHeader(length);
        }
        catch
        {
            Dispose();
            throw;
        }
    }

    /// <summary>
    /// Parses a safetensors image that is already in memory (weights decrypted from an encrypted checkpoint), with the
    /// same validation as a file. The caller owns the memory and keeps it alive while the tensors are used.
    /// </summary>
    public SafetensorsFile(string path, byte* data, long length)
    {
        Path = path;
        if (length < 8)
        {
            throw new CheckpointFormatException($"{path}: truncated safetensors image ({length} bytes; the 8-byte header length is missing)");
        }

        basePointer = data;
        ParseHeader(length);
    }

    public string Path { get; }

    public IReadOnlyDictionary<string, CheckpointTensor> Tensors => tensors;

    public IReadOnlyDictionary<string, string> Metadata { get; private set; } = new Dictionary<string, string>();

    public static DType ParseDType(string dtype, string path, string tensor) => dtype switch
    {
        "F32" => DType.F32,
        "F16" => DType.F16,
        "BF16" => DType.BF16,
        "I32" => DType.I32,
        "U8" => DType.U8,
        "F8_E4M3" => DType.F8E4M3,
        _ => throw new CheckpointFormatException(
            $"{path}: tensor '{tensor}' has dtype {dtype}, which is not supported (supported: F32, F16, BF16, F8_E4M3, I32, U8)"),
    };

    private void ParseHeader(long fileLength)
    {
        var headerLength = *(long*)basePointer;
        if (headerLength <= 0 || headerLength > MaxHeaderBytes || 8 + headerLength > fileLength)
        {
            throw new CheckpointFormatException(
                $"{Path}: header length {headerLength} is invalid for a file of {fileLength} bytes (corrupt or not a safetensors file)");
        }

        var dataStart = 8 + headerLength;
        var dataLength = fileLength - dataStart;
        JsonDocument doc;
        try
        {
            doc = JsonDocument.Parse(new ReadOnlyMemory<byte>(new ReadOnlySpan<byte>(basePointer + 8, (int)headerLength).ToArray()));
        }
        catch (JsonException e)
        {
            throw new CheckpointFormatException($"{Path}: header is not valid JSON ({e.Message})", e);
        }

        using (doc)
        {
            if (doc.RootElement.ValueKind != JsonValueKind.Object)
            {
                throw new CheckpointFormatException($"{Path}: header must be a JSON object");
            }

            var ranges = new List<(long Begin, long End, string Name)>();
            foreach (var property in doc.RootElement.EnumerateObject())
            {
                if (property.Name == "__metadata__")
                {
                    Metadata = ReadMetadata(property.Value);
                    continue;
                }

                var (tensor, begin, end) = ReadTensor(property, dataStart, dataLength);
                tensors.Add(property.Name, tensor);
                ranges.Add((begin, end, property.Name));
            }

            ranges.Sort((a, b) => a.Begin.CompareTo(b.Begin));
            for (var i = 1; i < ranges.Count; i++)
            {
                if (ranges[i].Begin < ranges[i - 1].End)
                {
                    throw new CheckpointFormatException(
                        $"{Path}: tensors '{ranges[i - 1].Name}' and '{ranges[i].Name}' overlap in the data section");
                }
            }
        }
    }

    private (CheckpointTensor Tensor, long Begin, long End) ReadTensor(JsonProperty property, long dataStart, long dataLength)
    {
        var name = property.Name;
        var e = property.Value;
        if (e.ValueKind != JsonValueKind.Object
            || !e.TryGetProperty("dtype", out var dtypeElement) || dtypeElement.ValueKind != JsonValueKind.String
            || !e.TryGetProperty("shape", out var shapeElement) || shapeElement.ValueKind != JsonValueKind.Array
            || !e.TryGetProperty("data_offsets", out var offsetsElement) || offsetsElement.ValueKind != JsonValueKind.Array
            || offsetsElement.GetArrayLength() != 2)
        {
            throw new CheckpointFormatException($"{Path}: tensor '{name}' entry must have dtype, shape and data_offsets [begin, end]");
        }

        var dtype = ParseDType(dtypeElement.GetString()!, Path, name);
        var shape = new int[shapeElement.GetArrayLength()];
        long elements = 1;
        var i = 0;
        foreach (var dim in shapeElement.EnumerateArray())
        {
            if (dim.ValueKind != JsonValueKind.Number || !dim.TryGetInt32(out var d) || d < 0)
            {
                throw new CheckpointFormatException($"{Path}: tensor '{name}' has an invalid shape {shapeElement.GetRawText()}");
            }

            shape[i++] = d;
            elements = checked(elements * d);
        }

        if (!offsetsElement[0].TryGetInt64(out var begin) || !offsetsElement[1].TryGetInt64(out var end) || begin < 0 || end < begin)
        {
            throw new CheckpointFormatException($"{Path}: tensor '{name}' has invalid data_offsets {offsetsElement.GetRawText()}");
        }

        var expected = elements * dtype.SizeInBytes();
        if (end - begin != expected)
        {
            throw new CheckpointFormatException(
                $"{Path}: tensor '{name}' occupies {end - begin} bytes but its shape [{string.Join(", ", shape)}] of {dtype} needs {expected}");
        }

        if (end > dataLength)
        {
            throw new CheckpointFormatException(
                $"{Path}: tensor '{name}' ends at byte {end} of the data section, but the file holds only {dataLength} data bytes (truncated file?)");
        }

        var tensor = new CheckpointTensor(name, dtype, shape, basePointer + dataStart + begin, expected, Path, mapped: true);
        return (tensor, begin, end);
    }

    private static Dictionary<string, string> ReadMetadata(JsonElement element)
    {
        var result = new Dictionary<string, string>(StringComparer.Ordinal);
        if (element.ValueKind == JsonValueKind.Object)
        {
            foreach (var p in element.EnumerateObject())
            {
                result[p.Name] = p.Value.ValueKind == JsonValueKind.String ? p.Value.GetString()! : p.Value.GetRawText();
            }
        }

        return result;
    }

    public void Dispose()
    {
        if (disposed)
        {
            return;
        }

        disposed = true;
        file?.Dispose();
    }
}
