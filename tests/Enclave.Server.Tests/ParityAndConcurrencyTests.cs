using System.Text;
using System.Text.Json.Nodes;
using Enclave.Engine.Tests.Support;
using Enclave.Server.Tests.Support;

namespace Enclave.Server.Tests;

/// <summary>Greedy output over HTTP equals transformers, and does not change when 64 requests share the batch.</summary>
[Collection(SharedServerCollection.Name)]
public sealed class ParityAndConcurrencyTests(SharedServer shared)
{
    private TestServer Server => shared.Server;

    public static TheoryData<string> Models() => new(Fixtures.ModelNames);

    [Theory]
    [MemberData(nameof(Models))]
    public async Task GreedyCompletionsOverHttpMatchTheTransformersReference(string model)
    {
        var reference = Fixtures.LoadReference(model);
        foreach (var c in reference.Cases)
        {
            var (status, body, _) = await Server.PostAsync("v1/completions", new JsonObject
            {
                ["model"] = model,
                ["prompt"] = new JsonArray([.. c.PromptIds.Select(i => (JsonNode)i)]),
                ["max_tokens"] = c.GreedyIds.Length,
                ["temperature"] = 0,
                ["ignore_eos"] = true,
                ["logprobs"] = 0,
                ["return_tokens_as_token_ids"] = true,
            });
            Assert.True(status == 200, body?.ToJsonString());
            var tokens = body!["choices"]![0]!["logprobs"]!["tokens"]!.AsArray().Select(t => int.Parse(t!.GetValue<string>()["token_id:".Length..], System.Globalization.CultureInfo.InvariantCulture)).ToArray();
            Assert.Equal(c.GreedyIds.Length, tokens.Length);
            Assert.Equal(c.PromptIds.Length, body["usage"]!["prompt_tokens"]!.GetValue<int>());
            Assert.Equal(c.GreedyIds.Length, body["usage"]!["completion_tokens"]!.GetValue<int>());
            for (var step = 0; step < tokens.Length && c.GreedyMargins[step] >= 1e-3; step++)
            {
                Assert.True(c.GreedyIds[step] == tokens[step], $"{model} prompt '{c.Text}' step {step}: expected {c.GreedyIds[step]}, got {tokens[step]}");
            }
        }
    }

    private static JsonObject StreamingRequest(int i) => new()
    {
        ["model"] = "tiny-qwen3",
        ["messages"] = new JsonArray(new JsonObject { ["role"] = "user", ["content"] = $"Request number {i}: tell me about {(i % 7) * 13} things" }),
        ["max_tokens"] = 12 + (i % 5),
        ["temperature"] = 0,
        ["stream"] = true,
    };

    private static string Text(List<JsonNode> events) =>
        string.Concat(events.SelectMany(e => e["choices"]!.AsArray()).Select(c => c!["delta"]?["content"]?.GetValue<string>() ?? string.Empty));

    [Fact]
    public async Task SixtyFourConcurrentStreamsEqualTheirSequentialRuns()
    {
        var sequential = new string[64];
        for (var i = 0; i < 64; i++)
        {
            sequential[i] = Text(await Server.StreamAsync("v1/chat/completions", StreamingRequest(i)));
        }

        var concurrent = await Task.WhenAll(Enumerable.Range(0, 64).Select(async i => Text(await Server.StreamAsync("v1/chat/completions", StreamingRequest(i)))));
        for (var i = 0; i < 64; i++)
        {
            Assert.True(sequential[i] == concurrent[i], $"request {i}: alone '{sequential[i]}', batched '{concurrent[i]}'");
        }

        Assert.True(sequential.Distinct().Count() > 1, "the prompts should not all give the same answer");
    }
}
