using System.Text.Json.Nodes;
using Enclave.Engine.Templates;

namespace Enclave.Engine.Tests.Templates;

/// <summary>Every chat case transformers rendered for the real tokenizers must come out byte-identical.</summary>
public sealed class ChatTemplateParityTests
{
    private static readonly Dictionary<string, ChatTemplate> Templates = new(StringComparer.Ordinal);
    private static readonly Lock TemplatesLock = new();

    public static TheoryData<string, int, string> Cases()
    {
        var data = new TheoryData<string, int, string>();
        foreach (var tokenizer in TemplateFixtures.ChatTokenizers)
        {
            var chat = (JsonArray)TemplateFixtures.LoadReference(tokenizer)["chat"]!;
            for (var i = 0; i < chat.Count; i++)
            {
                var entry = chat[i]!;
                data.Add(tokenizer, i, $"{entry["name"]} gen={entry["add_generation_prompt"]}");
            }
        }

        return data;
    }

    private static ChatTemplate TemplateFor(string tokenizer)
    {
        lock (TemplatesLock)
        {
            if (!Templates.TryGetValue(tokenizer, out var template))
            {
                var (source, special) = TemplateFixtures.LoadChatTemplate(tokenizer);
                template = new ChatTemplate(source, special);
                Templates[tokenizer] = template;
            }

            return template;
        }
    }

    [Fact]
    public void EveryChatTokenizerHasReferenceCases()
    {
        foreach (var tokenizer in TemplateFixtures.ChatTokenizers)
        {
            var chat = TemplateFixtures.LoadReference(tokenizer)["chat"] as JsonArray;
            Assert.NotNull(chat);
            Assert.NotEmpty(chat);
        }
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void RendersLikeTransformers(string tokenizer, int index, string description)
    {
        var entry = TemplateFixtures.LoadReference(tokenizer)["chat"]![index]!;
        var messages = (JsonArray)entry["messages"]!.DeepClone();
        var addGenerationPrompt = entry["add_generation_prompt"]!.GetValue<bool>();
        var template = TemplateFor(tokenizer);

        if (entry["error"] is { } error)
        {
            var ex = Assert.Throws<TemplateException>(() => template.Render(messages, addGenerationPrompt));
            Assert.False(string.IsNullOrEmpty(ex.Message), $"{description}: transformers raised {error}");
            return;
        }

        var expected = entry["rendered"]!.GetValue<string>();
        var actual = template.Render(messages, addGenerationPrompt);
        Assert.Equal(expected, actual);
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void RenderingTwiceGivesTheSameText(string tokenizer, int index, string description)
    {
        var entry = TemplateFixtures.LoadReference(tokenizer)["chat"]![index]!;
        if (entry["error"] is not null)
            return;
        var messages = (JsonArray)entry["messages"]!.DeepClone();
        var addGenerationPrompt = entry["add_generation_prompt"]!.GetValue<bool>();
        var template = TemplateFor(tokenizer);
        var first = template.Render(messages, addGenerationPrompt);
        var second = template.Render(messages, addGenerationPrompt);
        Assert.True(first == second, description);
        Assert.Equal(entry["rendered"]!.GetValue<string>(), second);
    }
}
