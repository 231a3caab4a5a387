using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;
using Enclave.Gateway.Hosting;
using Enclave.Gateway.Security;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace Enclave.Gateway.Tests;

/// <summary>A real Kestrel server on a loopback port with the gateway, its admin API and stub model endpoints.</summary>
public sealed class GatewayHost : IAsyncDisposable
{
    private readonly WebApplication _app;

    private GatewayHost(WebApplication app, Uri baseAddress)
    {
        _app = app;
        BaseAddress = baseAddress;
        Client = new HttpClient { BaseAddress = baseAddress };
    }

    public Uri BaseAddress { get; }
    public HttpClient Client { get; }
    public IServiceProvider Services => _app.Services;
    public KeyService Keys => Services.GetRequiredService<KeyService>();

    public static async Task<GatewayHost> StartAsync(TestStore store, Action<GatewayOptions>? configure = null)
    {
        var builder = WebApplication.CreateSlimBuilder();
        builder.WebHost.UseUrls("http://127.0.0.1:0");
        builder.Logging.ClearProviders();
        builder.Services.AddEnclaveGateway(builder.Configuration, o =>
        {
            o.Home = store.Home.Path;
            o.Database = store.Database;
            o.Bootstrap = false;
            configure?.Invoke(o);
        });
        var app = builder.Build();
        app.UseEnclaveGateway();
        StubEndpoints.Map(app);
        app.MapEnclaveGatewayAdmin();
        await app.StartAsync();
        var address = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First();
        return new GatewayHost(app, new Uri(address));
    }

    public async Task<string> KeyAsync(string role, Func<KeyCreateRequest, KeyCreateRequest>? edit = null)
    {
        var req = new KeyCreateRequest(role);
        return (await Keys.CreateAsync(edit is null ? req : edit(req))).Secret;
    }

    public static HttpRequestMessage Request(HttpMethod method, string path, string? key, object? body = null, string? forwardedFor = null)
    {
        var msg = new HttpRequestMessage(method, path);
        if (key is not null)
        {
            msg.Headers.Authorization = new AuthenticationHeaderValue("Bearer", key);
        }

        if (forwardedFor is not null)
        {
            msg.Headers.Add("X-Forwarded-For", forwardedFor);
        }

        if (body is not null)
        {
            msg.Content = new StringContent(body as string ?? JsonSerializer.Serialize(body), Encoding.UTF8, "application/json");
        }

        return msg;
    }

    public Task<HttpResponseMessage> SendAsync(HttpMethod method, string path, string? key, object? body = null, string? forwardedFor = null) =>
        Client.SendAsync(Request(method, path, key, body, forwardedFor));

    public Task<HttpResponseMessage> ChatAsync(string? key, string content = "hello", string model = "deepseek-v3", bool stream = false, string[]? reply = null) =>
        SendAsync(HttpMethod.Post, "/v1/chat/completions", key, new
        {
            model,
            stream,
            messages = new[] { new { role = "user", content } },
            x_reply = reply,
        });

    public async ValueTask DisposeAsync()
    {
        Client.Dispose();
        await _app.StopAsync();
        await _app.DisposeAsync();
    }
}

/// <summary>Stand-ins for the server's model endpoints, each declaring its permission like the real ones.</summary>
public static class StubEndpoints
{
    public static void Map(WebApplication app)
    {
        app.MapPost("/v1/chat/completions", ChatAsync).RequirePermission(Permissions.Inference);
        app.MapPost("/v1/completions", () => Results.Json(new { choices = Array.Empty<object>() })).RequirePermission(Permissions.Inference);
        app.MapPost("/v1/embeddings", () => Results.Json(new { data = Array.Empty<object>() })).RequirePermission(Permissions.Inference);
        app.MapGet("/v1/models", () => Results.Json(new { data = new[] { new { id = "deepseek-v3" } } })).RequirePermission(Permissions.ModelsRead);
        app.MapPost("/tokenize", () => Results.Json(new { tokens = Array.Empty<int>(), count = 0 })).RequirePermission(Permissions.Inference);
        app.MapPost("/detokenize", () => Results.Json(new { prompt = "" })).RequirePermission(Permissions.Inference);
        app.MapPost("/v1/rerank", () => Results.Json(new { results = Array.Empty<object>() })).RequirePermission(Permissions.Inference);
        app.MapPost("/rerank", () => Results.Json(new { results = Array.Empty<object>() })).RequirePermission(Permissions.Inference);
        app.MapPost("/admin/models/load", () => Results.Json(new { ok = true })).RequirePermission(Permissions.ModelsManage);
        app.MapPost("/admin/models/unload", () => Results.Json(new { ok = true })).RequirePermission(Permissions.ModelsManage);
        app.MapGet("/admin/alerts", () => Results.Json(new { data = Array.Empty<object>() })).RequirePermission(Permissions.AlertsRead);
        app.MapGet("/v1/kb/collections", () => Results.Json(new { data = Array.Empty<object>() })).RequirePermission(Permissions.KbRead);
        app.MapPost("/v1/kb/collections", () => Results.Json(new { ok = true })).RequirePermission(Permissions.KbManage);
        app.MapGet("/v1/kb/collections/{name}", () => Results.Json(new { ok = true })).RequirePermission(Permissions.KbRead);
        app.MapDelete("/v1/kb/collections/{name}", () => Results.Json(new { ok = true })).RequirePermission(Permissions.KbManage);
        app.MapPut("/v1/kb/collections/{name}/access", () => Results.Json(new { ok = true })).RequirePermission(Permissions.KbManage);
        app.MapGet("/v1/kb/{collection}/documents", () => Results.Json(new { data = Array.Empty<object>() })).RequirePermission(Permissions.KbRead);
        app.MapPost("/v1/kb/{collection}/documents", () => Results.Json(new { ok = true })).RequirePermission(Permissions.KbWrite);
        app.MapDelete("/v1/kb/{collection}/documents/{**document}", () => Results.Json(new { ok = true })).RequirePermission(Permissions.KbWrite);
        app.MapPost("/v1/kb/{collection}/search", () => Results.Json(new { data = Array.Empty<object>() })).RequirePermission(Permissions.KbRead);
        app.MapGet("/v1/kb/jobs/{id}", () => Results.Json(new { ok = true })).RequirePermission(Permissions.KbRead);
        app.MapGet("/healthz", () => Results.Text("ok")).AllowGatewayAnonymous();
    }

    /// <summary>Replies with <c>x_reply</c> pieces when given, else echoes the last message, so tests see what reached the model.</summary>
    private static async Task ChatAsync(HttpContext ctx)
    {
        using var doc = await JsonDocument.ParseAsync(ctx.Request.Body);
        var root = doc.RootElement;
        var messages = root.GetProperty("messages");
        var last = messages[messages.GetArrayLength() - 1].GetProperty("content").GetString() ?? "";
        string[] pieces = root.TryGetProperty("x_reply", out var r) && r.ValueKind == JsonValueKind.Array
            ? [.. r.EnumerateArray().Select(e => e.GetString() ?? "")]
            : [last];
        var stream = root.TryGetProperty("stream", out var s) && s.ValueKind == JsonValueKind.True;
        var usage = !(root.TryGetProperty("x_no_usage", out var nu) && nu.ValueKind == JsonValueKind.True);
        if (!stream)
        {
            await ctx.Response.WriteAsJsonAsync(new
            {
                id = "chatcmpl-stub",
                @object = "chat.completion",
                choices = new[] { new { index = 0, message = new { role = "assistant", content = string.Concat(pieces) }, finish_reason = "stop" } },
                usage = new { prompt_tokens = 10, completion_tokens = 5, total_tokens = 15 },
            });
            return;
        }

        ctx.Response.ContentType = "text/event-stream";
        foreach (var p in pieces)
        {
            var chunk = JsonSerializer.Serialize(new { @object = "chat.completion.chunk", choices = new[] { new { index = 0, delta = new { content = p }, finish_reason = (string?)null } } });
            await ctx.Response.WriteAsync("data: " + chunk + "\n\n");
            await ctx.Response.Body.FlushAsync();
        }

        await ctx.Response.WriteAsync(usage
            ? "data: {\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":10,\"completion_tokens\":5}}\n\n"
            : "data: {\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n");
        await ctx.Response.WriteAsync("data: [DONE]\n\n");
    }
}
