namespace Enclave.Engine.Backends;

/// <summary>
/// A backend that can record the whole forward pass of a pure decode step (every sequence computing one token) once
/// per batch size and replay it with one launch, instead of enqueueing every operation from the host each step
/// (CUDA graphs). Only models whose forward pass never waits for the host mid-step may turn it on: the replay
/// repeats the recorded work on whatever the step metadata says, so a step that needs a host decision (expert
/// routing downloaded from the device) cannot be replayed.
/// </summary>
public interface IDecodeGraphs
{
    /// <summary>Whether the backend's settings allow graphs at all (false under --enforce-eager).</summary>
    bool DecodeGraphsAllowed { get; }

    /// <summary>Whether decode steps are being recorded and replayed now.</summary>
    bool DecodeGraphsEnabled { get; }

    /// <summary>
    /// Starts recording decode steps for a model that allows it. The limits size the buffers the recorded steps read,
    /// which must stay at fixed addresses for as long as the recordings exist.
    /// </summary>
    void EnableDecodeGraphs(DecodeGraphLimits limits);

    /// <summary>Stops recording and releases every recorded step (their buffers may be about to go away).</summary>
    void DisableDecodeGraphs();
}

/// <summary>
/// What a decode step can hold at most: context length, sequences, tokens of any step, blocks per sequence; and the
/// largest decode batch the model's forward pass keeps on the backend (larger ones run unrecorded).
/// </summary>
public sealed record DecodeGraphLimits(int MaxModelLength, int MaxSequences, int MaxBatchedTokens, int MaxBlocksPerSequence, int MaxRecordedSequences = int.MaxValue);
