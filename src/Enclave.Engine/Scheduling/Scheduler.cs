using Enclave.Engine.Backends;
using Enclave.Engine.KvCache;

namespace Enclave.Engine.Scheduling;

/// <summary>Limits the scheduler works within.</summary>
public sealed record SchedulerOptions(int MaxNumSeqs, int MaxNumBatchedTokens, int MaxWaiting);

/// <summary>What one step computes: for each scheduled sequence, how many of its tokens, and the batch built from them.</summary>
public sealed record ScheduledStep(ForwardBatch Batch, (Sequence Sequence, int Tokens, bool Samples)[] Entries);

/// <summary>
/// Iteration-level continuous batching with one rule for every request: each step a sequence computes the tokens it
/// has not computed yet (its whole remaining prompt chunked by the token budget, or its one new token), so prefill
/// and decode mix freely in a step. Running sequences go first; waiting ones join while the token budget, the
/// sequence limit and free KV blocks allow. A sequence joining first takes the leading full blocks of its tokens that
/// the prefix cache already holds and computes only the rest. When blocks run out the newest running sequence is
/// preempted: its blocks are freed and it is recomputed later. Host-side only; runs on the engine loop thread.
/// </summary>
public sealed class Scheduler(SchedulerOptions options, BlockPool pool)
{
    private readonly List<Sequence> running = [];
    private readonly LinkedList<Sequence> waiting = new();

    public int Running => running.Count;

    public int Waiting => waiting.Count;

    public BlockPool Pool => pool;

    public long Preemptions { get; private set; }

    public bool HasWork => running.Count > 0 || waiting.Count > 0;

    public bool CanAccept => waiting.Count < options.MaxWaiting;

    public void Add(Sequence sequence) => waiting.AddLast(sequence);

    /// <summary>Removes aborted or finished sequences and frees their blocks; returns them.</summary>
    public List<Sequence> RemoveFinished()
    {
        var removed = new List<Sequence>();
        for (var i = running.Count - 1; i >= 0; i--)
        {
            var s = running[i];
            if (s.Finish is not null || s.IsAborted)
            {
                Free(s);
                running.RemoveAt(i);
                removed.Add(s);
            }
        }

        for (var node = waiting.First; node is not null;)
        {
            var next = node.Next;
            if (node.Value.Finish is not null || node.Value.IsAborted)
            {
                Free(node.Value);
                removed.Add(node.Value);
                waiting.Remove(node);
            }

            node = next;
        }

        return removed;
    }

    public ScheduledStep? Schedule()
    {
        var budget = options.MaxNumBatchedTokens;
        var entries = new List<(Sequence, int, bool)>();
        for (var i = 0; i < running.Count && budget > 0; i++)
        {
            var s = running[i];
            pool.RegisterFullBlocks(s.Tokens, s.NumComputed, s.BlockTable, s.BlockHashes);
            var n = Math.Min(s.Tokens.Count - s.NumComputed, budget);
            if (n <= 0)
            {
                continue;
            }

            var self = false;
            while (!pool.TryEnsureCapacity(s.BlockTable, s.NumComputed + n))
            {
                var victim = running[^1];
                Preempt(victim);
                if (ReferenceEquals(victim, s))
                {
                    self = true;
                    break;
                }
            }

            if (self)
            {
                break;
            }

            entries.Add((s, n, s.NumComputed + n == s.Tokens.Count));
            budget -= n;
        }

        while (waiting.First is { } node && budget > 0 && running.Count < options.MaxNumSeqs)
        {
            var s = node.Value;
            var hit = 0;
            if (s.NumComputed == 0 && s.BlockTable.Count == 0)
            {
                hit = pool.AcquireCachedPrefix(s.Tokens, s.BlockTable, s.BlockHashes);
                s.NumComputed = hit;
            }

            var n = Math.Min(s.Tokens.Count - s.NumComputed, budget);
            if (!pool.TryEnsureCapacity(s.BlockTable, s.NumComputed + n))
            {
                // Give the cached blocks back untouched; the sequence retries from scratch next step.
                pool.Release(s.BlockTable);
                s.BlockHashes.Clear();
                s.NumComputed = 0;
                break;
            }

            if (s.Preemptions == 0)
            {
                s.CachedPromptTokens = Math.Min(hit, s.PromptLength);
            }

            waiting.RemoveFirst();
            running.Add(s);
            entries.Add((s, n, s.NumComputed + n == s.Tokens.Count));
            budget -= n;
        }

        return entries.Count == 0 ? null : new ScheduledStep(BuildBatch(entries), [.. entries]);
    }

    private void Free(Sequence s)
    {
        pool.RegisterFullBlocks(s.Tokens, s.NumComputed, s.BlockTable, s.BlockHashes);
        pool.Release(s.BlockTable);
        s.BlockHashes.Clear();
    }

    private void Preempt(Sequence victim)
    {
        Free(victim);
        victim.NumComputed = 0;
        victim.Preemptions++;
        Preemptions++;
        running.Remove(victim);
        waiting.AddFirst(victim);
    }

    private ForwardBatch BuildBatch(List<(Sequence Sequence, int Tokens, bool Samples)> entries)
    {
        var total = 0;
        var sampling = 0;
        foreach (var e in entries)
        {
            total += e.Tokens;
            sampling += e.Samples ? 1 : 0;
        }

        var ids = new int[total];
        var positions = new int[total];
        var slots = new int[total];
        var slices = new SequenceSlice[entries.Count];
        var logitRows = new int[sampling];
        int t = 0, r = 0;
        for (var i = 0; i < entries.Count; i++)
        {
            var (s, n, samples) = entries[i];
            var start = t;
            for (var j = 0; j < n; j++, t++)
            {
                var p = s.NumComputed + j;
                ids[t] = s.Tokens[p];
                positions[t] = p;
                slots[t] = (s.BlockTable[p / pool.BlockSize] * pool.BlockSize) + (p % pool.BlockSize);
            }

            slices[i] = new SequenceSlice(start, n, s.NumComputed + n, [.. s.BlockTable]);
            if (samples)
            {
                logitRows[r++] = t - 1;
            }
        }

        return new ForwardBatch { TokenIds = ids, Positions = positions, SlotMapping = slots, Sequences = slices, LogitRows = logitRows };
    }
}
