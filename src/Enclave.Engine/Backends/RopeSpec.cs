namespace Enclave.Engine.Backends;

/// <summary>
/// Rotary position embedding as the backend applies it. The host computes the (already scaled) inverse
/// frequencies once from the model config; the backend rotates q/k at each token's position.
/// </summary>
/// <param name="InverseFrequencies">[rotaryDim / 2] inverse frequencies after llama3/YaRN/linear scaling.</param>
/// <param name="RotaryDim">How many leading elements of each head are rotated (== head_dim for most models).</param>
/// <param name="Interleaved">
/// false: GPT-NeoX "rotate half" pairing (i, i + rotaryDim/2), as HF Llama/Qwen do;
/// true: GPT-J pairing (2i, 2i+1), as DeepSeek's <c>rope_interleave</c> asks.
/// </param>
/// <param name="AttentionScaling">Multiplier applied to cos/sin (YaRN mscale); 1 otherwise.</param>
public sealed record RopeSpec(float[] InverseFrequencies, int RotaryDim, bool Interleaved, float AttentionScaling = 1f);
