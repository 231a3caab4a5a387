using System.Text.Json.Nodes;
using Enclave.Engine.Backends.Cpu;
using Enclave.Engine.Generation;
using Enclave.Engine.Sampling;
using Enclave.Engine.Scheduling;
using Enclave.Engine.Tests.Support;
using Microsoft.Extensions.AI;

namespace Enclave.Engine.Tests.Generation;

/// <summary>The in-process API: text streaming, stop strings, and the Microsoft.Extensions.AI chat client.</summary>
public sealed class LanguageModelTests
{
    private static LanguageModel Load(string name) =>
        LanguageModel.Load(Fixtures.Model(name), new CpuBackend(2), new EngineOptions(), ownsBackend: true);

    [Fact]
    public async Task StreamedTextEqualsTheDecodedReferenceContinuation()
    {
        using var lm = Load("tiny-qwen3");
        var c = Fixtures.LoadReference("tiny-qwen3").Cases[0];
        var comparable = c.GreedyMargins.TakeWhile(m => m >= 1e-3).Count();
        var chunks = new List<TextChunk>();
        await foreach (var chunk in lm.GenerateAsync(c.PromptIds, new SamplingParams { Temperature = 0, MaxTokens = comparable, IgnoreEos = true, SkipSpecialTokens = false }))
        {
            chunks.Add(chunk);
        }

        Assert.Equal(c.GreedyIds.Take(comparable), chunks.Select(x => x.TokenId));
        Assert.Equal(lm.Tokenizer.Decode(c.GreedyIds.Take(comparable).ToArray()), string.Concat(chunks.Select(x => x.Text)));
        Assert.Equal(FinishReason.Length, chunks[^1].Finish);
    }

    [Fact]
    public async Task AStopStringEndsGenerationAndIsRemoved()
    {
        using var lm = Load("tiny-qwen3");
        var c = Fixtures.LoadReference("tiny-qwen3").Cases[0];
        var full = lm.Tokenizer.Decode(c.GreedyIds.Take(8).ToArray());
        var stop = full.Substring(full.Length / 2, 2);
        var text = "";
        TextChunk last = default;
        await foreach (var chunk in lm.GenerateAsync(c.PromptIds, new SamplingParams { Temperature = 0, MaxTokens = 8, IgnoreEos = true, Stop = [stop], SkipSpecialTokens = false }))
        {
            text += chunk.Text;
            last = chunk;
        }

        Assert.Equal(full[..full.IndexOf(stop, StringComparison.Ordinal)], text);
        Assert.Equal(FinishReason.Stop, last.Finish);
        Assert.Equal(stop, last.MatchedStop);
    }

    [Theory]
    [InlineData(6)]
    [InlineData(32)]
    public async Task TheChatClientSeparatesReasoningFromTheAnswer(int maxTokens)
    {
        using var lm = Load("tiny-qwen2-r1");
        var c = Fixtures.LoadReference("tiny-qwen2-r1").Cases.First(x => x.Kind == "chat");
        IChatClient client = new EnclaveChatClient(lm);
        var messages = c.Messages.EnumerateArray()
            .Select(m => new ChatMessage(new ChatRole(m.GetProperty("role").GetString()!), m.GetProperty("content").GetString()))
            .ToList();
        var response = await client.GetResponseAsync(messages, new ChatOptions { Temperature = 0, MaxOutputTokens = maxTokens });
        Assert.Equal(c.PromptIds.Length, response.Usage!.InputTokenCount);
        Assert.Equal(ChatFinishReason.Length, response.FinishReason);

        // The R1 template opens <think> in the prompt: what precedes </think> is reasoning, what follows is the answer.
        var generated = c.GreedyIds.Take(maxTokens).ToArray();
        var thinkEnd = lm.Reasoning!.ThinkEndId;
        var end = Array.IndexOf(generated, thinkEnd);
        var expectedReasoning = lm.Tokenizer.Decode(end < 0 ? generated : generated.Take(end).ToArray(), skipSpecialTokens: true);
        var expectedAnswer = end < 0 ? string.Empty : lm.Tokenizer.Decode(generated.Skip(end + 1).ToArray(), skipSpecialTokens: true);
        Assert.Equal(expectedAnswer, response.Text);
        var reasoning = string.Concat(response.Messages.SelectMany(m => m.Contents).OfType<TextReasoningContent>().Select(r => r.Text));
        Assert.Equal(expectedReasoning, reasoning);
        Assert.NotEmpty(reasoning);

        var streamedAnswer = "";
        var streamedReasoning = "";
        await foreach (var update in client.GetStreamingResponseAsync(messages, new ChatOptions { Temperature = 0, MaxOutputTokens = maxTokens }))
        {
            streamedAnswer += update.Text;
            streamedReasoning += string.Concat(update.Contents.OfType<TextReasoningContent>().Select(r => r.Text));
        }

        Assert.Equal(expectedAnswer, streamedAnswer);
        Assert.Equal(expectedReasoning, streamedReasoning);
        Assert.NotNull(client.GetService<ChatClientMetadata>());
    }

    [Fact]
    public async Task AModelWithoutAThinkBlockAnswersWithContentOnly()
    {
        using var lm = Load("tiny-llama3");
        Assert.Null(lm.Reasoning);
        var c = Fixtures.LoadReference("tiny-llama3").Cases.First(x => x.Kind == "chat");
        var text = "";
        await foreach (var chunk in lm.ChatAsync(JsonNode.Parse(c.Messages.GetRawText())!.AsArray(), new SamplingParams { Temperature = 0, MaxTokens = 8 }))
        {
            Assert.Null(chunk.Reasoning);
            text += chunk.Content;
        }

        Assert.Equal(lm.Tokenizer.Decode(c.GreedyIds.Take(8).ToArray(), skipSpecialTokens: true), text);
    }

    [Fact]
    public void RenderChatNeedsATemplate()
    {
        using var lm = Load("tiny-qwen3");
        var rendered = lm.RenderChat(new JsonArray(new JsonObject { ["role"] = "user", ["content"] = "hi" }));
        Assert.Equal("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n", rendered);
    }
}
