using System.CommandLine;
using System.Text.Json.Nodes;
using Enclave.Knowledge.Cli;
using Enclave.Knowledge.Tests.Support;

namespace Enclave.Knowledge.Tests;

public sealed class CliTests : IDisposable
{
    private readonly TempDir dir = new();

    public void Dispose() => dir.Dispose();

    private async Task<(int Code, string Out, string Err)> RunAsync(params string[] args)
    {
        var root = new RootCommand { KbCommand.Create() };
        var output = new StringWriter();
        var error = new StringWriter();
        var code = await root.Parse(["kb", "--dir", Path.Combine(dir.Path, "kb"), .. args]).InvokeAsync(new InvocationConfiguration { Output = output, Error = error });
        return (code, output.ToString(), error.ToString());
    }

    [Fact]
    public async Task Create_add_folders_list_search_as_json_and_remove()
    {
        var docs = Directory.CreateDirectory(Path.Combine(dir.Path, "docs"));
        var nested = docs.CreateSubdirectory("finance");
        await File.WriteAllTextAsync(Path.Combine(docs.FullName, "security.md"), "# Security\n\n## Passwords\n\nPasswords rotate every 180 days.\n");
        await File.WriteAllBytesAsync(Path.Combine(nested.FullName, "travel.docx"), Files.Docx("差旅", body =>
        {
            body.Append(Files.Para("住宿标准", "Heading1"));
            body.Append(Files.Para("一线城市住宿标准为每晚六百元。"));
        }));
        await File.WriteAllTextAsync(Path.Combine(nested.FullName, "image.png"), "ignored: not a document type");

        Assert.Equal(0, (await RunAsync("create", "corp", "--description", "Company policies")).Code);
        var add = await RunAsync("add", "corp", docs.FullName);
        Assert.Equal(0, add.Code);
        Assert.Contains("added docs/security.md (1 chunks)", add.Out, StringComparison.Ordinal);
        Assert.Contains("added docs/finance/travel.docx (1 chunks)", add.Out, StringComparison.Ordinal);
        Assert.Contains("2 added, 0 unchanged, 0 failed", add.Out, StringComparison.Ordinal);
        Assert.Contains("0 added, 2 unchanged, 0 failed", (await RunAsync("add", "corp", docs.FullName)).Out, StringComparison.Ordinal);

        var list = await RunAsync("list", "--json");
        var row = JsonNode.Parse(list.Out)!.AsArray().Single()!;
        Assert.Equal("corp", row["name"]!.GetValue<string>());
        Assert.Equal(2, row["documents"]!.GetValue<int>());

        var search = await RunAsync("search", "corp", "北京出差住宿每晚多少钱", "--top-k", "1", "--mode", "bm25", "--json");
        Assert.Equal(0, search.Code);
        var hit = JsonNode.Parse(search.Out)!.AsArray().Single()!.AsObject();
        Assert.Equal(["document", "page", "heading", "text", "score"], hit.Select(p => p.Key));
        Assert.Equal("docs/finance/travel.docx", hit["document"]!.GetValue<string>());
        Assert.Equal("住宿标准", hit["heading"]!.GetValue<string>());
        Assert.Equal("一线城市住宿标准为每晚六百元。", hit["text"]!.GetValue<string>());
        Assert.Null(hit["page"]);
        Assert.True(hit["score"]!.GetValue<double>() > 0);

        var text = await RunAsync("search", "corp", "password rotation");
        Assert.Contains("1. [", text.Out, StringComparison.Ordinal);
        Assert.Contains("docs/security.md § Security > Passwords", text.Out, StringComparison.Ordinal);

        Assert.Equal(0, (await RunAsync("rm", "corp", "docs/security.md")).Code);
        Assert.Equal("[]", (await RunAsync("search", "corp", "password rotation", "--json")).Out.Trim());
        Assert.Equal(0, (await RunAsync("rm", "corp")).Code);
        var missing = await RunAsync("search", "corp", "anything");
        Assert.Equal(3, missing.Code);
        Assert.Contains("no knowledge collection named 'corp'", missing.Err, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Bad_arguments_say_what_is_wrong()
    {
        var badMode = await RunAsync("search", "x", "q", "--mode", "fuzzy");
        Assert.NotEqual(0, badMode.Code);
        Assert.Contains("fuzzy", badMode.Err, StringComparison.Ordinal);
        var noFile = await RunAsync("add", "x", Path.Combine(dir.Path, "nope.md"));
        Assert.Equal(2, noFile.Code);
        Assert.Contains("no such file or folder", noFile.Err, StringComparison.Ordinal);
        var badPii = await RunAsync("create", "y", "--pii", "shred");
        Assert.Equal(2, badPii.Code);
        Assert.Contains("pii policy 'shred'", badPii.Err, StringComparison.Ordinal);
    }
}
