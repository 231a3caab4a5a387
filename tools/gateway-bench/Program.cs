// Gateway overhead benchmark: the same stub chat endpoint served with and without the gateway
// (key auth + policy + audit write), loaded over loopback by a closed-loop client.
// Usage: dotnet run -c Release --project tools/gateway-bench -- [seconds] [concurrency] [database]
//        ... -- [seconds] [concurrency] "" limiter REDIS   (limiter admission + settlement, memory vs Redis)
using System.Diagnostics;
using System.Globalization;
using System.Net.Http.Headers;
using System.Text;
using Enclave.Gateway.Hosting;
using Enclave.Gateway.Security;
using Microsoft.AspNetCore.Builder;
using Microsoft.EntityFrameworkCore;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

var seconds = args.Length > 0 ? int.Parse(args[0], CultureInfo.InvariantCulture) : 10;
var concurrency = args.Length > 1 ? int.Parse(args[1], CultureInfo.InvariantCulture) : 8;
var database = args.Length > 2 ? args[2] : null;
var home = Path.Combine(Path.GetTempPath(), "enclave-bench-" + Guid.NewGuid().ToString("N"));

const string Body = "{\"model\":\"deepseek-v3\",\"messages\":[{\"role\":\"user\",\"content\":\"Summarise the quarterly report in three bullet points.\"}]}";

static void MapStub(WebApplication app, bool gated)
{
    var ep = app.MapPost("/v1/chat/completions", async (HttpContext ctx) =>
    {
        await ctx.Request.Body.CopyToAsync(Stream.Null);
        ctx.Response.ContentType = "application/json";
        await ctx.Response.WriteAsync("{\"id\":\"x\",\"object\":\"chat.completion\",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":\"ok\"},\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":20,\"completion_tokens\":1}}");
    });
    if (gated)
    {
        ep.RequirePermission(Permissions.Inference);
    }
}

async Task<(WebApplication App, string Url)> StartAsync(bool gated)
{
    var b = WebApplication.CreateSlimBuilder();
    b.WebHost.UseUrls("http://127.0.0.1:0");
    b.Logging.ClearProviders();
    if (gated)
    {
        b.Services.AddEnclaveGateway(b.Configuration, o =>
        {
            o.Home = home;
            o.Database = database;
            o.Bootstrap = false;
        });
    }

    var app = b.Build();
    if (gated)
    {
        app.UseEnclaveGateway();
    }

    MapStub(app, gated);
    await app.StartAsync();
    return (app, app.Urls.First());
}

async Task<(double P50, double P99, double Rps, int N)> LoadAsync(string url, string? key)
{
    using var client = new HttpClient(new SocketsHttpHandler { MaxConnectionsPerServer = concurrency }) { BaseAddress = new Uri(url) };
    async Task<List<double>> Worker(DateTime until)
    {
        var lat = new List<double>();
        while (DateTime.UtcNow < until)
        {
            using var req = new HttpRequestMessage(HttpMethod.Post, "/v1/chat/completions") { Content = new StringContent(Body, Encoding.UTF8, "application/json") };
            if (key is not null)
            {
                req.Headers.Authorization = new AuthenticationHeaderValue("Bearer", key);
            }

            var t = Stopwatch.GetTimestamp();
            using var resp = await client.SendAsync(req);
            await resp.Content.ReadAsByteArrayAsync();
            if (!resp.IsSuccessStatusCode)
            {
                throw new InvalidOperationException("HTTP " + (int)resp.StatusCode);
            }

            lat.Add(Stopwatch.GetElapsedTime(t).TotalMilliseconds);
        }

        return lat;
    }

    await Task.WhenAll(Enumerable.Range(0, concurrency).Select(_ => Worker(DateTime.UtcNow.AddSeconds(2))));
    var sw = Stopwatch.StartNew();
    var all = (await Task.WhenAll(Enumerable.Range(0, concurrency).Select(_ => Worker(DateTime.UtcNow.AddSeconds(seconds))))).SelectMany(x => x).OrderBy(x => x).ToList();
    var elapsed = sw.Elapsed.TotalSeconds;
    return (all[all.Count / 2], all[(int)(all.Count * 0.99)], all.Count / elapsed, all.Count);
}

if (args.Length > 4 && args[3] == "limiter")
{
    // One admission (requests/minute, tokens/minute and a daily budget, for a key and its user) plus
    // its settlement: what the gateway adds per limited request.
    using var redis = await StackExchange.Redis.ConnectionMultiplexer.ConnectAsync(args[4]);
    var prefix = "enclave-bench:" + Guid.NewGuid().ToString("N")[..8] + ":";
    Enclave.Gateway.Limits.LimitSubject[] subjects =
    [
        new("key", "bench-key", new Enclave.Gateway.Limits.LimitPolicy(1_000_000_000, 1_000_000_000_000, 1_000_000_000_000)),
        new("user", "bench-user", new Enclave.Gateway.Limits.LimitPolicy(1_000_000_000, DailyTokens: 1_000_000_000_000)),
    ];
    var stores = new (string Name, Enclave.Gateway.Limits.ICounterStore Store)[]
    {
        ("memory", new Enclave.Gateway.Limits.MemoryCounterStore(null)),
        ("redis", new Enclave.Gateway.Limits.RedisCounterStore(redis, prefix)),
    };
    Console.WriteLine("| counters | sequential p50 ms | sequential p99 ms | concurrent ops/s |");
    Console.WriteLine("| --- | --- | --- | --- |");
    foreach (var (name, store) in stores)
    {
        var limiter = new Enclave.Gateway.Limits.GatewayLimiter(store, NodaTime.DateTimeZone.Utc);
        async Task OnceAsync()
        {
            var a = await limiter.AdmitAsync(subjects, 300);
            await limiter.SettleAsync(a.Reservation!, 120);
        }

        for (var i = 0; i < 2000; i++)
        {
            await OnceAsync();
        }

        var lat = new List<double>(20_000);
        for (var i = 0; i < 20_000; i++)
        {
            var t = Stopwatch.GetTimestamp();
            await OnceAsync();
            lat.Add(Stopwatch.GetElapsedTime(t).TotalMilliseconds);
        }

        lat.Sort();
        var until = DateTime.UtcNow.AddSeconds(seconds);
        var counts = await Task.WhenAll(Enumerable.Range(0, concurrency).Select(_ => Task.Run(async () =>
        {
            var n = 0;
            while (DateTime.UtcNow < until)
            {
                await OnceAsync();
                n++;
            }

            return n;
        })));
        Console.WriteLine(FormattableString.Invariant($"| {name} | {lat[lat.Count / 2]:F3} | {lat[(int)(lat.Count * 0.99)]:F3} | {counts.Sum() / (double)seconds:F0} |"));
    }

    return;
}

if (args.Length > 3 && args[3] == "append")
{
    var store = Enclave.Gateway.Store.GatewayStore.Resolve(database, home);
    await store.MigrateAsync();
    var log = new Enclave.Gateway.Audit.AuditLog(store, Enclave.Gateway.Audit.AuditSigner.LoadOrCreate(Path.Combine(home, "k")));
    var ks = new KeyService(store);
    var sk = (await ks.CreateAsync(new KeyCreateRequest(BuiltInRoles.Analyst))).Secret;
    var sw0 = Stopwatch.StartNew();
    for (var i = 0; i < 1000; i++)
    {
        await using var db = store.CreateContext();
        await db.Roles.CountAsync();
    }

    Console.WriteLine(FormattableString.Invariant($"count query: {sw0.Elapsed.TotalMilliseconds / 1000:F2} ms each"));
    sw0.Restart();
    for (var i = 0; i < 300; i++)
    {
        await using var db = store.CreateContext();
        await using var tx = await db.Database.BeginTransactionAsync();
        await tx.CommitAsync();
    }

    Console.WriteLine(FormattableString.Invariant($"empty tx: {sw0.Elapsed.TotalMilliseconds / 300:F2} ms each"));
    sw0.Restart();
    for (var i = 0; i < 1000; i++)
    {
        await log.AppendAsync(new Enclave.Gateway.Audit.AuditEntry { Method = "POST", Endpoint = "/v1/chat/completions", Status = 200 });
    }

    Console.WriteLine(FormattableString.Invariant($"append: {sw0.Elapsed.TotalMilliseconds / 1000:F2} ms each"));
    sw0.Restart();
    for (var i = 0; i < 1000; i++)
    {
        ks.InvalidateCache();
        await ks.AuthenticateAsync(sk);
    }

    Console.WriteLine(FormattableString.Invariant($"uncached auth: {sw0.Elapsed.TotalMilliseconds / 1000:F2} ms each"));
    return;
}

var (plain, plainUrl) = await StartAsync(false);
var (gated, gatedUrl) = await StartAsync(true);
var key = (await gated.Services.GetRequiredService<KeyService>().CreateAsync(new KeyCreateRequest(BuiltInRoles.Analyst))).Secret;

var b0 = await LoadAsync(plainUrl, null);
var g = await LoadAsync(gatedUrl, key);
Console.WriteLine($"store={(database is null ? "sqlite" : "postgres")} concurrency={concurrency} seconds={seconds} cores={Environment.ProcessorCount}");
Console.WriteLine($"| setup | requests | req/s | p50 ms | p99 ms |");
Console.WriteLine($"| --- | --- | --- | --- | --- |");
Console.WriteLine(FormattableString.Invariant($"| stub only | {b0.N} | {b0.Rps:F0} | {b0.P50:F2} | {b0.P99:F2} |"));
Console.WriteLine(FormattableString.Invariant($"| stub + gateway | {g.N} | {g.Rps:F0} | {g.P50:F2} | {g.P99:F2} |"));
Console.WriteLine(FormattableString.Invariant($"| added by gateway | | | {g.P50 - b0.P50:F2} | {g.P99 - b0.P99:F2} |"));
var verify = await gated.Services.GetRequiredService<Enclave.Gateway.Audit.AuditLog>().VerifyAsync();
Console.WriteLine($"audit: {verify.Message}");
await gated.StopAsync();
await plain.StopAsync();
Directory.Delete(home, true);
