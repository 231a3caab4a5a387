using System.Net;
using System.Net.Http.Headers;
using Enclave.Gateway.Security;
using Enclave.Server.Tests.Support;
using Microsoft.Extensions.DependencyInjection;

namespace Enclave.Server.Tests;

/// <summary>A fact that needs the Redis server of <c>.ci/install-redis.sh</c>; skipped, saying why, without it.</summary>
[AttributeUsage(AttributeTargets.Method)]
public sealed class RedisFactAttribute : FactAttribute
{
    public const string EnvVar = "ENCLAVE_TEST_REDIS";

    public RedisFactAttribute()
    {
        if (string.IsNullOrEmpty(Environment.GetEnvironmentVariable(EnvVar)))
        {
            Skip = $"{EnvVar} is not set (run .ci/install-redis.sh and export it)";
        }
    }
}

/// <summary>Two real <c>enclave serve</c> replicas sharing one store and one Redis (<c>--redis</c>).</summary>
public sealed class GatewayReplicaServeTests
{
    [RedisFact]
    public async Task TwoServeReplicasShareOneRequestLimitAndOneRevocation()
    {
        var home = Path.Combine(Path.GetTempPath(), "enclave-replicas-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(home);
        var redis = Environment.GetEnvironmentVariable(RedisFactAttribute.EnvVar)!;
        var prefix = "enclave-test:" + Guid.NewGuid().ToString("N")[..12] + ":";
        void Configure(Enclave.Server.Hosting.ServerOptions o)
        {
            o.NoAuth = false;
            o.Home = home;
            o.Redis = redis;
            o.ConfigureGateway = g =>
            {
                g.RedisKeyPrefix = prefix;
                g.KeyCacheSeconds = 600;
            };
        }

        try
        {
            await using var a = await TestServer.StartAsync(Configure);
            await using var b = await TestServer.StartAsync(Configure);
            var keys = a.Server.Services.GetRequiredService<KeyService>();
            var secret = (await keys.CreateAsync(new KeyCreateRequest(BuiltInRoles.Analyst, "shared"))).Secret;
            var id = (await keys.ListAsync()).Single(k => k.Name == "shared").Id;
            await a.Server.Services.GetRequiredService<PolicyService>().SetAsync("key", id, new PolicyFields(RequestsPerMinute: 3));

            async Task<HttpStatusCode> ModelsAsync(TestServer s)
            {
                using var request = new HttpRequestMessage(HttpMethod.Get, "v1/models");
                request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", secret);
                using var response = await s.Http.SendAsync(request);
                return response.StatusCode;
            }

            var minute = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds() / 60_000;
            var statuses = new List<HttpStatusCode>();
            for (var i = 0; i < 6; i++)
            {
                statuses.Add(await ModelsAsync(i % 2 == 0 ? a : b));
            }

            if (DateTimeOffset.UtcNow.ToUnixTimeMilliseconds() / 60_000 == minute)
            {
                Assert.Equal(3, statuses.Count(s => s == HttpStatusCode.OK));
                Assert.Equal(3, statuses.Count(s => s == HttpStatusCode.TooManyRequests));
            }

            // Replica B caches the key for 10 minutes; revoking it on A reaches B through Redis.
            Assert.True(await keys.RevokeAsync(id));
            var deadline = DateTime.UtcNow.AddSeconds(10);
            var status = HttpStatusCode.OK;
            while (DateTime.UtcNow < deadline && (status = await ModelsAsync(b)) != HttpStatusCode.Unauthorized)
            {
                await Task.Delay(50);
            }

            Assert.Equal(HttpStatusCode.Unauthorized, status);
        }
        finally
        {
            Microsoft.Data.Sqlite.SqliteConnection.ClearAllPools();
            try
            {
                Directory.Delete(home, recursive: true);
            }
            catch (IOException)
            {
                // still held open on this platform; the temp directory is cleaned later
            }
        }
    }
}
