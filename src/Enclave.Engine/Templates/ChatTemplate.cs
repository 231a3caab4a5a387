using System.Text.Json.Nodes;

namespace Enclave.Engine.Templates;

/// <summary>
/// A model's chat template, rendered the way transformers' <c>apply_chat_template(..., tokenize=False)</c> does:
/// the template sees <c>messages</c>, <c>tools</c>, <c>documents</c>, <c>add_generation_prompt</c>, the special
/// tokens (<c>bos_token</c>, <c>eos_token</c>, ...) and any extra chat-template keyword arguments.
/// </summary>
public sealed class ChatTemplate
{
    private readonly JinjaTemplate _template;
    private readonly Dictionary<string, object?> _specialTokens = new(StringComparer.Ordinal);

    /// <param name="source">The template text (tokenizer_config.json's "chat_template").</param>
    /// <param name="specialTokens">Special tokens by variable name; null values are left undefined, as
    /// transformers leaves unset special tokens out of the template variables.</param>
    public ChatTemplate(string source, IReadOnlyDictionary<string, string?> specialTokens)
    {
        ArgumentNullException.ThrowIfNull(specialTokens);
        _template = JinjaTemplate.Parse(source);
        foreach (var kv in specialTokens)
        {
            if (kv.Value is not null)
                _specialTokens[kv.Key] = kv.Value;
        }
    }

    /// <param name="messages">The conversation: objects with role, content and optionally tool_calls and more.</param>
    /// <param name="addGenerationPrompt">Append the tokens that open an assistant turn.</param>
    /// <param name="tools">JSON schemas of the available tools, or null.</param>
    /// <param name="extraVariables">chat_template_kwargs such as enable_thinking; they override everything else.</param>
    /// <exception cref="TemplateException">The template failed or rejected the conversation.</exception>
    public string Render(JsonArray messages, bool addGenerationPrompt, JsonArray? tools = null, IReadOnlyDictionary<string, object?>? extraVariables = null) =>
        Render(messages, addGenerationPrompt, tools, extraVariables, null);

    internal string Render(JsonArray messages, bool addGenerationPrompt, JsonArray? tools, IReadOnlyDictionary<string, object?>? extraVariables, Func<DateTime>? clock)
    {
        ArgumentNullException.ThrowIfNull(messages);
        var variables = new Dictionary<string, object?>(_specialTokens, StringComparer.Ordinal)
        {
            ["messages"] = messages,
            ["tools"] = tools,
            ["documents"] = null,
            ["add_generation_prompt"] = addGenerationPrompt,
        };
        if (extraVariables is not null)
        {
            foreach (var kv in extraVariables)
                variables[kv.Key] = kv.Value;
        }

        return _template.Render(variables, clock);
    }
}
