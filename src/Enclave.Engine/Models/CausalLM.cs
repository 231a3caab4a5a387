using Enclave.Engine.Backends;
using Enclave.Engine.KvCache;

namespace Enclave.Engine.Models;

/// <summary>A decoder-only language model bound to a backend: one forward pass per engine step.</summary>
public abstract class CausalLM : IDisposable
{
    protected CausalLM(ModelConfig config, IBackend backend)
    {
        Config = config;
        Backend = backend;
    }

    public ModelConfig Config { get; }

    public IBackend Backend { get; }

    public abstract KvCacheSpec KvCacheSpec { get; }

    /// <summary>Bytes of weights this model reads per forward pass (the decode roofline's numerator).</summary>
    public abstract long WeightBytes { get; }

    /// <summary>
    /// Runs the batch through the model, extending the cache, and writes logits for batch.LogitRows.
    /// logits: [batch.LogitRows.Length, vocab] F32 on the backend; untouched when no row needs logits.
    /// </summary>
    /// <summary>
    /// Whether a decode step's forward pass runs entirely on the backend, with no host decision or upload between the
    /// step's <see cref="IBackend.PrepareStep"/> and its logits, so a backend may record it once and replay it
    /// (<see cref="IDecodeGraphs"/>). False unless an architecture says so.
    /// </summary>
    public virtual bool SupportsDecodeGraphs => false;

    /// <summary>
    /// The largest decode batch whose forward pass stays on the backend where <see cref="SupportsDecodeGraphs"/> holds
    /// (a MoE model routes larger steps on the host); larger decode steps run unrecorded.
    /// </summary>
    public virtual int MaxRecordedDecodeBatch => int.MaxValue;

    public abstract void Forward(ForwardBatch batch, PagedKvCache cache, DeviceTensor logits);

    public void Dispose()
    {
        Dispose(true);
        GC.SuppressFinalize(this);
    }

    protected virtual void Dispose(bool disposing)
    {
    }
}
