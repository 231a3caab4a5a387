using System.Text;
using System.Text.Json;

namespace Enclave.Engine.Tokenization;

/// <summary>
/// A Hugging Face <c>tokenizer.json</c> tokenizer (BPE models: byte-level and SentencePiece-style) with the ids
/// transformers 5 produces for the same directory, including the way transformers rebuilds some tokenizer classes.
/// Instances are immutable after loading and safe to share between threads.
/// </summary>
public sealed class HfTokenizer
{
    public const string FileName = "tokenizer.json";

    private readonly ITokenModel _model;
    private readonly Normalizer? _normalizer;
    private readonly PreTokenizer? _preTokenizer;
    private readonly Decoder? _decoder;
    private readonly PostProcessor? _postProcessor;
    private readonly AddedTokenMatcher _rawMatcher;
    private readonly AddedTokenMatcher _normalizedMatcher;
    private readonly Dictionary<string, int> _addedByContent;
    private readonly Dictionary<int, AddedToken> _addedById;
    private readonly HashSet<string> _specialContents;
    private readonly bool _cleanUp;

    public TokenizerConfig Config { get; }
    public int VocabSize { get; }
    public int? BosTokenId { get; }
    public int? EosTokenId { get; }

    private HfTokenizer(TokenizerConfig config, ITokenModel model, Normalizer? normalizer, PreTokenizer? preTokenizer,
        Decoder? decoder, PostProcessor? postProcessor, List<AddedToken> added)
    {
        Config = config;
        _model = model;
        _normalizer = normalizer;
        _preTokenizer = preTokenizer;
        _decoder = decoder;
        _postProcessor = postProcessor;

        _addedByContent = new Dictionary<string, int>(StringComparer.Ordinal);
        _addedById = [];
        _specialContents = new HashSet<string>(StringComparer.Ordinal);
        var raw = new List<(string, AddedToken)>();
        var normalized = new List<(string, AddedToken)>();
        int maxId = model.MaxId;
        foreach (var t in added)
        {
            _addedByContent.TryAdd(t.Content, t.Id);
            _addedById[t.Id] = t;
            if (t.Special)
                _specialContents.Add(t.Content);
            maxId = Math.Max(maxId, t.Id);
            if (t.Normalized)
                normalized.Add((normalizer?.Normalize(t.Content) ?? t.Content, t));
            else
                raw.Add((t.Content, t));
        }
        _rawMatcher = new AddedTokenMatcher(raw);
        _normalizedMatcher = new AddedTokenMatcher(normalized);
        VocabSize = maxId + 1;
        BosTokenId = config.BosToken is null ? null : TokenToId(config.BosToken);
        EosTokenId = config.EosToken is null ? null : TokenToId(config.EosToken);
        // transformers >= 5.7 skips clean_up_tokenization for BPE models unless explicitly forced.
        _cleanUp = config.CleanUpTokenizationSpaces && config.CleanUpForBpe;
    }

    /// <summary>Loads <c>tokenizer.json</c> and, when present, <c>tokenizer_config.json</c> from a directory.</summary>
    public static HfTokenizer FromDirectory(string directory)
    {
        var path = Path.Combine(directory, FileName);
        if (!File.Exists(path))
            throw new FileNotFoundException($"Tokenizer file '{path}' was not found.", path);
        var config = TokenizerConfig.Load(directory);

        JsonDocument doc;
        try
        {
            doc = JsonDocument.Parse(File.ReadAllBytes(path), new JsonDocumentOptions { AllowTrailingCommas = true, MaxDepth = 256 });
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"Tokenizer file '{path}' is not valid JSON: {e.Message}", e);
        }
        using (doc)
        {
            try
            {
                return Build(doc.RootElement, config, path);
            }
            catch (Exception e) when (e is KeyNotFoundException or InvalidOperationException or FormatException)
            {
                throw new InvalidDataException($"Tokenizer file '{path}' is malformed: {e.Message}", e);
            }
        }
    }

    /// <summary>Builds a tokenizer from a tokenizer.json object (also built in memory from a GGUF file's tokenizer metadata).</summary>
    internal static HfTokenizer FromJson(JsonElement root, TokenizerConfig config, string source)
    {
        try
        {
            return Build(root, config, source);
        }
        catch (Exception e) when (e is KeyNotFoundException or InvalidOperationException or FormatException)
        {
            throw new InvalidDataException($"Tokenizer in '{source}' is malformed: {e.Message}", e);
        }
    }

    private static HfTokenizer Build(JsonElement root, TokenizerConfig config, string source)
    {
        if (root.ValueKind != JsonValueKind.Object || !root.TryGetProperty("model", out var modelJson) || modelJson.ValueKind != JsonValueKind.Object)
            throw new InvalidDataException($"Tokenizer file '{source}' has no \"model\" object.");
        var modelType = TokenizerJson.Str(modelJson, "type") ?? (modelJson.TryGetProperty("merges", out _) ? "BPE" : "unknown");
        if (modelType is "WordPiece" or "Unigram")
            return BuildNonBpe(root, modelJson, modelType, config, source);
        if (modelType != "BPE")
            throw new NotSupportedException($"{source}: model type '{modelType}' is not supported (BPE, WordPiece and Unigram are).");

        var vocab = new Dictionary<string, int>(StringComparer.Ordinal);
        if (!modelJson.TryGetProperty("vocab", out var vocabJson) || vocabJson.ValueKind != JsonValueKind.Object)
            throw new InvalidDataException($"{source}: BPE model has no \"vocab\" object.");
        foreach (var p in vocabJson.EnumerateObject())
            vocab[p.Name] = p.Value.GetInt32();

        var merges = new List<(string, string)>();
        if (modelJson.TryGetProperty("merges", out var mergesJson) && mergesJson.ValueKind == JsonValueKind.Array)
        {
            foreach (var m in mergesJson.EnumerateArray())
            {
                if (m.ValueKind == JsonValueKind.String)
                {
                    var s = m.GetString()!;
                    int space = s.IndexOf(' ', StringComparison.Ordinal);
                    if (space < 0 || s.IndexOf(' ', space + 1) >= 0)
                        throw new InvalidDataException($"{source}: merge '{s}' is not two tokens separated by one space.");
                    merges.Add((s[..space], s[(space + 1)..]));
                }
                else if (m.ValueKind == JsonValueKind.Array && m.GetArrayLength() == 2)
                {
                    merges.Add((m[0].GetString()!, m[1].GetString()!));
                }
                else
                {
                    throw new InvalidDataException($"{source}: a merge entry is neither \"a b\" nor [a, b].");
                }
            }
        }

        var normalizer = TokenizerJson.Normalizer(Section(root, "normalizer"), source);
        var preTokenizer = TokenizerJson.PreTokenizer(Section(root, "pre_tokenizer"), source);
        var decoder = TokenizerJson.Decoder(Section(root, "decoder"), source);
        var postProcessor = TokenizerJson.PostProcessor(Section(root, "post_processor"), source, t => vocab.TryGetValue(t, out var i) ? i : null);

        var unk = TokenizerJson.Str(modelJson, "unk_token");
        bool fuseUnk = TokenizerJson.Bool(modelJson, "fuse_unk", false);
        bool byteFallback = TokenizerJson.Bool(modelJson, "byte_fallback", false);
        bool ignoreMerges = TokenizerJson.Bool(modelJson, "ignore_merges", false);
        var prefix = TokenizerJson.Str(modelJson, "continuing_subword_prefix");
        var suffix = TokenizerJson.Str(modelJson, "end_of_word_suffix");

        var cls = config.TokenizerClass;
        if (cls is not null && cls.EndsWith("Fast", StringComparison.Ordinal))
            cls = cls[..^4];
        // transformers 5 rebuilds LlamaTokenizer pipelines as SentencePiece ones. That is right for SentencePiece
        // vocabularies (Llama 2) but wrong for byte-level ones that carry the class name anyway (the published
        // DeepSeek-V3/R1 tokenizer_config.json says LlamaTokenizerFast): there the rebuild drops every space and
        // newline, so those files are read as written, as the tokenizers library and transformers 4 read them.
        var fileIsByteLevel = (preTokenizer is SequencePreTokenizer bytes && bytes.Steps.Any(p => p is ByteLevelPreTokenizer))
                              || preTokenizer is ByteLevelPreTokenizer;
        if (cls == "LlamaTokenizer" && !fileIsByteLevel)
        {
            // transformers 5 keeps only vocab, merges, added tokens and the post-processor of tokenizer.json and
            // rebuilds the rest: no normalizer, Metaspace without splitting, byte-fallback BPE without an unknown
            // token, and the SentencePiece decoder chain.
            bool addPrefixSpace = config.AddPrefixSpace ?? true;
            var scheme = !addPrefixSpace ? PrependScheme.Never : config.Legacy ?? false ? PrependScheme.Always : PrependScheme.First;
            normalizer = null;
            preTokenizer = new MetaspacePreTokenizer('\u2581', scheme, split: false);
            unk = null;
            fuseUnk = true;
            byteFallback = true;
            ignoreMerges = false;
            prefix = null;
            suffix = null;
            var steps = new List<Decoder> { new ReplaceDecoder("\u2581", null, " "), new ByteFallbackDecoder(), new FuseDecoder() };
            if (addPrefixSpace)
                steps.Add(new StripDecoder(' ', 1, 0));
            decoder = new SequenceDecoder([.. steps]);
        }

        var model = new BpeModel(vocab, merges, unk, fuseUnk, byteFallback, ignoreMerges, prefix, suffix, source);

        // A trailing ByteLevel step maps bytes inside the model so pre-tokens stay slices of the input.
        var last = preTokenizer is SequencePreTokenizer seq && seq.Steps.Count > 0 ? seq.Steps[^1] : preTokenizer;
        if (last is ByteLevelPreTokenizer byteLevel)
        {
            byteLevel.DeferMapping = true;
            model.ByteLevelInput = true;
        }

        var added = ReadAddedTokens(root, config, source, t => vocab.TryGetValue(t, out int i) ? i : null);

        if (postProcessor is null && (config.AddBosToken == true || config.AddEosToken == true))
        {
            var pieces = new List<int[]?>();
            int? Lookup(string? t) => t is null ? null : seenId(t);
            int? seenId(string t)
            {
                foreach (var a in added)
                {
                    if (a.Content == t)
                        return a.Id;
                }
                return vocab.TryGetValue(t, out int i) ? i : null;
            }
            if (config.AddBosToken == true && Lookup(config.BosToken) is int bos)
                pieces.Add([bos]);
            pieces.Add(null);
            if (config.AddEosToken == true && Lookup(config.EosToken) is int eos)
                pieces.Add([eos]);
            postProcessor = new TemplatePostProcessor(pieces);
        }

        return new HfTokenizer(config, model, normalizer, preTokenizer, decoder, postProcessor, added);
    }

    private static List<AddedToken> ReadAddedTokens(JsonElement root, TokenizerConfig config, string source, Func<string, int?> vocabId)
    {
        var added = new List<AddedToken>();
        var seen = new HashSet<string>(StringComparer.Ordinal);
        if (root.TryGetProperty("added_tokens", out var addedJson) && addedJson.ValueKind == JsonValueKind.Array)
        {
            foreach (var a in addedJson.EnumerateArray())
            {
                var content = TokenizerJson.Str(a, "content") ?? throw new InvalidDataException($"{source}: an added token has no content.");
                added.Add(new AddedToken(a.GetProperty("id").GetInt32(), content, TokenizerJson.Bool(a, "special", false),
                    TokenizerJson.Bool(a, "single_word", false), TokenizerJson.Bool(a, "lstrip", false),
                    TokenizerJson.Bool(a, "rstrip", false), TokenizerJson.Bool(a, "normalized", true)));
                seen.Add(content);
            }
        }
        // Named special tokens from the config that the file does not list are registered as special, like
        // transformers does, when the vocabulary knows them.
        var named = new List<string?> { config.BosToken, config.EosToken, config.UnkToken, config.PadToken };
        named.AddRange(config.AdditionalSpecialTokens);
        foreach (var t in named)
        {
            if (t is not null && seen.Add(t) && vocabId(t) is int id)
                added.Add(new AddedToken(id, t, true, false, false, false, false));
        }

        return added;
    }

    /// <summary>WordPiece (BERT) and Unigram (XLM-RoBERTa, SentencePiece) tokenizers, read as the file says.</summary>
    private static HfTokenizer BuildNonBpe(JsonElement root, JsonElement modelJson, string modelType, TokenizerConfig config, string source)
    {
        ITokenModel model;
        if (modelType == "WordPiece")
        {
            if (!modelJson.TryGetProperty("vocab", out var vocabJson) || vocabJson.ValueKind != JsonValueKind.Object)
                throw new InvalidDataException($"{source}: WordPiece model has no \"vocab\" object.");
            var vocab = new Dictionary<string, int>(StringComparer.Ordinal);
            foreach (var p in vocabJson.EnumerateObject())
                vocab[p.Name] = p.Value.GetInt32();
            model = new WordPieceModel(vocab, TokenizerJson.Str(modelJson, "unk_token") ?? "[UNK]",
                TokenizerJson.Str(modelJson, "continuing_subword_prefix") ?? "##", TokenizerJson.Int(modelJson, "max_input_chars_per_word", 100), source);
        }
        else
        {
            if (!modelJson.TryGetProperty("vocab", out var vocabJson) || vocabJson.ValueKind != JsonValueKind.Array)
                throw new InvalidDataException($"{source}: Unigram model has no \"vocab\" array of [piece, score].");
            var pieces = new List<(string, double)>();
            foreach (var entry in vocabJson.EnumerateArray())
            {
                if (entry.ValueKind != JsonValueKind.Array || entry.GetArrayLength() != 2 || entry[0].ValueKind != JsonValueKind.String)
                    throw new InvalidDataException($"{source}: a Unigram vocab entry is not [piece, score].");
                pieces.Add((entry[0].GetString()!, entry[1].GetDouble()));
            }
            int? unkId = modelJson.TryGetProperty("unk_id", out var u) && u.ValueKind == JsonValueKind.Number ? u.GetInt32() : null;
            model = new UnigramModel(pieces, unkId, TokenizerJson.Bool(modelJson, "byte_fallback", false), source);
        }

        var normalizer = TokenizerJson.Normalizer(Section(root, "normalizer"), source);
        var preTokenizer = TokenizerJson.PreTokenizer(Section(root, "pre_tokenizer"), source);
        var decoder = TokenizerJson.Decoder(Section(root, "decoder"), source);
        var postProcessor = TokenizerJson.PostProcessor(Section(root, "post_processor"), source, model.TokenToId);
        var added = ReadAddedTokens(root, config, source, model.TokenToId);
        return new HfTokenizer(config, model, normalizer, preTokenizer, decoder, postProcessor, added);
    }

    private static JsonElement Section(JsonElement root, string name) =>
        root.TryGetProperty(name, out var e) ? e : default;

    /// <summary>Token ids for <paramref name="text"/>; with <paramref name="addSpecialTokens"/> the post-processor adds BOS/EOS etc.</summary>
    public int[] Encode(string text, bool addSpecialTokens = false)
    {
        ArgumentNullException.ThrowIfNull(text);
        var ids = new List<int>(text.Length / 3 + 4);
        var segments = new List<(int Start, int End, AddedToken? Token)>();
        var subSegments = new List<(int Start, int End, AddedToken? Token)>();
        var pieces = new List<Piece>();
        var words = new List<Piece>();
        _rawMatcher.Split(text, segments);
        foreach (var (start, end, token) in segments)
        {
            if (token is not null)
            {
                ids.Add(token.Id);
                continue;
            }
            if (end == start)
                continue;
            string part = start == 0 && end == text.Length ? text : text[start..end];
            string normalized = _normalizer?.Normalize(part) ?? part;
            subSegments.Clear();
            _normalizedMatcher.Split(normalized, subSegments);
            foreach (var (s, e, t) in subSegments)
            {
                if (t is not null)
                {
                    ids.Add(t.Id);
                    continue;
                }
                if (e == s)
                    continue;
                pieces.Clear();
                pieces.Add(new Piece(normalized, s, e - s, start == 0 && s == 0));
                words.Clear();
                if (_preTokenizer is null)
                    words.AddRange(pieces);
                else
                    _preTokenizer.Apply(pieces, words);
                foreach (var w in words)
                    _model.Tokenize(w.Span, ids);
            }
        }
        if (addSpecialTokens && _postProcessor is not null)
            ids = _postProcessor.Process(ids);
        return [.. ids];
    }

    /// <summary>
    /// Wraps already-encoded sequences in the post-processor's special tokens: one sequence, or a pair (a
    /// cross-encoder's query and passage) through the "pair" template, with the token type ids the template gives.
    /// Without a post-processor the ids are joined as they are, types 0 then 1.
    /// </summary>
    public (int[] Ids, int[] TypeIds) AddSpecialTokens(IReadOnlyList<int> first, IReadOnlyList<int>? second = null)
    {
        var processor = _postProcessor ?? new PassThroughPostProcessor();
        var (ids, types) = processor.ProcessPair([.. first], second is null ? null : [.. second]);
        return ([.. ids], [.. types]);
    }

    /// <summary>How many special tokens <see cref="AddSpecialTokens"/> adds to one sequence or to a pair.</summary>
    public int SpecialTokenCount(bool pair) => _postProcessor?.AddedTokens(pair) ?? 0;

    /// <summary>Text for <paramref name="ids"/> through the tokenizer's decoder; unknown ids are skipped.</summary>
    public string Decode(ReadOnlySpan<int> ids, bool skipSpecialTokens = false)
    {
        var text = DecodeRaw(ids, skipSpecialTokens);
        return _cleanUp ? CleanUp(text) : text;
    }

    internal bool CleansUp => _cleanUp;

    internal BpeModel Model => _model as BpeModel ?? throw new InvalidOperationException("this tokenizer's model is not BPE");

    internal string DecodeRaw(ReadOnlySpan<int> ids, bool skipSpecialTokens)
    {
        var tokens = new List<string>(ids.Length);
        foreach (int id in ids)
        {
            var token = IdToToken(id);
            if (token is null || (skipSpecialTokens && _specialContents.Contains(token)))
                continue;
            tokens.Add(token);
        }
        if (_decoder is null)
            return string.Join(' ', tokens);
        return tokens.Count == 0 ? "" : _decoder.Decode(tokens);
    }

    internal static string CleanUp(string text) => text
        .Replace(" .", ".", StringComparison.Ordinal)
        .Replace(" ?", "?", StringComparison.Ordinal)
        .Replace(" !", "!", StringComparison.Ordinal)
        .Replace(" ,", ",", StringComparison.Ordinal)
        .Replace(" ' ", "'", StringComparison.Ordinal)
        .Replace(" n't", "n't", StringComparison.Ordinal)
        .Replace(" 'm", "'m", StringComparison.Ordinal)
        .Replace(" 's", "'s", StringComparison.Ordinal)
        .Replace(" 've", "'ve", StringComparison.Ordinal)
        .Replace(" 're", "'re", StringComparison.Ordinal);

    public int? TokenToId(string token) =>
        _addedByContent.TryGetValue(token, out int id) ? id : _model.TokenToId(token);

    public string? IdToToken(int id) =>
        _addedById.TryGetValue(id, out var t) ? t.Content : _model.IdToToken(id);

    public bool IsSpecial(int id) => _addedById.TryGetValue(id, out var t) && t.Special;

    public IncrementalDecoder CreateIncrementalDecoder(bool skipSpecialTokens = false) => new(this, skipSpecialTokens);
}
