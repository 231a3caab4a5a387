using System.Buffers;

namespace Enclave.Engine.Tokenization;

internal sealed record AddedToken(int Id, string Content, bool Special, bool SingleWord, bool LStrip, bool RStrip, bool Normalized);

/// <summary>
/// Finds added tokens in text before normalization and pre-tokenization, as tokenizers' AddedVocabulary does:
/// leftmost-longest matching, then single_word / lstrip / rstrip adjustments around each match.
/// </summary>
internal sealed class AddedTokenMatcher
{
    private readonly Dictionary<char, (string Pattern, AddedToken Token)[]> _byFirstChar = [];
    private readonly SearchValues<char> _firstChars;

    public AddedTokenMatcher(IEnumerable<(string Pattern, AddedToken Token)> tokens)
    {
        var groups = new Dictionary<char, List<(string, AddedToken)>>();
        foreach (var (pattern, token) in tokens)
        {
            if (pattern.Length == 0)
                continue;
            if (!groups.TryGetValue(pattern[0], out var list))
                groups[pattern[0]] = list = [];
            list.Add((pattern, token));
        }
        foreach (var (c, list) in groups)
        {
            // Longest first so the first hit at a position is the longest; ties keep declaration order.
            var arr = list.ToArray();
            var order = new int[arr.Length];
            for (int i = 0; i < order.Length; i++)
                order[i] = i;
            Array.Sort(order, (x, y) => arr[y].Item1.Length != arr[x].Item1.Length
                ? arr[y].Item1.Length.CompareTo(arr[x].Item1.Length)
                : x.CompareTo(y));
            var sorted = new (string, AddedToken)[arr.Length];
            for (int i = 0; i < order.Length; i++)
                sorted[i] = arr[order[i]];
            _byFirstChar[c] = sorted;
        }
        var firsts = new char[groups.Count];
        groups.Keys.CopyTo(firsts, 0);
        _firstChars = SearchValues.Create(firsts);
        IsEmpty = groups.Count == 0;
    }

    public bool IsEmpty { get; }

    /// <summary>
    /// Splits <paramref name="text"/> into (start, end, token) runs; token is null for plain text between matches.
    /// </summary>
    public void Split(string text, List<(int Start, int End, AddedToken? Token)> output)
    {
        if (IsEmpty || text.Length == 0)
        {
            output.Add((0, text.Length, null));
            return;
        }
        int startOffset = 0;
        int searchFrom = 0;
        var span = text.AsSpan();
        while (searchFrom < text.Length)
        {
            int rel = span[searchFrom..].IndexOfAny(_firstChars);
            if (rel < 0)
                break;
            int at = searchFrom + rel;
            (string Pattern, AddedToken Token)? hit = null;
            foreach (var candidate in _byFirstChar[text[at]])
            {
                if (span[at..].StartsWith(candidate.Pattern, StringComparison.Ordinal))
                {
                    hit = candidate;
                    break;
                }
            }
            if (hit is null)
            {
                searchFrom = at + 1;
                continue;
            }

            var (pattern, token) = hit.Value;
            int start = at;
            int stop = at + pattern.Length;
            searchFrom = stop;

            if (token.SingleWord)
            {
                bool startSpace = start == 0 || !IsWordChar(text[start - 1]);
                bool stopSpace = stop == text.Length || !IsWordChar(text[stop]);
                if (!startSpace || !stopSpace)
                    continue;
            }
            if (token.LStrip)
            {
                int s = start;
                while (s > 0 && char.IsWhiteSpace(text[s - 1]))
                    s--;
                start = Math.Max(s, startOffset);
            }
            if (token.RStrip)
            {
                while (stop < text.Length && char.IsWhiteSpace(text[stop]))
                    stop++;
            }
            if (startOffset < start)
                output.Add((startOffset, start, null));
            output.Add((start, stop, token));
            startOffset = stop;
        }
        if (startOffset < text.Length)
            output.Add((startOffset, text.Length, null));
    }

    private static bool IsWordChar(char c) =>
        char.IsLetterOrDigit(c) || c == '_' || char.GetUnicodeCategory(c) is System.Globalization.UnicodeCategory.NonSpacingMark
            or System.Globalization.UnicodeCategory.SpacingCombiningMark or System.Globalization.UnicodeCategory.ConnectorPunctuation
            or System.Globalization.UnicodeCategory.LetterNumber or System.Globalization.UnicodeCategory.OtherNumber
            or System.Globalization.UnicodeCategory.EnclosingMark;
}
