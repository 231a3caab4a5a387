using System.Text;

namespace Enclave.Engine.Templates;

internal enum Flow
{
    Normal,
    Break,
    Continue,
}

internal abstract class Stmt
{
    protected Stmt(int line) => Line = line;

    public int Line { get; }

    public Flow Render(RenderContext c, StringBuilder sb)
    {
        System.Runtime.CompilerServices.RuntimeHelpers.EnsureSufficientExecutionStack();
        try
        {
            return RenderCore(c, sb);
        }
        catch (TemplateException e) when (e.Line == 0)
        {
            throw e.WithLine(Line);
        }
        catch (OverflowException)
        {
            throw new TemplateException("integer overflow", Line);
        }
    }

    protected abstract Flow RenderCore(RenderContext c, StringBuilder sb);

    public static Flow RenderAll(Stmt[] body, RenderContext c, StringBuilder sb)
    {
        foreach (var s in body)
        {
            var flow = s.Render(c, sb);
            if (flow != Flow.Normal)
                return flow;
        }

        return Flow.Normal;
    }
}

internal sealed class TextStmt(int line, string text) : Stmt(line)
{
    protected override Flow RenderCore(RenderContext c, StringBuilder sb)
    {
        sb.Append(text);
        return Flow.Normal;
    }
}

internal sealed class OutputStmt(int line, Expr expr) : Stmt(line)
{
    protected override Flow RenderCore(RenderContext c, StringBuilder sb)
    {
        var v = expr.Eval(c);
        if (v is string s)
            sb.Append(s);
        else
            sb.Append(Py.Str(v));
        return Flow.Normal;
    }
}

internal sealed class IfStmt(int line, Expr[] tests, Stmt[][] bodies, Stmt[]? otherwise) : Stmt(line)
{
    protected override Flow RenderCore(RenderContext c, StringBuilder sb)
    {
        for (var i = 0; i < tests.Length; i++)
        {
            if (Py.Truthy(tests[i].Eval(c)))
                return RenderAll(bodies[i], c, sb);
        }

        return otherwise is null ? Flow.Normal : RenderAll(otherwise, c, sb);
    }
}

internal sealed class LoopControlStmt(int line, Flow flow) : Stmt(line)
{
    protected override Flow RenderCore(RenderContext c, StringBuilder sb) => flow;
}

/// <summary>An assignment target: a name, a tuple of targets, or <c>namespace.attribute</c>.</summary>
internal sealed class Target
{
    public string? Name { get; init; }

    public string? Attribute { get; init; }

    public Target[]? Items { get; init; }

    public void Assign(RenderContext c, Scope scope, object? value)
    {
        if (Items is not null)
        {
            var values = Py.Iterate(value);
            if (values.Count != Items.Length)
                throw new TemplateException(values.Count > Items.Length
                    ? $"too many values to unpack (expected {Items.Length})"
                    : $"not enough values to unpack (expected {Items.Length}, got {values.Count})");
            for (var i = 0; i < Items.Length; i++)
                Items[i].Assign(c, scope, values[i]);
            return;
        }

        if (Attribute is not null)
        {
            if (c.Lookup(Name!) is not Namespace ns)
                throw new TemplateException("cannot assign attribute on non-namespace object");
            ns.Attributes[Attribute] = value;
            return;
        }

        scope.Set(Name!, value);
    }
}

internal sealed class SetStmt(int line, Target target, Expr value) : Stmt(line)
{
    protected override Flow RenderCore(RenderContext c, StringBuilder sb)
    {
        target.Assign(c, c.Scope, value.Eval(c));
        return Flow.Normal;
    }
}

/// <summary><c>{% set x | filter %}body{% endset %}</c> and <c>{% filter f %}body{% endfilter %}</c>.</summary>
internal sealed class CaptureStmt(int line, Target? target, Expr? filter, Stmt[] body) : Stmt(line)
{
    protected override Flow RenderCore(RenderContext c, StringBuilder sb)
    {
        var inner = new StringBuilder();
        var outer = c.Scope;
        // Assignments inside the captured body stay local to it, as in jinja2.
        c.Scope = new Scope(outer);
        try
        {
            RenderAll(body, c, inner);
        }
        finally
        {
            c.Scope = outer;
        }

        object? value = inner.ToString();
        if (filter is not null)
        {
            var slot = new Scope(outer);
            slot.Set(BlockInputExpr.SlotName, value);
            c.Scope = slot;
            try
            {
                value = filter.Eval(c);
            }
            finally
            {
                c.Scope = outer;
            }
        }

        if (target is null)
            sb.Append(Py.Str(value));
        else
            target.Assign(c, outer, value);
        return Flow.Normal;
    }
}

internal sealed class ForStmt(int line, Target target, Expr iterable, Expr? filter, Stmt[] body, Stmt[]? otherwise, bool recursive) : Stmt(line)
{
    protected override Flow RenderCore(RenderContext c, StringBuilder sb)
    {
        RenderLoop(c, sb, iterable.Eval(c), 0);
        return Flow.Normal;
    }

    private void RenderLoop(RenderContext c, StringBuilder sb, object? source, int depth)
    {
        var outer = c.Scope;
        IReadOnlyList<object?> items = Py.Iterate(source);
        if (filter is not null)
        {
            var kept = new List<object?>(items.Count);
            foreach (var item in items)
            {
                var probe = new Scope(outer);
                target.Assign(c, probe, item);
                c.Scope = probe;
                try
                {
                    if (Py.Truthy(filter.Eval(c)))
                        kept.Add(item);
                }
                finally
                {
                    c.Scope = outer;
                }
            }

            items = kept;
        }

        ICallable? recurse = null;
        if (recursive)
        {
            recurse = new BuiltinFunction("loop", (ctx, args) =>
            {
                if (ctx.Depth > 200)
                    throw new TemplateException("maximum recursion depth exceeded");
                var inner = new StringBuilder();
                var saved = ctx.Scope;
                ctx.Scope = outer;
                ctx.Depth++;
                try
                {
                    RenderLoop(ctx, inner, args.Get(0, "iterable"), depth + 1);
                }
                finally
                {
                    ctx.Scope = saved;
                    ctx.Depth--;
                }

                return inner.ToString();
            });
        }

        var loop = new LoopInfo(items, depth, recurse);

        // jinja2 clears its "no iteration" flag at the end of the body, so the else block also runs
        // when every iteration left early through break or continue.
        var completedAnIteration = false;
        try
        {
            for (var i = 0; i < items.Count; i++)
            {
                var frame = new Scope(outer);
                target.Assign(c, frame, items[i]);
                frame.Set("loop", loop);
                loop.Index0 = i;
                c.Scope = frame;
                var flow = RenderAll(body, c, sb);
                if (flow == Flow.Normal)
                    completedAnIteration = true;
                else if (flow == Flow.Break)
                    break;
            }
        }
        finally
        {
            c.Scope = outer;
        }

        if (!completedAnIteration && otherwise is not null)
            RenderAll(otherwise, c, sb);
    }
}

internal sealed class WithStmt(int line, Target[] targets, Expr[] values, Stmt[] body) : Stmt(line)
{
    protected override Flow RenderCore(RenderContext c, StringBuilder sb)
    {
        var outer = c.Scope;
        var frame = new Scope(outer);
        for (var i = 0; i < targets.Length; i++)
            targets[i].Assign(c, frame, values[i].Eval(c));
        c.Scope = frame;
        try
        {
            return RenderAll(body, c, sb);
        }
        finally
        {
            c.Scope = outer;
        }
    }
}

/// <summary>A macro definition; rendering it binds a callable in the current scope.</summary>
internal sealed class MacroStmt(int line, string name, string[] parameters, Expr?[] defaults, Stmt[] body) : Stmt(line)
{
    public string Name { get; } = name;

    protected override Flow RenderCore(RenderContext c, StringBuilder sb)
    {
        c.Scope.Set(Name, new Macro(this, c.Scope));
        return Flow.Normal;
    }

    public object? Invoke(RenderContext c, Scope closure, CallArgs args, ICallable? caller)
    {
        if (c.Depth > 200)
            throw new TemplateException("maximum recursion depth exceeded");
        var frame = new Scope(closure);
        var saved = c.Scope;
        c.Scope = frame;
        c.Depth++;
        try
        {
            for (var i = 0; i < parameters.Length; i++)
            {
                object? value;
                if (args.Has(i, parameters[i]))
                    value = args.Get(i, parameters[i]);
                else if (defaults[i] is { } d)
                    value = d.Eval(c);
                else
                    value = Undefined.ForName(parameters[i]);
                frame.Set(parameters[i], value);
            }

            var extra = new List<object?>();
            for (var i = parameters.Length; i < args.Count; i++)
                extra.Add(args[i]);
            frame.Set("varargs", extra.ToArray());
            var kwargs = new PyDict();
            if (args.Keywords is not null)
            {
                foreach (var kv in args.Keywords)
                {
                    if (kv.Key == "caller")
                        caller = kv.Value as ICallable ?? caller;
                    else if (Array.IndexOf(parameters, kv.Key) < 0)
                        kwargs[kv.Key] = kv.Value;
                }
            }

            frame.Set("kwargs", kwargs);
            if (caller is not null)
                frame.Set("caller", caller);
            var sb = new StringBuilder();
            RenderAll(body, c, sb);
            return sb.ToString();
        }
        finally
        {
            c.Scope = saved;
            c.Depth--;
        }
    }
}

internal sealed class Macro(MacroStmt definition, Scope closure) : ICallable
{
    public object? Call(RenderContext context, CallArgs args) => definition.Invoke(context, closure, args, null);
}

/// <summary><c>{% call macro(...) %}body{% endcall %}</c>: the body becomes the macro's <c>caller()</c>.</summary>
internal sealed class CallBlockStmt(int line, CallExpr call, MacroStmt callerBody) : Stmt(line)
{
    protected override Flow RenderCore(RenderContext c, StringBuilder sb)
    {
        var caller = new Macro(callerBody, c.Scope);
        sb.Append(Py.Str(call.Invoke(c, new KeyValuePair<string, object?>("caller", caller))));
        return Flow.Normal;
    }
}

/// <summary>A tag whose body renders in place (transformers' <c>{% generation %}</c>).</summary>
internal sealed class PassThroughStmt(int line, Stmt[] body) : Stmt(line)
{
    protected override Flow RenderCore(RenderContext c, StringBuilder sb) => RenderAll(body, c, sb);
}
