using System.Text.Json.Nodes;
using Enclave.Engine.Templates;

namespace Enclave.Engine.Tests.Templates;

public sealed class ChatTemplateTests
{
    private const string ChatMl =
        "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{% endif %}"
        + "{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}"
        + "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

    private static readonly Dictionary<string, string?> NoTokens = new();

    private static JsonArray Messages(params (string Role, string Content)[] turns)
    {
        var array = new JsonArray();
        foreach (var (role, content) in turns)
            array.Add(new JsonObject { ["role"] = role, ["content"] = content });
        return array;
    }

    [Fact]
    public void ChatMlAddsTheDefaultSystemPromptAndGenerationPrompt()
    {
        var template = new ChatTemplate(ChatMl, NoTokens);
        var rendered = template.Render(Messages(("user", "hi"), ("assistant", "hello"), ("user", "bye")), addGenerationPrompt: true);
        Assert.Equal(
            "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n"
            + "<|im_start|>assistant\nhello<|im_end|>\n<|im_start|>user\nbye<|im_end|>\n<|im_start|>assistant\n",
            rendered);
    }

    [Fact]
    public void ChatMlKeepsTheCallersSystemPromptAndOmitsTheGenerationPrompt()
    {
        var template = new ChatTemplate(ChatMl, NoTokens);
        var rendered = template.Render(Messages(("system", "S"), ("user", "hi")), addGenerationPrompt: false);
        Assert.Equal("<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n", rendered);
    }

    [Fact]
    public void SpecialTokensAreVariablesAndNullOnesStayUndefined()
    {
        var template = new ChatTemplate(
            "{{ bos_token }}|{{ eos_token }}|{{ pad_token is defined }}|{{ unk_token is defined }}",
            new Dictionary<string, string?> { ["bos_token"] = "<s>", ["eos_token"] = "</s>", ["pad_token"] = null, ["unk_token"] = "<unk>" });
        Assert.Equal("<s>|</s>|False|True", template.Render([], addGenerationPrompt: false));
    }

    [Fact]
    public void ToolsAreNoneWhenNotGivenAndAListWhenGiven()
    {
        var template = new ChatTemplate(
            "{{ tools is none }}{% if tools %}{% for t in tools %}[{{ t.function.name }}|{{ t | tojson }}]{% endfor %}{% endif %}",
            NoTokens);
        Assert.Equal("True", template.Render([], addGenerationPrompt: false));
        var tools = new JsonArray
        {
            new JsonObject { ["type"] = "function", ["function"] = new JsonObject { ["name"] = "f", ["parameters"] = new JsonObject() } },
        };
        Assert.Equal(
            "False[f|{\"type\": \"function\", \"function\": {\"name\": \"f\", \"parameters\": {}}}]",
            template.Render([], addGenerationPrompt: false, tools));
    }

    [Fact]
    public void ExtraVariablesReachTheTemplateAndOverrideDefaults()
    {
        var template = new ChatTemplate(
            "{% if enable_thinking is defined and enable_thinking is false %}off{% else %}on{% endif %}|{{ add_generation_prompt }}",
            NoTokens);
        Assert.Equal("on|False", template.Render([], addGenerationPrompt: false));
        Assert.Equal("off|False", template.Render([], addGenerationPrompt: false, extraVariables: new Dictionary<string, object?> { ["enable_thinking"] = false }));
        Assert.Equal("on|True", template.Render([], addGenerationPrompt: true, extraVariables: new Dictionary<string, object?> { ["enable_thinking"] = true }));
    }

    [Fact]
    public void QwenThreeHonoursEnableThinkingFalse()
    {
        var (source, special) = TemplateFixtures.LoadChatTemplate("qwen3");
        var template = new ChatTemplate(source, special);
        var messages = Messages(("user", "hi"));
        var thinking = template.Render(messages, addGenerationPrompt: true);
        var noThinking = template.Render(messages, addGenerationPrompt: true, extraVariables: new Dictionary<string, object?> { ["enable_thinking"] = false });
        Assert.Equal("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n", thinking);
        Assert.Equal(thinking + "<think>\n\n</think>\n\n", noThinking);
    }

    [Fact]
    public void RaiseExceptionInAChatTemplateSurfacesAsTemplateException()
    {
        var template = new ChatTemplate(
            "{% for m in messages %}{% if (m.role == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{{ m.content }}{% endfor %}",
            NoTokens);
        Assert.Equal("ab", template.Render(Messages(("user", "a"), ("assistant", "b")), addGenerationPrompt: false));
        var ex = Assert.Throws<TemplateException>(() => template.Render(Messages(("user", "a"), ("user", "b")), addGenerationPrompt: false));
        Assert.True(ex.RaisedByTemplate);
        Assert.Equal("Conversation roles must alternate user/assistant/user/assistant/...", ex.Detail);
    }

    [Fact]
    public void StrftimeNowUsesTheClock()
    {
        var template = new ChatTemplate("Today Date: {{ strftime_now('%d %b %Y') }}", NoTokens);
        var rendered = template.Render([], false, null, null, () => new DateTime(2025, 3, 4, 5, 6, 7));
        Assert.Equal("Today Date: 04 Mar 2025", rendered);
    }

    [Fact]
    public void ConcurrentRendersOfOneTemplateAgree()
    {
        var (source, special) = TemplateFixtures.LoadChatTemplate("qwen3");
        var template = new ChatTemplate(source, special);
        var expected = template.Render(Messages(("system", "s"), ("user", "u")), addGenerationPrompt: true);
        var results = new string[64];
        Parallel.For(0, results.Length, i =>
            results[i] = template.Render(Messages(("system", "s"), ("user", "u")), addGenerationPrompt: true));
        Assert.All(results, r => Assert.Equal(expected, r));
    }

    public static TheoryData<string, int> TinyModelCases()
    {
        var data = new TheoryData<string, int>();
        foreach (var model in new[] { "tiny-llama3", "tiny-qwen2-r1", "tiny-qwen3" })
        {
            var reference = JsonNode.Parse(File.ReadAllText(Path.Combine(TemplateFixtures.RepositoryRoot, "tests", "fixtures", "models", model, "reference.json")))!;
            var cases = (JsonArray)reference["cases"]!;
            for (var i = 0; i < cases.Count; i++)
            {
                if (cases[i]!["kind"]!.GetValue<string>() == "chat")
                    data.Add(model, i);
            }
        }

        return data;
    }

    /// <summary>The tiny fixture models carry their own chat_template.jinja and transformers' rendering of it.</summary>
    [Theory]
    [MemberData(nameof(TinyModelCases))]
    public void TinyModelTemplatesRenderLikeTransformers(string model, int index)
    {
        var dir = Path.Combine(TemplateFixtures.RepositoryRoot, "tests", "fixtures", "models", model);
        var config = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "tokenizer_config.json")))!;
        var special = new Dictionary<string, string?>
        {
            ["bos_token"] = config["bos_token"]?.GetValue<string>(),
            ["eos_token"] = config["eos_token"]?.GetValue<string>(),
        };
        var template = new ChatTemplate(File.ReadAllText(Path.Combine(dir, "chat_template.jinja")), special);
        var entry = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "reference.json")))!["cases"]![index]!;
        var rendered = template.Render((JsonArray)entry["messages"]!.DeepClone(), addGenerationPrompt: true);
        Assert.Equal(entry["rendered"]!.GetValue<string>(), rendered);
    }
}
