using System.Runtime.CompilerServices;
using System.Text;
using System.Text.Json.Nodes;
using Enclave.Engine.Sampling;
using Enclave.Engine.Scheduling;
using Microsoft.Extensions.AI;

namespace Enclave.Engine.Generation;

/// <summary>
/// Microsoft.Extensions.AI <see cref="IChatClient"/> over an in-process <see cref="LanguageModel"/>, so a .NET
/// application or Semantic Kernel can use Enclave without HTTP. Messages go through the model's chat template; a
/// reasoning model's thinking arrives as <see cref="TextReasoningContent"/>, apart from the answer's
/// <see cref="TextContent"/> (so <c>ChatResponse.Text</c> is the answer alone).
/// </summary>
public sealed class EnclaveChatClient(LanguageModel model) : IChatClient
{
    private readonly ChatClientMetadata metadata = new("enclave", null, model.Name);

    public async Task<ChatResponse> GetResponseAsync(IEnumerable<ChatMessage> messages, ChatOptions? options = null, CancellationToken cancellationToken = default)
    {
        var text = new StringBuilder();
        var thinking = new StringBuilder();
        ChatFinishReason? finish = null;
        var promptTokens = 0;
        var completionTokens = 0;
        await foreach (var update in Stream(messages, options, cancellationToken).ConfigureAwait(false))
        {
            text.Append(update.Chunk.Content);
            thinking.Append(update.Chunk.Reasoning);
            completionTokens++;
            promptTokens = update.PromptTokens;
            finish = update.Finish ?? finish;
        }

        var contents = new List<AIContent>();
        if (thinking.Length > 0)
        {
            contents.Add(new TextReasoningContent(thinking.ToString()));
        }

        contents.Add(new TextContent(text.ToString()));
        return new ChatResponse(new ChatMessage(ChatRole.Assistant, contents))
        {
            FinishReason = finish,
            ModelId = model.Name,
            Usage = new UsageDetails { InputTokenCount = promptTokens, OutputTokenCount = completionTokens, TotalTokenCount = promptTokens + completionTokens },
        };
    }

    public async IAsyncEnumerable<ChatResponseUpdate> GetStreamingResponseAsync(IEnumerable<ChatMessage> messages, ChatOptions? options = null, [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        await foreach (var update in Stream(messages, options, cancellationToken).ConfigureAwait(false))
        {
            var contents = new List<AIContent>(1);
            if (update.Chunk.Reasoning is { } thinking)
            {
                contents.Add(new TextReasoningContent(thinking));
            }
            else if (update.Chunk.Content is { } text)
            {
                contents.Add(new TextContent(text));
            }

            yield return new ChatResponseUpdate(ChatRole.Assistant, contents) { FinishReason = update.Finish, ModelId = model.Name };
        }
    }

    private async IAsyncEnumerable<(ChatChunk Chunk, ChatFinishReason? Finish, int PromptTokens)> Stream(IEnumerable<ChatMessage> messages, ChatOptions? options, [EnumeratorCancellation] CancellationToken cancellationToken)
    {
        var array = new JsonArray();
        foreach (var m in messages)
        {
            array.Add((JsonNode)new JsonObject { ["role"] = m.Role.Value, ["content"] = m.Text });
        }

        var promptTokens = model.EncodeChat(array).Length;
        var parameters = new SamplingParams
        {
            Temperature = options?.Temperature ?? 0,
            TopP = options?.TopP ?? 1.0,
            TopK = options?.TopK ?? 0,
            MaxTokens = options?.MaxOutputTokens ?? Math.Min(1024, model.Engine.MaxModelLen - promptTokens),
            Seed = options?.Seed,
            Stop = options?.StopSequences?.ToArray() ?? [],
            FrequencyPenalty = options?.FrequencyPenalty ?? 0,
            PresencePenalty = options?.PresencePenalty ?? 0,
        };
        await foreach (var chunk in model.ChatAsync(array, parameters, cancellationToken).ConfigureAwait(false))
        {
            ChatFinishReason? finish = chunk.Token.Finish switch
            {
                FinishReason.Stop => ChatFinishReason.Stop,
                FinishReason.Length => ChatFinishReason.Length,
                _ => null,
            };
            yield return (chunk, finish, promptTokens);
        }
    }

    public object? GetService(Type serviceType, object? serviceKey = null) =>
        serviceKey is not null ? null
        : serviceType == typeof(ChatClientMetadata) ? metadata
        : serviceType.IsInstanceOfType(this) ? this
        : serviceType.IsInstanceOfType(model) ? model
        : null;

    public void Dispose()
    {
    }
}
