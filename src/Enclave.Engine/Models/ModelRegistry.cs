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

    public static IReadOnlyCollection<string> SupportedArchitectures => Factories.Keys;

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
