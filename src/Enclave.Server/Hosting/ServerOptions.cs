using Enclave.Engine.Backends;
using Enclave.Engine.Generation;
using Enclave.Gateway.Hosting;
using Enclave.Knowledge;
using Enclave.Knowledge.Retrieval;
using Enclave.Knowledge.Vectors;

namespace Enclave.Server.Hosting;

/// <summary>A model to serve: the name clients send as "model" and its Hugging Face directory.</summary>
public sealed record ModelSpec(string Name, string Directory)
{
    /// <summary>Parses <c>[NAME=]DIR</c>; the name defaults to the folder name.</summary>
    public static ModelSpec Parse(string value)
    {
        var eq = value.IndexOf('=');
        if (eq > 0 && !Path.Exists(value))
        {
            return new ModelSpec(value[..eq], value[(eq + 1)..]);
        }

        return new ModelSpec(Path.GetFileName(Path.TrimEndingDirectorySeparator(Path.GetFullPath(value))), value);
    }
}

/// <summary>Everything <c>enclave serve</c> is configured with.</summary>
public sealed class ServerOptions
{
    public List<ModelSpec> Models { get; } = [];

    /// <summary>Embedding models (BertModel, XLMRobertaModel) served at /v1/embeddings.</summary>
    public List<ModelSpec> EmbeddingModels { get; } = [];

    /// <summary>Cross-encoder rerankers (XLMRobertaForSequenceClassification) served at /v1/rerank.</summary>
    public List<ModelSpec> RerankModels { get; } = [];

    /// <summary>Batch limits of the embedding and rerank models.</summary>
    public Enclave.Engine.Embeddings.EncoderOptions Encoders { get; set; } = new();

    public string Host { get; set; } = "127.0.0.1";

    /// <summary>0 picks a free port (tests).</summary>
    public int Port { get; set; } = 8000;

    /// <summary>
    /// When set, /v1, /tokenize and /detokenize need <c>Authorization: Bearer KEY</c> and the gateway is not used
    /// (one static key, no users, roles or audit trail).
    /// </summary>
    public string? ApiKey { get; set; }

    /// <summary>
    /// Serve without authentication: every call runs as the <c>anonymous</c> principal and is still
    /// audited. Refused unless <see cref="Host"/> is a loopback address.
    /// </summary>
    public bool NoAuth { get; set; }

    /// <summary>Redis connection string for the gateway's shared limiter and cache invalidation (several replicas).</summary>
    public string? Redis { get; set; }

    /// <summary>The gateway's store: a PostgreSQL or SQLite connection string; null means SQLite under <see cref="Home"/>.</summary>
    public string? Database { get; set; }

    /// <summary>The gateway's data directory; null means ENCLAVE_HOME, else ~/.enclave.</summary>
    public string? Home { get; set; }

    /// <summary>Further gateway settings, applied after the <c>Enclave:Gateway</c> configuration section.</summary>
    public Action<GatewayOptions>? ConfigureGateway { get; set; }

    /// <summary>True when requests go through the gateway (always, unless one static key is configured).</summary>
    public bool UsesGateway => string.IsNullOrEmpty(ApiKey);

    /// <summary>Whether <paramref name="host"/> names a loopback address (127.0.0.0/8, ::1 or localhost).</summary>
    public static bool IsLoopback(string host) =>
        string.Equals(host, "localhost", StringComparison.OrdinalIgnoreCase)
        || (System.Net.IPAddress.TryParse(host, out var ip) && System.Net.IPAddress.IsLoopback(ip));

    /// <summary>Rejects combinations that would expose the server unprotected or are ambiguous.</summary>
    public void Validate()
    {
        if (NoAuth && !string.IsNullOrEmpty(ApiKey))
        {
            throw new ArgumentException("--no-auth and --api-key (or ENCLAVE_API_KEY) exclude each other: choose one");
        }

        if (Upstream is { } upstream)
        {
            if (Models.Count > 0)
            {
                throw new ArgumentException("--upstream and --model exclude each other: a gateway-only server forwards to the engine that serves the models");
            }

            if (!upstream.IsAbsoluteUri || upstream.Scheme is not ("http" or "https"))
            {
                throw new ArgumentException($"--upstream {upstream}: expected the engine's http:// or https:// base URL, e.g. http://enclave-engine:8000");
            }

            if (NoAuth || !UsesGateway)
            {
                throw new ArgumentException("--upstream runs the gateway in front of an engine: it cannot be combined with --no-auth or --api-key");
            }
        }

        if (OtlpProtocol is not ("grpc" or "http/protobuf"))
        {
            throw new ArgumentException($"--otlp-protocol {OtlpProtocol}: expected grpc or http/protobuf");
        }

        if (OtlpEndpoint is { } otlp && !(otlp.IsAbsoluteUri && otlp.Scheme is "http" or "https"))
        {
            throw new ArgumentException($"--otlp-endpoint {otlp}: expected an absolute http:// or https:// URL such as http://otel-collector:4317");
        }

        if (NoAuth && !IsLoopback(Host))
        {
            throw new ArgumentException($"--no-auth is only allowed when listening on a loopback host (127.0.0.1, ::1 or localhost), not '{Host}': without authentication anyone who can reach the port could use the models");
        }
    }

    /// <summary>cpu or reference.</summary>
    public string Device { get; set; } = "cpu";

    public int Threads { get; set; }

    /// <summary>No CUDA graphs for decode steps (--enforce-eager): every op is launched from the host every step.</summary>
    public bool EnforceEager { get; set; }

    public EngineOptions Engine { get; set; } = new();

    /// <summary>Largest accepted request body; larger ones get 413.</summary>
    public long MaxRequestBodyBytes { get; set; } = 8L << 20;

    /// <summary>Largest n (choices per request).</summary>
    public int MaxN { get; set; } = 64;

    /// <summary>Log prompt and completion text in the request log (off by default: prompts may be confidential).</summary>
    public bool LogPrompts { get; set; }

    /// <summary>Write logs as JSON lines (the default) rather than plain text.</summary>
    public bool JsonLogs { get; set; } = true;

    /// <summary>Creates the backend for a model; null uses <see cref="Device"/>.</summary>
    public Func<ModelSpec, IBackend>? BackendFactory { get; set; }

    /// <summary>Build random weights from config.json instead of loading safetensors (benchmarks).</summary>
    public bool DummyWeights { get; set; }

    /// <summary>
    /// Opens a model directory's weights when the safetensors reader cannot (an encrypted checkpoint); returning null
    /// falls back to it.
    /// </summary>
    public Func<string, Enclave.Engine.Formats.IWeightSource?>? WeightSourceFactory { get; set; }

    /// <summary>
    /// Gateway-only mode: no model is loaded here; /v1, /tokenize and /detokenize pass the gateway (keys, roles,
    /// limits, audit) and are forwarded to this engine server (an <c>enclave serve --api-key</c> elsewhere).
    /// </summary>
    public Uri? Upstream { get; set; }

    /// <summary>The upstream engine's static key, sent instead of the caller's gateway key (which never leaves the gateway).</summary>
    public string? UpstreamApiKey { get; set; }

    /// <summary>
    /// Where GPU readings for /metrics come from; null probes NVML (no GPU series on a host without one). Tests pass
    /// their own readings.
    /// </summary>
    public Func<Enclave.Engine.Cuda.Monitoring.IGpuSampleSource?>? GpuSamples { get; set; }

    /// <summary>
    /// OTLP collector for request traces (e.g. http://otel-collector:4317); null reads <c>Enclave:Telemetry:OtlpEndpoint</c>
    /// from configuration, then <c>OTEL_EXPORTER_OTLP_ENDPOINT</c>. Without any, no trace is recorded.
    /// </summary>
    public Uri? OtlpEndpoint { get; set; }

    /// <summary>grpc (default, port 4317) or http/protobuf (port 4318, path /v1/traces).</summary>
    public string OtlpProtocol { get; set; } = "grpc";

    /// <summary>Further trace pipeline set-up (tests add an in-memory exporter); when set, tracing is on even without an endpoint.</summary>
    public Action<OpenTelemetry.Trace.TracerProviderBuilder>? ConfigureTracing { get; set; }

    /// <summary>Knowledge base settings; its directory defaults to <c>HOME/knowledge</c>.</summary>
    public KnowledgeOptions Knowledge { get; set; } = new();

    /// <summary>Creates and opens the collections' vector indexes; null leaves dense retrieval unavailable.</summary>
    public IVectorIndexFactory? VectorIndexFactory { get; set; }

    /// <summary>Embedding generators for collections' embedding models; null leaves dense retrieval unavailable.</summary>
    public IEmbeddingModelProvider? KnowledgeEmbeddings { get; set; }

    /// <summary>Cross-encoder for <c>"rerank": true</c> searches; null refuses them with 503.</summary>
    public IReranker? KnowledgeReranker { get; set; }
}
