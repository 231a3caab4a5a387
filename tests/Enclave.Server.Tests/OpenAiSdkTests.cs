using System.ClientModel;
using System.Text;
using System.Text.Json.Nodes;
using Enclave.Server.Tests.Support;
using OpenAI.Chat;

namespace Enclave.Server.Tests;

/// <summary>The official OpenAI .NET SDK against the real server: chat, streaming, stop, logprobs, usage, errors.</summary>
[Collection(SharedServerCollection.Name)]
public sealed class OpenAiSdkTests(SharedServer shared)
{
    private TestServer Server => shared.Server;

    private static ChatCompletionOptions Greedy(int maxTokens) => new() { Temperature = 0, MaxOutputTokenCount = maxTokens };

    [Fact]
    public async Task ChatCompletionReturnsTextUsageAndFinishReason()
    {
        var chat = Server.Sdk().GetChatClient("tiny-qwen3");
        ChatCompletion c = await chat.CompleteChatAsync([new SystemChatMessage("Be brief."), new UserChatMessage("Hello there")], Greedy(12));
        var tokenized = await Server.PostAsync("tokenize", new JsonObject
        {
            ["model"] = "tiny-qwen3",
            ["messages"] = new JsonArray(new JsonObject { ["role"] = "system", ["content"] = "Be brief." }, new JsonObject { ["role"] = "user", ["content"] = "Hello there" }),
        });

        Assert.Equal("tiny-qwen3", c.Model);
        Assert.Equal(ChatMessageRole.Assistant, c.Role);
        Assert.Equal(tokenized.Body!["count"]!.GetValue<int>(), c.Usage.InputTokenCount);
        Assert.InRange(c.Usage.OutputTokenCount, 1, 12);
        Assert.Equal(c.Usage.InputTokenCount + c.Usage.OutputTokenCount, c.Usage.TotalTokenCount);
        Assert.Equal(c.Usage.OutputTokenCount == 12 ? ChatFinishReason.Length : ChatFinishReason.Stop, c.FinishReason);
        Assert.NotEmpty(c.Content[0].Text);
    }

    [Fact]
    public async Task StreamingChatConcatenatesToTheNonStreamingAnswerAndReportsUsage()
    {
        var chat = Server.Sdk().GetChatClient("tiny-llama3");
        List<ChatMessage> messages = [new UserChatMessage("Count with me: one, two")];
        ChatCompletion whole = await chat.CompleteChatAsync(messages, Greedy(20));
        var text = new StringBuilder();
        ChatFinishReason? finish = null;
        ChatTokenUsage? usage = null;
        await foreach (var update in chat.CompleteChatStreamingAsync(messages, Greedy(20)))
        {
            foreach (var part in update.ContentUpdate)
            {
                text.Append(part.Text);
            }

            finish ??= update.FinishReason;
            usage ??= update.Usage;
        }

        Assert.Equal(whole.Content[0].Text, text.ToString());
        Assert.Equal(whole.FinishReason, finish);
        Assert.NotNull(usage);
        Assert.Equal(whole.Usage.InputTokenCount, usage.InputTokenCount);
        Assert.Equal(whole.Usage.OutputTokenCount, usage.OutputTokenCount);
    }

    [Fact]
    public async Task StopStringsEndTheAnswerAndNeverAppearInIt()
    {
        var chat = Server.Sdk().GetChatClient("tiny-qwen3");
        List<ChatMessage> messages = [new UserChatMessage("Tell me a story")];
        var full = (await chat.CompleteChatAsync(messages, Greedy(40))).Value.Content[0].Text;
        Assert.True(full.Length >= 6, $"the greedy answer is too short to cut: '{full}'");
        var at = full.Length / 2;
        while (at + 3 < full.Length && full.AsSpan(at, 3).ContainsAnyInRange('\uD800', '\uDFFF'))
        {
            at++;
        }

        var stop = full.Substring(at, 3);
        var expected = full[..full.IndexOf(stop, StringComparison.Ordinal)];
        var options = Greedy(40);
        options.StopSequences.Add(stop);
        ChatCompletion cut = await chat.CompleteChatAsync(messages, options);
        Assert.Equal(expected, cut.Content[0].Text);
        Assert.Equal(ChatFinishReason.Stop, cut.FinishReason);

        var streamed = new StringBuilder();
        await foreach (var u in chat.CompleteChatStreamingAsync(messages, options))
        {
            foreach (var part in u.ContentUpdate)
            {
                streamed.Append(part.Text);
            }
        }

        Assert.Equal(expected, streamed.ToString());
    }

    [Fact]
    public async Task LogprobsComeWithTheRequestedAlternatives()
    {
        var chat = Server.Sdk().GetChatClient("tiny-qwen3");
        var options = Greedy(6);
        options.IncludeLogProbabilities = true;
        options.TopLogProbabilityCount = 3;
        ChatCompletion c = await chat.CompleteChatAsync([new UserChatMessage("Hi")], options);
        Assert.Equal(c.Usage.OutputTokenCount, c.ContentTokenLogProbabilities.Count);
        foreach (var t in c.ContentTokenLogProbabilities)
        {
            Assert.True(t.LogProbability <= 0);
            Assert.Equal(3, t.TopLogProbabilities.Count);
            // Greedy: the chosen token is the most likely one.
            Assert.Equal(t.TopLogProbabilities[0].LogProbability, t.LogProbability, 4);
            Assert.True(t.TopLogProbabilities[0].LogProbability >= t.TopLogProbabilities[1].LogProbability);
        }
    }

    [Fact]
    public async Task SeededSamplingRepeatsAndDifferentSeedsDiffer()
    {
        var chat = Server.Sdk().GetChatClient("tiny-qwen3");
        List<ChatMessage> messages = [new UserChatMessage("Say something random")];
        ChatCompletionOptions Seeded(long seed) => new() { Temperature = 1.0f, MaxOutputTokenCount = 24, Seed = seed };
        var a = (await chat.CompleteChatAsync(messages, Seeded(7))).Value.Content[0].Text;
        var b = (await chat.CompleteChatAsync(messages, Seeded(7))).Value.Content[0].Text;
        var others = new HashSet<string>();
        for (var s = 100; s < 104; s++)
        {
            others.Add((await chat.CompleteChatAsync(messages, Seeded(s))).Value.Content[0].Text);
        }

        Assert.Equal(a, b);
        Assert.True(others.Count > 1, "four different seeds all gave the same text");
    }

    [Fact]
    public async Task UnknownModelIs404AndBadParameterIs400ThroughTheSdk()
    {
        var missing = await Assert.ThrowsAsync<ClientResultException>(() => Server.Sdk().GetChatClient("no-such-model").CompleteChatAsync([new UserChatMessage("x")]));
        Assert.Equal(404, missing.Status);
        var bad = await Assert.ThrowsAsync<ClientResultException>(() =>
            Server.Sdk().GetChatClient("tiny-qwen3").CompleteChatAsync([new UserChatMessage("x")], new ChatCompletionOptions { Temperature = -1 }));
        Assert.Equal(400, bad.Status);
        Assert.Contains("temperature", bad.Message);
    }

    [Fact]
    public async Task ManyChoicesWithNAreIndependentAndCounted()
    {
        var (status, body, _) = await Server.PostAsync("v1/chat/completions", new JsonObject
        {
            ["model"] = "tiny-qwen3",
            ["messages"] = new JsonArray(new JsonObject { ["role"] = "user", ["content"] = "Pick a word" }),
            ["n"] = 3,
            ["temperature"] = 1.0,
            ["seed"] = 11,
            ["max_tokens"] = 10,
            ["ignore_eos"] = true,
        });
        Assert.Equal(200, status);
        var choices = body!["choices"]!.AsArray();
        Assert.Equal([0, 1, 2], choices.Select(c => c!["index"]!.GetValue<int>()));
        Assert.Equal(30, body["usage"]!["completion_tokens"]!.GetValue<int>());
        Assert.True(choices.Select(c => c!["message"]!["content"]!.GetValue<string>()).Distinct().Count() > 1);
        Assert.All(choices, c => Assert.Equal("length", c!["finish_reason"]!.GetValue<string>()));
    }

    [Fact]
    public async Task StreamingWithNInterleavesChoicesAndEndsWithUsage()
    {
        var events = await Server.StreamAsync("v1/chat/completions", new JsonObject
        {
            ["model"] = "tiny-qwen3",
            ["messages"] = new JsonArray(new JsonObject { ["role"] = "user", ["content"] = "Go" }),
            ["n"] = 2,
            ["max_tokens"] = 5,
            ["ignore_eos"] = true,
            ["stream"] = true,
            ["stream_options"] = new JsonObject { ["include_usage"] = true },
        });
        var last = events[^1];
        Assert.Empty(last["choices"]!.AsArray());
        Assert.Equal(10, last["usage"]!["completion_tokens"]!.GetValue<int>());
        var finishes = events.SelectMany(e => e["choices"]!.AsArray()).Where(c => c!["finish_reason"] is not null).Select(c => c!["index"]!.GetValue<int>()).Order();
        Assert.Equal([0, 1], finishes);
        Assert.All(events.Take(events.Count - 1), e => Assert.Equal("chat.completion.chunk", e["object"]!.GetValue<string>()));
    }
}
