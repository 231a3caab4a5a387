using Enclave.Engine.Templates;

namespace Enclave.Engine.Tests.Templates;

public sealed class TemplateErrorTests
{
    private static readonly Dictionary<string, object?> NoVariables = new();

    [Theory]
    [InlineData("{% if x %}\nno end", 1)]
    [InlineData("a\nb\n{% for %}", 3)]
    [InlineData("a\n\n{{ 1 + }}", 3)]
    [InlineData("{# multi\nline comment #}\n{% endif %}", 3)]
    [InlineData("{{ 'unterminated }}", 1)]
    [InlineData("ok\n{% set %}", 2)]
    [InlineData("{% if true %}\n{% elif %}\n{% endif %}", 2)]
    [InlineData("{% macro m( %}{% endmacro %}", 1)]
    public void SyntaxErrorsReportTheLine(string source, int line)
    {
        var ex = Assert.Throws<TemplateException>(() => JinjaTemplate.Parse(source));
        Assert.Equal(line, ex.Line);
        Assert.EndsWith($"(line {line})", ex.Message, StringComparison.Ordinal);
        Assert.False(ex.RaisedByTemplate);
    }

    [Fact]
    public void RuntimeErrorsReportTheLineOfTheFailingStatement()
    {
        var template = JinjaTemplate.Parse("line one\n{% for m in messages %}\n{{ m.a.b }}\n{% endfor %}");
        var ex = Assert.Throws<TemplateException>(() => template.Render(new Dictionary<string, object?>
        {
            ["messages"] = new List<object?> { new Dictionary<string, object?>() },
        }));
        Assert.Equal(3, ex.Line);
        Assert.Equal("'dict object' has no attribute 'a'", ex.Detail);
    }

    [Fact]
    public void RaiseExceptionReportsItsLine()
    {
        var template = JinjaTemplate.Parse("{% if fail %}\n\n  {{ raise_exception('bad input: ' ~ fail) }}\n{% endif %}done");
        Assert.Equal("done", template.Render(NoVariables));
        var ex = Assert.Throws<TemplateException>(() => template.Render(new Dictionary<string, object?> { ["fail"] = "x" }));
        Assert.True(ex.RaisedByTemplate);
        Assert.Equal("bad input: x", ex.Detail);
        Assert.Equal(3, ex.Line);
    }

    [Fact]
    public void IntegerOverflowIsATemplateError()
    {
        var template = JinjaTemplate.Parse("{{ 9223372036854775807 + 1 }}");
        Assert.Throws<TemplateException>(() => template.Render(NoVariables));
    }

    [Fact]
    public void RunawayMacroRecursionIsATemplateError()
    {
        var template = JinjaTemplate.Parse("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}");
        var ex = Assert.Throws<TemplateException>(() => template.Render(NoVariables));
        Assert.Contains("recursion", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void AbsurdlyDeepNestingIsATemplateErrorNotACrash()
    {
        var source = new string('(', 20_000) + "1" + new string(')', 20_000);
        var ex = Assert.Throws<TemplateException>(() => JinjaTemplate.Parse("{{ " + source + " }}"));
        Assert.Contains("too deep", ex.Message, StringComparison.Ordinal);
    }
}
