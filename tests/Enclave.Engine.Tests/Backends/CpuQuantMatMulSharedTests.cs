using Enclave.Engine.Backends;
using Enclave.Engine.Backends.Cpu;
using Enclave.Engine.Formats.Gguf;

namespace Enclave.Engine.Tests.Backends;

/// <summary>
/// Block-typed products that share their input (a GGUF model's q/k/v, gate/up) quantise it once: the results must be
/// bit-identical to separate products, on every vector width, with and without AMX, for outputs above and below one
/// AMX row group. Where every output is whole 16-row groups of grouped Q8_0 weights, the products run as one parallel
/// region; those results (and a gated MLP's first half over them) must equal the separate products too.
/// </summary>
public sealed class CpuQuantMatMulSharedTests
{
    public static TheoryData<DType, int, int, bool> Cases()
    {
        var data = new TheoryData<DType, int, int, bool>();
        foreach (var width in new[] { 512, 256, 128, 1 }.Where(CpuSimd.IsSupported))
        {
            foreach (var type in new[] { DType.Q8_0, DType.Q5_0, DType.Q4_K, DType.Q5_K, DType.Q6_K })
            {
                data.Add(type, width, 17, false);
                data.Add(type, width, 3, false);
            }

            // Whole groups only: q/k/v of grouped Q8_0 weights in one region (decode and a few tokens), on AMX from 8.
            data.Add(DType.Q8_0, width, 1, true);
            data.Add(DType.Q8_0, width, 5, true);
            data.Add(DType.Q8_0, width, 17, true);
        }

        return data;
    }

    public static TheoryData<int, int, bool> GatedCases()
    {
        var data = new TheoryData<int, int, bool>();
        foreach (var width in new[] { 512, 256, 128, 1 }.Where(CpuSimd.IsSupported))
        {
            foreach (var tokens in new[] { 1, 2, 5, 9 })
            {
                data.Add(width, tokens, false);
            }

            data.Add(width, 1, true);
            data.Add(width, 6, true);
        }

        return data;
    }

    [Theory]
    [MemberData(nameof(GatedCases))]
    public void Gated_products_equal_separate_products_and_activation(int width, int tokens, bool bias)
    {
        const int InFeatures = 320, OutFeatures = 80;
        var random = new Random((width * 31) + tokens + (bias ? 7 : 0));
        using var backend = new CpuBackend(3, width);
        var tensors = new List<DeviceTensor>();
        DeviceTensor Tensor(DType type, params int[] shape)
        {
            var t = backend.Allocate(type, shape);
            tensors.Add(t);
            return t;
        }

        float[] Floats(int count, double scale) => [.. Enumerable.Range(0, count).Select(_ => (float)((random.NextDouble() - 0.5) * scale))];
        try
        {
            var x = Tensor(DType.F32, tokens, InFeatures);
            backend.Upload(Floats(tokens * InFeatures, 4), x);
            var weights = new DeviceTensor[2];
            var biases = new DeviceTensor?[2];
            for (var i = 0; i < 2; i++)
            {
                var blocks = new byte[DType.Q8_0.StorageBytes(OutFeatures * InFeatures)];
                GgmlQuants.Quantize(DType.Q8_0, Floats(OutFeatures * InFeatures, 1), blocks);
                weights[i] = Tensor(DType.Q8_0, OutFeatures, InFeatures);
                backend.UploadBytes(blocks, weights[i]);
                if (bias)
                {
                    biases[i] = Tensor(DType.F32, OutFeatures);
                    backend.Upload(Floats(OutFeatures, 2), biases[i]!);
                }
            }

            var gate = Tensor(DType.F32, tokens, OutFeatures);
            var up = Tensor(DType.F32, tokens, OutFeatures);
            backend.Upload(Enumerable.Repeat(float.NaN, tokens * OutFeatures).ToArray(), gate);
            ((IBackend)backend).SiluGatedMatMul(x, new(weights[0], biases[0], gate), new(weights[1], biases[1], up));

            var gateRef = Tensor(DType.F32, tokens, OutFeatures);
            var upRef = Tensor(DType.F32, tokens, OutFeatures);
            backend.MatMul(x, weights[0], biases[0], gateRef);
            backend.MatMul(x, weights[1], biases[1], upRef);
            backend.SiluMul(gateRef, upRef, gateRef);
            var a = new float[tokens * OutFeatures];
            var b = new float[tokens * OutFeatures];
            backend.Download(gate, a);
            backend.Download(gateRef, b);
            Assert.Equal(b, a);
        }
        finally
        {
            foreach (var tensor in tensors)
            {
                tensor.Dispose();
            }
        }
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void Shared_products_equal_separate_ones(DType type, int width, int tokens, bool wholeGroups)
    {
        var inFeatures = 512;
        int[] outs = wholeGroups ? [48, 16, 32] : [45, 16, 7];
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
