namespace Enclave.Knowledge.Chunking;

/// <summary>
/// Splits text into sentences, returning (start, length) spans. Chinese sentence ends (。！？；… and their
/// full-width forms) end a sentence wherever they stand; English ". ! ?" only when followed by whitespace or the
/// end, so "3.14", "e.g.x" and "v1.2" stay whole. Closing quotes and brackets stay with the sentence they close.
/// Line breaks inside a paragraph also end a sentence.
/// </summary>
public static class SentenceSplitter
{
    private static bool IsCjkEnd(char c) => c is '。' or '！' or '？' or '；' or '…' or '｡';

    private static bool IsLatinEnd(char c) => c is '.' or '!' or '?' or ';';

    private static bool IsCloser(char c) => c is '"' or '\'' or '”' or '’' or '」' or '』' or '）' or ')' or '】' or '》' or ']';

    public static List<(int Start, int Length)> Split(string text)
    {
        var spans = new List<(int, int)>();
        var start = 0;
        var i = 0;
        while (i < text.Length)
        {
            var c = text[i];
            var end = -1;
            if (c == '\n')
            {
                end = i;
            }
            else if (IsCjkEnd(c))
            {
                var j = i + 1;
                while (j < text.Length && (IsCjkEnd(text[j]) || IsCloser(text[j])))
                {
                    j++;
                }

                end = j;
            }
            else if (IsLatinEnd(c))
            {
                var j = i + 1;
                while (j < text.Length && (IsLatinEnd(text[j]) || IsCloser(text[j])))
                {
                    j++;
                }

                if (j == text.Length || char.IsWhiteSpace(text[j]))
                {
                    end = j;
                }
            }

            if (end >= 0)
            {
                Add(spans, text, start, end);
                start = end;
                i = Math.Max(end, i + 1);
                continue;
            }

            i++;
        }

        Add(spans, text, start, text.Length);
        return spans;
    }

    private static void Add(List<(int, int)> spans, string text, int start, int end)
    {
        while (start < end && char.IsWhiteSpace(text[start]))
        {
            start++;
        }

        while (end > start && char.IsWhiteSpace(text[end - 1]))
        {
            end--;
        }

        if (end > start)
        {
            spans.Add((start, end - start));
        }
    }
}
