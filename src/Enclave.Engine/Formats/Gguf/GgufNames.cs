using System.Text.RegularExpressions;

namespace Enclave.Engine.Formats.Gguf;

/// <summary>
/// Tensor names of llama.cpp's GGUF files and their Hugging Face counterparts for the Llama-family architectures
/// ("blk.3.attn_q.weight" ↔ "model.layers.3.self_attn.q_proj.weight").
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
    ];

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

    [GeneratedRegex(@"^blk\.(\d+)\.([a-z_]+)\.(weight|bias)$")]
    private static partial Regex GgufBlock();
}
