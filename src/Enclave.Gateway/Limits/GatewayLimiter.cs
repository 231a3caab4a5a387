using System.Globalization;
using NodaTime;

namespace Enclave.Gateway.Limits;

/// <summary>Limits of one subject (a key or a user); null means unlimited.</summary>
public sealed record LimitPolicy(long? RequestsPerMinute = null, long? TokensPerMinute = null, long? DailyTokens = null, long? MonthlyTokens = null)
{
    public static LimitPolicy None { get; } = new();

    public bool IsEmpty => RequestsPerMinute is null && TokensPerMinute is null && DailyTokens is null && MonthlyTokens is null;

    public bool CountsTokens => TokensPerMinute is not null || DailyTokens is not null || MonthlyTokens is not null;

    /// <summary>The tighter of two policies, limit by limit (a policy can only narrow).</summary>
    public LimitPolicy Narrow(LimitPolicy other) => new(
        Min(RequestsPerMinute, other.RequestsPerMinute), Min(TokensPerMinute, other.TokensPerMinute),
        Min(DailyTokens, other.DailyTokens), Min(MonthlyTokens, other.MonthlyTokens));

    private static long? Min(long? a, long? b) => a is null ? b : b is null ? a : Math.Min(a.Value, b.Value);
}

/// <summary>Whose counters a request draws on: <c>key</c> or <c>user</c>, with its id.</summary>
public readonly record struct LimitSubject(string Kind, string Id, LimitPolicy Policy);

/// <summary>Tokens held back at admission, settled when the real count is known.</summary>
public sealed class TokenReservation(CounterAdjust[] reserved, long tokens)
{
    internal CounterAdjust[] Reserved { get; } = reserved;

    /// <summary>The estimate held back at admission.</summary>
    public long Tokens { get; } = tokens;
}

/// <summary>The admission decision with the headers to send either way.</summary>
public sealed record Admission(
    bool Allowed,
    string? DeniedKind,
    string? DeniedSubject,
    long DeniedLimit,
    int RetryAfterSeconds,
    DateTimeOffset? ResetsAt,
    IReadOnlyList<KeyValuePair<string, string>> Headers,
    TokenReservation? Reservation)
{
    public bool IsBudget => DeniedKind is LimitKinds.DailyTokens or LimitKinds.MonthlyTokens;
}

public static class LimitKinds
{
    public const string Requests = "requests";
    public const string Tokens = "tokens";
    public const string DailyTokens = "tokens-day";
    public const string MonthlyTokens = "tokens-month";
}

/// <summary>
/// Requests and tokens per minute (fixed one-minute windows) and daily and monthly token budgets
/// (calendar periods in the configured time zone), per key and per user. Tokens are reserved at
/// admission from an estimate and settled to the real count after completion, so concurrent
/// requests see each other before any of them finishes. A counter refuses admission once it has
/// reached its limit; the counters live in an <see cref="ICounterStore"/>.
/// </summary>
public sealed class GatewayLimiter(ICounterStore counters, DateTimeZone zone, TimeProvider? time = null)
{
    private readonly TimeProvider _time = time ?? TimeProvider.System;

    public DateTimeZone Zone => zone;

    public async ValueTask<Admission> AdmitAsync(IReadOnlyList<LimitSubject> subjects, long reserveTokens, CancellationToken ct = default)
    {
        var nowMs = _time.GetUtcNow().ToUnixTimeMilliseconds();
        var checks = new List<CounterCheck>(8);
        var meta = new List<(string Kind, string Subject, long PeriodEndMs)>(8);
        var minute = nowMs / 60_000;
        var minuteEnd = (minute + 1) * 60_000;
        var today = Instant.FromUnixTimeMilliseconds(nowMs).InZone(zone).Date;
        foreach (var s in subjects)
        {
            var id = s.Kind[0] + ":" + s.Id;
            if (s.Policy.RequestsPerMinute is { } rpm)
            {
                checks.Add(new CounterCheck($"rpm:{id}:{minute}", rpm, 1, minuteEnd + 60_000, false));
                meta.Add((LimitKinds.Requests, s.Kind, minuteEnd));
            }

            if (s.Policy.TokensPerMinute is { } tpm)
            {
                checks.Add(new CounterCheck($"tpm:{id}:{minute}", tpm, reserveTokens, minuteEnd + 60_000, false));
                meta.Add((LimitKinds.Tokens, s.Kind, minuteEnd));
            }

            if (s.Policy.DailyTokens is { } daily)
            {
                var end = StartOf(today.PlusDays(1));
                checks.Add(new CounterCheck($"day:{id}:{today.ToString("yyyyMMdd", CultureInfo.InvariantCulture)}", daily, reserveTokens, end + 86_400_000, true));
                meta.Add((LimitKinds.DailyTokens, s.Kind, end));
            }

            if (s.Policy.MonthlyTokens is { } monthly)
            {
                var first = new LocalDate(today.Year, today.Month, 1);
                var end = StartOf(first.PlusMonths(1));
                checks.Add(new CounterCheck($"mon:{id}:{first.ToString("yyyyMM", CultureInfo.InvariantCulture)}", monthly, reserveTokens, end + 86_400_000, true));
                meta.Add((LimitKinds.MonthlyTokens, s.Kind, end));
            }
        }

        if (checks.Count == 0)
        {
            return new Admission(true, null, null, 0, 0, null, [], null);
        }

        var array = checks.ToArray();
        var result = await counters.TryAcquireAsync(array, ct);
        var headers = Headers(array, meta, result.Used, nowMs);
        if (!result.Allowed)
        {
            var (kind, subject, end) = meta[result.DeniedIndex];
            return new Admission(false, kind, subject, array[result.DeniedIndex].Limit, ResetSeconds(end, nowMs),
                DateTimeOffset.FromUnixTimeMilliseconds(end), headers, null);
        }

        var reserved = array.Where(c => c.Key[0] != 'r')
            .Select(c => new CounterAdjust(c.Key, c.Cost, 0, c.ExpiresAtMs, c.Durable)).ToArray();
        return new Admission(true, null, null, 0, 0, null, headers, reserved.Length == 0 ? null : new TokenReservation(reserved, reserveTokens));
    }

    /// <summary>Replaces the reservation with the real token count (0 releases it entirely).</summary>
    public ValueTask SettleAsync(TokenReservation reservation, long actualTokens, CancellationToken ct = default) =>
        counters.AdjustAsync([.. reservation.Reserved.Select(r => r with { Delta = actualTokens - r.Delta, Settled = actualTokens })], ct);

    private long StartOf(LocalDate date) => zone.AtStartOfDay(date).ToInstant().ToUnixTimeMilliseconds();

    private static int ResetSeconds(long endMs, long nowMs) => (int)Math.Max(1, Math.Ceiling((endMs - nowMs) / 1000.0));

    /// <summary>For each kind, the counter with the least room left (the one that binds).</summary>
    private static List<KeyValuePair<string, string>> Headers(CounterCheck[] checks, List<(string Kind, string Subject, long PeriodEndMs)> meta, long[] used, long nowMs)
    {
        var best = new Dictionary<string, (long Limit, long Remaining, long End)>(StringComparer.Ordinal);
        for (var i = 0; i < checks.Length; i++)
        {
            var remaining = Math.Max(0, checks[i].Limit - used[i]);
            if (!best.TryGetValue(meta[i].Kind, out var b) || remaining < b.Remaining)
            {
                best[meta[i].Kind] = (checks[i].Limit, remaining, meta[i].PeriodEndMs);
            }
        }

        var headers = new List<KeyValuePair<string, string>>(best.Count * 3);
        foreach (var (kind, b) in best)
        {
            headers.Add(new($"x-ratelimit-limit-{kind}", b.Limit.ToString(CultureInfo.InvariantCulture)));
            headers.Add(new($"x-ratelimit-remaining-{kind}", b.Remaining.ToString(CultureInfo.InvariantCulture)));
            headers.Add(new($"x-ratelimit-reset-{kind}", ResetSeconds(b.End, nowMs).ToString(CultureInfo.InvariantCulture) + "s"));
        }

        return headers;
    }
}
