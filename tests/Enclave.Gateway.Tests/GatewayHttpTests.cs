using System.Net;
using System.Text.Json;
using Enclave.Gateway.Audit;
using Enclave.Gateway.Hosting;
using Microsoft.Extensions.DependencyInjection;

namespace Enclave.Gateway.Tests;

public sealed class GatewayHttpTests
{
    private static async Task<string> ErrorCodeAsync(HttpResponseMessage resp)
    {
        using var doc = JsonDocument.Parse(await resp.Content.ReadAsStringAsync());
        return doc.RootElement.GetProperty("error").GetProperty("code").GetString()!;
    }

    [Theory, SqliteCase, PostgresCase]
    public async Task Calls_without_a_valid_key_get_401_and_are_audited(string provider)
    {
        await using var t = await TestStore.CreateAsync(provider);
        await using var host = await GatewayHost.StartAsync(t);
        using var none = await host.ChatAsync(null);
        Assert.Equal(HttpStatusCode.Unauthorized, none.StatusCode);
        Assert.Equal("missing_api_key", await ErrorCodeAsync(none));
        using var bad = await host.ChatAsync("sk-enclave-" + new string('A', 43));
        Assert.Equal("invalid_api_key", await ErrorCodeAsync(bad));
        using var unknownPath = await host.SendAsync(HttpMethod.Get, "/v1/nothing-here", null);
        Assert.Equal(HttpStatusCode.Unauthorized, unknownPath.StatusCode);
        using var health = await host.SendAsync(HttpMethod.Get, "/healthz", null);
        Assert.Equal(HttpStatusCode.OK, health.StatusCode);

        var audit = host.Services.GetRequiredService<AuditLog>();
        var records = await audit.SearchAsync(new AuditQuery(Status: 401));
        Assert.Equal(3, records.Count);
        Assert.All(records, r => Assert.Equal("127.0.0.1", r.SourceIp));
        Assert.True((await audit.VerifyAsync()).Intact);
    }

    [Theory, SqliteCase, PostgresCase]
    public async Task Every_call_and_admin_action_appends_one_audit_record(string provider)
    {
        await using var t = await TestStore.CreateAsync(provider);
        await using var host = await GatewayHost.StartAsync(t);
        var admin = await host.KeyAsync("admin");
        var auditor = await host.KeyAsync("auditor");

        using var created = await host.SendAsync(HttpMethod.Post, "/admin/keys", admin, new { role = "analyst", name = "from-api" });
        Assert.Equal(HttpStatusCode.Created, created.StatusCode);
        using var createdDoc = JsonDocument.Parse(await created.Content.ReadAsStringAsync());
        var secret = createdDoc.RootElement.GetProperty("secret").GetString()!;
        var id = createdDoc.RootElement.GetProperty("key").GetProperty("id").GetString()!;
        Assert.DoesNotContain("hash", createdDoc.RootElement.GetProperty("key").ToString(), StringComparison.OrdinalIgnoreCase);

        using var chat = await host.ChatAsync(secret, "What is 2+2?");
        Assert.Equal(HttpStatusCode.OK, chat.StatusCode);
        Assert.Contains("What is 2+2?", await chat.Content.ReadAsStringAsync());

        using var revoke = await host.SendAsync(HttpMethod.Delete, "/admin/keys/" + id, admin);
        Assert.Equal(HttpStatusCode.NoContent, revoke.StatusCode);
        using var after = await host.ChatAsync(secret);
        Assert.Equal(HttpStatusCode.Unauthorized, after.StatusCode);

        using var search = await host.SendAsync(HttpMethod.Get, "/admin/audit?limit=50", auditor);
        Assert.Equal(HttpStatusCode.OK, search.StatusCode);
        using var doc = JsonDocument.Parse(await search.Content.ReadAsStringAsync());
        var rows = doc.RootElement.GetProperty("data").EnumerateArray().ToList();
        Assert.Equal(4, rows.Count);
        var chatRow = rows.Single(r => r.GetProperty("endpoint").GetString() == "/v1/chat/completions" && r.GetProperty("status").GetInt32() == 200);
        Assert.Equal("deepseek-v3", chatRow.GetProperty("model").GetString());
        Assert.Equal(10, chatRow.GetProperty("prompt_tokens").GetInt32());
        Assert.Equal(5, chatRow.GetProperty("completion_tokens").GetInt32());
        Assert.Equal("from-api", chatRow.GetProperty("principal").GetString());
        Assert.Contains("What is 2+2?", chatRow.GetProperty("details").GetString());

        using var verify = await host.SendAsync(HttpMethod.Get, "/admin/audit/verify", auditor);
        using var v = JsonDocument.Parse(await verify.Content.ReadAsStringAsync());
        Assert.True(v.RootElement.GetProperty("intact").GetBoolean());
        Assert.Equal(5, v.RootElement.GetProperty("records").GetInt64());
    }

    [Fact]
    public async Task Source_ip_allowlists_apply_per_key_user_and_role()
    {
        await using var t = await TestStore.CreateAsync(Providers.Sqlite);
        await using var host = await GatewayHost.StartAsync(t);
        var outside = await host.KeyAsync("analyst", r => r with { AllowedCidrs = "10.0.0.0/8, 2001:db8::/32" });
        var inside = await host.KeyAsync("analyst", r => r with { AllowedCidrs = "10.0.0.0/8,127.0.0.0/8" });
        using var r1 = await host.ChatAsync(outside);
        Assert.Equal(HttpStatusCode.Forbidden, r1.StatusCode);
        Assert.Equal("ip_not_allowed", await ErrorCodeAsync(r1));
        using var r2 = await host.ChatAsync(inside);
        Assert.Equal(HttpStatusCode.OK, r2.StatusCode);

        await Security.RoleCatalog.CreateAsync(t.Store, "remote-only", ["inference"], null, "192.0.2.0/24");
        using var r3 = await host.ChatAsync(await host.KeyAsync("remote-only"));
        Assert.Equal(HttpStatusCode.Forbidden, r3.StatusCode);

        await host.Services.GetRequiredService<Security.UserService>().AddAsync("carol", allowedCidrs: "198.51.100.0/24");
        using var r4 = await host.ChatAsync(await host.KeyAsync("analyst", r => r with { User = "carol" }));
        Assert.Equal(HttpStatusCode.Forbidden, r4.StatusCode);
    }

    [Fact]
    public async Task Forwarded_for_is_honoured_only_from_trusted_proxies()
    {
        await using var t1 = await TestStore.CreateAsync(Providers.Sqlite);
        await using (var direct = await GatewayHost.StartAsync(t1))
        {
            var key = await direct.KeyAsync("analyst", r => r with { AllowedCidrs = "203.0.113.0/24" });
            using var spoofed = await direct.SendAsync(HttpMethod.Get, "/v1/models", key, forwardedFor: "203.0.113.9");
            Assert.Equal(HttpStatusCode.Forbidden, spoofed.StatusCode);
        }

        await using var t2 = await TestStore.CreateAsync(Providers.Sqlite);
        await using var proxied = await GatewayHost.StartAsync(t2, o => o.TrustedProxies = "127.0.0.1/32");
        var k = await proxied.KeyAsync("analyst", r => r with { AllowedCidrs = "203.0.113.0/24" });
        using var ok = await proxied.SendAsync(HttpMethod.Get, "/v1/models", k, forwardedFor: "203.0.113.9");
        Assert.Equal(HttpStatusCode.OK, ok.StatusCode);
        using var chained = await proxied.SendAsync(HttpMethod.Get, "/v1/models", k, forwardedFor: "203.0.113.9, 198.51.100.7");
        Assert.Equal(HttpStatusCode.Forbidden, chained.StatusCode);
        var records = await proxied.Services.GetRequiredService<AuditLog>().SearchAsync(new AuditQuery());
        Assert.Contains(records, r => r.SourceIp == "198.51.100.7");
    }

    [Fact]
    public async Task Keys_are_limited_to_their_allowed_models()
    {
        await using var t = await TestStore.CreateAsync(Providers.Sqlite);
        await using var host = await GatewayHost.StartAsync(t);
        var key = await host.KeyAsync("analyst", r => r with { AllowedModels = "deepseek-v3,deepseek-r1-distill-qwen-7b" });
        using var ok = await host.ChatAsync(key, model: "deepseek-v3");
        Assert.Equal(HttpStatusCode.OK, ok.StatusCode);
        using var denied = await host.ChatAsync(key, model: "deepseek-r1");
        Assert.Equal(HttpStatusCode.Forbidden, denied.StatusCode);
        Assert.Equal("model_not_allowed", await ErrorCodeAsync(denied));
    }

    [Fact]
    public async Task Repeated_failed_authentication_locks_out_the_source_address()
    {
        await using var t = await TestStore.CreateAsync(Providers.Sqlite);
        await using var host = await GatewayHost.StartAsync(t, o => o.FailedAuthMaxFailures = 3);
        var good = await host.KeyAsync("analyst");
        for (var i = 0; i < 3; i++)
        {
            using var r = await host.ChatAsync("sk-enclave-" + new string((char)('a' + i), 43));
            Assert.Equal(HttpStatusCode.Unauthorized, r.StatusCode);
        }

        using var locked = await host.ChatAsync(good);
        Assert.Equal(HttpStatusCode.TooManyRequests, locked.StatusCode);
        Assert.Equal("too_many_failed_auth", await ErrorCodeAsync(locked));
        Assert.NotNull(locked.Headers.RetryAfter);
    }

    [Fact]
    public async Task Request_and_token_rate_limits_answer_429_with_headers()
    {
        await using var t = await TestStore.CreateAsync(Providers.Sqlite);
        await using var host = await GatewayHost.StartAsync(t);
        var rpm = await host.KeyAsync("analyst", r => r with { RequestsPerMinute = 2 });
        using (var a = await host.ChatAsync(rpm))
        {
            Assert.Equal("1", a.Headers.GetValues("x-ratelimit-remaining-requests").Single());
        }

        using (await host.ChatAsync(rpm))
        {
        }

        using var limited = await host.ChatAsync(rpm);
        Assert.Equal(HttpStatusCode.TooManyRequests, limited.StatusCode);
        Assert.Equal("rate_limit_exceeded", await ErrorCodeAsync(limited));
        Assert.NotNull(limited.Headers.RetryAfter);
        Assert.Equal("2", limited.Headers.GetValues("x-ratelimit-limit-requests").Single());

        var tpm = await host.KeyAsync("analyst", r => r with { TokensPerMinute = 12 });
        using var first = await host.ChatAsync(tpm);
        Assert.Equal(HttpStatusCode.OK, first.StatusCode);
        using var second = await host.ChatAsync(tpm);
        Assert.Equal(HttpStatusCode.TooManyRequests, second.StatusCode);
        Assert.Equal("0", second.Headers.GetValues("x-ratelimit-remaining-tokens").Single());
    }

    [Theory, SqliteCase, PostgresCase]
    public async Task Prompt_pii_passes_by_default_but_is_masked_in_audit_and_per_key_policy_masks_or_blocks(string provider)
    {
        await using var t = await TestStore.CreateAsync(provider);
        await using var host = await GatewayHost.StartAsync(t);
        const string prompt = "请联系我 13800138000 或 zhang.wei@example.cn";

        using var plain = await host.ChatAsync(await host.KeyAsync("analyst"), prompt);
        Assert.Contains("13800138000", await plain.Content.ReadAsStringAsync());

        using var masked = await host.ChatAsync(await host.KeyAsync("analyst", r => r with { PromptPiiAction = "mask" }), prompt);
        var maskedText = await masked.Content.ReadAsStringAsync();
        Assert.Contains("138****8000", maskedText);
        Assert.DoesNotContain("13800138000", maskedText);

        using var blocked = await host.ChatAsync(await host.KeyAsync("analyst", r => r with { PromptPiiAction = "block" }), prompt);
        Assert.Equal(HttpStatusCode.BadRequest, blocked.StatusCode);
        Assert.Equal("content_filter", await ErrorCodeAsync(blocked));

        var records = await host.Services.GetRequiredService<AuditLog>().SearchAsync(new AuditQuery());
        Assert.Equal(3, records.Count);
        Assert.All(records, r => Assert.DoesNotContain("13800138000", r.Details));
        Assert.All(records, r => Assert.DoesNotContain("zhang.wei@", r.Details));
        Assert.Contains(records, r => r.Details!.Contains("prompt_blocked:pii", StringComparison.Ordinal));
    }

    [Fact]
    public async Task Banned_phrase_split_across_stream_chunks_is_cut()
    {
        await using var t = await TestStore.CreateAsync(Providers.Sqlite);
        await using var host = await GatewayHost.StartAsync(t, o => o.BlockedPhrases = ["secret plan", "绝密文件"]);
        var key = await host.KeyAsync("analyst");

        using var stream = await host.ChatAsync(key, stream: true, reply: ["Here is the sec", "ret pl", "an: step one", " and more"]);
        var body = await stream.Content.ReadAsStringAsync();
        Assert.Contains("content_filter", body);
        Assert.DoesNotContain("ret pl", body);
        Assert.DoesNotContain("step one", body);
        Assert.EndsWith("data: [DONE]\n\n", body);

        using var clean = await host.ChatAsync(key, stream: true, reply: ["harmless ", "text ", "here"]);
        var cleanBody = await clean.Content.ReadAsStringAsync();
        Assert.Contains("harmless ", cleanBody);
        Assert.Contains("here", cleanBody);
        Assert.DoesNotContain("content_filter", cleanBody);

        using var whole = await host.ChatAsync(key, reply: ["这是", "绝密", "文件内容"]);
        var wholeBody = await whole.Content.ReadAsStringAsync();
        Assert.DoesNotContain("绝密", wholeBody);
        Assert.Contains("content_filter", wholeBody);

        using var prompt = await host.ChatAsync(key, "tell me the SECRET PLAN");
        Assert.Equal(HttpStatusCode.BadRequest, prompt.StatusCode);
    }

    [Fact]
    public async Task Unclassified_endpoints_under_protected_prefixes_are_refused()
    {
        await using var t = await TestStore.CreateAsync(Providers.Sqlite);
        await using var host = await GatewayHost.StartAsync(t);
        using var r = await host.SendAsync(HttpMethod.Get, "/v1/nothing", await host.KeyAsync("admin"));
        Assert.Equal(HttpStatusCode.NotFound, r.StatusCode);
    }

    [Fact]
    public async Task No_auth_mode_lets_local_calls_through()
    {
        await using var t = await TestStore.CreateAsync(Providers.Sqlite);
        await using var host = await GatewayHost.StartAsync(t, o => o.NoAuth = true);
        using var r = await host.ChatAsync(null, "unauthenticated but recorded");
        Assert.Equal(HttpStatusCode.OK, r.StatusCode);

        // Still audited, as the anonymous principal.
        var audit = host.Services.GetRequiredService<AuditLog>();
        var record = (await audit.SearchAsync(new AuditQuery())).Single();
        Assert.Equal(GatewayMiddleware.AnonymousPrincipal, record.Principal);
        Assert.Equal("/v1/chat/completions", record.Endpoint);
        Assert.Contains("unauthenticated but recorded", record.Details);
        Assert.True((await audit.VerifyAsync()).Intact);
    }
}
