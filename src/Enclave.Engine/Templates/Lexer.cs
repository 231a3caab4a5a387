using System.Globalization;
using System.Text;

namespace Enclave.Engine.Templates;

internal enum TokenKind
{
    Data,
    VariableBegin,
    VariableEnd,
    BlockBegin,
    BlockEnd,
    Name,
    String,
    Integer,
    Float,
    Operator,
    Eof,
}

internal readonly record struct Token(TokenKind Kind, string Value, int Line, object? Literal = null)
{
    public bool Is(TokenKind kind, string value) => Kind == kind && Value == value;

    public bool IsOp(string op) => Kind == TokenKind.Operator && Value == op;

    public bool IsName(string name) => Kind == TokenKind.Name && Value == name;

    public override string ToString() => Kind switch
    {
        TokenKind.Eof => "end of template",
        TokenKind.VariableEnd => "end of print statement",
        TokenKind.BlockEnd => "end of statement block",
        TokenKind.Data => "template data",
        _ => Value,
    };
}

/// <summary>
/// Splits a template into data and tag tokens with the whitespace rules transformers configures jinja2 with:
/// trim_blocks (drop the first newline after a block or comment tag), lstrip_blocks (drop spaces and tabs
/// before a block or comment tag that starts its line), and the explicit <c>-</c> / <c>+</c> modifiers.
/// </summary>
internal sealed class Lexer
{
    private static readonly string[] Operators =
    [
        "//", "**", "==", "!=", ">=", "<=",
        "+", "-", "/", "*", "%", "~", "[", "]", "(", ")", "{", "}", "<", ">", "=", ".", ":", "|", ",", ";",
    ];

    private readonly string _src;
    private readonly bool _trimBlocks;
    private readonly bool _lstripBlocks;
    private readonly List<Token> _tokens = [];
    private int _pos;
    private int _line = 1;

    private Lexer(string source, bool trimBlocks, bool lstripBlocks)
    {
        _src = Normalize(source);
        _trimBlocks = trimBlocks;
        _lstripBlocks = lstripBlocks;
    }

    public static List<Token> Tokenize(string source, bool trimBlocks = true, bool lstripBlocks = true)
    {
        var lexer = new Lexer(source, trimBlocks, lstripBlocks);
        lexer.Run();
        return lexer._tokens;
    }

    /// <summary>jinja2 turns every newline sequence into "\n" and drops a single trailing newline.</summary>
    private static string Normalize(string source)
    {
        if (source.Contains('\r'))
            source = source.Replace("\r\n", "\n").Replace('\r', '\n');
        if (source.EndsWith('\n'))
            source = source[..^1];
        return source;
    }

    private void Run()
    {
        var lineStarting = true;
        while (_pos < _src.Length)
        {
            var start = FindTagStart(_pos);
            if (start < 0)
            {
                EmitData(_src[_pos..]);
                _pos = _src.Length;
                break;
            }

            var kind = _src[start + 1];
            var modifier = start + 2 < _src.Length ? _src[start + 2] : '\0';
            var text = _src[_pos..start];
            if (modifier == '-')
            {
                text = text.TrimEnd();
            }
            else if (modifier != '+' && _lstripBlocks && kind != '{')
            {
                var lineStart = text.LastIndexOf('\n') + 1;
                if ((lineStart > 0 || lineStarting) && lineStart < text.Length && IsBlank(text, lineStart))
                    text = text[..lineStart];
            }

            // The stripped whitespace still counts for line numbers.
            var tagLine = _line + CountNewlines(_src, _pos, start);
            EmitData(text);
            _line = tagLine;
            _pos = start + 2 + (modifier is '-' or '+' ? 1 : 0);

            switch (kind)
            {
                case '#':
                    lineStarting = LexComment();
                    break;
                case '%':
                    lineStarting = LexBlock();
                    break;
                default:
                    lineStarting = LexVariable();
                    break;
            }
        }

        _tokens.Add(new Token(TokenKind.Eof, "", _line));
    }

    private int FindTagStart(int from)
    {
        while (true)
        {
            var i = _src.IndexOf('{', from);
            if (i < 0 || i + 1 >= _src.Length)
                return -1;
            var c = _src[i + 1];
            if (c is '{' or '%' or '#')
                return i;
            from = i + 1;
        }
    }

    private static bool IsBlank(string text, int from)
    {
        for (var i = from; i < text.Length; i++)
        {
            if (!char.IsWhiteSpace(text[i]))
                return false;
        }

        return true;
    }

    private static int CountNewlines(string s, int from, int to)
    {
        var n = 0;
        for (var i = from; i < to; i++)
        {
            if (s[i] == '\n')
                n++;
        }

        return n;
    }

    private void EmitData(string text)
    {
        if (text.Length > 0)
            _tokens.Add(new Token(TokenKind.Data, text, _line));
        _line += CountNewlines(text, 0, text.Length);
    }

    /// <summary>Consumes what follows a closing tag; returns whether the consumed text ended with a newline.</summary>
    private bool AfterTagEnd(char modifier, bool trimNewline)
    {
        if (modifier == '-')
        {
            var begin = _pos;
            while (_pos < _src.Length && char.IsWhiteSpace(_src[_pos]))
            {
                if (_src[_pos] == '\n')
                    _line++;
                _pos++;
            }

            return _pos > begin && _src[_pos - 1] == '\n';
        }

        if (modifier != '+' && trimNewline && _pos < _src.Length && _src[_pos] == '\n')
        {
            _pos++;
            _line++;
            return true;
        }

        return false;
    }

    private bool LexComment()
    {
        var startLine = _line;
        var end = _src.IndexOf("#}", _pos, StringComparison.Ordinal);
        if (end < 0)
            throw new TemplateException("Missing end of comment tag", startLine);
        var modifier = end > _pos && _src[end - 1] is '-' or '+' ? _src[end - 1] : '\0';
        _line += CountNewlines(_src, _pos, end);
        _pos = end + 2;
        return AfterTagEnd(modifier, _trimBlocks);
    }

    private bool LexVariable()
    {
        _tokens.Add(new Token(TokenKind.VariableBegin, "{{", _line));
        return LexTagBody(isBlock: false);
    }

    private bool LexBlock()
    {
        var beginIndex = _tokens.Count;
        _tokens.Add(new Token(TokenKind.BlockBegin, "{%", _line));
        var endedWithNewline = LexTagBody(isBlock: true);
        if (_tokens.Count == beginIndex + 3 && _tokens[beginIndex + 1].IsName("raw"))
        {
            _tokens.RemoveRange(beginIndex, 3);
            return LexRaw();
        }

        return endedWithNewline;
    }

    /// <summary>Everything up to the matching endraw tag is data, taken verbatim.</summary>
    private bool LexRaw()
    {
        var search = _pos;
        while (true)
        {
            var start = _src.IndexOf("{%", search, StringComparison.Ordinal);
            if (start < 0)
                throw new TemplateException("Missing end of raw directive", _line);
            var i = start + 2;
            var modifier = i < _src.Length && _src[i] is '-' or '+' ? _src[i] : '\0';
            if (modifier != '\0')
                i++;
            while (i < _src.Length && char.IsWhiteSpace(_src[i]))
                i++;
            if (string.CompareOrdinal(_src, i, "endraw", 0, 6) != 0)
            {
                search = start + 2;
                continue;
            }

            i += 6;
            while (i < _src.Length && char.IsWhiteSpace(_src[i]))
                i++;
            var endModifier = '\0';
            if (i < _src.Length && _src[i] is '-' or '+')
                endModifier = _src[i++];
            if (string.CompareOrdinal(_src, i, "%}", 0, 2) != 0)
            {
                search = start + 2;
                continue;
            }

            var text = _src[_pos..start];
            if (modifier == '-')
                text = text.TrimEnd();
            EmitData(text);
            _line += CountNewlines(_src, _pos + text.Length, i);
            _pos = i + 2;
            return AfterTagEnd(endModifier, _trimBlocks);
        }
    }

    private bool LexTagBody(bool isBlock)
    {
        var depth = 0;
        var startLine = _line;
        while (true)
        {
            while (_pos < _src.Length && char.IsWhiteSpace(_src[_pos]))
            {
                if (_src[_pos] == '\n')
                    _line++;
                _pos++;
            }

            if (_pos >= _src.Length)
                throw new TemplateException(isBlock ? "unexpected end of template, expected 'end of statement block'." : "unexpected end of template, expected 'end of print statement'.", startLine);

            if (depth == 0 && TryTagEnd(isBlock, out var modifier))
            {
                _tokens.Add(new Token(isBlock ? TokenKind.BlockEnd : TokenKind.VariableEnd, isBlock ? "%}" : "}}", _line));
                return AfterTagEnd(modifier, isBlock && _trimBlocks);
            }

            var c = _src[_pos];
            if (c == '\'' || c == '"')
            {
                LexString(c);
            }
            else if (char.IsAsciiDigit(c))
            {
                LexNumber();
            }
            else if (char.IsLetter(c) || c == '_')
            {
                var begin = _pos;
                while (_pos < _src.Length && (char.IsLetterOrDigit(_src[_pos]) || _src[_pos] == '_'))
                    _pos++;
                _tokens.Add(new Token(TokenKind.Name, _src[begin.._pos], _line));
            }
            else
            {
                string? op = null;
                foreach (var candidate in Operators)
                {
                    if (string.CompareOrdinal(_src, _pos, candidate, 0, candidate.Length) == 0)
                    {
                        op = candidate;
                        break;
                    }
                }

                if (op is null)
                    throw new TemplateException($"unexpected char '{c}' at {_pos}", _line);
                if (op is "(" or "[" or "{")
                {
                    depth++;
                }
                else if (op is ")" or "]" or "}")
                {
                    if (depth == 0)
                        throw new TemplateException($"unexpected '{op}'", _line);
                    depth--;
                }

                _tokens.Add(new Token(TokenKind.Operator, op, _line));
                _pos += op.Length;
            }
        }
    }

    private bool TryTagEnd(bool isBlock, out char modifier)
    {
        var close = isBlock ? "%}" : "}}";
        modifier = '\0';
        if (string.CompareOrdinal(_src, _pos, close, 0, 2) == 0)
        {
            _pos += 2;
            return true;
        }

        var m = _src[_pos];
        if ((m == '-' || (m == '+' && isBlock)) && string.CompareOrdinal(_src, _pos + 1, close, 0, 2) == 0)
        {
            modifier = m;
            _pos += 3;
            return true;
        }

        return false;
    }

    private void LexNumber()
    {
        var begin = _pos;
        var line = _line;
        if (_src[_pos] == '0' && _pos + 1 < _src.Length && _src[_pos + 1] is 'x' or 'X' or 'o' or 'O' or 'b' or 'B')
        {
            var radix = char.ToLowerInvariant(_src[_pos + 1]) switch { 'x' => 16, 'o' => 8, _ => 2 };
            _pos += 2;
            var digitsBegin = _pos;
            while (_pos < _src.Length && (char.IsAsciiHexDigit(_src[_pos]) || _src[_pos] == '_'))
                _pos++;
            var digits = _src[digitsBegin.._pos].Replace("_", "");
            _tokens.Add(new Token(TokenKind.Integer, _src[begin.._pos], line, Convert.ToInt64(digits, radix)));
            return;
        }

        SkipDigits();
        var isFloat = false;
        if (_pos + 1 < _src.Length && _src[_pos] == '.' && char.IsAsciiDigit(_src[_pos + 1]))
        {
            isFloat = true;
            _pos++;
            SkipDigits();
        }

        if (_pos < _src.Length && _src[_pos] is 'e' or 'E')
        {
            var save = _pos;
            _pos++;
            if (_pos < _src.Length && _src[_pos] is '+' or '-')
                _pos++;
            if (_pos < _src.Length && char.IsAsciiDigit(_src[_pos]))
            {
                isFloat = true;
                SkipDigits();
            }
            else
            {
                _pos = save;
            }
        }

        var textValue = _src[begin.._pos];
        var clean = textValue.Replace("_", "");
        if (isFloat)
        {
            _tokens.Add(new Token(TokenKind.Float, textValue, line, double.Parse(clean, NumberStyles.Float, CultureInfo.InvariantCulture)));
        }
        else if (long.TryParse(clean, NumberStyles.None, CultureInfo.InvariantCulture, out var l))
        {
            _tokens.Add(new Token(TokenKind.Integer, textValue, line, l));
        }
        else
        {
            throw new TemplateException($"integer literal too large: {textValue}", line);
        }
    }

    private void SkipDigits()
    {
        while (_pos < _src.Length && (char.IsAsciiDigit(_src[_pos]) || (_src[_pos] == '_' && _pos + 1 < _src.Length && char.IsAsciiDigit(_src[_pos + 1]))))
            _pos++;
    }

    private void LexString(char quote)
    {
        var line = _line;
        var sb = new StringBuilder();
        _pos++;
        while (true)
        {
            if (_pos >= _src.Length)
                throw new TemplateException("unexpected end of string literal", line);
            var c = _src[_pos++];
            if (c == quote)
                break;
            if (c == '\n')
                _line++;
            if (c != '\\')
            {
                sb.Append(c);
                continue;
            }

            if (_pos >= _src.Length)
                throw new TemplateException("unexpected end of string literal", line);
            var e = _src[_pos++];
            switch (e)
            {
                case '\n': _line++; break;
                case '\\': sb.Append('\\'); break;
                case '\'': sb.Append('\''); break;
                case '"': sb.Append('"'); break;
                case 'a': sb.Append('\a'); break;
                case 'b': sb.Append('\b'); break;
                case 'f': sb.Append('\f'); break;
                case 'n': sb.Append('\n'); break;
                case 'r': sb.Append('\r'); break;
                case 't': sb.Append('\t'); break;
                case 'v': sb.Append('\v'); break;
                case 'x': AppendCodePoint(sb, ReadHex(2, line)); break;
                case 'u': AppendCodePoint(sb, ReadHex(4, line)); break;
                case 'U': AppendCodePoint(sb, ReadHex(8, line)); break;
                case >= '0' and <= '7':
                {
                    var value = e - '0';
                    for (var k = 0; k < 2 && _pos < _src.Length && _src[_pos] is >= '0' and <= '7'; k++)
                        value = (value * 8) + (_src[_pos++] - '0');
                    AppendCodePoint(sb, value);
                    break;
                }

                default:
                    sb.Append('\\').Append(e);
                    break;
            }
        }

        _tokens.Add(new Token(TokenKind.String, sb.ToString(), line, null));
    }

    private int ReadHex(int count, int line)
    {
        if (_pos + count > _src.Length)
            throw new TemplateException("truncated escape in string literal", line);
        if (!int.TryParse(_src.AsSpan(_pos, count), NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out var v))
            throw new TemplateException("invalid escape in string literal", line);
        _pos += count;
        return v;
    }

    private static void AppendCodePoint(StringBuilder sb, int cp)
    {
        if (cp < 0x10000)
            sb.Append((char)cp);
        else
            sb.Append(char.ConvertFromUtf32(cp));
    }
}
