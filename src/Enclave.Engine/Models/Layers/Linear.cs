using Enclave.Engine.Backends;

namespace Enclave.Engine.Models.Layers;

/// <summary>
/// nn.Linear: weight [out, in] and an optional bias [out]. The weight is either a plain tensor in its checkpoint type
/// (F32/F16/BF16) or, for FP8/AWQ/GPTQ checkpoints, a <see cref="QuantizedWeight"/> that stays quantized.
/// </summary>
public sealed class Linear
{
    private readonly DeviceTensor? weight;
    private readonly QuantizedWeight? quantized;

    public Linear(DeviceTensor weight, DeviceTensor? bias)
    {
        this.weight = weight;
        Bias = bias;
        OutFeatures = weight.Shape[0];
    }

    public Linear(QuantizedWeight weight, DeviceTensor? bias)
    {
        quantized = weight;
        Bias = bias;
        OutFeatures = weight.OutFeatures;
    }

    public DeviceTensor? Bias { get; }

    public int OutFeatures { get; }

    /// <summary>The quantized weight, when the checkpoint stores this layer quantized.</summary>
    public QuantizedWeight? Quantized => quantized;

    public static Linear Load(WeightLoader loader, string prefix, int inFeatures, int outFeatures, bool bias) =>
        loader.LoadLinear(prefix, inFeatures, outFeatures, bias);

    /// <summary>
    /// Products of one input through several layers (q/k/v, gate/up): output_i = x · W_iᵀ + b_i. Plain weights go to
    /// the backend together (<see cref="IBackend.MatMulShared"/>); any quantized one makes each layer run alone.
    /// </summary>
    public static void ForwardShared(IBackend backend, DeviceTensor x, Linear a, DeviceTensor outputA, Linear b, DeviceTensor outputB, Linear? c = null, DeviceTensor? outputC = null)
    {
        if (a.weight is null || b.weight is null || (c is not null && c.weight is null))
        {
            a.Forward(backend, x, outputA);
            b.Forward(backend, x, outputB);
            c?.Forward(backend, x, outputC!);
            return;
        }

        if (c is null)
        {
            backend.MatMulShared(x, [new(a.weight, a.Bias, outputA), new(b.weight, b.Bias, outputB)]);
        }
        else
        {
            backend.MatMulShared(x, [new(a.weight, a.Bias, outputA), new(b.weight, b.Bias, outputB), new(c.weight!, c.Bias, outputC!)]);
        }
    }

    /// <summary>
    /// A whole gated MLP: output = down(silu(x · gateᵀ + b) * (x · upᵀ + b)). Plain weights go to the backend as one
    /// operation (<see cref="IBackend.SiluGatedMlp"/>, or <see cref="IBackend.SiluGatedMatMul"/> when only down is
    /// quantized), which may fuse them. outputGate and outputUp are the intermediate's scratch. x: [T, in]; output: [T, in].
    /// </summary>
    public static void ForwardSiluGatedMlp(IBackend backend, DeviceTensor x, Linear gate, DeviceTensor outputGate, Linear up, DeviceTensor outputUp,
        Linear down, DeviceTensor output)
    {
        if (gate.weight is null || up.weight is null)
        {
            gate.Forward(backend, x, outputGate);
            up.Forward(backend, x, outputUp);
            backend.SiluMul(outputGate, outputUp, outputGate);
        }
        else if (down.weight is null)
        {
            backend.SiluGatedMatMul(x, new(gate.weight, gate.Bias, outputGate), new(up.weight, up.Bias, outputUp));
        }
        else
        {
            backend.SiluGatedMlp(x, new(gate.weight, gate.Bias, outputGate), new(up.weight, up.Bias, outputUp), new(down.weight, down.Bias, output));
            return;
        }

        down.Forward(backend, outputGate, output);
    }

    /// <summary>output = x · Wᵀ + b. x: [T, in]; output: [T, out].</summary>
    public void Forward(IBackend backend, DeviceTensor x, DeviceTensor output)
    {
        if (quantized is not null)
        {
            backend.QuantizedMatMul(x, quantized, Bias, output);
        }
        else
        {
            backend.MatMul(x, weight!, Bias, output);
        }
    }
}
