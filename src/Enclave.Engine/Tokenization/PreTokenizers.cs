using System.Text;

namespace Enclave.Engine.Tokenization;

/// <summary>
/// A slice of text on its way to the model. <see cref="AtOrigin"/> is true when the slice begins at offset 0 of
/// the original input, which Metaspace's "first" prepend scheme depends on.
/// </summary>
internal readonly record struct Piece(string Text, int Start, int Length, bool AtOrigin)
{
    public ReadOnlySpan<char> Span => Text.AsSpan(Start, Length);

    public static Piece Of(string text, bool atOrigin) => new(text, 0, text.Length, atOrigin);
}

internal enum SplitBehavior { Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous }

/// <summary>Splits pieces further (tokenizer.json "pre_tokenizer").</summary>
internal abstract class PreTokenizer
{
    [ThreadStatic] private static List<(int, int)>? t_matches;
    [ThreadStatic] private static List<(int, int, bool)>? t_segments;

    /// <summary>Per-thread scratch lists, so one tokenizer can be used from many threads without locking.</summary>
    protected static List<(int, int)> MatchScratch => t_matches ??= [];

    protected static List<(int, int, bool)> SegmentScratch => t_segments ??= [];

    public abstract void Apply(List<Piece> input, List<Piece> output);

    /// <summary>
    /// Cuts <paramref name="piece"/> at the given matches according to <paramref name="behavior"/>, the way
    /// tokenizers' <c>NormalizedString::split</c> does, appending the non-empty results.
    /// </summary>
    protected static void SplitByMatches(Piece piece, List<(int Start, int End)> matches, SplitBehavior behavior, bool invert,
        List<Piece> output, List<(int Start, int End, bool IsMatch)> scratch)
    {
        scratch.Clear();
        int prev = 0;
        foreach (var (s, e) in matches)
        {
            if (prev != s)
                scratch.Add((prev, s, invert));
            scratch.Add((s, e, !invert));
            prev = e;
        }
        if (prev != piece.Length)
            scratch.Add((prev, piece.Length, invert));

        switch (behavior)
        {
            case SplitBehavior.Removed:
                foreach (var (s, e, m) in scratch)
                {
                    if (!m)
                        Emit(piece, s, e, output);
                }
                break;
            case SplitBehavior.Isolated:
                foreach (var (s, e, _) in scratch)
                    Emit(piece, s, e, output);
                break;
            case SplitBehavior.MergedWithPrevious:
            {
                int curStart = -1, curEnd = -1;
                bool previousMatch = false;
                foreach (var (s, e, m) in scratch)
                {
                    if (m && !previousMatch && curStart >= 0)
                    {
                        curEnd = e;
                    }
                    else
                    {
                        if (curStart >= 0)
                            Emit(piece, curStart, curEnd, output);
                        curStart = s;
                        curEnd = e;
                    }
                    previousMatch = m;
                }
                if (curStart >= 0)
                    Emit(piece, curStart, curEnd, output);
                break;
            }
            case SplitBehavior.MergedWithNext:
            {
                var reversed = new List<(int Start, int End)>();
                bool previousMatch = false;
                for (int i = scratch.Count - 1; i >= 0; i--)
                {
                    var (s, e, m) = scratch[i];
                    if (m && !previousMatch && reversed.Count > 0)
                        reversed[^1] = (s, reversed[^1].End);
                    else
                        reversed.Add((s, e));
                    previousMatch = m;
                }
                for (int i = reversed.Count - 1; i >= 0; i--)
                    Emit(piece, reversed[i].Start, reversed[i].End, output);
                break;
            }
            case SplitBehavior.Contiguous:
            {
                int curStart = -1, curEnd = -1;
                bool previousMatch = false;
                foreach (var (s, e, m) in scratch)
                {
                    if (m == previousMatch && curStart >= 0)
                    {
                        curEnd = e;
                    }
                    else
                    {
                        if (curStart >= 0)
                            Emit(piece, curStart, curEnd, output);
                        curStart = s;
                        curEnd = e;
                    }
                    previousMatch = m;
                }
                if (curStart >= 0)
                    Emit(piece, curStart, curEnd, output);
                break;
            }
        }
    }

    private static void Emit(Piece piece, int start, int end, List<Piece> output)
    {
        if (end > start)
            output.Add(new Piece(piece.Text, piece.Start + start, end - start, piece.AtOrigin && start == 0));
    }
}

/// <summary>tokenizers' "Split": a regex or literal pattern with a split behavior, optionally inverted.</summary>
internal sealed class SplitPreTokenizer(UnicodeRegex? regex, string? literal, SplitBehavior behavior, bool invert) : PreTokenizer
{
    public override void Apply(List<Piece> input, List<Piece> output)
    {
        var matches = MatchScratch;
        foreach (var piece in input)
        {
            matches.Clear();
            FindMatches(piece.Span, matches);
            SplitByMatches(piece, matches, behavior, invert, output, SegmentScratch);
        }
    }

    private void FindMatches(ReadOnlySpan<char> text, List<(int, int)> matches)
    {
        if (regex is not null)
        {
            regex.Matches(text, matches);
            return;
        }
        if (string.IsNullOrEmpty(literal))
            return;
        int at = 0;
        while (at <= text.Length - literal.Length)
        {
            int i = text[at..].IndexOf(literal, StringComparison.Ordinal);
            if (i < 0)
                break;
            matches.Add((at + i, at + i + literal.Length));
            at += i + literal.Length;
        }
    }
}

/// <summary>
/// GPT-2 style byte-level pre-tokenization: optional leading space, optional split with the GPT-2 regex, then the
/// mapping of UTF-8 bytes to the byte-level alphabet. When it is the last pre-tokenizer the mapping is deferred to
/// the model, so pieces stay slices of the input and the BPE cache is keyed by raw text.
/// </summary>
internal sealed class ByteLevelPreTokenizer(bool addPrefixSpace, bool useRegex) : PreTokenizer
{
    public const string Gpt2Pattern = @"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

    private static readonly UnicodeRegex Gpt2Regex = new(Gpt2Pattern, "ByteLevel pre-tokenizer");

    public bool DeferMapping { get; set; }

    public override void Apply(List<Piece> input, List<Piece> output)
    {
        int first = output.Count;
        var matches = MatchScratch;
        foreach (var original in input)
        {
            var piece = original;
            if (addPrefixSpace && piece.Length > 0 && piece.Span[0] != ' ')
                piece = Piece.Of(" " + piece.Span.ToString(), piece.AtOrigin);
            if (!useRegex)
            {
                if (piece.Length > 0)
                    output.Add(piece);
                continue;
            }
            matches.Clear();
            Gpt2Regex.Matches(piece.Span, matches);
            SplitByMatches(piece, matches, SplitBehavior.Isolated, false, output, SegmentScratch);
        }
        if (DeferMapping)
            return;
        var buffer = new ValueBuffer<char>(stackalloc char[256]);
        for (int i = first; i < output.Count; i++)
        {
            buffer.Clear();
            ByteLevelAlphabet.Encode(output[i].Span, ref buffer);
            output[i] = Piece.Of(buffer.Span.ToString(), output[i].AtOrigin);
        }
        buffer.Dispose();
    }
}

internal enum PrependScheme { Always, First, Never }

/// <summary>SentencePiece-style spaces: ' ' becomes the replacement (▁), a prefix ▁ is added per scheme, optional split.</summary>
internal sealed class MetaspacePreTokenizer(char replacement, PrependScheme scheme, bool split) : PreTokenizer
{
    public override void Apply(List<Piece> input, List<Piece> output)
    {
        foreach (var piece in input)
        {
            if (piece.Length == 0)
                continue;
            var span = piece.Span;
            bool prepend = scheme switch
            {
                PrependScheme.Always => span[0] != replacement && span[0] != ' ',
                PrependScheme.First => span[0] != replacement && span[0] != ' ' && piece.AtOrigin,
                _ => false,
            };
            var chars = new char[span.Length + (prepend ? 1 : 0)];
            int k = 0;
            if (prepend)
                chars[k++] = replacement;
            foreach (char c in span)
                chars[k++] = c == ' ' ? replacement : c;
            var replaced = Piece.Of(new string(chars), piece.AtOrigin);
            if (!split)
            {
                output.Add(replaced);
                continue;
            }
            var matches = MatchScratch;
            matches.Clear();
            var text = replaced.Span;
            for (int i = 0; i < text.Length; i++)
            {
                if (text[i] == replacement)
                    matches.Add((i, i + 1));
            }
            SplitByMatches(replaced, matches, SplitBehavior.MergedWithNext, false, output, SegmentScratch);
        }
    }
}

/// <summary>Splits on whitespace and drops it.</summary>
internal sealed class WhitespaceSplitPreTokenizer : PreTokenizer
{
    public override void Apply(List<Piece> input, List<Piece> output)
    {
        foreach (var piece in input)
        {
            var span = piece.Span;
            int i = 0;
            while (i < span.Length)
            {
                while (i < span.Length && char.IsWhiteSpace(span[i]))
                    i++;
                int start = i;
                while (i < span.Length && !char.IsWhiteSpace(span[i]))
                    i++;
                if (i > start)
                    output.Add(new Piece(piece.Text, piece.Start + start, i - start, piece.AtOrigin && start == 0));
            }
        }
    }
}

/// <summary>Runs pre-tokenizers in order.</summary>
internal sealed class SequencePreTokenizer(PreTokenizer[] steps) : PreTokenizer
{
    public IReadOnlyList<PreTokenizer> Steps => steps;

    public override void Apply(List<Piece> input, List<Piece> output)
    {
        var current = new List<Piece>(input);
        var next = new List<Piece>();
        foreach (var step in steps)
        {
            next.Clear();
            step.Apply(current, next);
            (current, next) = (next, current);
        }
        output.AddRange(current);
    }
}

/// <summary>BERT's pre-tokenizer: split on whitespace (removed), then isolate every punctuation character.</summary>
internal sealed class BertPreTokenizer : PreTokenizer
{
    public override void Apply(List<Piece> input, List<Piece> output)
    {
        foreach (var piece in input)
        {
            var span = piece.Span;
            var wordStart = -1;
            for (var i = 0; i < span.Length;)
            {
                Rune.DecodeFromUtf16(span[i..], out var rune, out var length);
                if (Rune.IsWhiteSpace(rune) || IsPunctuation(rune))
                {
                    if (wordStart >= 0)
                        output.Add(new Piece(piece.Text, piece.Start + wordStart, i - wordStart, piece.AtOrigin && wordStart == 0));
                    wordStart = -1;
                    if (!Rune.IsWhiteSpace(rune))
                        output.Add(new Piece(piece.Text, piece.Start + i, length, piece.AtOrigin && i == 0));
                }
                else if (wordStart < 0)
                {
                    wordStart = i;
                }

                i += length;
            }

            if (wordStart >= 0)
                output.Add(new Piece(piece.Text, piece.Start + wordStart, span.Length - wordStart, piece.AtOrigin && wordStart == 0));
        }
    }

    /// <summary>ASCII punctuation (symbols such as $ + &lt; = &gt; ^ ` | ~ included) or any Unicode P* category.</summary>
    private static bool IsPunctuation(Rune rune)
    {
        var c = rune.Value;
        if (c is (>= 33 and <= 47) or (>= 58 and <= 64) or (>= 91 and <= 96) or (>= 123 and <= 126))
            return true;
        return Rune.GetUnicodeCategory(rune) is System.Globalization.UnicodeCategory.ConnectorPunctuation
            or System.Globalization.UnicodeCategory.DashPunctuation
            or System.Globalization.UnicodeCategory.OpenPunctuation
            or System.Globalization.UnicodeCategory.ClosePunctuation
            or System.Globalization.UnicodeCategory.InitialQuotePunctuation
            or System.Globalization.UnicodeCategory.FinalQuotePunctuation
            or System.Globalization.UnicodeCategory.OtherPunctuation;
    }
}
