using System.Text;
using Enclave.Engine.Backends;

namespace Enclave.Engine.Formats.Gguf;

/// <summary>
/// Writes a GGUF version 3 file: metadata in the order added, tensor infos, then each tensor's data padded to the
/// alignment. Tensor data is produced by a callback at write time, so a multi-gigabyte model is streamed rather
/// than held in memory. The file is written under a temporary name and moved into place only when complete, so
/// a failed write never replaces an existing file.
/// </summary>
public sealed class GgufWriter
{
    private readonly List<GgufMetadata> metadata = [];
    private readonly List<PendingTensor> tensors = [];

    public int Alignment { get; set; } = GgufFile.DefaultAlignment;

    private sealed record PendingTensor(string Name, DType DType, int[] Shape, long Bytes, Action<Stream> WriteData);

    public void Add(string key, GgufValueType type, object value)
    {
        if (metadata.Any(m => m.Key == key))
        {
            throw new ArgumentException($"metadata key '{key}' added twice", nameof(key));
        }

        metadata.Add(new GgufMetadata(key, type, value));
    }

    public void AddString(string key, string value) => Add(key, GgufValueType.String, value);

    public void AddUInt32(string key, uint value) => Add(key, GgufValueType.UInt32, value);

    public void AddInt32(string key, int value) => Add(key, GgufValueType.Int32, value);

    public void AddFloat32(string key, float value) => Add(key, GgufValueType.Float32, value);

    public void AddBool(string key, bool value) => Add(key, GgufValueType.Bool, value);

    public void AddArray(string key, GgufValueType elementType, Array items) => Add(key, GgufValueType.Array, new GgufArray(elementType, items));

    /// <summary>Adds a tensor of HF shape (outermost first); writeData must write exactly its StorageBytes.</summary>
    public void AddTensor(string name, DType dtype, int[] shape, Action<Stream> writeData)
    {
        if (tensors.Any(t => t.Name == name))
        {
            throw new ArgumentException($"tensor '{name}' added twice", nameof(name));
        }

        long elements = 1;
        foreach (var d in shape)
        {
            elements *= d;
        }

        tensors.Add(new PendingTensor(name, dtype, (int[])shape.Clone(), dtype.StorageBytes(elements), writeData));
    }

    public void AddTensor(string name, DType dtype, int[] shape, byte[] data) => AddTensor(name, dtype, shape, s => s.Write(data));

    public void Write(string path)
    {
        var directory = System.IO.Path.GetDirectoryName(System.IO.Path.GetFullPath(path))!;
        Directory.CreateDirectory(directory);
        var temporary = System.IO.Path.Combine(directory, $".{System.IO.Path.GetFileName(path)}.{Environment.ProcessId}.partial");
        try
        {
            using (var stream = new FileStream(temporary, FileMode.Create, FileAccess.Write, FileShare.None, 1 << 20))
            {
                Write(stream);
            }

            File.Move(temporary, path, overwrite: true);
        }
        catch
        {
            File.Delete(temporary);
            throw;
        }
    }

    public void Write(Stream stream)
    {
        var all = new List<GgufMetadata>(metadata);
        if (Alignment != GgufFile.DefaultAlignment && metadata.All(m => m.Key != "general.alignment"))
        {
            all.Add(new GgufMetadata("general.alignment", GgufValueType.UInt32, (uint)Alignment));
        }

        using var w = new BinaryWriter(stream, Encoding.UTF8, leaveOpen: true);
        w.Write(GgufFile.Magic);
        w.Write(3u);
        w.Write((ulong)tensors.Count);
        w.Write((ulong)all.Count);
        foreach (var m in all)
        {
            WriteString(w, m.Key);
            w.Write((uint)m.Type);
            WriteValue(w, m.Type, m.Value, m.Key);
        }

        long offset = 0;
        foreach (var t in tensors)
        {
            WriteString(w, t.Name);
            w.Write((uint)t.Shape.Length);
            for (var d = t.Shape.Length - 1; d >= 0; d--)
            {
                w.Write((ulong)t.Shape[d]);
            }

            w.Write((uint)GgmlTypes.FromDType(t.DType));
            w.Write((ulong)offset);
            offset = Align(offset + t.Bytes);
        }

        w.Flush();
        Pad(stream, stream.Position);
        var dataStart = stream.Position;
        foreach (var t in tensors)
        {
            var before = stream.Position;
            t.WriteData(stream);
            var written = stream.Position - before;
            if (written != t.Bytes)
            {
                throw new InvalidOperationException($"tensor '{t.Name}' wrote {written} bytes, its {t.DType}[{string.Join(", ", t.Shape)}] needs {t.Bytes}");
            }

            Pad(stream, stream.Position - dataStart);
        }
    }

    private long Align(long offset) => (offset + Alignment - 1) / Alignment * Alignment;

    private void Pad(Stream stream, long offset)
    {
        var padding = Align(offset) - offset;
        for (var i = 0; i < padding; i++)
        {
            stream.WriteByte(0);
        }
    }

    private static void WriteString(BinaryWriter w, string s)
    {
        var bytes = Encoding.UTF8.GetBytes(s);
        w.Write((ulong)bytes.Length);
        w.Write(bytes);
    }

    private static void WriteValue(BinaryWriter w, GgufValueType type, object value, string key)
    {
        switch (type)
        {
            case GgufValueType.UInt8: w.Write(Convert.ToByte(value, null)); break;
            case GgufValueType.Int8: w.Write(Convert.ToSByte(value, null)); break;
            case GgufValueType.UInt16: w.Write(Convert.ToUInt16(value, null)); break;
            case GgufValueType.Int16: w.Write(Convert.ToInt16(value, null)); break;
            case GgufValueType.UInt32: w.Write(Convert.ToUInt32(value, null)); break;
            case GgufValueType.Int32: w.Write(Convert.ToInt32(value, null)); break;
            case GgufValueType.Float32: w.Write(Convert.ToSingle(value, null)); break;
            case GgufValueType.UInt64: w.Write(Convert.ToUInt64(value, null)); break;
            case GgufValueType.Int64: w.Write(Convert.ToInt64(value, null)); break;
            case GgufValueType.Float64: w.Write(Convert.ToDouble(value, null)); break;
            case GgufValueType.Bool: w.Write((byte)((bool)value ? 1 : 0)); break;
            case GgufValueType.String: WriteString(w, (string)value); break;
            case GgufValueType.Array:
                var array = value as GgufArray ?? throw new ArgumentException($"metadata '{key}' is an array but its value is {value.GetType().Name}");
                w.Write((uint)array.ElementType);
                w.Write((ulong)array.Count);
                foreach (var item in array.Items)
                {
                    WriteValue(w, array.ElementType, item!, key);
                }

                break;
            default:
                throw new ArgumentOutOfRangeException(nameof(type), type, $"metadata '{key}' has an unknown type");
        }
    }
}
