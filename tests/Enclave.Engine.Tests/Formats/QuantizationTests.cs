using System.Text.Json.Nodes;
using Enclave.Engine.Backends;
using Enclave.Engine.Backends.Cpu;
using Enclave.Engine.Formats;
using Enclave.Engine.Formats.Quantization;
using Enclave.Engine.Models;
using Enclave.Engine.Models.Layers;
using Enclave.Engine.Tests.Support;

namespace Enclave.Engine.Tests.Formats;

/// <summary>quantization_config parsing, the FP8 decode, and how the quantized fixtures load.</summary>
public sealed class QuantizationTests
{
    [Theory]
    [InlineData(0x38, 1.0f)]
    [InlineData(0xB8, -1.0f)]
    [InlineData(0x7E, 448f)]
    [InlineData(0x01, 0.001953125f)] // smallest subnormal, 2^-9
    [InlineData(0x08, 0.015625f)]    // smallest normal, 2^-6
    [InlineData(0x00, 0f)]
    public void Fp8E4M3DecodesKnownCodes(int code, float expected)
    {
        Assert.Equal(expected, Fp8E4M3.ToSingle((byte)code));
        Assert.Equal(expected, Fp8E4M3.Decode((byte)code));
    }

    [Fact]
    public void Fp8E4M3HasNoInfinitiesAndTwoNaNs()
    {
        var nans = Enumerable.Range(0, 256).Where(i => float.IsNaN(Fp8E4M3.ToSingle((byte)i))).ToArray();
        Assert.Equal([0x7F, 0xFF], nans);
        Assert.DoesNotContain(Enumerable.Range(0, 256), i => float.IsInfinity(Fp8E4M3.ToSingle((byte)i)));
    }

    [Theory]
    [InlineData("""{"quant_method": "fp8", "fmt": "e5m2", "weight_block_size": [128, 128]}""", "only e4m3")]
    [InlineData("""{"quant_method": "fp8", "fmt": "e4m3"}""", "weight_block_size")]
    [InlineData("""{"quant_method": "gptq", "bits": 4, "group_size": 128, "desc_act": true}""", "desc_act=true")]
    [InlineData("""{"quant_method": "gptq", "bits": 8, "group_size": 128}""", "only 4-bit")]
    [InlineData("""{"quant_method": "gptq", "bits": 4, "group_size": -1}""", "group_size is -1")]
    [InlineData("""{"quant_method": "awq", "bits": 4, "group_size": 128, "version": "gemv"}""", "GEMM packing")]
    [InlineData("""{"quant_method": "bitsandbytes"}""", "not supported")]
    public void UnsupportedQuantizationConfigsAreRefusedByName(string quantization, string expected)
    {
        var config = new JsonObject { ["quantization_config"] = JsonNode.Parse(quantization) };
        var error = Assert.Throws<ModelConfigException>(() => QuantizationConfig.Parse(config, "config.json"));
        Assert.Contains(expected, error.Message, StringComparison.Ordinal);
        Assert.StartsWith("config.json: quantization_config", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Fp8FixtureKeepsFp8WeightsWithTheBlockSizeFromTheConfig()
    {
        var dir = Fixtures.Model("tiny-deepseek-v3-fp8");
        var config = ModelConfig.Load(dir);
        Assert.Equal(QuantizationMethod.Fp8Block, config.Quantization!.Method);
        Assert.Equal((16, 16), (config.Quantization.BlockRows, config.Quantization.BlockColumns)); // not DeepSeek's usual 128

        using var weights = SafetensorsCheckpoint.Open(dir);
        using var backend = new CpuBackend(1);
        var loader = new WeightLoader(weights, backend, config);

        // kv_a_proj_with_mqa is 40 rows (32 latent + 8 rope): three row blocks, the last one partial, as for the
        // real 576-row projection with 128-row blocks.
        var kvA = loader.LoadLinear("model.layers.0.self_attn.kv_a_proj_with_mqa", 64, 40, false).Quantized!;
        Assert.Equal(WeightEncoding.Fp8Block, kvA.Encoding);
        Assert.Equal(DType.F8E4M3, kvA.Data.DType);
        Assert.Equal([3, 4], kvA.Scales.Shape);
        Assert.Equal(40 * 64 + (3 * 4 * 4), kvA.ByteCount); // one byte a weight plus one F32 scale a block

        // The router stays in bf16, as DeepSeek publishes it.
        Assert.Null(loader.LoadLinear("model.layers.1.mlp.gate", 64, 8, false).Quantized);
    }

    [Fact]
    public void MultiTokenPredictionLayersInTheCheckpointAreSkipped()
    {
        var dir = Fixtures.Model("tiny-deepseek-v3-fp8");
        var config = ModelConfig.Load(dir);
        using var weights = SafetensorsCheckpoint.Open(dir);
        var mtp = $"model.layers.{config.NumHiddenLayers}.";
        Assert.Contains(weights.TensorNames, n => n.StartsWith(mtp + "eh_proj", StringComparison.Ordinal));
        Assert.Equal(1, config.Raw["num_nextn_predict_layers"]!.GetValue<int>());

        using var backend = new CpuBackend(1);
        using var model = ModelRegistry.Create(config, weights, backend);
        Assert.Equal(config.NumHiddenLayers, model.KvCacheSpec.Layers);
    }

    [Theory]
    [InlineData("tiny-llama3-awq", QuantizationMethod.Awq)]
    [InlineData("tiny-llama3-gptq", QuantizationMethod.Gptq)]
    public void Int4FixturesRepackToFourBitsAWeight(string name, QuantizationMethod method)
    {
        var dir = Fixtures.Model(name);
        var config = ModelConfig.Load(dir);
        Assert.Equal(method, config.Quantization!.Method);
        using var weights = SafetensorsCheckpoint.Open(dir);
        using var backend = new CpuBackend(1);
        var loader = new WeightLoader(weights, backend, config);
        var down = loader.LoadLinear("model.layers.0.mlp.down_proj", 256, 128, false).Quantized!;
        Assert.Equal(WeightEncoding.Int4Group, down.Encoding);
        Assert.Equal(128, down.BlockColumns);
        Assert.Equal([128, 128], down.Data.Shape);   // 256 inputs, two a byte
        Assert.Equal([128, 2], down.Scales.Shape);   // two groups of 128 along the input
        Assert.Equal(128 * 128 + (128 * 2 * 5), down.ByteCount);

        // Dequantized by the format's definition, the repacked weight equals what the publisher's layout encodes.
        var dequantized = loader.ReadF32("model.layers.0.mlp.down_proj.weight", 128, 256);
        Assert.Contains(dequantized, v => v != 0);
        Assert.All(dequantized, v => Assert.True(float.IsFinite(v)));
    }

    [Fact]
    public void ActOrderGptqIsRefusedAtLoad()
    {
        var dir = Fixtures.Model("tiny-llama3-gptq");
        var temp = Directory.CreateTempSubdirectory("enclave-gptq-");
        try
        {
            foreach (var file in Directory.GetFiles(dir))
            {
                File.Copy(file, Path.Combine(temp.FullName, Path.GetFileName(file)));
            }

            var configPath = Path.Combine(temp.FullName, "config.json");
            var json = JsonNode.Parse(File.ReadAllText(configPath))!.AsObject();
            json["quantization_config"]!["desc_act"] = true;
            File.WriteAllText(configPath, json.ToJsonString());
            var error = Assert.Throws<ModelConfigException>(() => ModelConfig.Load(temp.FullName));
            Assert.Contains("act-order", error.Message, StringComparison.Ordinal);
        }
        finally
        {
            temp.Delete(true);
        }
    }
}
