using System.Text.Json.Nodes;
using Enclave.Engine.Templates;

namespace Enclave.Engine.Tests.Templates;

/// <summary>The variable types callers may pass, and behaviour that does not depend on jinja2 reference output.</summary>
public sealed class JinjaTemplateTests
{
    private static string Render(string source, params (string Name, object? Value)[] variables)
    {
        var dict = new Dictionary<string, object?>(StringComparer.Ordinal);
        foreach (var (name, value) in variables)
            dict[name] = value;
        return JinjaTemplate.Parse(source).Render(dict);
    }

    [Fact]
    public void ClrValuesBehaveLikeTheirPythonCounterparts()
    {
        Assert.Equal("3 True None 2.5 x", Render("{{ i }} {{ b }} {{ n }} {{ d }} {{ s }}", ("i", 3), ("b", true), ("n", null), ("d", 2.5), ("s", "x")));
        Assert.Equal("7", Render("{{ l + 4 }}", ("l", 3L)));
        Assert.Equal("['a', 1]|2", Render("{{ xs }}|{{ xs | length }}", ("xs", new List<object?> { "a", 1 })));
        Assert.Equal("k=v;n=1;", Render("{% for k, v in d.items() %}{{ k }}={{ v }};{% endfor %}",
            ("d", new Dictionary<string, object?> { ["k"] = "v", ["n"] = 1 })));
    }

    [Fact]
    public void JsonNodesKeepKeyOrderAndNumberKinds()
    {
        var obj = JsonNode.Parse("{\"z\": 1, \"a\": 1.0, \"m\": [true, null, \"s\"], \"e\": 1e2}")!;
        Assert.Equal("z a m e|1 1.0 100.0|[True, None, 's']", Render("{{ o | join(' ') }}|{{ o.z }} {{ o.a }} {{ o.e }}|{{ o.m }}", ("o", obj)));
        Assert.Equal("{\"z\": 1, \"a\": 1.0, \"m\": [true, null, \"s\"], \"e\": 100.0}", Render("{{ o | tojson }}", ("o", obj)));
    }

    [Fact]
    public void JsonValuesBuiltFromClrValuesConvert()
    {
        var obj = new JsonObject { ["n"] = 5, ["f"] = 0.25, ["s"] = "t", ["b"] = false };
        Assert.Equal("5 0.25 t False", Render("{{ o.n }} {{ o.f }} {{ o.s }} {{ o.b }}", ("o", obj)));
        Assert.Equal("10", Render("{{ o.n * 2 }}", ("o", obj)));
    }

    [Fact]
    public void TemplatesCannotMutateCallerData()
    {
        var messages = new JsonArray { new JsonObject { ["role"] = "user" } };
        var ex = Assert.Throws<TemplateException>(() => Render("{{ messages.append(1) }}", ("messages", messages)));
        Assert.Contains("unsafe", ex.Message, StringComparison.Ordinal);
        Assert.Single(messages);
    }

    [Fact]
    public void NamespaceAssignmentOnANonNamespaceFails()
    {
        var ex = Assert.Throws<TemplateException>(() => Render("{% set d = {} %}{% set d.x = 1 %}"));
        Assert.Contains("non-namespace", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void ParsedTemplatesRenderIndependently()
    {
        var template = JinjaTemplate.Parse("{% set ns = namespace(n=0) %}{% for x in xs %}{% set ns.n = ns.n + x %}{% endfor %}{{ ns.n }}");
        Assert.Equal("6", template.Render(new Dictionary<string, object?> { ["xs"] = new List<object?> { 1, 2, 3 } }));
        Assert.Equal("6", template.Render(new Dictionary<string, object?> { ["xs"] = new List<object?> { 1, 2, 3 } }));
        Assert.Equal("0", template.Render(new Dictionary<string, object?> { ["xs"] = new List<object?>() }));
    }

    [Fact]
    public void StringsWithAstralCharactersIndexByCodePoint()
    {
        Assert.Equal("3|c|😀|c😀a", Render("{{ s | length }}|{{ s[-1] }}|{{ s[1] }}|{{ s[::-1] }}", ("s", "a😀c")));
    }
}
