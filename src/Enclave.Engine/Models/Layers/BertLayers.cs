using Enclave.Engine.Backends;

namespace Enclave.Engine.Models.Layers;

/// <summary>nn.LayerNorm with weight and bias, both loaded as F32 (vectors: the copy is negligible).</summary>
public sealed class LayerNormWeights(DeviceTensor weight, DeviceTensor bias, float eps)
{
    public static LayerNormWeights Load(WeightLoader loader, string prefix, int n, float eps) =>
        new(loader.LoadAsF32(prefix + ".weight", n), loader.LoadAsF32(prefix + ".bias", n), eps);

    /// <summary>output = LayerNorm(x). x, output: [T, n]; output may alias x.</summary>
    public void Forward(IBackend backend, DeviceTensor x, DeviceTensor output) => backend.LayerNorm(x, weight, bias, eps, output);
}

/// <summary>BertEmbeddings: LayerNorm(word[id] + position[pos] + token_type[type]); dropout is inference-off.</summary>
public sealed class BertEmbeddings
{
    private readonly DeviceTensor words;
    private readonly DeviceTensor positions;
    private readonly DeviceTensor tokenTypes;
    private readonly LayerNormWeights norm;
    private readonly int typeVocabSize;
    private readonly int maxPositions;

    public BertEmbeddings(WeightLoader loader, string prefix, ModelConfig config, int typeVocabSize, float eps)
    {
        words = loader.Load(prefix + ".word_embeddings.weight", config.VocabSize, config.HiddenSize);
        positions = loader.Load(prefix + ".position_embeddings.weight", config.MaxPositionEmbeddings, config.HiddenSize);
        tokenTypes = loader.Load(prefix + ".token_type_embeddings.weight", typeVocabSize, config.HiddenSize);
        norm = LayerNormWeights.Load(loader, prefix + ".LayerNorm", config.HiddenSize, eps);
        this.typeVocabSize = typeVocabSize;
        maxPositions = config.MaxPositionEmbeddings;
    }

    /// <summary>hidden: [T, hidden], overwritten with the embedded batch.</summary>
    public void Forward(IBackend backend, ActivationBuffers scratch, EncoderBatch batch, int[] positionIds, DeviceTensor hidden)
    {
        foreach (var type in batch.TokenTypeIds)
        {
            if ((uint)type >= (uint)typeVocabSize)
            {
                throw new ArgumentException($"token type id {type} outside type_vocab_size {typeVocabSize}");
            }
        }

        foreach (var position in positionIds)
        {
            if ((uint)position >= (uint)maxPositions)
            {
                throw new ArgumentException($"position {position} outside max_position_embeddings {maxPositions}: the sequence is too long for this model");
            }
        }

        var term = scratch.Get("embedding_term", batch.TokenCount, hidden.Columns);
        backend.GatherEmbedding(words, batch.TokenIds, hidden);
        backend.GatherEmbedding(positions, positionIds, term);
        backend.Add(hidden, term, hidden);
        backend.GatherEmbedding(tokenTypes, batch.TokenTypeIds, term);
        backend.Add(hidden, term, hidden);
        norm.Forward(backend, hidden, hidden);
    }
}

/// <summary>
/// One post-LayerNorm BERT block:
/// a = LayerNorm(h + dense(attention(q(h), k(h), v(h)))); h = LayerNorm(a + output(gelu(intermediate(a)))).
/// </summary>
public sealed class BertLayer
{
    private readonly Linear query;
    private readonly Linear key;
    private readonly Linear value;
    private readonly Linear attentionOutput;
    private readonly LayerNormWeights attentionNorm;
    private readonly Linear intermediate;
    private readonly Linear output;
    private readonly LayerNormWeights outputNorm;
    private readonly int heads;
    private readonly int headDim;
    private readonly float scale;

    public BertLayer(WeightLoader loader, string prefix, ModelConfig config, float eps)
    {
        int hidden = config.HiddenSize, inner = config.IntermediateSize;
        heads = config.NumAttentionHeads;
        headDim = hidden / heads;
        if (headDim * heads != hidden)
        {
            throw new ModelConfigException($"{config.Path}: hidden_size {hidden} is not a multiple of num_attention_heads {heads}");
        }

        scale = 1f / MathF.Sqrt(headDim);
        query = Linear.Load(loader, prefix + ".attention.self.query", hidden, hidden, bias: true);
        key = Linear.Load(loader, prefix + ".attention.self.key", hidden, hidden, bias: true);
        value = Linear.Load(loader, prefix + ".attention.self.value", hidden, hidden, bias: true);
        attentionOutput = Linear.Load(loader, prefix + ".attention.output.dense", hidden, hidden, bias: true);
        attentionNorm = LayerNormWeights.Load(loader, prefix + ".attention.output.LayerNorm", hidden, eps);
        intermediate = Linear.Load(loader, prefix + ".intermediate.dense", hidden, inner, bias: true);
        output = Linear.Load(loader, prefix + ".output.dense", inner, hidden, bias: true);
        outputNorm = LayerNormWeights.Load(loader, prefix + ".output.LayerNorm", hidden, eps);
    }

    /// <summary>hidden: [T, hidden], updated in place.</summary>
    public void Forward(IBackend backend, ActivationBuffers scratch, EncoderBatch batch, DeviceTensor hidden)
    {
        int tokens = batch.TokenCount, width = hidden.Columns;
        var q = scratch.Get("q", tokens, width);
        var k = scratch.Get("k", tokens, width);
        var v = scratch.Get("v", tokens, width);
        var context = scratch.Get("context", tokens, width);
        query.Forward(backend, hidden, q);
        key.Forward(backend, hidden, k);
        value.Forward(backend, hidden, v);
        // q, k, v, context viewed as [T, heads, headDim].
        backend.BidirectionalAttention(
            q.Reshape(tokens, heads, headDim), k.Reshape(tokens, heads, headDim), v.Reshape(tokens, heads, headDim),
            batch.SequenceStarts, scale, context.Reshape(tokens, heads, headDim));

        var attended = scratch.Get("attended", tokens, width);
        attentionOutput.Forward(backend, context, attended);
        backend.Add(attended, hidden, attended);
        attentionNorm.Forward(backend, attended, attended);

        var inner = scratch.Get("intermediate", tokens, intermediate.OutFeatures);  // [T, intermediate]
        intermediate.Forward(backend, attended, inner);
        backend.Gelu(inner, inner);
        output.Forward(backend, inner, hidden);
        backend.Add(hidden, attended, hidden);
        outputNorm.Forward(backend, hidden, hidden);
    }
}
