using Enclave.Engine.Backends;

namespace Enclave.Engine.Models;

/// <summary>
/// Computes RoPE inverse frequencies on the host exactly as transformers' <c>ROPE_INIT_FUNCTIONS</c> do (float32),
/// including the llama3, linear and YaRN scalings. The backend only rotates.
/// </summary>
public static class RotaryEmbedding
{
    public static RopeSpec Create(ModelConfig config, int? headDimOverride = null, bool interleaved = false)
    {
        var headDim = headDimOverride ?? config.HeadDim;
        var dim = (int)(headDim * config.PartialRotaryFactor);
        var baseFrequencies = DefaultInverseFrequencies(config.RopeTheta, dim);
        var scaling = config.RopeScaling;
        if (config.RopeFrequencyFactors is { } factors)
        {
            if (factors.Length != baseFrequencies.Length)
            {
                throw new ModelConfigException($"{config.Path}: {factors.Length} rope frequency factors for {baseFrequencies.Length} frequencies");
            }

            return new RopeSpec(baseFrequencies.Select((f, i) => f / factors[i]).ToArray(), dim, interleaved);
        }

        if (scaling is null)
        {
            return new RopeSpec(baseFrequencies, dim, interleaved);
        }

        return scaling.Type switch
        {
            "linear" => new RopeSpec(baseFrequencies.Select(f => (float)(f / scaling.Factor)).ToArray(), dim, interleaved),
            "llama3" => new RopeSpec(Llama3(baseFrequencies, scaling, config), dim, interleaved),
            "yarn" => Yarn(config, scaling, dim, interleaved),
            _ => throw new ModelConfigException($"{config.Path}: rope scaling type '{scaling.Type}' is not supported"),
        };
    }

    /// <summary>inv_freq[i] = 1 / theta^(2i / dim), computed in float32 like torch.</summary>
    public static float[] DefaultInverseFrequencies(double theta, int dim)
    {
        var result = new float[dim / 2];
        for (var i = 0; i < result.Length; i++)
        {
            var exponent = (float)(2 * i) / dim;
            result[i] = 1.0f / MathF.Pow((float)theta, exponent);
        }

        return result;
    }

    private static float[] Llama3(float[] invFreq, RopeScaling s, ModelConfig config)
    {
        var oldContext = (float)(s.OriginalMaxPositionEmbeddings ?? config.MaxPositionEmbeddings);
        var factor = (float)s.Factor;
        var lowFreqFactor = (float)s.LowFreqFactor;
        var highFreqFactor = (float)s.HighFreqFactor;
        var lowFreqWavelen = oldContext / lowFreqFactor;
        var highFreqWavelen = oldContext / highFreqFactor;
        var result = new float[invFreq.Length];
        for (var i = 0; i < invFreq.Length; i++)
        {
            var wavelen = 2 * MathF.PI / invFreq[i];
            var scaled = wavelen > lowFreqWavelen ? invFreq[i] / factor : invFreq[i];
            var isMedium = !(wavelen < highFreqWavelen) && !(wavelen > lowFreqWavelen);
            if (isMedium)
            {
                var smooth = (oldContext / wavelen - lowFreqFactor) / (highFreqFactor - lowFreqFactor);
                scaled = (1 - smooth) * scaled / factor + smooth * scaled;
            }

            result[i] = scaled;
        }

        return result;
    }

    private static RopeSpec Yarn(ModelConfig config, RopeScaling s, int dim, bool interleaved)
    {
        var factor = s.Factor;
        var originalMax = s.OriginalMaxPositionEmbeddings ?? config.MaxPositionEmbeddings;
        var attentionFactor = s.AttentionFactor ?? (s.Mscale is { } m && s.MscaleAllDim is { } mAll && m != 0 && mAll != 0
            ? YarnMscale(factor, m) / YarnMscale(factor, mAll)
            : YarnMscale(factor, 1));
        var betaFast = s.BetaFast ?? 32;
        var betaSlow = s.BetaSlow ?? 1;
        var theta = config.RopeTheta;

        double CorrectionDim(double rotations) =>
            dim * Math.Log(originalMax / (rotations * 2 * Math.PI)) / (2 * Math.Log(theta));

        var low = CorrectionDim(betaFast);
        var high = CorrectionDim(betaSlow);
        if (s.Truncate)
        {
            low = Math.Floor(low);
            high = Math.Ceiling(high);
        }

        low = Math.Max(low, 0);
        high = Math.Min(high, dim - 1);
        if (low == high)
        {
            high += 0.001;
        }

        var half = dim / 2;
        var result = new float[half];
        for (var i = 0; i < half; i++)
        {
            var posFreq = MathF.Pow((float)theta, (float)(2 * i) / dim);
            var extrapolation = 1.0f / posFreq;
            var interpolation = 1.0f / ((float)factor * posFreq);
            var ramp = Math.Clamp((float)((i - low) / (high - low)), 0f, 1f);
            var extrapolationFactor = 1 - ramp;
            result[i] = interpolation * (1 - extrapolationFactor) + extrapolation * extrapolationFactor;
        }

        return new RopeSpec(result, dim, interleaved, (float)attentionFactor);
    }

    /// <summary>YaRN's attention temperature: 0.1 * mscale * ln(scale) + 1 for scale &gt; 1.</summary>
    public static double YarnMscale(double scale, double mscale) => scale <= 1 ? 1.0 : 0.1 * mscale * Math.Log(scale) + 1.0;
}
