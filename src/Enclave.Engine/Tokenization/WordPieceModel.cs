namespace Enclave.Engine.Tokenization;

/// <summary>
/// WordPiece as Hugging Face tokenizers implements it (BERT): greedy longest-match-first from the start of the word,
/// later pieces looked up with the continuing-subword prefix ("##"); a word with any unmatched remainder, or longer
/// than max_input_chars_per_word characters, becomes the single unknown token.
/// </summary>
internal sealed class WordPieceModel : ITokenModel
{
    private readonly Dictionary<string, int>.AlternateLookup<ReadOnlySpan<char>> _lookup;
    private readonly Dictionary<string, int> _vocab;
    private readonly string?[] _idToToken;
    private readonly int _unkId;
    private readonly string _prefix;
    private readonly int _maxInputCharsPerWord;

    public WordPieceModel(Dictionary<string, int> vocab, string unkToken, string prefix, int maxInputCharsPerWord, string source)
    {
        _vocab = vocab;
        _lookup = vocab.GetAlternateLookup<ReadOnlySpan<char>>();
        if (!vocab.TryGetValue(unkToken, out _unkId))
            throw new InvalidDataException($"{source}: WordPiece unk_token '{unkToken}' is not in the vocabulary.");
        _prefix = prefix;
        _maxInputCharsPerWord = maxInputCharsPerWord;
        MaxId = vocab.Count == 0 ? -1 : vocab.Values.Max();
        _idToToken = new string?[MaxId + 1];
        foreach (var (token, id) in vocab)
        {
            if (id >= 0)
                _idToToken[id] = token;
        }
    }

    public int MaxId { get; }

    public int? TokenToId(string token) => _vocab.TryGetValue(token, out var id) ? id : null;

    public string? IdToToken(int id) => (uint)id < (uint)_idToToken.Length ? _idToToken[id] : null;

    public void Tokenize(ReadOnlySpan<char> word, List<int> output)
    {
        if (word.IsEmpty)
            return;
        var characters = 0;
        foreach (var _ in word.EnumerateRunes())
            characters++;
        if (characters > _maxInputCharsPerWord)
        {
            output.Add(_unkId);
            return;
        }

        var mark = output.Count;
        Span<char> buffer = word.Length + _prefix.Length <= 256 ? stackalloc char[256] : new char[word.Length + _prefix.Length];
        _prefix.AsSpan().CopyTo(buffer);
        var start = 0;
        while (start < word.Length)
        {
            var end = word.Length;
            var found = -1;
            while (start < end)
            {
                var piece = word[start..end];
                int id;
                bool known;
                if (start > 0)
                {
                    piece.CopyTo(buffer[_prefix.Length..]);
                    known = _lookup.TryGetValue(buffer[..(_prefix.Length + piece.Length)], out id);
                }
                else
                {
                    known = _lookup.TryGetValue(piece, out id);
                }

                if (known)
                {
                    found = id;
                    break;
                }

                // Step back one character (a surrogate pair is one character).
                end -= end >= 2 && char.IsLowSurrogate(word[end - 1]) && char.IsHighSurrogate(word[end - 2]) ? 2 : 1;
            }

            if (found < 0)
            {
                output.RemoveRange(mark, output.Count - mark);
                output.Add(_unkId);
                return;
            }

            output.Add(found);
            start = end;
        }
    }
}
