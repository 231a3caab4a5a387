using System.Text.Json;
using System.Text.Json.Nodes;

namespace Enclave.Engine.Models;

/// <summary><c>generation_config.json</c>: the model publisher's default sampling settings and stop tokens.</summary>
public sealed class GenerationConfig
{
    public int[] EosTokenIds { get; init; } = [];

    public int? BosTokenId { get; init; }

    public bool? DoSample { get; init; }

    public double? Temperature { get; init; }

    public double? TopP { get; init; }

    public int? TopK { get; init; }

    public double? RepetitionPenalty { get; init; }

    public int? MaxNewTokens { get; init; }

    public static GenerationConfig Load(string directory)
    {
        var path = Path.Combine(directory, "generation_config.json");
        if (!File.Exists(path))
        {
            return new GenerationConfig();
        }

        JsonObject obj;
        try
        {
            obj = JsonNode.Parse(File.ReadAllText(path)) as JsonObject
                  ?? throw new ModelConfigException($"{path}: must be a JSON object");
        }
        catch (JsonException e)
        {
            throw new ModelConfigException($"{path}: not valid JSON ({e.Message})", e);
        }

        var reader = new ModelConfig.Reader(obj, path);
        var bos = ModelConfig.ReadIds(obj["bos_token_id"]);
        return new GenerationConfig
        {
            EosTokenIds = ModelConfig.ReadIds(obj["eos_token_id"]),
            BosTokenId = bos.Length > 0 ? bos[0] : null,
            DoSample = reader.BoolOrNull("do_sample"),
            Temperature = reader.DoubleOrNull("temperature"),
            TopP = reader.DoubleOrNull("top_p"),
            TopK = reader.IntOrNull("top_k"),
            RepetitionPenalty = reader.DoubleOrNull("repetition_penalty"),
            MaxNewTokens = reader.IntOrNull("max_new_tokens"),
        };
    }
}
