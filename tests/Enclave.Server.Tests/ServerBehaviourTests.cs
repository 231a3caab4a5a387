using System.Net;
using System.Net.Http.Json;
using System.Text.Json.Nodes;
using Enclave.Engine.Backends.Reference;
using Enclave.Server.Bench;
using Enclave.Server.Tests.Support;

namespace Enclave.Server.Tests;

/// <summary>Behaviour that needs a server of its own: queue limits, cancellation, loading, auth, body limits.</summary>
public sealed class ServerBehaviourTests
{
    private static JsonObject Chat(string model, string text, int maxTokens, bool stream = false, bool ignoreEos = true) => new()
    {
        ["model"] = model,
        ["messages"] = new JsonArray(new JsonObject { ["role"] = "user", ["content"] = text }),
        ["max_tokens"] = maxTokens,
        ["temperature"] = 0,
        ["ignore_eos"] = ignoreEos,
        ["stream"] = stream,
    };

    [Fact]
    public async Task AFullWaitingQueueAnswers429WithRetryAfter()
    {
        var gated = new GatedBackend();
        await using var server = await TestServer.StartAsync(o =>
        {
            o.BackendFactory = _ => gated;
            o.Engine.MaxNumSeqs = 1;
            o.Engine.MaxWaiting = 1;
        });
        gated.Close();
        using var running = new HttpRequestMessage(HttpMethod.Post, "v1/chat/completions") { Content = JsonContent.Create(Chat("tiny-qwen3", "first", 8, stream: true)) };
        using var first = await server.Http.SendAsync(running, HttpCompletionOption.ResponseHeadersRead);
        Assert.Equal(HttpStatusCode.OK, first.StatusCode);
        Assert.True(await gated.WaitForStepAsync(TimeSpan.FromMinutes(1)), "the engine never started the first request");

        using var waiting = new HttpRequestMessage(HttpMethod.Post, "v1/chat/completions") { Content = JsonContent.Create(Chat("tiny-qwen3", "second", 8, stream: true)) };
        using var second = await server.Http.SendAsync(waiting, HttpCompletionOption.ResponseHeadersRead);
        Assert.Equal(HttpStatusCode.OK, second.StatusCode);

        var (status, body, response) = await server.PostAsync("v1/chat/completions", Chat("tiny-qwen3", "third", 8));
        Assert.Equal(429, status);
        Assert.Equal("rate_limit_error", body!["error"]!["type"]!.GetValue<string>());
        Assert.NotNull(response.Headers.RetryAfter);

        gated.Open();
        Assert.Contains("[DONE]", await first.Content.ReadAsStringAsync());
        Assert.Contains("[DONE]", await second.Content.ReadAsStringAsync());
        var (after, _, _) = await server.PostAsync("v1/chat/completions", Chat("tiny-qwen3", "fourth", 4));
        Assert.Equal(200, after);
        var metrics = await server.MetricsAsync();
        Assert.Equal(1, TestServer.Sum(metrics, "enclave_requests_rejected_total", "status=\"429\""));
    }

    [Fact]
    public async Task CancellingHalfOfSixtyFourStreamsFreesTheirBlocks()
    {
        await using var server = await TestServer.StartAsync();
        const int Long = 400;
        var cancelled = 0;
        var tasks = Enumerable.Range(0, 64).Select(async i =>
        {
            var cancel = i % 2 == 0;
            var body = Chat("tiny-qwen3", $"stream {i}", cancel ? Long : 8, stream: true);
            if (!cancel)
            {
                await server.StreamAsync("v1/chat/completions", body);
                return (cancel, completed: true);
            }

            // A client that reads the first token and then goes away (its socket closes mid-stream).
            var saw = await Task.Factory.StartNew(() => StreamThenDisconnect(server.Address, body.ToJsonString()), TaskCreationOptions.LongRunning);
            Assert.True(saw, $"stream {i} ended before its first token");
            Interlocked.Increment(ref cancelled);
            return (cancel, completed: false);
        }).ToArray();
        var results = await Task.WhenAll(tasks);
        Assert.All(results.Where(r => !r.cancel), r => Assert.True(r.completed));
        Assert.Equal(32, cancelled);

        // The aborted requests leave at the engine's next step: wait (bounded) for the batch to drain.
        Dictionary<string, double> metrics = [];
        for (var i = 0; i < 200; i++)
        {
            metrics = await server.MetricsAsync();
            if (TestServer.Sum(metrics, "vllm:num_requests_running") == 0 && TestServer.Sum(metrics, "enclave_requests_aborted_total") == 32)
            {
                break;
            }

            await Task.Delay(50);
        }

        Assert.Equal(0, TestServer.Sum(metrics, "vllm:num_requests_running"));
        Assert.Equal(0, TestServer.Sum(metrics, "vllm:kv_cache_usage_perc"));
        Assert.Equal(0, TestServer.Sum(metrics, "enclave_kv_cache_blocks_used"));
        Assert.Equal(32, TestServer.Sum(metrics, "enclave_requests_aborted_total"));
        Assert.Equal(32, TestServer.Sum(metrics, "vllm:request_success_total"));
        // Had the cancelled requests run on, they alone would have generated 32 × 400 tokens.
        Assert.True(TestServer.Sum(metrics, "vllm:generation_tokens_total") < 32 * Long / 2, "cancelled requests kept generating");
    }

    /// <summary>Sends a streaming request on a raw socket, reads until the first generated text, then closes the socket.</summary>
    private static bool StreamThenDisconnect(Uri address, string json)
    {
        using var socket = new System.Net.Sockets.Socket(System.Net.Sockets.SocketType.Stream, System.Net.Sockets.ProtocolType.Tcp);
        socket.Connect(address.Host, address.Port);
        var body = System.Text.Encoding.UTF8.GetBytes(json);
        var head = System.Text.Encoding.ASCII.GetBytes(
            $"POST /v1/chat/completions HTTP/1.1\r\nHost: {address.Host}:{address.Port}\r\nContent-Type: application/json\r\nContent-Length: {body.Length}\r\n\r\n");
        socket.Send([.. head, .. body]);
        var received = new System.Text.StringBuilder();
        var buffer = new byte[8192];
        while (true)
        {
            var n = socket.Receive(buffer);
            if (n == 0)
            {
                return false;
            }

            received.Append(System.Text.Encoding.UTF8.GetString(buffer, 0, n));
            if (System.Text.RegularExpressions.Regex.IsMatch(received.ToString(), "\"delta\":\\{\"content\":\"[^\"]"))
            {
                socket.Close();
                return true;
            }
        }
    }

    [Fact]
    public async Task ASharedSystemPromptHitsThePrefixCache()
    {
        await using var server = await TestServer.StartAsync();
        var system = string.Join(' ', Enumerable.Range(0, 60).Select(i => $"rule{i}"));
        async Task Ask(string question)
        {
            var (status, body, _) = await server.PostAsync("v1/chat/completions", new JsonObject
            {
                ["model"] = "tiny-qwen3",
                ["messages"] = new JsonArray(
                    new JsonObject { ["role"] = "system", ["content"] = system },
                    new JsonObject { ["role"] = "user", ["content"] = question }),
                ["max_tokens"] = 4,
            });
            Assert.True(status == 200, body?.ToJsonString());
        }

        await Ask("first question");
        var before = TestServer.Sum(await server.MetricsAsync(), "vllm:prefix_cache_hits_total");
        await Ask("second, different question");
        var metrics = await server.MetricsAsync();
        var hits = TestServer.Sum(metrics, "vllm:prefix_cache_hits_total");
        Assert.Equal(0, before);
        Assert.True(hits >= 16, $"expected the shared system prompt to hit at least one 16-token block, got {hits} tokens");
        Assert.True(TestServer.Sum(metrics, "vllm:prefix_cache_queries_total") > hits);
        Assert.True(TestServer.Sum(metrics, "enclave_prefix_cache_hit_rate") > 0);
    }

    [Fact]
    public async Task RequestsGet503UntilTheModelHasLoaded()
    {
        using var release = new ManualResetEventSlim(false);
        await using var server = await TestServer.StartAsync(o => o.BackendFactory = _ =>
        {
            release.Wait(TimeSpan.FromMinutes(2));
            return new ReferenceBackend();
        }, waitForModels: false);
        var ready = await server.Http.GetAsync("ready");
        Assert.Equal(HttpStatusCode.ServiceUnavailable, ready.StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await server.Http.GetAsync("health")).StatusCode);
        var (status, body, response) = await server.PostAsync("v1/chat/completions", Chat("tiny-qwen3", "hi", 2));
        Assert.Equal(503, status);
        Assert.Equal("model_loading", body!["error"]!["code"]!.GetValue<string>());
        Assert.NotNull(response.Headers.RetryAfter);

        release.Set();
        await server.Server.Loading;
        Assert.Equal(HttpStatusCode.OK, (await server.Http.GetAsync("ready")).StatusCode);
        Assert.Equal(200, (await server.PostAsync("v1/chat/completions", Chat("tiny-qwen3", "hi", 2))).Status);
        Assert.Contains(server.Logs.Entries, e => e.Message.StartsWith("listening on http://127.0.0.1:" + server.Address.Port, StringComparison.Ordinal));
    }

    [Fact]
    public async Task AnApiKeyIsRequiredOnTheApiButNotOnHealth()
    {
        await using var server = await TestServer.StartAsync(o => o.ApiKey = "sekret");
        var (status, body, _) = await server.PostAsync("v1/chat/completions", Chat("tiny-qwen3", "hi", 2));
        Assert.Equal(401, status);
        Assert.Equal("invalid_api_key", body!["error"]!["code"]!.GetValue<string>());
        Assert.Equal(HttpStatusCode.OK, (await server.Http.GetAsync("health")).StatusCode);
        var wrong = await Assert.ThrowsAsync<System.ClientModel.ClientResultException>(() => server.Sdk("nope").GetChatClient("tiny-qwen3").CompleteChatAsync([new OpenAI.Chat.UserChatMessage("x")]));
        Assert.Equal(401, wrong.Status);
        var ok = await server.Sdk("sekret").GetChatClient("tiny-qwen3").CompleteChatAsync([new OpenAI.Chat.UserChatMessage("x")], new OpenAI.Chat.ChatCompletionOptions { MaxOutputTokenCount = 2 });
        Assert.NotNull(ok.Value);
    }

    [Fact]
    public async Task OversizedBodiesGet413AndTheServerKeepsServing()
    {
        await using var server = await TestServer.StartAsync(o => o.MaxRequestBodyBytes = 4096);
        var big = Chat("tiny-qwen3", new string('a', 10_000), 2);
        var (status, body, _) = await server.PostAsync("v1/chat/completions", big);
        Assert.Equal(413, status);
        Assert.Equal("request_too_large", body!["error"]!["code"]!.GetValue<string>());
        Assert.Equal(200, (await server.PostAsync("v1/chat/completions", Chat("tiny-qwen3", "small", 2))).Status);
    }

    [Fact]
    public async Task OneRequestLogLinePerRequestWithoutPromptText()
    {
        await using var server = await TestServer.StartAsync();
        const string Secret = "my-confidential-prompt-words";
        Assert.Equal(200, (await server.PostAsync("v1/chat/completions", Chat("tiny-qwen3", Secret, 3))).Status);
        Assert.Equal(404, (await server.PostAsync("v1/chat/completions", Chat("nope", Secret, 3))).Status);
        var lines = server.Logs.Entries.Where(e => e.Category == "Enclave.Server.Requests").ToList();
        Assert.Equal(2, lines.Count);
        Assert.DoesNotContain(server.Logs.Entries, e => e.Message.Contains(Secret, StringComparison.Ordinal));
        var ok = lines[0].State.ToDictionary(kv => kv.Key, kv => kv.Value);
        Assert.Equal(200, ok["Status"]);
        Assert.Equal("tiny-qwen3", ok["Model"]);
        Assert.Equal(3, ok["CompletionTokens"]);
        Assert.True((int)ok["PromptTokens"]! > 0);
        Assert.StartsWith("chatcmpl-", (string)ok["RequestId"]!);
        Assert.NotNull(ok["TtftMs"]);
        Assert.Equal(404, lines[1].State.First(kv => kv.Key == "Status").Value);
    }

    [Fact]
    public async Task BenchServeSendsSampledRequests()
    {
        await using var server = await TestServer.StartAsync();
        var options = new ServeBenchmarkOptions(server.Address, Concurrency: 4, Requests: 8, InputLength: 16, OutputLength: 8)
        {
            Temperature = 0.8, TopP = 0.9, TopK = 20, MinP = 0.05, SamplingSeed = 7,
        };
        var result = await ServeBenchmark.RunAsync(options);
        Assert.Empty(result.Errors);
        Assert.Equal(8, result.Completed);
        Assert.Equal(8 * 8, result.OutputTokens);
    }

    [Fact]
    public async Task BenchServeMeasuresEveryRequest()
    {
        await using var server = await TestServer.StartAsync();
        var result = await ServeBenchmark.RunAsync(new ServeBenchmarkOptions(server.Address, Concurrency: 4, Requests: 8, InputLength: 16, OutputLength: 8));
        Assert.Empty(result.Errors);
        Assert.Equal(8, result.Completed);
        Assert.Equal(8 * 16, result.InputTokens);
        Assert.Equal(8 * 8, result.OutputTokens);
        Assert.True(result.Ttft.MeanMs > 0 && result.E2e.P99Ms >= result.E2e.P50Ms && result.Itl.MeanMs > 0);
        Assert.Contains("Output token throughput", result.Format());
    }
}
