namespace Enclave.Engine.Templates;

/// <summary>
/// Raised when a template cannot be parsed, when rendering fails (type errors, undefined access, unknown
/// filters), or when the template itself calls <c>raise_exception</c>. <see cref="Line"/> is the 1-based
/// source line the problem was found on, or 0 when it is not known.
/// </summary>
public sealed class TemplateException : Exception
{
    public TemplateException()
        : this("template error")
    {
    }

    public TemplateException(string message)
        : this(message, 0)
    {
    }

    public TemplateException(string message, Exception innerException)
        : base(message, innerException)
    {
        Detail = message;
    }

    public TemplateException(string message, int line, bool raisedByTemplate = false)
        : base(line > 0 ? $"{message} (line {line})" : message)
    {
        Detail = message;
        Line = line;
        RaisedByTemplate = raisedByTemplate;
    }

    /// <summary>The message without the line suffix.</summary>
    public string Detail { get; }

    /// <summary>1-based line number, 0 when unknown.</summary>
    public int Line { get; }

    /// <summary>True when the template raised the error itself through <c>raise_exception</c>.</summary>
    public bool RaisedByTemplate { get; }

    internal TemplateException WithLine(int line) =>
        Line > 0 || line <= 0 ? this : new TemplateException(Detail, line, RaisedByTemplate);
}
