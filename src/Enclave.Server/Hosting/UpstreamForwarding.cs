using System.Net.Http.Headers;
using System.Text.Json.Nodes;
using Enclave.Gateway.Hosting;
using Enclave.Gateway.Security;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using Yarp.ReverseProxy.Transforms;

namespace Enclave.Server.Hosting;

/// <summary>
/// Gateway-only serving (<c>enclave serve --upstream URL</c>): the OpenAI routes are declared here with the same
/// permissions as when the models are local, pass the whole gateway pipeline (authentication, roles, limits, PII
/// policy, content filter, audit of the streamed response) and are forwarded to the engine by YARP, which streams
/// both ways without buffering. The caller's key is replaced by the engine's static key, so gateway keys never
/// leave the gateway and an engine reachable only from gateway pods needs no store of its own.
/// </summary>
internal static class UpstreamForwarding
{
    private static readonly (string Method, string Path, string Permission)[] Routes =
    [
        ("GET", "/v1/models", Permissions.ModelsRead),
        ("POST", "/v1/chat/completions", Permissions.Inference),
        ("POST", "/v1/completions", Permissions.Inference),
        ("POST", "/v1/embeddings", Permissions.Inference),
        ("POST", "/tokenize", Permissions.Inference),
        ("POST", "/detokenize", Permissions.Inference),
    ];

    public static void Map(WebApplication app, Uri upstream, string? upstreamKey)
    {
        var destination = upstream.ToString().TrimEnd('/');
        foreach (var (method, path, permission) in Routes)
        {
            app.MapForwarder(path, destination, transforms =>
                {
                    transforms.AddRequestTransform(t =>
                    {
                        t.ProxyRequest.Headers.Remove("x-api-key");
                        t.ProxyRequest.Headers.Authorization = upstreamKey is null ? null : new AuthenticationHeaderValue("Bearer", upstreamKey);
                        return ValueTask.CompletedTask;
                    });
                })
                .WithMetadata(new HttpMethodMetadata([method]))
                .RequirePermission(permission);
        }

        // Ready when the engine is: a gateway pod without a ready engine behind it must not receive traffic.
        app.MapGet("/ready", async (HttpContext ctx, IHttpClientFactory clients) =>
        {
            string engine;
            try
            {
                using var timeout = CancellationTokenSource.CreateLinkedTokenSource(ctx.RequestAborted);
                timeout.CancelAfter(TimeSpan.FromSeconds(3));
                using var response = await clients.CreateClient(nameof(UpstreamForwarding)).GetAsync(destination + "/ready", timeout.Token);
                engine = response.IsSuccessStatusCode ? "ready" : $"not ready ({(int)response.StatusCode})";
            }
            catch (Exception e) when (e is HttpRequestException or OperationCanceledException)
            {
                engine = "unreachable: " + e.Message;
            }

            var ready = engine == "ready";
            ctx.Response.StatusCode = ready ? 200 : 503;
            if (!ready)
            {
                ctx.Response.Headers.RetryAfter = "5";
            }

            ctx.Response.ContentType = "application/json";
            await ctx.Response.WriteAsync(new JsonObject { ["status"] = ready ? "ready" : "loading", ["upstream"] = new JsonObject { [destination] = engine } }.ToJsonString());
        }).AllowGatewayAnonymous();
    }
}
