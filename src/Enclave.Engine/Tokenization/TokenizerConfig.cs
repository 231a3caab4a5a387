using System.Text.Json;

namespace Enclave.Engine.Tokenization;

/// <summary>
/// The parts of a Hugging Face <c>tokenizer_config.json</c> (and an optional <c>chat_template.jinja</c> next to it)
/// that encoding, decoding and chat templating depend on. A missing file yields the defaults.
/// </summary>
public sealed class TokenizerConfig
{
    public const string FileName = "tokenizer_config.json";
    public const string ChatTemplateFileName = "chat_template.jinja";

    public string? BosToken { get; private init; }
    public string? EosToken { get; private init; }
    public string? PadToken { get; private init; }
    public string? UnkToken { get; private init; }
    public bool? AddBosToken { get; private init; }
    public bool? AddEosToken { get; private init; }
    public string? ChatTemplate { get; private init; }
    public bool CleanUpTokenizationSpaces { get; private init; }
    public IReadOnlyDictionary<string, string?> SpecialTokensMap { get; private init; } = EmptyMap;

    /// <summary>The <c>tokenizer_class</c> entry, which decides how transformers builds the tokenizer.</summary>
    internal string? TokenizerClass { get; private init; }
    internal bool? Legacy { get; private init; }
    internal bool? AddPrefixSpace { get; private init; }
    internal IReadOnlyList<string> AdditionalSpecialTokens { get; private init; } = [];
    /// <summary>transformers' escape hatch that keeps the clean-up for BPE models.</summary>
    internal bool CleanUpForBpe { get; private init; }

    private static readonly IReadOnlyDictionary<string, string?> EmptyMap = new Dictionary<string, string?>
    {
        ["bos_token"] = null,
        ["eos_token"] = null,
        ["unk_token"] = null,
        ["pad_token"] = null,
    };

    public static TokenizerConfig Load(string directory)
    {
        var path = Path.Combine(directory, FileName);
        var templatePath = Path.Combine(directory, ChatTemplateFileName);
        string? fileTemplate = File.Exists(templatePath) ? File.ReadAllText(templatePath) : null;
        if (!File.Exists(path))
            return new TokenizerConfig { ChatTemplate = fileTemplate };

        JsonDocument doc;
        try
        {
            doc = JsonDocument.Parse(File.ReadAllBytes(path), new JsonDocumentOptions { AllowTrailingCommas = true });
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"Tokenizer config '{path}' is not valid JSON: {e.Message}", e);
        }

        using (doc)
        {
            return Parse(doc.RootElement, fileTemplate, path);
        }
    }

    /// <summary>Reads a tokenizer_config.json object (also built in memory from a GGUF file's tokenizer metadata).</summary>
    internal static TokenizerConfig Parse(JsonElement root, string? fileTemplate, string path)
    {
        if (root.ValueKind != JsonValueKind.Object)
            throw new InvalidDataException($"Tokenizer config '{path}' must hold a JSON object.");

        string? bos = TokenContent(root, "bos_token");
        string? eos = TokenContent(root, "eos_token");
        string? pad = TokenContent(root, "pad_token");
        string? unk = TokenContent(root, "unk_token");
        var extra = new List<string>();
        foreach (var key in (ReadOnlySpan<string>)["additional_special_tokens", "extra_special_tokens"])
        {
            if (root.TryGetProperty(key, out var list) && list.ValueKind == JsonValueKind.Array)
            {
                foreach (var item in list.EnumerateArray())
                {
                    var content = ContentOf(item);
                    if (content is not null)
                        extra.Add(content);
                }
            }
        }

        return new TokenizerConfig
        {
            BosToken = bos,
            EosToken = eos,
            PadToken = pad,
            UnkToken = unk,
            AddBosToken = Bool(root, "add_bos_token"),
            AddEosToken = Bool(root, "add_eos_token"),
            ChatTemplate = Template(root) ?? fileTemplate,
            CleanUpTokenizationSpaces = Bool(root, "clean_up_tokenization_spaces") ?? false,
            SpecialTokensMap = new Dictionary<string, string?>
            {
                ["bos_token"] = bos,
                ["eos_token"] = eos,
                ["unk_token"] = unk,
                ["pad_token"] = pad,
            },
            TokenizerClass = root.TryGetProperty("tokenizer_class", out var cls) && cls.ValueKind == JsonValueKind.String
                ? cls.GetString()
                : null,
            Legacy = Bool(root, "legacy"),
            AddPrefixSpace = Bool(root, "add_prefix_space"),
            AdditionalSpecialTokens = extra,
            CleanUpForBpe = Bool(root, "clean_up_tokenization_spaces_for_bpe_even_though_it_will_corrupt_output") ?? false,
        };
    }

    private static bool? Bool(JsonElement root, string name) =>
        root.TryGetProperty(name, out var v) && v.ValueKind is JsonValueKind.True or JsonValueKind.False
            ? v.GetBoolean()
            : null;

    private static string? TokenContent(JsonElement root, string name) =>
        root.TryGetProperty(name, out var v) ? ContentOf(v) : null;

    /// <summary>A token is either a plain string or an AddedToken object carrying "content".</summary>
    internal static string? ContentOf(JsonElement v) => v.ValueKind switch
    {
        JsonValueKind.String => v.GetString(),
        JsonValueKind.Object when v.TryGetProperty("content", out var c) && c.ValueKind == JsonValueKind.String => c.GetString(),
        _ => null,
    };

    private static string? Template(JsonElement root)
    {
        if (!root.TryGetProperty("chat_template", out var t))
            return null;
        if (t.ValueKind == JsonValueKind.String)
            return t.GetString();
        if (t.ValueKind != JsonValueKind.Array)
            return null;
        foreach (var item in t.EnumerateArray())
        {
            if (item.ValueKind == JsonValueKind.Object
                && item.TryGetProperty("name", out var n) && n.ValueKind == JsonValueKind.String && n.GetString() == "default"
                && item.TryGetProperty("template", out var tpl) && tpl.ValueKind == JsonValueKind.String)
                return tpl.GetString();
        }
        return null;
    }
}
