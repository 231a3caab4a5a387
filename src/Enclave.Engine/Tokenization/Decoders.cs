using System.Text;

namespace Enclave.Engine.Tokenization;

/// <summary>Turns token strings back into text (tokenizer.json "decoder"); each step maps a token list to a token list.</summary>
internal abstract class Decoder
{
    public abstract void DecodeChain(List<string> tokens);

    public string Decode(List<string> tokens)
    {
        DecodeChain(tokens);
        return tokens.Count == 1 ? tokens[0] : string.Concat(tokens);
    }
}

/// <summary>Maps byte-level alphabet characters back to bytes and reads them as UTF-8 (invalid bytes become U+FFFD).</summary>
internal sealed class ByteLevelDecoder : Decoder
{
    public override void DecodeChain(List<string> tokens)
    {
        var bytes = new List<byte>();
        foreach (var token in tokens)
        {
            bool all = true;
            foreach (char c in token)
            {
                if (ByteLevelAlphabet.CharToByte(c) < 0)
                {
                    all = false;
                    break;
                }
            }
            if (all)
            {
                foreach (char c in token)
                    bytes.Add((byte)ByteLevelAlphabet.CharToByte(c));
            }
            else
            {
                bytes.AddRange(Encoding.UTF8.GetBytes(token));
            }
        }
        tokens.Clear();
        tokens.Add(Encoding.UTF8.GetString(System.Runtime.InteropServices.CollectionsMarshal.AsSpan(bytes)));
    }
}

internal sealed class ReplaceDecoder(string? literal, UnicodeRegex? regex, string content) : Decoder
{
    public override void DecodeChain(List<string> tokens)
    {
        for (int i = 0; i < tokens.Count; i++)
            tokens[i] = Replacer.Apply(tokens[i], literal, regex, content);
    }
}

/// <summary>Collects runs of &lt;0xNN&gt; tokens into bytes; an invalid run becomes one U+FFFD per byte.</summary>
internal sealed class ByteFallbackDecoder : Decoder
{
    public override void DecodeChain(List<string> tokens)
    {
        var result = new List<string>(tokens.Count);
        var pending = new List<byte>();
        foreach (var token in tokens)
        {
            if (TryParseByte(token, out byte b))
            {
                pending.Add(b);
                continue;
            }
            Flush(pending, result);
            result.Add(token);
        }
        Flush(pending, result);
        tokens.Clear();
        tokens.AddRange(result);
    }

    private static readonly UTF8Encoding Strict = new(false, true);

    private static void Flush(List<byte> pending, List<string> result)
    {
        if (pending.Count == 0)
            return;
        try
        {
            result.Add(Strict.GetString(System.Runtime.InteropServices.CollectionsMarshal.AsSpan(pending)));
        }
        catch (DecoderFallbackException)
        {
            result.Add(new string('\uFFFD', pending.Count));
        }
        pending.Clear();
    }

    internal static bool TryParseByte(string token, out byte value)
    {
        value = 0;
        if (token.Length != 6 || !token.StartsWith("<0x", StringComparison.Ordinal) || token[5] != '>')
            return false;
        return byte.TryParse(token.AsSpan(3, 2), System.Globalization.NumberStyles.AllowHexSpecifier, null, out value);
    }
}

internal sealed class FuseDecoder : Decoder
{
    public override void DecodeChain(List<string> tokens)
    {
        var joined = string.Concat(tokens);
        tokens.Clear();
        tokens.Add(joined);
    }
}

/// <summary>Removes up to <c>start</c> leading and <c>stop</c> trailing occurrences of a character from each token.</summary>
internal sealed class StripDecoder(char content, int start, int stop) : Decoder
{
    public override void DecodeChain(List<string> tokens)
    {
        for (int t = 0; t < tokens.Count; t++)
        {
            var token = tokens[t];
            int from = 0;
            while (from < start && from < token.Length && token[from] == content)
                from++;
            int to = token.Length;
            int cut = 0;
            while (cut < stop && to > from && token[to - 1] == content)
            {
                to--;
                cut++;
            }
            if (from != 0 || to != token.Length)
                tokens[t] = token[from..to];
        }
    }
}

/// <summary>Metaspace decoding: ▁ becomes a space, and in the first token (when a prefix was added) it is dropped.</summary>
internal sealed class MetaspaceDecoder(char replacement, bool prependsPrefix) : Decoder
{
    public override void DecodeChain(List<string> tokens)
    {
        for (int t = 0; t < tokens.Count; t++)
        {
            var token = tokens[t];
            if (token.IndexOf(replacement) < 0)
                continue;
            tokens[t] = t == 0 && prependsPrefix
                ? token.Replace(replacement.ToString(), "", StringComparison.Ordinal)
                : token.Replace(replacement, ' ');
        }
    }
}

internal sealed class SequenceDecoder(Decoder[] decoders) : Decoder
{
    public override void DecodeChain(List<string> tokens)
    {
        foreach (var d in decoders)
            d.DecodeChain(tokens);
    }
}

/// <summary>WordPiece decoding: "##" pieces join the previous token, others get a space; optional BERT clean-up.</summary>
internal sealed class WordPieceDecoder(string prefix, bool cleanup) : Decoder
{
    public override void DecodeChain(List<string> tokens)
    {
        for (int i = 0; i < tokens.Count; i++)
        {
            var token = tokens[i];
            if (i != 0)
                token = token.StartsWith(prefix, StringComparison.Ordinal) ? token[prefix.Length..] : " " + token;
            if (cleanup)
                token = HfTokenizer.CleanUp(token).Replace(" do not", " don't", StringComparison.Ordinal);
            tokens[i] = token;
        }
    }
}
