using Enclave.Engine.Backends;

namespace Enclave.Engine.Models.Layers;

/// <summary>The position-wise block after attention: a dense gated MLP or a mixture of experts.</summary>
public interface IFeedForward
{
    /// <summary>x: [T, hidden] → output: [T, hidden].</summary>
    void Forward(IBackend backend, ActivationBuffers scratch, DeviceTensor x, DeviceTensor output);
}
