using StackExchange.Redis;

namespace Enclave.Gateway.Limits;

/// <summary>
/// Counters shared by every gateway replica through one Redis server. Each admission is one Lua
/// script, so the check of every counter and the additions happen atomically on the server: two
/// replicas cannot both take the last request of a minute. Keys expire with their window.
/// Needs a single Redis primary (or Sentinel); Redis Cluster would split the keys of one script.
/// </summary>
public sealed class RedisCounterStore(IConnectionMultiplexer redis, string prefix = "enclave:limit:") : ICounterStore
{
    // KEYS: counters. ARGV: limit, cost, expire-at (ms) per counter. Returns {deniedIndex (0 = none), used...}.
    private const string AcquireScript = """
        local n = #KEYS
        local used = {}
        local denied = 0
        for i = 1, n do
          used[i] = tonumber(redis.call('GET', KEYS[i]) or '0')
          local limit = tonumber(ARGV[(i - 1) * 3 + 1])
          if denied == 0 and limit >= 0 and used[i] >= limit then
            denied = i
          end
        end
        if denied == 0 then
          for i = 1, n do
            used[i] = redis.call('INCRBY', KEYS[i], ARGV[(i - 1) * 3 + 2])
            redis.call('PEXPIREAT', KEYS[i], ARGV[(i - 1) * 3 + 3])
          end
        end
        local result = {denied}
        for i = 1, n do
          result[i + 1] = used[i]
        end
        return result
        """;

    // KEYS: counters. ARGV: delta, expire-at (ms) per counter. Never leaves a counter below zero.
    private const string AdjustScript = """
        for i = 1, #KEYS do
          local v = redis.call('INCRBY', KEYS[i], ARGV[(i - 1) * 2 + 1])
          if v < 0 then
            redis.call('SET', KEYS[i], 0)
          end
          redis.call('PEXPIREAT', KEYS[i], ARGV[(i - 1) * 2 + 2])
        end
        return 0
        """;

    public async ValueTask<CounterResult> TryAcquireAsync(CounterCheck[] checks, CancellationToken ct = default)
    {
        var keys = new RedisKey[checks.Length];
        var args = new RedisValue[checks.Length * 3];
        for (var i = 0; i < checks.Length; i++)
        {
            keys[i] = prefix + checks[i].Key;
            args[i * 3] = checks[i].Limit;
            args[(i * 3) + 1] = checks[i].Cost;
            args[(i * 3) + 2] = checks[i].ExpiresAtMs;
        }

        var result = (RedisResult[])(await redis.GetDatabase().ScriptEvaluateAsync(AcquireScript, keys, args))!;
        var used = new long[checks.Length];
        for (var i = 0; i < used.Length; i++)
        {
            used[i] = (long)result[i + 1];
        }

        return new CounterResult((int)result[0] - 1, used);
    }

    public async ValueTask AdjustAsync(CounterAdjust[] adjustments, CancellationToken ct = default)
    {
        if (adjustments.Length == 0)
        {
            return;
        }

        var keys = new RedisKey[adjustments.Length];
        var args = new RedisValue[adjustments.Length * 2];
        for (var i = 0; i < adjustments.Length; i++)
        {
            keys[i] = prefix + adjustments[i].Key;
            args[i * 2] = adjustments[i].Delta;
            args[(i * 2) + 1] = adjustments[i].ExpiresAtMs;
        }

        await redis.GetDatabase().ScriptEvaluateAsync(AdjustScript, keys, args);
    }
}
