using Enclave.Engine.Backends;
using Enclave.Engine.Backends.Cpu;
using static Enclave.Engine.Tests.Backends.CpuBackendOpsTests;

namespace Enclave.Engine.Tests.Backends;

/// <summary>A decode step's ops must not allocate managed memory once warmed up (the GC would stall decoding).</summary>
public sealed class CpuBackendAllocationTests
{
    [Fact]
    public void A_decode_step_allocates_nothing_after_warm_up()
    {
        using var backend = new CpuBackend(2);
        const int Hidden = 64, Heads = 4, KvHeads = 2, HeadDim = 16, Ffn = 96, Vocab = 50, BlockSize = 4;
        var random = new Random(3);
        using var embed = Raw(backend, DType.BF16, RandomWeights(random, DType.BF16, Vocab * Hidden, 1f).Bytes, Vocab, Hidden);
        using var norm = Raw(backend, DType.BF16, RandomWeights(random, DType.BF16, Hidden, 1f).Bytes, Hidden);
        using var wq = Raw(backend, DType.F16, RandomWeights(random, DType.F16, Heads * HeadDim * Hidden, 0.2f).Bytes, Heads * HeadDim, Hidden);
        using var wkv = Raw(backend, DType.F32, RandomWeights(random, DType.F32, KvHeads * HeadDim * Hidden, 0.2f).Bytes, KvHeads * HeadDim, Hidden);
        using var wup = Raw(backend, DType.BF16, RandomWeights(random, DType.BF16, Ffn * Hidden, 0.2f).Bytes, Ffn, Hidden);
        using var x = backend.Allocate(DType.F32, 1, Hidden);
        using var residual = backend.Allocate(DType.F32, 1, Hidden);
        using var h = backend.Allocate(DType.F32, 1, Hidden);
        using var q = backend.Allocate(DType.F32, 1, Heads, HeadDim);
        using var k = backend.Allocate(DType.F32, 1, KvHeads, HeadDim);
        using var v = backend.Allocate(DType.F32, 1, KvHeads, HeadDim);
        using var attention = backend.Allocate(DType.F32, 1, Heads, HeadDim);
        using var gate = backend.Allocate(DType.F32, 1, Ffn);
        using var up = backend.Allocate(DType.F32, 1, Ffn);
        using var logits = backend.Allocate(DType.F32, 1, Hidden);
        using var keyCache = backend.Allocate(DType.F32, 8, BlockSize, KvHeads, HeadDim);
        using var valueCache = backend.Allocate(DType.F32, 8, BlockSize, KvHeads, HeadDim);
        using var q2 = q.Reshape(1, Heads * HeadDim);
        using var k2 = k.Reshape(1, KvHeads * HeadDim);
        using var v2 = v.Reshape(1, KvHeads * HeadDim);
        backend.Upload(new float[Hidden], residual);
        var rope = new RopeSpec(Enumerable.Range(0, HeadDim / 2).Select(i => MathF.Pow(10_000f, -2f * i / HeadDim)).ToArray(), HeadDim, false);
        var batches = Enumerable.Range(0, 20)
            .Select(p => Batch([p % Vocab], [p], [new SequenceSlice(0, 1, p + 1, [0, 1, 2, 3, 4, 5, 6, 7])], slotMapping: [p]))
            .ToArray();

        void Step(ForwardBatch batch)
        {
            backend.PrepareStep(batch);
            backend.Embedding(embed, batch, x);
            backend.AddRmsNorm(residual, x, norm, 1e-6f, h);
            backend.MatMul(h, wq, null, q2);
            backend.MatMul(h, wkv, null, k2);
            backend.MatMul(h, wkv, null, v2);
            backend.Rope(q, batch, rope);
            backend.Rope(k, batch, rope);
            backend.Attention(q, k, v, keyCache, valueCache, batch, 0.25f, attention);
            backend.RmsNorm(h, norm, 1e-6f, x);
            backend.MatMul(x, wup, null, gate);
            backend.MatMul(x, wup, null, up);
            backend.SiluMul(gate, up, gate);
            backend.Add(x, h, x);
            backend.GatherLogitRows(x, batch, logits);
        }

        for (var i = 0; i < 10; i++)
        {
            Step(batches[i]);
        }

        var before = GC.GetAllocatedBytesForCurrentThread();
        for (var i = 10; i < 20; i++)
        {
            Step(batches[i]);
        }

        var allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        Assert.Equal(0, allocated);

        var output = Download(backend, logits);
        Assert.All(output, value => Assert.True(float.IsFinite(value)));
    }
}
