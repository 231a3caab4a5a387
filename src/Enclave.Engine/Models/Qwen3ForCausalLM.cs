using Enclave.Engine.Backends;
using Enclave.Engine.Formats;

namespace Enclave.Engine.Models;

/// <summary>Qwen3 (dense): no q/k/v bias by default, per-head RMSNorm on q and k before RoPE, explicit head_dim.</summary>
public sealed class Qwen3ForCausalLM(ModelConfig config, IWeightSource weights, IBackend backend)
    : LlamaStyleModel(config, weights, backend, new DecoderLayerOptions(
        QkvBias: config.AttentionBias, OutputBias: config.AttentionBias, QkNorm: true, MlpBias: false));
