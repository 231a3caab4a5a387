using System.Text.Json.Nodes;
using Enclave.Server.Api;
using Enclave.Server.Tests.Support;

namespace Enclave.Server.Tests;

/// <summary>Completions in all prompt forms, tokenize/detokenize, models, metrics names and the R1 reasoning split.</summary>
[Collection(SharedServerCollection.Name)]
public sealed class EndpointTests(SharedServer shared)
{
    private TestServer Server => shared.Server;

    [Fact]
    public async Task ModelsListsEveryServedModel()
    {
        var body = JsonNode.Parse(await Server.Http.GetStringAsync("v1/models"))!;
        Assert.Equal("list", body["object"]!.GetValue<string>());
        var ids = body["data"]!.AsArray().Select(m => m!["id"]!.GetValue<string>()).Order();
        Assert.Equal(
            ["tiny-deepseek-v2-lite", "tiny-deepseek-v3", "tiny-deepseek-v3-fp8", "tiny-llama3", "tiny-llama3-awq", "tiny-llama3-gptq", "tiny-qwen2-r1", "tiny-qwen3"],
            ids);
        Assert.All(body["data"]!.AsArray(), m => Assert.Equal(
            Enclave.Engine.Models.ModelConfig.Load(Enclave.Engine.Tests.Support.Fixtures.Model(m!["id"]!.GetValue<string>())).MaxPositionEmbeddings,
            m["max_model_len"]!.GetValue<int>()));
    }

    [Fact]
    public async Task TokenizeAndDetokenizeRoundTrip()
    {
        var (_, tokens, _) = await Server.PostAsync("tokenize", new JsonObject { ["model"] = "tiny-llama3", ["prompt"] = "Hello world" });
        var ids = tokens!["tokens"]!.AsArray();
        Assert.Equal(ids.Count, tokens["count"]!.GetValue<int>());
        Assert.Equal(1024, tokens["max_model_len"]!.GetValue<int>()); // tiny-llama3's max_position_embeddings
        var (_, text, _) = await Server.PostAsync("detokenize", new JsonObject { ["model"] = "tiny-llama3", ["tokens"] = ids.DeepClone() });
        Assert.EndsWith("Hello world", text!["prompt"]!.GetValue<string>());
    }

    [Fact]
    public async Task CompletionsAcceptStringsStringArraysAndTokenIds()
    {
        var (_, tok, _) = await Server.PostAsync("tokenize", new JsonObject { ["model"] = "tiny-qwen3", ["prompt"] = "The sky is" });
        var ids = tok!["tokens"]!.AsArray();
        async Task<JsonNode> Complete(JsonNode prompt, int n = 1)
        {
            var (status, body, _) = await Server.PostAsync("v1/completions", new JsonObject
            {
                ["model"] = "tiny-qwen3", ["prompt"] = prompt, ["max_tokens"] = 6, ["temperature"] = 0, ["ignore_eos"] = true, ["n"] = n,
            });
            Assert.True(status == 200, body?.ToJsonString());
            return body!;
        }

        var fromString = await Complete("The sky is");
        var fromIds = await Complete(ids.DeepClone());
        var fromArrays = await Complete(new JsonArray(ids.DeepClone(), ids.DeepClone()));
        var fromStrings = await Complete(new JsonArray("The sky is", "Once upon a time"), n: 2);
        var text = fromString["choices"]![0]!["text"]!.GetValue<string>();
        Assert.Equal("text_completion", fromString["object"]!.GetValue<string>());
        Assert.Equal(text, fromIds["choices"]![0]!["text"]!.GetValue<string>());
        Assert.Equal(2, fromArrays["choices"]!.AsArray().Count);
        Assert.All(fromArrays["choices"]!.AsArray(), c => Assert.Equal(text, c!["text"]!.GetValue<string>()));
        Assert.Equal(2 * ids.Count, fromArrays["usage"]!["prompt_tokens"]!.GetValue<int>());
        Assert.Equal(4, fromStrings["choices"]!.AsArray().Count);
        Assert.Equal(24, fromStrings["usage"]!["completion_tokens"]!.GetValue<int>());
        Assert.Equal(text, fromStrings["choices"]![0]!["text"]!.GetValue<string>());
    }

    [Fact]
    public async Task CompletionLogprobsAndStreamingAgree()
    {
        var request = new JsonObject { ["model"] = "tiny-llama3", ["prompt"] = "Hello", ["max_tokens"] = 8, ["temperature"] = 0, ["ignore_eos"] = true, ["logprobs"] = 2 };
        var (_, whole, _) = await Server.PostAsync("v1/completions", request);
        var choice = whole!["choices"]![0]!;
        var lp = choice["logprobs"]!;
        Assert.Equal(8, lp["tokens"]!.AsArray().Count);
        Assert.Equal(8, lp["token_logprobs"]!.AsArray().Count);
        Assert.All(lp["top_logprobs"]!.AsArray(), t => Assert.InRange(t!.AsObject().Count, 1, 2));
        Assert.Equal(0, lp["text_offset"]![0]!.GetValue<int>());

        var streaming = (JsonObject)request.DeepClone();
        streaming["stream"] = true;
        streaming["stream_options"] = new JsonObject { ["include_usage"] = true };
        var events = await Server.StreamAsync("v1/completions", streaming);
        var text = string.Concat(events.SelectMany(e => e["choices"]!.AsArray()).Select(c => c!["text"]!.GetValue<string>()));
        Assert.Equal(choice["text"]!.GetValue<string>(), text);
        Assert.Equal(8, events[^1]["usage"]!["completion_tokens"]!.GetValue<int>());
        Assert.Equal("length", events.SelectMany(e => e["choices"]!.AsArray()).Last()!["finish_reason"]!.GetValue<string>());
    }

    [Fact]
    public async Task ReasoningModelsSplitThinkingFromTheAnswer()
    {
        var request = new JsonObject
        {
            ["model"] = "tiny-qwen2-r1",
            ["messages"] = new JsonArray(new JsonObject { ["role"] = "user", ["content"] = "Why is the sky blue?" }),
            ["max_tokens"] = 16,
            ["temperature"] = 0,
            ["ignore_eos"] = true,
        };
        var (_, body, _) = await Server.PostAsync("v1/chat/completions", request);
        var message = body!["choices"]![0]!["message"]!;
        // The R1 template opens <think> in the prompt: with no </think> generated, everything is reasoning.
        var (_, tok, _) = await Server.PostAsync("tokenize", new JsonObject { ["model"] = "tiny-qwen2-r1", ["messages"] = request["messages"]!.DeepClone() });
        var completion = await Server.PostAsync("v1/completions", new JsonObject
        {
            ["model"] = "tiny-qwen2-r1", ["prompt"] = tok!["tokens"]!.DeepClone(), ["max_tokens"] = 16, ["temperature"] = 0, ["ignore_eos"] = true,
        });
        var raw = completion.Body!["choices"]![0]!["text"]!.GetValue<string>();
        Assert.Equal(raw, message["reasoning_content"]!.GetValue<string>());
        Assert.Equal(raw, message["reasoning"]!.GetValue<string>());
        Assert.Null(message["content"]);

        var streaming = (JsonObject)request.DeepClone();
        streaming["stream"] = true;
        var events = await Server.StreamAsync("v1/chat/completions", streaming);
        var deltas = events.SelectMany(e => e["choices"]!.AsArray()).Select(c => c!["delta"]!).ToList();
        Assert.Equal(raw, string.Concat(deltas.Select(d => d["reasoning_content"]?.GetValue<string>() ?? string.Empty)));
        Assert.Equal(string.Empty, string.Concat(deltas.Select(d => d["content"]?.GetValue<string>() ?? string.Empty)));
    }

    [Fact]
    public async Task MetricsUseTheVllmNames()
    {
        await Server.PostAsync("v1/completions", new JsonObject { ["model"] = "tiny-qwen3", ["prompt"] = "x", ["max_tokens"] = 3 });
        var text = await Server.Http.GetStringAsync("metrics");
        foreach (var name in new[]
        {
            "vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:kv_cache_usage_perc", "vllm:prompt_tokens_total",
            "vllm:generation_tokens_total", "vllm:time_to_first_token_seconds_bucket", "vllm:inter_token_latency_seconds_bucket",
            "vllm:e2e_request_latency_seconds_bucket", "vllm:request_success_total", "vllm:prefix_cache_hits_total",
        })
        {
            Assert.Contains(name, text);
        }

        var metrics = await Server.MetricsAsync();
        Assert.True(TestServer.Sum(metrics, "vllm:generation_tokens_total", "model_name=\"tiny-qwen3\"") >= 3);
        Assert.True(TestServer.Sum(metrics, "vllm:request_success_total", "finished_reason=\"length\"") >= 1);
        Assert.True(TestServer.Sum(metrics, "enclave_engine_step_device_seconds_total", "model_name=\"tiny-qwen3\"") > 0);
        Assert.True(TestServer.Sum(metrics, "enclave_engine_step_host_seconds_total", "model_name=\"tiny-qwen3\"") > 0);
    }

    [Fact]
    public async Task ContentPartsAndChatTemplateKwargsAreAccepted()
    {
        var (status, body, _) = await Server.PostAsync("v1/chat/completions", new JsonObject
        {
            ["model"] = "tiny-qwen3",
            ["messages"] = new JsonArray(new JsonObject
            {
                ["role"] = "user",
                ["content"] = new JsonArray(new JsonObject { ["type"] = "text", ["text"] = "part one" }, new JsonObject { ["type"] = "text", ["text"] = "part two" }),
            }),
            ["chat_template_kwargs"] = new JsonObject { ["enable_thinking"] = false },
            ["max_completion_tokens"] = 3,
            ["user"] = "someone",
            ["top_k"] = 5,
            ["min_p"] = 0.05,
            ["repetition_penalty"] = 1.1,
            ["presence_penalty"] = 0.5,
            ["frequency_penalty"] = 0.5,
            ["min_tokens"] = 2,
        });
        Assert.True(status == 200, body?.ToJsonString());
        Assert.InRange(body!["usage"]!["completion_tokens"]!.GetValue<int>(), 2, 3);
        var (_, tok, _) = await Server.PostAsync("tokenize", new JsonObject
        {
            ["model"] = "tiny-qwen3",
            ["messages"] = new JsonArray(new JsonObject { ["role"] = "user", ["content"] = "part one\npart two" }),
        });
        Assert.Equal(tok!["count"]!.GetValue<int>(), body["usage"]!["prompt_tokens"]!.GetValue<int>());
    }
}
