using Enclave.Engine.Tokenization;

namespace Enclave.Engine.Tests.Tokenization;

/// <summary>Broken or unsupported input must fail loudly and name the file at fault.</summary>
public sealed class LoadErrorTests
{
    [Fact]
    public void Missing_tokenizer_json_names_the_path()
    {
        using var dir = new TempDirectory();
        var e = Assert.Throws<FileNotFoundException>(() => HfTokenizer.FromDirectory(dir.Path));
        Assert.Contains(Path.Combine(dir.Path, "tokenizer.json"), e.Message);
        Assert.Equal(Path.Combine(dir.Path, "tokenizer.json"), e.FileName);
    }

    [Fact]
    public void Corrupt_tokenizer_json_names_the_file()
    {
        using var dir = new TempDirectory();
        dir.Write("tokenizer.json", "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0,");
        var e = Assert.Throws<InvalidDataException>(() => HfTokenizer.FromDirectory(dir.Path));
        Assert.Contains("tokenizer.json", e.Message);
    }

    [Fact]
    public void Corrupt_tokenizer_config_names_the_file()
    {
        using var dir = new TempDirectory();
        dir.Write("tokenizer.json", ByteLevelBpeTests.Json());
        dir.Write("tokenizer_config.json", "{ bos_token: ");
        var e = Assert.Throws<InvalidDataException>(() => HfTokenizer.FromDirectory(dir.Path));
        Assert.Contains("tokenizer_config.json", e.Message);
    }

    [Theory]
    [InlineData("Unigram", "vocab")]
    [InlineData("WordPiece", "unk_token")]
    public void Encoder_model_with_a_bpe_body_is_rejected_with_what_is_missing(string type, string missing)
    {
        using var dir = new TempDirectory();
        dir.Write("tokenizer.json", ByteLevelBpeTests.Json().Replace("\"type\":\"BPE\"", $"\"type\":\"{type}\"", StringComparison.Ordinal));
        var e = Assert.Throws<InvalidDataException>(() => HfTokenizer.FromDirectory(dir.Path));
        Assert.Contains(type, e.Message);
        Assert.Contains(missing, e.Message);
        Assert.Contains("tokenizer.json", e.Message);
    }

    [Theory]
    [InlineData("SomethingNew")]
    public void Unknown_model_type_is_rejected_by_name(string type)
    {
        using var dir = new TempDirectory();
        dir.Write("tokenizer.json", ByteLevelBpeTests.Json().Replace("\"type\":\"BPE\"", $"\"type\":\"{type}\"", StringComparison.Ordinal));
        var e = Assert.Throws<NotSupportedException>(() => HfTokenizer.FromDirectory(dir.Path));
        Assert.Contains(type, e.Message);
        Assert.Contains("tokenizer.json", e.Message);
    }

    [Fact]
    public void Unsupported_component_type_is_rejected_by_name()
    {
        using var dir = new TempDirectory();
        dir.Write("tokenizer.json", ByteLevelBpeTests.Json().Replace("\"type\":\"NFC\"", "\"type\":\"Nmt\"", StringComparison.Ordinal));
        var e = Assert.Throws<NotSupportedException>(() => HfTokenizer.FromDirectory(dir.Path));
        Assert.Contains("Nmt", e.Message);
        Assert.Contains("normalizer", e.Message);
        Assert.Contains("tokenizer.json", e.Message);
    }

    [Fact]
    public void Merge_naming_an_unknown_token_is_rejected()
    {
        using var dir = new TempDirectory();
        dir.Write("tokenizer.json", ByteLevelBpeTests.Json(merges: ["h e", "x y"]));
        var e = Assert.Throws<InvalidDataException>(() => HfTokenizer.FromDirectory(dir.Path));
        Assert.Contains("x y", e.Message);
    }

    [Fact]
    public void Missing_model_section_is_rejected()
    {
        using var dir = new TempDirectory();
        dir.Write("tokenizer.json", "{\"added_tokens\": []}");
        var e = Assert.Throws<InvalidDataException>(() => HfTokenizer.FromDirectory(dir.Path));
        Assert.Contains("model", e.Message);
    }
}
