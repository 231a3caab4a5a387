using System.Text;
using System.Text.Json;

namespace Enclave.Engine.Tokenization;

/// <summary>Builds the pipeline components described by the sections of a tokenizer.json.</summary>
internal static class TokenizerJson
{
    public static string TypeOf(JsonElement e, string source, string section)
    {
        if (e.ValueKind != JsonValueKind.Object || !e.TryGetProperty("type", out var t) || t.ValueKind != JsonValueKind.String)
            throw new InvalidDataException($"{source}: {section} entry has no \"type\".");
        return t.GetString()!;
    }

    public static string? Str(JsonElement e, string name) =>
        e.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.String ? v.GetString() : null;

    public static bool Bool(JsonElement e, string name, bool fallback) =>
        e.TryGetProperty(name, out var v) && v.ValueKind is JsonValueKind.True or JsonValueKind.False ? v.GetBoolean() : fallback;

    public static int Int(JsonElement e, string name, int fallback) =>
        e.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.Number ? v.GetInt32() : fallback;

    private static NotSupportedException Unsupported(string source, string section, string type) =>
        new($"{source}: {section} type '{type}' is not supported.");

    /// <summary>A {"String": ...} or {"Regex": ...} pattern.</summary>
    public static (string? Literal, UnicodeRegex? Regex) Pattern(JsonElement e, string source, string section)
    {
        if (e.ValueKind == JsonValueKind.Object)
        {
            if (e.TryGetProperty("String", out var s) && s.ValueKind == JsonValueKind.String)
                return (s.GetString(), null);
            if (e.TryGetProperty("Regex", out var r) && r.ValueKind == JsonValueKind.String)
                return (null, new UnicodeRegex(r.GetString()!, source));
        }
        throw new InvalidDataException($"{source}: {section} has a pattern that is neither String nor Regex.");
    }

    public static Normalizer? Normalizer(JsonElement e, string source)
    {
        if (e.ValueKind == JsonValueKind.Null)
            return null;
        var type = TypeOf(e, source, "normalizer");
        switch (type)
        {
            case "NFC": return new UnicodeNormalizer(NormalizationForm.FormC);
            case "NFD": return new UnicodeNormalizer(NormalizationForm.FormD);
            case "NFKC": return new UnicodeNormalizer(NormalizationForm.FormKC);
            case "NFKD": return new UnicodeNormalizer(NormalizationForm.FormKD);
            case "Lowercase": return new LowercaseNormalizer();
            case "BertNormalizer":
            {
                bool? strip = e.TryGetProperty("strip_accents", out var sa) && sa.ValueKind is JsonValueKind.True or JsonValueKind.False ? sa.GetBoolean() : null;
                return new BertNormalizer(Bool(e, "clean_text", true), Bool(e, "handle_chinese_chars", true), strip, Bool(e, "lowercase", true));
            }
            case "Prepend": return new PrependNormalizer(Str(e, "prepend") ?? "");
            case "Precompiled":
            {
                var charsmap = Str(e, "precompiled_charsmap");
                return string.IsNullOrEmpty(charsmap) ? null : new PrecompiledNormalizer(Convert.FromBase64String(charsmap), source);
            }
            case "Strip": return new StripNormalizer(Bool(e, "strip_left", true), Bool(e, "strip_right", true));
            case "Replace":
            {
                var (literal, regex) = Pattern(e.GetProperty("pattern"), source, "Replace normalizer");
                return new ReplaceNormalizer(literal, regex, Str(e, "content") ?? "");
            }
            case "Sequence":
            {
                var list = new List<Normalizer>();
                foreach (var item in e.GetProperty("normalizers").EnumerateArray())
                {
                    var n = Normalizer(item, source);
                    if (n is not null)
                        list.Add(n);
                }
                return list.Count == 0 ? null : new SequenceNormalizer([.. list]);
            }
            default: throw Unsupported(source, "normalizer", type);
        }
    }

    public static PreTokenizer? PreTokenizer(JsonElement e, string source)
    {
        if (e.ValueKind == JsonValueKind.Null)
            return null;
        var type = TypeOf(e, source, "pre_tokenizer");
        switch (type)
        {
            case "Split":
            {
                var (literal, regex) = Pattern(e.GetProperty("pattern"), source, "Split pre-tokenizer");
                var behavior = Str(e, "behavior") switch
                {
                    "Removed" => SplitBehavior.Removed,
                    "Isolated" => SplitBehavior.Isolated,
                    "MergedWithPrevious" => SplitBehavior.MergedWithPrevious,
                    "MergedWithNext" => SplitBehavior.MergedWithNext,
                    "Contiguous" => SplitBehavior.Contiguous,
                    var other => throw new NotSupportedException($"{source}: Split behavior '{other}' is not supported."),
                };
                return new SplitPreTokenizer(regex, literal, behavior, Bool(e, "invert", false));
            }
            case "ByteLevel":
                return new ByteLevelPreTokenizer(Bool(e, "add_prefix_space", true), Bool(e, "use_regex", true));
            case "Metaspace":
                return new MetaspacePreTokenizer(Replacement(e), Scheme(e), Bool(e, "split", true));
            case "WhitespaceSplit":
                return new WhitespaceSplitPreTokenizer();
            case "BertPreTokenizer":
                return new BertPreTokenizer();
            case "Whitespace":
                return new SplitPreTokenizer(new UnicodeRegex(@"\w+|[^\w\s]+", source), null, SplitBehavior.Removed, true);
            case "Sequence":
            {
                var list = new List<PreTokenizer>();
                foreach (var item in e.GetProperty("pretokenizers").EnumerateArray())
                {
                    var p = PreTokenizer(item, source);
                    if (p is not null)
                        list.Add(p);
                }
                return list.Count == 0 ? null : new SequencePreTokenizer([.. list]);
            }
            default: throw Unsupported(source, "pre_tokenizer", type);
        }
    }

    private static char Replacement(JsonElement e)
    {
        var r = Str(e, "replacement");
        return string.IsNullOrEmpty(r) ? '\u2581' : r[0];
    }

    private static PrependScheme Scheme(JsonElement e)
    {
        var s = Str(e, "prepend_scheme");
        if (s is null)
            return Bool(e, "add_prefix_space", true) ? PrependScheme.Always : PrependScheme.Never;
        return s switch
        {
            "first" => PrependScheme.First,
            "never" => PrependScheme.Never,
            _ => PrependScheme.Always,
        };
    }

    public static Decoder? Decoder(JsonElement e, string source)
    {
        if (e.ValueKind == JsonValueKind.Null)
            return null;
        var type = TypeOf(e, source, "decoder");
        switch (type)
        {
            case "ByteLevel": return new ByteLevelDecoder();
            case "ByteFallback": return new ByteFallbackDecoder();
            case "Fuse": return new FuseDecoder();
            case "WordPiece": return new WordPieceDecoder(Str(e, "prefix") ?? "##", Bool(e, "cleanup", true));
            case "Strip":
            {
                var content = Str(e, "content");
                return new StripDecoder(string.IsNullOrEmpty(content) ? ' ' : content[0], Int(e, "start", 0), Int(e, "stop", 0));
            }
            case "Replace":
            {
                var (literal, regex) = Pattern(e.GetProperty("pattern"), source, "Replace decoder");
                return new ReplaceDecoder(literal, regex, Str(e, "content") ?? "");
            }
            case "Metaspace":
                return new MetaspaceDecoder(Replacement(e), Scheme(e) != PrependScheme.Never);
            case "Sequence":
            {
                var list = new List<Decoder>();
                foreach (var item in e.GetProperty("decoders").EnumerateArray())
                {
                    var d = Decoder(item, source);
                    if (d is not null)
                        list.Add(d);
                }
                return new SequenceDecoder([.. list]);
            }
            default: throw Unsupported(source, "decoder", type);
        }
    }

    public static PostProcessor? PostProcessor(JsonElement e, string source, Func<string, int?> tokenToId)
    {
        if (e.ValueKind == JsonValueKind.Null)
            return null;
        var type = TypeOf(e, source, "post_processor");
        switch (type)
        {
            case "ByteLevel":
                return new PassThroughPostProcessor();
            case "TemplateProcessing":
            {
                var specials = new Dictionary<string, int[]>(StringComparer.Ordinal);
                if (e.TryGetProperty("special_tokens", out var st) && st.ValueKind == JsonValueKind.Object)
                {
                    foreach (var p in st.EnumerateObject())
                    {
                        var ids = new List<int>();
                        foreach (var id in p.Value.GetProperty("ids").EnumerateArray())
                            ids.Add(id.GetInt32());
                        specials[p.Name] = [.. ids];
                    }
                }
                TemplatePiece[] Template(JsonElement list)
                {
                    var pieces = new List<TemplatePiece>();
                    foreach (var item in list.EnumerateArray())
                    {
                        if (item.TryGetProperty("SpecialToken", out var sp))
                        {
                            var name = Str(sp, "id") ?? "";
                            if (!specials.TryGetValue(name, out var ids))
                                throw new InvalidDataException($"{source}: template names special token '{name}' without ids.");
                            pieces.Add(new TemplatePiece(ids, -1, Int(sp, "type_id", 0)));
                        }
                        else if (item.TryGetProperty("Sequence", out var sq))
                        {
                            pieces.Add(new TemplatePiece(null, Str(sq, "id") == "B" ? 1 : 0, Int(sq, "type_id", 0)));
                        }
                    }
                    return [.. pieces];
                }
                var pair = e.TryGetProperty("pair", out var pairJson) && pairJson.ValueKind == JsonValueKind.Array ? Template(pairJson) : null;
                return new TemplatePostProcessor(Template(e.GetProperty("single")), pair);
            }
            case "RobertaProcessing":
            case "BertProcessing":
            {
                int Id(string name)
                {
                    var pair = e.GetProperty(name);
                    return pair[1].GetInt32();
                }
                int[] cls = [Id("cls")], sep = [Id("sep")];
                TemplatePiece[] single = [new(cls, -1, 0), new(null, 0, 0), new(sep, -1, 0)];
                // BERT: [CLS] A [SEP] B [SEP] with B typed 1; RoBERTa: <s> A </s></s> B </s>, all type 0.
                TemplatePiece[] pairTemplate = type == "BertProcessing"
                    ? [new(cls, -1, 0), new(null, 0, 0), new(sep, -1, 0), new(null, 1, 1), new(sep, -1, 1)]
                    : [new(cls, -1, 0), new(null, 0, 0), new(sep, -1, 0), new(sep, -1, 0), new(null, 1, 0), new(sep, -1, 0)];
                return new TemplatePostProcessor(single, pairTemplate);
            }
            case "Sequence":
            {
                var list = new List<PostProcessor>();
                foreach (var item in e.GetProperty("processors").EnumerateArray())
                {
                    var p = PostProcessor(item, source, tokenToId);
                    if (p is not null)
                        list.Add(p);
                }
                return new SequencePostProcessor([.. list]);
            }
            default: throw Unsupported(source, "post_processor", type);
        }
    }
}
