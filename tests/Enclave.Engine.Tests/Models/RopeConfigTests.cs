using System.Text.Json.Nodes;
using Enclave.Engine.Models;

namespace Enclave.Engine.Tests.Models;

/// <summary>Both spellings of the rotary settings read the same, and the scalings follow transformers' formulas.</summary>
public sealed class RopeConfigTests
{
    private static ModelConfig Parse(string json) => ModelConfig.Parse((JsonObject)JsonNode.Parse(json)!, "config.json");

    private const string Common = "\"architectures\":[\"LlamaForCausalLM\"],\"hidden_size\":64,\"num_attention_heads\":4,\"num_hidden_layers\":1,\"vocab_size\":8,\"max_position_embeddings\":1024";

    [Fact]
    public void Transformers4And5SpellingsAgree()
    {
        var v4 = Parse("{" + Common + ",\"rope_theta\":500000.0,\"rope_scaling\":{\"rope_type\":\"llama3\",\"factor\":8.0,\"low_freq_factor\":1.0,\"high_freq_factor\":4.0,\"original_max_position_embeddings\":64}}");
        var v5 = Parse("{" + Common + ",\"rope_parameters\":{\"rope_type\":\"llama3\",\"rope_theta\":500000.0,\"factor\":8.0,\"low_freq_factor\":1.0,\"high_freq_factor\":4.0,\"original_max_position_embeddings\":64}}");
        Assert.Equal(500000.0, v4.RopeTheta);
        Assert.Equal(v4.RopeTheta, v5.RopeTheta);
        Assert.Equal(v4.RopeScaling, v5.RopeScaling);
        Assert.Equal(RotaryEmbedding.Create(v4).InverseFrequencies, RotaryEmbedding.Create(v5).InverseFrequencies);
    }

    [Fact]
    public void Llama3ScalingKeepsHighFrequenciesAndDividesLowOnes()
    {
        var plain = RotaryEmbedding.Create(Parse("{" + Common + ",\"rope_theta\":500000.0}")).InverseFrequencies;
        var scaled = RotaryEmbedding.Create(Parse("{" + Common + ",\"rope_theta\":500000.0,\"rope_scaling\":{\"rope_type\":\"llama3\",\"factor\":8.0,\"low_freq_factor\":1.0,\"high_freq_factor\":4.0,\"original_max_position_embeddings\":64}}")).InverseFrequencies;
        Assert.Equal(plain[0], scaled[0]); // wavelength 2π < 16: untouched
        Assert.Equal(plain[^1] / 8, scaled[^1], 6); // wavelength > 64: divided by the factor
    }

    [Fact]
    public void YarnComputesTheAttentionFactorFromMscale()
    {
        var c = Parse("{" + Common + ",\"rope_theta\":10000.0,\"rope_scaling\":{\"type\":\"yarn\",\"factor\":40,\"original_max_position_embeddings\":4096,\"beta_fast\":32,\"beta_slow\":1,\"mscale\":1.0,\"mscale_all_dim\":1.0}}");
        var rope = RotaryEmbedding.Create(c);
        Assert.Equal(1.0f, rope.AttentionScaling, 6); // mscale / mscale_all_dim cancel
        var d = Parse("{" + Common + ",\"rope_theta\":10000.0,\"rope_scaling\":{\"type\":\"yarn\",\"factor\":40,\"original_max_position_embeddings\":4096}}");
        Assert.Equal((float)(0.1 * Math.Log(40) + 1), RotaryEmbedding.Create(d).AttentionScaling, 5);
    }
}
