using System.Diagnostics;
using Enclave.Engine.Backends.Cpu;

namespace Enclave.Engine.Tests.Backends;

public sealed class CpuWorkerPoolTests
{
    /// <summary>Counts how often each item of the current call ran.</summary>
    private sealed class CountingJob(int capacity) : CpuJob
    {
        public readonly int[] Runs = new int[capacity];

        public override void Execute(int index, int worker) => Interlocked.Increment(ref Runs[index]);
    }

    /// <summary>
    /// Back-to-back calls whose item counts alternate between small and large, as a forward pass issues them: every
    /// item of every call runs exactly once, nothing past a call's count runs, and no call waits forever. A worker
    /// that claimed an item under a finished call but with the next call's count used to run an item twice and leave
    /// the next caller spinning on a completion count it could never reach.
    /// </summary>
    [Theory]
    [InlineData(2)]
    [InlineData(4)]
    [InlineData(8)]
    public async Task Every_item_of_every_call_runs_exactly_once(int threads)
    {
        const int MaxCount = 97;
        var failure = (string?)null;
        var calls = 0;
        var hammer = Task.Factory.StartNew(() =>
        {
            using var pool = new CpuWorkerPool(threads);
            var job = new CountingJob(MaxCount + 1);
            var clock = Stopwatch.StartNew();
            for (var call = 0; clock.ElapsedMilliseconds < 1500 && failure is null; call++)
            {
                var count = call % 2 == 0 ? 2 + call % 5 : MaxCount - call % 7;
                Array.Clear(job.Runs);
                pool.Run(job, count);
                for (var i = 0; i <= MaxCount; i++)
                {
                    var expected = i < count ? 1 : 0;
                    if (Volatile.Read(ref job.Runs[i]) != expected)
                    {
                        failure = $"call {call} (count {count}): item {i} ran {job.Runs[i]} times, expected {expected}";
                        break;
                    }
                }

                calls = call + 1;
            }
        }, TaskCreationOptions.LongRunning);

        var first = await Task.WhenAny(hammer, Task.Delay(TimeSpan.FromSeconds(60)));
        Assert.True(first == hammer, $"a call never returned after {calls} calls");
        await hammer;
        Assert.Null(failure);
        Assert.True(calls > 100, $"only {calls} calls ran");
    }
}
