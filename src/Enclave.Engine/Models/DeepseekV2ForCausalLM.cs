using Enclave.Engine.Backends;
using Enclave.Engine.Formats;

namespace Enclave.Engine.Models;

/// <summary>
/// DeepSeek-V2 / V2-Lite as transformers runs it: q_proj or query LoRA, always-interleaved RoPE, softmax scale with YaRN mscale²,
/// softmax routing (greedy, or group_limited_greedy ranking groups by their best expert), weights
/// scaled by routed_scaling_factor without renormalisation.
/// </summary>
public sealed class DeepseekV2ForCausalLM(ModelConfig config, IWeightSource weights, IBackend backend)
    : DeepseekStyleModel(config, weights, backend, new DeepseekVariant(
        InterleaveFromConfig: false, CorrectionBias: false, MoeScoring.Softmax, MoeGroupScore.Max));
