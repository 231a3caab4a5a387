using System.Numerics;
using System.Runtime.Intrinsics;

namespace Enclave.Engine.Backends.Cpu;

/// <summary>
/// Greedy choice per logits row with the semantics of <see cref="Sampling.Sampler.ArgMax"/>: the first index holding
/// the row's largest non-NaN value, or 0 when nothing exceeds negative infinity. Two vector passes per row: the
/// maximum (a compare-and-select that a NaN lane never wins), then the first lane equal to it.
/// </summary>
internal static unsafe class CpuArgmax
{
    public static void Run(int width, CpuTensor logits, Span<int> tokenIds)
    {
        logits.RequireDType(DType.F32);
        var vocab = logits.Columns;
        if (tokenIds.Length != logits.Rows || vocab == 0)
        {
            throw new ArgumentException($"Argmax: {tokenIds.Length} ids for logits {logits}");
        }

        var data = logits.F32Pointer;
        for (var r = 0; r < tokenIds.Length; r++)
        {
            tokenIds[r] = Row(width, data + ((long)r * vocab), vocab);
        }
    }

    public static int Row(int width, float* row, int n)
    {
        var max = width switch
        {
            512 => Max512(row, n),
            256 => Max256(row, n),
            128 => Max128(row, n),
            _ => MaxScalar(row, 0, n, float.NegativeInfinity),
        };

        if (!(max > float.NegativeInfinity))
        {
            return 0;
        }

        return width switch
        {
            512 => First512(row, n, max),
            256 => First256(row, n, max),
            128 => First128(row, n, max),
            _ => FirstScalar(row, 0, n, max),
        };
    }

    private static float MaxScalar(float* row, int start, int n, float max)
    {
        for (var i = start; i < n; i++)
        {
            if (row[i] > max)
            {
                max = row[i];
            }
        }

        return max;
    }

    private static int FirstScalar(float* row, int start, int n, float max)
    {
        for (var i = start; i < n; i++)
        {
            if (row[i] == max)
            {
                return i;
            }
        }

        throw new InvalidOperationException("the row's maximum was not found again"); // unreachable: max came from the row
    }

    private static float Max512(float* row, int n)
    {
        var best = Vector512.Create(float.NegativeInfinity);
        var i = 0;
        for (; i <= n - Vector512<float>.Count; i += Vector512<float>.Count)
        {
            var v = Vector512.Load(row + i);
            best = Vector512.ConditionalSelect(Vector512.GreaterThan(v, best), v, best);
        }

        return MaxScalar(row, i, n, Lanes(best.GetLower().GetLower(), best.GetLower().GetUpper(), best.GetUpper().GetLower(), best.GetUpper().GetUpper()));
    }

    private static float Max256(float* row, int n)
    {
        var best = Vector256.Create(float.NegativeInfinity);
        var i = 0;
        for (; i <= n - Vector256<float>.Count; i += Vector256<float>.Count)
        {
            var v = Vector256.Load(row + i);
            best = Vector256.ConditionalSelect(Vector256.GreaterThan(v, best), v, best);
        }

        return MaxScalar(row, i, n, Lanes(best.GetLower(), best.GetUpper()));
    }

    private static float Max128(float* row, int n)
    {
        var best = Vector128.Create(float.NegativeInfinity);
        var i = 0;
        for (; i <= n - Vector128<float>.Count; i += Vector128<float>.Count)
        {
            var v = Vector128.Load(row + i);
            best = Vector128.ConditionalSelect(Vector128.GreaterThan(v, best), v, best);
        }

        return MaxScalar(row, i, n, Lanes(best));
    }

    /// <summary>The largest lane of the given vectors; lanes only ever hold values that won a strict comparison, never NaN.</summary>
    private static float Lanes(params ReadOnlySpan<Vector128<float>> parts)
    {
        var max = float.NegativeInfinity;
        foreach (var part in parts)
        {
            for (var j = 0; j < Vector128<float>.Count; j++)
            {
                max = Math.Max(max, part.GetElement(j));
            }
        }

        return max;
    }

    private static int First512(float* row, int n, float max)
    {
        var target = Vector512.Create(max);
        var i = 0;
        for (; i <= n - Vector512<float>.Count; i += Vector512<float>.Count)
        {
            var mask = Vector512.Equals(Vector512.Load(row + i), target).ExtractMostSignificantBits();
            if (mask != 0)
            {
                return i + BitOperations.TrailingZeroCount(mask);
            }
        }

        return FirstScalar(row, i, n, max);
    }

    private static int First256(float* row, int n, float max)
    {
        var target = Vector256.Create(max);
        var i = 0;
        for (; i <= n - Vector256<float>.Count; i += Vector256<float>.Count)
        {
            var mask = Vector256.Equals(Vector256.Load(row + i), target).ExtractMostSignificantBits();
            if (mask != 0)
            {
                return i + BitOperations.TrailingZeroCount(mask);
            }
        }

        return FirstScalar(row, i, n, max);
    }

    private static int First128(float* row, int n, float max)
    {
        var target = Vector128.Create(max);
        var i = 0;
        for (; i <= n - Vector128<float>.Count; i += Vector128<float>.Count)
        {
            var mask = Vector128.Equals(Vector128.Load(row + i), target).ExtractMostSignificantBits();
            if (mask != 0)
            {
                return i + BitOperations.TrailingZeroCount(mask);
            }
        }

        return FirstScalar(row, i, n, max);
    }
}
