using Enclave.Engine.Generation;
using Enclave.Engine.Sampling;

namespace Enclave.Engine.Tests.Sampling;

public sealed class SamplerTests
{
    private static float[] Logits() => [2.0f, 1.0f, 0.5f, -1.0f, 3.0f, 0.0f];

    [Fact]
    public void GreedyPicksTheArgmax()
    {
        var s = new Sampler().Sample(Logits(), new SamplingParams { Temperature = 0 }, [], 0, new Random(1));
        Assert.Equal(4, s.TokenId);
    }

    [Fact]
    public void TheSameSeedGivesTheSameTokens()
    {
        var p = new SamplingParams { Temperature = 1.5 };
        int[] Draw(int seed)
        {
            var sampler = new Sampler();
            var random = new Random(seed);
            return [.. Enumerable.Range(0, 50).Select(_ => sampler.Sample(Logits(), p, [], 0, random).TokenId)];
        }

        Assert.Equal(Draw(7), Draw(7));
        Assert.NotEqual(Draw(7), Draw(8));
    }

    [Fact]
    public void TopKAndTopPAndMinPRestrictTheCandidates()
    {
        var sampler = new Sampler();
        var random = new Random(3);
        var seen = new HashSet<int>();
        for (var i = 0; i < 300; i++)
        {
            seen.Add(sampler.Sample(Logits(), new SamplingParams { Temperature = 5, TopK = 2 }, [], 0, random).TokenId);
        }

        Assert.Equal([0, 4], seen.Order());
        seen.Clear();
        for (var i = 0; i < 300; i++)
        {
            // softmax(Logits) ≈ [.23, .08, .05, .01, .62, .03]: 0.62 < 0.7 so token 0 must join token 4.
            seen.Add(sampler.Sample(Logits(), new SamplingParams { Temperature = 1, TopP = 0.7 }, [], 0, random).TokenId);
        }

        Assert.Equal([0, 4], seen.Order());
        seen.Clear();
        for (var i = 0; i < 300; i++)
        {
            seen.Add(sampler.Sample(Logits(), new SamplingParams { Temperature = 1, MinP = 0.3 }, [], 0, random).TokenId);
        }

        Assert.Equal([0, 4], seen.Order());
    }

    [Fact]
    public void PenaltiesFollowOpenAiAndVllmSemantics()
    {
        // Output history [4, 4]: frequency 1.0 subtracts 2 from token 4 (3 → 1), presence 0.5 once more (→ 0.5): token 0 wins.
        var s = new Sampler().Sample(Logits(), new SamplingParams { Temperature = 0, FrequencyPenalty = 1.0, PresencePenalty = 0.5 }, [4, 4], 0, new Random(1));
        Assert.Equal(0, s.TokenId);
        // Repetition penalty divides positive logits of seen tokens (prompt included): 3 / 2 = 1.5 < 2.
        var r = new Sampler().Sample(Logits(), new SamplingParams { Temperature = 0, RepetitionPenalty = 2.0 }, [4], 1, new Random(1));
        Assert.Equal(0, r.TokenId);
        // Frequency/presence look only at the output: the same history as prompt changes nothing.
        var prompt = new Sampler().Sample(Logits(), new SamplingParams { Temperature = 0, FrequencyPenalty = 2.0 }, [4, 4], 2, new Random(1));
        Assert.Equal(4, prompt.TokenId);
    }

    [Fact]
    public void LogprobsAreThoseOfTheRawDistribution()
    {
        var logits = Logits();
        var s = new Sampler().Sample(logits, new SamplingParams { Temperature = 0, Logprobs = 2 }, [], 0, new Random(1));
        var lse = Math.Log(Logits().Sum(v => Math.Exp(v)));
        Assert.Equal(3.0 - lse, s.Logprob, 5);
        Assert.Equal([4, 0], s.TopLogprobs!.Select(t => t.TokenId));
        Assert.Equal(2.0 - lse, s.TopLogprobs![1].Logprob, 5);
    }

    [Fact]
    public void SuppressedTokensAreNeverPicked()
    {
        var s = new Sampler().Sample(Logits(), new SamplingParams { Temperature = 0 }, [], 0, new Random(1), [4]);
        Assert.Equal(0, s.TokenId);
    }

    [Theory]
    [InlineData("hello world", new[] { "wor" }, "hello ")]
    [InlineData("abc</s>def", new[] { "</s>" }, "abc")]
    [InlineData("no stop here", new[] { "zzz" }, "no stop here")]
    public void StopStringsAreFoundAcrossPiecesAndNeverLeak(string text, string[] stops, string expected)
    {
        // Feed one character at a time: the worst split across tokens.
        var matcher = new StopStringMatcher(stops);
        var output = "";
        string? matched = null;
        foreach (var c in text)
        {
            var (emit, m) = matcher.Append(c.ToString());
            output += emit;
            foreach (var stop in stops)
            {
                Assert.DoesNotContain(stop, output);
            }

            if (m is not null)
            {
                matched = m;
                break;
            }
        }

        if (matched is null)
        {
            output += matcher.Flush();
        }

        Assert.Equal(expected, output);
    }
}
