using System.Diagnostics;
using System.Globalization;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace Enclave.Server.Bench;

/// <summary>Settings of one serving benchmark run.</summary>
public sealed record ServeBenchmarkOptions(Uri Url, int Concurrency, int Requests, int InputLength, int OutputLength)
{
    public string? Model { get; init; }

    public string? ApiKey { get; init; }

    public int Seed { get; init; } = 1;

    /// <summary>Prompt token ids are drawn from [Low, High): safe for any vocabulary of at least High tokens.</summary>
    public int TokenLow { get; init; } = 100;

    public int TokenHigh { get; init; } = 900;

    /// <summary>Sampling temperature of every request: 0 (the default) is greedy, anything above draws (top_p, top_k, seeds apply).</summary>
    public double Temperature { get; init; }

    public double TopP { get; init; } = 1.0;

    /// <summary>0 disables top-k.</summary>
    public int TopK { get; init; }

    public double MinP { get; init; }

    /// <summary>
    /// With a temperature above 0, request i is sent with seed SamplingSeed + i, so sampled runs are reproducible; null
    /// sends no seed.
    /// </summary>
    public long? SamplingSeed { get; init; }

    public TimeSpan Timeout { get; init; } = TimeSpan.FromMinutes(10);
}

/// <summary>Mean, median and 99th percentile of a latency in milliseconds.</summary>
public sealed record LatencyStats(double MeanMs, double P50Ms, double P99Ms)
{
    public static LatencyStats Of(IReadOnlyList<double> seconds)
    {
        if (seconds.Count == 0)
        {
            return new LatencyStats(0, 0, 0);
        }

        var sorted = seconds.Order().ToArray();
        double Percentile(double q)
        {
            var pos = q * (sorted.Length - 1);
            var lo = (int)Math.Floor(pos);
            var hi = Math.Min(lo + 1, sorted.Length - 1);
            return (sorted[lo] + ((sorted[hi] - sorted[lo]) * (pos - lo))) * 1000;
        }

        return new LatencyStats(sorted.Average() * 1000, Percentile(0.5), Percentile(0.99));
    }
}

/// <summary>What a run measured, in vLLM benchmark_serving's terms.</summary>
public sealed record ServeBenchmarkResult(
    int Completed, int Failed, double DurationSeconds, long InputTokens, long OutputTokens,
    LatencyStats Ttft, LatencyStats Tpot, LatencyStats Itl, LatencyStats E2e, IReadOnlyList<string> Errors)
{
    public double RequestThroughput => Completed / DurationSeconds;

    public double OutputThroughput => OutputTokens / DurationSeconds;

    public double TotalTokenThroughput => (InputTokens + OutputTokens) / DurationSeconds;

    public string Format()
    {
        var s = new StringBuilder();
        void Line(string name, string value) => s.AppendLine(CultureInfo.InvariantCulture, $"{name,-36}{value,14}");
        void Lat(string name, LatencyStats l)
        {
            Line($"Mean {name} (ms):", l.MeanMs.ToString("F2", CultureInfo.InvariantCulture));
            Line($"Median {name} (ms):", l.P50Ms.ToString("F2", CultureInfo.InvariantCulture));
            Line($"P99 {name} (ms):", l.P99Ms.ToString("F2", CultureInfo.InvariantCulture));
        }

        s.AppendLine("============ Serving Benchmark Result ============");
        Line("Successful requests:", Completed.ToString(CultureInfo.InvariantCulture));
        Line("Failed requests:", Failed.ToString(CultureInfo.InvariantCulture));
        Line("Benchmark duration (s):", DurationSeconds.ToString("F2", CultureInfo.InvariantCulture));
        Line("Total input tokens:", InputTokens.ToString(CultureInfo.InvariantCulture));
        Line("Total generated tokens:", OutputTokens.ToString(CultureInfo.InvariantCulture));
        Line("Request throughput (req/s):", RequestThroughput.ToString("F2", CultureInfo.InvariantCulture));
        Line("Output token throughput (tok/s):", OutputThroughput.ToString("F2", CultureInfo.InvariantCulture));
        Line("Total token throughput (tok/s):", TotalTokenThroughput.ToString("F2", CultureInfo.InvariantCulture));
        s.AppendLine("---------------Time to First Token----------------");
        Lat("TTFT", Ttft);
        s.AppendLine("-----Time per Output Token (excl. 1st token)------");
        Lat("TPOT", Tpot);
        s.AppendLine("---------------Inter-token Latency----------------");
        Lat("ITL", Itl);
        s.AppendLine("----------------End-to-end Latency----------------");
        Lat("E2EL", E2e);
        s.Append("==================================================");
        return s.ToString();
    }

    public JsonObject ToJson()
    {
        static JsonObject L(LatencyStats l) => new() { ["mean_ms"] = l.MeanMs, ["p50_ms"] = l.P50Ms, ["p99_ms"] = l.P99Ms };
        return new JsonObject
        {
            ["completed"] = Completed,
            ["failed"] = Failed,
            ["duration_s"] = DurationSeconds,
            ["input_tokens"] = InputTokens,
            ["output_tokens"] = OutputTokens,
            ["request_throughput"] = RequestThroughput,
            ["output_throughput"] = OutputThroughput,
            ["total_token_throughput"] = TotalTokenThroughput,
            ["ttft"] = L(Ttft),
            ["tpot"] = L(Tpot),
            ["itl"] = L(Itl),
            ["e2el"] = L(E2e),
        };
    }
}

/// <summary>
/// A load generator for any OpenAI-compatible server, in the manner of vLLM's benchmark_serving: N streaming
/// completions of random token-id prompts with a fixed output length (ignore_eos), C at a time, timing every token.
/// </summary>
public static class ServeBenchmark
{
    public static async Task<ServeBenchmarkResult> RunAsync(ServeBenchmarkOptions o, CancellationToken cancellationToken = default)
    {
        if (o.Concurrency < 1 || o.Requests < 1 || o.InputLength < 1 || o.OutputLength < 1)
        {
            throw new ArgumentException("--concurrency, --requests, --input-len and --output-len must be at least 1");
        }

        using var http = new HttpClient { BaseAddress = o.Url, Timeout = o.Timeout };
        if (!string.IsNullOrEmpty(o.ApiKey))
        {
            http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", o.ApiKey);
        }

        var model = o.Model ?? await FirstModel(http, cancellationToken);
        var random = new Random(o.Seed);
        var prompts = Enumerable.Range(0, o.Requests)
            .Select(_ => Enumerable.Range(0, o.InputLength).Select(_ => random.Next(o.TokenLow, o.TokenHigh)).ToArray())
            .ToArray();
        var ttft = new List<double>();
        var tpot = new List<double>();
        var itl = new List<double>();
        var e2e = new List<double>();
        var errors = new List<string>();
        long inputTokens = 0, outputTokens = 0;
        var completed = 0;
        using var gate = new SemaphoreSlim(o.Concurrency);
        var wall = Stopwatch.StartNew();
        var tasks = prompts.Select(async (prompt, index) =>
        {
            await gate.WaitAsync(cancellationToken);
            try
            {
                var r = await OneRequest(http, model, prompt, o, index, cancellationToken);
                lock (errors)
                {
                    if (r.Error is not null)
                    {
                        errors.Add(r.Error);
                        return;
                    }

                    completed++;
                    inputTokens += r.PromptTokens;
                    outputTokens += r.OutputTokens;
                    ttft.Add(r.Ttft);
                    e2e.Add(r.E2e);
                    itl.AddRange(r.Itl);
                    if (r.OutputTokens > 1)
                    {
                        tpot.Add((r.E2e - r.Ttft) / (r.OutputTokens - 1));
                    }
                }
            }
            finally
            {
                gate.Release();
            }
        }).ToArray();
        await Task.WhenAll(tasks);
        wall.Stop();
        return new ServeBenchmarkResult(completed, errors.Count, wall.Elapsed.TotalSeconds, inputTokens, outputTokens,
            LatencyStats.Of(ttft), LatencyStats.Of(tpot), LatencyStats.Of(itl), LatencyStats.Of(e2e), errors);
    }

    private static async Task<string> FirstModel(HttpClient http, CancellationToken cancellationToken)
    {
        using var response = await http.GetAsync("v1/models", cancellationToken);
        response.EnsureSuccessStatusCode();
        var body = JsonNode.Parse(await response.Content.ReadAsStringAsync(cancellationToken));
        return body?["data"]?[0]?["id"]?.GetValue<string>() ?? throw new InvalidOperationException("the server lists no model; pass --model");
    }

    private sealed record Outcome(string? Error, int PromptTokens, int OutputTokens, double Ttft, double E2e, List<double> Itl);

    private static async Task<Outcome> OneRequest(HttpClient http, string model, int[] prompt, ServeBenchmarkOptions o, int index, CancellationToken cancellationToken)
    {
        var body = new JsonObject
        {
            ["model"] = model,
            ["prompt"] = new JsonArray([.. prompt.Select(i => (JsonNode)i)]),
            ["max_tokens"] = o.OutputLength,
            ["temperature"] = o.Temperature,
            ["ignore_eos"] = true,
            ["stream"] = true,
            ["stream_options"] = new JsonObject { ["include_usage"] = true },
        };
        if (o.Temperature > 0)
        {
            // Sampled requests (the server chooses these tokens by drawing, not by argmax): the filters as given.
            body["top_p"] = o.TopP;
            if (o.TopK > 0)
            {
                body["top_k"] = o.TopK;
            }

            if (o.MinP > 0)
            {
                body["min_p"] = o.MinP;
            }

            if (o.SamplingSeed is { } seed)
            {
                body["seed"] = seed + index;
            }
        }

        var start = Stopwatch.GetTimestamp();
        try
        {
            using var request = new HttpRequestMessage(HttpMethod.Post, "v1/completions")
            {
                Content = new StringContent(body.ToJsonString(), Encoding.UTF8, "application/json"),
            };
            using var response = await http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, cancellationToken);
            if (!response.IsSuccessStatusCode)
            {
                return new Outcome($"HTTP {(int)response.StatusCode}: {await response.Content.ReadAsStringAsync(cancellationToken)}", 0, 0, 0, 0, []);
            }

            using var reader = new StreamReader(await response.Content.ReadAsStreamAsync(cancellationToken));
            double? first = null;
            var last = start;
            var itl = new List<double>();
            var chunks = 0;
            int? promptTokens = null, completionTokens = null;
            while (await reader.ReadLineAsync(cancellationToken) is { } line)
            {
                if (!line.StartsWith("data: ", StringComparison.Ordinal))
                {
                    continue;
                }

                var data = line[6..];
                if (data == "[DONE]")
                {
                    break;
                }

                var json = JsonNode.Parse(data);
                if (json?["error"] is { } error)
                {
                    return new Outcome(error.ToJsonString(), 0, 0, 0, 0, []);
                }

                if (json?["usage"] is JsonObject usage)
                {
                    promptTokens = usage["prompt_tokens"]?.GetValue<int>();
                    completionTokens = usage["completion_tokens"]?.GetValue<int>();
                }

                if (json?["choices"] is JsonArray { Count: > 0 })
                {
                    var now = Stopwatch.GetTimestamp();
                    if (first is null)
                    {
                        first = Stopwatch.GetElapsedTime(start, now).TotalSeconds;
                    }
                    else
                    {
                        itl.Add(Stopwatch.GetElapsedTime(last, now).TotalSeconds);
                    }

                    last = now;
                    chunks++;
                }
            }

            var e2e = Stopwatch.GetElapsedTime(start).TotalSeconds;
            return new Outcome(null, promptTokens ?? prompt.Length, completionTokens ?? chunks, first ?? e2e, e2e, itl);
        }
        catch (HttpRequestException e)
        {
            return new Outcome(e.Message, 0, 0, 0, 0, []);
        }
        catch (JsonException e)
        {
            return new Outcome("malformed stream: " + e.Message, 0, 0, 0, 0, []);
        }
    }
}
