using System.Threading.Channels;
using Enclave.Engine.KvCache;
using Enclave.Engine.Sampling;

namespace Enclave.Engine.Scheduling;

/// <summary>Why a sequence stopped, with the OpenAI finish_reason spelling.</summary>
public enum FinishReason
{
    /// <summary>An end-of-sequence or stop token, or a stop string.</summary>
    Stop,

    /// <summary>max_tokens or the model's context length was reached.</summary>
    Length,

    /// <summary>The caller cancelled (client disconnect) or the engine shut down.</summary>
    Abort,
}

/// <summary>One step's result for one sequence, pushed from the engine loop to the request's reader.</summary>
public readonly record struct TokenEvent(int TokenId, float Logprob, TokenLogprob[]? TopLogprobs, FinishReason? Finish);

/// <summary>
/// A request inside the engine: its tokens (prompt then output), how many have K/V in the cache, and its block
/// table. Owned by the scheduler and touched only from the engine loop thread, except <see cref="Abort"/>.
/// </summary>
public sealed class Sequence
{
    private int aborted;

    public Sequence(long id, IReadOnlyList<int> promptIds, SamplingParams parameters, IReadOnlyCollection<int> eosTokenIds)
    {
        Id = id;
        Tokens = new List<int>(promptIds.Count + Math.Min(parameters.MaxTokens, 4096));
        Tokens.AddRange(promptIds);
        PromptLength = promptIds.Count;
        Parameters = parameters;
        Random = parameters.Seed is { } seed ? new Random(unchecked((int)seed ^ (int)(seed >> 32))) : new Random();
        var stops = new HashSet<int>(parameters.StopTokenIds);
        if (!parameters.IgnoreEos)
        {
            stops.UnionWith(eosTokenIds);
        }

        StopTokenIds = [.. stops];
        Output = Channel.CreateUnbounded<TokenEvent>(new UnboundedChannelOptions { SingleReader = true, SingleWriter = true });
    }

    public long Id { get; }

    /// <summary>Prompt followed by generated tokens.</summary>
    public List<int> Tokens { get; }

    public int PromptLength { get; }

    public int OutputLength => Tokens.Count - PromptLength;

    /// <summary>Tokens whose K/V is in the cache; the next step computes Tokens[NumComputed..].</summary>
    public int NumComputed { get; set; }

    public List<int> BlockTable { get; } = [];

    /// <summary>Prefix hashes of the leading full blocks of <see cref="BlockTable"/> (for the prefix cache).</summary>
    public List<BlockHash> BlockHashes { get; } = [];

    /// <summary>Prompt tokens whose K/V came from the prefix cache instead of being computed.</summary>
    public int CachedPromptTokens { get; set; }

    public SamplingParams Parameters { get; }

    public Random Random { get; }

    public int[] StopTokenIds { get; }

    public Channel<TokenEvent> Output { get; }

    public bool IsAborted => Volatile.Read(ref aborted) != 0;

    public FinishReason? Finish { get; set; }

    /// <summary>Times this sequence was preempted (its cache freed and recomputed later).</summary>
    public int Preemptions { get; set; }

    /// <summary>Trace context and phase times while someone records traces (<see cref="Generation.EngineTelemetry"/>); else null.</summary>
    internal Generation.SequenceTrace? Trace { get; set; }

    /// <summary>Asks the engine to drop this sequence at its next step; safe from any thread.</summary>
    public void Abort() => Volatile.Write(ref aborted, 1);
}
