namespace Enclave.Engine.Backends;

/// <summary>
/// One engine step's worth of tokens: a flat list of tokens from several sequences, each sequence contributing a
/// contiguous run (prefill chunk or a single decode token). Owned by the scheduler; lives on the host. A backend
/// copies what it needs to the device once per step in <see cref="IBackend.PrepareStep"/>, never per operation.
/// </summary>
public sealed class ForwardBatch
{
    /// <summary>Token ids, [tokens].</summary>
    public required int[] TokenIds { get; init; }

    /// <summary>Absolute position of each token in its sequence, [tokens].</summary>
    public required int[] Positions { get; init; }

    /// <summary>KV-cache slot (block * blockSize + offset) each token's K/V is written to, [tokens].</summary>
    public required int[] SlotMapping { get; init; }

    /// <summary>The sequences in the batch, in token order.</summary>
    public required SequenceSlice[] Sequences { get; init; }

    /// <summary>Rows of the flat token list whose logits are needed (usually each sequence's last token).</summary>
    public required int[] LogitRows { get; init; }

    public int TokenCount => TokenIds.Length;

    /// <summary>Largest context length among the sequences (bounds attention scratch space).</summary>
    public int MaxContextLength
    {
        get
        {
            var max = 0;
            foreach (var s in Sequences)
            {
                max = Math.Max(max, s.ContextLength);
            }

            return max;
        }
    }
}

/// <summary>
/// One sequence's part of a <see cref="ForwardBatch"/>: tokens [QueryStart, QueryStart + QueryLength) of the flat
/// list, attending over ContextLength cached positions (the new ones included) found through BlockTable.
/// </summary>
public readonly record struct SequenceSlice(int QueryStart, int QueryLength, int ContextLength, int[] BlockTable);
