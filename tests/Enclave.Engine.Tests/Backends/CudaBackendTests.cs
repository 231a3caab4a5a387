using Enclave.Engine.Backends.Cpu;
using Enclave.Engine.Backends.Reference;
using Enclave.Engine.Cuda;
using Enclave.Engine.Tests.Support;

namespace Enclave.Engine.Tests.Backends;

/// <summary>
/// The CUDA backend against the float64 reference over <see cref="BackendOpCases"/>, with NaN-poisoned outputs.
/// Skipped, with the reason, where no usable CUDA device exists; the same table also runs on the CPU backend
/// everywhere, so the cases themselves are checked on every machine.
/// </summary>
public sealed class CudaBackendTests
{
    // Quantized (FP8/AWQ/GPTQ) weights and the encoder ops have no CUDA kernels yet; the backend refuses them with a clear message.
    public static TheoryData<string> Cases() => [.. BackendOpCases.CudaNames];

    public static TheoryData<string> AllCases() => [.. BackendOpCases.Names];

    [CudaTheory]
    [MemberData(nameof(Cases))]
    public void Cuda_op_matches_the_reference(string name)
    {
        using var cuda = new CudaBackend();
        using var reference = new ReferenceBackend();
        var result = BackendOpCases.Run(name, cuda, reference);
        Assert.True(result.Passed, result.ToString());
    }

    [CudaFact]
    public void Tensor_core_products_stay_within_bf16_rounding()
    {
        using var cuda = new CudaBackend(new CudaBackendOptions { TensorCoreGemm = true });
        AssertWithinRounding(cuda, BackendOpCases.Names.Where(n => n.StartsWith("matmul/", StringComparison.Ordinal) || n.StartsWith("matmul_shared/", StringComparison.Ordinal)));
    }

    [CudaFact]
    public void Tensor_core_prefill_attention_stays_within_f16_and_bf16_rounding()
    {
        using var cuda = new CudaBackend(new CudaBackendOptions { TensorCoreGemm = true });
        AssertWithinRounding(cuda, BackendOpCases.TensorCoreAttentionNames);
    }

    [CudaFact]
    public void Decode_attention_on_the_mma_kernel_stays_within_bf16_rounding()
    {
        // Every decode step qualifies (one sequence × KV head is enough), so these small cases take the batched path.
        using var cuda = new CudaBackend(new CudaBackendOptions { TensorCoreGemm = true }) { MmaDecodeMinBlocks = 1 };
        AssertWithinRounding(cuda, BackendOpCases.MmaDecodeAttentionNames);
    }

    /// <summary>Each case on <paramref name="cuda"/> against the float64 reference within the 16-bit operand tolerance (2e-2).</summary>
    private static void AssertWithinRounding(CudaBackend cuda, IEnumerable<string> names)
    {
        using var reference = new ReferenceBackend();
        foreach (var name in names)
        {
            var result = BackendOpCases.Run(name, cuda, reference, tolerance: 2e-2);
            Assert.True(result.Passed, result.ToString());
        }
    }

    [Fact]
    public void The_mma_decode_cases_exist_and_are_decode_steps_over_a_bf16_cache()
    {
        Assert.All(BackendOpCases.MmaDecodeAttentionNames, name =>
        {
            Assert.Contains(name, BackendOpCases.CudaNames);
            Assert.StartsWith("attention_kvbf16/", name, StringComparison.Ordinal);
            Assert.Contains("decode", name, StringComparison.Ordinal);
        });
    }

    [Fact]
    public void The_tensor_core_attention_cases_cover_both_head_dim_bounds_and_a_cached_prefix()
    {
        // d64 and d128 (the two f16 tensor-core kernels), d96 (a head dim below its bound), the mixed batch with a prefix, and the
        // bf16 tensor-core kernels over a bf16 cache at both bounds and below.
        Assert.Equal(
            [
                "attention/gqa3/d128/bs16/prefill-1-77-300", "attention/gqa3/d64/bs16/prefill-1-77-300", "attention/gqa7/d64/bs5/long-prefill", "attention/mha/d96/bs7/prefill-chunk",
                "attention_kvbf16/gqa3/d64/bs16/prefill-1-77-300", "attention_kvbf16/gqa7/d128/bs16/prefill-1-77-300", "attention_kvbf16/mha/d96/bs7/prefill-chunk",
            ],
            BackendOpCases.TensorCoreAttentionNames.Order(StringComparer.Ordinal));
    }

    [CudaFact]
    public void A_second_backend_loads_every_kernel_from_the_disk_cache()
    {
        var directory = Path.Combine(Path.GetTempPath(), "enclave-cuda-cache-test-" + Environment.ProcessId);
        try
        {
            using (var first = new CudaBackend(new CudaBackendOptions { KernelCacheDirectory = directory }))
            {
                BackendOpCases.Run("add/1001", first, new ReferenceBackend());
                Assert.Equal(1, first.KernelsCompiled);
            }

            using var second = new CudaBackend(new CudaBackendOptions { KernelCacheDirectory = directory });
            var result = BackendOpCases.Run("add/1001", second, new ReferenceBackend());
            Assert.True(result.Passed, result.ToString());
            Assert.Equal(0, second.KernelsCompiled);
        }
        finally
        {
            Directory.Delete(directory, recursive: true);
        }
    }

    [CudaFact]
    public void Encoder_ops_say_plainly_that_cuda_lacks_them()
    {
        using var cuda = new CudaBackend();
        using var reference = new ReferenceBackend();
        foreach (var name in BackendOpCases.Names.Where(BackendOpCases.IsEncoderOp))
        {
            var error = Assert.Throws<NotSupportedException>(() => BackendOpCases.Run(name, cuda, reference));
            Assert.Contains("--device cpu", error.Message, StringComparison.Ordinal);
        }
    }

    [Theory]
    [MemberData(nameof(AllCases))]
    public void Cpu_op_matches_the_reference_on_the_same_table(string name)
    {
        using var cpu = new CpuBackend(3);
        using var reference = new ReferenceBackend();
        var result = BackendOpCases.Run(name, cpu, reference);
        Assert.True(result.Passed, result.ToString());
    }

    [Fact]
    public void Probe_explains_why_a_device_is_unusable()
    {
        var probe = CudaDevice.Probe(0);
        Assert.True(probe.Usable || probe.Reason.Length > 0, "an unusable device must come with a reason");
        var missing = CudaDevice.Probe(1000);
        Assert.False(missing.Usable);
        Assert.NotEmpty(missing.Reason);
    }

    [Theory]
    [InlineData("cuda", 0)]
    [InlineData("CUDA:3", 3)]
    [InlineData("cuda:x", null)]
    [InlineData("cpu", null)]
    public void Device_names_parse_to_ordinals(string text, int? expected) => Assert.Equal(expected, CudaDevice.ParseOrdinal(text));
}
