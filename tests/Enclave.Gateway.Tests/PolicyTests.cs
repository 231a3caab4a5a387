using System.Globalization;
using System.Net;
using System.Text.Json;
using Enclave.Gateway.Audit;
using Enclave.Gateway.Security;
using Microsoft.Extensions.DependencyInjection;
using NodaTime;

namespace Enclave.Gateway.Tests;

public sealed class PolicyTests
{
    private static async Task<JsonElement> ErrorAsync(HttpResponseMessage resp)
    {
        using var doc = JsonDocument.Parse(await resp.Content.ReadAsStringAsync());
        return doc.RootElement.GetProperty("error").Clone();
    }

    [Theory]
    [InlineData("mon-fri 08:00-18:00", 2026, 11, 23, 9, 30, true)] // Monday
    [InlineData("mon-fri 08:00-18:00", 2026, 11, 23, 18, 0, false)] // end is exclusive
    [InlineData("mon-fri 08:00-18:00", 2026, 11, 22, 9, 30, false)] // Sunday
    [InlineData("sat,sun 10:00-12:00; mon 07:00-08:00", 2026, 11, 22, 11, 0, true)]
    [InlineData("sat,sun 10:00-12:00; mon 07:00-08:00", 2026, 11, 23, 7, 59, true)]
    [InlineData("fri 22:00-06:00", 2026, 11, 28, 5, 59, true)] // Saturday early morning, window started Friday
    [InlineData("fri 22:00-06:00", 2026, 11, 29, 5, 0, false)] // Sunday: Saturday has no window
    [InlineData("fri-mon 00:00-24:00", 2026, 11, 23, 23, 59, true)] // ranges wrap through the weekend
    [InlineData("fri-mon 00:00-24:00", 2026, 11, 25, 12, 0, false)]
    [InlineData("09:00-17:00", 2026, 11, 29, 16, 59, true)] // no days: every day
    public void Time_windows_follow_days_ranges_and_midnight(string windows, int y, int mo, int d, int h, int mi, bool allowed) =>
        Assert.Equal(allowed, TimeWindows.Parse(windows).Allows(new LocalDateTime(y, mo, d, h, mi)));

    [Theory]
    [InlineData("mon-fri 8-18", "'8' is not a time of day")]
    [InlineData("mon-fri 08:00", "time range")]
    [InlineData("monday 08:00-18:00", "unknown day 'monday'")]
    [InlineData("mon 25:00-26:00", "'25:00' is not a time of day")]
    [InlineData("mon 08:00-08:00", "empty")]
    public void Malformed_time_windows_say_what_is_wrong(string windows, string expected)
    {
        var e = Assert.Throws<GatewayException>(() => TimeWindows.Parse(windows));
        Assert.Equal(400, e.Status);
        Assert.Contains(expected, e.Message);
    }

    /// <summary>Windows built around the current local hour in <paramref name="zone"/>, so the test holds at any time of day.</summary>
    private static (string Inside, string Outside, string LocalNow) WindowsAroundNow(string zone)
    {
        var now = SystemClock.Instance.GetCurrentInstant().InZone(DateTimeZoneProviders.Tzdb[zone]).LocalDateTime;
        string At(int hours) => ((now.Hour + hours + 24) % 24).ToString("00", CultureInfo.InvariantCulture) + ":00";
        return ($"{At(-1)}-{At(2)}", $"{At(3)}-{At(5)}", now.ToString("ddd", CultureInfo.InvariantCulture));
    }

    [Theory, SqliteCase, PostgresCase]
    public async Task Policies_set_through_the_admin_api_apply_to_the_next_request(string provider)
    {
        await using var t = await TestStore.CreateAsync(provider);
        await using var host = await GatewayHost.StartAsync(t);
        var admin = await host.KeyAsync("admin");
        var users = host.Services.GetRequiredService<UserService>();
        await users.AddAsync("lena");
        var analyst = await host.KeyAsync("analyst", r => r with { User = "lena", Name = "lena-key" });
        using (var ok = await host.ChatAsync(analyst))
        {
            Assert.Equal(HttpStatusCode.OK, ok.StatusCode);
        }

        // Time window in Shanghai time that excludes the present: a clear 403.
        var (inside, outside, _) = WindowsAroundNow("Asia/Shanghai");
        using (var put = await host.SendAsync(HttpMethod.Put, "/admin/policies/user/lena", admin, new { time_windows = outside, time_zone = "Asia/Shanghai" }))
        {
            Assert.Equal(HttpStatusCode.OK, put.StatusCode);
        }

        using (var denied = await host.ChatAsync(analyst))
        {
            Assert.Equal(HttpStatusCode.Forbidden, denied.StatusCode);
            var err = await ErrorAsync(denied);
            Assert.Equal("outside_time_window", err.GetProperty("code").GetString());
            Assert.Contains(outside, err.GetProperty("message").GetString());
            Assert.Contains("Asia/Shanghai", err.GetProperty("message").GetString());
        }

        using (await host.SendAsync(HttpMethod.Put, "/admin/policies/user/lena", admin, new { time_windows = inside, time_zone = "Asia/Shanghai" }))
        {
        }

        using (var allowed = await host.ChatAsync(analyst))
        {
            Assert.Equal(HttpStatusCode.OK, allowed.StatusCode);
        }

        // Role policy: models and an IP allowlist narrow every analyst key.
        using (await host.SendAsync(HttpMethod.Put, "/admin/policies/role/analyst", admin, new { allowed_models = "qwen3-8b" }))
        {
        }

        using (var model = await host.ChatAsync(analyst, model: "deepseek-v3"))
        {
            Assert.Equal("model_not_allowed", (await ErrorAsync(model)).GetProperty("code").GetString());
        }

        using (var other = await host.ChatAsync(analyst, model: "qwen3-8b"))
        {
            Assert.Equal(HttpStatusCode.OK, other.StatusCode);
        }

        using (await host.SendAsync(HttpMethod.Put, "/admin/policies/role/analyst", admin, new { allowed_cidrs = "192.0.2.0/24" }))
        {
        }

        using (var ip = await host.ChatAsync(analyst))
        {
            Assert.Equal("ip_not_allowed", (await ErrorAsync(ip)).GetProperty("code").GetString());
        }

        using (var removed = await host.SendAsync(HttpMethod.Delete, "/admin/policies/role/analyst", admin))
        {
            Assert.Equal(HttpStatusCode.NoContent, removed.StatusCode);
        }

        // Key policy: PII masked before the model, and a phrase refused for this key only.
        using (await host.SendAsync(HttpMethod.Put, "/admin/policies/key/" + (await host.Keys.ListAsync()).Single(k => k.Name == "lena-key").Id, admin,
            new { prompt_pii_action = "mask", blocked_phrases = new[] { "project aurora" } }))
        {
        }

        using (var masked = await host.ChatAsync(analyst, "call 13800138000"))
        {
            var text = await masked.Content.ReadAsStringAsync();
            Assert.Contains("138****8000", text);
        }

        using (var phrase = await host.ChatAsync(analyst, "status of Project Aurora?"))
        {
            Assert.Equal("content_filter", (await ErrorAsync(phrase)).GetProperty("code").GetString());
        }

        using (var otherKey = await host.ChatAsync(await host.KeyAsync("analyst"), "status of Project Aurora?"))
        {
            Assert.Equal(HttpStatusCode.OK, otherKey.StatusCode);
        }

        using var list = await host.SendAsync(HttpMethod.Get, "/admin/policies", admin);
        using var doc = JsonDocument.Parse(await list.Content.ReadAsStringAsync());
        var scopes = doc.RootElement.GetProperty("data").EnumerateArray().Select(p => p.GetProperty("scope").GetString()).Order().ToArray();
        Assert.Equal(new[] { "key", "user" }, scopes);
    }

    [Theory, SqliteCase, PostgresCase]
    public async Task A_used_up_daily_budget_stays_used_up_after_a_restart(string provider)
    {
        await using var t = await TestStore.CreateAsync(provider);
        string key;
        await using (var before = await GatewayHost.StartAsync(t))
        {
            key = await before.KeyAsync("analyst", r => r with { Name = "budgeted" });
            var id = (await before.Keys.ListAsync()).Single().Id;
            await before.Services.GetRequiredService<PolicyService>().SetAsync("key", id, new PolicyFields(DailyTokenBudget: 30, MonthlyTokenBudget: 1000));
            for (var i = 0; i < 2; i++)
            {
                // The stub reports 15 tokens per call.
                using var ok = await before.ChatAsync(key);
                Assert.Equal(HttpStatusCode.OK, ok.StatusCode);
            }
        }

        await using var after = await GatewayHost.StartAsync(t);
        using var refused = await after.ChatAsync(key);
        Assert.Equal(HttpStatusCode.TooManyRequests, refused.StatusCode);
        Assert.Equal("insufficient_quota", (await ErrorAsync(refused)).GetProperty("code").GetString());
        Assert.NotNull(refused.Headers.RetryAfter);
        Assert.Equal("0", refused.Headers.GetValues("x-ratelimit-remaining-tokens-day").Single());
        Assert.Equal("970", refused.Headers.GetValues("x-ratelimit-remaining-tokens-month").Single());
    }

    [Fact]
    public async Task A_stream_that_reports_no_usage_is_charged_its_reservation()
    {
        await using var t = await TestStore.CreateAsync(Providers.Sqlite);
        await using var host = await GatewayHost.StartAsync(t);
        var key = await host.KeyAsync("analyst");
        await host.Services.GetRequiredService<PolicyService>().SetAsync("key", (await host.Keys.ListAsync()).Single().Id, new PolicyFields(DailyTokenBudget: 300));
        var body = new { model = "deepseek-v3", stream = true, max_tokens = 200, x_no_usage = true, messages = new[] { new { role = "user", content = "hi" } } };
        var statuses = new List<HttpStatusCode>();
        for (var i = 0; i < 3; i++)
        {
            using var r = await host.SendAsync(HttpMethod.Post, "/v1/chat/completions", key, body);
            await r.Content.ReadAsStringAsync();
            statuses.Add(r.StatusCode);
        }

        // About 230 tokens reserved and kept per call: the third call finds the budget used up.
        Assert.Equal([HttpStatusCode.OK, HttpStatusCode.OK, HttpStatusCode.TooManyRequests], statuses);
    }

    [Fact]
    public async Task Per_user_requests_per_minute_span_all_of_the_users_keys()
    {
        await using var t = await TestStore.CreateAsync(Providers.Sqlite);
        await using var host = await GatewayHost.StartAsync(t);
        await host.Services.GetRequiredService<UserService>().AddAsync("max");
        var k1 = await host.KeyAsync("analyst", r => r with { User = "max" });
        var k2 = await host.KeyAsync("analyst", r => r with { User = "max" });
        await host.Services.GetRequiredService<PolicyService>().SetAsync("user", "max", new PolicyFields(RequestsPerMinute: 2));
        var minute = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds() / 60_000;
        using var a = await host.ChatAsync(k1);
        using var b = await host.ChatAsync(k2);
        using var c = await host.ChatAsync(k1);
        if (DateTimeOffset.UtcNow.ToUnixTimeMilliseconds() / 60_000 == minute)
        {
            Assert.Equal(HttpStatusCode.OK, b.StatusCode);
            Assert.Equal(HttpStatusCode.TooManyRequests, c.StatusCode);
            Assert.Contains("this user", (await ErrorAsync(c)).GetProperty("message").GetString());
        }
    }

    [Fact]
    public async Task Audit_pii_policy_per_role_changes_what_the_record_keeps()
    {
        await using var t = await TestStore.CreateAsync(Providers.Sqlite);
        await using var host = await GatewayHost.StartAsync(t);
        await host.Services.GetRequiredService<PolicyService>().SetAsync("role", "analyst", new PolicyFields(AuditPiiAction: "tag"));
        using (await host.ChatAsync(await host.KeyAsync("analyst"), "mail zhang.wei@example.cn"))
        {
        }

        var record = (await host.Services.GetRequiredService<AuditLog>().SearchAsync(new AuditQuery(Text: "mail"))).Single();
        Assert.DoesNotContain("zhang.wei@example.cn", record.Details!);
        Assert.Contains("[EMAIL]", record.Details!);
    }

    [Fact]
    public async Task Invalid_policies_are_refused_with_the_field_named_and_nothing_changes()
    {
        await using var t = await TestStore.CreateAsync(Providers.Sqlite);
        await using var host = await GatewayHost.StartAsync(t);
        var admin = await host.KeyAsync("admin");
        (object Body, string Code, string Param)[] cases =
        [
            (new { time_windows = "weekdays 9-5" }, "invalid_time_window", "time_windows"),
            (new { time_zone = "Mars/Olympus" }, "invalid_time_zone", "time_zone"),
            (new { allowed_cidrs = "10.0.0.0/33" }, "invalid_cidr", "allowed_cidrs"),
            (new { daily_token_budget = -5 }, "invalid_limit", "daily_token_budget"),
            (new { prompt_pii_action = "shred" }, "invalid_pii_action", "prompt_pii_action"),
        ];
        foreach (var (body, code, param) in cases)
        {
            using var r = await host.SendAsync(HttpMethod.Put, "/admin/policies/role/analyst", admin, body);
            Assert.Equal(HttpStatusCode.BadRequest, r.StatusCode);
            var err = await ErrorAsync(r);
            Assert.Equal(code, err.GetProperty("code").GetString());
            if (code != "invalid_cidr")
            {
                Assert.Equal(param, err.GetProperty("param").GetString());
            }
        }

        using var unknownScope = await host.SendAsync(HttpMethod.Put, "/admin/policies/team/x", admin, new { });
        Assert.Equal("invalid_scope", (await ErrorAsync(unknownScope)).GetProperty("code").GetString());
        using var unknownUser = await host.SendAsync(HttpMethod.Put, "/admin/policies/user/ghost", admin, new { });
        Assert.Equal(HttpStatusCode.NotFound, unknownUser.StatusCode);
        Assert.Empty(await host.Services.GetRequiredService<PolicyService>().ListAsync());
    }
}
