using System.Globalization;
using System.Text.Json;
using Enclave.Engine.Tests.Cli;

namespace Enclave.Engine.Tests.Encoders;

/// <summary><c>enclave embed</c> and <c>enclave bench embed</c> as real processes.</summary>
public sealed class EncoderCliTests
{
    [Fact]
    public void Embed_json_prints_the_reference_vectors()
    {
        var reference = EncoderFixtures.Load("tiny-bge-m3");
        var (code, stdout, stderr) = CliTests.Enclave(null, "embed", "--model", EncoderFixtures.Directory("tiny-bge-m3"), "--device", "cpu", "--json",
            reference.Cases[0].Text!, reference.Cases[1].Text!);
        Assert.True(code == 0, stderr);
        using var doc = JsonDocument.Parse(stdout);
        Assert.Equal(64, doc.RootElement.GetProperty("dimensions").GetInt32());
        Assert.Equal(reference.Cases[0].Ids.Length + reference.Cases[1].Ids.Length, doc.RootElement.GetProperty("prompt_tokens").GetInt32());
        var data = doc.RootElement.GetProperty("data");
        for (var i = 0; i < 2; i++)
        {
            Assert.Equal(reference.Cases[i].Text, data[i].GetProperty("text").GetString());
            var vector = data[i].GetProperty("embedding").EnumerateArray().Select(v => v.GetSingle()).ToArray();
            Assert.True(vector.Zip(reference.Cases[i].Embedding).All(p => Math.Abs(p.First - p.Second) <= 1e-4), $"text {i} differs from the reference");
        }
    }

    [Fact]
    public void Embed_prints_one_line_of_values_per_text_and_refuses_cuda_plainly()
    {
        var (code, stdout, stderr) = CliTests.Enclave(null, "embed", "--model", EncoderFixtures.Directory("tiny-bge-bert"), "--device", "cpu", "a", "b");
        Assert.True(code == 0, stderr);
        var lines = stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal(2, lines.Length);
        Assert.All(lines, l => Assert.Equal(64, l.Split(' ').Select(v => float.Parse(v, CultureInfo.InvariantCulture)).Count()));

        var (cudaCode, _, cudaError) = CliTests.Enclave(null, "embed", "--model", EncoderFixtures.Directory("tiny-bge-bert"), "--device", "cuda", "a");
        Assert.Equal(2, cudaCode);
        Assert.Contains("CPU only", cudaError, StringComparison.Ordinal);
    }

    [Fact]
    public void Bench_embed_reports_sequences_per_second_for_a_real_checkpoint()
    {
        var (code, stdout, stderr) = CliTests.Enclave(null, "bench", "embed", "--model", EncoderFixtures.Directory(EncoderFixtures.RerankerName),
            "--device", "cpu", "--threads", "1", "--batch", "3", "--seq-len", "40", "--passes", "1");
        Assert.True(code == 0, stderr);
        Assert.Contains("XLMRobertaForSequenceClassification", stdout, StringComparison.Ordinal);
        Assert.Matches(@"throughput\s+[0-9.]+ sequences/s", stdout);

        var (tooLong, _, error) = CliTests.Enclave(null, "bench", "embed", "--model", EncoderFixtures.Directory("tiny-bge-bert"), "--device", "cpu", "--seq-len", "500");
        Assert.Equal(2, tooLong);
        Assert.Contains("128 positions", error, StringComparison.Ordinal);
    }

    [Fact]
    public void Serve_without_any_model_says_what_to_give()
    {
        var (code, _, stderr) = CliTests.Enclave(null, "serve", "--no-auth", "--port", "0");
        Assert.Equal(2, code);
        Assert.Contains("--embedding-model", stderr, StringComparison.Ordinal);
    }
}
