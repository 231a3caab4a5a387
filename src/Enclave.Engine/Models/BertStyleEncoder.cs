using Enclave.Engine.Backends;
using Enclave.Engine.Formats;
using Enclave.Engine.Models.Layers;

namespace Enclave.Engine.Models;

/// <summary>
/// The BERT encoder shared by BertModel and the XLM-RoBERTa classes: word + position + token-type embeddings →
/// LayerNorm → N × post-LayerNorm blocks (self-attention over the whole sequence, GELU MLP). Weight names follow the
/// Hugging Face modules ("encoder.layer.{i}.attention.self.query.weight", ...), under a prefix ("roberta.") when the
/// checkpoint was saved from a task model. The pooler is not used: sentence-transformers pools the hidden states.
/// </summary>
public abstract class BertStyleEncoder : Encoder
{
    private readonly BertEmbeddings embeddings;
    private readonly BertLayer[] layers;
    private readonly ActivationBuffers scratch;

    protected BertStyleEncoder(ModelConfig config, IWeightSource weights, IBackend backend, string? prefix = null)
        : base(config, backend)
    {
        var activation = config.HiddenAct;
        if (activation != "gelu")
        {
            throw new ModelConfigException($"{config.Path}: hidden_act '{activation}' is not supported for {config.Architecture} (only the exact \"gelu\")");
        }

        Loader = new WeightLoader(weights, backend, config);
        Prefix = prefix ?? DetectPrefix(weights);
        LayerNormEps = (float)(ReadDouble(config, "layer_norm_eps") ?? 1e-12);
        PadTokenId = ReadInt(config, "pad_token_id") ?? 0;
        TypeVocabSize = ReadInt(config, "type_vocab_size") ?? 2;
        scratch = new ActivationBuffers(backend);
        embeddings = new BertEmbeddings(Loader, Prefix + "embeddings", config, TypeVocabSize, LayerNormEps);
        layers = new BertLayer[config.NumHiddenLayers];
        for (var i = 0; i < layers.Length; i++)
        {
            layers[i] = new BertLayer(Loader, $"{Prefix}encoder.layer.{i}", config, LayerNormEps);
        }

        long bytes = 0;
        foreach (var name in weights.TensorNames)
        {
            bytes += weights.Get(name).ByteCount;
        }

        WeightBytes = bytes;
    }

    protected WeightLoader Loader { get; }

    /// <summary>"" or the task model's prefix ("roberta.", "bert.").</summary>
    protected string Prefix { get; }

    protected float LayerNormEps { get; }

    protected int PadTokenId { get; }

    protected int TypeVocabSize { get; }

    protected ActivationBuffers Scratch => scratch;

    public override long WeightBytes { get; }

    public override DeviceTensor Forward(EncoderBatch batch)
    {
        var tokens = batch.TokenCount;
        var hidden = scratch.Get("hidden", tokens, Config.HiddenSize);
        embeddings.Forward(Backend, scratch, batch, PositionIds(batch), hidden);
        foreach (var layer in layers)
        {
            layer.Forward(Backend, scratch, batch, hidden);
        }

        return hidden;
    }

    /// <summary>Position of each token, [T]; BERT counts from 0 in each sequence.</summary>
    protected abstract int[] PositionIds(EncoderBatch batch);

    protected static int? ReadInt(ModelConfig config, string key) =>
        config.Raw[key] is System.Text.Json.Nodes.JsonValue v && v.TryGetValue<int>(out var i) ? i : null;

    protected static double? ReadDouble(ModelConfig config, string key) =>
        config.Raw[key] is System.Text.Json.Nodes.JsonValue v && v.TryGetValue<double>(out var d) ? d : null;

    /// <summary>Base-model checkpoints carry bare names; those saved from a task model carry its base prefix.</summary>
    private static string DetectPrefix(IWeightSource weights)
    {
        if (weights is DummyWeights || weights.Contains("embeddings.word_embeddings.weight"))
        {
            return "";
        }

        foreach (var prefix in new[] { "bert.", "roberta.", "model." })
        {
            if (weights.Contains(prefix + "embeddings.word_embeddings.weight"))
            {
                return prefix;
            }
        }

        return "";
    }

    protected override void Dispose(bool disposing)
    {
        if (disposing)
        {
            scratch.Dispose();
        }

        base.Dispose(disposing);
    }
}
