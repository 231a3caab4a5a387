using Enclave.Engine.Backends;
using Enclave.Engine.Generation;

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

    /// <summary>When set, /v1, /tokenize and /detokenize need <c>Authorization: Bearer KEY</c>.</summary>
    public string? ApiKey { get; set; }

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
}
