using System.Text.Json.Nodes;
using Enclave.Engine.Models;

namespace Enclave.Engine.Tests.Models;

/// <summary>The DeepSeek config keys: query LoRA presence, YaRN softmax scale, routing validation.</summary>
public sealed class DeepseekConfigTests
{
    private const string Common = "\"architectures\":[\"DeepseekV3ForCausalLM\"],\"hidden_size\":64,\"num_attention_heads\":4,\"num_hidden_layers\":1,\"vocab_size\":8";

    private static ModelConfig Parse(string extra) => ModelConfig.Parse((JsonObject)JsonNode.Parse("{" + Common + extra + "}")!, "config.json");

    [Fact]
    public void An_explicit_null_q_lora_rank_means_a_plain_q_proj_and_an_absent_one_takes_the_default()
    {
        Assert.Null(DeepseekConfig.Parse(Parse(",\"q_lora_rank\":null"), v3: true).QLoraRank);
        Assert.Equal(1536, DeepseekConfig.Parse(Parse(string.Empty), v3: true).QLoraRank);
        Assert.Equal(32, DeepseekConfig.Parse(Parse(",\"q_lora_rank\":32"), v3: true).QLoraRank);
    }

    [Fact]
    public void The_softmax_scale_takes_yarn_mscale_all_dim_squared()
    {
        var yarn = Parse(",\"qk_nope_head_dim\":128,\"qk_rope_head_dim\":64,\"rope_parameters\":{\"rope_type\":\"yarn\",\"rope_theta\":10000.0,\"factor\":40,\"original_max_position_embeddings\":4096,\"mscale\":1.0,\"mscale_all_dim\":1.0}");
        var mscale = (0.1 * Math.Log(40)) + 1;
        Assert.Equal((float)(mscale * mscale / Math.Sqrt(192)), DeepseekStyleModel.SoftmaxScale(yarn, DeepseekConfig.Parse(yarn, v3: true)), 6);
        var plain = Parse(",\"qk_nope_head_dim\":128,\"qk_rope_head_dim\":64");
        Assert.Equal((float)(1 / Math.Sqrt(192)), DeepseekStyleModel.SoftmaxScale(plain, DeepseekConfig.Parse(plain, v3: true)), 6);
    }

    [Theory]
    [InlineData(",\"n_routed_experts\":8,\"n_group\":3")]
    [InlineData(",\"n_routed_experts\":8,\"n_group\":2,\"topk_group\":3")]
    [InlineData(",\"n_routed_experts\":8,\"num_experts_per_tok\":9")]
    [InlineData(",\"n_shared_experts\":0")]
    public void Inconsistent_routing_settings_are_rejected(string extra) =>
        Assert.Throws<ModelConfigException>(() => DeepseekConfig.Parse(Parse(extra), v3: true));
}
