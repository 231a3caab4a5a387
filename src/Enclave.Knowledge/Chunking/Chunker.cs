using System.Text;
using Enclave.Knowledge.Extraction;

namespace Enclave.Knowledge.Chunking;

/// <summary>A chunk before it is stored: its span in the document text, page, heading path and token count.</summary>
public sealed record ChunkDraft(string Text, int CharStart, int CharEnd, int? Page, string HeadingPath, int Tokens);

/// <summary>The document's cleaned text and its chunks; chunk spans index into <see cref="Text"/>.</summary>
public sealed record ChunkedDocument(string Text, IReadOnlyList<ChunkDraft> Chunks, int DuplicatesRemoved);

/// <summary>
/// Structure-aware chunking. The document text is its blocks joined by blank lines. Units are whole blocks
/// (a paragraph, list item or table row) when they fit the budget, else their sentences, else token-bounded pieces
/// of an overlong sentence. Units are packed greedily into chunks of at most <c>maxTokens</c>; a heading starts a new
/// chunk, so every chunk lies under one heading path. A chunk that continues a section starts with the last units of
/// the previous one, up to <c>overlapTokens</c>. Chunks with the same text as an earlier chunk are dropped.
/// </summary>
public sealed class Chunker(ITokenCounter tokens, int maxTokens, int overlapTokens)
{
    private readonly int maxTokens = maxTokens >= 16 ? maxTokens : throw new ArgumentOutOfRangeException(nameof(maxTokens), "chunk size must be at least 16 tokens");
    private readonly int overlapTokens = Math.Clamp(overlapTokens, 0, maxTokens / 2);

    private sealed record Unit(int Start, int End, int? Page, int Tokens);

    public ChunkedDocument Chunk(IReadOnlyList<TextBlock> blocks)
    {
        var text = new StringBuilder();
        var sections = new List<(string Path, List<Unit> Units)>();
        var headings = new List<(int Level, string Text)>();
        List<Unit>? units = null;
        foreach (var block in blocks)
        {
            if (text.Length > 0)
            {
                text.Append("\n\n");
            }

            var start = text.Length;
            text.Append(block.Text);
            if (block.Kind == BlockKind.Heading)
            {
                headings.RemoveAll(h => h.Level >= block.Level);
                headings.Add((block.Level, block.Text));
                units = null;
                continue;
            }

            if (units is null)
            {
                units = [];
                sections.Add((string.Join(" > ", headings.Select(h => h.Text)), units));
            }

            AddUnits(units, block.Text, start, block.Page);
        }

        var full = text.ToString();
        var drafts = new List<ChunkDraft>();
        var seen = new HashSet<string>(StringComparer.Ordinal);
        var duplicates = 0;
        foreach (var (path, sectionUnits) in sections)
        {
            foreach (var (first, last) in Pack(sectionUnits))
            {
                var s = sectionUnits[first].Start;
                var e = sectionUnits[last].End;
                var chunkText = full[s..e];
                if (!seen.Add(Normalised(chunkText)))
                {
                    duplicates++;
                    continue;
                }

                drafts.Add(new ChunkDraft(chunkText, s, e, sectionUnits[first].Page ?? sectionUnits.Skip(first).Take(last - first + 1).FirstOrDefault(u => u.Page is not null)?.Page, path, tokens.Count(chunkText)));
            }
        }

        return new ChunkedDocument(full, drafts, duplicates);
    }

    private static string Normalised(string s) => string.Concat(s.Where(c => !char.IsWhiteSpace(c))).ToLowerInvariant();

    private void AddUnits(List<Unit> units, string blockText, int offset, int? page)
    {
        var whole = tokens.Count(blockText);
        if (whole <= maxTokens)
        {
            units.Add(new Unit(offset, offset + blockText.Length, page, whole));
            return;
        }

        foreach (var (start, length) in SentenceSplitter.Split(blockText))
        {
            var sentence = blockText.Substring(start, length);
            var count = tokens.Count(sentence);
            if (count <= maxTokens)
            {
                units.Add(new Unit(offset + start, offset + start + length, page, count));
                continue;
            }

            // An overlong sentence (a run-on table cell, a URL list): cut into pieces that fit, by characters.
            var pieceStart = 0;
            while (pieceStart < length)
            {
                var lo = pieceStart + 1;
                var hi = length;
                while (lo < hi)
                {
                    var mid = (lo + hi + 1) / 2;
                    if (tokens.Count(sentence[pieceStart..mid]) <= maxTokens)
                    {
                        lo = mid;
                    }
                    else
                    {
                        hi = mid - 1;
                    }
                }

                if (char.IsHighSurrogate(sentence[lo - 1]) && lo < length && lo - 1 > pieceStart)
                {
                    lo--;
                }

                units.Add(new Unit(offset + start + pieceStart, offset + start + lo, page, tokens.Count(sentence[pieceStart..lo])));
                pieceStart = lo;
            }
        }
    }

    /// <summary>Greedy packing into [first, last] unit ranges, with overlap carried from the previous range.</summary>
    private List<(int First, int Last)> Pack(List<Unit> units)
    {
        var ranges = new List<(int, int)>();
        var first = 0;
        while (first < units.Count)
        {
            var last = first;
            var total = units[first].Tokens;
            while (last + 1 < units.Count && total + units[last + 1].Tokens <= maxTokens)
            {
                last++;
                total += units[last].Tokens;
            }

            ranges.Add((first, last));
            if (last + 1 >= units.Count)
            {
                break;
            }

            // Start the next chunk with trailing units of this one that fit the overlap, but always make progress.
            var next = last + 1;
            var carried = 0;
            while (next - 1 > first && carried + units[next - 1].Tokens <= overlapTokens
                   && carried + units[next - 1].Tokens + units[last + 1].Tokens <= maxTokens)
            {
                next--;
                carried += units[next].Tokens;
            }

            first = next;
        }

        return ranges;
    }
}
