using Enclave.Engine.Backends;

namespace Enclave.Engine.Tests.Backends;

/// <summary>
/// Slow, obvious float64 versions of the backend operations, written straight from the definitions. Weights
/// arrive already decoded to the exact values their stored type holds, so only the kernels' arithmetic differs.
/// </summary>
internal static class ReferenceOps
{
    public static double[] MatMul(double[] x, int tokens, int inFeatures, double[] weight, int outFeatures, double[]? bias)
    {
        var y = new double[tokens * outFeatures];
        for (var t = 0; t < tokens; t++)
        {
            for (var o = 0; o < outFeatures; o++)
            {
                var sum = bias?[o] ?? 0.0;
                for (var i = 0; i < inFeatures; i++)
                {
                    sum += x[(t * inFeatures) + i] * weight[(o * inFeatures) + i];
                }

                y[(t * outFeatures) + o] = sum;
            }
        }

        return y;
    }

    public static double[] RmsNorm(double[] x, int columns, double[] weight, double eps)
    {
        var y = new double[x.Length];
        for (var r = 0; r < x.Length / columns; r++)
        {
            var sumSquares = 0.0;
            for (var c = 0; c < columns; c++)
            {
                sumSquares += x[(r * columns) + c] * x[(r * columns) + c];
            }

            var scale = 1.0 / Math.Sqrt((sumSquares / columns) + eps);
            for (var c = 0; c < columns; c++)
            {
                y[(r * columns) + c] = x[(r * columns) + c] * scale * weight[c];
            }
        }

        return y;
    }

    public static double[] Add(double[] a, double[] b)
    {
        var y = new double[a.Length];
        for (var i = 0; i < a.Length; i++)
        {
            y[i] = a[i] + b[i];
        }

        return y;
    }

    public static double[] SiluMul(double[] gate, double[] up)
    {
        var y = new double[gate.Length];
        for (var i = 0; i < gate.Length; i++)
        {
            y[i] = gate[i] / (1.0 + Math.Exp(-gate[i])) * up[i];
        }

        return y;
    }

    public static double[] Embedding(double[] table, int hidden, int[] ids)
    {
        var y = new double[ids.Length * hidden];
        for (var t = 0; t < ids.Length; t++)
        {
            Array.Copy(table, ids[t] * hidden, y, t * hidden, hidden);
        }

        return y;
    }

    /// <summary>
    /// Rotates each head as HF does, with cos/sin computed from the fp32 product position * invFreq (that product
    /// is what the model sees, so it is formed in fp32 here too) and everything after it in float64.
    /// </summary>
    public static double[] Rope(double[] x, int tokens, int heads, int headDim, int[] positions, RopeSpec rope)
    {
        var y = (double[])x.Clone();
        var half = rope.RotaryDim / 2;
        for (var t = 0; t < tokens; t++)
        {
            for (var h = 0; h < heads; h++)
            {
                var head = ((t * heads) + h) * headDim;
                for (var i = 0; i < half; i++)
                {
                    var angle = (double)((float)positions[t] * rope.InverseFrequencies[i]);
                    var cos = Math.Cos(angle) * rope.AttentionScaling;
                    var sin = Math.Sin(angle) * rope.AttentionScaling;
                    var (a, b) = rope.Interleaved ? (head + (2 * i), head + (2 * i) + 1) : (head + i, head + i + half);
                    y[a] = (x[a] * cos) - (x[b] * sin);
                    y[b] = (x[b] * cos) + (x[a] * sin);
                }
            }
        }

        return y;
    }

    /// <summary>
    /// Causal attention of each sequence's queries over its context, with the context's keys and values given
    /// per sequence as plain [position, kvHeads, headDim] arrays (the new tokens included), no paging involved.
    /// </summary>
    public static double[] Attention(double[] q, int heads, int kvHeads, int headDim, int[] positions, int[] tokenSequence, double[][] keys, double[][] values, double scale)
    {
        var tokens = positions.Length;
        var y = new double[tokens * heads * headDim];
        var group = heads / kvHeads;
        for (var t = 0; t < tokens; t++)
        {
            var k = keys[tokenSequence[t]];
            var v = values[tokenSequence[t]];
            for (var h = 0; h < heads; h++)
            {
                var kvh = h / group;
                var context = positions[t] + 1;
                var scores = new double[context];
                var max = double.NegativeInfinity;
                for (var p = 0; p < context; p++)
                {
                    var dot = 0.0;
                    for (var d = 0; d < headDim; d++)
                    {
                        dot += q[(((t * heads) + h) * headDim) + d] * k[(((p * kvHeads) + kvh) * headDim) + d];
                    }

                    scores[p] = dot * scale;
                    max = Math.Max(max, scores[p]);
                }

                var total = 0.0;
                for (var p = 0; p < context; p++)
                {
                    scores[p] = Math.Exp(scores[p] - max);
                    total += scores[p];
                }

                for (var d = 0; d < headDim; d++)
                {
                    var sum = 0.0;
                    for (var p = 0; p < context; p++)
                    {
                        sum += scores[p] * v[(((p * kvHeads) + kvh) * headDim) + d];
                    }

                    y[(((t * heads) + h) * headDim) + d] = sum / total;
                }
            }
        }

        return y;
    }
}
