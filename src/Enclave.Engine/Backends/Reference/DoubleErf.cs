namespace Enclave.Engine.Backends.Reference;

/// <summary>
/// erf in float64 for the reference backend (the base library has none): the Maclaurin series where it converges
/// without much cancellation (|x| &lt; 3, about 1e-13 absolute), the continued fraction of erfc beyond it.
/// </summary>
internal static class DoubleErf
{
    private static readonly double TwoOverSqrtPi = 2.0 / Math.Sqrt(Math.PI);

    public static double Erf(double x)
    {
        if (double.IsNaN(x))
        {
            return x;
        }

        var a = Math.Abs(x);
        if (a < 3.0)
        {
            // erf(x) = 2/sqrt(pi) * sum_n (-1)^n x^(2n+1) / (n! (2n+1))
            double term = a, sum = a, x2 = a * a;
            for (var n = 1; n < 200; n++)
            {
                term *= -x2 / n;
                var add = term / ((2 * n) + 1);
                sum += add;
                if (Math.Abs(add) < 1e-17 * Math.Abs(sum))
                {
                    break;
                }
            }

            return Math.CopySign(sum * TwoOverSqrtPi, x);
        }

        if (a > 6.0)
        {
            return Math.CopySign(1.0, x);
        }

        // erfc(a) = exp(-a²)/sqrt(pi) · 1/(a + (1/2)/(a + 1/(a + (3/2)/(a + 2/(a + ...))))), evaluated backwards.
        var fraction = a;
        for (var k = 80; k >= 1; k--)
        {
            fraction = a + (k / 2.0 / fraction);
        }

        var erfc = Math.Exp(-a * a) / Math.Sqrt(Math.PI) / fraction;
        return Math.CopySign(1.0 - erfc, x);
    }
}
