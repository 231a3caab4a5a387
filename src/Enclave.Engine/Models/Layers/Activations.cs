using Enclave.Engine.Backends;

namespace Enclave.Engine.Models.Layers;

/// <summary>
/// Scratch tensors for one step, allocated once for the largest step (max batched tokens) and viewed at the step's
/// token count. Owned by the model; lives wherever the backend keeps activations.
/// </summary>
public sealed class ActivationBuffers(IBackend backend) : IDisposable
{
    private readonly Dictionary<string, DeviceTensor> buffers = new(StringComparer.Ordinal);

    /// <summary>An F32 [rows, columns] view, backed by a buffer that grows to the largest rows asked for.</summary>
    public DeviceTensor Get(string name, int rows, int columns)
    {
        if (!buffers.TryGetValue(name, out var buffer) || buffer.Shape[0] < rows || buffer.Shape[1] != columns)
        {
            buffer?.Dispose();
            buffer = backend.Allocate(DType.F32, Math.Max(rows, 1), columns);
            buffers[name] = buffer;
        }

        return buffer.Shape[0] == rows ? buffer : buffer.SliceRows(0, rows);
    }

    /// <summary>Like <see cref="Get(string, int, int)"/>, one buffer per (name, variant), for callers of several widths.</summary>
    public DeviceTensor Get(string name, int rows, int columns, int variant) => Get($"{name}#{variant}", rows, columns);

    public void Dispose()
    {
        foreach (var b in buffers.Values)
        {
            b.Dispose();
        }

        buffers.Clear();
    }
}
