using System.Text.Json.Nodes;
using Enclave.Engine.Templates;

namespace Enclave.Engine.Tests.Templates;

/// <summary>
/// Replays jinja_cases.json: templates and variables rendered by jinja2 configured as transformers configures it
/// (see make_jinja_cases.py). Each case must render byte-identically, or raise where jinja2 raised.
/// </summary>
public sealed class JinjaSemanticsTests
{
    private static readonly Lazy<JsonObject> CaseFile = new(() =>
        (JsonObject)JsonNode.Parse(File.ReadAllText(Path.Combine(
            TemplateFixtures.RepositoryRoot, "tests", "Enclave.Engine.Tests", "Templates", "jinja_cases.json")))!);

    private static JsonArray AllCases => (JsonArray)CaseFile.Value["cases"]!;

    /// <summary>The instant the generator's strftime_now reads.</summary>
    private static DateTime Clock => DateTime.Parse(CaseFile.Value["clock"]!.GetValue<string>(), System.Globalization.CultureInfo.InvariantCulture);

    public static TheoryData<string> Names()
    {
        var data = new TheoryData<string>();
        foreach (var c in AllCases)
            data.Add(c!["name"]!.GetValue<string>());
        return data;
    }

    private static JsonNode Case(string name) =>
        AllCases.Single(c => c!["name"]!.GetValue<string>() == name)!;

    private static Dictionary<string, object?> Variables(JsonNode entry)
    {
        var variables = new Dictionary<string, object?>(StringComparer.Ordinal);
        foreach (var kv in (JsonObject)entry["variables"]!.DeepClone())
            variables[kv.Key] = kv.Value;
        return variables;
    }

    [Fact]
    public void CaseFileIsNotEmpty()
    {
        Assert.True(AllCases.Count > 50);
        Assert.Contains(AllCases, c => c!["error"] is not null);
    }

    [Theory]
    [MemberData(nameof(Names))]
    public void RendersLikeJinja2(string name)
    {
        var entry = Case(name);
        var source = entry["template"]!.GetValue<string>();
        var variables = Variables(entry);
        var clock = Clock;

        if (entry["error"] is { } error)
        {
            var ex = Assert.Throws<TemplateException>(() => JinjaTemplate.Parse(source).Render(variables, () => clock));
            // jinja2's message follows the exception type name: "UndefinedError: 'x' is undefined".
            var jinjaMessage = error.GetValue<string>();
            Assert.Equal(jinjaMessage[(jinjaMessage.IndexOf(": ", StringComparison.Ordinal) + 2)..], ex.Detail);
            return;
        }

        var template = JinjaTemplate.Parse(source);
        Assert.Equal(entry["rendered"]!.GetValue<string>(), template.Render(variables, () => clock));
    }

    [Theory]
    [InlineData("raise_exception", "Conversation roles must alternate user/assistant/user/assistant/...")]
    [InlineData("llama31_style_raises", "Cannot put tools in the first user message when there's no first user message!")]
    [InlineData("llama31_style_two_tool_calls_raise", "This model only supports single tool-calls at once!")]
    public void RaiseExceptionCarriesTheTemplatesMessage(string name, string message)
    {
        var entry = Case(name);
        Assert.Contains(message, entry["error"]!.GetValue<string>(), StringComparison.Ordinal);
        var template = JinjaTemplate.Parse(entry["template"]!.GetValue<string>());
        var ex = Assert.Throws<TemplateException>(() => template.Render(Variables(entry)));
        Assert.True(ex.RaisedByTemplate);
        Assert.Equal(message, ex.Detail);
        Assert.Contains(message, ex.Message, StringComparison.Ordinal);
    }
}
