using Enclave.Gateway.Limits;
using NodaTime;
using StackExchange.Redis;

namespace Enclave.Gateway.Tests;

public sealed class LimiterTests
{
    private static readonly DateTimeZone Shanghai = DateTimeZoneProviders.Tzdb["Asia/Shanghai"];

    private static string Header(Admission a, string name) => a.Headers.Single(h => h.Key == name).Value;

    [Fact]
    public async Task Daily_budget_runs_out_then_resets_at_local_midnight_with_retry_after_until_then()
    {
        // 23:00 in Shanghai is 15:00 UTC.
        var clock = new ManualClock(new DateTimeOffset(2026, 3, 10, 15, 0, 0, TimeSpan.Zero));
        var limiter = new GatewayLimiter(new MemoryCounterStore(null, clock), Shanghai, clock);
        LimitSubject[] subject = [new("key", "k1", new LimitPolicy(DailyTokens: 100))];

        var first = await limiter.AdmitAsync(subject, 40);
        Assert.True(first.Allowed);
        Assert.Equal("60", Header(first, "x-ratelimit-remaining-tokens-day"));
        await limiter.SettleAsync(first.Reservation!, 120);

        var refused = await limiter.AdmitAsync(subject, 1);
        Assert.False(refused.Allowed);
        Assert.True(refused.IsBudget);
        Assert.Equal(LimitKinds.DailyTokens, refused.DeniedKind);
        Assert.Equal(3600, refused.RetryAfterSeconds);
        Assert.Equal(new DateTimeOffset(2026, 3, 10, 16, 0, 0, TimeSpan.Zero), refused.ResetsAt);
        Assert.Equal("0", Header(refused, "x-ratelimit-remaining-tokens-day"));
        Assert.Equal("3600s", Header(refused, "x-ratelimit-reset-tokens-day"));

        clock.Advance(TimeSpan.FromHours(1));
        Assert.True((await limiter.AdmitAsync(subject, 1)).Allowed);
    }

    [Fact]
    public async Task Monthly_budget_counts_across_days_and_resets_on_the_first()
    {
        var clock = new ManualClock(new DateTimeOffset(2026, 1, 30, 12, 0, 0, TimeSpan.Zero));
        var limiter = new GatewayLimiter(new MemoryCounterStore(null, clock), DateTimeZone.Utc, clock);
        LimitSubject[] subject = [new("user", "u1", new LimitPolicy(MonthlyTokens: 50))];
        var a = await limiter.AdmitAsync(subject, 10);
        await limiter.SettleAsync(a.Reservation!, 30);
        clock.Advance(TimeSpan.FromDays(1));
        var b = await limiter.AdmitAsync(subject, 10);
        await limiter.SettleAsync(b.Reservation!, 30);
        var refused = await limiter.AdmitAsync(subject, 10);
        Assert.False(refused.Allowed);
        Assert.Equal(LimitKinds.MonthlyTokens, refused.DeniedKind);
        Assert.Equal("user", refused.DeniedSubject);
        Assert.Equal(new DateTimeOffset(2026, 2, 1, 0, 0, 0, TimeSpan.Zero), refused.ResetsAt);
        clock.Advance(TimeSpan.FromHours(12));
        Assert.True((await limiter.AdmitAsync(subject, 10)).Allowed);
    }

    [Fact]
    public async Task Reservations_hold_tokens_until_settled_and_a_failed_call_releases_them()
    {
        var clock = new ManualClock(new DateTimeOffset(2026, 1, 1, 0, 0, 10, TimeSpan.Zero));
        var limiter = new GatewayLimiter(new MemoryCounterStore(null, clock), DateTimeZone.Utc, clock);
        LimitSubject[] subject = [new("key", "k", new LimitPolicy(TokensPerMinute: 100))];
        var held = await limiter.AdmitAsync(subject, 100);
        Assert.True(held.Allowed);
        // The first request has not finished, but its reservation already fills the minute.
        Assert.False((await limiter.AdmitAsync(subject, 1)).Allowed);
        await limiter.SettleAsync(held.Reservation!, 0);
        var next = await limiter.AdmitAsync(subject, 1);
        Assert.True(next.Allowed);
        Assert.Equal("99", Header(next, "x-ratelimit-remaining-tokens"));
    }

    [Theory, SqliteCase, PostgresCase]
    public async Task Budgets_in_the_store_survive_a_restart(string provider)
    {
        await using var t = await TestStore.CreateAsync(provider);
        var clock = new ManualClock(new DateTimeOffset(2026, 5, 5, 8, 0, 0, TimeSpan.Zero));
        LimitSubject[] subject = [new("key", "k", new LimitPolicy(DailyTokens: 1000, MonthlyTokens: 5000))];
        var before = new GatewayLimiter(new MemoryCounterStore(new TokenUsageStore(t.Store), clock), DateTimeZone.Utc, clock);
        var a = await before.AdmitAsync(subject, 100);
        await before.SettleAsync(a.Reservation!, 900);

        // A new process: nothing in memory, the store still has the settled 900.
        var after = new GatewayLimiter(new MemoryCounterStore(new TokenUsageStore(t.Store), clock), DateTimeZone.Utc, clock);
        var b = await after.AdmitAsync(subject, 50);
        Assert.True(b.Allowed);
        Assert.Equal("50", Header(b, "x-ratelimit-remaining-tokens-day"));
        await after.SettleAsync(b.Reservation!, 100);
        var c = await new GatewayLimiter(new MemoryCounterStore(new TokenUsageStore(t.Store), clock), DateTimeZone.Utc, clock).AdmitAsync(subject, 1);
        Assert.False(c.Allowed);
        Assert.Equal(LimitKinds.DailyTokens, c.DeniedKind);
        Assert.Equal("4000", Header(c, "x-ratelimit-remaining-tokens-month"));
    }

    [RedisFact]
    public async Task Two_limiters_sharing_redis_enforce_one_global_limit_under_concurrency()
    {
        using var redisA = await ConnectionMultiplexer.ConnectAsync(TestRedis.Connection!);
        using var redisB = await ConnectionMultiplexer.ConnectAsync(TestRedis.Connection!);
        var prefix = TestRedis.FreshPrefix();
        var a = new GatewayLimiter(new RedisCounterStore(redisA, prefix), DateTimeZone.Utc);
        var b = new GatewayLimiter(new RedisCounterStore(redisB, prefix), DateTimeZone.Utc);
        LimitSubject[] subject = [new("key", "shared", new LimitPolicy(RequestsPerMinute: 25))];

        // Both replicas race for 100 admissions within one minute window.
        var minuteStart = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds() / 60_000;
        var results = await Task.WhenAll(Enumerable.Range(0, 100).Select(i => (i % 2 == 0 ? a : b).AdmitAsync(subject, 0).AsTask()));
        var sameMinute = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds() / 60_000 == minuteStart;
        if (sameMinute)
        {
            Assert.Equal(25, results.Count(r => r.Allowed));
        }
        else
        {
            // The burst straddled a minute boundary: two windows, each capped.
            Assert.InRange(results.Count(r => r.Allowed), 26, 50);
        }

        Assert.All(results.Where(r => !r.Allowed), r => Assert.Equal(LimitKinds.Requests, r.DeniedKind));
    }

    [RedisFact]
    public async Task Token_budgets_in_redis_are_shared_reserved_and_settled()
    {
        using var redis = await ConnectionMultiplexer.ConnectAsync(TestRedis.Connection!);
        var prefix = TestRedis.FreshPrefix();
        var a = new GatewayLimiter(new RedisCounterStore(redis, prefix), Shanghai);
        var b = new GatewayLimiter(new RedisCounterStore(redis, prefix), Shanghai);
        LimitSubject[] subject = [new("user", "u", new LimitPolicy(DailyTokens: 1000))];

        var held = await a.AdmitAsync(subject, 1000);
        Assert.True(held.Allowed);
        var blocked = await b.AdmitAsync(subject, 1);
        Assert.False(blocked.Allowed);
        Assert.True(blocked.RetryAfterSeconds > 0);
        await a.SettleAsync(held.Reservation!, 600);
        var c = await b.AdmitAsync(subject, 10);
        Assert.True(c.Allowed);
        Assert.Equal("390", Header(c, "x-ratelimit-remaining-tokens-day"));
    }
}
