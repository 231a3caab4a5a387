using Enclave.Engine.Backends;
using Enclave.Engine.Backends.Cpu;
using Enclave.Engine.Formats.Gguf;

namespace Enclave.Engine.Tests.Backends;

/// <summary>
/// Block-typed products that share their input (a GGUF model's q/k/v, gate/up) quantise it once: the results must be
/// bit-identical to separate products, on every vector width, with and without AMX, for outputs above and below one
/// AMX row group.
/// </summary>
public sealed class CpuQuantMatMulSharedTests
{
    public static TheoryData<DType, int, int> Cases()
    {
        var data = new TheoryData<DType, int, int>();
        foreach (var width in new[] { 512, 256, 128, 1 }.Where(CpuSimd.IsSupported))
        {
            foreach (var type in new[] { DType.Q8_0, DType.Q5_0, DType.Q4_K, DType.Q5_K, DType.Q6_K })
            {
                data.Add(type, width, 17);
                data.Add(type, width, 3);
            }
        }

        return data;
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void Shared_products_equal_separate_ones(DType type, int width, int tokens)
    {
        var inFeatures = 512;
        int[] outs = [45, 16, 7];
        var random = new Random((int)type + width + tokens);
        using var backend = new CpuBackend(3, width);
        using var x = backend.Allocate(DType.F32, tokens, inFeatures);
        backend.Upload(Enumerable.Range(0, tokens * inFeatures).Select(_ => (float)((random.NextDouble() * 4) - 2)).ToArray(), x);
        var weights = new DeviceTensor[outs.Length];
        var biases = new DeviceTensor?[outs.Length];
        var shared = new DeviceTensor[outs.Length];
        var separate = new DeviceTensor[outs.Length];
        try
        {
            for (var i = 0; i < outs.Length; i++)
            {
                var w = Enumerable.Range(0, outs[i] * inFeatures).Select(_ => (float)(random.NextDouble() - 0.5)).ToArray();
                var blocks = new byte[type.StorageBytes(w.Length)];
                GgmlQuants.Quantize(type, w, blocks);
                weights[i] = backend.Allocate(type, outs[i], inFeatures);
                backend.UploadBytes(blocks, weights[i]);
                if (i != 1)
                {
                    biases[i] = backend.Allocate(DType.F32, outs[i]);
                    backend.Upload(Enumerable.Range(0, outs[i]).Select(_ => (float)random.NextDouble()).ToArray(), biases[i]!);
                }

                shared[i] = backend.Allocate(DType.F32, tokens, outs[i]);
                separate[i] = backend.Allocate(DType.F32, tokens, outs[i]);
                backend.Upload(Enumerable.Repeat(float.NaN, tokens * outs[i]).ToArray(), shared[i]);
            }

            backend.MatMulShared(x, [.. Enumerable.Range(0, outs.Length).Select(i => new MatMulTarget(weights[i], biases[i], shared[i]))]);
            for (var i = 0; i < outs.Length; i++)
            {
                backend.MatMul(x, weights[i], biases[i], separate[i]);
                var a = new float[tokens * outs[i]];
                var b = new float[tokens * outs[i]];
                backend.Download(shared[i], a);
                backend.Download(separate[i], b);
                Assert.Equal(b, a);
            }
        }
        finally
        {
            foreach (var tensor in weights.Concat(shared).Concat(separate).Concat(biases.Where(b => b != null)!))
            {
                tensor?.Dispose();
            }
        }
    }
}
