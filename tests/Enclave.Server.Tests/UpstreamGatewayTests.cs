using System.ClientModel;
using System.Net;
using System.Net.Http.Headers;
using System.Text.Json.Nodes;
using Enclave.Engine.Tests.Support;
using Enclave.Gateway.Security;
using Enclave.Server.Hosting;
using Enclave.Server.Tests.Support;
using Microsoft.Extensions.DependencyInjection;
using OpenAI;
using OpenAI.Chat;

namespace Enclave.Server.Tests;

/// <summary>
/// Gateway-only serving (`enclave serve --upstream`): a real engine server behind its static key, a real gateway
/// server in front of it with its own store, and the OpenAI SDK as the client.
/// </summary>
public sealed class UpstreamGatewayTests : IAsyncLifetime
{
    private readonly string home = Path.Combine(Path.GetTempPath(), "enclave-upstream-" + Guid.NewGuid().ToString("N"));
    private readonly string engineKey = "engine-" + Guid.NewGuid().ToString("N");
    private TestServer engine = null!;
    private EnclaveServer gateway = null!;
    private HttpClient http = null!;

    public async Task InitializeAsync()
    {
        Directory.CreateDirectory(home);
        engine = await TestServer.StartAsync(o => o.ApiKey = engineKey);
        var options = new ServerOptions
        {
            Host = "127.0.0.1",
            Port = 0,
            Home = home,
            Upstream = engine.Address,
            UpstreamApiKey = engineKey,
            GpuSamples = () => null,
        };
        gateway = await EnclaveServer.StartAsync(options, _ => { });
        http = new HttpClient { BaseAddress = gateway.Address };
    }

    public async Task DisposeAsync()
    {
        http.Dispose();
        await gateway.DisposeAsync();
        await engine.DisposeAsync();
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

    private async Task<string> KeyAsync(string role, string name) =>
        (await gateway.Services.GetRequiredService<KeyService>().CreateAsync(new KeyCreateRequest(role, name))).Secret;

    private OpenAIClient Sdk(Uri address, string key) =>
        new(new ApiKeyCredential(key), new OpenAIClientOptions { Endpoint = new Uri(address, "v1"), NetworkTimeout = TimeSpan.FromMinutes(2) });

    [Fact]
    public async Task AGatewayKeyChatsThroughTheGatewayAndTheCallIsAuditedWithItsTokens()
    {
        var analyst = await KeyAsync(BuiltInRoles.Analyst, "upstream-ana");
        var chat = Sdk(gateway.Address, analyst).GetChatClient("tiny-qwen3");

        ChatCompletion completion = await chat.CompleteChatAsync([new UserChatMessage("Hello through the gateway")], new ChatCompletionOptions { Temperature = 0, MaxOutputTokenCount = 6 });
        Assert.Equal("tiny-qwen3", completion.Model);
        Assert.Equal(6, completion.Usage.OutputTokenCount);

        // The same request straight to the engine gives the same greedy text: the gateway forwarded it unchanged.
        ChatCompletion direct = await Sdk(engine.Address, engineKey).GetChatClient("tiny-qwen3")
            .CompleteChatAsync([new UserChatMessage("Hello through the gateway")], new ChatCompletionOptions { Temperature = 0, MaxOutputTokenCount = 6 });
        Assert.Equal(direct.Content[0].Text, completion.Content[0].Text);

        // Streaming passes through as it is produced.
        var chunks = 0;
        var streamed = new System.Text.StringBuilder();
        await foreach (var update in chat.CompleteChatStreamingAsync([new UserChatMessage("Hello through the gateway")], new ChatCompletionOptions { Temperature = 0, MaxOutputTokenCount = 6 }))
        {
            chunks++;
            foreach (var part in update.ContentUpdate)
            {
                streamed.Append(part.Text);
            }
        }

        Assert.True(chunks >= 6, $"{chunks} chunks");
        Assert.Equal(completion.Content[0].Text, streamed.ToString());

        var models = await Sdk(gateway.Address, analyst).GetOpenAIModelClient().GetModelsAsync();
        Assert.Contains(models.Value, m => m.Id == "tiny-qwen3");

        var auditor = await KeyAsync(BuiltInRoles.Auditor, "upstream-aud");
        using var request = new HttpRequestMessage(HttpMethod.Get, "admin/audit?principal=upstream-ana");
        request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", auditor);
        using var response = await http.SendAsync(request);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        var records = JsonNode.Parse(await response.Content.ReadAsStringAsync())!["data"]!.AsArray();
        var first = records.First(r => r!["endpoint"]!.GetValue<string>() == "/v1/chat/completions" && r["completion_tokens"]?.GetValue<int?>() is not null);
        Assert.Equal("tiny-qwen3", first!["model"]!.GetValue<string>());
        Assert.Equal(completion.Usage.InputTokenCount, first["prompt_tokens"]!.GetValue<int>());
        Assert.Equal(6, first["completion_tokens"]!.GetValue<int>());
    }

    [Fact]
    public async Task KeysDoNotCrossTheGateway()
    {
        // No key: the gateway answers, the engine never sees the call.
        using var anonymous = await http.PostAsync("v1/chat/completions", new StringContent("{\"model\":\"tiny-qwen3\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}", System.Text.Encoding.UTF8, "application/json"));
        Assert.Equal(HttpStatusCode.Unauthorized, anonymous.StatusCode);
        Assert.Contains("missing_api_key", await anonymous.Content.ReadAsStringAsync(), StringComparison.Ordinal);

        // A gateway key is worthless at the engine, and the engine's key is not a gateway key.
        var analyst = await KeyAsync(BuiltInRoles.Analyst, "upstream-direct");
        var atEngine = await Assert.ThrowsAsync<ClientResultException>(() => Sdk(engine.Address, analyst).GetChatClient("tiny-qwen3").CompleteChatAsync([new UserChatMessage("hi")]));
        Assert.Equal(401, atEngine.Status);
        var atGateway = await Assert.ThrowsAsync<ClientResultException>(() => Sdk(gateway.Address, engineKey).GetChatClient("tiny-qwen3").CompleteChatAsync([new UserChatMessage("hi")]));
        Assert.Equal(401, atGateway.Status);

        // An auditor holds no inference permission: refused at the gateway.
        var auditor = await KeyAsync(BuiltInRoles.Auditor, "upstream-aud2");
        var denied = await Assert.ThrowsAsync<ClientResultException>(() => Sdk(gateway.Address, auditor).GetChatClient("tiny-qwen3").CompleteChatAsync([new UserChatMessage("hi")]));
        Assert.Equal(403, denied.Status);
    }

    [Fact]
    public async Task TheGatewayIsReadyOnlyWhileItsEngineIs()
    {
        using var ready = await http.GetAsync("ready");
        Assert.Equal(HttpStatusCode.OK, ready.StatusCode);
        Assert.Equal("ready", JsonNode.Parse(await ready.Content.ReadAsStringAsync())!["status"]!.GetValue<string>());

        await engine.DisposeAsync();
        using var gone = await http.GetAsync("ready");
        Assert.Equal(HttpStatusCode.ServiceUnavailable, gone.StatusCode);
        Assert.Contains("unreachable", await gone.Content.ReadAsStringAsync(), StringComparison.Ordinal);
        Assert.Equal(HttpStatusCode.OK, (await http.GetAsync("health")).StatusCode);
        engine = await TestServer.StartAsync(o => o.ApiKey = engineKey); // for DisposeAsync
    }

    [Fact]
    public void ForwardedRoutesDeclareTheWrittenMatrixPermissions()
    {
        var matrix = PermissionMatrix.Read();
        var forwarded = gateway.Services.GetRequiredService<Microsoft.AspNetCore.Routing.EndpointDataSource>().Endpoints
            .OfType<Microsoft.AspNetCore.Routing.RouteEndpoint>()
            .Where(e => e.Metadata.GetMetadata<Enclave.Gateway.Hosting.GatewayAnonymousAttribute>() is null && e.RoutePattern.RawText != "{*path:nonfile}")
            .Select(e => (Key: $"{Assert.Single(e.Metadata.GetMetadata<Microsoft.AspNetCore.Routing.HttpMethodMetadata>()!.HttpMethods)} /{e.RoutePattern.RawText!.TrimStart('/')}",
                Permission: e.Metadata.GetMetadata<Enclave.Gateway.Hosting.RequirePermissionAttribute>()?.Permission))
            .ToList();
        Assert.Contains(forwarded, e => e.Key == "POST /v1/chat/completions");
        foreach (var (key, permission) in forwarded)
        {
            Assert.True(matrix.TryGetValue(key, out var expected), $"{key} is served but not in docs/security.md's permission matrix");
            Assert.Equal(expected, permission);
        }
    }

    [Fact]
    public void UpstreamExcludesLocalModelsAndUnauthenticatedServing()
    {
        var withModel = new ServerOptions { Upstream = new Uri("http://engine:8000") };
        withModel.Models.Add(new ModelSpec("tiny-qwen3", Fixtures.Model("tiny-qwen3")));
        Assert.Contains("exclude each other", Assert.Throws<ArgumentException>(withModel.Validate).Message, StringComparison.Ordinal);
        Assert.Contains("--no-auth", Assert.Throws<ArgumentException>(new ServerOptions { Upstream = new Uri("http://engine:8000"), NoAuth = true }.Validate).Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task ServeWithoutModelOrUpstreamSaysWhatIsMissing()
    {
        // The reason goes to standard error; the exit code is the contract scripts rely on.
        Assert.Equal(2, await Enclave.Server.Cli.ServeCommand.Create().Parse([]).InvokeAsync());
        Assert.Equal(2, await Enclave.Server.Cli.ServeCommand.Create().Parse(["--upstream", "engine:8000"]).InvokeAsync());
    }
}
