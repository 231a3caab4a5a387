namespace Enclave.Gateway.Limits;

/// <summary>
/// One counter a request is checked against. Admission is refused when the counter already holds
/// <see cref="Limit"/> or more; otherwise <see cref="Cost"/> is added. <see cref="Durable"/> counters
/// (token budgets) must survive a gateway restart.
/// </summary>
public readonly record struct CounterCheck(string Key, long Limit, long Cost, long ExpiresAtMs, bool Durable);

/// <summary>
/// A correction after the request finished: <see cref="Delta"/> moves the counter from the
/// reservation to the real figure, <see cref="Settled"/> is the real figure itself (what a durable
/// store records).
/// </summary>
public readonly record struct CounterAdjust(string Key, long Delta, long Settled, long ExpiresAtMs, bool Durable);

/// <summary>The outcome of an atomic check-and-add over several counters.</summary>
/// <param name="DeniedIndex">Index of the first counter at its limit, or -1 when admitted.</param>
/// <param name="Used">Each counter's value: after the add when admitted, as found when refused.</param>
public readonly record struct CounterResult(int DeniedIndex, long[] Used)
{
    public bool Allowed => DeniedIndex < 0;
}

/// <summary>
/// Where rate-limit counters live: process memory (single node) or Redis (several replicas). All
/// checks of one request are decided atomically, so concurrent requests cannot both take the last slot.
/// </summary>
public interface ICounterStore
{
    ValueTask<CounterResult> TryAcquireAsync(CounterCheck[] checks, CancellationToken ct = default);

    ValueTask AdjustAsync(CounterAdjust[] adjustments, CancellationToken ct = default);
}
