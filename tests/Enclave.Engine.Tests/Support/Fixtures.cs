using System.Text.Json;

namespace Enclave.Engine.Tests.Support;

/// <summary>Paths to the committed fixtures and the transformers references that come with them.</summary>
public static class Fixtures
{
    private static readonly Lazy<string> Root = new(() =>
    {
        var dir = new DirectoryInfo(AppContext.BaseDirectory);
        while (dir is not null && !File.Exists(Path.Combine(dir.FullName, "Enclave.slnx")))
        {
            dir = dir.Parent;
        }

        return dir?.FullName ?? throw new InvalidOperationException("cannot find the repository root (Enclave.slnx) above " + AppContext.BaseDirectory);
    });

    public static string RepositoryRoot => Root.Value;

    public static string ModelsDirectory => Path.Combine(RepositoryRoot, "tests", "fixtures", "models");

    public static string Model(string name) => Path.Combine(ModelsDirectory, name);

    public static readonly string[] ModelNames =
    [
        "tiny-llama3", "tiny-qwen2-r1", "tiny-qwen3", "tiny-deepseek-v3", "tiny-deepseek-v2-lite",
        "tiny-deepseek-v3-fp8", "tiny-llama3-awq", "tiny-llama3-gptq",
    ];

    /// <summary>EOS ids from the fixture's generation_config.json.</summary>
    public static int[] EosIds(string model)
    {
        using var doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(Model(model), "generation_config.json")));
        var e = doc.RootElement.GetProperty("eos_token_id");
        return e.ValueKind == JsonValueKind.Array ? [.. e.EnumerateArray().Select(x => x.GetInt32())] : [e.GetInt32()];
    }

    public static ModelReference LoadReference(string model)
    {
        using var stream = File.OpenRead(Path.Combine(Model(model), "reference.json"));
        return JsonSerializer.Deserialize<ModelReference>(stream, new JsonSerializerOptions { PropertyNameCaseInsensitive = true })
               ?? throw new InvalidOperationException("empty reference");
    }
}

public sealed class ModelReference
{
    public string Model { get; set; } = "";

    public string Architecture { get; set; } = "";

    public List<ReferenceCase> Cases { get; set; } = [];
}

public sealed class ReferenceCase
{
    public string Kind { get; set; } = "";

    public string? Text { get; set; }

    public string? Rendered { get; set; }

    public JsonElement Messages { get; set; }

    [System.Text.Json.Serialization.JsonPropertyName("prompt_ids")]
    public int[] PromptIds { get; set; } = [];

    [System.Text.Json.Serialization.JsonPropertyName("last_logits")]
    public float[] LastLogits { get; set; } = [];

    [System.Text.Json.Serialization.JsonPropertyName("greedy_ids")]
    public int[] GreedyIds { get; set; } = [];

    [System.Text.Json.Serialization.JsonPropertyName("greedy_margins")]
    public float[] GreedyMargins { get; set; } = [];

    [System.Text.Json.Serialization.JsonPropertyName("greedy_text")]
    public string GreedyText { get; set; } = "";
}
