using System.Collections.Concurrent;

namespace Enclave.Gateway.Security;

/// <summary>
/// Brute-force protection: after <see cref="MaxFailures"/> failed authentications from one source
/// address within <see cref="Window"/>, further attempts from it are refused until the window passes.
/// </summary>
public sealed class FailedAuthLimiter(TimeProvider? time = null)
{
    private readonly TimeProvider _time = time ?? TimeProvider.System;
    private readonly ConcurrentDictionary<string, Bucket> _buckets = new(StringComparer.Ordinal);

    public int MaxFailures { get; set; } = 10;
    public TimeSpan Window { get; set; } = TimeSpan.FromMinutes(1);

    private sealed class Bucket
    {
        public long WindowStartMs;
        public int Failures;
    }

    /// <summary>Returns the seconds to wait when the address is locked out, otherwise null.</summary>
    public int? RetryAfterSeconds(string ip)
    {
        if (!_buckets.TryGetValue(ip, out var b))
        {
            return null;
        }

        lock (b)
        {
            var now = _time.GetUtcNow().ToUnixTimeMilliseconds();
            var elapsed = now - b.WindowStartMs;
            if (elapsed >= Window.TotalMilliseconds)
            {
                return null;
            }

            return b.Failures >= MaxFailures ? (int)Math.Ceiling((Window.TotalMilliseconds - elapsed) / 1000.0) : null;
        }
    }

    public void RecordFailure(string ip)
    {
        var b = _buckets.GetOrAdd(ip, _ => new Bucket());
        lock (b)
        {
            var now = _time.GetUtcNow().ToUnixTimeMilliseconds();
            if (now - b.WindowStartMs >= Window.TotalMilliseconds)
            {
                b.WindowStartMs = now;
                b.Failures = 0;
            }

            b.Failures++;
        }

        if (_buckets.Count > 100_000)
        {
            Prune();
        }
    }

    private void Prune()
    {
        var now = _time.GetUtcNow().ToUnixTimeMilliseconds();
        foreach (var (ip, b) in _buckets)
        {
            if (now - b.WindowStartMs >= Window.TotalMilliseconds)
            {
                _buckets.TryRemove(ip, out _);
            }
        }
    }
}
