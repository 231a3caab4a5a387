namespace Enclave.Engine.Models;

/// <summary>
/// The DeepSeek-V2/V3 keys of config.json (multi-head latent attention and DeepSeekMoE), with the defaults of
/// transformers' DeepseekV2Config / DeepseekV3Config when a key is absent.
/// </summary>
public sealed record DeepseekConfig(
    int? QLoraRank,
    int KvLoraRank,
    int QkNopeHeadDim,
    int QkRopeHeadDim,
    int VHeadDim,
    int NRoutedExperts,
    int NSharedExperts,
    int NumExpertsPerTok,
    int MoeIntermediateSize,
    int FirstKDenseReplace,
    int NGroup,
    int TopkGroup,
    string TopkMethod,
    bool NormTopkProb,
    double RoutedScalingFactor,
    bool RopeInterleave)
{
    public int QkHeadDim => QkNopeHeadDim + QkRopeHeadDim;

    public static DeepseekConfig Parse(ModelConfig config, bool v3)
    {
        var raw = config.Raw;
        var r = new ModelConfig.Reader(raw, config.Path);
        // An explicit null q_lora_rank (DeepSeek-V2-Lite) means a plain q_proj; an absent one takes the default.
        int? qLoraRank = raw.ContainsKey("q_lora_rank") ? r.IntOrNull("q_lora_rank") : 1536;
        var routed = r.IntOrNull("n_routed_experts") ?? (v3 ? 256 : 64);
        var result = new DeepseekConfig(
            qLoraRank,
            r.IntOrNull("kv_lora_rank") ?? 512,
            r.IntOrNull("qk_nope_head_dim") ?? 128,
            r.IntOrNull("qk_rope_head_dim") ?? 64,
            r.IntOrNull("v_head_dim") ?? 128,
            routed,
            r.IntOrNull("n_shared_experts") ?? (v3 ? 1 : 2),
            r.IntOrNull("num_experts_per_tok") ?? (v3 ? 8 : 0),
            r.IntOrNull("moe_intermediate_size") ?? (v3 ? 2048 : 1407),
            r.IntOrNull("first_k_dense_replace") ?? (v3 ? 3 : 0),
            r.IntOrNull("n_group") ?? (v3 ? 8 : 1),
            r.IntOrNull("topk_group") ?? (v3 ? 4 : 1),
            r.StringOrNull("topk_method") ?? (v3 ? "noaux_tc" : "greedy"),
            r.BoolOrNull("norm_topk_prob") ?? v3,
            r.DoubleOrNull("routed_scaling_factor") ?? (v3 ? 2.5 : 1.0),
            r.BoolOrNull("rope_interleave") ?? true);
        result.Validate(config);
        return result;
    }

    private void Validate(ModelConfig config)
    {
        if (NGroup <= 0 || NRoutedExperts % NGroup != 0 || TopkGroup > NGroup || NumExpertsPerTok <= 0 || NumExpertsPerTok > NRoutedExperts)
        {
            throw new ModelConfigException(
                $"{config.Path}: routing needs n_routed_experts ({NRoutedExperts}) divisible by n_group ({NGroup}), topk_group <= n_group and 0 < num_experts_per_tok ({NumExpertsPerTok}) <= n_routed_experts");
        }

        if (NSharedExperts <= 0)
        {
            throw new ModelConfigException($"{config.Path}: n_shared_experts must be at least 1 for DeepSeekMoE");
        }

        if (QkRopeHeadDim % 2 != 0)
        {
            throw new ModelConfigException($"{config.Path}: qk_rope_head_dim ({QkRopeHeadDim}) must be even");
        }
    }
}
