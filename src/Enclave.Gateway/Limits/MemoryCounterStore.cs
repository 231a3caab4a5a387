namespace Enclave.Gateway.Limits;

/// <summary>
/// Single-node counters in process memory. Durable counters (token budgets) are loaded from the
/// store on first use and every settled figure is written through, so budgets survive a restart.
/// </summary>
public sealed class MemoryCounterStore(TokenUsageStore? usage, TimeProvider? time = null) : ICounterStore
{
    private readonly TimeProvider _time = time ?? TimeProvider.System;
    private readonly Dictionary<string, Entry> _counters = new(StringComparer.Ordinal);
    private readonly Lock _lock = new();
    private long _nextSweepMs;

    private sealed class Entry(long value, long expiresAtMs)
    {
        public long Value = value;
        public long ExpiresAtMs = expiresAtMs;
    }

    public async ValueTask<CounterResult> TryAcquireAsync(CounterCheck[] checks, CancellationToken ct = default)
    {
        if (usage is not null)
        {
            foreach (var c in checks)
            {
                if (c.Durable && !Contains(c.Key))
                {
                    var persisted = await usage.GetAsync(c.Key, ct);
                    lock (_lock)
                    {
                        _counters.TryAdd(c.Key, new Entry(persisted, c.ExpiresAtMs));
                    }
                }
            }
        }

        var now = _time.GetUtcNow().ToUnixTimeMilliseconds();
        lock (_lock)
        {
            Sweep(now);
            var used = new long[checks.Length];
            var denied = -1;
            for (var i = 0; i < checks.Length; i++)
            {
                used[i] = Current(checks[i].Key, now);
                if (denied < 0 && checks[i].Limit >= 0 && used[i] >= checks[i].Limit)
                {
                    denied = i;
                }
            }

            if (denied >= 0)
            {
                return new CounterResult(denied, used);
            }

            for (var i = 0; i < checks.Length; i++)
            {
                used[i] = Add(checks[i].Key, checks[i].Cost, checks[i].ExpiresAtMs, now);
            }

            return new CounterResult(-1, used);
        }
    }

    public async ValueTask AdjustAsync(CounterAdjust[] adjustments, CancellationToken ct = default)
    {
        var now = _time.GetUtcNow().ToUnixTimeMilliseconds();
        lock (_lock)
        {
            foreach (var a in adjustments)
            {
                Add(a.Key, a.Delta, a.ExpiresAtMs, now);
            }
        }

        if (usage is not null)
        {
            foreach (var a in adjustments)
            {
                if (a.Durable && a.Settled != 0)
                {
                    await usage.AddAsync(a.Key, a.Settled, a.ExpiresAtMs, ct);
                }
            }
        }
    }

    private bool Contains(string key)
    {
        lock (_lock)
        {
            return _counters.ContainsKey(key);
        }
    }

    private long Current(string key, long now) =>
        _counters.TryGetValue(key, out var e) && e.ExpiresAtMs > now ? e.Value : 0;

    private long Add(string key, long delta, long expiresAtMs, long now)
    {
        if (!_counters.TryGetValue(key, out var e) || e.ExpiresAtMs <= now)
        {
            e = new Entry(0, expiresAtMs);
            _counters[key] = e;
        }

        e.Value = Math.Max(0, e.Value + delta);
        return e.Value;
    }

    /// <summary>Drops expired windows once a minute so memory follows the number of active keys.</summary>
    private void Sweep(long now)
    {
        if (now < _nextSweepMs)
        {
            return;
        }

        _nextSweepMs = now + 60_000;
        foreach (var (key, e) in _counters.ToArray())
        {
            if (e.ExpiresAtMs <= now)
            {
                _counters.Remove(key);
            }
        }
    }
}
