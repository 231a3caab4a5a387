using System.Text.RegularExpressions;

namespace Enclave.Engine.Formats.Gguf;

/// <summary>
/// Tensor names of llama.cpp's GGUF files and their Hugging Face counterparts for the Llama-family and DeepSeek-V2/V3
/// architectures ("blk.3.attn_q.weight" ↔ "model.layers.3.self_attn.q_proj.weight"). DeepSeek's routed experts have
/// no one-to-one name: llama.cpp stacks them per layer into one 3-D tensor (see <see cref="ExpertStack"/>).
/// </summary>
public static partial class GgufNames
{
    /// <summary>HF layer-module suffix ↔ GGUF block suffix.</summary>
    private static readonly (string Hf, string Gguf)[] LayerParts =
    [
        ("input_layernorm", "attn_norm"),
        ("self_attn.q_proj", "attn_q"),
        ("self_attn.k_proj", "attn_k"),
        ("self_attn.v_proj", "attn_v"),
        ("self_attn.o_proj", "attn_output"),
        ("self_attn.q_norm", "attn_q_norm"),
        ("self_attn.k_norm", "attn_k_norm"),
        ("post_attention_layernorm", "ffn_norm"),
        ("mlp.gate_proj", "ffn_gate"),
        ("mlp.up_proj", "ffn_up"),
        ("mlp.down_proj", "ffn_down"),

        // DeepSeek-V2/V3 (llama.cpp's deepseek2): multi-head latent attention and DeepSeekMoE.
        ("self_attn.q_a_proj", "attn_q_a"),
        ("self_attn.q_a_layernorm", "attn_q_a_norm"),
        ("self_attn.q_b_proj", "attn_q_b"),
        ("self_attn.kv_a_proj_with_mqa", "attn_kv_a_mqa"),
        ("self_attn.kv_a_layernorm", "attn_kv_a_norm"),
        ("self_attn.kv_b_proj", "attn_kv_b"),
        ("mlp.gate", "ffn_gate_inp"),
        ("mlp.shared_experts.gate_proj", "ffn_gate_shexp"),
        ("mlp.shared_experts.up_proj", "ffn_up_shexp"),
        ("mlp.shared_experts.down_proj", "ffn_down_shexp"),
    ];

    /// <summary>HF expert projection ↔ the GGUF block suffix of the 3-D tensor that stacks it over all experts.</summary>
    private static readonly (string Hf, string Gguf)[] ExpertParts =
    [
        ("gate_proj", "ffn_gate_exps"),
        ("up_proj", "ffn_up_exps"),
        ("down_proj", "ffn_down_exps"),
    ];

    /// <summary>
    /// For a routed expert's HF name ("model.layers.3.mlp.experts.5.up_proj.weight"), the GGUF tensor that stacks it
    /// ("blk.3.ffn_up_exps.weight") and its index there (5); null for every other name.
    /// </summary>
    public static (string GgufName, int Expert)? ExpertStack(string hfName)
    {
        var m = HfExpert().Match(hfName);
        if (!m.Success)
        {
            return null;
        }

        foreach (var (hf, gguf) in ExpertParts)
        {
            if (m.Groups[3].Value == hf)
            {
                return ($"blk.{m.Groups[1].Value}.{gguf}.weight", int.Parse(m.Groups[2].Value, System.Globalization.CultureInfo.InvariantCulture));
            }
        }

        return null;
    }

    /// <summary>
    /// For a stacked expert tensor's GGUF name ("blk.3.ffn_up_exps.weight"), the HF name of expert
    /// <paramref name="expert"/> ("model.layers.3.mlp.experts.{expert}.up_proj.weight"); null for every other name.
    /// </summary>
    public static string? ExpertName(string ggufName, int expert)
    {
        var m = GgufBlock().Match(ggufName);
        if (!m.Success || m.Groups[3].Value != "weight")
        {
            return null;
        }

        foreach (var (hf, gguf) in ExpertParts)
        {
            if (m.Groups[2].Value == gguf)
            {
                return $"model.layers.{m.Groups[1].Value}.mlp.experts.{expert}.{hf}.weight";
            }
        }

        return null;
    }

    /// <summary>The GGUF name of an HF tensor name, or null when llama.cpp has no counterpart.</summary>
    public static string? ToGguf(string hfName)
    {
        switch (hfName)
        {
            case "model.embed_tokens.weight":
                return "token_embd.weight";
            case "model.norm.weight":
                return "output_norm.weight";
            case "lm_head.weight":
                return "output.weight";
        }

        if (HfCorrectionBias().Match(hfName) is { Success: true } bias)
        {
            // DeepSeek-V3's router correction bias has no .weight/.bias suffix in HF.
            return $"blk.{bias.Groups[1].Value}.exp_probs_b.bias";
        }

        var m = HfLayer().Match(hfName);
        if (!m.Success)
        {
            return null;
        }

        foreach (var (hf, gguf) in LayerParts)
        {
            if (m.Groups[2].Value == hf)
            {
                return $"blk.{m.Groups[1].Value}.{gguf}.{m.Groups[3].Value}";
            }
        }

        return null;
    }

    /// <summary>The HF name of a GGUF tensor name, or null when the engine has no counterpart (rope_freqs, ...).</summary>
    public static string? ToHf(string ggufName)
    {
        switch (ggufName)
        {
            case "token_embd.weight":
                return "model.embed_tokens.weight";
            case "output_norm.weight":
                return "model.norm.weight";
            case "output.weight":
                return "lm_head.weight";
        }

        var m = GgufBlock().Match(ggufName);
        if (!m.Success)
        {
            return null;
        }

        if (m.Groups[2].Value == "exp_probs_b" && m.Groups[3].Value == "bias")
        {
            return $"model.layers.{m.Groups[1].Value}.mlp.gate.e_score_correction_bias";
        }

        foreach (var (hf, gguf) in LayerParts)
        {
            if (m.Groups[2].Value == gguf)
            {
                return $"model.layers.{m.Groups[1].Value}.{hf}.{m.Groups[3].Value}";
            }
        }

        return null;
    }

    [GeneratedRegex(@"^model\.layers\.(\d+)\.(.+)\.(weight|bias)$")]
    private static partial Regex HfLayer();

    [GeneratedRegex(@"^model\.layers\.(\d+)\.mlp\.gate\.e_score_correction_bias$")]
    private static partial Regex HfCorrectionBias();

    [GeneratedRegex(@"^model\.layers\.(\d+)\.mlp\.experts\.(\d+)\.([a-z_]+)\.weight$")]
    private static partial Regex HfExpert();

    [GeneratedRegex(@"^blk\.(\d+)\.([a-z_]+)\.(weight|bias)$")]
    private static partial Regex GgufBlock();
}
