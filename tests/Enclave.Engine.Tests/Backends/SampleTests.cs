using Enclave.Engine.Backends;
using Enclave.Engine.Backends.Cpu;
using Enclave.Engine.Backends.Reference;
using Enclave.Engine.Sampling;

namespace Enclave.Engine.Tests.Backends;

/// <summary>
/// <see cref="IBackend.Sample"/> on the CPU and reference backends is the host sampler given the same draw, over a
/// grid of temperatures, top-k, top-p, min-p and draws; the host sampler itself follows the documented semantics
/// (checked against a plain full-sort definition); and taking the draw up front (<see cref="RowSampling.For"/>)
/// gives the tokens <see cref="Sampler.Sample"/> gives from the same random stream.
/// </summary>
public sealed class SampleTests
{
    private static readonly double[] Temperatures = [0, 0.5, 1, 1.3];
    private static readonly int[] TopKs = [0, 1, 5, 50, -1];
    private static readonly double[] TopPs = [1, 0.9, 0.5, 0.01];
    private static readonly double[] MinPs = [0, 0.05];

    public static TheoryData<int> Widths() => [.. new[] { 512, 256, 128, 1 }.Where(CpuSimd.IsSupported)];

    [Theory]
    [MemberData(nameof(Widths))]
    public void Backend_sample_is_the_host_samplers_draw(int width)
    {
        using var cpu = new CpuBackend(1, width);
        using var reference = new ReferenceBackend();
        var random = new Random(width);
        var host = new Sampler();
        foreach (var vocab in new[] { 1, 7, 100, 1000 })
        {
            var (values, rows) = Batch(random, vocab);
            var expected = new int[rows.Length];
            for (var r = 0; r < rows.Length; r++)
            {
                expected[r] = host.SampleRow(values.AsSpan(r * vocab, vocab), rows[r]);
            }

            foreach (IBackend backend in new IBackend[] { cpu, reference })
            {
                Assert.True(backend.SamplesOnBackend, backend.Name);
                using var logits = backend.Allocate(DType.F32, rows.Length, vocab);
                backend.Upload(values, logits);
                var ids = new int[rows.Length];
                backend.Sample(logits, rows, ids);
                for (var r = 0; r < rows.Length; r++)
                {
                    Assert.True(expected[r] == ids[r], $"{backend.Name}, vocab {vocab}, row {r} {rows[r]}: host {expected[r]}, backend {ids[r]}");
                }
            }
        }
    }

    [Fact]
    public void The_gpu_sampling_check_passes_exactly_on_the_cpu_backend()
    {
        // The CPU backend runs the host sampler itself: every row must match, near a boundary or not.
        using var cpu = new CpuBackend(1);
        var results = SampleCheck.Run(cpu, [1, 7, 1000]).ToList();
        Assert.Equal(12, results.Count);
        foreach (var result in results)
        {
            Assert.True(result.Passed && result.Matches == result.Cases, result.ToString());
        }

        Assert.Contains(results, r => r.NearBoundary > 0); // the grid reaches boundaries (ties, cuts) the flags must see
    }

    [Fact]
    public void The_gpu_sampling_check_fails_a_backend_that_draws_differently()
    {
        // The check must be able to fail: the same rows with the draw moved on, as a kernel that misreads u would.
        var c = SampleCheck.Cases([1000], 2).First(x => x.Name.Contains("0.3", StringComparison.Ordinal));
        var shifted = c with { Rows = [.. c.Rows.Select(r => r with { U = 1 - r.U })] };
        var host = new Sampler();
        var ids = new int[c.Rows.Length];
        for (var r = 0; r < ids.Length; r++)
        {
            ids[r] = host.SampleRow(shifted.Logits.AsSpan(r * c.Vocab, c.Vocab), shifted.Rows[r]);
        }

        var result = SampleCheck.Compare(c, ids);
        Assert.False(result.Passed, result.ToString());
        Assert.Contains("host", result.Failures[0], StringComparison.Ordinal);
    }

    [Fact]
    public void Host_sampler_follows_the_documented_semantics()
    {
        var random = new Random(11);
        var host = new Sampler();
        var checkedRows = 0;
        foreach (var vocab in new[] { 1, 7, 100, 1000 })
        {
            var (values, rows) = Batch(random, vocab);
            for (var r = 0; r < rows.Length; r++)
            {
                var logits = values.AsSpan(r * vocab, vocab);
                var expected = Definition(logits, rows[r]);
                Assert.True(expected == host.SampleRow(logits, rows[r]), $"vocab {vocab}, row {r} {rows[r]}: definition {expected}, sampler {host.SampleRow(logits, rows[r])}");
                checkedRows++;
            }
        }

        Assert.True(checkedRows > 1000, $"{checkedRows} rows");
    }

    [Fact]
    public void A_draw_taken_up_front_gives_the_tokens_of_the_random_stream()
    {
        var logits = new float[300];
        var random = new Random(5);
        for (var i = 0; i < logits.Length; i++)
        {
            logits[i] = (float)(random.NextDouble() * 6 - 3);
        }

        foreach (var p in new[]
        {
            new SamplingParams { Temperature = 0 },
            new SamplingParams { Temperature = 0.7, TopP = 0.9 },
            new SamplingParams { Temperature = 1.2, TopK = 20, MinP = 0.05 },
            new SamplingParams { Temperature = 1 },
        })
        {
            var sampler = new Sampler();
            var streamA = new Random(42);
            var streamB = new Random(42);
            for (var step = 0; step < 200; step++)
            {
                var viaStream = sampler.Sample((float[])logits.Clone(), p, [], 0, streamA).TokenId;
                var upFront = sampler.SampleRow(logits, RowSampling.For(p, streamB));
                Assert.Equal(viaStream, upFront);
            }

            // Both consumed the same number of draws (one per sampled token, none when greedy).
            Assert.Equal(streamA.Next(), streamB.Next());
        }
    }

    [Fact]
    public void Masked_and_nan_logits_are_never_drawn()
    {
        var host = new Sampler();
        float[] logits = [float.NegativeInfinity, float.NaN, 1f, float.NegativeInfinity, 0.5f, float.NaN];
        foreach (var u in new[] { 0, 1e-12, 0.3, 0.7, 0.999999 })
        {
            foreach (var row in new[] { new RowSampling(1, 0, 1, 0, u), new RowSampling(1, 3, 1, 0, u), new RowSampling(2, 0, 0.9, 0.01, u) })
            {
                var id = host.SampleRow(logits, row);
                Assert.True(id is 2 or 4, $"{row}: drew {id}");
            }
        }

        Assert.Equal(0, host.SampleRow([float.NegativeInfinity, float.NegativeInfinity], new RowSampling(1, 0, 1, 0, 0.5)));
        Assert.Equal(1, host.SampleRow([0f, float.PositiveInfinity, 3f, float.PositiveInfinity], new RowSampling(1, 5, 0.9, 0, 0.5)));
        Assert.Equal(2, host.SampleRow([0f, 1f, 3f], new RowSampling(1e-300, 0, 1, 0, 0.5)));
    }

    /// <summary>Rows of random logits (some of them -inf) and one parameter set per row from the grid.</summary>
    private static (float[] Values, RowSampling[] Rows) Batch(Random random, int vocab)
    {
        var grid = (from t in Temperatures from k in TopKs from topP in TopPs from minP in MinPs select (t, k, topP, minP)).ToArray();
        double[] draws = [0, 0.3, 0.999999];
        var rows = new RowSampling[grid.Length * (draws.Length + 1)];
        var values = new float[rows.Length * vocab];
        for (var r = 0; r < rows.Length; r++)
        {
            var (t, k, topP, minP) = grid[r % grid.Length];
            var u = r / grid.Length < draws.Length ? draws[r / grid.Length] : random.NextDouble();
            rows[r] = new RowSampling(t, k == -1 ? vocab + 3 : k, topP, minP, u);
            var scale = 1 + (r % 5);
            for (var i = 0; i < vocab; i++)
            {
                values[(r * vocab) + i] = random.Next(50) == 0 && vocab > 1 ? float.NegativeInfinity : (float)(random.NextDouble() * scale * 2 - scale);
            }
        }

        return (values, rows);
    }

    /// <summary>
    /// The semantics written out without shortcuts: p = softmax(logits / T) (float exp, double sum, float p); without a
    /// filter the draw walks the vocabulary in index order; with one, tokens in descending p (ties by index), top-k,
    /// min-p (p >= p_max * min_p, at least one), top-p (shortest prefix whose mass reaches top_p), then the first kept
    /// token whose cumulative mass reaches u * total and whose p is not 0.
    /// </summary>
    internal static int Definition(ReadOnlySpan<float> logits, RowSampling row)
    {
        if (row.IsGreedy)
        {
            return Sampler.ArgMax(logits);
        }

        var max = float.NegativeInfinity;
        foreach (var v in logits)
        {
            max = v > max ? v : max;
        }

        if (max == float.NegativeInfinity)
        {
            return 0;
        }

        var invT = (float)(1.0 / row.Temperature);
        var e = new float[logits.Length];
        double sum = 0;
        for (var i = 0; i < e.Length; i++)
        {
            e[i] = MathF.Exp((logits[i] - max) * invT);
            e[i] = float.IsNaN(e[i]) ? 0 : e[i];
            sum += e[i];
        }

        if (!(sum > 0))
        {
            return Sampler.ArgMax(logits);
        }

        var p = e.Select(x => (float)(x / sum)).ToArray();
        var order = Enumerable.Range(0, p.Length).ToList();
        if (row.Filtered)
        {
            order = [.. order.OrderByDescending(i => p[i]).ThenBy(i => i)];
            if (row.TopK > 0 && row.TopK < order.Count)
            {
                order = order[..row.TopK];
            }

            if (row.MinP > 0)
            {
                var threshold = p[order[0]] * row.MinP;
                order = [order[0], .. order.Skip(1).Where(i => p[i] >= threshold)];
            }

            if (row.TopP < 1)
            {
                double cumulative = 0;
                var keep = 0;
                foreach (var i in order)
                {
                    keep++;
                    cumulative += p[i];
                    if (cumulative >= row.TopP)
                    {
                        break;
                    }
                }

                order = order[..keep];
            }
        }

        var r = row.U * order.Sum(i => (double)p[i]);
        foreach (var i in order)
        {
            r -= p[i];
            if (r <= 0 && p[i] > 0)
            {
                return i;
            }
        }

        return order[^1];
    }
}
