using Enclave.Engine.Backends;
using Enclave.Engine.Models;

namespace Enclave.Engine.Embeddings;

/// <summary>Scores for a query's passages, with the raw logits and what the API reports.</summary>
public sealed record RerankBatch(float[] Scores, float[] Logits, int PromptTokens, int TruncatedInputs);

/// <summary>
/// A cross-encoder reranker (XLMRobertaForSequenceClassification with one label, e.g. bge-reranker): each
/// (query, passage) pair is read together and scored. Scores are sigmoid(logit) in [0, 1], as vLLM and TEI return
/// them; the logits are kept too. Pairs longer than the model allows lose tokens from their longer side first.
/// Thread-safe like <see cref="EncoderModel"/>.
/// </summary>
public sealed class RerankerModel : IDisposable
{
    private readonly EncoderRunner runner;

    private RerankerModel(EncoderRunner runner) => this.runner = runner;

    public string Name => runner.Name;

    public string Directory => runner.Directory;

    public string Architecture => runner.Config.Architecture;

    public int MaxInputTokens => runner.MaxTokens;

    public EncoderOptions Options => runner.Options;

    public IBackend Backend => runner.Encoder.Backend;

    public static RerankerModel Load(string directory, IBackend backend, EncoderOptions? options = null, string? name = null)
    {
        var runner = EncoderRunner.Open(directory, backend, options ?? new EncoderOptions(), name,
            config => SentenceTransformersConfig.Load(directory, config).MaxSeqLength);
        if (runner.Encoder.NumLabels != 1)
        {
            var (architecture, labels) = (runner.Config.Architecture, runner.Encoder.NumLabels);
            runner.Dispose();
            throw new ModelConfigException(labels == 0
                ? $"{directory}: {architecture} has no classification head, so it is an embedding model, not a reranker; serve it with --embedding-model"
                : $"{directory}: a reranker needs one output label (a relevance logit), this one has {labels}");
        }

        return new RerankerModel(runner);
    }

    /// <summary>Relevance of each passage to the query, sigmoid(logit) in [0, 1], in the passages' order.</summary>
    public async Task<IReadOnlyList<float>> ScoreAsync(string query, IReadOnlyList<string> passages, CancellationToken cancellationToken = default) =>
        (await RerankAsync(query, passages, cancellationToken).ConfigureAwait(false)).Scores;

    public async Task<RerankBatch> RerankAsync(string query, IReadOnlyList<string> passages, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(query);
        ArgumentNullException.ThrowIfNull(passages);
        var inputs = passages.Select(p => runner.Pair(query, p)).ToArray();
        var logits = new float[inputs.Length];
        await runner.RunAsync(inputs, (batch, first) => runner.Encoder.Classify(batch).CopyTo(logits, first), cancellationToken).ConfigureAwait(false);
        var scores = logits.Select(l => (float)(1 / (1 + Math.Exp(-l)))).ToArray();
        return new RerankBatch(scores, logits, inputs.Sum(i => i.Ids.Length), inputs.Count(i => i.Truncated));
    }

    public void Dispose() => runner.Dispose();
}
