using System.Diagnostics;
using Enclave.Gateway.Security;
using Enclave.Server.Tests.Support;
using Microsoft.Extensions.DependencyInjection;
using OpenAI.Chat;
using OpenTelemetry;
using OpenTelemetry.Trace;

namespace Enclave.Server.Tests;

/// <summary>
/// Request traces through the real server with the gateway on: the OpenAI SDK's chat completion must yield the
/// HTTP request span, the gateway span under it and the engine's queue, prefill and decode spans under that,
/// carrying the model, principal and token counts.
/// </summary>
[Collection(TracingCollection.Name)]
public sealed class TracingTests : IAsyncLifetime
{
    private readonly string home = Path.Combine(Path.GetTempPath(), "enclave-trace-" + Guid.NewGuid().ToString("N"));
    private readonly List<Activity> exported = [];
    private TestServer server = null!;

    public async Task InitializeAsync()
    {
        Directory.CreateDirectory(home);
        server = await TestServer.StartAsync(o =>
        {
            o.NoAuth = false;
            o.Home = home;
            o.ConfigureTracing = t => t.AddProcessor(new LockedCollector(exported));
        });
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

    private List<Activity> Snapshot()
    {
        lock (exported)
        {
            return [.. exported];
        }
    }

    /// <summary>Spans end after the response reaches the client (the request span last), so wait for them to arrive.</summary>
    private async Task<List<Activity>> TraceOf(Func<Activity, bool> anchor, params string[] names)
    {
        for (var attempt = 0; attempt < 600; attempt++)
        {
            var spans = Snapshot();
            if (spans.FirstOrDefault(anchor) is { } a)
            {
                var trace = spans.Where(s => s.TraceId == a.TraceId).ToList();
                if (names.All(n => trace.Any(s => s.DisplayName == n || s.OperationName == n)))
                {
                    return trace;
                }
            }

            await Task.Delay(50);
        }

        Assert.Fail($"the trace never held every one of {string.Join(", ", names)}; exported: {string.Join(", ", Snapshot().Select(s => s.DisplayName))}");
        return [];
    }

    [Fact]
    public async Task AKnowledgeAnswerTracesItsRetrievalBetweenTheGatewayAndTheEngine()
    {
        var keys = server.Server.Services.GetRequiredService<KeyService>();
        var admin = (await keys.CreateAsync(new KeyCreateRequest(BuiltInRoles.Admin, "kb-tracer"))).Secret;
        using var http = new HttpClient { BaseAddress = server.Http.BaseAddress };
        http.DefaultRequestHeaders.Authorization = new System.Net.Http.Headers.AuthenticationHeaderValue("Bearer", admin);
        var created = await http.PostAsync("v1/kb/collections", Json("""{"name":"traced"}"""));
        Assert.True(created.IsSuccessStatusCode, await created.Content.ReadAsStringAsync());
        using (var form = new MultipartFormDataContent())
        {
            form.Add(new StringContent("# Leave\n\nAnnual leave is twenty working days per year.\n"), "file", "leave.md");
            var upload = await http.PostAsync("v1/kb/traced/documents", form);
            var job = System.Text.Json.Nodes.JsonNode.Parse(await upload.Content.ReadAsStringAsync())!["id"]!.GetValue<string>();
            var state = "queued";
            for (var i = 0; i < 600 && state is "queued" or "running"; i++)
            {
                await Task.Delay(50);
                state = System.Text.Json.Nodes.JsonNode.Parse(await http.GetStringAsync($"v1/kb/jobs/{job}"))!["status"]!.GetValue<string>();
            }

            Assert.Equal("succeeded", state);
        }

        var chat = await http.PostAsync("v1/chat/completions", Json("""
            {"model":"tiny-qwen3","max_tokens":3,"temperature":0,"messages":[{"role":"user","content":"How many days of annual leave?"}],
             "knowledge":{"collections":["traced"],"top_k":2}}
            """));
        Assert.True(chat.IsSuccessStatusCode, await chat.Content.ReadAsStringAsync());

        var trace = await TraceOf(
            s => s.OperationName == "knowledge.retrieve" && (string?)s.GetTagItem("enclave.kb.collections") == "traced",
            "gateway", "knowledge.retrieve", "engine.queue", "engine.prefill");
        var gateway = Assert.Single(trace, s => s.OperationName == "gateway");
        var retrieve = Assert.Single(trace, s => s.OperationName == "knowledge.retrieve");
        Assert.Equal(gateway.SpanId, retrieve.ParentSpanId);
        Assert.Equal(1, retrieve.GetTagItem("enclave.kb.hits"));
        var queue = Assert.Single(trace, s => s.OperationName == "engine.queue");
        Assert.True(retrieve.StartTimeUtc + retrieve.Duration <= queue.StartTimeUtc + TimeSpan.FromTicks(1));
    }

    private static StringContent Json(string json) => new(json, System.Text.Encoding.UTF8, "application/json");

    [Fact]
    public async Task AChatCompletionYieldsRequestGatewayAndEngineSpansWithTheirAttributes()
    {
        var principal = "tracer-" + Guid.NewGuid().ToString("N")[..8];
        var keys = server.Server.Services.GetRequiredService<KeyService>();
        var key = (await keys.CreateAsync(new KeyCreateRequest(BuiltInRoles.Analyst, principal))).Secret;

        ChatCompletion completion = await server.Sdk(key).GetChatClient("tiny-qwen3")
            .CompleteChatAsync([new UserChatMessage("Trace me")], new ChatCompletionOptions { Temperature = 0, MaxOutputTokenCount = 5 });

        var trace = await TraceOf(
            s => s.Source.Name == "Enclave.Gateway" && s.OperationName == "gateway" && (string?)s.GetTagItem("enclave.principal") == principal,
            "gateway", "gateway.audit", "engine.queue", "engine.prefill", "engine.decode", "POST /v1/chat/completions");

        var request = Assert.Single(trace, s => s.Kind == ActivityKind.Server);
        Assert.Equal("POST /v1/chat/completions", request.DisplayName);
        Assert.Equal(default, request.ParentSpanId);
        Assert.Equal("tiny-qwen3", request.GetTagItem("gen_ai.request.model"));
        Assert.Equal(completion.Usage.InputTokenCount, request.GetTagItem("gen_ai.usage.input_tokens"));
        Assert.Equal(completion.Usage.OutputTokenCount, request.GetTagItem("gen_ai.usage.output_tokens"));
        Assert.Equal(200, request.GetTagItem("http.response.status_code"));

        var gateway = Assert.Single(trace, s => s.OperationName == "gateway");
        Assert.Equal(request.SpanId, gateway.ParentSpanId);
        Assert.Equal("analyst", gateway.GetTagItem("enclave.role"));
        Assert.Equal("inference", gateway.GetTagItem("enclave.permission"));
        Assert.Equal("tiny-qwen3", gateway.GetTagItem("gen_ai.request.model"));
        Assert.Equal(gateway.SpanId, Assert.Single(trace, s => s.OperationName == "gateway.audit").ParentSpanId);

        var queue = Assert.Single(trace, s => s.OperationName == "engine.queue");
        var prefill = Assert.Single(trace, s => s.OperationName == "engine.prefill");
        var decode = Assert.Single(trace, s => s.OperationName == "engine.decode");
        foreach (var phase in new[] { queue, prefill, decode })
        {
            Assert.Equal(gateway.SpanId, phase.ParentSpanId);
            Assert.Equal(queue.GetTagItem("enclave.sequence.id"), phase.GetTagItem("enclave.sequence.id"));
        }

        // The phases follow each other and lie within the request.
        Assert.True(queue.StartTimeUtc + queue.Duration <= prefill.StartTimeUtc + TimeSpan.FromTicks(1));
        Assert.True(prefill.StartTimeUtc + prefill.Duration <= decode.StartTimeUtc + TimeSpan.FromTicks(1));
        Assert.True(queue.StartTimeUtc >= request.StartTimeUtc && decode.StartTimeUtc + decode.Duration <= request.StartTimeUtc + request.Duration);
        Assert.Equal(completion.Usage.InputTokenCount, prefill.GetTagItem("gen_ai.usage.input_tokens"));
        Assert.Equal(completion.Usage.OutputTokenCount, decode.GetTagItem("gen_ai.usage.output_tokens"));
        Assert.Equal(new[] { "length" }, decode.GetTagItem("gen_ai.response.finish_reasons"));
    }

    [Fact]
    public async Task ProbesAreNotTraced()
    {
        Assert.True((await server.Http.GetAsync("health")).IsSuccessStatusCode);
        Assert.True((await server.Http.GetAsync("metrics")).IsSuccessStatusCode);
        using var models = await server.Http.GetAsync("v1/models"); // 401 without a key, but traced
        Assert.Equal(System.Net.HttpStatusCode.Unauthorized, models.StatusCode);
        var requestId = Assert.Single(models.Headers.GetValues("x-request-id"));

        var trace = await TraceOf(s => s.OperationName == "gateway" && (string?)s.GetTagItem("enclave.gateway.request_id") == requestId, "gateway", "GET /v1/models");
        var gateway = Assert.Single(trace, s => s.OperationName == "gateway");
        Assert.Equal(ActivityStatusCode.Error, gateway.Status);
        Assert.Equal(401, gateway.GetTagItem("http.response.status_code"));
        Assert.Equal("/v1/models", Assert.Single(trace, s => s.Kind == ActivityKind.Server).GetTagItem("url.path"));
        Assert.DoesNotContain(Snapshot(), s => s.GetTagItem("url.path") is "/health" or "/metrics");
    }

    /// <summary>
    /// Collects the recorded spans as they end, under the lock <see cref="Snapshot"/> reads them with: they end on the
    /// server's threads while the test reads, and an in-memory exporter's list, locked by the reader only, could be
    /// copied mid-add.
    /// </summary>
    private sealed class LockedCollector(List<Activity> spans) : BaseProcessor<Activity>
    {
        public override void OnEnd(Activity data)
        {
            if (!data.Recorded)
            {
                return;
            }

            lock (spans)
            {
                spans.Add(data);
            }
        }
    }
}

/// <summary>
/// The trace listener a traced server registers is process-wide: it would also trace every other test server's
/// requests and change their timing, so the tracing tests run on their own.
/// </summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class TracingCollection
{
    public const string Name = "tracing";
}
