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
using OpenTelemetry.Exporter;
using OpenTelemetry.Resources;
using OpenTelemetry.Trace;

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

    private readonly KnowledgeService? knowledge;

    private EnclaveServer(WebApplication app, ModelCatalog catalog, ServerMetrics metrics, PrometheusExporter exporter, Task loading, KnowledgeService? knowledge)
    {
        this.knowledge = knowledge;
        this.app = app;
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
        Enclave.Engine.Cuda.Monitoring.IGpuSampleSource? gpus;
        if (options.GpuSamples is { } gpuFactory)
        {
            gpus = gpuFactory();
        }
        else
        {
            gpus = Enclave.Engine.Cuda.Monitoring.NvmlGpuSampleSource.TryCreate(out var noGpu);
            if (gpus is null)
            {
                serverLogger.LogInformation("no GPU metrics: {Reason}", noGpu);
            }
        }

        var metrics = new ServerMetrics(catalog, gpus);
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

                // Unauthenticated serving is decided here, where the listen address is known
                // (Validate refuses --no-auth on anything but loopback); calls are still audited.
                o.NoAuth = options.NoAuth;
                if (options.Redis is not null)
                {
                    o.Redis = options.Redis;
                }

                options.ConfigureGateway?.Invoke(o);
            });
        }

        var exporter = new PrometheusExporter(metrics.Meter);
        if (options.Upstream is not null)
        {
            builder.Services.AddHttpForwarder();
            builder.Services.AddHttpClient(nameof(UpstreamForwarding));
        }
        var otlpEndpoint = options.OtlpEndpoint
            ?? (builder.Configuration["Enclave:Telemetry:OtlpEndpoint"] is { Length: > 0 } configured ? new Uri(configured) : null);
        var otlpFromEnvironment = !string.IsNullOrEmpty(Environment.GetEnvironmentVariable("OTEL_EXPORTER_OTLP_ENDPOINT"));
        if (otlpEndpoint is not null || otlpFromEnvironment || options.ConfigureTracing is not null)
        {
            // Spans: the HTTP request (ASP.NET Core), the gateway and its audit write, and each sequence's
            // queue, prefill and decode phases in the engine. /health, /ready and /metrics are not traced.
            builder.Services.AddOpenTelemetry()
                .ConfigureResource(r => r.AddService("enclave", serviceVersion: typeof(EnclaveServer).Assembly.GetName().Version?.ToString()))
                .WithTracing(t =>
                {
                    t.AddSource(GatewayMiddleware.ActivitySourceName, Enclave.Knowledge.KnowledgeTelemetry.SourceName, Enclave.Engine.Generation.EngineTelemetry.SourceName);
                    t.AddAspNetCoreInstrumentation(o => o.Filter = ctx => !IsProbe(ctx.Request.Path));
                    if (otlpEndpoint is not null || otlpFromEnvironment)
                    {
                        t.AddOtlpExporter(o =>
                        {
                            if (otlpEndpoint is not null)
                            {
                                o.Endpoint = otlpEndpoint;
                                o.Protocol = options.OtlpProtocol == "grpc" ? OtlpExportProtocol.Grpc : OtlpExportProtocol.HttpProtobuf;
                            }
                        });
                        serverLogger.LogInformation("exporting traces over OTLP to {Endpoint}", otlpEndpoint?.ToString() ?? Environment.GetEnvironmentVariable("OTEL_EXPORTER_OTLP_ENDPOINT"));
                    }

                    options.ConfigureTracing?.Invoke(t);
                });
        }

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
                if (Activity.Current is { IsAllDataRequested: true } span && log.Model is not null)
                {
                    // The request span carries what the handler learned, in OpenTelemetry's gen_ai vocabulary.
                    span.SetTag("enclave.request_id", log.RequestId);
                    span.SetTag("gen_ai.request.model", log.Model);
                    span.SetTag("gen_ai.usage.input_tokens", log.PromptTokens);
                    span.SetTag("gen_ai.usage.output_tokens", log.CompletionTokens);
                    span.SetTag("gen_ai.response.finish_reasons", log.FinishReason is null ? null : new[] { log.FinishReason });
                    span.SetTag("enclave.stream", log.Stream);
                    span.SetTag("enclave.ttft_ms", log.TimeToFirstTokenMs);
                    span.SetTag("error.type", log.Error);
                }

                if (!IsProbe(ctx.Request.Path))
                {
                    var route = ctx.GetEndpoint() is Microsoft.AspNetCore.Routing.RouteEndpoint { RoutePattern.RawText: { } raw } && !raw.StartsWith("{*", StringComparison.Ordinal)
                        ? "/" + raw.TrimStart('/')
                        : "other";
                    metrics.Responded(route, status);
                }

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
                var guarded = path.StartsWithSegments("/v1") || path.StartsWithSegments("/tokenize") || path.StartsWithSegments("/detokenize") || path.StartsWithSegments("/rerank");
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
        KnowledgeService? knowledge = null;
        if (options.Upstream is { } upstream)
        {
            UpstreamForwarding.Map(app, upstream, options.UpstreamApiKey);
        }
        else
        {
            MapLocalReady(app, catalog);
            // Dense retrieval uses the embedded vector index and the engine's encoders unless a host supplied its own;
            // reranking uses the first --rerank-model.
            options.VectorIndexFactory ??= new Enclave.Knowledge.Vectors.VectorIndexFactory();
            options.KnowledgeEmbeddings ??= new Enclave.Knowledge.Retrieval.EncoderEmbeddingProvider(options.Encoders);
            options.KnowledgeReranker ??= CatalogReranker.For(catalog, options);
            knowledge = new KnowledgeService(options, loggerFactory.CreateLogger("Enclave.Knowledge"));
            new OpenAiApi(catalog, metrics, options, serverLogger, knowledge).Map(app);
            new KnowledgeApi(knowledge, options, serverLogger).Map(app);
        }

        app.MapGet("/metrics", () => Results.Text(exporter.Render(), "text/plain; version=0.0.4; charset=utf-8")).AllowGatewayAnonymous();
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

    /// <summary>/ready: 200 once every model has loaded, else 503 with each model's state and Retry-After.</summary>
    private static void MapLocalReady(WebApplication app, ModelCatalog catalog) =>
        app.MapGet("/ready", async ctx =>
        {
            var models = new JsonObject();
            foreach (var e in catalog.Entries)
            {
                models[e.Name] = e.Model is not null ? "ready" : e.Error is not null ? "failed" : "loading";
            }

            foreach (var e in catalog.Encoders)
            {
                models[e.Name] = e.Ready ? "ready" : e.Error is not null ? "failed" : "loading";
            }

            ctx.Response.StatusCode = catalog.AllReady ? 200 : 503;
            if (!catalog.AllReady)
            {
                ctx.Response.Headers.RetryAfter = "5";
            }

            ctx.Response.ContentType = "application/json";
            await ctx.Response.WriteAsync(new JsonObject { ["status"] = catalog.AllReady ? "ready" : "loading", ["models"] = models }.ToJsonString());
        }).AllowGatewayAnonymous();

    private static bool IsProbe(PathString path) => path == "/health" || path == "/ready" || path == "/metrics";

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
            if (knowledge is not null)
            {
                await knowledge.DisposeAsync();
            }

            await Catalog.DisposeAsync();
            exporter.Dispose();
            Metrics.Dispose();
        }
    }
}
