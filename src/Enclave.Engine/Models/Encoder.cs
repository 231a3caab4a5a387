using Enclave.Engine.Backends;

namespace Enclave.Engine.Models;

/// <summary>
/// Packed sequences for one encoder forward pass: sequence s owns tokens [SequenceStarts[s], SequenceStarts[s + 1])
/// of the flat lists. Special tokens are already in place; nothing is padded.
/// </summary>
public sealed class EncoderBatch
{
    /// <summary>Token ids, [T].</summary>
    public required int[] TokenIds { get; init; }

    /// <summary>Token type (segment) ids, [T]; all 0 for a single sequence.</summary>
    public required int[] TokenTypeIds { get; init; }

    /// <summary>[sequences + 1], from 0 to T.</summary>
    public required int[] SequenceStarts { get; init; }

    public int TokenCount => TokenIds.Length;

    public int SequenceCount => SequenceStarts.Length - 1;

    /// <summary>Packs tokenized sequences (ids and, optionally, type ids) into one batch.</summary>
    public static EncoderBatch Pack(IReadOnlyList<int[]> ids, IReadOnlyList<int[]>? typeIds = null)
    {
        var total = 0;
        foreach (var s in ids)
        {
            total += s.Length;
        }

        var tokens = new int[total];
        var types = new int[total];
        var starts = new int[ids.Count + 1];
        for (var s = 0; s < ids.Count; s++)
        {
            starts[s + 1] = starts[s] + ids[s].Length;
            ids[s].CopyTo(tokens, starts[s]);
            if (typeIds is not null)
            {
                if (typeIds[s].Length != ids[s].Length)
                {
                    throw new ArgumentException($"sequence {s} has {ids[s].Length} ids but {typeIds[s].Length} token type ids");
                }

                typeIds[s].CopyTo(types, starts[s]);
            }
        }

        return new EncoderBatch { TokenIds = tokens, TokenTypeIds = types, SequenceStarts = starts };
    }
}

/// <summary>
/// A bidirectional encoder (BERT family) bound to a backend. One forward pass over packed sequences gives the last
/// hidden state of every token; no KV cache and no scheduler are involved. Not thread-safe: callers serialise.
/// </summary>
public abstract class Encoder : IDisposable
{
    protected Encoder(ModelConfig config, IBackend backend)
    {
        Config = config;
        Backend = backend;
    }

    public ModelConfig Config { get; }

    public IBackend Backend { get; }

    /// <summary>Longest sequence (special tokens included) the position table allows.</summary>
    public abstract int MaxSequenceLength { get; }

    /// <summary>Bytes of weights read per forward pass.</summary>
    public abstract long WeightBytes { get; }

    /// <summary>Outputs of a classification head per sequence (num_labels); 0 for a bare encoder.</summary>
    public virtual int NumLabels => 0;

    /// <summary>Runs the batch; returns the last hidden state, [T, hidden] F32 on the backend, valid until the next call.</summary>
    public abstract DeviceTensor Forward(EncoderBatch batch);

    /// <summary>Runs the batch through the classification head: logits [sequences, NumLabels], row-major, on the host.</summary>
    public virtual float[] Classify(EncoderBatch batch) =>
        throw new NotSupportedException($"{Config.Architecture} has no classification head");

    public void Dispose()
    {
        Dispose(true);
        GC.SuppressFinalize(this);
    }

    protected virtual void Dispose(bool disposing)
    {
    }
}
