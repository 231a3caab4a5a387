using System.Runtime.InteropServices;
using Enclave.Engine.Backends;
using Enclave.Engine.Models;

namespace Enclave.Engine.Formats;

/// <summary>
/// Random weights at the shapes a config.json implies, in the config's dtype (BF16 unless it says float16/float32),
/// like vLLM's <c>--load-format dummy</c>: real-size models can be measured without downloading them. Tensors are
/// created on first request with the shape the model asks for. Norm weights are 1 so activations stay bounded.
/// </summary>
public sealed unsafe class DummyWeights : IWeightSource
{
    private readonly Dictionary<string, CheckpointTensor> tensors = new(StringComparer.Ordinal);
    private readonly List<nint> allocations = [];
    private readonly DType dtype;
    private ulong seed = 0x9E3779B97F4A7C15;

    private DummyWeights(DType dtype) => this.dtype = dtype;

    public static DummyWeights Create(ModelConfig config) => new(config.DType switch
    {
        "float32" => DType.F32,
        "float16" => DType.F16,
        _ => DType.BF16,
    });

    public string Description => "dummy weights";

    public IEnumerable<string> TensorNames => tensors.Keys;

    public long TotalBytes => tensors.Values.Sum(t => t.ByteCount);

    public bool Contains(string name) => true;

    public CheckpointTensor Get(string name) =>
        tensors.TryGetValue(name, out var t) ? t : throw new CheckpointFormatException($"dummy weights: tensor '{name}' was never created");

    public CheckpointTensor Create(string name, int[] shape)
    {
        if (tensors.TryGetValue(name, out var existing))
        {
            return existing;
        }

        long count = 1;
        foreach (var d in shape)
        {
            count *= d;
        }

        var bytes = count * dtype.SizeInBytes();
        var data = (byte*)NativeMemory.AlignedAlloc((nuint)Math.Max(bytes, 64), 64);
        allocations.Add((nint)data);
        var isNorm = name.EndsWith("norm.weight", StringComparison.Ordinal);
        var stateSeed = seed += 0x632BE59BD9B4E019;
        var address = (nint)data;
        Parallel.For(0, (int)((count + 65535) / 65536), chunk =>
        {
            var state = stateSeed ^ ((ulong)chunk * 0xD1B54A32D192ED03);
            var start = (long)chunk * 65536;
            var end = Math.Min(count, start + 65536);
            for (var i = start; i < end; i++)
            {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                var value = isNorm ? 1f : ((state >> 40) / (float)(1 << 24) - 0.5f) * 0.04f;
                Write((byte*)address, i, value);
            }
        });
        var tensor = new CheckpointTensor(name, dtype, shape, data, bytes, Description);
        tensors[name] = tensor;
        return tensor;
    }

    private void Write(byte* data, long index, float value)
    {
        switch (dtype)
        {
            case DType.F32:
                ((float*)data)[index] = value;
                break;
            case DType.F16:
                ((Half*)data)[index] = (Half)value;
                break;
            default:
                ((ushort*)data)[index] = (ushort)(BitConverter.SingleToUInt32Bits(value) >> 16);
                break;
        }
    }

    public void Dispose()
    {
        foreach (var p in allocations)
        {
            NativeMemory.AlignedFree((void*)p);
        }

        allocations.Clear();
        tensors.Clear();
    }
}
