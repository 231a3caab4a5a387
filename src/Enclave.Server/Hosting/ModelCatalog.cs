using Enclave.Engine.Backends;
using Enclave.Engine.Backends.Cpu;
using Enclave.Engine.Backends.Reference;
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

/// <summary>The models this server serves, by name. Models load on a background thread; requests get 503 until then.</summary>
public sealed class ModelCatalog : IAsyncDisposable
{
    private readonly Dictionary<string, ModelEntry> entries = new(StringComparer.Ordinal);
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
    }

    public IReadOnlyCollection<ModelEntry> Entries => entries.Values;

    public bool AllReady => entries.Values.All(e => e.Model is not null);

    /// <summary>Loads every model, one after another, off the request path.</summary>
    public Task LoadAllAsync() => Task.Run(() =>
    {
        foreach (var entry in entries.Values)
        {
            try
            {
                entry.SetLoaded(Load(entry.Spec));
                logger.LogInformation("model {Model} loaded from {Directory}", entry.Name, entry.Spec.Directory);
            }
            catch (Exception e)
            {
                logger.LogError(e, "model {Model} failed to load from {Directory}", entry.Name, entry.Spec.Directory);
                entry.SetFailed(e);
            }
        }
    });

    private ServedModel Load(ModelSpec spec)
    {
        if (!Directory.Exists(spec.Directory) && !Enclave.Engine.Formats.Gguf.GgufModel.IsGgufPath(spec.Directory))
        {
            throw new DirectoryNotFoundException($"--model {spec.Directory}: no such directory or .gguf file");
        }

        var backend = options.BackendFactory?.Invoke(spec) ?? CreateBackend(options.Device, options.Threads);
        try
        {
            var lm = LanguageModel.Load(spec.Directory, backend, options.Engine, logger, spec.Name, ownsBackend: true, dummyWeights: options.DummyWeights);
            return new ServedModel(lm);
        }
        catch
        {
            backend.Dispose();
            throw;
        }
    }

    public static IBackend CreateBackend(string device, int threads)
    {
        try
        {
            return Enclave.Engine.Cuda.DeviceSelection.Create(device, threads, Console.Error.WriteLine);
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
                throw ApiException.BadParam("model", "'model' is required when more than one model is served");
            }

            entry = entries.Values.First();
        }
        else if (!entries.TryGetValue(name, out entry))
        {
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
    }
}

/// <summary>A loaded model with what the API layer derives from it once.</summary>
public sealed class ServedModel
{
    public ServedModel(LanguageModel model)
    {
        Model = model;
        var tokenizer = model.Tokenizer;
        var template = model.Tokenizer.Config.ChatTemplate;
        if (template is not null && template.Contains("<think>", StringComparison.Ordinal)
            && tokenizer.TokenToId("<think>") is { } start && tokenizer.TokenToId("</think>") is { } end)
        {
            ThinkStartId = start;
            ThinkEndId = end;
        }
    }

    public LanguageModel Model { get; }

    public string Name => Model.Name;

    /// <summary>Token ids of &lt;think&gt; and &lt;/think&gt; when the chat template uses them (reasoning models).</summary>
    public int? ThinkStartId { get; }

    public int? ThinkEndId { get; }

    public bool HasReasoning => ThinkStartId is not null && ThinkEndId is not null;
}
