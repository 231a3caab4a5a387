using System.Diagnostics.Metrics;
using Enclave.Engine.Cuda.Monitoring;

namespace Enclave.Server.Hosting;

/// <summary>
/// The server's instruments, on System.Diagnostics.Metrics, exported in Prometheus format by
/// <see cref="PrometheusExporter"/>. Names follow vLLM's (so its Grafana dashboards work); what vLLM lacks is named enclave_*. Gauges and
/// engine counters are observed from each loaded model's engine at scrape time; per-request latencies are recorded
/// by the endpoints.
/// </summary>
public sealed class ServerMetrics : IDisposable
{
    private static readonly double[] LatencyBuckets = [0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10, 20, 40, 80, 160, 640, 2560];
    private static readonly double[] TokenBuckets = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000, 100000];

    private readonly Meter meter;
    private readonly Counter<long> success;
    private readonly Counter<long> aborted;
    private readonly Counter<long> rejected;
    private readonly Counter<long> httpRequests;
    private readonly Histogram<double> timeToFirstToken;
    private readonly Histogram<double> interToken;
    private readonly Histogram<double> timePerOutputToken;
    private readonly Histogram<double> endToEnd;
    private readonly Histogram<double> promptTokens;
    private readonly Histogram<double> generationTokens;

    public ServerMetrics(ModelCatalog catalog, IGpuSampleSource? gpus = null)
    {
        // One meter per server instance, so several servers in one process (tests) never mix their numbers.
        MeterName = "Enclave.Server." + Guid.NewGuid().ToString("N")[..12];
        meter = new Meter(MeterName);
        IEnumerable<Measurement<T>> PerModel<T>(Func<Enclave.Engine.Generation.EngineStats, T> read)
            where T : struct
        {
            foreach (var entry in catalog.Entries)
            {
                if (entry.Model is { } m)
                {
                    yield return new Measurement<T>(read(m.Model.Engine.Stats), new KeyValuePair<string, object?>("model_name", entry.Name));
                }
            }
        }

        meter.CreateObservableGauge("vllm:num_requests_running", () => PerModel(s => s.Running), description: "Requests in the running batch.");
        meter.CreateObservableGauge("vllm:num_requests_waiting", () => PerModel(s => s.Waiting), description: "Requests waiting to be scheduled.");
        meter.CreateObservableGauge("vllm:kv_cache_usage_perc", () => PerModel(s => s.KvCacheUsage), description: "KV-cache usage: 1 means every block is referenced.");
        meter.CreateObservableCounter("vllm:prompt_tokens_total", () => PerModel(s => s.PromptTokensTotal), description: "Prompt tokens prefilled.");
        meter.CreateObservableCounter("vllm:generation_tokens_total", () => PerModel(s => s.GenerationTokensTotal), description: "Tokens generated.");
        meter.CreateObservableCounter("vllm:num_preemptions_total", () => PerModel(s => s.Preemptions), description: "Sequences preempted (freed and recomputed later).");
        meter.CreateObservableCounter("vllm:prefix_cache_queries_total", () => PerModel(s => s.PrefixCacheQueries), description: "Prompt tokens looked up in the prefix cache.");
        meter.CreateObservableCounter("vllm:prefix_cache_hits_total", () => PerModel(s => s.PrefixCacheHits), description: "Prompt tokens found in the prefix cache.");
        meter.CreateObservableGauge("enclave_prefix_cache_hit_rate", () => PerModel(s => s.PrefixCacheHitRate), description: "Share of looked-up prompt tokens found in the prefix cache since start.");
        meter.CreateObservableGauge("enclave_kv_cache_blocks_used", () => PerModel(s => s.UsedBlocks), description: "KV-cache blocks referenced by requests.");
        meter.CreateObservableGauge("enclave_kv_cache_blocks_total", () => PerModel(s => s.TotalBlocks), description: "KV-cache blocks in the pool.");
        meter.CreateObservableCounter("enclave_engine_steps_total", () => PerModel(s => s.Steps), description: "Engine steps (forward passes) run.");
        meter.CreateObservableCounter("enclave_engine_step_host_seconds_total", () => PerModel(s => s.StepHostSeconds), description: "Engine step time outside the model (scheduling, sampling, streaming), when the device waits.");
        meter.CreateObservableCounter("enclave_engine_step_device_seconds_total", () => PerModel(s => s.StepDeviceSeconds), description: "Engine step time in the model's forward pass and reading back its results.");
        meter.CreateObservableGauge("enclave_model_ready", () => catalog.Entries.Select(e => new Measurement<int>(e.Model is null ? 0 : 1, new KeyValuePair<string, object?>("model_name", e.Name))), description: "1 once the model is loaded.");

        Gpus = GpuMetrics.TryRegister(meter, gpus);
        success = meter.CreateCounter<long>("vllm:request_success_total", description: "Finished requests by finish reason.");
        aborted = meter.CreateCounter<long>("enclave_requests_aborted_total", description: "Requests cancelled before they finished (client disconnect).");
        rejected = meter.CreateCounter<long>("enclave_requests_rejected_total", description: "Requests refused, by HTTP status.");
        httpRequests = meter.CreateCounter<long>("enclave_http_requests_total", description: "API responses by route and status code (probes and /metrics excluded): the base of availability and error-rate alerts.");
        timeToFirstToken = Histogram("vllm:time_to_first_token_seconds", "Time to the first generated token.", LatencyBuckets);
        interToken = Histogram("vllm:inter_token_latency_seconds", "Time between consecutive generated tokens.", LatencyBuckets);
        timePerOutputToken = Histogram("vllm:time_per_output_token_seconds", "Mean time per output token after the first, per request.", LatencyBuckets);
        endToEnd = Histogram("vllm:e2e_request_latency_seconds", "Request latency from arrival to the last token.", LatencyBuckets);
        promptTokens = Histogram("vllm:request_prompt_tokens", "Prompt tokens per request.", TokenBuckets);
        generationTokens = Histogram("vllm:request_generation_tokens", "Generated tokens per request.", TokenBuckets);
    }

    public string MeterName { get; }

    /// <summary>The per-GPU instruments; null on a host without a GPU to read (no enclave_gpu_* series then).</summary>
    public GpuMetrics? Gpus { get; }

    public Meter Meter => meter;

    private Histogram<double> Histogram(string name, string description, double[] buckets) =>
        meter.CreateHistogram(name, unit: null, description: description, tags: null,
            advice: new InstrumentAdvice<double> { HistogramBucketBoundaries = buckets });

    private static KeyValuePair<string, object?> Model(string model) => new("model_name", model);

    public void FirstToken(string model, double seconds) => timeToFirstToken.Record(seconds, Model(model));

    public void InterToken(string model, double seconds) => interToken.Record(seconds, Model(model));

    /// <summary>Records a request that ran to its end.</summary>
    public void Finished(string model, string finishReason, double seconds, int prompt, int generated, double? firstTokenSeconds)
    {
        success.Add(1, Model(model), new KeyValuePair<string, object?>("finished_reason", finishReason));
        endToEnd.Record(seconds, Model(model));
        promptTokens.Record(prompt, Model(model));
        generationTokens.Record(generated, Model(model));
        if (generated > 1 && firstTokenSeconds is { } first)
        {
            timePerOutputToken.Record((seconds - first) / (generated - 1), Model(model));
        }
    }

    public void Aborted(string model) => aborted.Add(1, Model(model));

    /// <summary>Counts one API response; <paramref name="route"/> is the endpoint's route pattern, so its cardinality is bounded.</summary>
    public void Responded(string route, int status) =>
        httpRequests.Add(1, new KeyValuePair<string, object?>("route", route), new KeyValuePair<string, object?>("code", status));

    public void Rejected(int status) => rejected.Add(1, new KeyValuePair<string, object?>("status", status));

    public void Dispose() => meter.Dispose();
}
