using System.Net;
using System.Text.Json;
using Enclave.Gateway.Security;
using Microsoft.Extensions.DependencyInjection;

namespace Enclave.Gateway.Tests;

/// <summary>Two real gateway servers (two Kestrel instances) sharing one store and one Redis, as two replicas would.</summary>
public sealed class ReplicaTests
{
    private static Task<GatewayHost> ReplicaAsync(TestStore t, string prefix, int keyCacheSeconds = 300) =>
        GatewayHost.StartAsync(t, o =>
        {
            o.Redis = TestRedis.Connection;
            o.RedisKeyPrefix = prefix;
            o.KeyCacheSeconds = keyCacheSeconds;
        });

    private static async Task<string> ErrorCodeAsync(HttpResponseMessage resp)
    {
        using var doc = JsonDocument.Parse(await resp.Content.ReadAsStringAsync());
        return doc.RootElement.GetProperty("error").GetProperty("code").GetString()!;
    }

    [RedisFact]
    public async Task Request_limit_is_global_across_two_replicas()
    {
        await using var t = await TestStore.CreateAsync(Providers.Sqlite);
        var prefix = TestRedis.FreshPrefix();
        await using var a = await ReplicaAsync(t, prefix);
        await using var b = await ReplicaAsync(t, prefix);
        var key = await a.KeyAsync("analyst", r => r with { RequestsPerMinute = 4 });

        var minute = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds() / 60_000;
        var statuses = new List<HttpStatusCode>();
        for (var i = 0; i < 8; i++)
        {
            using var r = await (i % 2 == 0 ? a : b).ChatAsync(key);
            statuses.Add(r.StatusCode);
            if (r.StatusCode == HttpStatusCode.TooManyRequests)
            {
                Assert.Equal("rate_limit_exceeded", await ErrorCodeAsync(r));
                Assert.NotNull(r.Headers.RetryAfter);
                Assert.Equal("4", r.Headers.GetValues("x-ratelimit-limit-requests").Single());
            }
        }

        if (DateTimeOffset.UtcNow.ToUnixTimeMilliseconds() / 60_000 == minute)
        {
            // Each replica alone would have allowed 4; together they allowed 4.
            Assert.Equal(4, statuses.Count(s => s == HttpStatusCode.OK));
            Assert.Equal(4, statuses.Count(s => s == HttpStatusCode.TooManyRequests));
        }
    }

    [RedisFact]
    public async Task Token_budget_is_global_and_answers_insufficient_quota_with_headers()
    {
        await using var t = await TestStore.CreateAsync(Providers.Sqlite);
        var prefix = TestRedis.FreshPrefix();
        await using var a = await ReplicaAsync(t, prefix);
        await using var b = await ReplicaAsync(t, prefix);
        var key = await a.KeyAsync("analyst");
        var created = (await a.Keys.ListAsync()).Single();
        await a.Services.GetService<PolicyService>()!.SetAsync("key", created.Id, new PolicyFields(DailyTokenBudget: 30));

        // The stub reports 15 tokens per call; the reservation is settled to that.
        using (var r1 = await a.ChatAsync(key))
        {
            Assert.Equal(HttpStatusCode.OK, r1.StatusCode);
        }

        using (var r2 = await b.ChatAsync(key))
        {
            Assert.Equal(HttpStatusCode.OK, r2.StatusCode);
            Assert.Equal("30", r2.Headers.GetValues("x-ratelimit-limit-tokens-day").Single());
        }

        using var refused = await a.ChatAsync(key);
        Assert.Equal(HttpStatusCode.TooManyRequests, refused.StatusCode);
        using var doc = JsonDocument.Parse(await refused.Content.ReadAsStringAsync());
        var err = doc.RootElement.GetProperty("error");
        Assert.Equal("insufficient_quota", err.GetProperty("code").GetString());
        Assert.Equal("insufficient_quota", err.GetProperty("type").GetString());
        Assert.Contains("daily token budget of 30", err.GetProperty("message").GetString());
        var retry = refused.Headers.RetryAfter!.Delta!.Value;
        var untilMidnight = DateTimeOffset.UtcNow.Date.AddDays(1) - DateTimeOffset.UtcNow.UtcDateTime;
        Assert.InRange(retry.TotalSeconds, 1, untilMidnight.TotalSeconds + 2);
        Assert.Equal("0", refused.Headers.GetValues("x-ratelimit-remaining-tokens-day").Single());
    }

    [RedisFact]
    public async Task Revocation_on_one_replica_reaches_the_other_well_before_its_cache_expires()
    {
        await using var t = await TestStore.CreateAsync(Providers.Sqlite);
        var prefix = TestRedis.FreshPrefix();
        await using var a = await ReplicaAsync(t, prefix);
        await using var b = await ReplicaAsync(t, prefix, keyCacheSeconds: 600);
        var admin = await a.KeyAsync("admin");
        var victim = await a.KeyAsync("analyst", r => r with { Name = "victim" });
        using (var warm = await b.ChatAsync(victim))
        {
            // Replica B now holds the key in its 10-minute cache.
            Assert.Equal(HttpStatusCode.OK, warm.StatusCode);
        }

        var id = (await a.Keys.ListAsync()).Single(k => k.Name == "victim").Id;
        using (var revoke = await a.SendAsync(HttpMethod.Delete, "/admin/keys/" + id, admin))
        {
            Assert.Equal(HttpStatusCode.NoContent, revoke.StatusCode);
        }

        // The bound: the invalidation is published on revocation; poll for at most 10 s
        // (without it replica B would serve the key for 10 minutes).
        var deadline = DateTime.UtcNow.AddSeconds(10);
        HttpStatusCode status;
        do
        {
            using var r = await b.ChatAsync(victim);
            status = r.StatusCode;
            if (status == HttpStatusCode.Unauthorized)
            {
                break;
            }

            await Task.Delay(50);
        }
        while (DateTime.UtcNow < deadline);

        Assert.Equal(HttpStatusCode.Unauthorized, status);
    }

    [Fact]
    public async Task Without_redis_a_revocation_reaches_another_replica_within_the_key_cache_ttl()
    {
        await using var t = await TestStore.CreateAsync(Providers.Sqlite);
        await using var a = await GatewayHost.StartAsync(t);
        await using var b = await GatewayHost.StartAsync(t, o => o.KeyCacheSeconds = 1);
        var victim = await a.KeyAsync("analyst", r => r with { Name = "victim" });
        using (var warm = await b.ChatAsync(victim))
        {
            Assert.Equal(HttpStatusCode.OK, warm.StatusCode);
        }

        Assert.True(await a.Keys.RevokeAsync((await a.Keys.ListAsync()).Single().Id));
        await Task.Delay(1100);
        using var after = await b.ChatAsync(victim);
        Assert.Equal(HttpStatusCode.Unauthorized, after.StatusCode);
    }

    [Fact]
    public async Task Limited_keys_fail_closed_with_503_when_redis_is_unreachable_and_the_call_is_audited()
    {
        await using var t = await TestStore.CreateAsync(Providers.Sqlite);
        // Port 1 on loopback: nothing listens there.
        await using var host = await GatewayHost.StartAsync(t, o => o.Redis = "127.0.0.1:1,connectTimeout=300,connectRetry=0,asyncTimeout=500,syncTimeout=500");
        var limited = await host.KeyAsync("analyst", r => r with { RequestsPerMinute = 100 });
        using var refused = await host.ChatAsync(limited);
        Assert.Equal(HttpStatusCode.ServiceUnavailable, refused.StatusCode);
        Assert.Equal("limiter_unavailable", await ErrorCodeAsync(refused));
        using var unlimited = await host.ChatAsync(await host.KeyAsync("analyst"));
        Assert.Equal(HttpStatusCode.OK, unlimited.StatusCode);
        var records = await host.Services.GetRequiredService<Audit.AuditLog>().SearchAsync(new Audit.AuditQuery(Status: 503));
        Assert.Contains("limiter_unavailable", Assert.Single(records).Details);
    }
}
