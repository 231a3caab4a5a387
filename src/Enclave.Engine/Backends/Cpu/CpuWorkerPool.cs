namespace Enclave.Engine.Backends.Cpu;

/// <summary>A unit of parallel work: items [0, count) are handed out one at a time to whichever thread is free.</summary>
internal abstract class CpuJob
{
    /// <param name="index">The item, in [0, count).</param>
    /// <param name="worker">The executing thread's slot in [0, pool.ThreadCount), for per-thread scratch space.</param>
    public abstract void Execute(int index, int worker);
}

/// <summary>
/// Threads started once and reused by every operation. A call publishes a job, then a 64-bit ticket holding the
/// call's generation (high half) and the next unclaimed item (low half). Threads claim items by compare-exchange
/// on the ticket, which fails for a thread still holding an older generation, and a finished call closes its
/// ticket, so a late thread can never take an item of a newer call. The caller claims items too and returns once
/// every item is done; it never waits for a worker that has not woken up, so a descheduled thread only costs the item
/// it is in the middle of.
/// Nothing is allocated per call. Workers spin briefly between calls (a forward pass issues them back to back)
/// and then park on a monitor so an idle engine costs no CPU.
/// </summary>
internal sealed class CpuWorkerPool : IDisposable
{
    private const int SpinIterations = 50_000;

    /// <summary>The ticket index of a finished call: at or past any count, so no claim succeeds.</summary>
    private const long ClosedIndex = int.MaxValue;

    private readonly Thread[] _threads;
    private readonly object _gate = new();
    private CpuJob? _job;
    private int _count;
    private long _ticket;
    private int _done;
    private int _generation;
    private int _sleepers;
    private volatile bool _stopping;
    private Exception? _failure;

    public CpuWorkerPool(int threadCount)
    {
        ThreadCount = Math.Max(1, threadCount);
        _threads = new Thread[ThreadCount - 1];
        for (var i = 0; i < _threads.Length; i++)
        {
            var slot = i + 1;
            _threads[i] = new Thread(() => WorkerLoop(slot))
            {
                IsBackground = true,
                Name = $"enclave-cpu-{slot}",
            };
            _threads[i].Start();
        }
    }

    /// <summary>Threads that execute items, the calling thread included.</summary>
    public int ThreadCount { get; }

    /// <summary>Runs job items [0, count) across the pool and returns when all are done. Not reentrant.</summary>
    public void Run(CpuJob job, int count)
    {
        if (count <= 0)
        {
            return;
        }

        if (count == 1 || _threads.Length == 0)
        {
            for (var i = 0; i < count; i++)
            {
                job.Execute(i, 0);
            }

            return;
        }

        var generation = _generation + 1;
        _generation = generation;
        _job = job;
        _count = count;
        _failure = null;
        Volatile.Write(ref _done, 0);

        // Publishing the ticket releases the writes above to any thread that reads it.
        Interlocked.Exchange(ref _ticket, (long)generation << 32);
        if (Volatile.Read(ref _sleepers) != 0)
        {
            lock (_gate)
            {
                Monitor.PulseAll(_gate);
            }
        }

        Drain(generation, job, count, 0);

        var spin = default(SpinWait);
        while (Volatile.Read(ref _done) != count)
        {
            spin.SpinOnce(-1);
        }

        // Close this generation before the next call writes its job and count. A worker may have read this
        // generation's ticket and then, descheduled, the next call's job and count; with the ticket still open at
        // index count, and the next count larger, its claim would succeed under the old generation: an item run
        // twice, and a completion counted into the next call, whose caller then waits forever.
        Interlocked.Exchange(ref _ticket, ((long)generation << 32) | ClosedIndex);
        _job = null;
        if (_failure is { } failure)
        {
            _failure = null;
            throw new AggregateException("a CPU kernel failed", failure);
        }
    }

    private void Drain(int generation, CpuJob job, int count, int worker)
    {
        while (true)
        {
            var ticket = Volatile.Read(ref _ticket);
            var index = (int)(ticket & 0xFFFF_FFFF);
            if ((int)(ticket >> 32) != generation || index >= count)
            {
                return;
            }

            if (Interlocked.CompareExchange(ref _ticket, ticket + 1, ticket) != ticket)
            {
                continue;
            }

            try
            {
                job.Execute(index, worker);
            }
            catch (Exception ex)
            {
                Interlocked.CompareExchange(ref _failure, ex, null);
            }

            Interlocked.Increment(ref _done);
        }
    }

    private void WorkerLoop(int slot)
    {
        var seen = 0;
        while (true)
        {
            var spins = 0;
            while ((int)(Volatile.Read(ref _ticket) >> 32) == seen && !_stopping)
            {
                if (++spins < SpinIterations)
                {
                    Thread.SpinWait(8);
                    continue;
                }

                lock (_gate)
                {
                    Interlocked.Increment(ref _sleepers);
                    while ((int)(Volatile.Read(ref _ticket) >> 32) == seen && !_stopping)
                    {
                        Monitor.Wait(_gate);
                    }

                    Interlocked.Decrement(ref _sleepers);
                }
            }

            if (_stopping)
            {
                return;
            }

            seen = (int)(Volatile.Read(ref _ticket) >> 32);

            // Read after the ticket: the job of generation 'seen' or of a newer one; in the latter case every claim
            // below fails, because the ticket's generation no longer matches.
            var job = _job;
            var count = _count;
            if (job != null)
            {
                Drain(seen, job, count, slot);
            }
        }
    }

    public void Dispose()
    {
        _stopping = true;
        lock (_gate)
        {
            Monitor.PulseAll(_gate);
        }

        foreach (var thread in _threads)
        {
            thread.Join();
        }
    }
}
