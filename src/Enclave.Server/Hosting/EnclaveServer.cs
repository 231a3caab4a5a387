using System.Diagnostics;
using System.Globalization;
using System.Text.Json.Nodes;
using Enclave.Gateway.Hosting;
using Enclave.Server.Api;
using Enclave.Server.Knowledge;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace Enclave.Server.Hosting;

/// <summary>
/// The HTTP server: Kestrel with minimal-API endpoints, models loading in the background, Prometheus metrics and
/// one structured log line per request. <see cref="StartAsync"/> returns once the socket listens (models may still
/// be loading: /ready says when they are).
/// </summary>
public sealed class EnclaveServer : IAsyncDisposable
{
    private readonly WebApplication app;

    private readonly PrometheusExporter exporter;

    private readonly KnowledgeService knowledge;

    private EnclaveServer(WebApplication app, ModelCatalog catalog, ServerMetrics metrics, PrometheusExporter exporter, Task loading, KnowledgeService knowledge)
    {
        this.app = app;
        this.knowledge = knowledge;
        this.exporter = exporter;
        Catalog = catalog;
        Metrics = metrics;
        Loading = loading;
    }

    public ModelCatalog Catalog { get; }

    public ServerMetrics Metrics { get; }

    /// <summary>Completes when every model has loaded or failed.</summary>
    public Task Loading { get; }

    /// <summary>The address the server listens on, e.g. http://127.0.0.1:8000.</summary>
    public Uri Address { get; private set; } = new("http://127.0.0.1/");

    public IServiceProvider Services => app.Services;

    public static async Task<EnclaveServer> StartAsync(ServerOptions options, Action<ILoggingBuilder>? configureLogging = null, CancellationToken cancellationToken = default)
    {
        options.Validate();
        var builder = WebApplication.CreateSlimBuilder(new WebApplicationOptions { Args = [] });
        builder.Logging.ClearProviders();
        if (configureLogging is not null)
        {
            configureLogging(builder.Logging);
        }
        else if (options.JsonLogs)
        {
            builder.Logging.AddJsonConsole(o =>
            {
                o.TimestampFormat = "yyyy-MM-ddTHH:mm:ss.fffZ";
                o.UseUtcTimestamp = true;
            });
        }
        else
        {
            builder.Logging.AddSimpleConsole(o => o.SingleLine = true);
        }

        builder.Logging.AddFilter("Microsoft.AspNetCore", LogLevel.Warning);
        builder.Logging.AddFilter("Microsoft.Hosting", LogLevel.Warning);
        builder.WebHost.ConfigureKestrel(k =>
        {
            k.Limits.MaxRequestBodySize = options.MaxRequestBodyBytes + 1;
            k.AddServerHeader = false;
            if (!System.Net.IPAddress.TryParse(options.Host, out var ip))
            {
                ip = options.Host == "localhost" ? System.Net.IPAddress.Loopback : throw new ArgumentException($"--host {options.Host}: not an IP address", nameof(options));
            }

            k.Listen(ip, options.Port);
        });

        var loggerFactory = LoggerFactory.Create(b =>
        {
            if (configureLogging is not null)
            {
                configureLogging(b);
            }
            else if (options.JsonLogs)
            {
                b.AddJsonConsole(o =>
                {
                    o.TimestampFormat = "yyyy-MM-ddTHH:mm:ss.fffZ";
                    o.UseUtcTimestamp = true;
                });
            }
            else
            {
                b.AddSimpleConsole(o => o.SingleLine = true);
            }
        });
        var serverLogger = loggerFactory.CreateLogger("Enclave.Server");
        // Knowledge settings (directory, PostgreSQL, key file, analysis, prompt templates) from Enclave:Knowledge.
        builder.Configuration.GetSection("Enclave:Knowledge").Bind(options.Knowledge);
        var catalog = new ModelCatalog(options, loggerFactory.CreateLogger("Enclave.Engine"));
        var metrics = new ServerMetrics(catalog);
        builder.Services.AddSingleton(catalog);
        builder.Services.AddSingleton(metrics);
        builder.Services.AddSingleton(loggerFactory);
        if (options.UsesGateway)
        {
            builder.Services.AddEnclaveGateway(builder.Configuration, o =>
            {
                if (options.Home is not null)
                {
                    o.Home = options.Home;
                }

                if (options.Database is not null)
                {
                    o.Database = options.Database;
                }

                // Unauthenticated serving is decided here, where the listen address is known.
                o.NoAuth = false;
                options.ConfigureGateway?.Invoke(o);
            });
        }

        var exporter = new PrometheusExporter(metrics.Meter);

        var app = builder.Build();
        var requestLogger = loggerFactory.CreateLogger("Enclave.Server.Requests");
        app.Use(async (ctx, next) =>
        {
            var start = Stopwatch.GetTimestamp();
            var log = RequestLog.For(ctx);
            try
            {
                await next(ctx);
            }
            finally
            {
                var status = ctx.RequestAborted.IsCancellationRequested && log.Error == "client disconnected" ? 499 : ctx.Response.StatusCode;
                if (ctx.Request.Path != "/metrics" && ctx.Request.Path != "/health")
                {
                    requestLogger.LogInformation(
                        "{Method} {Path} {Status} {RequestId} model={Model} prompt_tokens={PromptTokens} completion_tokens={CompletionTokens} ttft_ms={TtftMs} duration_ms={DurationMs} stream={Stream} finish_reason={FinishReason} error={Error}",
                        ctx.Request.Method, ctx.Request.Path.Value, status, log.RequestId, log.Model, log.PromptTokens, log.CompletionTokens,
                        log.TimeToFirstTokenMs is { } t ? Math.Round(t, 2) : null, Math.Round(Stopwatch.GetElapsedTime(start).TotalMilliseconds, 2),
                        log.Stream, log.FinishReason, log.Error);
                }
            }
        });

        if (options.UsesGateway)
        {
            // Keys, roles, per-endpoint permissions, rate limits and the audit trail.
            app.UseEnclaveGateway();
        }
        else if (!string.IsNullOrEmpty(options.ApiKey))
        {
            var expected = "Bearer " + options.ApiKey;
            app.Use(async (ctx, next) =>
            {
                var path = ctx.Request.Path;
                var guarded = path.StartsWithSegments("/v1") || path.StartsWithSegments("/tokenize") || path.StartsWithSegments("/detokenize");
                if (guarded && !System.Security.Cryptography.CryptographicOperations.FixedTimeEquals(
                        System.Text.Encoding.UTF8.GetBytes(ctx.Request.Headers.Authorization.ToString()), System.Text.Encoding.UTF8.GetBytes(expected)))
                {
                    RequestLog.For(ctx).Error = "unauthorized";
                    await OpenAiApi.WriteError(ctx, new ApiException(401, "missing or invalid API key: send Authorization: Bearer <key>", null, "invalid_api_key"));
                    return;
                }

                await next(ctx);
            });
        }

        app.MapGet("/health", () => Results.Ok()).AllowGatewayAnonymous();
        app.MapGet("/ready", async ctx =>
        {
            var models = new JsonObject();
            foreach (var e in catalog.Entries)
            {
                models[e.Name] = e.Model is not null ? "ready" : e.Error is not null ? "failed" : "loading";
            }

            ctx.Response.StatusCode = catalog.AllReady ? 200 : 503;
            if (!catalog.AllReady)
            {
                ctx.Response.Headers.RetryAfter = "5";
            }

            ctx.Response.ContentType = "application/json";
            await ctx.Response.WriteAsync(new JsonObject { ["status"] = catalog.AllReady ? "ready" : "loading", ["models"] = models }.ToJsonString());
        }).AllowGatewayAnonymous();
        app.MapGet("/metrics", () => Results.Text(exporter.Render(), "text/plain; version=0.0.4; charset=utf-8")).AllowGatewayAnonymous();
        var knowledge = new KnowledgeService(options, loggerFactory.CreateLogger("Enclave.Knowledge"));
        new OpenAiApi(catalog, metrics, options, serverLogger, knowledge).Map(app);
        new KnowledgeApi(knowledge, options, serverLogger).Map(app);
        if (options.UsesGateway)
        {
            app.MapEnclaveGatewayAdmin();
        }

        app.MapFallback(ctx => OpenAiApi.WriteError(ctx, new ApiException(404, $"no route for {ctx.Request.Method} {ctx.Request.Path}", null, "not_found")));

        await app.StartAsync(cancellationToken);
        var loading = catalog.LoadAllAsync();
        var server = new EnclaveServer(app, catalog, metrics, exporter, loading, knowledge);
        var address = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First();
        server.Address = new Uri(address.Replace("[::]", "127.0.0.1", StringComparison.Ordinal));
        _ = loading.ContinueWith(
            _ => serverLogger.LogInformation("listening on http://{Host}:{Port}", options.Host, server.Address.Port.ToString(CultureInfo.InvariantCulture)),
            TaskScheduler.Default);
        return server;
    }

    /// <summary>Stops accepting requests, lets running ones end, and frees the models.</summary>
    public async ValueTask DisposeAsync()
    {
        try
        {
            using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(10));
            await app.StopAsync(timeout.Token);
        }
        finally
        {
            await app.DisposeAsync();
            await knowledge.DisposeAsync();
            await Catalog.DisposeAsync();
            exporter.Dispose();
            Metrics.Dispose();
        }
    }
}
