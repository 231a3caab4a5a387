using System.Text.Json;
using System.Text.Json.Nodes;
using Enclave.Engine.Tokenization;

namespace Enclave.Engine.Formats.Gguf;

/// <summary>
/// The tokenizer embedded in a GGUF file (<c>tokenizer.ggml.*</c>) as the engine's tokenizer, and the reverse for
/// writing. Two models exist: "gpt2" (byte-level BPE with merges; <c>tokenizer.ggml.pre</c> names the
/// pre-tokenizer regex) and "llama" (SentencePiece BPE with per-token scores and byte-fallback tokens). The
/// equivalent tokenizer.json / tokenizer_config.json objects are built and read by the same code that reads a
/// Hugging Face directory, so both paths tokenize identically.
/// </summary>
public static class GgufTokenizer
{
    // llama.cpp token types.
    private const int Normal = 1;
    private const int Unknown = 2;
    private const int Control = 3;
    private const int UserDefined = 4;
    private const int Unused = 5;
    private const int Byte = 6;

    private const string Gpt2Regex = @"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";
    private const string Llama3Regex = @"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
    private const string Qwen2Regex = @"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

    // DeepSeek-V3/R1 (llama.cpp's "deepseek-v3"): three splits in sequence, digits in threes, CJK and kana runs,
    // then words and punctuation.
    private static readonly string[] DeepseekV3Regexes =
    [
        @"\p{N}{1,3}",
        "[\u4E00-\u9FA5\u3040-\u309F\u30A0-\u30FF]+",
        @"[!""#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+| ?[\p{P}\p{S}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
    ];

    /// <summary>llama.cpp's pre-tokenizer names and the split regexes each stands for, applied in order (and whether HF normalises NFC first).</summary>
    private static readonly Dictionary<string, (string[] Regexes, bool Nfc, bool IgnoreMerges)> PreTypes = new(StringComparer.Ordinal)
    {
        ["default"] = ([Gpt2Regex], false, false),
        ["gpt-2"] = ([Gpt2Regex], false, false),
        ["gpt2"] = ([Gpt2Regex], false, false),
        ["llama-bpe"] = ([Llama3Regex], false, true),
        ["llama3"] = ([Llama3Regex], false, true),
        ["smaug-bpe"] = ([Llama3Regex], false, false),
        ["qwen2"] = ([Qwen2Regex], true, false),
        ["deepseek-r1-qwen"] = ([Qwen2Regex], true, false),
        ["deepseek-v3"] = (DeepseekV3Regexes, false, false),
    };

    public static HfTokenizer Build(GgufFile file)
    {
        var model = file.GetString("tokenizer.ggml.model")
            ?? throw new CheckpointFormatException($"{file.Path}: metadata 'tokenizer.ggml.model' is missing, so the file carries no tokenizer");
        var tokens = file.GetArray("tokenizer.ggml.tokens")?.Items as string[]
            ?? throw new CheckpointFormatException($"{file.Path}: metadata 'tokenizer.ggml.tokens' is missing or not an array of strings");
        var types = file.GetArray("tokenizer.ggml.token_type")?.Items;
        int TypeOf(int id) => types is null ? Normal : Convert.ToInt32(types.GetValue(id), null);
        if (types is not null && types.Length != tokens.Length)
        {
            throw new CheckpointFormatException($"{file.Path}: {types.Length} token types for {tokens.Length} tokens");
        }

        string? TokenAt(string key)
        {
            var id = file.GetInteger(key);
            if (id is null)
            {
                return null;
            }

            return id >= 0 && id < tokens.Length
                ? tokens[id.Value]
                : throw new CheckpointFormatException($"{file.Path}: {key} is {id}, outside the {tokens.Length} tokens");
        }

        var vocab = new JsonObject();
        var added = new JsonArray();
        for (var id = 0; id < tokens.Length; id++)
        {
            var type = TypeOf(id);
            if (type is Control or UserDefined)
            {
                added.Add((JsonNode)new JsonObject
                {
                    ["id"] = id,
                    ["content"] = tokens[id],
                    ["single_word"] = false,
                    ["lstrip"] = false,
                    ["rstrip"] = false,
                    ["normalized"] = false,
                    ["special"] = type == Control,
                });
            }
            else if (type != Unused && !vocab.ContainsKey(tokens[id]))
            {
                vocab[tokens[id]] = id;
            }
        }

        var tokenizerConfig = new JsonObject
        {
            ["bos_token"] = TokenAt("tokenizer.ggml.bos_token_id"),
            ["eos_token"] = TokenAt("tokenizer.ggml.eos_token_id"),
            ["unk_token"] = TokenAt("tokenizer.ggml.unknown_token_id"),
            ["pad_token"] = TokenAt("tokenizer.ggml.padding_token_id"),
            ["clean_up_tokenization_spaces"] = false,
        };
        if (file.GetString("tokenizer.chat_template") is { } template)
        {
            tokenizerConfig["chat_template"] = template;
        }

        JsonObject json;
        switch (model)
        {
            case "gpt2":
            {
                var pre = file.GetString("tokenizer.ggml.pre") ?? "default";
                if (!PreTypes.TryGetValue(pre, out var preType))
                {
                    throw new CheckpointFormatException(
                        $"{file.Path}: tokenizer.ggml.pre '{pre}' is not supported (supported: {string.Join(", ", PreTypes.Keys)})");
                }

                var merges = file.GetArray("tokenizer.ggml.merges")?.Items as string[]
                    ?? throw new CheckpointFormatException($"{file.Path}: a gpt2 tokenizer needs 'tokenizer.ggml.merges'");
                tokenizerConfig["add_bos_token"] = file.GetBool("tokenizer.ggml.add_bos_token") ?? false;
                tokenizerConfig["add_eos_token"] = file.GetBool("tokenizer.ggml.add_eos_token") ?? false;
                json = new JsonObject
                {
                    ["model"] = new JsonObject
                    {
                        ["type"] = "BPE",
                        ["vocab"] = vocab,
                        ["merges"] = new JsonArray(merges.Select(m => (JsonNode?)m).ToArray()),
                        ["ignore_merges"] = preType.IgnoreMerges,
                    },
                    ["normalizer"] = preType.Nfc ? new JsonObject { ["type"] = "NFC" } : null,
                    ["pre_tokenizer"] = new JsonObject
                    {
                        ["type"] = "Sequence",
                        ["pretokenizers"] = new JsonArray(
                        [
                            .. preType.Regexes.Select(regex => (JsonNode)new JsonObject
                            {
                                ["type"] = "Split",
                                ["pattern"] = new JsonObject { ["Regex"] = regex },
                                ["behavior"] = "Isolated",
                                ["invert"] = false,
                            }),
                            new JsonObject { ["type"] = "ByteLevel", ["add_prefix_space"] = false, ["trim_offsets"] = true, ["use_regex"] = false },
                        ]),
                    },
                    ["decoder"] = new JsonObject { ["type"] = "ByteLevel", ["add_prefix_space"] = true, ["trim_offsets"] = true, ["use_regex"] = true },
                    ["post_processor"] = null,
                    ["added_tokens"] = added,
                };
                break;
            }

            case "llama":
            {
                var scores = file.GetArray("tokenizer.ggml.scores")?.Items as float[]
                    ?? throw new CheckpointFormatException($"{file.Path}: a llama (SentencePiece) tokenizer needs 'tokenizer.ggml.scores'");
                if (scores.Length != tokens.Length)
                {
                    throw new CheckpointFormatException($"{file.Path}: {scores.Length} token scores for {tokens.Length} tokens");
                }

                // The engine rebuilds LlamaTokenizer pipelines as SentencePiece BPE (Metaspace, byte fallback).
                tokenizerConfig["tokenizer_class"] = "LlamaTokenizer";
                tokenizerConfig["add_bos_token"] = file.GetBool("tokenizer.ggml.add_bos_token") ?? true;
                tokenizerConfig["add_eos_token"] = file.GetBool("tokenizer.ggml.add_eos_token") ?? false;
                tokenizerConfig["add_prefix_space"] = file.GetBool("tokenizer.ggml.add_space_prefix") ?? true;
                tokenizerConfig["legacy"] = false;
                json = new JsonObject
                {
                    ["model"] = new JsonObject
                    {
                        ["type"] = "BPE",
                        ["vocab"] = vocab,
                        ["merges"] = SentencePieceMerges(tokens, scores, TypeOf),
                        ["byte_fallback"] = true,
                    },
                    ["normalizer"] = null,
                    ["pre_tokenizer"] = null,
                    ["decoder"] = null,
                    ["post_processor"] = null,
                    ["added_tokens"] = added,
                };
                break;
            }

            default:
                throw new CheckpointFormatException($"{file.Path}: tokenizer.ggml.model '{model}' is not supported (supported: gpt2, llama)");
        }

        using var configDoc = JsonDocument.Parse(tokenizerConfig.ToJsonString());
        var config = TokenizerConfig.Parse(configDoc.RootElement, null, file.Path);
        using var tokenizerDoc = JsonDocument.Parse(json.ToJsonString(), new JsonDocumentOptions { MaxDepth = 256 });
        return HfTokenizer.FromJson(tokenizerDoc.RootElement, config, file.Path);
    }

    /// <summary>
    /// SentencePiece BPE merges from scores, as Hugging Face's converter derives them: every split of a piece into two
    /// pieces of the vocabulary is a merge, ranked by the merged piece's score (higher first), then by the parts' ids.
    /// </summary>
    private static JsonArray SentencePieceMerges(string[] tokens, float[] scores, Func<int, int> typeOf)
    {
        var ids = new Dictionary<string, int>(StringComparer.Ordinal);
        for (var i = 0; i < tokens.Length; i++)
        {
            if (typeOf(i) is Normal or Unknown)
            {
                ids.TryAdd(tokens[i], i);
            }
        }

        var merges = new List<(float Score, int Left, int Right, string Text)>();
        foreach (var (piece, id) in ids)
        {
            for (var split = 1; split < piece.Length; split++)
            {
                if (char.IsLowSurrogate(piece[split]))
                {
                    continue;
                }

                if (ids.TryGetValue(piece[..split], out var left) && ids.TryGetValue(piece[split..], out var right))
                {
                    merges.Add((scores[id], left, right, piece[..split] + " " + piece[split..]));
                }
            }
        }

        merges.Sort((a, b) => a.Score != b.Score ? b.Score.CompareTo(a.Score) : a.Left != b.Left ? a.Left.CompareTo(b.Left) : a.Right.CompareTo(b.Right));
        return new JsonArray(merges.Select(m => (JsonNode?)JsonValue.Create(m.Text)).ToArray());
    }

    /// <summary>
    /// Writes the tokenizer of a Hugging Face model directory (byte-level BPE tokenizer.json with a supported split
    /// regex) as gpt2-style GGUF tokenizer metadata, padding the vocabulary to <paramref name="vocabSize"/>.
    /// </summary>
    public static void Write(GgufWriter writer, string directory, int vocabSize, HfTokenizer tokenizer)
    {
        var path = Path.Combine(directory, HfTokenizer.FileName);
        using var doc = JsonDocument.Parse(File.ReadAllBytes(path), new JsonDocumentOptions { AllowTrailingCommas = true, MaxDepth = 256 });
        var root = doc.RootElement;
        var model = root.GetProperty("model");
        if (!model.TryGetProperty("merges", out var mergesJson) || !IsByteLevel(root))
        {
            throw new NotSupportedException($"{path}: only byte-level BPE tokenizers can be written to GGUF");
        }

        var regexes = SplitRegexes(root);
        string[] names = ["llama-bpe", "qwen2", "gpt-2", "deepseek-v3"];
        var pre = names.FirstOrDefault(n => PreTypes[n].Regexes.Select(NormaliseRegex).SequenceEqual(regexes.Select(NormaliseRegex)))
            ?? throw new NotSupportedException($"{path}: the pre-tokenizer regexes have no llama.cpp pre-tokenizer name; cannot write them to GGUF");

        var size = Math.Max(vocabSize, tokenizer.VocabSize);
        var tokens = new string[size];
        var types = new int[size];
        foreach (var p in model.GetProperty("vocab").EnumerateObject())
        {
            var id = p.Value.GetInt32();
            tokens[id] = p.Name;
            types[id] = Normal;
        }

        if (root.TryGetProperty("added_tokens", out var addedJson))
        {
            foreach (var a in addedJson.EnumerateArray())
            {
                var id = a.GetProperty("id").GetInt32();
                tokens[id] = a.GetProperty("content").GetString()!;
                types[id] = a.TryGetProperty("special", out var s) && s.GetBoolean() ? Control : UserDefined;
            }
        }

        for (var i = 0; i < size; i++)
        {
            if (tokens[i] is null)
            {
                tokens[i] = $"[PAD{i}]";
                types[i] = Unused;
            }
        }

        var merges = mergesJson.EnumerateArray()
            .Select(m => m.ValueKind == JsonValueKind.String ? m.GetString()! : $"{m[0].GetString()} {m[1].GetString()}")
            .ToArray();
        writer.AddString("tokenizer.ggml.model", "gpt2");
        writer.AddString("tokenizer.ggml.pre", pre);
        writer.AddArray("tokenizer.ggml.tokens", GgufValueType.String, tokens);
        writer.AddArray("tokenizer.ggml.token_type", GgufValueType.Int32, types);
        writer.AddArray("tokenizer.ggml.merges", GgufValueType.String, merges);
        if (tokenizer.BosTokenId is { } bos)
        {
            writer.AddUInt32("tokenizer.ggml.bos_token_id", (uint)bos);
        }

        if (tokenizer.EosTokenId is { } eos)
        {
            writer.AddUInt32("tokenizer.ggml.eos_token_id", (uint)eos);
        }

        var withSpecial = tokenizer.Encode("a", addSpecialTokens: true);
        var plain = tokenizer.Encode("a", addSpecialTokens: false);
        writer.AddBool("tokenizer.ggml.add_bos_token", withSpecial.Length > plain.Length && withSpecial[0] == tokenizer.BosTokenId);
        writer.AddBool("tokenizer.ggml.add_eos_token", withSpecial.Length > plain.Length && withSpecial[^1] == tokenizer.EosTokenId);
        if (tokenizer.Config.ChatTemplate is { } template)
        {
            writer.AddString("tokenizer.chat_template", template);
        }
    }

    /// <summary>
    /// A placeholder byte-level vocabulary for weights without a tokenizer (random benchmark models): the 256 byte
    /// tokens, no merges, and unused padding up to the model's vocabulary, so other GGUF readers accept the file.
    /// </summary>
    public static void WriteBytesOnly(GgufWriter writer, int vocabSize)
    {
        var tokens = new string[Math.Max(vocabSize, 257)];
        var types = new int[tokens.Length];
        for (var i = 0; i < tokens.Length; i++)
        {
            tokens[i] = i < 256 ? ByteLevelAlphabet.ByteToChar[i].ToString() : $"[PAD{i}]";
            types[i] = i < 256 ? Normal : Unused;
        }

        tokens[^1] = "<|endoftext|>";
        types[^1] = Control;
        writer.AddString("tokenizer.ggml.model", "gpt2");
        writer.AddString("tokenizer.ggml.pre", "qwen2");
        writer.AddArray("tokenizer.ggml.tokens", GgufValueType.String, tokens);
        writer.AddArray("tokenizer.ggml.token_type", GgufValueType.Int32, types);
        writer.AddArray("tokenizer.ggml.merges", GgufValueType.String, Array.Empty<string>());
        writer.AddUInt32("tokenizer.ggml.eos_token_id", (uint)(tokens.Length - 1));
        writer.AddUInt32("tokenizer.ggml.padding_token_id", (uint)(tokens.Length - 1));
        writer.AddBool("tokenizer.ggml.add_bos_token", false);
    }

    private static bool IsByteLevel(JsonElement root) =>
        root.TryGetProperty("decoder", out var d) && d.ValueKind == JsonValueKind.Object && d.TryGetProperty("type", out var t) && t.GetString() == "ByteLevel";

    /// <summary>The regexes of the Split steps of tokenizer.json's pre-tokenizer, in order (GPT-2's for a ByteLevel step that splits itself).</summary>
    private static List<string> SplitRegexes(JsonElement root)
    {
        var result = new List<string>();
        if (!root.TryGetProperty("pre_tokenizer", out var pre) || pre.ValueKind != JsonValueKind.Object)
        {
            return [Gpt2Regex];
        }

        var steps = pre.TryGetProperty("pretokenizers", out var list) ? list.EnumerateArray().ToArray() : [pre];
        foreach (var step in steps)
        {
            if (step.TryGetProperty("type", out var type) && type.GetString() == "Split"
                && step.TryGetProperty("pattern", out var pattern) && pattern.TryGetProperty("Regex", out var regex))
            {
                result.Add(regex.GetString()!);
            }
            else if (type.GetString() == "ByteLevel" && step.TryGetProperty("use_regex", out var useRegex) && useRegex.GetBoolean())
            {
                result.Add(Gpt2Regex);
            }
        }

        return result.Count == 0 ? [Gpt2Regex] : result;
    }

    /// <summary>One spelling for regexes that differ only in writing CR, LF or CJK characters literally or as escapes.</summary>
    private static string NormaliseRegex(string regex)
    {
        var text = new System.Text.StringBuilder(regex.Length);
        foreach (var c in regex)
        {
            var spelled = c switch
            {
                '\r' => @"\r",
                '\n' => @"\n",
                > '\u007F' => "\\u" + ((int)c).ToString("X4", System.Globalization.CultureInfo.InvariantCulture),
                _ => null,
            };
            if (spelled is null)
            {
                text.Append(c);
            }
            else
            {
                text.Append(spelled);
            }
        }

        return text.ToString();
    }
}
