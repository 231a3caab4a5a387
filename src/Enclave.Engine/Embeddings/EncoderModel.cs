using Enclave.Engine.Backends;
using Enclave.Engine.Models;
using Enclave.Engine.Tokenization;
using Microsoft.Extensions.AI;

namespace Enclave.Engine.Embeddings;

/// <summary>Embeddings for a batch of inputs, with what the API reports: tokens read and inputs cut to fit.</summary>
public sealed record EmbeddingBatch(float[][] Vectors, int PromptTokens, int TruncatedInputs);

/// <summary>
/// An embedding model (BertModel, XLMRobertaModel) with its tokenizer and sentence-transformers pooling, usable
/// directly or as <see cref="IEmbeddingGenerator{TInput, TEmbedding}"/>. Inputs longer than the model allows are
/// truncated (and counted in <see cref="EmbeddingBatch.TruncatedInputs"/>). Thread-safe: concurrent calls share the
/// backend pass by pass (see <see cref="EncoderRunner"/>); memory per pass is bounded by the batch limits.
/// </summary>
public sealed class EncoderModel : IEmbeddingGenerator<string, Embedding<float>>
{
    private readonly EncoderRunner runner;
    private readonly EmbeddingGeneratorMetadata metadata;

    private EncoderModel(EncoderRunner runner, SentenceTransformersConfig sentence)
    {
        this.runner = runner;
        Sentence = sentence;
        metadata = new EmbeddingGeneratorMetadata("enclave", null, runner.Name, runner.Config.HiddenSize);
    }

    public string Name => runner.Name;

    public string Directory => runner.Directory;

    public string Architecture => runner.Config.Architecture;

    /// <summary>Length of the vectors returned when no dimensions are asked for.</summary>
    public int Dimensions => runner.Config.HiddenSize;

    /// <summary>Longest input in tokens (special tokens included); longer inputs are truncated.</summary>
    public int MaxInputTokens => runner.MaxTokens;

    public SentenceTransformersConfig Sentence { get; }

    public HfTokenizer Tokenizer => runner.Tokenizer;

    public EncoderOptions Options => runner.Options;

    public IBackend Backend => runner.Encoder.Backend;

    /// <summary>Loads a BertModel or XLMRobertaModel directory (config.json, model.safetensors, tokenizer.json, sentence-transformers files).</summary>
    public static EncoderModel Load(string directory, IBackend backend, EncoderOptions? options = null, string? name = null)
    {
        SentenceTransformersConfig? sentence = null;
        var runner = EncoderRunner.Open(directory, backend, options ?? new EncoderOptions(), name, config =>
        {
            sentence = SentenceTransformersConfig.Load(directory, config);
            return sentence.MaxSeqLength;
        });
        if (runner.Encoder.NumLabels > 0)
        {
            var architecture = runner.Config.Architecture;
            runner.Dispose();
            throw new ModelConfigException($"{directory}: {architecture} is a classifier (a reranker), not an embedding model; serve it with --rerank-model");
        }

        return new EncoderModel(runner, sentence!);
    }

    /// <summary>
    /// Checks a requested output length the way vLLM does for Matryoshka: only models that declare it
    /// (config.json is_matryoshka or matryoshka_dimensions) may be truncated, to a listed size when a list is given.
    /// Returns null when the request is fine, else what is wrong.
    /// </summary>
    public string? CheckDimensions(int? dimensions)
    {
        if (dimensions is not int d || d == Dimensions)
        {
            return null;
        }

        if (!Sentence.IsMatryoshka)
        {
            return $"model '{Name}' does not support matryoshka representation (config.json declares neither is_matryoshka nor matryoshka_dimensions), so its {Dimensions}-dimensional embeddings cannot be shortened to {d}";
        }

        if (d < 1 || d > Dimensions)
        {
            return $"dimensions must be between 1 and {Dimensions} for model '{Name}', got {d}";
        }

        if (Sentence.MatryoshkaDimensions is { } allowed && !allowed.Contains(d))
        {
            return $"model '{Name}' supports dimensions {string.Join(", ", allowed)} only, got {d}";
        }

        return null;
    }

    /// <summary>Embeds texts (tokenized here, truncated to <see cref="MaxInputTokens"/>).</summary>
    public Task<EmbeddingBatch> EmbedAsync(IReadOnlyList<string> texts, int? dimensions = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(texts);
        return RunAsync([.. texts.Select(runner.Text)], dimensions, cancellationToken);
    }

    /// <summary>Embeds pre-tokenized inputs, each taken as the whole sequence (no special tokens added).</summary>
    public Task<EmbeddingBatch> EmbedTokensAsync(IReadOnlyList<int[]> inputs, int? dimensions = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(inputs);
        if (inputs.Any(i => i.Length == 0))
        {
            throw new ArgumentException("a token-id input must not be empty");
        }

        return RunAsync([.. inputs.Select(runner.Tokens)], dimensions, cancellationToken);
    }

    private async Task<EmbeddingBatch> RunAsync(EncoderInput[] inputs, int? dimensions, CancellationToken cancellationToken)
    {
        if (CheckDimensions(dimensions) is { } problem)
        {
            throw new ArgumentException(problem);
        }

        var width = dimensions ?? Dimensions;
        var vectors = new float[inputs.Length][];
        var hiddenSize = Dimensions;
        float[] hostHidden = [];
        await runner.RunAsync(inputs, (batch, first) =>
        {
            var hidden = runner.Encoder.Forward(batch);                // [T, hidden]
            if (hostHidden.Length < batch.TokenCount * hiddenSize)
            {
                hostHidden = new float[batch.TokenCount * hiddenSize];
            }

            var host = hostHidden.AsSpan(0, batch.TokenCount * hiddenSize);
            runner.Encoder.Backend.Download(hidden, host);
            for (var s = 0; s < batch.SequenceCount; s++)
            {
                vectors[first + s] = Pool(host, batch.SequenceStarts[s], batch.SequenceStarts[s + 1], hiddenSize, width);
            }
        }, cancellationToken).ConfigureAwait(false);
        return new EmbeddingBatch(vectors, inputs.Sum(i => i.Ids.Length), inputs.Count(i => i.Truncated));
    }

    /// <summary>Pools rows [start, end) of hidden [T, size] per the model's mode, keeps the first width values, L2-normalises if configured.</summary>
    private float[] Pool(ReadOnlySpan<float> hidden, int start, int end, int size, int width)
    {
        var pooled = new double[width];
        switch (Sentence.Pooling)
        {
            case PoolingMode.Cls:
            case PoolingMode.LastToken:
            {
                var row = Sentence.Pooling == PoolingMode.Cls ? start : end - 1;
                for (var i = 0; i < width; i++)
                {
                    pooled[i] = hidden[(row * size) + i];
                }

                break;
            }

            default:
                for (var t = start; t < end; t++)
                {
                    for (var i = 0; i < width; i++)
                    {
                        pooled[i] += hidden[(t * size) + i];
                    }
                }

                for (var i = 0; i < width; i++)
                {
                    pooled[i] /= Math.Max(1, end - start);
                }

                break;
        }

        var scale = 1.0;
        if (Sentence.Normalize)
        {
            double norm = 0;
            foreach (var v in pooled)
            {
                norm += v * v;
            }

            scale = 1.0 / Math.Max(Math.Sqrt(norm), 1e-12); // torch.nn.functional.normalize's eps
        }

        var result = new float[width];
        for (var i = 0; i < width; i++)
        {
            result[i] = (float)(pooled[i] * scale);
        }

        return result;
    }

    public async Task<GeneratedEmbeddings<Embedding<float>>> GenerateAsync(IEnumerable<string> values, EmbeddingGenerationOptions? options = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(values);
        var texts = values.ToArray();
        var result = await EmbedAsync(texts, options?.Dimensions, cancellationToken).ConfigureAwait(false);
        var created = DateTimeOffset.UtcNow;
        var embeddings = new GeneratedEmbeddings<Embedding<float>>(result.Vectors.Select(v => new Embedding<float>(v) { ModelId = Name, CreatedAt = created }))
        {
            Usage = new UsageDetails { InputTokenCount = result.PromptTokens, TotalTokenCount = result.PromptTokens },
        };
        if (result.TruncatedInputs > 0)
        {
            embeddings.AdditionalProperties = new AdditionalPropertiesDictionary { ["truncated_inputs"] = result.TruncatedInputs };
        }

        return embeddings;
    }

    public object? GetService(Type serviceType, object? serviceKey = null) =>
        serviceKey is not null ? null
        : serviceType == typeof(EmbeddingGeneratorMetadata) ? metadata
        : serviceType.IsInstanceOfType(this) ? this
        : null;

    public void Dispose() => runner.Dispose();
}
