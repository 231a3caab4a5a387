using System.Text.Json.Nodes;
using Enclave.Engine.Models;

namespace Enclave.Engine.Formats.Quantization;

/// <summary>How a checkpoint's linear weights are stored, from the <c>quantization_config</c> of its config.json.</summary>
public enum QuantizationMethod
{
    /// <summary>DeepSeek-V3/R1's block FP8: e4m3 weights with one float32 <c>weight_scale_inv</c> per block.</summary>
    Fp8Block,

    /// <summary>AutoAWQ's GEMM layout: 4-bit, per-group fp16 scales and packed zero points.</summary>
    Awq,

    /// <summary>GPTQ (AutoGPTQ / GPTQModel) with <c>desc_act=false</c>: 4-bit, per-group scales and zero points.</summary>
    Gptq,
}

/// <summary>
/// A parsed <c>quantization_config</c>. Only what the loaders honour is accepted; anything else (other bit widths,
/// act-order GPTQ, AWQ GEMV packing, FP8 formats other than e4m3) is refused with a message naming the field, so a
/// checkpoint is never silently run with the wrong arithmetic.
/// </summary>
public sealed record QuantizationConfig(
    QuantizationMethod Method,
    int BlockRows,
    int BlockColumns,
    int Bits,
    int GptqZeroOffset,
    IReadOnlyList<string> ModulesToNotConvert)
{
    /// <summary>Group size along the input dimension for the 4-bit methods.</summary>
    public int GroupSize => BlockColumns;

    public static QuantizationConfig? Parse(JsonObject config, string path)
    {
        if (config["quantization_config"] is not JsonObject q)
        {
            return null;
        }

        var method = q["quant_method"]?.GetValue<string>()?.ToLowerInvariant();
        var skip = q["modules_to_not_convert"] is JsonArray names
            ? names.Where(n => n is not null).Select(n => n!.GetValue<string>()).ToArray()
            : [];
        switch (method)
        {
            case "fp8":
            {
                var fmt = q["fmt"]?.GetValue<string>() ?? "e4m3";
                if (fmt != "e4m3")
                {
                    throw new ModelConfigException($"{path}: quantization_config.fmt is '{fmt}'; only e4m3 FP8 checkpoints are supported");
                }

                if (q["weight_block_size"] is not JsonArray { Count: 2 } block)
                {
                    throw new ModelConfigException(
                        $"{path}: quantization_config.weight_block_size must be [rows, columns] (DeepSeek publishes [128, 128]); per-tensor FP8 is not supported");
                }

                var rows = block[0]!.GetValue<int>();
                var columns = block[1]!.GetValue<int>();
                if (rows <= 0 || columns <= 0)
                {
                    throw new ModelConfigException($"{path}: quantization_config.weight_block_size [{rows}, {columns}] must be positive");
                }

                return new QuantizationConfig(QuantizationMethod.Fp8Block, rows, columns, 8, 0, skip);
            }

            case "awq":
            {
                var (bits, group) = ReadBitsAndGroup(q, path);
                var version = q["version"]?.GetValue<string>()?.ToLowerInvariant() ?? "gemm";
                if (version != "gemm")
                {
                    throw new ModelConfigException($"{path}: quantization_config.version is '{version}'; only AWQ's GEMM packing is supported");
                }

                if (q["zero_point"]?.GetValue<bool>() == false)
                {
                    throw new ModelConfigException($"{path}: quantization_config.zero_point=false is not supported for AWQ");
                }

                return new QuantizationConfig(QuantizationMethod.Awq, 1, group, bits, 0, skip);
            }

            case "gptq":
            {
                var (bits, group) = ReadBitsAndGroup(q, path);
                if (q["desc_act"]?.GetValue<bool>() == true)
                {
                    throw new ModelConfigException(
                        $"{path}: quantization_config.desc_act=true (act-order GPTQ) is not supported; use a desc_act=false export");
                }

                // GPTQ v1 checkpoints store every zero point minus one; the v2 format stores it as is.
                var format = q["checkpoint_format"]?.GetValue<string>()?.ToLowerInvariant() ?? "gptq";
                var offset = format switch
                {
                    "gptq" => 1,
                    "gptq_v2" => 0,
                    _ => throw new ModelConfigException($"{path}: quantization_config.checkpoint_format '{format}' is not supported (gptq, gptq_v2)"),
                };
                return new QuantizationConfig(QuantizationMethod.Gptq, 1, group, bits, offset, skip);
            }

            default:
                throw new ModelConfigException(
                    $"{path}: quantization_config.quant_method '{method}' is not supported (supported: fp8, awq, gptq)");
        }
    }

    /// <summary>Whether a linear layer with this weight prefix keeps unquantized weights per modules_to_not_convert.</summary>
    public bool Skips(string prefix) => ModulesToNotConvert.Any(m => prefix.Contains(m, StringComparison.Ordinal));

    private static (int Bits, int Group) ReadBitsAndGroup(JsonObject q, string path)
    {
        var bits = q["bits"]?.GetValue<int>() ?? q["w_bit"]?.GetValue<int>() ?? 4;
        if (bits != 4)
        {
            throw new ModelConfigException($"{path}: quantization_config.bits is {bits}; only 4-bit AWQ/GPTQ is supported");
        }

        var group = q["group_size"]?.GetValue<int>() ?? q["q_group_size"]?.GetValue<int>() ?? 128;
        if (group <= 0 || group % 2 != 0)
        {
            throw new ModelConfigException(
                $"{path}: quantization_config.group_size is {group}; per-channel (-1) and odd group sizes are not supported");
        }

        return (bits, group);
    }
}
