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

    public string Host { get; set; } = "127.0.0.1";

    /// <summary>0 picks a free port (tests).</summary>
    public int Port { get; set; } = 8000;

    /// <summary>
    /// When set, /v1, /tokenize and /detokenize need <c>Authorization: Bearer KEY</c> and the gateway is not used
    /// (one static key, no users, roles or audit trail).
    /// </summary>
    public string? ApiKey { get; set; }

    /// <summary>Serve without any authentication (no gateway). Refused unless <see cref="Host"/> is a loopback address.</summary>
    public bool NoAuth { get; set; }

    /// <summary>The gateway's store: a PostgreSQL or SQLite connection string; null means SQLite under <see cref="Home"/>.</summary>
    public string? Database { get; set; }

    /// <summary>The gateway's data directory; null means ENCLAVE_HOME, else ~/.enclave.</summary>
    public string? Home { get; set; }

    /// <summary>Further gateway settings, applied after the <c>Enclave:Gateway</c> configuration section.</summary>
    public Action<GatewayOptions>? ConfigureGateway { get; set; }

    /// <summary>True when requests go through the gateway: neither a static key nor <see cref="NoAuth"/>.</summary>
    public bool UsesGateway => string.IsNullOrEmpty(ApiKey) && !NoAuth;

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

        if (NoAuth && !IsLoopback(Host))
        {
            throw new ArgumentException($"--no-auth is only allowed when listening on a loopback host (127.0.0.1, ::1 or localhost), not '{Host}': without authentication anyone who can reach the port could use the models");
        }
    }

    /// <summary>cpu or reference.</summary>
    public string Device { get; set; } = "cpu";

    public int Threads { get; set; }

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

    /// <summary>Knowledge base settings; its directory defaults to <c>HOME/knowledge</c>.</summary>
    public KnowledgeOptions Knowledge { get; set; } = new();

    /// <summary>Creates and opens the collections' vector indexes; null leaves dense retrieval unavailable.</summary>
    public IVectorIndexFactory? VectorIndexFactory { get; set; }

    /// <summary>Embedding generators for collections' embedding models; null leaves dense retrieval unavailable.</summary>
    public IEmbeddingModelProvider? EmbeddingModels { get; set; }

    /// <summary>Cross-encoder for <c>"rerank": true</c> searches; null refuses them with 503.</summary>
    public IReranker? Reranker { get; set; }
}
