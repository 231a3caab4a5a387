namespace Enclave.Engine.Tokenization;

/// <summary>
/// Streams text for ids as they are generated. Each <see cref="Append"/> returns only text that can no longer
/// change: output is held back while the decoded tail ends in an incomplete UTF-8 sequence (U+FFFD), so a
/// character split across tokens is never printed half-way. For valid text the concatenation of all returns
/// (including <see cref="Flush"/>) equals <see cref="HfTokenizer.Decode"/> of all ids.
/// </summary>
/// <remarks>
/// Decoding works on a short window: the ids since the last emitted boundary plus one token of context, and the
/// newly printable text is the difference between decoding the window with and without the latest ids. Decoders
/// that treat the first token specially (Strip, Metaspace) do so identically in both, so the difference is exact.
/// Not thread-safe; use one per stream.
/// </remarks>
public sealed class IncrementalDecoder
{
    private readonly HfTokenizer _tokenizer;
    private readonly bool _skipSpecialTokens;
    private readonly List<int> _window = [];
    private readonly List<int> _all = [];
    private string _prefix = "";
    private int _prefixIndex;
    private int _emittedLength;

    internal IncrementalDecoder(HfTokenizer tokenizer, bool skipSpecialTokens)
    {
        _tokenizer = tokenizer;
        _skipSpecialTokens = skipSpecialTokens;
    }

    public string Append(int id)
    {
        if (_tokenizer.CleansUp)
            return AppendWithCleanUp(id);

        _window.Add(id);
        var text = _tokenizer.DecodeRaw(System.Runtime.InteropServices.CollectionsMarshal.AsSpan(_window), _skipSpecialTokens);
        if (text.Length <= _prefix.Length || text[^1] == '\uFFFD' || !text.StartsWith(_prefix, StringComparison.Ordinal))
            return "";

        var fresh = text[_prefix.Length..];
        int newPrefixIndex = _window.Count - _prefixIndex;
        _window.RemoveRange(0, _prefixIndex);
        _prefix = _tokenizer.DecodeRaw(System.Runtime.InteropServices.CollectionsMarshal.AsSpan(_window), _skipSpecialTokens);
        _prefixIndex = newPrefixIndex;
        return fresh;
    }

    /// <summary>Returns whatever is still held back (for example a truncated multi-byte character) and resets.</summary>
    public string Flush()
    {
        string rest;
        if (_tokenizer.CleansUp)
        {
            var full = _tokenizer.Decode(System.Runtime.InteropServices.CollectionsMarshal.AsSpan(_all), _skipSpecialTokens);
            rest = full.Length > _emittedLength ? full[_emittedLength..] : "";
        }
        else
        {
            var text = _tokenizer.DecodeRaw(System.Runtime.InteropServices.CollectionsMarshal.AsSpan(_window), _skipSpecialTokens);
            rest = text.Length > _prefix.Length && text.StartsWith(_prefix, StringComparison.Ordinal) ? text[_prefix.Length..] : "";
        }
        _window.Clear();
        _all.Clear();
        _prefix = "";
        _prefixIndex = 0;
        _emittedLength = 0;
        return rest;
    }

    /// <summary>
    /// With clean-up on, a space may still vanish once the next characters arrive (" ." becomes "."), so the tail
    /// from a space near the end is held back. This path re-decodes everything and is only used by tokenizers that
    /// force the clean-up.
    /// </summary>
    private string AppendWithCleanUp(int id)
    {
        _all.Add(id);
        var full = _tokenizer.Decode(System.Runtime.InteropServices.CollectionsMarshal.AsSpan(_all), _skipSpecialTokens);
        int stable = full.Length;
        if (stable > 0 && full[^1] == '\uFFFD')
            return "";
        int space = full.LastIndexOf(' ');
        if (space >= 0 && space >= full.Length - 4)
            stable = space;
        if (stable <= _emittedLength)
            return "";
        var fresh = full[_emittedLength..stable];
        _emittedLength = stable;
        return fresh;
    }
}
