using System.Collections.Concurrent;
using System.Text;

namespace Enclave.Engine.Tokenization;

/// <summary>
/// Byte-pair encoding over one pre-token ("word") with the semantics of Hugging Face tokenizers' BPE model:
/// lowest merge rank first, leftmost on ties; optional <c>ignore_merges</c>, byte fallback to <c>&lt;0xNN&gt;</c>
/// tokens, unknown-token fusing and subword prefix/suffix. Results are cached per word.
/// </summary>
internal sealed class BpeModel : ITokenModel
{
    private const int MaxCachedWordLength = 256;
    private const int MaxCacheEntries = 200_000;
    private const char Metaspace = '\u2581';

    private readonly Dictionary<string, int> _vocab;
    private readonly Dictionary<string, int>.AlternateLookup<ReadOnlySpan<char>> _vocabLookup;
    private readonly PairTable _mergeRanks;
    private int _cacheCount;
    /// <summary>
    /// True when no merge can join a symbol ending before a ▁ that follows a non-▁ character with anything
    /// from that ▁ on: ▁ is a token, no token holds "x▁" (x not ▁) and there is no subword prefix/suffix or
    /// ignore_merges. Then a long SentencePiece-style word can be encoded piecewise (and cached) at those
    /// boundaries with exactly the same result.
    /// </summary>
    private readonly bool _metaspaceBoundariesSafe;

    internal bool MetaspaceBoundariesSafe => _metaspaceBoundariesSafe;

    /// <summary>Lets tests compare piecewise encoding of long words with encoding them whole.</summary>
    internal bool SplitLongWords { get; set; } = true;
    private readonly int[] _mergeResults;
    private readonly string?[] _idToToken;
    private readonly int[] _byteFallbackIds = new int[256];
    private readonly int[] _byteCharIds = new int[256];
    /// <summary>Id of each single-BMP-character token, -1 where the character is not a token by itself.</summary>
    private readonly int[] _charIds = new int[65536];
    private readonly ConcurrentDictionary<string, int[]> _cache = new(StringComparer.Ordinal);
    private readonly ConcurrentDictionary<string, int[]>.AlternateLookup<ReadOnlySpan<char>> _cacheLookup;

    public string? UnkToken { get; }
    public bool FuseUnk { get; }
    public bool ByteFallback { get; }
    public bool IgnoreMerges { get; }
    public string? ContinuingSubwordPrefix { get; }
    public string? EndOfWordSuffix { get; }

    /// <summary>When set, words arrive as raw text and are mapped to the byte-level alphabet here.</summary>
    public bool ByteLevelInput { get; set; }

    public int MaxId { get; }

    public BpeModel(Dictionary<string, int> vocab, IReadOnlyList<(string Left, string Right)> merges, string? unkToken,
        bool fuseUnk, bool byteFallback, bool ignoreMerges, string? continuingSubwordPrefix, string? endOfWordSuffix, string source)
    {
        _vocab = vocab;
        _vocabLookup = vocab.GetAlternateLookup<ReadOnlySpan<char>>();
        _cacheLookup = _cache.GetAlternateLookup<ReadOnlySpan<char>>();
        UnkToken = unkToken;
        FuseUnk = fuseUnk;
        ByteFallback = byteFallback;
        IgnoreMerges = ignoreMerges;
        ContinuingSubwordPrefix = continuingSubwordPrefix;
        EndOfWordSuffix = endOfWordSuffix;

        int maxId = -1;
        foreach (var id in vocab.Values)
            maxId = Math.Max(maxId, id);
        MaxId = maxId;
        _idToToken = new string?[maxId + 1];
        foreach (var (token, id) in vocab)
        {
            if (id < 0)
                throw new InvalidDataException($"{source}: vocabulary entry '{token}' has negative id {id}.");
            _idToToken[id] = token;
        }

        Array.Fill(_charIds, -1);
        foreach (var (token, id) in vocab)
        {
            if (token.Length == 1 && !char.IsSurrogate(token[0]))
                _charIds[token[0]] = id;
        }

        bool safe = _charIds[Metaspace] >= 0 && !ignoreMerges && string.IsNullOrEmpty(continuingSubwordPrefix) && string.IsNullOrEmpty(endOfWordSuffix);
        if (safe)
        {
            foreach (var token in vocab.Keys)
            {
                for (int i = token.IndexOf(Metaspace, StringComparison.Ordinal); i > 0; i = token.IndexOf(Metaspace, i + 1))
                {
                    if (token[i - 1] != Metaspace)
                    {
                        safe = false;
                        break;
                    }
                }
                if (!safe)
                    break;
            }
        }
        _metaspaceBoundariesSafe = safe;

        int prefixLength = continuingSubwordPrefix?.Length ?? 0;
        _mergeRanks = new PairTable(merges.Count);
        _mergeResults = new int[merges.Count];
        for (int rank = 0; rank < merges.Count; rank++)
        {
            var (left, right) = merges[rank];
            if (!vocab.TryGetValue(left, out int a) || !vocab.TryGetValue(right, out int b))
                throw new InvalidDataException($"{source}: merge #{rank} '{left} {right}' names a token missing from the vocabulary.");
            string merged = string.Concat(left, prefixLength <= right.Length ? right.AsSpan(prefixLength) : ReadOnlySpan<char>.Empty);
            if (!vocab.TryGetValue(merged, out int result))
                throw new InvalidDataException($"{source}: merge #{rank} '{left} {right}' yields '{merged}', which is missing from the vocabulary.");
            _mergeRanks.TryAdd(PairKey(a, b), rank);
            _mergeResults[rank] = result;
        }

        for (int b = 0; b < 256; b++)
        {
            string code = $"<0x{b:X2}>";
            _byteFallbackIds[b] = vocab.TryGetValue(code, out int id) ? id : -1;
            _byteCharIds[b] = vocab.TryGetValue(ByteLevelAlphabet.ByteToChar[b].ToString(), out int cid) ? cid : -1;
        }
    }

    public int? TokenToId(string token) => _vocab.TryGetValue(token, out int id) ? id : null;

    public string? IdToToken(int id) => (uint)id < (uint)_idToToken.Length ? _idToToken[id] : null;

    private static long PairKey(int a, int b) => ((long)a << 32) | (uint)b;

    private int Rank(int a, int b) => _mergeRanks.Get(PairKey(a, b));

    /// <summary>Appends the ids of one pre-token.</summary>
    public void Tokenize(ReadOnlySpan<char> word, List<int> output)
    {
        if (word.IsEmpty)
            return;
        if (_cacheLookup.TryGetValue(word, out var cached))
        {
            output.AddRange(cached);
            return;
        }
        if (word.Length > MaxCachedWordLength && _metaspaceBoundariesSafe && SplitLongWords && !ByteLevelInput)
        {
            int start = 0;
            for (int i = 1; i < word.Length; i++)
            {
                if (word[i] == Metaspace && word[i - 1] != Metaspace)
                {
                    Tokenize(word[start..i], output);
                    start = i;
                }
            }
            if (start > 0)
            {
                Tokenize(word[start..], output);
                return;
            }
        }

        var ids = Compute(word);
        if (word.Length <= MaxCachedWordLength && Volatile.Read(ref _cacheCount) < MaxCacheEntries && _cacheLookup.TryAdd(word, ids))
            Interlocked.Increment(ref _cacheCount);
        output.AddRange(ids);
    }

    private int[] Compute(ReadOnlySpan<char> word)
    {
        var mapped = new ValueBuffer<char>(stackalloc char[256]);
        try
        {
            scoped ReadOnlySpan<char> w = word;
            if (ByteLevelInput)
            {
                ByteLevelAlphabet.Encode(word, ref mapped);
                w = mapped.Span;
            }

            if (IgnoreMerges && _vocabLookup.TryGetValue(w, out int whole))
                return [whole];

            var symbols = new ValueBuffer<int>(stackalloc int[128]);
            try
            {
                InitialSymbols(w, ref symbols);
                return symbols.Length < 2 ? symbols.Span.ToArray() : MergeAll(symbols.Span);
            }
            finally
            {
                symbols.Dispose();
            }
        }
        finally
        {
            mapped.Dispose();
        }
    }

    private void InitialSymbols(scoped ReadOnlySpan<char> w, ref ValueBuffer<int> symbols)
    {
        bool plain = string.IsNullOrEmpty(ContinuingSubwordPrefix) && string.IsNullOrEmpty(EndOfWordSuffix);
        int pendingUnk = -1;
        Span<byte> utf8 = stackalloc byte[4];
        for (int i = 0; i < w.Length;)
        {
            int len = char.IsHighSurrogate(w[i]) && i + 1 < w.Length && char.IsLowSurrogate(w[i + 1]) ? 2 : 1;
            var piece = w.Slice(i, len);
            bool isFirst = i == 0;
            bool isLast = i + len == w.Length;
            i += len;

            int id;
            string? key = null;
            if (plain)
            {
                if (len == 1)
                    id = _charIds[piece[0]];
                else if (!_vocabLookup.TryGetValue(piece, out id))
                    id = -1;
            }
            else
            {
                key = string.Concat(!isFirst && ContinuingSubwordPrefix is not null ? ContinuingSubwordPrefix : "", piece,
                    isLast && EndOfWordSuffix is not null ? EndOfWordSuffix : "");
                if (!_vocab.TryGetValue(key, out id))
                    id = -1;
            }

            if (id >= 0)
            {
                if (pendingUnk >= 0)
                {
                    symbols.Add(pendingUnk);
                    pendingUnk = -1;
                }
                symbols.Add(id);
                continue;
            }

            if (ByteFallback)
            {
                ReadOnlySpan<char> text = key is null ? piece : key.AsSpan();
                bool all = true;
                int start = symbols.Length;
                foreach (var rune in text.EnumerateRunes())
                {
                    int n = rune.EncodeToUtf8(utf8);
                    for (int k = 0; k < n; k++)
                    {
                        int b = _byteFallbackIds[utf8[k]];
                        if (b < 0)
                        {
                            all = false;
                            break;
                        }
                        symbols.Add(b);
                    }
                    if (!all)
                        break;
                }
                if (all)
                    continue;
                while (symbols.Length > start)
                    symbols.RemoveLast();
            }

            if (UnkToken is not null)
            {
                if (!_vocab.TryGetValue(UnkToken, out int unkId))
                    throw new InvalidOperationException($"The unknown token '{UnkToken}' is not in the vocabulary.");
                if (pendingUnk >= 0 && !FuseUnk)
                    symbols.Add(pendingUnk);
                pendingUnk = unkId;
            }
        }
        if (pendingUnk >= 0)
            symbols.Add(pendingUnk);
    }

    private int[] MergeAll(ReadOnlySpan<int> initial)
    {
        int n = initial.Length;
        var ids = initial.ToArray();
        var prev = new int[n];
        var next = new int[n];
        var removed = new bool[n];
        for (int i = 0; i < n; i++)
        {
            prev[i] = i - 1;
            next[i] = i + 1 < n ? i + 1 : -1;
        }

        var heap = new MinHeap(n);
        for (int i = 0; i + 1 < n; i++)
        {
            int r = Rank(ids[i], ids[i + 1]);
            if (r >= 0)
                heap.AddUnordered(((long)r << 32) | (uint)i);
        }
        heap.Heapify();

        int remaining = n;
        while (heap.Count > 0)
        {
            long top = heap.Pop();
            int rank = (int)(top >> 32);
            int pos = (int)(top & 0xFFFFFFFF);
            if (removed[pos])
                continue;
            int right = next[pos];
            if (right < 0 || Rank(ids[pos], ids[right]) != rank)
                continue;

            ids[pos] = _mergeResults[rank];
            removed[right] = true;
            remaining--;
            int after = next[right];
            next[pos] = after;
            if (after >= 0)
                prev[after] = pos;

            int before = prev[pos];
            if (before >= 0)
            {
                int r = Rank(ids[before], ids[pos]);
                if (r >= 0)
                    heap.Push(((long)r << 32) | (uint)before);
            }
            if (after >= 0)
            {
                int r = Rank(ids[pos], ids[after]);
                if (r >= 0)
                    heap.Push(((long)r << 32) | (uint)pos);
            }
        }

        var result = new int[remaining];
        int k = 0;
        for (int i = 0; i >= 0 && k < remaining; i = next[i])
            result[k++] = ids[i];
        return result;
    }

    /// <summary>Binary min-heap of (rank, position) packed into one long so ties break on the leftmost position.</summary>
    private sealed class MinHeap(int capacity)
    {
        private long[] _items = new long[Math.Max(4, capacity)];

        public int Count { get; private set; }

        public void AddUnordered(long item)
        {
            if (Count == _items.Length)
                Array.Resize(ref _items, _items.Length * 2);
            _items[Count++] = item;
        }

        public void Heapify()
        {
            for (int i = Count / 2 - 1; i >= 0; i--)
                SiftDown(i, _items[i]);
        }

        private void SiftDown(int i, long item)
        {
            while (true)
            {
                int child = 2 * i + 1;
                if (child >= Count)
                    break;
                if (child + 1 < Count && _items[child + 1] < _items[child])
                    child++;
                if (_items[child] >= item)
                    break;
                _items[i] = _items[child];
                i = child;
            }
            _items[i] = item;
        }

        public void Push(long item)
        {
            if (Count == _items.Length)
                Array.Resize(ref _items, _items.Length * 2);
            int i = Count++;
            while (i > 0)
            {
                int parent = (i - 1) >> 1;
                if (_items[parent] <= item)
                    break;
                _items[i] = _items[parent];
                i = parent;
            }
            _items[i] = item;
        }

        public long Pop()
        {
            long top = _items[0];
            long last = _items[--Count];
            if (Count > 0)
                SiftDown(0, last);
            return top;
        }
    }

    /// <summary>Open-addressing map from a packed (left id, right id) pair to its merge rank; -1 when absent.</summary>
    private sealed class PairTable
    {
        private readonly long[] _keys;
        private readonly int[] _values;
        private readonly int _mask;

        public PairTable(int count)
        {
            int size = 16;
            while (size < count * 2)
                size <<= 1;
            _keys = new long[size];
            _values = new int[size];
            Array.Fill(_keys, -1L);
            _mask = size - 1;
        }

        private static int Hash(long key)
        {
            ulong h = (ulong)key * 0x9E3779B97F4A7C15UL;
            return (int)(h >> 32);
        }

        public void TryAdd(long key, int value)
        {
            int i = Hash(key) & _mask;
            while (_keys[i] != -1L)
            {
                if (_keys[i] == key)
                    return;
                i = (i + 1) & _mask;
            }
            _keys[i] = key;
            _values[i] = value;
        }

        public int Get(long key)
        {
            int i = Hash(key) & _mask;
            while (true)
            {
                long k = _keys[i];
                if (k == key)
                    return _values[i];
                if (k == -1L)
                    return -1;
                i = (i + 1) & _mask;
            }
        }
    }
}
