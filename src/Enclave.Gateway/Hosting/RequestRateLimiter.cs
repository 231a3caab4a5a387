using System.Collections.Concurrent;

namespace Enclave.Gateway.Hosting;

public sealed record RateDecision(bool Allowed, int Limit, int Remaining, int ResetSeconds, string Kind);

/// <summary>
/// Single-node per-key limiter over fixed one-minute windows: requests per minute checked at
/// admission, tokens per minute charged after completion and checked at the next admission.
/// </summary>
public sealed class RequestRateLimiter(TimeProvider? time = null)
{
    private readonly TimeProvider _time = time ?? TimeProvider.System;
    private readonly ConcurrentDictionary<string, Window> _windows = new(StringComparer.Ordinal);

    private sealed class Window
    {
        public long Minute;
        public int Requests;
        public long Tokens;
    }

    private Window Current(string key, out long minute, out int resetSeconds)
    {
        var nowMs = _time.GetUtcNow().ToUnixTimeMilliseconds();
        minute = nowMs / 60_000;
        resetSeconds = (int)Math.Max(1, Math.Ceiling((60_000 - (nowMs % 60_000)) / 1000.0));
        return _windows.GetOrAdd(key, _ => new Window());
    }

    public RateDecision TryAdmit(string key, int? requestsPerMinute, int? tokensPerMinute)
    {
        var w = Current(key, out var minute, out var reset);
        lock (w)
        {
            if (w.Minute != minute)
            {
                w.Minute = minute;
                w.Requests = 0;
                w.Tokens = 0;
            }

            if (tokensPerMinute is { } tpm && w.Tokens >= tpm)
            {
                return new RateDecision(false, tpm, 0, reset, "tokens");
            }

            if (requestsPerMinute is { } rpm)
            {
                if (w.Requests >= rpm)
                {
                    return new RateDecision(false, rpm, 0, reset, "requests");
                }

                w.Requests++;
                return new RateDecision(true, rpm, rpm - w.Requests, reset, "requests");
            }

            w.Requests++;
            return new RateDecision(true, -1, -1, reset, "requests");
        }
    }

    public void ChargeTokens(string key, int tokens)
    {
        var w = Current(key, out var minute, out _);
        lock (w)
        {
            if (w.Minute != minute)
            {
                w.Minute = minute;
                w.Requests = 0;
                w.Tokens = 0;
            }

            w.Tokens += tokens;
        }
    }
}
