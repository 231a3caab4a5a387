namespace Enclave.Engine.Tokenization;

/// <summary>
/// SentencePiece Unigram as Hugging Face tokenizers implements it: the Viterbi path of highest total log-probability
/// over the pieces that match at each character, where a character no piece starts with costs the lowest piece
/// score minus 10 as the unknown token; consecutive unknown characters are fused into one unknown token, or spelled
/// as &lt;0xNN&gt; byte tokens when byte_fallback is set. Ties keep the shorter piece, as the library's trie order does.
/// </summary>
internal sealed class UnigramModel : ITokenModel
{
    private const double UnknownPenalty = 10.0;

    private readonly Dictionary<string, int> _vocab;
    private readonly Dictionary<string, int>.AlternateLookup<ReadOnlySpan<char>> _lookup;
    private readonly string[] _pieces;
    private readonly double[] _scores;
    private readonly int _unkId;
    private readonly bool _byteFallback;
    private readonly double _unknownScore;
    private readonly int _maxPieceLength;
    private readonly int[] _byteIds = new int[256];

    public UnigramModel(IReadOnlyList<(string Piece, double Score)> vocab, int? unkId, bool byteFallback, string source)
    {
        _vocab = new Dictionary<string, int>(StringComparer.Ordinal);
        _pieces = new string[vocab.Count];
        _scores = new double[vocab.Count];
        var minScore = double.PositiveInfinity;
        for (var i = 0; i < vocab.Count; i++)
        {
            var (piece, score) = vocab[i];
            _pieces[i] = piece;
            _scores[i] = score;
            _vocab[piece] = i;
            minScore = Math.Min(minScore, score);
            _maxPieceLength = Math.Max(_maxPieceLength, piece.Length);
        }

        if (unkId is not int unk || (uint)unk >= (uint)vocab.Count)
            throw new InvalidDataException($"{source}: Unigram model needs an unk_id inside its vocabulary of {vocab.Count} pieces.");
        _unkId = unk;
        _lookup = _vocab.GetAlternateLookup<ReadOnlySpan<char>>();
        _byteFallback = byteFallback;
        _unknownScore = minScore - UnknownPenalty;
        for (var b = 0; b < 256; b++)
            _byteIds[b] = _vocab.TryGetValue($"<0x{b:X2}>", out var id) ? id : -1;
    }

    public int MaxId => _pieces.Length - 1;

    public int? TokenToId(string token) => _vocab.TryGetValue(token, out var id) ? id : null;

    public string? IdToToken(int id) => (uint)id < (uint)_pieces.Length ? _pieces[id] : null;

    public void Tokenize(ReadOnlySpan<char> word, List<int> output)
    {
        var n = word.Length;
        if (n == 0)
            return;

        // Best path ending at each offset: its score, where its last piece starts (-1: unreached) and that piece's id.
        var score = new double[n + 1];
        var from = new int[n + 1];
        var ids = new int[n + 1];
        Array.Fill(from, -1);
        for (var start = 0; start < n; start += CharLength(word, start))
        {
            var here = score[start];
            var single = CharLength(word, start);
            var hasSingle = false;
            var longest = Math.Min(_maxPieceLength, n - start);
            for (var length = 1; length <= longest; length++)
            {
                if (!_lookup.TryGetValue(word.Slice(start, length), out var id))
                    continue;
                var end = start + length;
                var candidate = here + _scores[id];
                if (from[end] < 0 || candidate > score[end])
                {
                    score[end] = candidate;
                    from[end] = start;
                    ids[end] = id;
                }

                hasSingle |= length == single;
            }

            if (!hasSingle)
            {
                var end = start + single;
                var candidate = here + _unknownScore;
                if (from[end] < 0 || candidate > score[end])
                {
                    score[end] = candidate;
                    from[end] = start;
                    ids[end] = _unkId;
                }
            }
        }

        // Walk back from the end, then emit in order, fusing runs of unknown pieces.
        var path = new List<(int Start, int End, int Id)>();
        for (var end = n; end > 0; end = from[end])
            path.Add((from[end], end, ids[end]));
        path.Reverse();
        for (var i = 0; i < path.Count; i++)
        {
            var (start, end, id) = path[i];
            if (id != _unkId)
            {
                output.Add(id);
                continue;
            }

            while (i + 1 < path.Count && path[i + 1].Id == _unkId)
                end = path[++i].End;
            EmitUnknown(word[start..end], output);
        }
    }

    private void EmitUnknown(ReadOnlySpan<char> text, List<int> output)
    {
        // A fused run that happens to be a piece keeps that piece's id, as the library looks the string up again.
        if (_lookup.TryGetValue(text, out var known))
        {
            output.Add(known);
            return;
        }

        if (_byteFallback)
        {
            var bytes = System.Text.Encoding.UTF8.GetBytes(text.ToArray());
            var all = true;
            foreach (var b in bytes)
                all &= _byteIds[b] >= 0;
            if (all)
            {
                foreach (var b in bytes)
                    output.Add(_byteIds[b]);
                return;
            }
        }

        output.Add(_unkId);
    }

    private static int CharLength(ReadOnlySpan<char> text, int index) =>
        index + 1 < text.Length && char.IsHighSurrogate(text[index]) && char.IsLowSurrogate(text[index + 1]) ? 2 : 1;
}
