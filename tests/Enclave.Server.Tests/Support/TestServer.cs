using System.Collections.Concurrent;
using System.ClientModel;
using System.Globalization;
using System.Net.Http.Json;
using System.Text;
using System.Text.Json.Nodes;
using Enclave.Engine.Backends.Cpu;
using Enclave.Engine.Tests.Support;
using Enclave.Server.Hosting;
using Microsoft.Extensions.Logging;
using OpenAI;

namespace Enclave.Server.Tests.Support;

/// <summary>A real server on a loopback ephemeral port, with the fixture models on the CPU backend.</summary>
public sealed class TestServer : IAsyncDisposable
{
    private readonly string? _ownHome;

    private TestServer(EnclaveServer server, CapturingLoggerProvider logs, string? ownHome)
    {
        Server = server;
        Logs = logs;
        _ownHome = ownHome;
        // No draining of abandoned responses: disposing one mid-stream must close the connection, as a client that goes away does.
        Http = new HttpClient(new SocketsHttpHandler { MaxResponseDrainSize = 0, MaxConnectionsPerServer = 256 }) { BaseAddress = server.Address, Timeout = TimeSpan.FromMinutes(3) };
    }

    public EnclaveServer Server { get; }

    public HttpClient Http { get; }

    public CapturingLoggerProvider Logs { get; }

    public Uri Address => Server.Address;

    public static async Task<TestServer> StartAsync(Action<ServerOptions>? configure = null, bool waitForModels = true, params string[] models)
    {
        var options = new ServerOptions
        {
            Host = "127.0.0.1",
            Port = 0,
            Device = "cpu",
            // One worker thread per model: test collections run in parallel on small CI machines.
            BackendFactory = _ => new CpuBackend(threads: 1),
            Engine = new Enclave.Engine.Generation.EngineOptions { MaxNumSeqs = 64, MaxNumBatchedTokens = 512 },
            // Loopback only: tests that exercise authentication switch the gateway or a static key on.
            NoAuth = true,
        };
        foreach (var m in models.Length == 0 ? ["tiny-qwen3"] : models)
        {
            options.Models.Add(new ModelSpec(m, Fixtures.Model(m)));
        }

        configure?.Invoke(options);
        if (!string.IsNullOrEmpty(options.ApiKey))
        {
            options.NoAuth = false;
        }

        // The gateway (and so the audit store) runs under --no-auth too: give each server its own data directory.
        string? ownHome = null;
        if (options.Home is null && options.UsesGateway)
        {
            ownHome = Path.Combine(Path.GetTempPath(), "enclave-srv-" + Guid.NewGuid().ToString("N"));
            Directory.CreateDirectory(ownHome);
            options.Home = ownHome;
        }

        var logs = new CapturingLoggerProvider();
        var server = await EnclaveServer.StartAsync(options, b => b.AddProvider(logs));
        if (waitForModels)
        {
            await server.Loading;
        }

        return new TestServer(server, logs, ownHome);
    }

    public OpenAIClient Sdk(string key = "unused") =>
        new(new ApiKeyCredential(key), new OpenAIClientOptions { Endpoint = new Uri(Address, "v1"), NetworkTimeout = TimeSpan.FromMinutes(3) });

    public async Task<(int Status, JsonNode? Body, HttpResponseMessage Response)> PostAsync(string path, string json, CancellationToken cancellationToken = default)
    {
        var response = await Http.PostAsync(path, new StringContent(json, Encoding.UTF8, "application/json"), cancellationToken);
        var text = await response.Content.ReadAsStringAsync(cancellationToken);
        JsonNode? body = null;
        try
        {
            body = text.Length == 0 ? null : JsonNode.Parse(text);
        }
        catch (System.Text.Json.JsonException)
        {
            body = JsonValue.Create(text);
        }

        return ((int)response.StatusCode, body, response);
    }

    public Task<(int Status, JsonNode? Body, HttpResponseMessage Response)> PostAsync(string path, JsonNode body, CancellationToken cancellationToken = default) =>
        PostAsync(path, body.ToJsonString(), cancellationToken);

    /// <summary>Streams a request and returns the data payloads of its server-sent events.</summary>
    /// <remarks>When <paramref name="onEvent"/> returns false the client goes away: its connection is closed mid-stream.</remarks>
    public Task<List<JsonNode>> StreamAsync(string path, JsonNode body, Func<JsonNode, bool>? onEvent = null, CancellationToken cancellationToken = default) =>
        Task.Run(() => StreamCoreAsync(path, body, onEvent, cancellationToken), cancellationToken);

    private async Task<List<JsonNode>> StreamCoreAsync(string path, JsonNode body, Func<JsonNode, bool>? onEvent, CancellationToken cancellationToken)
    {
        // Streams that may be abandoned get a client of their own, whose disposal closes the socket for certain.
        using var own = onEvent is null ? null : new HttpClient(new SocketsHttpHandler()) { BaseAddress = Address, Timeout = Http.Timeout };
        var http = own ?? Http;
        using var request = new HttpRequestMessage(HttpMethod.Post, path) { Content = new StringContent(body.ToJsonString(), Encoding.UTF8, "application/json") };
        using var response = await http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, cancellationToken);
        Assert.True(response.IsSuccessStatusCode, $"HTTP {(int)response.StatusCode}: {await response.Content.ReadAsStringAsync(cancellationToken)}");
        Assert.StartsWith("text/event-stream", response.Content.Headers.ContentType?.ToString());
        using var reader = new StreamReader(await response.Content.ReadAsStreamAsync(cancellationToken));
        var events = new List<JsonNode>();
        var done = false;
        while (await reader.ReadLineAsync(cancellationToken) is { } line)
        {
            if (!line.StartsWith("data: ", StringComparison.Ordinal))
            {
                continue;
            }

            if (line == "data: [DONE]")
            {
                done = true;
                break;
            }

            var e = JsonNode.Parse(line[6..])!;
            events.Add(e);
            if (onEvent is not null && !onEvent(e))
            {
                own!.Dispose();
                return events;
            }
        }

        Assert.True(done, "the stream ended without data: [DONE]");
        return events;
    }

    /// <summary>Scrapes /metrics into name{labels} → value.</summary>
    public async Task<Dictionary<string, double>> MetricsAsync()
    {
        var text = await Http.GetStringAsync("metrics");
        var result = new Dictionary<string, double>();
        foreach (var line in text.Split('\n'))
        {
            if (line.Length == 0 || line[0] == '#')
            {
                continue;
            }

            var close = line.LastIndexOf('}');
            var split = close > 0 ? close + 1 : line.IndexOf(' ');
            var key = line[..split];
            var valueText = line[split..].Trim().Split(' ')[0];
            result[key] = double.Parse(valueText, NumberStyles.Float, CultureInfo.InvariantCulture);
        }

        return result;
    }

    /// <summary>Sum of a metric over all label sets.</summary>
    public static double Sum(Dictionary<string, double> metrics, string name, string? labelFilter = null) =>
        metrics.Where(kv => (kv.Key == name || kv.Key.StartsWith(name + "{", StringComparison.Ordinal)) && (labelFilter is null || kv.Key.Contains(labelFilter, StringComparison.Ordinal)))
            .Sum(kv => kv.Value);

    public async ValueTask DisposeAsync()
    {
        Http.Dispose();
        await Server.DisposeAsync();
        if (_ownHome is not null)
        {
            Microsoft.Data.Sqlite.SqliteConnection.ClearAllPools();
            try
            {
                Directory.Delete(_ownHome, recursive: true);
            }
            catch (IOException)
            {
                // still held open on this platform; the temp directory is cleaned later
            }
        }
    }
}

/// <summary>Keeps formatted log lines with their structured state, to check the request log.</summary>
public sealed class CapturingLoggerProvider : ILoggerProvider
{
    public ConcurrentQueue<(string Category, string Message, IReadOnlyList<KeyValuePair<string, object?>> State)> Entries { get; } = new();

    public ILogger CreateLogger(string categoryName) => new Logger(this, categoryName);

    public void Dispose()
    {
    }

    private sealed class Logger(CapturingLoggerProvider owner, string category) : ILogger
    {
        public IDisposable? BeginScope<TState>(TState state)
            where TState : notnull => null;

        public bool IsEnabled(LogLevel logLevel) => logLevel >= LogLevel.Information;

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
        {
            var pairs = state as IReadOnlyList<KeyValuePair<string, object?>> ?? [];
            owner.Entries.Enqueue((category, formatter(state, exception), pairs));
        }
    }
}
