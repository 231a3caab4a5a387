using Enclave.Engine.Backends;
using Enclave.Engine.Formats;


namespace Enclave.Engine.Models.Layers;

/// <summary>Loads named tensors onto the backend, checking each shape against what the config implies.</summary>
public sealed class WeightLoader(IWeightSource source, IBackend backend, ModelConfig config)
{
    public IBackend Backend => backend;

    public ModelConfig Config => config;

    public bool Contains(string name) => source.Contains(name);

    public DeviceTensor Load(string name, params int[] expectedShape)
    {
        if (source is DummyWeights dummy)
        {
            return backend.LoadWeight(dummy.Create(name, expectedShape));
        }

        if (!source.Contains(name))
        {
            throw new CheckpointFormatException(
                $"{source.Description}: tensor '{name}' is missing, but {config.Architecture} with this config.json needs it");
        }

        var tensor = source.Get(name);
        if (!tensor.Shape.SequenceEqual(expectedShape))
        {
            throw new CheckpointFormatException(
                $"{tensor.File}: tensor '{name}' has shape [{string.Join(", ", tensor.Shape)}], but {config.Path} implies [{string.Join(", ", expectedShape)}]");
        }

        return backend.LoadWeight(tensor);
    }

    /// <summary>
    /// Loads a small tensor (a bias) as F32 whatever its stored type: kernels add biases in fp32, and a bias is a
    /// vector, so the copy costs nothing next to the matrices, which are never converted.
    /// </summary>
    public DeviceTensor LoadAsF32(string name, params int[] expectedShape)
    {
        var tensor = Load(name, expectedShape);
        if (tensor.DType == DType.F32)
        {
            return tensor;
        }

        var source = SourceTensor(name);
        var values = new float[source.ElementCount];
        for (var i = 0; i < values.Length; i++)
        {
            values[i] = Backends.Reference.ReferenceBackend.ReadElement(source.Bytes, source.DType, i);
        }

        var converted = backend.Allocate(DType.F32, expectedShape);
        backend.Upload(values, converted);
        tensor.Dispose();
        return converted;
    }

    /// <summary>Reads a tensor's values to the host as F32 (for weights the model rearranges once at load time).</summary>
    public float[] ReadF32(string name, params int[] expectedShape)
    {
        Load(name, expectedShape).Dispose();
        var source = SourceTensor(name);
        var values = new float[source.ElementCount];
        for (var i = 0; i < values.Length; i++)
        {
            values[i] = Backends.Reference.ReferenceBackend.ReadElement(source.Bytes, source.DType, i);
        }

        return values;
    }

    private CheckpointTensor SourceTensor(string name) => source is DummyWeights dummy ? dummy.Get(name) : source.Get(name);

    public DeviceTensor? LoadOptional(string name, params int[] expectedShape) =>
        source.Contains(name) ? Load(name, expectedShape) : null;
}
