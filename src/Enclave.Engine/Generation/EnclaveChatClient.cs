using System.Runtime.CompilerServices;
using System.Text;
using System.Text.Json.Nodes;
using Enclave.Engine.Sampling;
using Enclave.Engine.Scheduling;
using Microsoft.Extensions.AI;

namespace Enclave.Engine.Generation;

/// <summary>
/// Microsoft.Extensions.AI <see cref="IChatClient"/> over an in-process <see cref="LanguageModel"/>, so a .NET
/// application or Semantic Kernel can use Enclave without HTTP. Messages go through the model's chat template.
/// </summary>
public sealed class EnclaveChatClient(LanguageModel model) : IChatClient
{
    private readonly ChatClientMetadata metadata = new("enclave", null, model.Name);

    public async Task<ChatResponse> GetResponseAsync(IEnumerable<ChatMessage> messages, ChatOptions? options = null, CancellationToken cancellationToken = default)
    {
        var text = new StringBuilder();
        ChatFinishReason? finish = null;
        var promptTokens = 0;
        var completionTokens = 0;
        await foreach (var update in Stream(messages, options, cancellationToken).ConfigureAwait(false))
        {
            text.Append(update.Text);
            completionTokens++;
            promptTokens = update.PromptTokens;
            finish = update.Finish ?? finish;
        }

        return new ChatResponse(new ChatMessage(ChatRole.Assistant, text.ToString()))
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
            yield return new ChatResponseUpdate(ChatRole.Assistant, update.Text) { FinishReason = update.Finish, ModelId = model.Name };
        }
    }

    private async IAsyncEnumerable<(string Text, ChatFinishReason? Finish, int PromptTokens)> Stream(IEnumerable<ChatMessage> messages, ChatOptions? options, [EnumeratorCancellation] CancellationToken cancellationToken)
    {
        var array = new JsonArray();
        foreach (var m in messages)
        {
            array.Add((JsonNode)new JsonObject { ["role"] = m.Role.Value, ["content"] = m.Text });
        }

        var ids = model.EncodeChat(array);
        var parameters = new SamplingParams
        {
            Temperature = options?.Temperature ?? 0,
            TopP = options?.TopP ?? 1.0,
            TopK = options?.TopK ?? 0,
            MaxTokens = options?.MaxOutputTokens ?? Math.Min(1024, model.Engine.MaxModelLen - ids.Length),
            Seed = options?.Seed,
            Stop = options?.StopSequences?.ToArray() ?? [],
            FrequencyPenalty = options?.FrequencyPenalty ?? 0,
            PresencePenalty = options?.PresencePenalty ?? 0,
        };
        await foreach (var chunk in model.GenerateAsync(ids, parameters, cancellationToken).ConfigureAwait(false))
        {
            ChatFinishReason? finish = chunk.Finish switch
            {
                FinishReason.Stop => ChatFinishReason.Stop,
                FinishReason.Length => ChatFinishReason.Length,
                _ => null,
            };
            yield return (chunk.Text, finish, ids.Length);
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
