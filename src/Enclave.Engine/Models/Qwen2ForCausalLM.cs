using Enclave.Engine.Backends;
using Enclave.Engine.Formats;

namespace Enclave.Engine.Models;

/// <summary>Qwen2/2.5 and DeepSeek-R1-Distill-Qwen: q/k/v projections carry a bias, o_proj does not; embeddings may be tied.</summary>
public sealed class Qwen2ForCausalLM(ModelConfig config, IWeightSource weights, IBackend backend)
    : LlamaStyleModel(config, weights, backend, new DecoderLayerOptions(
        QkvBias: true, OutputBias: false, QkNorm: false, MlpBias: false));
