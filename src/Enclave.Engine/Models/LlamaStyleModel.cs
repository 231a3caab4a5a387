using Enclave.Engine.Backends;
using Enclave.Engine.Formats;
using Enclave.Engine.KvCache;
using Enclave.Engine.Models.Layers;

namespace Enclave.Engine.Models;

/// <summary>Per-architecture switches of the Llama-family decoder layer.</summary>
public sealed record DecoderLayerOptions(bool QkvBias, bool OutputBias, bool QkNorm, bool MlpBias);

/// <summary>
/// The Llama-family decoder stack shared by LlamaForCausalLM, Qwen2ForCausalLM and Qwen3ForCausalLM:
/// embed_tokens → N × (input_layernorm → self_attn → residual → post_attention_layernorm → mlp → residual) → norm → lm_head.
/// Weight names follow the Hugging Face modules ("model.layers.{i}.self_attn.q_proj.weight", ...).
/// </summary>
public class LlamaStyleModel : CausalLM
{
    private readonly DeviceTensor embedTokens;
    private readonly DecoderLayer[] layers;
    private readonly DeviceTensor finalNorm;
    private readonly DeviceTensor lmHead;
    private readonly RopeSpec rope;
    private readonly float eps;
    private readonly ActivationBuffers scratch;

    protected LlamaStyleModel(ModelConfig config, IWeightSource weights, IBackend backend, DecoderLayerOptions options)
        : base(config, backend)
    {
        var loader = new WeightLoader(weights, backend, config);
        eps = (float)config.RmsNormEps;
        rope = RotaryEmbedding.Create(config);
        scratch = new ActivationBuffers(backend);
        embedTokens = loader.Load("model.embed_tokens.weight", config.VocabSize, config.HiddenSize);
        layers = new DecoderLayer[config.NumHiddenLayers];
        for (var i = 0; i < layers.Length; i++)
        {
            layers[i] = new DecoderLayer(loader, $"model.layers.{i}", options, rope);
        }

        finalNorm = loader.Load("model.norm.weight", config.HiddenSize);
        // Tied checkpoints (Qwen2-0.5B/1.5B) omit lm_head.weight and reuse the embedding matrix.
        lmHead = config.TieWordEmbeddings
            ? embedTokens
            : loader.Load("lm_head.weight", config.VocabSize, config.HiddenSize);
        long bytes = 0;
        foreach (var name in weights.TensorNames)
        {
            bytes += weights.Get(name).ByteCount;
        }

        // Every token reads all weights except the embedding table, of which it reads one row (unless tied to lm_head).
        WeightBytes = ReferenceEquals(lmHead, embedTokens) ? bytes : bytes - embedTokens.ByteCount;
    }

    public override KvCacheSpec KvCacheSpec => new(Config.NumHiddenLayers, Config.NumKeyValueHeads, Config.HeadDim);

    public override long WeightBytes { get; }

    /// <summary>Dense Llama/Qwen layers: every op of a step is queued on the backend, none waits for the host.</summary>
    public override bool SupportsDecodeGraphs => true;

    public override void Forward(ForwardBatch batch, PagedKvCache cache, DeviceTensor logits) =>
        DecoderStack.Forward(Backend, scratch, Config.HiddenSize, eps, embedTokens, layers, finalNorm, lmHead, batch, cache, logits);

    protected override void Dispose(bool disposing)
    {
        scratch.Dispose();
        base.Dispose(disposing);
    }

    private sealed class DecoderLayer : IDecoderLayer
    {
        private readonly RopeSpec rope;

        public DecoderLayer(WeightLoader loader, string prefix, DecoderLayerOptions options, RopeSpec rope)
        {
            this.rope = rope;
            var c = loader.Config;
            InputLayerNorm = loader.Load(prefix + ".input_layernorm.weight", c.HiddenSize);
            PostAttentionLayerNorm = loader.Load(prefix + ".post_attention_layernorm.weight", c.HiddenSize);
            Attention = new SelfAttention(loader, prefix + ".self_attn", options.QkvBias, options.OutputBias, options.QkNorm);
            Mlp = new GatedMlp(loader, prefix + ".mlp", c.HiddenSize, c.IntermediateSize, options.MlpBias);
        }

        public DeviceTensor InputLayerNorm { get; }

        public DeviceTensor PostAttentionLayerNorm { get; }

        public SelfAttention Attention { get; }

        public IFeedForward Mlp { get; }

        public void Attend(IBackend backend, ActivationBuffers scratch, DeviceTensor x, ForwardBatch batch, PagedKvCache cache, int index, DeviceTensor output) =>
            Attention.Forward(backend, scratch, x, batch, rope, cache.Keys(index), cache.Values(index), output);
    }
}
