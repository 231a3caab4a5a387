using Enclave.Engine.Backends;
using Enclave.Engine.Formats;
using Enclave.Engine.Models;
using Enclave.Engine.Tokenization;

namespace Enclave.Engine.Embeddings;

/// <summary>One tokenized encoder input: ids with special tokens, their type ids, and whether it was cut to fit.</summary>
public readonly record struct EncoderInput(int[] Ids, int[] TypeIds, bool Truncated);

/// <summary>
/// What embedding and rerank models share: the checkpoint, tokenizer and encoder on one backend, truncation to the
/// model's limit, and packing of many inputs into forward passes of bounded size. Backends are single-caller, so
/// forward passes are serialised by an async gate taken per pass (not per request): concurrent requests interleave
/// pass by pass, and memory stays bounded by <see cref="EncoderOptions.MaxBatchTokens"/> whatever the request size.
/// </summary>
internal sealed class EncoderRunner : IDisposable
{
    private readonly SemaphoreSlim gate = new(1, 1);
    private readonly IWeightSource weights;
    private bool disposed;

    private EncoderRunner(string name, string directory, ModelConfig config, IWeightSource weights, Encoder encoder, HfTokenizer tokenizer, EncoderOptions options, int? stMaxSeqLength)
    {
        Name = name;
        Directory = directory;
        Config = config;
        this.weights = weights;
        Encoder = encoder;
        Tokenizer = tokenizer;
        Options = options;
        MaxTokens = Math.Min(encoder.MaxSequenceLength, stMaxSeqLength ?? int.MaxValue);
        if (options.MaxBatchTokens < MaxTokens)
        {
            throw new ArgumentException($"max batch tokens ({options.MaxBatchTokens}) must hold one whole sequence of {MaxTokens} tokens");
        }
    }

    public string Name { get; }

    public string Directory { get; }

    public ModelConfig Config { get; }

    public Encoder Encoder { get; }

    public HfTokenizer Tokenizer { get; }

    public EncoderOptions Options { get; }

    /// <summary>Longest input in tokens, special tokens included: the position table's limit or max_seq_length, whichever is smaller.</summary>
    public int MaxTokens { get; }

    public static EncoderRunner Open(string directory, IBackend backend, EncoderOptions options, string? name, Func<ModelConfig, int?> maxSeqLength)
    {
        var config = ModelConfig.Load(directory);
        if (!ModelRegistry.IsEncoder(config.Architecture))
        {
            throw new ModelConfigException(
                $"{config.Path}: architecture '{config.Architecture}' is not an embedding or rerank model (supported: {string.Join(", ", ModelRegistry.SupportedEncoderArchitectures.Order(StringComparer.Ordinal))})");
        }

        var tokenizer = HfTokenizer.FromDirectory(directory);
        var checkpoint = SafetensorsCheckpoint.Open(directory);
        try
        {
            var encoder = ModelRegistry.CreateEncoder(config, checkpoint, backend);
            var folder = Path.GetFileName(Path.TrimEndingDirectorySeparator(Path.GetFullPath(directory)));
            return new EncoderRunner(name ?? folder, directory, config, checkpoint, encoder, tokenizer, options, maxSeqLength(config));
        }
        catch
        {
            checkpoint.Dispose();
            throw;
        }
    }

    /// <summary>Tokenizes one text, keeping the first tokens that fit beside the special tokens.</summary>
    public EncoderInput Text(string text)
    {
        var ids = Tokenizer.Encode(text);
        var budget = MaxTokens - Tokenizer.SpecialTokenCount(pair: false);
        var truncated = ids.Length > budget;
        var (all, types) = Tokenizer.AddSpecialTokens(truncated ? ids[..budget] : ids);
        return new EncoderInput(all, types, truncated);
    }

    /// <summary>Tokenizes a (query, passage) pair, trimming the longer side first until both fit (longest_first).</summary>
    public EncoderInput Pair(string first, string second)
    {
        var a = new List<int>(Tokenizer.Encode(first));
        var b = new List<int>(Tokenizer.Encode(second));
        var budget = MaxTokens - Tokenizer.SpecialTokenCount(pair: true);
        if (budget < 2)
        {
            throw new ArgumentException($"model '{Name}' allows {MaxTokens} tokens, too few for a pair");
        }

        var truncated = false;
        while (a.Count + b.Count > budget)
        {
            var longer = a.Count > b.Count ? a : b;
            longer.RemoveAt(longer.Count - 1);
            truncated = true;
        }

        var (ids, types) = Tokenizer.AddSpecialTokens(a, b);
        return new EncoderInput(ids, types, truncated);
    }

    /// <summary>Pre-tokenized input taken as the whole sequence (no special tokens added), cut to the limit.</summary>
    public EncoderInput Tokens(int[] ids)
    {
        foreach (var id in ids)
        {
            if ((uint)id >= (uint)Config.VocabSize)
            {
                throw new ArgumentException($"token id {id} is outside the vocabulary of model '{Name}' (0..{Config.VocabSize - 1})");
            }
        }

        var truncated = ids.Length > MaxTokens;
        var kept = truncated ? ids[..MaxTokens] : ids;
        return new EncoderInput(kept, new int[kept.Length], truncated);
    }

    /// <summary>
    /// Runs inputs in packed passes of at most MaxBatchTokens tokens and MaxBatchSequences sequences, calling
    /// <paramref name="pass"/> under the gate with each pass's batch and the index of its first input.
    /// </summary>
    public async Task RunAsync(IReadOnlyList<EncoderInput> inputs, Action<EncoderBatch, int> pass, CancellationToken cancellationToken)
    {
        var start = 0;
        while (start < inputs.Count)
        {
            int end = start, tokens = 0;
            while (end < inputs.Count && end - start < Options.MaxBatchSequences && tokens + inputs[end].Ids.Length <= Options.MaxBatchTokens)
            {
                tokens += inputs[end].Ids.Length;
                end++;
            }

            var ids = new int[end - start][];
            var types = new int[end - start][];
            for (var i = start; i < end; i++)
            {
                ids[i - start] = inputs[i].Ids;
                types[i - start] = inputs[i].TypeIds;
            }

            var batch = EncoderBatch.Pack(ids, types);
            cancellationToken.ThrowIfCancellationRequested();
            await gate.WaitAsync(cancellationToken).ConfigureAwait(false);
            try
            {
                ObjectDisposedException.ThrowIf(disposed, this);
                pass(batch, start);
            }
            finally
            {
                gate.Release();
            }

            start = end;
        }
    }

    public void Dispose()
    {
        gate.Wait();
        try
        {
            if (!disposed)
            {
                disposed = true;
                Encoder.Dispose();
                weights.Dispose();
            }
        }
        finally
        {
            gate.Release();
        }
    }
}
