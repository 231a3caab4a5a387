using System.Text.Json;
using System.Text.Json.Serialization;
using Enclave.Engine.Tests.Support;

namespace Enclave.Engine.Tests.Encoders;

/// <summary>The encoder fixtures (tests/fixtures/encoders) and their transformers references (make_encoder_reference.py).</summary>
public static class EncoderFixtures
{
    public static readonly string[] EmbedderNames = ["tiny-bge-bert", "tiny-bge-m3"];

    public const string RerankerName = "tiny-bge-reranker";

    public static string Directory(string name) => Path.Combine(Fixtures.RepositoryRoot, "tests", "fixtures", "encoders", name);

    public static EncoderReference Load(string name)
    {
        using var stream = File.OpenRead(Path.Combine(Directory(name), "reference.json"));
        return JsonSerializer.Deserialize<EncoderReference>(stream) ?? throw new InvalidOperationException("empty reference");
    }
}

public sealed class EncoderReference
{
    [JsonPropertyName("architecture")]
    public string Architecture { get; set; } = "";

    [JsonPropertyName("pooling")]
    public string? Pooling { get; set; }

    [JsonPropertyName("cases")]
    public List<EncoderCase> Cases { get; set; } = [];
}

public sealed class EncoderCase
{
    [JsonPropertyName("text")]
    public string? Text { get; set; }

    [JsonPropertyName("query")]
    public string? Query { get; set; }

    [JsonPropertyName("passage")]
    public string? Passage { get; set; }

    [JsonPropertyName("ids")]
    public int[] Ids { get; set; } = [];

    [JsonPropertyName("token_type_ids")]
    public int[]? TokenTypeIds { get; set; }

    [JsonPropertyName("embedding")]
    public float[] Embedding { get; set; } = [];

    [JsonPropertyName("first_hidden")]
    public float[] FirstHidden { get; set; } = [];

    [JsonPropertyName("score")]
    public float Score { get; set; }
}
