using Enclave.Engine.Backends;
using Enclave.Engine.Formats;

namespace Enclave.Engine.Models;

/// <summary>Maps the Hugging Face <c>architectures</c> string in config.json to the class that implements it.</summary>
public static class ModelRegistry
{
    private static readonly Dictionary<string, Func<ModelConfig, IWeightSource, IBackend, CausalLM>> Factories =
        new(StringComparer.Ordinal)
        {
            ["DeepseekV2ForCausalLM"] = (c, w, b) => new DeepseekV2ForCausalLM(c, w, b),
            ["DeepseekV3ForCausalLM"] = (c, w, b) => new DeepseekV3ForCausalLM(c, w, b),
            ["LlamaForCausalLM"] = (c, w, b) => new LlamaForCausalLM(c, w, b),
            ["Qwen2ForCausalLM"] = (c, w, b) => new Qwen2ForCausalLM(c, w, b),
            ["Qwen3ForCausalLM"] = (c, w, b) => new Qwen3ForCausalLM(c, w, b),
        };

    private static readonly Dictionary<string, Func<ModelConfig, IWeightSource, IBackend, Encoder>> EncoderFactories =
        new(StringComparer.Ordinal)
        {
            ["BertModel"] = (c, w, b) => new BertModel(c, w, b),
            ["XLMRobertaModel"] = (c, w, b) => new XLMRobertaModel(c, w, b),
            ["XLMRobertaForSequenceClassification"] = (c, w, b) => new XLMRobertaForSequenceClassification(c, w, b),
        };

    public static IReadOnlyCollection<string> SupportedArchitectures => Factories.Keys;

    /// <summary>Encoder architectures (embedding and rerank models).</summary>
    public static IReadOnlyCollection<string> SupportedEncoderArchitectures => EncoderFactories.Keys;

    public static bool IsEncoder(string architecture) => EncoderFactories.ContainsKey(architecture);

    public static Encoder CreateEncoder(ModelConfig config, IWeightSource weights, IBackend backend)
    {
        if (!EncoderFactories.TryGetValue(config.Architecture, out var factory))
        {
            throw new ModelConfigException(
                $"{config.Path}: architecture '{config.Architecture}' is not an embedding or rerank model Enclave supports (supported: {string.Join(", ", EncoderFactories.Keys.Order(StringComparer.Ordinal))})");
        }

        return factory(config, weights, backend);
    }

    public static bool IsSupported(string architecture) => Factories.ContainsKey(architecture);

    /// <summary>Throws a <see cref="ModelConfigException"/> listing the supported architectures when this one is not.</summary>
    public static void EnsureSupported(ModelConfig config)
    {
        if (!Factories.ContainsKey(config.Architecture))
        {
            throw new ModelConfigException(
                $"{config.Path}: architecture '{config.Architecture}' is not supported (supported: {string.Join(", ", Factories.Keys.Order(StringComparer.Ordinal))})");
        }
    }

    public static CausalLM Create(ModelConfig config, IWeightSource weights, IBackend backend)
    {
        EnsureSupported(config);
        return Factories[config.Architecture](config, weights, backend);
    }
}
