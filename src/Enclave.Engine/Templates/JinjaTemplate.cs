using System.Text;

namespace Enclave.Engine.Templates;

/// <summary>
/// A parsed Jinja2 template, configured like transformers' chat-template environment (trim_blocks, lstrip_blocks,
/// loop controls, the immutable sandbox, <c>raise_exception</c> and <c>strftime_now</c>). Parse once and render
/// as often as needed; rendering is thread-safe.
/// </summary>
public sealed class JinjaTemplate
{
    private readonly Stmt[] _body;

    private JinjaTemplate(Stmt[] body) => _body = body;

    /// <exception cref="TemplateException">The source is not a valid template.</exception>
    public static JinjaTemplate Parse(string source)
    {
        ArgumentNullException.ThrowIfNull(source);
        try
        {
            return new JinjaTemplate(Parser.Parse(source));
        }
        catch (InsufficientExecutionStackException)
        {
            throw new TemplateException("template nesting too deep");
        }
    }

    /// <summary>
    /// Renders with the given variables. Values may be string, bool, integers, floating point numbers, null,
    /// <see cref="System.Text.Json.Nodes.JsonNode"/>, <see cref="IReadOnlyList{T}"/> and
    /// <see cref="IReadOnlyDictionary{TKey,TValue}"/> of those.
    /// </summary>
    /// <exception cref="TemplateException">Rendering failed or the template raised an error.</exception>
    public string Render(IReadOnlyDictionary<string, object?> variables) => Render(variables, null);

    internal string Render(IReadOnlyDictionary<string, object?> variables, Func<DateTime>? clock)
    {
        ArgumentNullException.ThrowIfNull(variables);
        var root = new Scope(null);
        foreach (var kv in variables)
            root.Set(kv.Key, Py.FromClr(kv.Value));
        var context = new RenderContext(new Scope(root)) { Clock = clock ?? (static () => DateTime.Now) };
        var sb = new StringBuilder();
        try
        {
            Stmt.RenderAll(_body, context, sb);
        }
        catch (InsufficientExecutionStackException)
        {
            throw new TemplateException("template recursion too deep");
        }

        return sb.ToString();
    }
}
