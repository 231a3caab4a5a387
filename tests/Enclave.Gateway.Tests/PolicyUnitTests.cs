using System.Net;
using Enclave.Gateway.Hosting;
using Enclave.Gateway.Limits;
using Enclave.Gateway.Security;

namespace Enclave.Gateway.Tests;

public sealed class PolicyUnitTests
{
    [Theory]
    [InlineData("10.0.0.0/8", "10.200.1.1", true)]
    [InlineData("10.0.0.0/8", "11.0.0.1", false)]
    [InlineData("192.168.1.7", "192.168.1.7", true)]
    [InlineData("192.168.1.7", "192.168.1.8", false)]
    [InlineData("2001:db8::/32", "2001:db8:1::5", true)]
    [InlineData("2001:db8::/32", "2001:db9::5", false)]
    [InlineData("10.0.0.0/8", "::ffff:10.1.2.3", true)]
    [InlineData("10.0.0.0/8", "2001:db8::1", false)]
    [InlineData("", "8.8.8.8", true)]
    public void Cidr_lists_match_ipv4_and_ipv6(string cidrs, string address, bool allowed) =>
        Assert.Equal(allowed, CidrList.Parse(cidrs).Allows(IPAddress.Parse(address)));

    [Theory]
    [InlineData("10.0.0.1/8")]
    [InlineData("not-an-ip")]
    [InlineData("10.0.0.0/33")]
    public void Invalid_cidrs_are_rejected(string cidrs) =>
        Assert.Equal("invalid_cidr", Assert.Throws<GatewayException>(() => CidrList.Parse(cidrs)).Code);

    [Theory]
    [InlineData("", "198.51.100.1", "203.0.113.5", "198.51.100.1")]
    [InlineData("10.0.0.0/8", "198.51.100.1", "203.0.113.5", "198.51.100.1")]
    [InlineData("10.0.0.0/8", "10.0.0.2", "203.0.113.5", "203.0.113.5")]
    [InlineData("10.0.0.0/8", "10.0.0.2", "203.0.113.5, 10.0.0.9", "203.0.113.5")]
    [InlineData("10.0.0.0/8", "10.0.0.2", "203.0.113.5, 198.51.100.7", "198.51.100.7")]
    [InlineData("10.0.0.0/8,fd00::/8", "fd00::2", "2001:db8::7", "2001:db8::7")]
    [InlineData("10.0.0.0/8", "10.0.0.2", "garbage", "10.0.0.2")]
    public void Forwarded_for_is_walked_from_the_right_past_trusted_proxies(string trusted, string remote, string xff, string expected) =>
        Assert.Equal(IPAddress.Parse(expected), new ClientAddress(CidrList.Parse(trusted)).Resolve(IPAddress.Parse(remote), xff));

    [Fact]
    public void Failed_auth_lockout_expires_with_its_window()
    {
        var clock = new ManualClock(DateTimeOffset.UtcNow);
        var limiter = new FailedAuthLimiter(clock) { MaxFailures = 2, Window = TimeSpan.FromMinutes(1) };
        limiter.RecordFailure("1.2.3.4");
        Assert.Null(limiter.RetryAfterSeconds("1.2.3.4"));
        limiter.RecordFailure("1.2.3.4");
        Assert.NotNull(limiter.RetryAfterSeconds("1.2.3.4"));
        Assert.Null(limiter.RetryAfterSeconds("5.6.7.8"));
        clock.Advance(TimeSpan.FromSeconds(61));
        Assert.Null(limiter.RetryAfterSeconds("1.2.3.4"));
    }

    [Fact]
    public async Task Rate_limiter_resets_each_minute()
    {
        var clock = new ManualClock(new DateTimeOffset(2026, 1, 1, 0, 0, 0, TimeSpan.Zero));
        var limiter = new GatewayLimiter(new MemoryCounterStore(null, clock), NodaTime.DateTimeZone.Utc, clock);
        LimitSubject[] rpm = [new("key", "k", new LimitPolicy(RequestsPerMinute: 1))];
        Assert.True((await limiter.AdmitAsync(rpm, 0)).Allowed);
        Assert.False((await limiter.AdmitAsync(rpm, 0)).Allowed);
        clock.Advance(TimeSpan.FromMinutes(1));
        LimitSubject[] both = [new("key", "k", new LimitPolicy(RequestsPerMinute: 1, TokensPerMinute: 50))];
        var first = await limiter.AdmitAsync(both, 30);
        Assert.True(first.Allowed);
        await limiter.SettleAsync(first.Reservation!, 100);
        clock.Advance(TimeSpan.FromSeconds(1));
        var second = await limiter.AdmitAsync([new("key", "k", new LimitPolicy(TokensPerMinute: 50))], 30);
        Assert.False(second.Allowed);
        Assert.Equal(LimitKinds.Tokens, second.DeniedKind);
    }

    [Fact]
    public void Streaming_scanner_finds_phrases_split_across_chunks_and_holds_back_little()
    {
        var filter = new ContentFilter(["forbidden words", "机密"]);
        var s = filter.CreateScanner();
        Assert.Null(s.Append("all fine, forbid"));
        Assert.Equal(16 - 14, s.SafeLength);
        Assert.Null(s.Append("den wo"));
        Assert.Equal("forbidden words", s.Append("rds!"));

        var zh = filter.CreateScanner();
        Assert.Null(zh.Append("这是机"));
        Assert.NotNull(zh.Append("密文件"));
        Assert.Null(filter.CreateScanner().Append("nothing to see"));
    }

    [Fact]
    public void Usage_is_read_from_json_and_from_the_last_stream_chunk()
    {
        Assert.Equal((7, 3), GatewayMiddleware.ReadUsage("{\"choices\":[],\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":3,\"total_tokens\":10}}"));
        Assert.Equal((9, 4), GatewayMiddleware.ReadUsage("data: {\"choices\":[]}\n\ndata: {\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":4}}\n\ndata: [DONE]\n\n"));
        Assert.Equal((null, null), GatewayMiddleware.ReadUsage("{\"choices\":[]}"));
        // OpenAI (and Enclave's server) nest details inside usage.
        Assert.Equal((12, 5), GatewayMiddleware.ReadUsage("{\"usage\":{\"prompt_tokens\":12,\"prompt_tokens_details\":{\"cached_tokens\":0},\"completion_tokens\":5,\"total_tokens\":17}}"));
    }

    [Fact]
    public void Generated_secrets_are_well_formed_and_distinct()
    {
        var a = ApiKeySecret.Generate();
        var b = ApiKeySecret.Generate();
        Assert.NotEqual(a, b);
        Assert.Equal(11 + 43, a.Length);
        Assert.True(ApiKeySecret.LooksValid(a));
        Assert.False(ApiKeySecret.LooksValid(a.Replace("sk-enclave-", "sk-other-", StringComparison.Ordinal)));
        Assert.False(ApiKeySecret.LooksValid(a + "!"));
        Assert.True(ApiKeySecret.Matches(a, ApiKeySecret.Hash(a)));
        Assert.False(ApiKeySecret.Matches(b, ApiKeySecret.Hash(a)));
    }
}
