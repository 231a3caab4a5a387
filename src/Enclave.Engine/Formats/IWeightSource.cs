namespace Enclave.Engine.Formats;

/// <summary>Where a model's tensors come from: a safetensors checkpoint, or random weights for benchmarking.</summary>
public interface IWeightSource : IDisposable
{
    /// <summary>Human-readable origin for error messages (a directory or "dummy weights").</summary>
    string Description { get; }

    bool Contains(string name);

    /// <summary>The tensor with this name; throws <see cref="CheckpointFormatException"/> naming the tensor when absent.</summary>
    CheckpointTensor Get(string name);

    IEnumerable<string> TensorNames { get; }
}
