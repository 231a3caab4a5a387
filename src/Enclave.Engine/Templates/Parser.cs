namespace Enclave.Engine.Templates;

/// <summary>Recursive-descent parser following jinja2's grammar and operator precedence.</summary>
internal sealed class Parser
{
    private static readonly HashSet<string> CompareOps = ["==", "!=", "<", "<=", ">", ">="];

    private readonly List<Token> _tokens;
    private int _pos;

    private Parser(List<Token> tokens) => _tokens = tokens;

    public static Stmt[] Parse(string source)
    {
        var parser = new Parser(Lexer.Tokenize(source));
        var body = parser.ParseStatements([], out _);
        return body;
    }

    private Token Current => _tokens[_pos];

    private Token Peek(int n = 1) => _tokens[Math.Min(_pos + n, _tokens.Count - 1)];

    private Token Next() => _tokens[_pos++];

    private static TemplateException Error(string message, Token at) => new(message, at.Line);

    private Token Expect(TokenKind kind, string? value = null)
    {
        var t = Current;
        if (t.Kind != kind || (value is not null && t.Value != value))
        {
            var wanted = value is not null ? $"'{value}'" : kind switch
            {
                TokenKind.Name => "name",
                TokenKind.BlockEnd => "end of statement block",
                TokenKind.VariableEnd => "end of print statement",
                _ => kind.ToString(),
            };
            throw Error($"expected token {wanted}, got '{t}'", t);
        }

        _pos++;
        return t;
    }

    private bool SkipOp(string op)
    {
        if (Current.IsOp(op))
        {
            _pos++;
            return true;
        }

        return false;
    }

    private bool SkipName(string name)
    {
        if (Current.IsName(name))
        {
            _pos++;
            return true;
        }

        return false;
    }

    /// <summary>Parses until a block tag whose name is one of <paramref name="endTags"/>; leaves the stream on that name.</summary>
    private Stmt[] ParseStatements(string[] endTags, out string? endedBy, string? opener = null, int openLine = 0)
    {
        var body = new List<Stmt>();
        endedBy = null;
        while (true)
        {
            var t = Current;
            switch (t.Kind)
            {
                case TokenKind.Eof:
                    if (endTags.Length > 0)
                    {
                        throw new TemplateException(
                            $"Unexpected end of template. Jinja was looking for the following tags: {string.Join(" or ", endTags.Select(e => $"'{e}'"))}. The innermost block that needs to be closed is '{opener}'.",
                            openLine > 0 ? openLine : t.Line);
                    }

                    return [.. body];
                case TokenKind.Data:
                    _pos++;
                    body.Add(new TextStmt(t.Line, t.Value));
                    break;
                case TokenKind.VariableBegin:
                {
                    _pos++;
                    var expr = ParseTuple();
                    Expect(TokenKind.VariableEnd);
                    body.Add(new OutputStmt(t.Line, expr));
                    break;
                }

                case TokenKind.BlockBegin:
                {
                    var name = Peek();
                    if (name.Kind == TokenKind.Name && Array.IndexOf(endTags, name.Value) >= 0)
                    {
                        _pos += 2;
                        endedBy = name.Value;
                        return [.. body];
                    }

                    _pos++;
                    var stmt = ParseStatement(endTags, opener);
                    if (stmt is not null)
                        body.Add(stmt);
                    break;
                }

                default:
                    throw Error($"unexpected '{t}'", t);
            }
        }
    }

    private Stmt? ParseStatement(string[] enclosingEnds, string? opener)
    {
        System.Runtime.CompilerServices.RuntimeHelpers.EnsureSufficientExecutionStack();
        var t = Current;
        if (t.Kind != TokenKind.Name)
            throw Error("tag name expected", t);
        _pos++;
        switch (t.Value)
        {
            case "if": return ParseIf(t);
            case "for": return ParseFor(t);
            case "set": return ParseSet(t);
            case "macro": return ParseMacro(t);
            case "call": return ParseCallBlock(t);
            case "filter": return ParseFilterBlock(t);
            case "with": return ParseWith(t);
            case "break":
            case "continue":
                Expect(TokenKind.BlockEnd);
                return new LoopControlStmt(t.Line, t.Value == "break" ? Flow.Break : Flow.Continue);
            case "generation":
            {
                Expect(TokenKind.BlockEnd);
                var body = ParseStatements(["endgeneration"], out _, "generation", t.Line);
                Expect(TokenKind.BlockEnd);
                return new PassThroughStmt(t.Line, body);
            }

            default:
                if (enclosingEnds.Length > 0)
                {
                    throw Error(
                        $"Encountered unknown tag '{t.Value}'. Jinja was looking for the following tags: {string.Join(" or ", enclosingEnds.Select(e => $"'{e}'"))}. The innermost block that needs to be closed is '{opener}'.",
                        t);
                }

                throw Error($"Encountered unknown tag '{t.Value}'.", t);
        }
    }

    private IfStmt ParseIf(Token start)
    {
        var tests = new List<Expr>();
        var bodies = new List<Stmt[]>();
        Stmt[]? otherwise = null;
        tests.Add(ParseTuple(withCondExpr: false));
        Expect(TokenKind.BlockEnd);
        while (true)
        {
            var body = ParseStatements(["elif", "else", "endif"], out var ended, "if", start.Line);
            bodies.Add(body);
            if (ended == "elif")
            {
                tests.Add(ParseTuple(withCondExpr: false));
                Expect(TokenKind.BlockEnd);
                continue;
            }

            if (ended == "else")
            {
                Expect(TokenKind.BlockEnd);
                otherwise = ParseStatements(["endif"], out _, "if", start.Line);
            }

            Expect(TokenKind.BlockEnd);
            return new IfStmt(start.Line, [.. tests], [.. bodies], otherwise);
        }
    }

    private ForStmt ParseFor(Token start)
    {
        var target = ParseAssignTarget(extraEnd: "in", allowNamespace: false);
        Expect(TokenKind.Name, "in");
        var iterable = ParseTuple(withCondExpr: false, extraEnd: "recursive");
        Expr? filter = null;
        if (SkipName("if"))
            filter = ParseExpression();
        var recursive = SkipName("recursive");
        Expect(TokenKind.BlockEnd);
        var body = ParseStatements(["endfor", "else"], out var ended, "for", start.Line);
        Stmt[]? otherwise = null;
        if (ended == "else")
        {
            Expect(TokenKind.BlockEnd);
            otherwise = ParseStatements(["endfor"], out _, "for", start.Line);
        }

        Expect(TokenKind.BlockEnd);
        return new ForStmt(start.Line, target, iterable, filter, body, otherwise, recursive);
    }

    private Stmt ParseSet(Token start)
    {
        var target = ParseAssignTarget(extraEnd: null, allowNamespace: true);
        if (SkipOp("="))
        {
            var value = ParseTuple();
            Expect(TokenKind.BlockEnd);
            return new SetStmt(start.Line, target, value);
        }

        var filter = Current.IsOp("|") ? ParseFilterChain(new BlockInputExpr(start.Line), startInline: false) : null;
        Expect(TokenKind.BlockEnd);
        var body = ParseStatements(["endset"], out _, "set", start.Line);
        Expect(TokenKind.BlockEnd);
        return new CaptureStmt(start.Line, target, filter, body);
    }

    private CaptureStmt ParseFilterBlock(Token start)
    {
        var filter = ParseFilterChain(new BlockInputExpr(start.Line), startInline: true);
        Expect(TokenKind.BlockEnd);
        var body = ParseStatements(["endfilter"], out _, "filter", start.Line);
        Expect(TokenKind.BlockEnd);
        return new CaptureStmt(start.Line, null, filter, body);
    }

    private WithStmt ParseWith(Token start)
    {
        var targets = new List<Target>();
        var values = new List<Expr>();
        while (Current.Kind != TokenKind.BlockEnd)
        {
            if (targets.Count > 0)
                Expect(TokenKind.Operator, ",");
            targets.Add(ParseAssignTarget(extraEnd: null, allowNamespace: false));
            Expect(TokenKind.Operator, "=");
            values.Add(ParseExpression());
        }

        Expect(TokenKind.BlockEnd);
        var body = ParseStatements(["endwith"], out _, "with", start.Line);
        Expect(TokenKind.BlockEnd);
        return new WithStmt(start.Line, [.. targets], [.. values], body);
    }

    private void ParseSignature(List<string> names, List<Expr?> defaults)
    {
        Expect(TokenKind.Operator, "(");
        while (!Current.IsOp(")"))
        {
            if (names.Count > 0)
                Expect(TokenKind.Operator, ",");
            if (Current.IsOp(")"))
                break;
            var name = Expect(TokenKind.Name).Value;
            names.Add(name);
            defaults.Add(SkipOp("=") ? ParseExpression() : null);
        }

        Expect(TokenKind.Operator, ")");
    }

    private MacroStmt ParseMacro(Token start)
    {
        var name = Expect(TokenKind.Name).Value;
        var names = new List<string>();
        var defaults = new List<Expr?>();
        ParseSignature(names, defaults);
        Expect(TokenKind.BlockEnd);
        var body = ParseStatements(["endmacro"], out _, "macro", start.Line);
        _pos++;
        if (Current.Kind == TokenKind.Name)
            Expect(TokenKind.BlockEnd);
        return new MacroStmt(start.Line, name, [.. names], [.. defaults], body);
    }

    private CallBlockStmt ParseCallBlock(Token start)
    {
        var names = new List<string>();
        var defaults = new List<Expr?>();
        if (Current.IsOp("("))
            ParseSignature(names, defaults);
        var expr = ParseExpression();
        if (expr is not CallExpr call)
            throw Error("expected call", start);
        Expect(TokenKind.BlockEnd);
        var body = ParseStatements(["endcall"], out _, "call", start.Line);
        Expect(TokenKind.BlockEnd);
        return new CallBlockStmt(start.Line, call, new MacroStmt(start.Line, "caller", [.. names], [.. defaults], body));
    }

    private Target ParseAssignTarget(string? extraEnd, bool allowNamespace)
    {
        var items = new List<Target>();
        var isTuple = false;
        var parenthesized = SkipOp("(");
        while (true)
        {
            if (items.Count > 0)
            {
                if (!SkipOp(","))
                    break;
                isTuple = true;
            }

            if (Current.Kind == TokenKind.BlockEnd || Current.IsOp("=") || Current.IsOp(")") || Current.IsOp("|")
                || (extraEnd is not null && Current.IsName(extraEnd)))
                break;
            var name = Expect(TokenKind.Name);
            if (allowNamespace && Current.IsOp("."))
            {
                _pos++;
                var attr = Expect(TokenKind.Name).Value;
                items.Add(new Target { Name = name.Value, Attribute = attr });
            }
            else
            {
                items.Add(new Target { Name = name.Value });
            }

            if (!Current.IsOp(","))
                break;
        }

        if (parenthesized)
            Expect(TokenKind.Operator, ")");
        if (items.Count == 0)
            throw Error($"expected an assignment target, got '{Current}'", Current);
        return isTuple || parenthesized && items.Count > 1 ? new Target { Items = [.. items] } : items[0];
    }

    // ---- expressions ----

    private Expr ParseExpression(bool withCondExpr = true) => withCondExpr ? ParseCondExpr() : ParseOr();

    private Expr ParseCondExpr()
    {
        var expr = ParseOr();
        while (Current.IsName("if"))
        {
            var line = Next().Line;
            var test = ParseOr();
            Expr? otherwise = SkipName("else") ? ParseCondExpr() : null;
            expr = new CondExpr(line, test, expr, otherwise);
        }

        return expr;
    }

    private Expr ParseOr()
    {
        var left = ParseAnd();
        while (Current.IsName("or"))
        {
            var line = Next().Line;
            left = new OrExpr(line, left, ParseAnd());
        }

        return left;
    }

    private Expr ParseAnd()
    {
        var left = ParseNot();
        while (Current.IsName("and"))
        {
            var line = Next().Line;
            left = new AndExpr(line, left, ParseNot());
        }

        return left;
    }

    private Expr ParseNot()
    {
        if (Current.IsName("not"))
        {
            var line = Next().Line;
            return new NotExpr(line, ParseNot());
        }

        return ParseCompare();
    }

    private Expr ParseCompare()
    {
        var line = Current.Line;
        var first = ParseMath1();
        List<string>? ops = null;
        List<Expr>? operands = null;
        while (true)
        {
            string op;
            if (Current.Kind == TokenKind.Operator && CompareOps.Contains(Current.Value))
            {
                op = Next().Value;
            }
            else if (Current.IsName("in"))
            {
                _pos++;
                op = "in";
            }
            else if (Current.IsName("not") && Peek().IsName("in"))
            {
                _pos += 2;
                op = "notin";
            }
            else
            {
                break;
            }

            (ops ??= []).Add(op);
            (operands ??= []).Add(ParseMath1());
        }

        return ops is null ? first : new CompareExpr(line, first, [.. ops], [.. operands!]);
    }

    private Expr ParseMath1()
    {
        var left = ParseConcat();
        while (Current.IsOp("+") || Current.IsOp("-"))
        {
            var t = Next();
            left = new BinaryExpr(t.Line, t.Value, left, ParseConcat());
        }

        return left;
    }

    private Expr ParseConcat()
    {
        var first = ParseMath2();
        if (!Current.IsOp("~"))
            return first;
        var line = Current.Line;
        var parts = new List<Expr> { first };
        while (SkipOp("~"))
            parts.Add(ParseMath2());
        return new ConcatExpr(line, [.. parts]);
    }

    private Expr ParseMath2()
    {
        var left = ParsePow();
        while (Current.IsOp("*") || Current.IsOp("/") || Current.IsOp("//") || Current.IsOp("%"))
        {
            var t = Next();
            left = new BinaryExpr(t.Line, t.Value, left, ParsePow());
        }

        return left;
    }

    private Expr ParsePow()
    {
        var left = ParseUnary();
        while (Current.IsOp("**"))
        {
            var t = Next();
            left = new BinaryExpr(t.Line, "**", left, ParseUnary());
        }

        return left;
    }

    private Expr ParseUnary(bool withFilter = true)
    {
        var t = Current;
        Expr node;
        if (t.IsOp("-") || t.IsOp("+"))
        {
            _pos++;
            node = new NegExpr(t.Line, ParseUnary(false), t.Value == "-");
        }
        else
        {
            node = ParsePrimary();
        }

        node = ParsePostfix(node);
        if (withFilter)
            node = ParseFilterExpr(node);
        return node;
    }

    private Expr ParsePrimary()
    {
        System.Runtime.CompilerServices.RuntimeHelpers.EnsureSufficientExecutionStack();
        var t = Current;
        switch (t.Kind)
        {
            case TokenKind.Name:
                _pos++;
                return t.Value switch
                {
                    "true" or "True" => new ConstExpr(t.Line, true),
                    "false" or "False" => new ConstExpr(t.Line, false),
                    "none" or "None" => new ConstExpr(t.Line, null),
                    _ => new NameExpr(t.Line, t.Value),
                };
            case TokenKind.String:
            {
                _pos++;
                var value = t.Value;
                while (Current.Kind == TokenKind.String)
                    value += Next().Value;
                return new ConstExpr(t.Line, value);
            }

            case TokenKind.Integer:
            case TokenKind.Float:
                _pos++;
                return new ConstExpr(t.Line, t.Literal);
            case TokenKind.Operator when t.Value == "(":
            {
                _pos++;
                var expr = ParseTuple(explicitParentheses: true);
                Expect(TokenKind.Operator, ")");
                return expr;
            }

            case TokenKind.Operator when t.Value == "[":
            {
                _pos++;
                var items = new List<Expr>();
                while (!Current.IsOp("]"))
                {
                    if (items.Count > 0)
                        Expect(TokenKind.Operator, ",");
                    if (Current.IsOp("]"))
                        break;
                    items.Add(ParseExpression());
                }

                Expect(TokenKind.Operator, "]");
                return new ListExpr(t.Line, [.. items]);
            }

            case TokenKind.Operator when t.Value == "{":
            {
                _pos++;
                var items = new List<KeyValuePair<Expr, Expr>>();
                while (!Current.IsOp("}"))
                {
                    if (items.Count > 0)
                        Expect(TokenKind.Operator, ",");
                    if (Current.IsOp("}"))
                        break;
                    var key = ParseExpression();
                    Expect(TokenKind.Operator, ":");
                    items.Add(new(key, ParseExpression()));
                }

                Expect(TokenKind.Operator, "}");
                return new DictExpr(t.Line, [.. items]);
            }

            default:
                throw Error($"unexpected '{t}'", t);
        }
    }

    private Expr ParseTuple(bool withCondExpr = true, string? extraEnd = null, bool explicitParentheses = false)
    {
        var line = Current.Line;
        var items = new List<Expr>();
        var isTuple = false;
        while (true)
        {
            if (items.Count > 0)
                Expect(TokenKind.Operator, ",");
            if (Current.Kind is TokenKind.VariableEnd or TokenKind.BlockEnd || Current.IsOp(")")
                || (extraEnd is not null && Current.IsName(extraEnd)))
                break;
            items.Add(ParseExpression(withCondExpr));
            if (Current.IsOp(","))
                isTuple = true;
            else
                break;
        }

        if (!isTuple)
        {
            if (items.Count > 0)
                return items[0];
            if (!explicitParentheses)
                throw Error($"Expected an expression, got '{Current}'", Current);
        }

        return new TupleExpr(line, [.. items]);
    }

    private Expr ParsePostfix(Expr node)
    {
        while (true)
        {
            var t = Current;
            if (t.IsOp("."))
            {
                _pos++;
                var attr = Next();
                if (attr.Kind == TokenKind.Name)
                    node = new GetAttrExpr(t.Line, node, attr.Value);
                else if (attr.Kind == TokenKind.Integer)
                    node = new GetItemExpr(t.Line, node, new ConstExpr(t.Line, attr.Literal));
                else
                    throw Error("expected name or number", attr);
            }
            else if (t.IsOp("["))
            {
                _pos++;
                node = ParseSubscript(node, t.Line);
            }
            else if (t.IsOp("("))
            {
                node = ParseCall(node);
            }
            else
            {
                return node;
            }
        }
    }

    private Expr ParseSubscript(Expr node, int line)
    {
        var keys = new List<Expr>();
        Expr? slice = null;
        while (!Current.IsOp("]"))
        {
            if (keys.Count > 0 || slice is not null)
                Expect(TokenKind.Operator, ",");
            Expr? start = null;
            if (!Current.IsOp(":"))
            {
                start = ParseExpression();
                if (!Current.IsOp(":"))
                {
                    keys.Add(start);
                    continue;
                }
            }

            _pos++;
            Expr? stop = null;
            Expr? step = null;
            if (!Current.IsOp("]") && !Current.IsOp(",") && !Current.IsOp(":"))
                stop = ParseExpression();
            if (SkipOp(":") && !Current.IsOp("]") && !Current.IsOp(","))
                step = ParseExpression();
            slice = new SliceExpr(line, node, start, stop, step);
        }

        Expect(TokenKind.Operator, "]");
        if (slice is not null)
        {
            if (keys.Count > 0)
                throw Error("extended slicing is not supported", Current);
            return slice;
        }

        if (keys.Count == 0)
            throw Error("expected subscript expression", Current);
        return new GetItemExpr(line, node, keys.Count == 1 ? keys[0] : new TupleExpr(line, [.. keys]));
    }

    private void ParseCallArgs(List<Expr> args, List<KeyValuePair<string, Expr>> kwargs)
    {
        var open = Expect(TokenKind.Operator, "(");
        while (!Current.IsOp(")"))
        {
            if (args.Count > 0 || kwargs.Count > 0)
            {
                Expect(TokenKind.Operator, ",");
                if (Current.IsOp(")"))
                    break;
            }

            if (Current.IsOp("*") || Current.IsOp("**"))
                throw Error("*args and **kwargs in calls are not supported", Current);
            if (Current.Kind == TokenKind.Name && Peek().IsOp("="))
            {
                var key = Next().Value;
                _pos++;
                kwargs.Add(new(key, ParseExpression()));
            }
            else
            {
                if (kwargs.Count > 0)
                    throw Error("positional argument follows keyword argument", Current);
                args.Add(ParseExpression());
            }
        }

        if (Current.Kind == TokenKind.Eof)
            throw Error("unexpected end of template in call", open);
        Expect(TokenKind.Operator, ")");
    }

    private CallExpr ParseCall(Expr node)
    {
        var line = Current.Line;
        var args = new List<Expr>();
        var kwargs = new List<KeyValuePair<string, Expr>>();
        ParseCallArgs(args, kwargs);
        return new CallExpr(line, node, [.. args], [.. kwargs]);
    }

    private Expr ParseFilterExpr(Expr node)
    {
        while (true)
        {
            if (Current.IsOp("|"))
            {
                node = ParseFilterChain(node, startInline: false);
            }
            else if (Current.IsName("is"))
            {
                node = ParseTest(node);
            }
            else if (Current.IsOp("("))
            {
                node = ParseCall(node);
            }
            else
            {
                return node;
            }
        }
    }

    private Expr ParseFilterChain(Expr node, bool startInline)
    {
        while (Current.IsOp("|") || startInline)
        {
            if (!startInline)
                _pos++;
            startInline = false;
            var nameToken = Expect(TokenKind.Name);
            var name = nameToken.Value;
            while (Current.IsOp("."))
            {
                _pos++;
                name += "." + Expect(TokenKind.Name).Value;
            }

            var args = new List<Expr>();
            var kwargs = new List<KeyValuePair<string, Expr>>();
            if (Current.IsOp("("))
                ParseCallArgs(args, kwargs);
            node = new FilterExpr(nameToken.Line, node, name, [.. args], [.. kwargs]);
        }

        return node;
    }

    private Expr ParseTest(Expr node)
    {
        var isToken = Next();
        var negated = SkipName("not");
        var name = Expect(TokenKind.Name).Value;
        while (Current.IsOp("."))
        {
            _pos++;
            name += "." + Expect(TokenKind.Name).Value;
        }

        var args = new List<Expr>();
        if (Current.IsOp("("))
        {
            var kwargs = new List<KeyValuePair<string, Expr>>();
            ParseCallArgs(args, kwargs);
        }
        else if ((Current.Kind is TokenKind.Name or TokenKind.String or TokenKind.Integer or TokenKind.Float
                  || Current.IsOp("[") || Current.IsOp("{"))
                 && !Current.IsName("else") && !Current.IsName("or") && !Current.IsName("and"))
        {
            if (Current.IsName("is"))
                throw Error("You cannot chain multiple tests with is", Current);
            var arg = ParsePostfix(ParsePrimary());
            args.Add(arg);
        }

        return new TestExpr(isToken.Line, node, name, [.. args], negated);
    }
}
