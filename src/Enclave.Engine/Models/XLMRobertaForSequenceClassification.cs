using Enclave.Engine.Backends;
using Enclave.Engine.Formats;
using Enclave.Engine.Models.Layers;

namespace Enclave.Engine.Models;

/// <summary>
/// XLMRobertaForSequenceClassification (bge-reranker cross-encoders): the encoder under "roberta." and
/// RobertaClassificationHead on each sequence's first token (&lt;s&gt;): dense → tanh → out_proj, num_labels outputs.
/// </summary>
public sealed class XLMRobertaForSequenceClassification : XLMRobertaModel
{
    private readonly Linear dense;
    private readonly Linear outProj;

    public XLMRobertaForSequenceClassification(ModelConfig config, IWeightSource weights, IBackend backend)
        : base(config, weights, backend, "roberta.")
    {
        NumLabels = config.Raw["id2label"] is System.Text.Json.Nodes.JsonObject labels ? labels.Count : ReadInt(config, "num_labels") ?? 2;
        dense = Linear.Load(Loader, "classifier.dense", config.HiddenSize, config.HiddenSize, bias: true);
        outProj = Linear.Load(Loader, "classifier.out_proj", config.HiddenSize, NumLabels, bias: true);
    }

    public override int NumLabels { get; }

    public override float[] Classify(EncoderBatch batch)
    {
        var hidden = Forward(batch);
        var sequences = batch.SequenceCount;
        var first = batch.SequenceStarts[..^1];
        var cls = Scratch.Get("cls", sequences, Config.HiddenSize);   // [S, hidden]
        Backend.GatherRows(hidden, first, cls);
        var pooled = Scratch.Get("cls_dense", sequences, Config.HiddenSize);
        dense.Forward(Backend, cls, pooled);
        Backend.Tanh(pooled, pooled);
        var logits = Scratch.Get("logits", sequences, NumLabels);     // [S, labels]
        outProj.Forward(Backend, pooled, logits);
        var host = new float[sequences * NumLabels];
        Backend.Download(logits, host);
        return host;
    }
}
