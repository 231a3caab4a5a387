using Enclave.Engine.Tokenization;

namespace Enclave.Engine.Tests.Tokenization;

/// <summary>One loaded tokenizer serves concurrent requests; results must not depend on interleaving.</summary>
public sealed class ConcurrencyTests
{
    [Theory]
    [InlineData("qwen3")]
    [InlineData("llama2")]
    [InlineData("deepseek_v3")]
    public void Parallel_encoding_gives_the_reference_ids(string name)
    {
        // A fresh instance so the per-word cache starts empty and is filled concurrently.
        var tok = HfTokenizer.FromDirectory(TokenizerFixtures.TokenizerDirectory(name));
        var cases = TokenizerFixtures.LoadReference(name).Encode;
        var mismatches = 0;
        Parallel.For(0, cases.Count * 16, new ParallelOptions { MaxDegreeOfParallelism = 8 }, i =>
        {
            var c = cases[i % cases.Count];
            if (!tok.Encode(c.Text, c.AddSpecialTokens).AsSpan().SequenceEqual(c.Ids))
                Interlocked.Increment(ref mismatches);
        });
        Assert.Equal(0, mismatches);
    }
}
