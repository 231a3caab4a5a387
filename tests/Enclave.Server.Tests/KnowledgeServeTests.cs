using System.Net;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json.Nodes;
using Enclave.Gateway.Security;
using Enclave.Server.Tests.Support;
using Microsoft.Extensions.DependencyInjection;
using OpenAI.Chat;

namespace Enclave.Server.Tests;

/// <summary>
/// The knowledge endpoints and the chat "knowledge" extension through the real server with the gateway on: one
/// key owns two collections, another key's role may read only one of them and must never see the other's chunks.
/// </summary>
public sealed class KnowledgeServeTests : IAsyncLifetime
{
    private readonly string home = Path.Combine(Path.GetTempPath(), "enclave-kbserve-" + Guid.NewGuid().ToString("N"));
    private TestServer server = null!;
    private string admin = "";
    private string analyst = "";
    private string auditor = "";

    private const string HrHandbook = "# Staff Handbook\n\n## Leave\n\nAnnual leave is twenty working days per year.\n\n## Parking\n\nParking spaces are allocated by quarterly lottery.\n";
    private const string BoardMinutes = "# Board Minutes\n\n## Acquisition\n\nThe board approved the acquisition of Falcon Labs for annual leave of absence budget twelve million.\n";

    public async Task InitializeAsync()
    {
        Directory.CreateDirectory(home);
        server = await TestServer.StartAsync(o =>
        {
            o.NoAuth = false;
            o.Home = home;
        });
        var keys = server.Server.Services.GetRequiredService<KeyService>();
        admin = (await keys.CreateAsync(new KeyCreateRequest(BuiltInRoles.Admin, "ops"))).Secret;
        analyst = (await keys.CreateAsync(new KeyCreateRequest(BuiltInRoles.Analyst, "ana"))).Secret;
        auditor = (await keys.CreateAsync(new KeyCreateRequest(BuiltInRoles.Auditor, "aud"))).Secret;
    }

    public async Task DisposeAsync()
    {
        await server.DisposeAsync();
        Microsoft.Data.Sqlite.SqliteConnection.ClearAllPools();
        try
        {
            Directory.Delete(home, recursive: true);
        }
        catch (IOException)
        {
            // a file still held open; the temp directory is cleaned later
        }
    }

    private async Task<(HttpStatusCode Status, JsonNode? Body)> SendAsync(HttpMethod method, string path, string key, JsonNode? body = null, HttpContent? content = null)
    {
        using var request = new HttpRequestMessage(method, path);
        request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", key);
        request.Content = content ?? (body is null ? null : new StringContent(body.ToJsonString(), Encoding.UTF8, "application/json"));
        using var response = await server.Http.SendAsync(request);
        var text = await response.Content.ReadAsStringAsync();
        return (response.StatusCode, text.Length == 0 ? null : JsonNode.Parse(text));
    }

    private async Task<JsonNode> UploadAsync(string collection, string name, string text, string key)
    {
        using var form = new MultipartFormDataContent();
        var file = new ByteArrayContent(Encoding.UTF8.GetBytes(text));
        file.Headers.ContentType = new MediaTypeHeaderValue("text/markdown");
        form.Add(file, "file", name);
        var (status, body) = await SendAsync(HttpMethod.Post, $"v1/kb/{collection}/documents", key, content: form);
        Assert.True(status == HttpStatusCode.Accepted, $"{(int)status} {body}");
        Assert.Equal("kb.job", body!["object"]!.GetValue<string>());
        var id = body["id"]!.GetValue<string>();
        for (var i = 0; i < 600; i++)
        {
            var (_, job) = await SendAsync(HttpMethod.Get, $"v1/kb/jobs/{id}", key);
            var state = job!["status"]!.GetValue<string>();
            if (state is "succeeded" or "failed" or "unchanged")
            {
                return job;
            }

            await Task.Delay(50);
        }

        throw new TimeoutException("the ingestion job did not finish");
    }

    private async Task SetUpCollectionsAsync()
    {
        var (created, body) = await SendAsync(HttpMethod.Post, "v1/kb/collections", admin,
            new JsonObject { ["name"] = "hr", ["description"] = "HR policies", ["readers"] = new JsonArray("role:analyst") });
        Assert.True(created == HttpStatusCode.Created, body?.ToJsonString());
        // A key without a gateway user owns what it creates as key:PREFIX (key names are free labels).
        Assert.Equal("key:" + admin.Substring("sk-enclave-".Length, 12), body!["owner"]!.GetValue<string>());
        (created, _) = await SendAsync(HttpMethod.Post, "v1/kb/collections", admin, new JsonObject { ["name"] = "board" });
        Assert.Equal(HttpStatusCode.Created, created);
        Assert.Equal("succeeded", (await UploadAsync("hr", "handbook.md", HrHandbook, admin))["status"]!.GetValue<string>());
        Assert.Equal("succeeded", (await UploadAsync("board", "minutes.md", BoardMinutes, admin))["status"]!.GetValue<string>());
    }

    private static JsonObject Search(string query) => new() { ["query"] = query, ["top_k"] = 5 };

    [Fact]
    public async Task A_reader_finds_its_collection_and_never_the_other_in_search_or_listings()
    {
        await SetUpCollectionsAsync();
        var (status, body) = await SendAsync(HttpMethod.Post, "v1/kb/hr/search", analyst, Search("annual leave days"));
        Assert.Equal(HttpStatusCode.OK, status);
        var top = body!["data"]![0]!;
        Assert.Equal("handbook.md", top["document"]!.GetValue<string>());
        Assert.Equal("Staff Handbook > Leave", top["heading"]!.GetValue<string>());
        Assert.Equal("Annual leave is twenty working days per year.", top["text"]!.GetValue<string>());

        var (hidden, error) = await SendAsync(HttpMethod.Post, "v1/kb/board/search", analyst, Search("acquisition"));
        Assert.Equal(HttpStatusCode.NotFound, hidden);
        Assert.Contains("no knowledge collection named 'board'", error!["error"]!["message"]!.GetValue<string>(), StringComparison.Ordinal);
        var (_, list) = await SendAsync(HttpMethod.Get, "v1/kb/collections", analyst);
        Assert.Equal(["hr"], list!["data"]!.AsArray().Select(c => c!["name"]!.GetValue<string>()));
        var (_, all) = await SendAsync(HttpMethod.Get, "v1/kb/collections", admin);
        Assert.Equal(["board", "hr"], all!["data"]!.AsArray().Select(c => c!["name"]!.GetValue<string>()));
        Assert.Equal(HttpStatusCode.NotFound, (await SendAsync(HttpMethod.Get, "v1/kb/collections/board", analyst)).Status);
        Assert.Equal(HttpStatusCode.NotFound, (await SendAsync(HttpMethod.Get, "v1/kb/board/documents", analyst)).Status);

        // Readers may not write; auditors have no kb permission at all.
        using var form = new MultipartFormDataContent { { new StringContent("# X"), "file", "x.md" } };
        var (forbidden, _) = await SendAsync(HttpMethod.Post, "v1/kb/hr/documents", analyst, content: form);
        Assert.Equal(HttpStatusCode.Forbidden, forbidden);
        var (denied, deniedBody) = await SendAsync(HttpMethod.Post, "v1/kb/hr/search", auditor, Search("leave"));
        Assert.Equal(HttpStatusCode.Forbidden, denied);
        Assert.Equal("permission_denied", deniedBody!["error"]!["code"]!.GetValue<string>());
    }

    [Fact]
    public async Task Grounded_chat_returns_citations_only_from_collections_the_caller_may_read()
    {
        await SetUpCollectionsAsync();
        JsonObject Chat(params string[] collections) => new()
        {
            ["model"] = "tiny-qwen3",
            ["max_tokens"] = 4,
            ["temperature"] = 0,
            ["messages"] = new JsonArray(new JsonObject { ["role"] = "user", ["content"] = "How many days of annual leave do staff get?" }),
            ["knowledge"] = new JsonObject { ["collections"] = new JsonArray([.. collections.Select(c => (JsonNode)c)]), ["top_k"] = 3 },
        };

        var (status, body) = await SendAsync(HttpMethod.Post, "v1/chat/completions", analyst, Chat("hr"));
        Assert.True(status == HttpStatusCode.OK, body?.ToJsonString());
        var citations = body!["citations"]!.AsArray();
        Assert.NotEmpty(citations);
        Assert.All(citations, c => Assert.Equal("hr", c!["collection"]!.GetValue<string>()));
        Assert.Equal("Annual leave is twenty working days per year.", citations[0]!["text"]!.GetValue<string>());
        Assert.Equal(1, citations[0]!["index"]!.GetValue<int>());
        Assert.NotNull(body["choices"]![0]!["message"]!["content"]);
        // The passages went into the prompt: the same question without the extension is far shorter.
        var plain = Chat("hr");
        plain.Remove("knowledge");
        var (_, plainBody) = await SendAsync(HttpMethod.Post, "v1/chat/completions", analyst, plain);
        Assert.Null(plainBody!["citations"]);
        Assert.True(body["usage"]!["prompt_tokens"]!.GetValue<int>() > plainBody["usage"]!["prompt_tokens"]!.GetValue<int>() + 20);

        // Naming a collection the caller may not read refuses the whole request: nothing of it reaches the prompt.
        var (refused, error) = await SendAsync(HttpMethod.Post, "v1/chat/completions", analyst, Chat("hr", "board"));
        Assert.Equal(HttpStatusCode.NotFound, refused);
        Assert.Equal("knowledge.collections", error!["error"]!["param"]!.GetValue<string>());
        Assert.DoesNotContain("Falcon", error.ToJsonString(), StringComparison.Ordinal);

        // The owner's key sees the board's chunk for the same question.
        var (_, owner) = await SendAsync(HttpMethod.Post, "v1/chat/completions", admin, Chat("hr", "board"));
        Assert.Contains(owner!["citations"]!.AsArray(), c => c!["collection"]!.GetValue<string>() == "board");

        // Streaming: the citations come first, then ordinary chunks the official SDK reads.
        var chat = Chat("hr");
        chat["stream"] = true;
        using var request = new HttpRequestMessage(HttpMethod.Post, "v1/chat/completions") { Content = new StringContent(chat.ToJsonString(), Encoding.UTF8, "application/json") };
        request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", analyst);
        using var response = await server.Http.SendAsync(request);
        var events = (await response.Content.ReadAsStringAsync()).Split("\n\n").Where(e => e.StartsWith("data: {", StringComparison.Ordinal)).Select(e => JsonNode.Parse(e[6..])!).ToList();
        Assert.Equal("hr", events[0]["citations"]![0]!["collection"]!.GetValue<string>());
        Assert.Empty(events[0]["choices"]!.AsArray());
        Assert.All(events.Skip(1), e => Assert.Null(e["citations"]));

        var sdk = server.Sdk(analyst).GetChatClient("tiny-qwen3");
        var options = new ChatCompletionOptions { Temperature = 0, MaxOutputTokenCount = 4 };
#pragma warning disable SCME0001 // JSON patching is how the SDK sends a request field it does not model
        options.Patch.Set("$.knowledge"u8, BinaryData.FromString("""{"collections":["hr"],"top_k":2}"""));
#pragma warning restore SCME0001
        var text = new StringBuilder();
        await foreach (var update in sdk.CompleteChatStreamingAsync([new UserChatMessage("annual leave?")], options))
        {
            foreach (var part in update.ContentUpdate)
            {
                text.Append(part.Text);
            }
        }

        Assert.True(text.Length > 0);

        var (noKb, noKbBody) = await SendAsync(HttpMethod.Post, "v1/chat/completions", auditor, Chat("hr"));
        Assert.Equal(HttpStatusCode.Forbidden, noKb);
        Assert.NotNull(noKbBody);
    }

    [Fact]
    public async Task Uploads_are_idempotent_replaced_and_deleted_through_the_api()
    {
        await SetUpCollectionsAsync();
        Assert.Equal("unchanged", (await UploadAsync("hr", "handbook.md", HrHandbook, admin))["status"]!.GetValue<string>());
        var changed = HrHandbook.Replace("twenty", "twenty-five", StringComparison.Ordinal);
        var job = await UploadAsync("hr", "handbook.md", changed, admin);
        Assert.Equal("succeeded", job["status"]!.GetValue<string>());
        var (_, hits) = await SendAsync(HttpMethod.Post, "v1/kb/hr/search", admin, Search("annual leave"));
        Assert.Equal("Annual leave is twenty-five working days per year.", hits!["data"]![0]!["text"]!.GetValue<string>());

        var bad = await UploadAsync("hr", "broken.pdf", "not a pdf", admin);
        Assert.Equal("failed", bad["status"]!.GetValue<string>());
        Assert.Contains("broken.pdf", bad["error"]!.GetValue<string>(), StringComparison.Ordinal);
        var (badType, badTypeBody) = await SendAsync(HttpMethod.Post, "v1/kb/hr/documents", admin, content: new MultipartFormDataContent { { new StringContent("x"), "file", "x.exe" } });
        Assert.Equal(HttpStatusCode.BadRequest, badType);
        Assert.Contains("unsupported file type", badTypeBody!["error"]!["message"]!.GetValue<string>(), StringComparison.Ordinal);
        var (notForm, _) = await SendAsync(HttpMethod.Post, "v1/kb/hr/documents", admin, new JsonObject { ["file"] = "x" });
        Assert.Equal(HttpStatusCode.BadRequest, notForm);

        var (deleted, _) = await SendAsync(HttpMethod.Delete, "v1/kb/hr/documents/handbook.md", admin);
        Assert.Equal(HttpStatusCode.OK, deleted);
        var (_, after) = await SendAsync(HttpMethod.Post, "v1/kb/hr/search", admin, Search("annual leave"));
        Assert.Empty(after!["data"]!.AsArray());

        var (gone, _) = await SendAsync(HttpMethod.Delete, "v1/kb/collections/hr", admin);
        Assert.Equal(HttpStatusCode.OK, gone);
        Assert.Equal(HttpStatusCode.NotFound, (await SendAsync(HttpMethod.Post, "v1/kb/hr/search", admin, Search("leave"))).Status);
    }
}
