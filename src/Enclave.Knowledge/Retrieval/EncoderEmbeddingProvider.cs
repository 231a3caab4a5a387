using System.Collections.Concurrent;
using Enclave.Engine.Backends.Cpu;
using Enclave.Engine.Embeddings;
using Microsoft.Extensions.AI;

namespace Enclave.Knowledge.Retrieval;

/// <summary>
/// Serves collections' embedding models with the engine's encoders (BertModel, XLMRobertaModel) on the CPU: each
/// model directory is loaded once, on first use, and shared by every collection and request that names it.
/// </summary>
public sealed class EncoderEmbeddingProvider(EncoderOptions? options = null) : IEmbeddingModelProvider, IDisposable
{
    private readonly ConcurrentDictionary<string, Lazy<EncoderModel>> models = new(StringComparer.Ordinal);

    public IEmbeddingGenerator<string, Embedding<float>>? Get(string modelDirectory)
    {
        var directory = Path.GetFullPath(modelDirectory);
        if (!Directory.Exists(directory))
        {
            return null;
        }

        return models.GetOrAdd(directory, d => new Lazy<EncoderModel>(() => EncoderModel.Load(d, new CpuBackend(), options))).Value;
    }

    public void Dispose()
    {
        foreach (var model in models.Values)
        {
            if (model.IsValueCreated)
            {
                model.Value.Dispose();
            }
        }
    }
}
