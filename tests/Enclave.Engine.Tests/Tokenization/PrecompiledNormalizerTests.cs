using System.Text.Json;
using Enclave.Engine.Tokenization;
using Enclave.Engine.Tests.Support;

namespace Enclave.Engine.Tests.Tokenization;

/// <summary>
/// SentencePiece's precompiled charsmap (nmt_nfkc, as XLM-RoBERTa and bge-m3 ship it) against the `tokenizers`
/// library on a fixture made by tools/fixtures/make_precompiled_reference.py: full-width forms, ligatures, circled
/// and squared characters, half-width katakana, combining accents, exotic spaces, zero-width characters, emoji.
/// </summary>
public sealed class PrecompiledNormalizerTests
{
    private static readonly string Fixtures = Path.Combine(Support.Fixtures.RepositoryRoot, "tests", "fixtures", "tokenizers");

    public static TheoryData<int> Cases()
    {
        var data = new TheoryData<int>();
        for (var i = 0; i < Reference().GetProperty("cases").GetArrayLength(); i++)
        {
            data.Add(i);
        }

        return data;
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void NormalizesAndTokenizesLikeTheTokenizersLibrary(int index)
    {
        var c = Reference().GetProperty("cases")[index];
        var text = c.GetProperty("text").GetString()!;
        using var json = JsonDocument.Parse(File.ReadAllText(Path.Combine(Fixtures, "precompiled-unigram.tokenizer.json")));
        var normalizer = TokenizerJson.Normalizer(json.RootElement.GetProperty("normalizer"), "fixture")!;
        Assert.Equal(c.GetProperty("normalized").GetString(), normalizer.Normalize(text));

        var tokenizer = Load();
        var expected = c.GetProperty("ids").EnumerateArray().Select(e => e.GetInt32()).ToArray();
        Assert.Equal(expected, tokenizer.Encode(text, addSpecialTokens: false));
    }

    [Fact]
    public void ACorruptCharsmapIsRefusedWithTheFileNamed()
    {
        var error = Assert.Throws<InvalidDataException>(() => new PrecompiledNormalizer([8, 0, 0, 0, 1, 2], "broken/tokenizer.json"));
        Assert.Contains("broken/tokenizer.json", error.Message, StringComparison.Ordinal);
    }

    private static JsonElement Reference() =>
        JsonDocument.Parse(File.ReadAllText(Path.Combine(Fixtures, "precompiled-unigram.reference.json"))).RootElement;

    private static HfTokenizer Load()
    {
        var dir = Directory.CreateTempSubdirectory("enclave-precompiled-");
        try
        {
            File.Copy(Path.Combine(Fixtures, "precompiled-unigram.tokenizer.json"), Path.Combine(dir.FullName, "tokenizer.json"));
            return HfTokenizer.FromDirectory(dir.FullName);
        }
        finally
        {
            dir.Delete(true);
        }
    }
}
