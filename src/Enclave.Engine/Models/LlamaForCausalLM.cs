using Enclave.Engine.Backends;
using Enclave.Engine.Formats;

namespace Enclave.Engine.Models;

/// <summary>Llama 2/3/3.1 and DeepSeek-R1-Distill-Llama: biases only when config.attention_bias / mlp_bias say so; llama3 RoPE scaling.</summary>
public sealed class LlamaForCausalLM(ModelConfig config, IWeightSource weights, IBackend backend)
    : LlamaStyleModel(config, weights, backend, new DecoderLayerOptions(
        QkvBias: config.AttentionBias, OutputBias: config.AttentionBias, QkNorm: false, MlpBias: config.MlpBias));
