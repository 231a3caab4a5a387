namespace Enclave.Engine.Backends.Cpu;

/// <summary>A unit of parallel work: items [0, count) are handed out one at a time to whichever thread is free.</summary>
internal abstract class CpuJob
{
    /// <param name="index">The item, in [0, count).</param>
    /// <param name="worker">The executing thread's slot in [0, pool.ThreadCount), for per-thread scratch space.</param>
    public abstract void Execute(int index, int worker);
}

/// <summary>
/// Threads started once and reused by every operation. A call publishes a job and a count, bumps a generation
/// counter the workers spin on, runs items itself as well, and returns when every worker has left the job.
/// Nothing is allocated per call. Workers spin briefly between calls (a forward pass issues them back to back)
/// and then park on a monitor so an idle engine costs no CPU.
/// </summary>
internal sealed class CpuWorkerPool : IDisposable
{
    private const int SpinIterations = 20_000;

    private readonly Thread[] _threads;
    private readonly object _gate = new();
    private CpuJob? _job;
    private int _count;
    private int _next;
    private int _active;
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

        _job = job;
        _count = count;
        _failure = null;
        Volatile.Write(ref _next, 0);
        Volatile.Write(ref _active, _threads.Length);
        Interlocked.Increment(ref _generation);
        if (Volatile.Read(ref _sleepers) != 0)
        {
            lock (_gate)
            {
                Monitor.PulseAll(_gate);
            }
        }

        Drain(job, count, 0);

        var spin = default(SpinWait);
        while (Volatile.Read(ref _active) != 0)
        {
            spin.SpinOnce(-1);
        }

        _job = null;
        if (_failure is { } failure)
        {
            _failure = null;
            throw new AggregateException("a CPU kernel failed", failure);
        }
    }

    private void Drain(CpuJob job, int count, int worker)
    {
        try
        {
            int index;
            while ((index = Interlocked.Increment(ref _next) - 1) < count)
            {
                job.Execute(index, worker);
            }
        }
        catch (Exception ex)
        {
            Interlocked.CompareExchange(ref _failure, ex, null);

            // Let the other threads finish quickly.
            Volatile.Write(ref _next, count);
        }
    }

    private void WorkerLoop(int slot)
    {
        var seen = 0;
        while (true)
        {
            var spins = 0;
            while (Volatile.Read(ref _generation) == seen && !_stopping)
            {
                if (++spins < SpinIterations)
                {
                    Thread.SpinWait(20);
                    continue;
                }

                lock (_gate)
                {
                    Interlocked.Increment(ref _sleepers);
                    while (Volatile.Read(ref _generation) == seen && !_stopping)
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

            seen = Volatile.Read(ref _generation);
            Drain(_job!, _count, slot);
            Interlocked.Decrement(ref _active);
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
