using Enclave.Engine.Backends;
using Enclave.Engine.Backends.Reference;

namespace Enclave.Server.Tests.Support;

/// <summary>
/// The reference backend with a gate in front of every step: while closed, the engine loop waits inside its step,
/// so tests can hold requests in a known state (running, waiting) without racing the engine.
/// </summary>
public sealed class GatedBackend() : DelegatingBackend(new ReferenceBackend())
{
    private readonly ManualResetEventSlim open = new(true);
    private readonly SemaphoreSlim entered = new(0);

    public override string Name => "gated " + Inner.Name;

    public void Close() => open.Reset();

    public void Open() => open.Set();

    /// <summary>Waits until the engine has entered a step (and, if the gate is closed, is held there).</summary>
    public Task<bool> WaitForStepAsync(TimeSpan timeout) => entered.WaitAsync(timeout);

    public override void PrepareStep(ForwardBatch batch)
    {
        entered.Release();
        open.Wait(TimeSpan.FromMinutes(2));
        Inner.PrepareStep(batch);
    }

    protected override void Dispose(bool disposing)
    {
        if (disposing)
        {
            open.Set();
            base.Dispose(disposing);
            open.Dispose();
            entered.Dispose();
        }
    }
}
