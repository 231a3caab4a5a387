using Enclave.Engine.Backends;

namespace Enclave.Engine.Models.Layers;

/// <summary>
/// Scratch tensors for one step, allocated once for the largest step (max batched tokens) and viewed at the step's
/// token count. Owned by the model; lives wherever the backend keeps activations.
/// </summary>
public sealed class ActivationBuffers(IBackend backend) : IDisposable
{
    private readonly Dictionary<string, Entry> buffers = new(StringComparer.Ordinal);

    /// <summary>
    /// An F32 [rows, columns] view, backed by a buffer that grows to the largest rows asked for. The last view is
    /// kept, so decode steps (same row count every time) create no objects.
    /// </summary>
    public DeviceTensor Get(string name, int rows, int columns)
    {
        if (!buffers.TryGetValue(name, out var entry) || entry.Buffer.Shape[0] < rows || entry.Buffer.Shape[1] != columns)
        {
            entry?.Buffer.Dispose();
            var buffer = backend.Allocate(DType.F32, Math.Max(rows, 1), columns);
            entry = new Entry(buffer) { View = buffer };
            buffers[name] = entry;
        }

        if (entry.View.Shape[0] != rows)
        {
            entry.View = entry.Buffer.Shape[0] == rows ? entry.Buffer : entry.Buffer.SliceRows(0, rows);
        }

        return entry.View;
    }

    private sealed class Entry(DeviceTensor buffer)
    {
        public DeviceTensor Buffer { get; } = buffer;

        public required DeviceTensor View { get; set; }
    }

    /// <summary>Like <see cref="Get(string, int, int)"/>, one buffer per (name, variant), for callers of several widths.</summary>
    public DeviceTensor Get(string name, int rows, int columns, int variant) => Get($"{name}#{variant}", rows, columns);

    public void Dispose()
    {
        foreach (var entry in buffers.Values)
        {
            entry.Buffer.Dispose();
        }

        buffers.Clear();
    }
}
