using System.Text.Json.Nodes;
using Enclave.Engine.Tokenization;

namespace Enclave.Engine.Tests.Tokenization;

/// <summary>
/// A hand-written SentencePiece-style tokenizer.json (Prepend/Replace normalizer, byte fallback, fused unknowns,
/// Replace/ByteFallback/Fuse/Strip decoder) read with plain tokenizer.json semantics (no tokenizer_config).
/// </summary>
public sealed class SentencePieceBpeTests
{
    private static HfTokenizer Load(bool fuseUnk = true)
    {
        static JsonObject Added(int id, string content, bool special, bool normalized) => new()
        {
            ["id"] = id, ["content"] = content, ["single_word"] = false, ["lstrip"] = false, ["rstrip"] = false,
            ["normalized"] = normalized, ["special"] = special,
        };
        var root = new JsonObject
        {
            ["added_tokens"] = new JsonArray(
                Added(0, "<unk>", true, false), Added(1, "<s>", true, false), Added(2, "</s>", true, false),
                Added(12, "<x>", false, true)),
            ["normalizer"] = new JsonObject
            {
                ["type"] = "Sequence",
                ["normalizers"] = new JsonArray(
                    new JsonObject { ["type"] = "Prepend", ["prepend"] = "\u2581" },
                    new JsonObject { ["type"] = "Replace", ["pattern"] = new JsonObject { ["String"] = " " }, ["content"] = "\u2581" }),
            },
            ["pre_tokenizer"] = null,
            ["post_processor"] = new JsonObject
            {
                ["type"] = "TemplateProcessing",
                ["single"] = new JsonArray(
                    new JsonObject { ["SpecialToken"] = new JsonObject { ["id"] = "<s>", ["type_id"] = 0 } },
                    new JsonObject { ["Sequence"] = new JsonObject { ["id"] = "A", ["type_id"] = 0 } }),
                ["special_tokens"] = new JsonObject
                {
                    ["<s>"] = new JsonObject { ["id"] = "<s>", ["ids"] = new JsonArray(1), ["tokens"] = new JsonArray("<s>") },
                },
            },
            ["decoder"] = new JsonObject
            {
                ["type"] = "Sequence",
                ["decoders"] = new JsonArray(
                    new JsonObject { ["type"] = "Replace", ["pattern"] = new JsonObject { ["String"] = "\u2581" }, ["content"] = " " },
                    new JsonObject { ["type"] = "ByteFallback" },
                    new JsonObject { ["type"] = "Fuse" },
                    new JsonObject { ["type"] = "Strip", ["content"] = " ", ["start"] = 1, ["stop"] = 0 }),
            },
            ["model"] = new JsonObject
            {
                ["type"] = "BPE", ["unk_token"] = "<unk>", ["fuse_unk"] = fuseUnk, ["byte_fallback"] = true,
                ["vocab"] = new JsonObject
                {
                    ["<unk>"] = 0, ["<s>"] = 1, ["</s>"] = 2, ["<0xE2>"] = 3, ["<0x82>"] = 4, ["<0xAC>"] = 5,
                    ["\u2581"] = 6, ["a"] = 7, ["b"] = 8, ["\u2581a"] = 9, ["\u2581ab"] = 10, ["c"] = 11,
                },
                ["merges"] = new JsonArray("\u2581 a", "\u2581a b"),
            },
        };
        using var dir = new TempDirectory();
        dir.Write("tokenizer.json", root.ToJsonString());
        return HfTokenizer.FromDirectory(dir.Path);
    }

    [Fact]
    public void Spaces_become_metaspace_and_missing_characters_fall_back_to_bytes()
    {
        var tok = Load();
        Assert.Equal([10], tok.Encode("ab"));
        Assert.Equal([1, 10], tok.Encode("ab", addSpecialTokens: true));
        // € is E2 82 AC, all present as <0xNN> tokens.
        Assert.Equal([10, 6, 3, 4, 5], tok.Encode("ab €"));
    }

    [Fact]
    public void Characters_without_byte_tokens_become_one_fused_unknown()
    {
        // U+1D518 needs F0 9D 94 98, which the vocabulary lacks.
        Assert.Equal([9, 6, 0], Load(fuseUnk: true).Encode("a \U0001D518\U0001D518"));
        Assert.Equal([9, 6, 0, 0], Load(fuseUnk: false).Encode("a \U0001D518\U0001D518"));
    }

    [Fact]
    public void Normalized_added_tokens_match_the_normalized_text()
    {
        var tok = Load();
        // "<x>" is normalized to "▁<x>", so it only matches where a space precedes it.
        Assert.Equal([9, 12], tok.Encode("a <x>"));
        Assert.Equal([9, 0], tok.Encode("a<x>"));
    }

    [Fact]
    public void Decoder_chain_restores_spaces_bytes_and_strips_the_prefix_space()
    {
        var tok = Load();
        Assert.Equal("<s> ab €", tok.Decode([1, 10, 6, 3, 4, 5]));
        Assert.Equal("ab €", tok.Decode([1, 10, 6, 3, 4, 5], skipSpecialTokens: true));
        Assert.Equal("ab\uFFFD\uFFFD", tok.Decode([10, 3, 4]));
    }

    [Fact]
    public void Streaming_holds_back_byte_fallback_pieces_until_the_character_is_complete()
    {
        var tok = Load();
        var stream = tok.CreateIncrementalDecoder();
        Assert.Equal("ab", stream.Append(10));
        Assert.Equal(" ", stream.Append(6));
        Assert.Equal("", stream.Append(3));
        Assert.Equal("", stream.Append(4));
        Assert.Equal("€", stream.Append(5));
        Assert.Equal("", stream.Flush());
    }
}
