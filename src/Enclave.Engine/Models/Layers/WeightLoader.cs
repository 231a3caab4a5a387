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

    public DeviceTensor? LoadOptional(string name, params int[] expectedShape) =>
        source.Contains(name) ? Load(name, expectedShape) : null;
}
