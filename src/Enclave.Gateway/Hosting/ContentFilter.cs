using System.Text;

namespace Enclave.Gateway.Hosting;

/// <summary>Admin-managed banned phrases (zh/en, case-insensitive) applied to prompts and responses.</summary>
public sealed class ContentFilter
{
    private readonly string[] _phrases;

    public ContentFilter(IEnumerable<string> phrases)
    {
        _phrases = [.. phrases.Where(p => !string.IsNullOrWhiteSpace(p)).Select(p => p.Trim()).Distinct(StringComparer.OrdinalIgnoreCase)];
        MaxLength = _phrases.Length == 0 ? 0 : _phrases.Max(p => p.Length);
    }

    public bool IsEmpty => _phrases.Length == 0;

    public int MaxLength { get; }

    public string? FindIn(string text)
    {
        foreach (var p in _phrases)
        {
            if (text.Contains(p, StringComparison.OrdinalIgnoreCase))
            {
                return p;
            }
        }

        return null;
    }

    public StreamingScanner CreateScanner() => new(this);

    /// <summary>
    /// Scans text that arrives in pieces. Only the last <c>MaxLength - 1</c> characters are kept, so
    /// a phrase split across chunks is still found and at most that much output is held back.
    /// </summary>
    public sealed class StreamingScanner(ContentFilter filter)
    {
        private readonly StringBuilder _tail = new();

        /// <summary>Characters seen so far.</summary>
        public long Total { get; private set; }

        /// <summary>Text before this offset can no longer be part of a banned phrase and may be released.</summary>
        public long SafeLength => Math.Max(0, Total - Math.Max(0, filter.MaxLength - 1));

        /// <summary>Returns the banned phrase completed by <paramref name="chunk"/>, if any.</summary>
        public string? Append(string chunk)
        {
            _tail.Append(chunk);
            Total += chunk.Length;
            var hit = filter.FindIn(_tail.ToString());
            var keep = Math.Max(0, filter.MaxLength - 1);
            if (_tail.Length > keep)
            {
                _tail.Remove(0, _tail.Length - keep);
            }

            return hit;
        }
    }
}
