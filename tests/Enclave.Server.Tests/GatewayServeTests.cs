using System.ClientModel;
using System.Net;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json.Nodes;
using Enclave.Gateway.Hosting;
using Enclave.Gateway.Security;
using Enclave.Server.Cli;
using Enclave.Server.Hosting;
using Enclave.Server.Tests.Support;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.DependencyInjection;
using OpenAI.Chat;

namespace Enclave.Server.Tests;

/// <summary>The real server with the gateway switched on, its store (SQLite) in a temporary ENCLAVE_HOME.</summary>
public sealed class GatewayServeTests : IAsyncLifetime
{
    private readonly string home = Path.Combine(Path.GetTempPath(), "enclave-gwserve-" + Guid.NewGuid().ToString("N"));
    private TestServer server = null!;

    public async Task InitializeAsync()
    {
        Directory.CreateDirectory(home);
        server = await StartAsync(home);
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
            // a file still held open on this platform; the temp directory is cleaned later
        }
    }

    private static Task<TestServer> StartAsync(string home) =>
        TestServer.StartAsync(o =>
        {
            o.NoAuth = false;
            o.Home = home;
        });

    private KeyService Keys => server.Server.Services.GetRequiredService<KeyService>();

    private async Task<string> KeyAsync(string role, string name) => (await Keys.CreateAsync(new KeyCreateRequest(role, name))).Secret;

    private async Task<(HttpStatusCode Status, JsonNode? Body)> SendAsync(HttpMethod method, string path, string? key, JsonNode? body = null)
    {
        using var request = new HttpRequestMessage(method, path);
        if (key is not null)
        {
            request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", key);
        }

        if (body is not null)
        {
            request.Content = new StringContent(body.ToJsonString(), Encoding.UTF8, "application/json");
        }

        using var response = await server.Http.SendAsync(request);
        var text = await response.Content.ReadAsStringAsync();
        return (response.StatusCode, text.Length == 0 ? null : JsonNode.Parse(text));
    }

    private static JsonObject Chat(string model = "tiny-qwen3") => new()
    {
        ["model"] = model,
        ["max_tokens"] = 4,
        ["temperature"] = 0,
        ["messages"] = new JsonArray(new JsonObject { ["role"] = "user", ["content"] = "Hello" }),
    };

    [Fact]
    public async Task ACallWithoutAKeyGets401InTheOpenAiShape()
    {
        var (status, body) = await SendAsync(HttpMethod.Post, "v1/chat/completions", null, Chat());

        Assert.Equal(HttpStatusCode.Unauthorized, status);
        var error = body!["error"]!.AsObject();
        Assert.Equal("missing_api_key", error["code"]!.GetValue<string>());
        Assert.Equal("invalid_request_error", error["type"]!.GetValue<string>());
        Assert.False(string.IsNullOrEmpty(error["message"]!.GetValue<string>()));
        Assert.True(error.ContainsKey("param"));

        var (wrongStatus, wrongBody) = await SendAsync(HttpMethod.Get, "v1/models", "sk-enclave-" + new string('x', 43));
        Assert.Equal(HttpStatusCode.Unauthorized, wrongStatus);
        Assert.Equal("invalid_api_key", wrongBody!["error"]!["code"]!.GetValue<string>());

        var (tokenizeStatus, _) = await SendAsync(HttpMethod.Post, "tokenize", null, new JsonObject { ["model"] = "tiny-qwen3", ["prompt"] = "hi" });
        Assert.Equal(HttpStatusCode.Unauthorized, tokenizeStatus);
    }

    [Fact]
    public async Task ProbesStayOpen()
    {
        Assert.Equal(HttpStatusCode.OK, (await SendAsync(HttpMethod.Get, "health", null)).Status);
        Assert.Equal(HttpStatusCode.OK, (await SendAsync(HttpMethod.Get, "ready", null)).Status);
        using var metrics = await server.Http.GetAsync("metrics");
        Assert.Equal(HttpStatusCode.OK, metrics.StatusCode);
    }

    [Fact]
    public async Task AnAnalystKeyMadeThroughTheAdminApiChatsWithTheOpenAiSdkAndTheCallIsAudited()
    {
        var admin = await KeyAsync(BuiltInRoles.Admin, "ops");
        var (created, createdBody) = await SendAsync(HttpMethod.Post, "admin/keys", admin, new JsonObject { ["role"] = "analyst", ["name"] = "ana" });
        Assert.Equal(HttpStatusCode.Created, created);
        var analyst = createdBody!["secret"]!.GetValue<string>();

        var chat = server.Sdk(analyst).GetChatClient("tiny-qwen3");
        ChatCompletion c = await chat.CompleteChatAsync([new UserChatMessage("Hello there")], new ChatCompletionOptions { Temperature = 0, MaxOutputTokenCount = 6 });
        Assert.Equal("tiny-qwen3", c.Model);
        Assert.NotEmpty(c.Content[0].Text);

        var models = await server.Sdk(analyst).GetOpenAIModelClient().GetModelsAsync();
        Assert.Contains(models.Value, m => m.Id == "tiny-qwen3");

        // Admins cannot read the audit trail (separation of duties); an auditor can.
        Assert.Equal(HttpStatusCode.Forbidden, (await SendAsync(HttpMethod.Get, "admin/audit", admin)).Status);
        var auditor = await KeyAsync(BuiltInRoles.Auditor, "aud");
        var (auditStatus, audit) = await SendAsync(HttpMethod.Get, "admin/audit?principal=ana&model=tiny-qwen3", auditor);
        Assert.Equal(HttpStatusCode.OK, auditStatus);
        var record = Assert.Single(audit!["data"]!.AsArray(), r => r!["endpoint"]!.GetValue<string>() == "/v1/chat/completions");
        Assert.Equal("ana", record!["principal"]!.GetValue<string>());
        Assert.Equal("analyst", record["role"]!.GetValue<string>());
        Assert.Equal("tiny-qwen3", record["model"]!.GetValue<string>());
        Assert.Equal(200, record["status"]!.GetValue<int>());
        Assert.Equal(c.Usage.OutputTokenCount, record["completion_tokens"]!.GetValue<int>());

        var (_, verify) = await SendAsync(HttpMethod.Get, "admin/audit/verify", auditor);
        Assert.True(verify!["intact"]!.GetValue<bool>());
    }

    [Fact]
    public async Task AnAuditorKeyIsRefusedInference()
    {
        var auditor = await KeyAsync(BuiltInRoles.Auditor, "aud");

        var (status, body) = await SendAsync(HttpMethod.Post, "v1/chat/completions", auditor, Chat());
        Assert.Equal(HttpStatusCode.Forbidden, status);
        Assert.Equal("permission_denied", body!["error"]!["code"]!.GetValue<string>());

        var sdk = server.Sdk(auditor).GetChatClient("tiny-qwen3");
        var e = await Assert.ThrowsAsync<ClientResultException>(() => sdk.CompleteChatAsync([new UserChatMessage("hi")]));
        Assert.Equal(403, e.Status);

        // The refusals are audited too.
        var (_, audit) = await SendAsync(HttpMethod.Get, "admin/audit?status=403", auditor);
        Assert.Equal(2, audit!["data"]!.AsArray().Count(r => r!["endpoint"]!.GetValue<string>() == "/v1/chat/completions"));
    }

    [Fact]
    public async Task TheStoreLivesUnderTheHomeAndTheBootstrapAdminKeyIsMadeOnce()
    {
        Assert.True(File.Exists(Path.Combine(home, "gateway.db")), "no SQLite store under the home directory");
        var first = await Keys.ListAsync();
        var bootstrap = Assert.Single(first);
        Assert.Equal(BuiltInRoles.Admin, bootstrap.Role);

        await server.DisposeAsync();
        server = await StartAsync(home);

        var again = await Keys.ListAsync();
        Assert.Equal(bootstrap.Id, Assert.Single(again).Id);
    }

    [Fact]
    public async Task EveryServedEndpointDeclaresThePermissionOfTheWrittenMatrix()
    {
        var matrix = PermissionMatrix.Read();
        var endpoints = server.Server.Services.GetRequiredService<EndpointDataSource>().Endpoints.OfType<RouteEndpoint>()
            .Where(e => e.Metadata.GetMetadata<GatewayAnonymousAttribute>() is null && e.RoutePattern.RawText != "{*path:nonfile}")
            .SelectMany(e => (e.Metadata.GetMetadata<HttpMethodMetadata>()?.HttpMethods ?? ["GET"])
                .Select(m => (Key: $"{m} /{e.RoutePattern.RawText!.TrimStart('/')}", Permission: e.Metadata.GetMetadata<RequirePermissionAttribute>()?.Permission)))
            .ToList();

        Assert.Contains(endpoints, e => e.Key == "POST /v1/chat/completions");
        Assert.Contains(endpoints, e => e.Key == "GET /admin/audit");
        foreach (var (key, permission) in endpoints)
        {
            Assert.True(matrix.TryGetValue(key, out var expected), $"{key} is served but not in docs/security.md's permission matrix");
            Assert.Equal(expected, permission);
        }

        var anonymous = server.Server.Services.GetRequiredService<EndpointDataSource>().Endpoints.OfType<RouteEndpoint>()
            .Where(e => e.Metadata.GetMetadata<GatewayAnonymousAttribute>() is not null)
            .Select(e => e.RoutePattern.RawText!.TrimStart('/'))
            .Order()
            .ToList();
        Assert.Equal(["health", "metrics", "ready"], anonymous);
    }

    [Fact]
    public async Task NoAuthCallsAreStillAuditedAsTheAnonymousPrincipal()
    {
        await using var open = await TestServer.StartAsync();
        var chat = open.Sdk().GetChatClient("tiny-qwen3");
        ChatCompletion c = await chat.CompleteChatAsync([new UserChatMessage("Hello anonymous")], new ChatCompletionOptions { Temperature = 0, MaxOutputTokenCount = 3 });
        Assert.NotEmpty(c.Content[0].Text);

        var audit = open.Server.Services.GetRequiredService<Enclave.Gateway.Audit.AuditLog>();
        var record = Assert.Single(await audit.SearchAsync(new Enclave.Gateway.Audit.AuditQuery(Model: "tiny-qwen3")));
        Assert.Equal("anonymous", record.Principal);
        Assert.Equal(200, record.Status);
        Assert.Equal(c.Usage.OutputTokenCount, record.CompletionTokens);
        Assert.Contains("Hello anonymous", record.Details, StringComparison.Ordinal);
        Assert.True((await audit.VerifyChainAsync()).Intact);
    }

    [Fact]
    public async Task NoAuthIsRefusedOnANonLoopbackHost()
    {
        var options = new ServerOptions { Host = "0.0.0.0", Port = 0, NoAuth = true };
        var e = await Assert.ThrowsAsync<ArgumentException>(() => EnclaveServer.StartAsync(options));
        Assert.Contains("loopback", e.Message, StringComparison.Ordinal);

        foreach (var host in new[] { "127.0.0.1", "::1", "localhost" })
        {
            new ServerOptions { Host = host, NoAuth = true }.Validate();
        }

        Assert.Throws<ArgumentException>(() => new ServerOptions { Host = "192.168.1.10", NoAuth = true }.Validate());
        Assert.Throws<ArgumentException>(() => new ServerOptions { Host = "127.0.0.1", NoAuth = true, ApiKey = "k" }.Validate());

        var exit = await ServeCommand.Create().Parse(["--model", "nothing-here", "--host", "0.0.0.0", "--no-auth"]).InvokeAsync();
        Assert.Equal(2, exit);
    }
}

/// <summary>Reads docs/security.md's permission matrix: "METHOD /route" to permission.</summary>
internal static class PermissionMatrix
{
    public static Dictionary<string, string> Read()
    {
        var dir = new DirectoryInfo(AppContext.BaseDirectory);
        while (dir is not null && !File.Exists(Path.Combine(dir.FullName, "docs", "security.md")))
        {
            dir = dir.Parent;
        }

        Assert.NotNull(dir);
        var text = File.ReadAllText(Path.Combine(dir.FullName, "docs", "security.md"));
        var start = text.IndexOf("<!-- permission-matrix:start -->", StringComparison.Ordinal);
        var end = text.IndexOf("<!-- permission-matrix:end -->", StringComparison.Ordinal);
        Assert.True(start >= 0 && end > start);
        return text[start..end].Split('\n').Where(l => l.StartsWith('|')).Skip(2)
            .Select(l => l.Split('|', StringSplitOptions.TrimEntries))
            .ToDictionary(c => c[1], c => c[2]);
    }
}
