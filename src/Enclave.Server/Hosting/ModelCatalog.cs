using Enclave.Engine.Backends;
using Enclave.Engine.Backends.Cpu;
using Enclave.Engine.Backends.Reference;
using Enclave.Engine.Embeddings;
using Enclave.Engine.Generation;
using Enclave.Server.Api;
using Microsoft.Extensions.Logging;

namespace Enclave.Server.Hosting;

/// <summary>One configured model: loading in the background, then ready (or failed).</summary>
public sealed class ModelEntry
{
    private readonly TaskCompletionSource<ServedModel> loaded = new(TaskCreationOptions.RunContinuationsAsynchronously);

    public ModelEntry(ModelSpec spec) => Spec = spec;

    public ModelSpec Spec { get; }

    public string Name => Spec.Name;

    public ServedModel? Model { get; private set; }

    public Exception? Error { get; private set; }

    public DateTimeOffset Created { get; } = DateTimeOffset.UtcNow;

    public Task<ServedModel> Loaded => loaded.Task;

    internal void SetLoaded(ServedModel model)
    {
        Model = model;
        loaded.TrySetResult(model);
    }

    internal void SetFailed(Exception e)
    {
        Error = e;
        loaded.TrySetException(e);
    }
}

/// <summary>What an encoder model is served for.</summary>
public enum EncoderKind
{
    Embedding,
    Rerank,
}

/// <summary>One configured embedding or rerank model: loading in the background, then ready (or failed).</summary>
public sealed class EncoderEntry(ModelSpec spec, EncoderKind kind)
{
    public ModelSpec Spec { get; } = spec;

    public EncoderKind Kind { get; } = kind;

    public string Name => Spec.Name;

    public EncoderModel? Embedder { get; internal set; }

    public RerankerModel? Reranker { get; internal set; }

    public bool Ready => Embedder is not null || Reranker is not null;

    public Exception? Error { get; internal set; }

    public DateTimeOffset Created { get; } = DateTimeOffset.UtcNow;
}

/// <summary>The models this server serves, by name. Models load on a background thread; requests get 503 until then.</summary>
public sealed class ModelCatalog : IAsyncDisposable
{
    private readonly Dictionary<string, ModelEntry> entries = new(StringComparer.Ordinal);
    private readonly Dictionary<string, EncoderEntry> encoders = new(StringComparer.Ordinal);
    private Task? loadAll;
    private readonly ServerOptions options;
    private readonly ILogger logger;

    public ModelCatalog(ServerOptions options, ILogger logger)
    {
        this.options = options;
        this.logger = logger;
        foreach (var spec in options.Models)
        {
            if (!entries.TryAdd(spec.Name, new ModelEntry(spec)))
            {
                throw new ArgumentException($"--model {spec.Name}={spec.Directory}: the name {spec.Name} is used twice", nameof(options));
            }
        }

        foreach (var (specs, kind, flag) in new[] { (options.EmbeddingModels, EncoderKind.Embedding, "--embedding-model"), (options.RerankModels, EncoderKind.Rerank, "--rerank-model") })
        {
            foreach (var spec in specs)
            {
                if (entries.ContainsKey(spec.Name) || !encoders.TryAdd(spec.Name, new EncoderEntry(spec, kind)))
                {
                    throw new ArgumentException($"{flag} {spec.Name}={spec.Directory}: the name {spec.Name} is used twice", nameof(options));
                }
            }
        }
    }

    public IReadOnlyCollection<EncoderEntry> Encoders => encoders.Values;

    public IReadOnlyCollection<ModelEntry> Entries => entries.Values;

    public bool AllReady => entries.Values.All(e => e.Model is not null) && encoders.Values.All(e => e.Ready);

    /// <summary>Loads every model, one after another, off the request path.</summary>
    public Task LoadAllAsync() => loadAll = Task.Run(() =>
    {
        var left = entries.Count;
        foreach (var entry in entries.Values)
        {
            try
            {
                // Models loaded onto one GPU split what --gpu-memory-utilization leaves for KV caches evenly.
                entry.SetLoaded(Load(entry.Spec, 1.0 / left--));
                logger.LogInformation("model {Model} loaded from {Directory}", entry.Name, entry.Spec.Directory);
            }
            catch (Exception e)
            {
                logger.LogError(e, "model {Model} failed to load from {Directory}", entry.Name, entry.Spec.Directory);
                entry.SetFailed(e);
            }
        }

        foreach (var entry in encoders.Values)
        {
            try
            {
                LoadEncoder(entry);
                logger.LogInformation("{Kind} model {Model} loaded from {Directory}", entry.Kind, entry.Name, entry.Spec.Directory);
            }
            catch (Exception e)
            {
                logger.LogError(e, "{Kind} model {Model} failed to load from {Directory}", entry.Kind, entry.Name, entry.Spec.Directory);
                entry.Error = e;
            }
        }
    });

    /// <summary>
    /// Encoders run on the CPU (or the reference backend): the CUDA backend has no encoder kernels yet, so a GPU
    /// --device serves generative models on the GPU and embedding/rerank models on the CPU.
    /// </summary>
    private void LoadEncoder(EncoderEntry entry)
    {
        var spec = entry.Spec;
        if (!Directory.Exists(spec.Directory))
        {
            throw new DirectoryNotFoundException($"{(entry.Kind == EncoderKind.Embedding ? "--embedding-model" : "--rerank-model")} {spec.Directory}: no such directory");
        }

        var backend = options.BackendFactory?.Invoke(spec)
                      ?? (options.Device == "reference" ? new ReferenceBackend() : new CpuBackend(options.Threads));
        try
        {
            if (entry.Kind == EncoderKind.Embedding)
            {
                entry.Embedder = EncoderModel.Load(spec.Directory, backend, options.Encoders, spec.Name);
            }
            else
            {
                entry.Reranker = RerankerModel.Load(spec.Directory, backend, options.Encoders, spec.Name);
            }
        }
        catch
        {
            backend.Dispose();
            throw;
        }
    }

    /// <summary>The embedding model a request names (or the only one), with errors in the API's terms.</summary>
    public EncoderModel ResolveEmbedding(string? name) => ResolveEncoder(name, EncoderKind.Embedding).Embedder!;

    /// <summary>The rerank model a request names (or the only one), with errors in the API's terms.</summary>
    public RerankerModel ResolveReranker(string? name) => ResolveEncoder(name, EncoderKind.Rerank).Reranker!;

    private EncoderEntry ResolveEncoder(string? name, EncoderKind kind)
    {
        var what = kind == EncoderKind.Embedding ? "embeddings" : "rerank";
        EncoderEntry? entry;
        if (name is null)
        {
            var candidates = encoders.Values.Where(e => e.Kind == kind).ToArray();
            if (candidates.Length != 1)
            {
                throw ApiException.BadParam("model", candidates.Length == 0
                    ? $"no {what} model is served (start the server with {(kind == EncoderKind.Embedding ? "--embedding-model" : "--rerank-model")})"
                    : $"'model' is required when more than one {what} model is served");
            }

            entry = candidates[0];
        }
        else if (!encoders.TryGetValue(name, out entry))
        {
            if (entries.ContainsKey(name))
            {
                throw new ApiException(400, $"model {name} does not support {what}: it is a generative model", "model", "model_not_supported");
            }

            throw new ApiException(404, $"The model `{name}` does not exist.", "model", "model_not_found");
        }

        if (entry.Kind != kind)
        {
            throw new ApiException(400, $"model {entry.Name} does not support {what}: it is {(entry.Kind == EncoderKind.Embedding ? "an embedding" : "a rerank")} model", "model", "model_not_supported");
        }

        if (entry.Ready)
        {
            return entry;
        }

        if (entry.Error is { } error)
        {
            throw new ApiException(503, $"model {entry.Name} failed to load: {error.Message}", "model", "model_load_failed");
        }

        throw new ApiException(503, $"model {entry.Name} is still loading; retry shortly", "model", "model_loading") { RetryAfterSeconds = 5 };
    }

    private ServedModel Load(ModelSpec spec, double gpuMemoryShare)
    {
        if (!Directory.Exists(spec.Directory) && !Enclave.Engine.Formats.Gguf.GgufModel.IsGgufPath(spec.Directory))
        {
            throw new DirectoryNotFoundException($"--model {spec.Directory}: no such directory or .gguf file");
        }

        var backend = options.BackendFactory?.Invoke(spec) ?? CreateBackend(options.Device, options.Threads, options.EnforceEager);
        try
        {
            var open = options.WeightSourceFactory;
            var lm = LanguageModel.Load(spec.Directory, backend, options.Engine.WithGpuMemoryShare(gpuMemoryShare), logger, spec.Name, ownsBackend: true, dummyWeights: options.DummyWeights,
                openWeights: open is null ? null : d => open(d) ?? Enclave.Engine.Formats.SafetensorsCheckpoint.Open(d));
            return new ServedModel(lm);
        }
        catch
        {
            backend.Dispose();
            throw;
        }
    }

    public static IBackend CreateBackend(string device, int threads, bool enforceEager = false)
    {
        try
        {
            return Enclave.Engine.Cuda.DeviceSelection.Create(device, threads, Console.Error.WriteLine, enforceEager);
        }
        catch (Enclave.Engine.Cuda.DeviceSelectionException e)
        {
            throw new ArgumentException(e.Message, nameof(device), e);
        }
    }

    /// <summary>
    /// The model a request names: 404 when unknown, 503 (with Retry-After) while it loads or when it failed. With one
    /// model served, an absent name means that model (as vLLM does).
    /// </summary>
    public ServedModel Resolve(string? name)
    {
        ModelEntry? entry;
        if (name is null)
        {
            if (entries.Count != 1)
            {
                throw ApiException.BadParam("model", entries.Count == 0
                    ? "no generative model is served (this server has only embedding or rerank models)"
                    : "'model' is required when more than one model is served");
            }

            entry = entries.Values.First();
        }
        else if (!entries.TryGetValue(name, out entry))
        {
            if (encoders.TryGetValue(name, out var encoder))
            {
                throw new ApiException(400, $"model {name} is {(encoder.Kind == EncoderKind.Embedding ? "an embedding" : "a rerank")} model: it does not generate text or tokenize here", "model", "model_not_supported");
            }

            throw new ApiException(404, $"The model `{name}` does not exist.", "model", "model_not_found");
        }

        if (entry.Model is { } model)
        {
            return model;
        }

        if (entry.Error is { } error)
        {
            throw new ApiException(503, $"model {entry.Name} failed to load: {error.Message}", "model", "model_load_failed");
        }

        throw new ApiException(503, $"model {entry.Name} is still loading; retry shortly", "model", "model_loading") { RetryAfterSeconds = 5 };
    }

    public async ValueTask DisposeAsync()
    {
        foreach (var entry in entries.Values)
        {
            try
            {
                await entry.Loaded.ConfigureAwait(false);
            }
            catch (Exception)
            {
                // nothing to dispose for a failed load
            }

            if (entry.Model is { } m)
            {
                await m.Model.DisposeAsync().ConfigureAwait(false);
            }
        }

        if (loadAll is not null)
        {
            await loadAll.ConfigureAwait(false); // never faults: each load records its own error
        }

        foreach (var entry in encoders.Values)
        {
            var backend = entry.Embedder?.Backend ?? entry.Reranker?.Backend;
            entry.Embedder?.Dispose();
            entry.Reranker?.Dispose();
            backend?.Dispose();
        }
    }
}

/// <summary>A loaded model with what the API layer derives from it once.</summary>
public sealed class ServedModel
{
    public ServedModel(LanguageModel model)
    {
        Model = model;
        ThinkStartId = model.Reasoning?.ThinkStartId;
        ThinkEndId = model.Reasoning?.ThinkEndId;
    }

    public LanguageModel Model { get; }

    public string Name => Model.Name;

    /// <summary>Token ids of &lt;think&gt; and &lt;/think&gt; when the chat template uses them (reasoning models).</summary>
    public int? ThinkStartId { get; }

    public int? ThinkEndId { get; }

    public bool HasReasoning => ThinkStartId is not null && ThinkEndId is not null;
}
