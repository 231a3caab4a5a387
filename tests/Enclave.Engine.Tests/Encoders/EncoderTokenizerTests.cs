using Enclave.Engine.Tokenization;

namespace Enclave.Engine.Tests.Encoders;

/// <summary>WordPiece (BERT) and Unigram (XLM-RoBERTa) tokenizers against the ids transformers gave for the fixtures.</summary>
public sealed class EncoderTokenizerTests
{
    public static TheoryData<string> Embedders() => [.. EncoderFixtures.EmbedderNames];

    [Theory]
    [MemberData(nameof(Embedders))]
    public void Single_texts_get_the_reference_ids(string name)
    {
        var tokenizer = HfTokenizer.FromDirectory(EncoderFixtures.Directory(name));
        foreach (var c in EncoderFixtures.Load(name).Cases)
        {
            var (ids, types) = tokenizer.AddSpecialTokens(tokenizer.Encode(c.Text!));
            Assert.True(c.Ids.SequenceEqual(ids), $"{name} '{c.Text}': expected [{string.Join(", ", c.Ids)}], got [{string.Join(", ", ids)}]");
            Assert.All(types, t => Assert.Equal(0, t));
            Assert.Equal(c.Ids, tokenizer.Encode(c.Text!, addSpecialTokens: true));
        }
    }

    [Fact]
    public void Reranker_pairs_get_the_reference_ids()
    {
        var tokenizer = HfTokenizer.FromDirectory(EncoderFixtures.Directory(EncoderFixtures.RerankerName));
        foreach (var c in EncoderFixtures.Load(EncoderFixtures.RerankerName).Cases)
        {
            var (ids, types) = tokenizer.AddSpecialTokens(tokenizer.Encode(c.Query!), tokenizer.Encode(c.Passage!));
            Assert.True(c.Ids.SequenceEqual(ids), $"'{c.Query}' / '{c.Passage}': expected [{string.Join(", ", c.Ids)}], got [{string.Join(", ", ids)}]");
            Assert.All(types, t => Assert.Equal(0, t));
        }

        Assert.Equal(4, tokenizer.SpecialTokenCount(pair: true));
        Assert.Equal(2, tokenizer.SpecialTokenCount(pair: false));
    }

    [Fact]
    public void Bert_pairs_type_the_second_sequence_one()
    {
        var tokenizer = HfTokenizer.FromDirectory(EncoderFixtures.Directory("tiny-bge-bert"));
        var (ids, types) = tokenizer.AddSpecialTokens(tokenizer.Encode("what is it"), tokenizer.Encode("a test"));
        var a = tokenizer.Encode("what is it").Length;
        Assert.Equal(tokenizer.TokenToId("[CLS]"), ids[0]);
        Assert.Equal(tokenizer.TokenToId("[SEP]"), ids[a + 1]);
        Assert.Equal(tokenizer.TokenToId("[SEP]"), ids[^1]);
        Assert.Equal(Enumerable.Repeat(0, a + 2), types.Take(a + 2));
        Assert.All(types.Skip(a + 2), t => Assert.Equal(1, t));
    }

    [Fact]
    public void WordPiece_decodes_subwords_back_into_words()
    {
        var tokenizer = HfTokenizer.FromDirectory(EncoderFixtures.Directory("tiny-bge-bert"));
        var ids = tokenizer.Encode("HNSW graphs give fast search.");
        Assert.Equal("hnsw graphs give fast search.", tokenizer.Decode(ids));
    }

    [Fact]
    public void Unigram_decodes_metaspace_back_into_spaces()
    {
        var tokenizer = HfTokenizer.FromDirectory(EncoderFixtures.Directory("tiny-bge-m3"));
        var text = "What is a private deployment?";
        Assert.Equal(text, tokenizer.Decode(tokenizer.Encode(text)));
    }
}
