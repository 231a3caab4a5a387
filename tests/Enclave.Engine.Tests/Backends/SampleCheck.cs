using Enclave.Engine.Backends;
using Enclave.Engine.Sampling;

namespace Enclave.Engine.Tests.Backends;

/// <summary>
/// Holds a backend's <see cref="IBackend.Sample"/> to the host sampler (<see cref="Sampler.SampleRow"/>) for the same
/// draw, over random logits rows and a grid of temperature {0, 0.5, 1, 1.3}, top_k {0, 1, 5, 50, vocab + 3},
/// top_p {1, 0.9, 0.5, 0.01}, min_p {0, 0.05} and draws {0, 0.3, 0.999999, random}. Shared by the GPU check (the CUDA
/// kernel) and the CPU tests.
/// <para>
/// A backend that computes the probabilities in its own arithmetic (a device exp within 2 ulp, a float product for the
/// host's double division, fixed-point mass) moves each probability by at most ~4e-7 of itself and the normaliser by
/// as much. Such a difference can change the token only where a decision is that close to its boundary: the draw or
/// top_p within ~1e-6 (relative) of a cumulative mass, two probabilities on either side of a cut (top-k, top-p, the
/// drawn token and its neighbours in the order) or the min_p threshold within 1e-6 of each other, or a drawn token of
/// probability below 1e-15. The host reference flags these rows before comparing: a flagged row that differs is
/// counted as near-boundary; any other difference is a failure.
/// </para>
/// </summary>
internal static class SampleCheck
{
    /// <summary>Relative closeness of two probabilities (or a probability and the min_p threshold) that is flagged.</summary>
    public const double ProbabilityWindow = 1e-6;

    /// <summary>Relative closeness of a cumulative mass to the draw or to top_p that is flagged.</summary>
    public const double MassWindow = 1.5e-6;

    /// <summary>One batch: logits [rows, vocab] and a parameter set per row.</summary>
    public sealed record Case(string Name, int Vocab, float[] Logits, RowSampling[] Rows);

    public sealed record Result(string Name, int Cases, int Matches, int NearBoundary, int NearBoundaryDiffering, IReadOnlyList<string> Failures, string Reasons = "")
    {
        public bool Passed => Failures.Count == 0;

        public override string ToString()
        {
            var line = $"{(Passed ? "ok  " : "FAIL")} sample {Name}: {Cases} cases, {Matches} match the host sampler, {NearBoundary} near a boundary ({NearBoundaryDiffering} of them differ), {Failures.Count} failures{Reasons}";
            return Failures.Count == 0 ? line : line + Environment.NewLine + string.Join(Environment.NewLine, Failures.Take(20).Select(f => "       " + f));
        }
    }

    /// <summary>The grid: one batch per vocabulary size and draw kind, a row per parameter set.</summary>
    public static IEnumerable<Case> Cases(int[] vocabs, int seed)
    {
        double[] temperatures = [0, 0.5, 1, 1.3];
        int[] topKs = [0, 1, 5, 50, -1];
        double[] topPs = [1, 0.9, 0.5, 0.01];
        double[] minPs = [0, 0.05];
        var grid = (from t in temperatures from k in topKs from p in topPs from m in minPs select (t, k, p, m)).ToArray();
        var random = new Random(seed);
        foreach (var vocab in vocabs)
        {
            foreach (var (drawName, draw) in new (string, double)[] { ("u=0", 0), ("u=0.3", 0.3), ("u=0.999999", 0.999999), ("u=random", -1) })
            {
                var rows = new RowSampling[grid.Length];
                var logits = new float[(long)rows.Length * vocab];
                for (var r = 0; r < rows.Length; r++)
                {
                    var (t, k, p, m) = grid[r];
                    rows[r] = new RowSampling(t, k == -1 ? vocab + 3 : k, p, m, draw >= 0 ? draw : random.NextDouble());
                    FillRow(random, logits.AsSpan(r * vocab, vocab), r);
                }

                yield return new Case($"vocab {vocab}, {drawName}", vocab, logits, rows);
            }
        }
    }

    /// <summary>Samples every case on the backend (twice: the result must not change from run to run) and compares.</summary>
    public static IEnumerable<Result> Run(IBackend backend, int[] vocabs, int seed = 1)
    {
        foreach (var c in Cases(vocabs, seed))
        {
            using var logits = backend.Allocate(DType.F32, c.Rows.Length, c.Vocab);
            backend.Upload(c.Logits, logits);
            var ids = new int[c.Rows.Length];
            var again = new int[c.Rows.Length];
            backend.Sample(logits, c.Rows, ids);
            backend.Sample(logits, c.Rows, again);
            var result = Compare(c, ids);
            var unstable = Enumerable.Range(0, ids.Length).Where(r => ids[r] != again[r]).Select(r => $"row {r} {c.Rows[r]}: {ids[r]} then {again[r]} on the same logits").ToList();
            yield return unstable.Count == 0 ? result : result with { Failures = [.. result.Failures, .. unstable] };
        }
    }

    /// <summary>Compares a backend's ids for a case with the host sampler, flagging near-boundary rows.</summary>
    public static Result Compare(Case c, ReadOnlySpan<int> ids)
    {
        var sampler = new Sampler();
        var failures = new List<string>();
        int matches = 0, near = 0, nearDiffering = 0;
        var reasons = new SortedDictionary<string, int>(StringComparer.Ordinal);
        for (var r = 0; r < c.Rows.Length; r++)
        {
            var logits = c.Logits.AsSpan(r * c.Vocab, c.Vocab);
            var expected = sampler.SampleRow(logits, c.Rows[r]);
            var reason = c.Rows[r].IsGreedy ? null : NearBoundary(logits, c.Rows[r]);
            if (reason is not null)
            {
                near++;
                reasons[reason] = reasons.GetValueOrDefault(reason) + 1;
            }

            if (ids[r] == expected)
            {
                matches++;
            }
            else if (reason is not null)
            {
                nearDiffering++;
            }
            else
            {
                failures.Add($"row {r} {c.Rows[r]}: host {expected}, backend {ids[r]}{Describe(logits, c.Rows[r], expected, ids[r])}");
            }
        }

        var reasonText = reasons.Count == 0 ? "" : $" [near: {string.Join("; ", reasons.Select(kv => $"{kv.Value} {kv.Key}"))}]";
        return new Result(c.Name, c.Rows.Length, matches, near, nearDiffering, failures, reasonText);
    }

    /// <summary>
    /// Why a backend's own arithmetic could change this row's token, or null: the host's probabilities (float exp,
    /// double sum, float p) in the host's order, and each decision's distance to its boundary.
    /// </summary>
    public static string? NearBoundary(ReadOnlySpan<float> logits, RowSampling row)
    {
        var p = Probabilities(logits, row);
        if (p is null)
        {
            return null;
        }

        static bool Close(double a, double b) => Math.Abs(a - b) <= ProbabilityWindow * Math.Max(Math.Abs(a), Math.Abs(b));

        var order = Enumerable.Range(0, p.Length).ToArray();
        if (row.Filtered)
        {
            order = [.. order.OrderByDescending(i => p[i]).ThenBy(i => i)];
        }

        var count = order.Length;
        if (row.Filtered && row.TopK > 0 && row.TopK < count)
        {
            if (Close(p[order[row.TopK - 1]], p[order[row.TopK]]))
            {
                return "top_k cut between near-equal probabilities";
            }

            count = row.TopK;
        }

        if (row.MinP > 0)
        {
            var threshold = p[order[0]] * row.MinP;
            for (var i = 1; i < count; i++)
            {
                if (Close(p[order[i]], threshold))
                {
                    return "a probability at the min_p threshold";
                }
            }

            var keep = 1;
            while (keep < count && p[order[keep]] >= threshold)
            {
                keep++;
            }

            count = keep;
        }

        if (row.TopP < 1.0)
        {
            double cumulative = 0;
            var keep = 0;
            while (keep < count)
            {
                var before = cumulative;
                cumulative += p[order[keep]];
                keep++;
                if (Math.Abs(cumulative - row.TopP) <= MassWindow * row.TopP || Math.Abs(before - row.TopP) <= MassWindow * row.TopP)
                {
                    return "top_p mass at the boundary";
                }

                if (cumulative >= row.TopP)
                {
                    break;
                }
            }

            if (keep < count && Close(p[order[keep - 1]], p[order[keep]]))
            {
                return "top_p cut between near-equal probabilities";
            }

            count = keep;
        }

        double total = 0;
        for (var i = 0; i < count; i++)
        {
            total += p[order[i]];
        }

        var r = row.U * total;
        double mass = 0;
        for (var i = 0; i < count; i++)
        {
            var before = mass;
            mass += p[order[i]];
            if (p[order[i]] <= 0)
            {
                continue;
            }

            // The first token whose cumulative mass reaches r. Not a boundary: a draw of 0 (before == 0), nor the end of
            // the kept mass after the last token that can be drawn (both sides clamp the draw to it).
            var lastDrawable = true;
            for (var j = i + 1; j < count && lastDrawable; j++)
            {
                lastDrawable = p[order[j]] <= 0;
            }

            if ((before > 0 && Math.Abs(r - before) <= MassWindow * Math.Max(r, before)) || (!lastDrawable && Math.Abs(mass - r) <= MassWindow * Math.Max(r, mass)))
            {
                return "draw at a cumulative-mass boundary";
            }

            if (mass >= r)
            {
                if (p[order[i]] < 1e-15)
                {
                    return "drawn token of probability below 1e-15";
                }

                // With a filter the order is by probability: a near-equal neighbour could swap with the drawn token.
                if (row.Filtered && ((i > 0 && Close(p[order[i - 1]], p[order[i]])) || (i + 1 < count && Close(p[order[i + 1]], p[order[i]]))))
                {
                    return "drawn token next to a near-equal probability";
                }

                return null;
            }
        }

        return "draw beyond the kept mass";
    }

    /// <summary>The host sampler's probabilities (float exp of (l - max) / T, double sum, float p), or null where the host takes the argmax.</summary>
    private static float[]? Probabilities(ReadOnlySpan<float> logits, RowSampling row)
    {
        var max = float.NegativeInfinity;
        foreach (var v in logits)
        {
            max = v > max ? v : max;
        }

        if (!(max > float.NegativeInfinity))
        {
            return null;
        }

        var invT = (float)(1.0 / row.Temperature);
        var e = new float[logits.Length];
        double sum = 0;
        for (var i = 0; i < e.Length; i++)
        {
            var x = MathF.Exp((logits[i] - max) * invT);
            e[i] = float.IsNaN(x) ? 0 : x;
            sum += e[i];
        }

        if (!(sum > 0))
        {
            return null; // a +inf logit: the argmax, no boundary
        }

        var p = new float[e.Length];
        for (var i = 0; i < e.Length; i++)
        {
            p[i] = (float)(e[i] / sum);
        }

        return p;
    }

    private static string Describe(ReadOnlySpan<float> logits, RowSampling row, int expected, int actual)
    {
        var p = Probabilities(logits, row);
        if (p is null)
        {
            return " (no logit above -inf)";
        }

        var values = logits.ToArray();
        string Token(int id) => (uint)id < (uint)p.Length ? $"{id} (logit {values[id]:G9}, p {p[id]:G9}, rank {p.Count(v => v > p[id])})" : $"{id} (out of range)";
        return $"; host token {Token(expected)}, backend token {Token(actual)}, max p {p.Max():G9}";
    }

    /// <summary>
    /// Random logits of several shapes: spread normal-ish values at different scales, a peaked row, rows with masked
    /// (-inf) and NaN entries, and rows of few distinct values (exact ties).
    /// </summary>
    private static void FillRow(Random random, Span<float> row, int index)
    {
        var kind = index % 6;
        var scale = 1 + (index % 4);
        for (var i = 0; i < row.Length; i++)
        {
            var gaussian = Math.Sqrt(-2 * Math.Log(1 - random.NextDouble())) * Math.Cos(2 * Math.PI * random.NextDouble());
            row[i] = kind switch
            {
                4 => random.Next(8) * 0.75f,                                   // ties
                5 => (float)(gaussian * scale) + (i == row.Length / 3 ? 12 : 0), // one dominant token
                _ => (float)(gaussian * scale),
            };
            if (row.Length > 1 && kind is 2 or 3 && random.Next(kind == 2 ? 20 : 3) == 0)
            {
                row[i] = kind == 2 && random.Next(4) == 0 ? float.NaN : float.NegativeInfinity;
            }
        }
    }
}
