using Enclave.Engine.Backends;

namespace Enclave.Engine.Models.Layers;

/// <summary>LlamaMLP / Qwen2MLP: down_proj(silu(gate_proj(x)) * up_proj(x)).</summary>
public sealed class GatedMlp : IFeedForward
{
    private readonly Linear gate;
    private readonly Linear up;
    private readonly Linear down;

    public GatedMlp(WeightLoader loader, string prefix, int hidden, int intermediate, bool bias)
    {
        if (loader.Config.HiddenAct is not ("silu" or "swish"))
        {
            throw new ModelConfigException($"{loader.Config.Path}: hidden_act '{loader.Config.HiddenAct}' is not supported (supported: silu)");
        }

        // gate and up read the same input: stacked where the backend can, so that larger products of them run as one.
        var gateUp = loader.LoadLinears([prefix + ".gate_proj", prefix + ".up_proj"], hidden, [intermediate, intermediate], bias);
        gate = gateUp[0];
        up = gateUp[1];
        down = Linear.Load(loader, prefix + ".down_proj", intermediate, hidden, bias);
    }

    /// <summary>The layer over weights already loaded (row slices of stacked experts, say).</summary>
    public GatedMlp(Linear gate, Linear up, Linear down)
    {
        this.gate = gate;
        this.up = up;
        this.down = down;
    }

    /// <summary>x: [T, hidden] → output: [T, hidden].</summary>
    public void Forward(IBackend backend, ActivationBuffers scratch, DeviceTensor x, DeviceTensor output)
    {
        var tokens = (int)x.Rows;
        var g = scratch.Get("mlp.gate", tokens, gate.OutFeatures, gate.OutFeatures); // [T, intermediate]
        var u = scratch.Get("mlp.up", tokens, up.OutFeatures, up.OutFeatures);     // [T, intermediate]
        Linear.ForwardSiluGatedMlp(backend, x, gate, g, up, u, down, output);
    }
}
