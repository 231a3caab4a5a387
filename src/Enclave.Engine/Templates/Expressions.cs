namespace Enclave.Engine.Templates;

/// <summary>Variables visible while rendering: a chain of frames, innermost first.</summary>
internal sealed class Scope
{
    private readonly Dictionary<string, object?> _vars = new(StringComparer.Ordinal);

    public Scope(Scope? parent) => Parent = parent;

    public Scope? Parent { get; }

    public bool TryGet(string name, out object? value)
    {
        for (var s = this; s is not null; s = s.Parent)
        {
            if (s._vars.TryGetValue(name, out value))
                return true;
        }

        value = null;
        return false;
    }

    public void Set(string name, object? value) => _vars[name] = value;
}

internal sealed class RenderContext
{
    public RenderContext(Scope scope) => Scope = scope;

    public Scope Scope { get; set; }

    /// <summary>What <c>strftime_now</c> reads; local time like Python's datetime.now().</summary>
    public Func<DateTime> Clock { get; init; } = static () => DateTime.Now;

    /// <summary>Nesting depth of macro calls and recursive loops, to stop runaway recursion.</summary>
    public int Depth { get; set; }

    public object? Lookup(string name)
    {
        if (Scope.TryGet(name, out var v))
            return v;
        if (Builtins.Globals.TryGetValue(name, out var g))
            return g;
        return Undefined.ForName(name);
    }
}

internal abstract class Expr
{
    protected Expr(int line) => Line = line;

    public int Line { get; }

    public abstract object? Eval(RenderContext c);
}

internal sealed class ConstExpr(int line, object? value) : Expr(line)
{
    public object? Value { get; } = value;

    public override object? Eval(RenderContext c) => Value;
}

internal sealed class NameExpr(int line, string name) : Expr(line)
{
    public string Name { get; } = name;

    public override object? Eval(RenderContext c) => c.Lookup(Name);
}

internal sealed class GetAttrExpr(int line, Expr target, string name) : Expr(line)
{
    public Expr Target { get; } = target;

    public string Name { get; } = name;

    public override object? Eval(RenderContext c) => Py.GetAttribute(Target.Eval(c), Name);
}

internal sealed class GetItemExpr(int line, Expr target, Expr key) : Expr(line)
{
    public override object? Eval(RenderContext c) => Py.GetItem(target.Eval(c), key.Eval(c));
}

internal sealed class SliceExpr(int line, Expr target, Expr? start, Expr? stop, Expr? step) : Expr(line)
{
    public override object? Eval(RenderContext c) =>
        Py.Slice(target.Eval(c), start?.Eval(c), stop?.Eval(c), step?.Eval(c));
}

internal sealed class CallExpr(int line, Expr callee, Expr[] args, KeyValuePair<string, Expr>[] kwargs) : Expr(line)
{
    public Expr Callee { get; } = callee;

    public Expr[] Args { get; } = args;

    public KeyValuePair<string, Expr>[] Kwargs { get; } = kwargs;

    public CallArgs EvalArgs(RenderContext c, KeyValuePair<string, object?>? extra = null)
    {
        var positional = new List<object?>(Args.Length);
        foreach (var a in Args)
            positional.Add(a.Eval(c));
        List<KeyValuePair<string, object?>>? keywords = null;
        if (Kwargs.Length > 0 || extra is not null)
        {
            keywords = new List<KeyValuePair<string, object?>>(Kwargs.Length + 1);
            foreach (var kv in Kwargs)
                keywords.Add(new(kv.Key, kv.Value.Eval(c)));
            if (extra is not null)
                keywords.Add(extra.Value);
        }

        return new CallArgs(positional, keywords);
    }

    public override object? Eval(RenderContext c) => Invoke(c, null);

    public object? Invoke(RenderContext c, KeyValuePair<string, object?>? extra)
    {
        object? fn;
        if (Callee is GetAttrExpr attr)
        {
            var obj = attr.Target.Eval(c);
            if (Methods.Has(obj, attr.Name))
                return Methods.Call(obj, attr.Name, EvalArgs(c, extra));
            fn = Py.GetAttribute(obj, attr.Name);
        }
        else
        {
            fn = Callee.Eval(c);
        }

        return CallValue(c, fn, EvalArgs(c, extra));
    }

    public static object? CallValue(RenderContext c, object? fn, CallArgs args) => fn switch
    {
        ICallable callable => callable.Call(c, args),
        LoopInfo { Recurse: { } recurse } => recurse.Call(c, args),
        Undefined u => throw u.Fail(),
        _ => throw new TemplateException($"'{Py.TypeName(fn)}' object is not callable"),
    };
}

internal sealed class FilterExpr : Expr
{
    private readonly Builtins.Filter? _filter;

    public FilterExpr(int line, Expr? input, string name, Expr[] args, KeyValuePair<string, Expr>[] kwargs)
        : base(line)
    {
        Input = input;
        Name = name;
        Call = new CallExpr(line, new ConstExpr(line, null), args, kwargs);
        Builtins.Filters.TryGetValue(name, out _filter);
    }

    /// <summary>The filtered expression; null for the head of a filter-block chain, which filters <see cref="BlockInput"/>.</summary>
    public Expr? Input { get; set; }

    public string Name { get; }

    public CallExpr Call { get; }

    public object? Apply(RenderContext c, object? value)
    {
        if (_filter is null)
            throw new TemplateException($"No filter named '{Name}'.");
        return _filter(c, value, Call.EvalArgs(c));
    }

    public override object? Eval(RenderContext c) => Apply(c, Input!.Eval(c));
}

internal sealed class TestExpr : Expr
{
    private readonly Builtins.Test? _test;

    public TestExpr(int line, Expr input, string name, Expr[] args, bool negated)
        : base(line)
    {
        Input = input;
        Name = name;
        Args = new CallExpr(line, new ConstExpr(line, null), args, []);
        Negated = negated;
        Builtins.Tests.TryGetValue(name, out _test);
    }

    public Expr Input { get; }

    public string Name { get; }

    public CallExpr Args { get; }

    public bool Negated { get; }

    public override object? Eval(RenderContext c)
    {
        if (_test is null)
            throw new TemplateException($"No test named '{Name}'.");
        return _test(c, Input.Eval(c), Args.EvalArgs(c)) != Negated;
    }
}

internal sealed class NotExpr(int line, Expr operand) : Expr(line)
{
    public override object? Eval(RenderContext c) => !Py.Truthy(operand.Eval(c));
}

internal sealed class NegExpr(int line, Expr operand, bool negate) : Expr(line)
{
    public override object? Eval(RenderContext c)
    {
        var v = operand.Eval(c);
        if (negate)
            return Py.Negate(v);
        return Py.IsNumber(v) ? (v is bool b ? (b ? 1L : 0L) : v) : throw new TemplateException($"bad operand type for unary +: '{Py.TypeName(v)}'");
    }
}

internal sealed class BinaryExpr(int line, string op, Expr left, Expr right) : Expr(line)
{
    public override object? Eval(RenderContext c)
    {
        var a = left.Eval(c);
        var b = right.Eval(c);
        return op == "+" ? Py.Add(a, b) : Py.Arithmetic(op, a, b);
    }
}

internal sealed class ConcatExpr(int line, Expr[] parts) : Expr(line)
{
    public override object? Eval(RenderContext c)
    {
        var sb = new System.Text.StringBuilder();
        foreach (var p in parts)
            sb.Append(Py.Str(p.Eval(c)));
        return sb.ToString();
    }
}

internal sealed class AndExpr(int line, Expr left, Expr right) : Expr(line)
{
    public override object? Eval(RenderContext c)
    {
        var a = left.Eval(c);
        return Py.Truthy(a) ? right.Eval(c) : a;
    }
}

internal sealed class OrExpr(int line, Expr left, Expr right) : Expr(line)
{
    public override object? Eval(RenderContext c)
    {
        var a = left.Eval(c);
        return Py.Truthy(a) ? a : right.Eval(c);
    }
}

internal sealed class CompareExpr(int line, Expr first, string[] ops, Expr[] operands) : Expr(line)
{
    public override object? Eval(RenderContext c)
    {
        var left = first.Eval(c);
        for (var i = 0; i < ops.Length; i++)
        {
            var right = operands[i].Eval(c);
            var ok = ops[i] switch
            {
                "==" => Py.Equal(left, right),
                "!=" => !Py.Equal(left, right),
                "<" => Py.Compare(left, right, "<") < 0,
                "<=" => Py.Compare(left, right, "<=") <= 0,
                ">" => Py.Compare(left, right, ">") > 0,
                ">=" => Py.Compare(left, right, ">=") >= 0,
                "in" => Py.Contains(right, left),
                "notin" => !Py.Contains(right, left),
                _ => throw new TemplateException($"unknown comparison {ops[i]}"),
            };
            if (!ok)
                return false;
            left = right;
        }

        return true;
    }
}

internal sealed class CondExpr(int line, Expr test, Expr then, Expr? otherwise) : Expr(line)
{
    public override object? Eval(RenderContext c)
    {
        if (Py.Truthy(test.Eval(c)))
            return then.Eval(c);
        return otherwise is null ? Undefined.Plain : otherwise.Eval(c);
    }
}

internal sealed class ListExpr(int line, Expr[] items) : Expr(line)
{
    public Expr[] Items { get; } = items;

    public override object? Eval(RenderContext c)
    {
        var result = new List<object?>(Items.Length);
        foreach (var item in Items)
            result.Add(item.Eval(c));
        return result;
    }
}

internal sealed class TupleExpr(int line, Expr[] items) : Expr(line)
{
    public Expr[] Items { get; } = items;

    public override object? Eval(RenderContext c)
    {
        var result = new object?[Items.Length];
        for (var i = 0; i < Items.Length; i++)
            result[i] = Items[i].Eval(c);
        return result;
    }
}

internal sealed class DictExpr(int line, KeyValuePair<Expr, Expr>[] items) : Expr(line)
{
    public override object? Eval(RenderContext c)
    {
        var result = new PyDict(items.Length);
        foreach (var kv in items)
        {
            var key = kv.Key.Eval(c) ?? throw new TemplateException("None is not supported as a dict key");
            result[key] = kv.Value.Eval(c);
        }

        return result;
    }
}

/// <summary>Reads the rendered body of a filter block or block set.</summary>
internal sealed class BlockInputExpr(int line) : Expr(line)
{
    public const string SlotName = "\0block";

    public override object? Eval(RenderContext c) => c.Lookup(SlotName);
}
