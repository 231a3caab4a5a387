using System.Text.Json.Nodes;
using Enclave.Engine.Tokenization;

namespace Enclave.Engine.Tests.Tokenization;

/// <summary>
/// A tiny hand-written byte-level BPE tokenizer.json whose expected ids are worked out by hand, so the pipeline is
/// checked without the downloaded tokenizers.
/// </summary>
public sealed class ByteLevelBpeTests
{
    // Byte-level alphabet: ' ' is 'Ġ', 'é' is the two bytes C3 A9 shown as 'Ã' '©'.
    private static JsonObject Vocab() => new()
    {
        ["!"] = 0, ["d"] = 1, ["e"] = 2, ["h"] = 3, ["l"] = 4, ["o"] = 5, ["r"] = 6, ["w"] = 7, ["Ġ"] = 8,
        ["he"] = 9, ["ll"] = 10, ["hell"] = 11, ["hello"] = 12, ["Ġw"] = 13, ["or"] = 14, ["Ġwor"] = 15,
        ["Ġworl"] = 16, ["Ġworld"] = 17, ["Ã"] = 20, ["©"] = 21, ["Ã©"] = 22,
    };

    private static readonly string[] Merges =
        ["h e", "l l", "he ll", "hell o", "Ġ w", "o r", "Ġw or", "Ġwor l", "Ġworl d", "Ã ©"];

    private static JsonObject Added(int id, string content, bool special, bool lstrip = false, bool rstrip = false, bool singleWord = false) => new()
    {
        ["id"] = id, ["content"] = content, ["single_word"] = singleWord, ["lstrip"] = lstrip, ["rstrip"] = rstrip,
        ["normalized"] = false, ["special"] = special,
    };

    internal static string Json(bool ignoreMerges = false, string[]? merges = null)
    {
        var mergeArray = new JsonArray();
        foreach (var m in merges ?? Merges)
            mergeArray.Add(m);
        var root = new JsonObject
        {
            ["version"] = "1.0",
            ["added_tokens"] = new JsonArray(
                Added(18, "<|bos|>", special: true),
                Added(19, "<tool>", special: false, lstrip: true, rstrip: true),
                Added(23, "ld", special: false, singleWord: true)),
            ["normalizer"] = new JsonObject { ["type"] = "NFC" },
            ["pre_tokenizer"] = new JsonObject
            {
                ["type"] = "Sequence",
                ["pretokenizers"] = new JsonArray(
                    new JsonObject
                    {
                        ["type"] = "Split", ["pattern"] = new JsonObject { ["Regex"] = @"\p{N}{1,3}" },
                        ["behavior"] = "Isolated", ["invert"] = false,
                    },
                    new JsonObject { ["type"] = "ByteLevel", ["add_prefix_space"] = false, ["use_regex"] = true, ["trim_offsets"] = false }),
            },
            ["post_processor"] = new JsonObject
            {
                ["type"] = "TemplateProcessing",
                ["single"] = new JsonArray(
                    new JsonObject { ["SpecialToken"] = new JsonObject { ["id"] = "<|bos|>", ["type_id"] = 0 } },
                    new JsonObject { ["Sequence"] = new JsonObject { ["id"] = "A", ["type_id"] = 0 } }),
                ["special_tokens"] = new JsonObject
                {
                    ["<|bos|>"] = new JsonObject { ["id"] = "<|bos|>", ["ids"] = new JsonArray(18), ["tokens"] = new JsonArray("<|bos|>") },
                },
            },
            ["decoder"] = new JsonObject { ["type"] = "ByteLevel", ["add_prefix_space"] = false, ["trim_offsets"] = false, ["use_regex"] = false },
            ["model"] = new JsonObject
            {
                ["type"] = "BPE", ["dropout"] = null, ["unk_token"] = null, ["fuse_unk"] = false, ["byte_fallback"] = false,
                ["ignore_merges"] = ignoreMerges, ["vocab"] = Vocab(), ["merges"] = mergeArray,
            },
        };
        return root.ToJsonString();
    }

    private static HfTokenizer Load(string json, string? config = null)
    {
        using var dir = new TempDirectory();
        dir.Write("tokenizer.json", json);
        if (config is not null)
            dir.Write("tokenizer_config.json", config);
        return HfTokenizer.FromDirectory(dir.Path);
    }

    [Fact]
    public void Merges_apply_by_rank_within_each_pre_token()
    {
        var tok = Load(Json());
        Assert.Equal([12, 17, 0], tok.Encode("hello world!"));
        Assert.Equal([18, 12, 17, 0], tok.Encode("hello world!", addSpecialTokens: true));
    }

    [Fact]
    public void Equal_ranks_merge_leftmost_first()
    {
        var tok = Load(Json());
        Assert.Equal([10, 4], tok.Encode("lll"));
        Assert.Equal([10, 10], tok.Encode("llll"));
    }

    [Fact]
    public void Added_tokens_are_matched_before_pre_tokenization_with_strip_and_single_word_rules()
    {
        var tok = Load(Json());
        Assert.Equal([12, 18], tok.Encode("hello<|bos|>"));
        // lstrip/rstrip swallow the spaces around <tool>, so "world" loses its leading Ġ.
        Assert.Equal([12, 19, 7, 14, 4, 1], tok.Encode("hello <tool> world"));
        // single_word: "ld" only counts when it is not part of a word.
        Assert.Equal([0, 23, 0], tok.Encode("!ld!"));
        Assert.Equal([7, 14, 4, 1], tok.Encode("world"));
    }

    [Fact]
    public void Multi_byte_characters_go_through_the_byte_alphabet_and_back()
    {
        var tok = Load(Json());
        // NFC first: "e" + U+0301 composes to é (C3 A9).
        Assert.Equal([22], tok.Encode("e\u0301"));
        Assert.Equal("é", tok.Decode([22]));
        Assert.Equal("hello world!", tok.Decode([18, 12, 17, 0], skipSpecialTokens: true));
        Assert.Equal("<|bos|>hello world!", tok.Decode([18, 12, 17, 0]));
    }

    [Fact]
    public void Incremental_decoder_holds_back_a_split_character()
    {
        var tok = Load(Json());
        var stream = tok.CreateIncrementalDecoder();
        Assert.Equal("hello", stream.Append(12));
        Assert.Equal("", stream.Append(20));   // first byte of é
        Assert.Equal("é", stream.Append(21));  // second byte completes it
        Assert.Equal(" world", stream.Append(17));
        Assert.Equal("", stream.Flush());
    }

    [Fact]
    public void Incremental_decoder_flush_returns_a_dangling_byte()
    {
        var tok = Load(Json());
        var stream = tok.CreateIncrementalDecoder();
        Assert.Equal("hello", stream.Append(12));
        Assert.Equal("", stream.Append(20));
        Assert.Equal("\uFFFD", stream.Flush());
    }

    [Fact]
    public void Ignore_merges_takes_a_word_found_whole_in_the_vocabulary()
    {
        // Without the final merge "Ġworl d", " world" stops at Ġworl + d ...
        string[] merges = ["h e", "l l", "he ll", "hell o", "Ġ w", "o r", "Ġw or", "Ġwor l", "Ã ©"];
        Assert.Equal([16, 1], Load(Json(ignoreMerges: false, merges: merges)).Encode(" world"));
        // ... unless ignore_merges lets the vocabulary entry Ġworld win outright.
        Assert.Equal([17], Load(Json(ignoreMerges: true, merges: merges)).Encode(" world"));
    }

    [Fact]
    public void Split_pre_tokenizer_isolates_digit_groups()
    {
        // Digits are not in the vocabulary and there is no unk token, so they vanish, but they still cut words:
        // "he1llo" becomes "he" | "1" | "llo" and "he" cannot merge with "llo".
        var tok = Load(Json());
        Assert.Equal([9, 10, 5], tok.Encode("he1llo"));
        Assert.Equal([12], tok.Encode("hello"));
    }

    [Fact]
    public void Vocabulary_queries_cover_model_and_added_tokens()
    {
        var tok = Load(Json());
        Assert.Equal(24, tok.VocabSize);
        Assert.Equal(12, tok.TokenToId("hello"));
        Assert.Equal(18, tok.TokenToId("<|bos|>"));
        Assert.Null(tok.TokenToId("nope"));
        Assert.Equal("Ġworld", tok.IdToToken(17));
        Assert.Equal("<tool>", tok.IdToToken(19));
        Assert.Null(tok.IdToToken(999));
        Assert.True(tok.IsSpecial(18));
        Assert.False(tok.IsSpecial(19));
        Assert.False(tok.IsSpecial(12));
    }

    [Fact]
    public void Config_names_bos_and_eos()
    {
        var tok = Load(Json(), """{"bos_token": {"content": "<|bos|>", "lstrip": false}, "eos_token": "!", "add_bos_token": true}""");
        Assert.Equal(18, tok.BosTokenId);
        Assert.Equal(0, tok.EosTokenId);
        Assert.Equal("<|bos|>", tok.Config.BosToken);
    }
}
