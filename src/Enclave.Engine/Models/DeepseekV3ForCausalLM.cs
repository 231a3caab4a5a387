using Enclave.Engine.Backends;
using Enclave.Engine.Formats;

namespace Enclave.Engine.Models;

/// <summary>
/// DeepSeek-V3 / R1: query LoRA, rope_interleave from the config, softmax scale with YaRN mscale², sigmoid routing
/// with e_score_correction_bias for selection, group score = sum of a group's two best experts, norm_topk_prob.
/// </summary>
public sealed class DeepseekV3ForCausalLM(ModelConfig config, IWeightSource weights, IBackend backend)
    : DeepseekStyleModel(config, weights, backend, new DeepseekVariant(
        InterleaveFromConfig: true, CorrectionBias: true, MoeScoring.Sigmoid, MoeGroupScore.TopTwoSum));
