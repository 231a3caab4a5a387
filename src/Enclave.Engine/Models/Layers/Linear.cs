using Enclave.Engine.Backends;

namespace Enclave.Engine.Models.Layers;

/// <summary>nn.Linear: weight [out, in] and an optional bias [out].</summary>
public sealed class Linear(DeviceTensor weight, DeviceTensor? bias)
{
    public DeviceTensor Weight { get; } = weight;

    public DeviceTensor? Bias { get; } = bias;

    public int OutFeatures => Weight.Shape[0];

    public static Linear Load(WeightLoader loader, string prefix, int inFeatures, int outFeatures, bool bias) =>
        new(loader.Load(prefix + ".weight", outFeatures, inFeatures), bias ? loader.LoadAsF32(prefix + ".bias", outFeatures) : null);

    /// <summary>output = x · Wᵀ + b. x: [T, in]; output: [T, out].</summary>
    public void Forward(IBackend backend, DeviceTensor x, DeviceTensor output) => backend.MatMul(x, Weight, Bias, output);
}
