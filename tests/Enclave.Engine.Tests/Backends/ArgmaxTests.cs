using Enclave.Engine.Backends;
using Enclave.Engine.Backends.Cpu;
using Enclave.Engine.Backends.Reference;
using Enclave.Engine.Sampling;

namespace Enclave.Engine.Tests.Backends;

/// <summary>
/// The backend argmax is the host sampler's greedy rule on every vector width: rows with repeated maxima in and out
/// of vector lanes, NaN, ±inf, ±0 and nothing but -inf, at lengths around the vector sizes.
/// </summary>
public sealed class ArgmaxTests
{
    public static TheoryData<int> Widths() => [.. new[] { 512, 256, 128, 1 }.Where(CpuSimd.IsSupported)];

    [Theory]
    [MemberData(nameof(Widths))]
    public void Cpu_argmax_is_the_samplers_greedy_choice(int width)
    {
        using var cpu = new CpuBackend(1, width);
        using var reference = new ReferenceBackend();
        var random = new Random(width);
        foreach (var vocab in new[] { 1, 3, 15, 16, 17, 33, 64, 100, 1000 })
        {
            var rows = Rows(random, vocab);
            foreach (IBackend backend in new IBackend[] { cpu, reference })
            {
                using var logits = backend.Allocate(DType.F32, rows.Length, vocab);
                backend.Upload(rows.SelectMany(r => r).ToArray(), logits);
                var ids = new int[rows.Length];
                backend.Argmax(logits, ids);
                for (var r = 0; r < rows.Length; r++)
                {
                    Assert.True(Sampler.ArgMax(rows[r]) == ids[r], $"{backend.Name}, vocab {vocab}, row {r} [{string.Join(", ", rows[r].Take(40))}]: expected {Sampler.ArgMax(rows[r])}, got {ids[r]}");
                }
            }
        }
    }

    private static float[][] Rows(Random random, int vocab)
    {
        var special = new[] { float.NaN, float.PositiveInfinity, float.NegativeInfinity, 0f, -0f, 3f };
        var rows = new List<float[]>();
        for (var k = 0; k < 40; k++)
        {
            // Few distinct values make ties common; some rows are drawn only from the special values.
            var row = new float[vocab];
            for (var i = 0; i < vocab; i++)
            {
                row[i] = k % 4 == 3 ? special[random.Next(special.Length)] : random.Next(5) - 2;
                if (random.Next(10) == 0)
                {
                    row[i] = special[random.Next(special.Length)];
                }
            }

            rows.Add(row);
        }

        rows.Add(Enumerable.Repeat(float.NegativeInfinity, vocab).ToArray());
        rows.Add(Enumerable.Repeat(float.NaN, vocab).ToArray());
        var last = Enumerable.Repeat(-1f, vocab).ToArray();
        last[^1] = 2f;
        rows.Add(last);
        return [.. rows];
    }
}
