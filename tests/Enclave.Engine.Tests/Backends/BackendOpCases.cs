using Enclave.Engine.Backends;
using Enclave.Engine.KvCache;

namespace Enclave.Engine.Tests.Backends;

/// <summary>
/// A backend-neutral table of operation cases at awkward sizes (odd widths, rows that are no multiple of a vector
/// or a warp, 1 to 77 tokens, GQA, head dims 40/128, mixed prefill/decode sequences over shuffled block tables). Each
/// case builds the same inputs from a fixed seed on the backend under test and on the reference backend, fills the
/// outputs with NaN first, runs the op and compares: an element never written stays NaN and fails the case.
/// No test framework here, so the GPU check tool runs the same table.
/// </summary>
internal static class BackendOpCases
{
    public sealed record Result(string Name, double MaxError, double Tolerance, long Unwritten, long Compared)
    {
        public bool Passed => Unwritten == 0 && Compared > 0 && MaxError <= Tolerance;

        public override string ToString() =>
            $"{Name,-34} {(Passed ? "ok  " : "FAIL")} max rel error {MaxError:E2} (tolerance {Tolerance:E0}), {Compared} values, {Unwritten} unwritten";
    }

    private static readonly Dictionary<string, (Func<IBackend, float[][]> Run, double Tolerance)> Table = Build();

    public static IReadOnlyCollection<string> Names => Table.Keys;

    /// <summary>The encoder ops (embedding and rerank models), which have CPU and reference kernels only so far.</summary>
    public static readonly string[] EncoderOpPrefixes = ["gather_embedding/", "layernorm/", "gelu/", "tanh/", "bidirectional_attention/"];

    public static bool IsEncoderOp(string name) => EncoderOpPrefixes.Any(p => name.StartsWith(p, StringComparison.Ordinal));

    /// <summary>The cases the CUDA backend has kernels for: neither quantized weights nor encoder ops yet.</summary>
    public static IReadOnlyCollection<string> CudaNames => [.. Table.Keys.Where(n => !IsEncoderOp(n) && !n.StartsWith("quantized_", StringComparison.Ordinal) && !n.StartsWith("qmatmul/", StringComparison.Ordinal))];

    /// <summary>
    /// Attention cases whose step has a query longer than 16 tokens and a head dim that is a multiple of 8 up to 128:
    /// in tensor-core mode the CUDA backend runs them on its f16 tensor-core prefill kernel.
    /// </summary>
    public static IReadOnlyCollection<string> TensorCoreAttentionNames =>
        [.. Table.Keys.Where(n => n is "attention/gqa7/d64/bs5/long-prefill" or "attention/mha/d96/bs7/prefill-chunk" or "attention_kvbf16/mha/d96/bs7/prefill-chunk" || n.EndsWith("/prefill-1-77-300", StringComparison.Ordinal))];

    /// <summary>
    /// Decode attention cases over a bf16 cache with a head dim that is a multiple of 8 up to 128 and at most 64 packed
    /// query rows a sequence and KV head: in tensor-core mode, with enough sequences × KV heads
    /// (<c>CudaBackend.MmaDecodeMinBlocks</c>), the CUDA backend runs them on its bf16 MMA prefill kernel.
    /// </summary>
    public static IReadOnlyCollection<string> MmaDecodeAttentionNames =>
        ["attention_kvbf16/gqa7/d128/bs16/decode-batch", "attention_kvbf16/gqa16/d64/bs16/decode", "attention_kvbf16/gqa4/d64/bs16/long-decode"];

    /// <summary>Runs one case on <paramref name="candidate"/> and on <paramref name="reference"/> and compares every output.</summary>
    public static Result Run(string name, IBackend candidate, IBackend reference, double? tolerance = null)
    {
        var (run, defaultTolerance) = Table[name];
        var expected = run(reference);
        var actual = run(candidate);
        double maxError = 0;
        long unwritten = 0, compared = 0;
        for (var o = 0; o < expected.Length; o++)
        {
            double scale = 1e-30;
            foreach (var v in expected[o])
            {
                if (!float.IsNaN(v))
                {
                    scale = Math.Max(scale, Math.Abs(v));
                }
            }

            for (var i = 0; i < expected[o].Length; i++)
            {
                float e = expected[o][i], a = actual[o][i];
                if (float.IsNaN(e))
                {
                    continue;
                }

                if (float.IsNaN(a) || float.IsInfinity(a))
                {
                    unwritten++;
                    continue;
                }

                compared++;
                maxError = Math.Max(maxError, Math.Abs(a - e) / scale);
            }
        }

        return new Result(name, maxError, tolerance ?? defaultTolerance, unwritten, compared);
    }

    private static Dictionary<string, (Func<IBackend, float[][]>, double)> Build()
    {
        var cases = new Dictionary<string, (Func<IBackend, float[][]>, double)>(StringComparer.Ordinal);
        foreach (var dtype in new[] { DType.F32, DType.F16, DType.BF16 })
        {
            var d = dtype.ToString().ToLowerInvariant();
            cases[$"embedding/{d}/vocab37x75/t5"] = (b => Embedding(b, dtype, 37, 75, 5), 0);
            cases[$"rmsnorm/{d}/3x1000"] = (b => Norm(b, dtype, 3, 1000, false), 1e-5);
            cases[$"add_rmsnorm/{d}/5x333"] = (b => Norm(b, dtype, 5, 333, true), 1e-5);
            foreach (var tokens in new[] { 1, 3, 8, 9, 77 })
            {
                cases[$"matmul/{d}/t{tokens}/72to45"] = (b => MatMul(b, dtype, tokens, 72, 45, false), 1e-5);
                cases[$"matmul/{d}/t{tokens}/70to33+bias"] = (b => MatMul(b, dtype, tokens, 70, 33, true), 1e-5);
            }

            cases[$"gather_embedding/{d}/rows41x70/t9"] = (b => GatherEmbedding(b, dtype, 41, 70, 9), 0);
            cases[$"matmul/{d}/t1/2056to19"] = (b => MatMul(b, dtype, 1, 2056, 19, false), 1e-5);
            cases[$"matmul/{d}/t2/3080to130+bias"] = (b => MatMul(b, dtype, 2, 3080, 130, true), 1e-5);
            // Long rows: many rounds of four 16-byte chunks per lane in the CUDA GEMV, and a ragged tail (32784).
            cases[$"matmul/{d}/t3/32784to37+bias"] = (b => MatMul(b, dtype, 3, 32784, 37, true), 1e-5);
            cases[$"matmul/{d}/t1/65600to11"] = (b => MatMul(b, dtype, 1, 65600, 11, false), 1e-5);
            // Products sharing one input: q/k/v-like (three outputs of different widths, biases) and gate/up-like.
            foreach (var tokens in new[] { 1, 4, 8, 9, 40 })
            {
                cases[$"matmul_shared/{d}/t{tokens}/qkv-264to96+40+40+bias"] = (b => MatMulShared(b, dtype, tokens, 264, [96, 40, 40], true), 1e-5);
                cases[$"matmul_shared/{d}/t{tokens}/stacked-qkv-264to96+40+40+bias"] = (b => MatMulShared(b, dtype, tokens, 264, [96, 40, 40], true, stacked: true), 1e-5);
                cases[$"matmul_shared/{d}/t{tokens}/gate-up-72to130+130"] = (b => MatMulShared(b, dtype, tokens, 72, [130, 130], false), 1e-5);
            }

            cases[$"matmul_shared/{d}/t3/odd-70to9+1+33"] = (b => MatMulShared(b, dtype, 3, 70, [9, 1, 33], true), 1e-5);
            // Skinny products long enough in K that a tensor-core backend splits K across multiprocessors.
            cases[$"matmul/{d}/t40/2048to130+bias"] = (b => MatMul(b, dtype, 40, 2048, 130, true), 1e-5);
            cases[$"matmul/{d}/t64/4096to300"] = (b => MatMul(b, dtype, 64, 4096, 300, false), 1e-5);
            cases[$"matmul_shared/{d}/t24/stacked-qkv-1024to256+64+64+bias"] = (b => MatMulShared(b, dtype, 24, 1024, [256, 64, 64], true, stacked: true), 1e-5);
            // A gated MLP's gate/up products with silu(gate) * up: decode sizes (fused on CUDA), odd widths without
            // the vector path, a stacked gate/up pair, and a prefill size that runs as a shared product plus silu_mul.
            foreach (var tokens in new[] { 1, 2, 3 })
            {
                cases[$"silu_gated_matmul/{d}/t{tokens}/1024to300+bias"] = (b => SiluGatedMatMul(b, dtype, tokens, 1024, 300, true), 1e-5);
            }

            cases[$"silu_gated_matmul/{d}/t1/odd-70to9"] = (b => SiluGatedMatMul(b, dtype, 1, 70, 9, false), 1e-5);
            cases[$"silu_gated_matmul/{d}/t2/stacked-512to136"] = (b => SiluGatedMatMul(b, dtype, 2, 512, 136, false, stacked: true), 1e-5);
            cases[$"silu_gated_matmul/{d}/t40/256to72+bias"] = (b => SiluGatedMatMul(b, dtype, 40, 256, 72, true), 1e-5);
            // A whole gated MLP: decode size, prefill sizes with stacked or separate gate/up (kept 16-bit between the
            // products by a tensor-core backend), biases, and an intermediate width off the 8-element vector path.
            cases[$"silu_gated_mlp/{d}/t1/256to136to200+bias"] = (b => SiluGatedMlp(b, dtype, 1, 256, 136, 200, true, stacked: true), 1e-5);
            cases[$"silu_gated_mlp/{d}/t40/stacked-256to136to200+bias"] = (b => SiluGatedMlp(b, dtype, 40, 256, 136, 200, true, stacked: true), 1e-5);
            cases[$"silu_gated_mlp/{d}/t33/512to264to128"] = (b => SiluGatedMlp(b, dtype, 33, 512, 264, 128, false, stacked: false), 1e-5);
            cases[$"silu_gated_mlp/{d}/t17/stacked-128to70to64+bias"] = (b => SiluGatedMlp(b, dtype, 17, 128, 70, 64, true, stacked: true), 1e-5);
        }

        // FP8 blocks with partial edge blocks (45 rows / 16, 72 columns / 32) and 4-bit groups, dequantized on the fly.
        foreach (var tokens in new[] { 1, 5, 9 })
        {
            cases[$"quantized_matmul/fp8-block16x32/t{tokens}/72to45"] =
                (b => QuantizedMatMul(b, WeightEncoding.Fp8Block, tokens, 72, 45, 16, 32, false), 1e-5);
            cases[$"quantized_matmul/int4-g32/t{tokens}/96to37+bias"] =
                (b => QuantizedMatMul(b, WeightEncoding.Int4Group, tokens, 96, 37, 1, 32, true), 1e-5);
        }

        // DeepSeek (MLA + MoE) operations.
        cases["copy_columns/5x40[32..+8]->13[5]"] = (b => CopyColumns(b, 5, 40, 32, 13, 5, 8), 0);
        cases["copy_columns/7x24[0..+24]->56[32]"] = (b => CopyColumns(b, 7, 24, 0, 56, 32, 24), 0);
        cases["head_matmul/t5h4/16to32"] = (b => HeadMatMul(b, 5, 4, 16, 32), 1e-5);
        cases["head_matmul/t3h7/33to17"] = (b => HeadMatMul(b, 3, 7, 33, 17), 1e-5);
        cases["head_matmul/t2h16/512to128"] = (b => HeadMatMul(b, 2, 16, 512, 128), 1e-5);
        cases["latent_norm_rope/f32/t3/rank40/rope8/neox"] = (b => LatentNormRope(b, DType.F32, 3, 40, 8, 8, false), 1e-5);
        cases["latent_norm_rope/bf16/t5/rank512/rope64/interleaved"] = (b => LatentNormRope(b, DType.BF16, 5, 512, 64, 64, true), 1e-5);
        cases["latent_norm_rope/f16/t2/rank33/rope12/partial"] = (b => LatentNormRope(b, DType.F16, 2, 33, 12, 8, false), 1e-5);
        cases["latent_query/t3h5/nope24/rope8/rank40"] = (b => LatentQuery(b, 3, 5, 24, 8, 8, 40, false), 1e-5);
        cases["latent_query/t2h16/nope128/rope64/rank512/interleaved"] = (b => LatentQuery(b, 2, 16, 128, 64, 64, 512, true), 1e-5);
        cases["latent_query/t4h3/nope10/rope12/rank17/partial"] = (b => LatentQuery(b, 4, 3, 10, 12, 8, 17, false), 1e-5);
        cases["latent_attention/h4/r32+8/bs4/mixed"] = (b => LatentAttention(b, 4, 32, 8, 4, [(7, 7), (1, 9)]), 1e-5);
        cases["latent_attention/h16/r64+16/bs16/decode"] = (b => LatentAttention(b, 16, 64, 16, 16, [(1, 40), (3, 3), (1, 1)]), 1e-5);
        cases["latent_attention/h8/r512+64/bs16/long"] = (b => LatentAttention(b, 8, 512, 64, 16, [(1, 300), (2, 130)]), 1e-5);
        cases["latent_attention/h3/r33+6/bs5/odd"] = (b => LatentAttention(b, 3, 33, 6, 5, [(12, 20)]), 1e-5);
        cases["moe_route/sigmoid/e8k2g2of1/bias"] = (b => MoeRoute(b, new MoeRouting(8, 2, MoeScoring.Sigmoid, 2, 1, MoeGroupScore.TopTwoSum, true, 2.5f), 9, true), 1e-5);
        cases["moe_route/sigmoid/e16k4g4of2"] = (b => MoeRoute(b, new MoeRouting(16, 4, MoeScoring.Sigmoid, 4, 2, MoeGroupScore.TopTwoSum, false, 1f), 5, false), 1e-5);
        cases["moe_route/softmax/e12k3g3of2/max"] = (b => MoeRoute(b, new MoeRouting(12, 3, MoeScoring.Softmax, 3, 2, MoeGroupScore.Max, true, 16f), 4, false), 1e-5);
        // Routed experts with routing on the backend: V3's sigmoid + bias over groups, V2's softmax (greedy and grouped),
        // more picks of one expert than a pass of the device kernel takes (8), and rows not a multiple of 8 long.
        cases["moe_experts/f32/e8k2g2of1/t3/h40i24/bias"] = (b => MoeExperts(b, DType.F32, new MoeRouting(8, 2, MoeScoring.Sigmoid, 2, 1, MoeGroupScore.TopTwoSum, true, 2.5f), 3, 40, 24, true), 1e-5);
        cases["moe_experts/bf16/e16k4g4of2/t9/h64i32"] = (b => MoeExperts(b, DType.BF16, new MoeRouting(16, 4, MoeScoring.Sigmoid, 4, 2, MoeGroupScore.TopTwoSum, false, 1f), 9, 64, 32, false), 1e-5);
        cases["moe_experts/bf16/e6k2/t40/h128i48/softmax"] = (b => MoeExperts(b, DType.BF16, new MoeRouting(6, 2, MoeScoring.Softmax, 1, 1, MoeGroupScore.Max, false, 1f), 40, 128, 48, false), 1e-5);
        cases["moe_experts/f16/e12k3g3of2/t5/h36i20/max"] = (b => MoeExperts(b, DType.F16, new MoeRouting(12, 3, MoeScoring.Softmax, 3, 2, MoeGroupScore.Max, true, 16f), 5, 36, 20, false), 1e-5);
        cases["moe_experts/bf16/e256k8g8of4/t2/h64i16/bias"] = (b => MoeExperts(b, DType.BF16, new MoeRouting(256, 8, MoeScoring.Sigmoid, 8, 4, MoeGroupScore.TopTwoSum, true, 2.5f), 2, 64, 16, true), 1e-5);
        cases["moe_experts/f32/e64k6/t1/h48i40/softmax"] = (b => MoeExperts(b, DType.F32, new MoeRouting(64, 6, MoeScoring.Softmax, 1, 1, MoeGroupScore.Max, false, 1f), 1, 48, 40, false), 1e-5);
        cases["gather_rows/t9n37/picks27"] = (b => Rows(b, 9, 37, 27, scatter: false), 0);
        cases["scatter_add_rows/t9n37/picks27"] = (b => Rows(b, 9, 37, 27, scatter: true), 1e-6);
        cases["scatter_add_rows/t5n2048/picks10"] = (b => Rows(b, 5, 2048, 10, scatter: true), 1e-6);

        // Block-quantised weights (CPU only): the reference dequantises them; the kernels quantise activations to
        // int8 per block of 32, which costs up to about 1% of the output scale, far below what a layout error costs.
        foreach (var dtype in new[] { DType.Q8_0, DType.Q4_0, DType.Q4_1, DType.Q5_0, DType.Q5_1, DType.Q4_K, DType.Q5_K, DType.Q6_K })
        {
            var d = dtype.ToString().ToLowerInvariant();
            var block = dtype.BlockElements();
            foreach (var tokens in new[] { 1, 3, 5, 9, 77 })
            {
                cases[$"qmatmul/{d}/t{tokens}/{3 * block}to45"] = (b => MatMul(b, dtype, tokens, 3 * block, 45, false), 2e-2);
            }

            cases[$"qmatmul/{d}/t2/{block}to131+bias"] = (b => MatMul(b, dtype, 2, block, 131, true), 2e-2);
            cases[$"qmatmul/{d}/t1/{9 * block}to7"] = (b => MatMul(b, dtype, 1, 9 * block, 7, false), 2e-2);
        }

        cases["rmsnorm/bf16/2x3584"] = (b => Norm(b, DType.BF16, 2, 3584, false), 1e-5);
        // Rows held in registers between the sum and the write (width a multiple of 4), in place, and rows too wide for that.
        cases["add_rmsnorm/bf16/3x3584"] = (b => Norm(b, DType.BF16, 3, 3584, true), 1e-5);
        cases["add_rmsnorm/f32/in-place/2x1024"] = (b => Norm(b, DType.F32, 2, 1024, true, inPlace: true), 1e-5);
        cases["rmsnorm/f16/2x20000"] = (b => Norm(b, DType.F16, 2, 20000, false), 1e-5);
        cases["rmsnorm/bf16/in-place-heads/12x40"] = (b => Norm(b, DType.BF16, 12, 40, false, inPlace: true), 1e-5);
        cases["rope/neox/t3h5d24r16"] = (b => Rope(b, 3, 5, 24, 16, false, 1f), 1e-5);
        cases["rope/interleaved/scaled/t4h3d64"] = (b => Rope(b, 4, 3, 64, 64, true, 1.2f), 1e-5);
        cases["silu_mul/1001"] = (b => Elementwise(b, 1001, silu: true), 1e-6);
        cases["silu_mul/in-place/300007"] = (b => Elementwise(b, 300007, silu: true, inPlace: true), 1e-6);
        cases["add/1001"] = (b => Elementwise(b, 1001, silu: false), 0);
        cases["gather_logit_rows/3of9x130"] = (b => Gather(b), 0);
        cases["argmax/1x1000/tie"] = (b => Argmax(b, 1, 1000), 0);
        cases["argmax/5x4099/ties-nan-inf-tail"] = (b => Argmax(b, 5, 4099), 0);
        cases["argmax/5x40000/vector-loads-ties-nan-inf"] = (b => Argmax(b, 5, 40000), 0);
        cases["argmax/1x152064/qwen2-vocab"] = (b => Argmax(b, 1, 152064), 0);
        cases["attention/gqa3/d40/bs4/mixed"] = (b => Attention(b, 6, 2, 40, 4, [(7, 7), (1, 13), (5, 20)]), 1e-5);
        cases["attention/mha/d128/bs16/decode"] = (b => Attention(b, 4, 4, 128, 16, [(1, 1), (1, 37), (1, 100)]), 1e-5);
        cases["attention/gqa7/d64/bs5/long-prefill"] = (b => Attention(b, 7, 1, 64, 5, [(61, 61), (2, 70)]), 1e-5);
        cases["attention/gqa4/d128/bs16/split-decode"] = (b => Attention(b, 8, 2, 128, 16, [(1, 700), (1, 129), (2, 300)]), 1e-5);
        cases["attention/gqa2/d30/bs3/odd-dim"] = (b => Attention(b, 4, 2, 30, 3, [(4, 4), (1, 9), (3, 40)]), 1e-5);
        // Batched decode over the grouped kernel (a block per KV head serves its query heads), at the group sizes of
        // the Qwen2-7B shape (7), the widest it takes (8, with head_dim 256) and wider groups on the per-head kernel.
        cases["attention/gqa7/d128/bs16/decode-batch"] = (b => Attention(b, 14, 2, 128, 16, [(1, 1), (1, 17), (1, 300), (1, 129), (2, 64), (1, 555)]), 1e-5);
        cases["attention/gqa8/d256/bs16/decode-batch"] = (b => Attention(b, 8, 1, 256, 16, [(1, 33), (1, 260), (3, 3)]), 1e-5);
        cases["attention/gqa5/d36/bs8/decode-batch"] = (b => Attention(b, 10, 2, 36, 8, [(1, 70), (1, 9), (1, 200)]), 1e-5);
        cases["attention/gqa16/d64/bs16/decode-batch"] = (b => Attention(b, 16, 1, 64, 16, [(1, 40), (1, 400)]), 1e-5);
        // The tiled decode kernel (head_dim a multiple of 8): long contexts cut into many splits, a head_dim below the
        // kernel's width (96 on the 128-wide kernel), and short multi-token queries.
        cases["attention/gqa4/d64/bs16/long-decode"] = (b => Attention(b, 8, 2, 64, 16, [(1, 1500), (1, 65), (3, 200)]), 1e-5);
        cases["attention/gqa6/d96/bs8/decode-batch"] = (b => Attention(b, 12, 2, 96, 8, [(1, 130), (1, 2), (2, 90)]), 1e-5);
        // A bf16 cache where the backend keeps one (CUDA); elsewhere an f32 cache holding the same bf16-rounded values,
        // so both compute over identical keys and values. Decode (per-head and grouped kernels) and prefill (tiled).
        cases["attention_kvbf16/gqa7/d128/bs16/decode-batch"] = (b => Attention(b, 14, 2, 128, 16, [(1, 1), (1, 17), (1, 300), (2, 64), (1, 555)], DType.BF16), 1e-5);
        cases["attention_kvbf16/gqa16/d64/bs16/decode"] = (b => Attention(b, 16, 1, 64, 16, [(1, 40), (1, 400)], DType.BF16), 1e-5);
        cases["attention_kvbf16/gqa4/d64/bs16/long-decode"] = (b => Attention(b, 8, 2, 64, 16, [(1, 1500), (1, 65), (3, 200)], DType.BF16), 1e-5);
        cases["attention_kvbf16/gqa8/d256/bs16/decode-batch"] = (b => Attention(b, 8, 1, 256, 16, [(1, 33), (1, 260), (3, 3)], DType.BF16), 1e-5);
        cases["attention_kvbf16/gqa2/d30/bs3/odd-dim"] = (b => Attention(b, 4, 2, 30, 3, [(4, 4), (1, 9), (3, 40)], DType.BF16), 1e-5);
        cases["attention_kvbf16/gqa3/d64/bs16/prefill-1-77-300"] = (b => Attention(b, 6, 2, 64, 16, [(1, 50), (77, 77), (300, 345)], DType.BF16), 1e-5);
        cases["attention_kvbf16/gqa7/d128/bs16/prefill-1-77-300"] = (b => Attention(b, 14, 2, 128, 16, [(1, 50), (77, 77), (300, 345)], DType.BF16), 1e-5);
        cases["attention_kvbf16/mha/d96/bs7/prefill-chunk"] = (b => Attention(b, 3, 3, 96, 7, [(40, 95), (17, 17)], DType.BF16), 1e-5);
        cases["attention_kvbf16/gqa4/d256/bs16/prefill-prefix"] = (b => Attention(b, 8, 2, 256, 16, [(130, 200), (2, 2)], DType.BF16), 1e-5);
        // Prefill steps (a query longer than CudaBackend.FlashMinQueryLength) take the tiled kernel on CUDA: one decode
        // token, a fresh 77-token prompt and a 300-token prompt behind a 45-token cached prefix in one batch.
        foreach (var headDim in new[] { 64, 128 })
        {
            cases[$"attention/gqa3/d{headDim}/bs16/prefill-1-77-300"] = (b => Attention(b, 6, 2, headDim, 16, [(1, 50), (77, 77), (300, 345)]), 1e-5);
        }

        cases["attention/gqa4/d256/bs16/prefill-prefix"] = (b => Attention(b, 8, 2, 256, 16, [(130, 200), (2, 2)]), 1e-5);
        cases["attention/mha/d96/bs7/prefill-chunk"] = (b => Attention(b, 3, 3, 96, 7, [(40, 95), (17, 17)]), 1e-5);
        cases["attention/gqa7/d64/bs16/prefill-128"] = (b => Attention(b, 14, 2, 64, 16, [(128, 128)]), 1e-5);
        cases["attention/gqa2/d128/bs16/prefill-odd-prefix"] = (b => Attention(b, 4, 2, 128, 16, [(33, 97), (1, 20), (5, 5)]), 1e-5);
        // Rotary embedding with the cache write (one kernel on CUDA): full and partial rotation, both pair layouts, both
        // cache types, decode and prefill steps. Positions are the tokens' places in their sequences. A bf16 cache stores
        // the rotated keys rounded, which the reference's f32 cache does not: bf16 rounding, not 1e-5, bounds those.
        cases["rope_attention/gqa7/d128/bs16/neox/decode-batch"] = (b => Attention(b, 14, 2, 128, 16, [(1, 1), (1, 17), (1, 300), (2, 64)], rope: TestRope(128, false, 1f)), 1e-5);
        cases["rope_attention/gqa3/d64/bs16/partial-interleaved-scaled/prefill"] = (b => Attention(b, 6, 2, 64, 16, [(1, 50), (77, 77), (30, 45)], rope: TestRope(32, true, 1.1f)), 1e-5);
        cases["rope_attention_kvbf16/gqa7/d128/bs16/neox/decode-batch"] = (b => Attention(b, 14, 2, 128, 16, [(1, 1), (1, 17), (1, 300), (2, 64)], DType.BF16, TestRope(128, false, 1f)), 1e-2);
        cases["rope_attention_kvbf16/gqa2/d30/bs3/partial-neox/odd-dim"] = (b => Attention(b, 4, 2, 30, 3, [(4, 4), (1, 9), (3, 40)], DType.BF16, TestRope(16, false, 1f)), 1e-2);
        cases["layernorm/3x1000"] = (b => LayerNorm(b, 3, 1000, inPlace: false), 1e-5);
        cases["layernorm/in-place/7x333"] = (b => LayerNorm(b, 7, 333, inPlace: true), 1e-5);
        cases["gelu/1001"] = (b => Activation(b, 1001, gelu: true), 1e-6);
        cases["gelu/40000"] = (b => Activation(b, 40000, gelu: true), 1e-6);
        cases["tanh/1001"] = (b => Activation(b, 1001, gelu: false), 1e-6);
        cases["bidirectional_attention/h4/d16/lengths-1-7-130"] = (b => BidirectionalAttention(b, 4, 16, [1, 7, 130]), 1e-5);
        cases["bidirectional_attention/h3/d40/empty-and-odd"] = (b => BidirectionalAttention(b, 3, 40, [5, 0, 33, 2]), 1e-5);
        return cases;
    }

    private static float[][] GatherEmbedding(IBackend b, DType dtype, int rows, int n, int count)
    {
        var random = new Random(rows + n);
        using var table = Weight(b, dtype, Values(random, rows * n), rows, n);
        var ids = Enumerable.Range(0, count).Select(_ => random.Next(rows)).ToArray();
        ids[0] = rows - 1;
        using var output = Poisoned(b, count, n);
        b.GatherEmbedding(table, ids, output);
        return [Read(b, output)];
    }

    private static float[][] LayerNorm(IBackend b, int rows, int n, bool inPlace)
    {
        var random = new Random((rows * 17) + n);
        using var weight = F32(b, Values(random, n, 2f), n);
        using var bias = F32(b, Values(random, n), n);
        // A large common offset checks that the variance is taken around the mean, not from E[x²] - mean².
        using var x = F32(b, Values(random, rows * n, 3f).Select(v => v + 40f).ToArray(), rows, n);
        using var output = inPlace ? null : Poisoned(b, rows, n);
        var target = output ?? x;
        b.LayerNorm(x, weight, bias, 1e-12f, target);
        return [Read(b, target)];
    }

    private static float[][] Activation(IBackend b, int n, bool gelu)
    {
        var random = new Random(n + 3);
        using var x = F32(b, Values(random, n, 7f), n);
        using var output = Poisoned(b, n);
        if (gelu)
        {
            b.Gelu(x, output);
        }
        else
        {
            b.Tanh(x, output);
        }

        return [Read(b, output)];
    }

    /// <summary>Packed sequences of the given lengths (0 allowed); each must see only its own keys.</summary>
    private static float[][] BidirectionalAttention(IBackend b, int heads, int headDim, int[] lengths)
    {
        var random = new Random((heads * 7) + headDim);
        var tokens = lengths.Sum();
        var starts = new int[lengths.Length + 1];
        for (var s = 0; s < lengths.Length; s++)
        {
            starts[s + 1] = starts[s] + lengths[s];
        }

        using var q = F32(b, Values(random, tokens * heads * headDim, 2f), tokens, heads, headDim);
        using var k = F32(b, Values(random, tokens * heads * headDim, 2f), tokens, heads, headDim);
        using var v = F32(b, Values(random, tokens * heads * headDim), tokens, heads, headDim);
        using var output = Poisoned(b, tokens, heads, headDim);
        b.BidirectionalAttention(q, k, v, starts, 1f / MathF.Sqrt(headDim), output);
        return [Read(b, output)];
    }

    private static float[] Values(Random random, int count, float magnitude = 1f)
    {
        var v = new float[count];
        for (var i = 0; i < v.Length; i++)
        {
            v[i] = (float)((random.NextDouble() * 2) - 1) * magnitude;
        }

        return v;
    }

    private static byte[] Encode(float[] values, DType dtype)
    {
        if (dtype.IsQuantized())
        {
            var blocks = new byte[dtype.StorageBytes(values.Length)];
            Enclave.Engine.Formats.Gguf.GgmlQuants.Quantize(dtype, values, blocks);
            return blocks;
        }

        var bytes = new byte[values.Length * dtype.SizeInBytes()];
        for (var i = 0; i < values.Length; i++)
        {
            switch (dtype)
            {
                case DType.F32:
                    BitConverter.TryWriteBytes(bytes.AsSpan(i * 4), values[i]);
                    break;
                case DType.F16:
                    BitConverter.TryWriteBytes(bytes.AsSpan(i * 2), (Half)values[i]);
                    break;
                default:
                    BitConverter.TryWriteBytes(bytes.AsSpan(i * 2), (ushort)(BitConverter.SingleToUInt32Bits(values[i]) >> 16));
                    break;
            }
        }

        return bytes;
    }

    private static DeviceTensor Weight(IBackend b, DType dtype, float[] values, params int[] shape)
    {
        var t = b.Allocate(dtype, shape);
        b.UploadBytes(Encode(values, dtype), t);
        return t;
    }

    private static DeviceTensor F32(IBackend b, float[] values, params int[] shape)
    {
        var t = b.Allocate(DType.F32, shape);
        b.Upload(values, t);
        return t;
    }

    private static DeviceTensor Poisoned(IBackend b, params int[] shape)
    {
        var t = b.Allocate(DType.F32, shape);
        b.Upload(Enumerable.Repeat(float.NaN, (int)t.ElementCount).ToArray(), t);
        return t;
    }

    private static float[] Read(IBackend b, DeviceTensor t)
    {
        var host = new float[t.ElementCount];
        b.Download(t, host);
        return host;
    }

    private static ForwardBatch Batch(int[] ids, int[] positions, int[] slots, SequenceSlice[] sequences, int[] logitRows) => new()
    {
        TokenIds = ids,
        Positions = positions,
        SlotMapping = slots,
        Sequences = sequences,
        LogitRows = logitRows,
    };

    private static ForwardBatch Simple(int tokens, int[]? ids = null, int[]? positions = null, int[]? logitRows = null) =>
        Batch(ids ?? new int[tokens], positions ?? Enumerable.Range(0, tokens).ToArray(), Enumerable.Range(0, tokens).ToArray(),
            [new SequenceSlice(0, tokens, tokens, [0])], logitRows ?? [tokens - 1]);

    private static float[][] Embedding(IBackend b, DType dtype, int vocab, int hidden, int tokens)
    {
        var random = new Random(11);
        using var table = Weight(b, dtype, Values(random, vocab * hidden), vocab, hidden);
        var ids = Enumerable.Range(0, tokens).Select(_ => random.Next(vocab)).ToArray();
        ids[^1] = vocab - 1;
        using var output = Poisoned(b, tokens, hidden);
        var batch = Simple(tokens, ids);
        b.PrepareStep(batch);
        b.Embedding(table, batch, output);
        return [Read(b, output)];
    }

    private static float[][] Norm(IBackend b, DType dtype, int rows, int n, bool add, bool inPlace = false)
    {
        var random = new Random(rows * n);
        using var weight = Weight(b, dtype, Values(random, n), n);
        using var x = F32(b, Values(random, rows * n, 3f), rows, n);
        using var residual = F32(b, Values(random, rows * n, 2f), rows, n);
        using var output = inPlace ? null : Poisoned(b, rows, n);
        var target = output ?? x;
        if (add)
        {
            b.AddRmsNorm(residual, x, weight, 1e-6f, target);
            return [Read(b, target), Read(b, residual)];
        }

        b.RmsNorm(x, weight, 1e-5f, target);
        return [Read(b, target)];
    }

    private static float[][] MatMul(IBackend b, DType dtype, int tokens, int inFeatures, int outFeatures, bool bias)
    {
        var random = new Random((tokens * 7919) + inFeatures + outFeatures);
        using var w = Weight(b, dtype, Values(random, inFeatures * outFeatures, 0.5f), outFeatures, inFeatures);
        using var bt = bias ? F32(b, Values(random, outFeatures), outFeatures) : null;
        using var x = F32(b, Values(random, tokens * inFeatures), tokens, inFeatures);
        using var y = Poisoned(b, tokens, outFeatures);
        b.MatMul(x, w, bt, y);
        return [Read(b, y)];
    }

    /// <summary>
    /// Products of one x through several weights; <paramref name="stacked"/> puts the weights in consecutive rows of
    /// one allocation (as <see cref="IBackend.LoadWeightStack"/> does), the layout a backend may multiply in one go.
    /// </summary>
    private static float[][] MatMulShared(IBackend b, DType dtype, int tokens, int inFeatures, int[] outFeatures, bool bias, bool stacked = false)
    {
        var random = new Random((tokens * 7919) + inFeatures + outFeatures.Sum());
        var values = outFeatures.Select(o => Values(random, inFeatures * o, 0.5f)).ToArray();
        using var stack = stacked ? Weight(b, dtype, [.. values.SelectMany(v => v)], outFeatures.Sum(), inFeatures) : null;
        var weights = outFeatures.Select((o, i) => stack is null ? Weight(b, dtype, values[i], o, inFeatures) : stack.SliceRows(outFeatures.Take(i).Sum(), o)).ToArray();
        var biases = outFeatures.Select(o => bias ? F32(b, Values(random, o), o) : null).ToArray();
        using var x = F32(b, Values(random, tokens * inFeatures), tokens, inFeatures);
        var outputs = outFeatures.Select(o => Poisoned(b, tokens, o)).ToArray();
        try
        {
            b.MatMulShared(x, [.. outFeatures.Select((_, i) => new MatMulTarget(weights[i], biases[i], outputs[i]))]);
            return [.. outputs.Select(o => Read(b, o))];
        }
        finally
        {
            foreach (var t in weights.Concat(biases).Concat(outputs))
            {
                t?.Dispose();
            }
        }
    }

    private static float[][] SiluGatedMatMul(IBackend b, DType dtype, int tokens, int inFeatures, int outFeatures, bool bias, bool stacked = false)
    {
        var random = new Random((tokens * 7907) + inFeatures + outFeatures);
        var gateValues = Values(random, inFeatures * outFeatures, 0.5f);
        var upValues = Values(random, inFeatures * outFeatures, 0.5f);
        using var stack = stacked ? Weight(b, dtype, [.. gateValues, .. upValues], 2 * outFeatures, inFeatures) : null;
        using var gate = stack is null ? Weight(b, dtype, gateValues, outFeatures, inFeatures) : stack.SliceRows(0, outFeatures);
        using var up = stack is null ? Weight(b, dtype, upValues, outFeatures, inFeatures) : stack.SliceRows(outFeatures, outFeatures);
        using var gateBias = bias ? F32(b, Values(random, outFeatures), outFeatures) : null;
        using var upBias = bias ? F32(b, Values(random, outFeatures), outFeatures) : null;
        using var x = F32(b, Values(random, tokens * inFeatures), tokens, inFeatures);
        using var output = Poisoned(b, tokens, outFeatures);
        using var scratch = Poisoned(b, tokens, outFeatures);
        b.SiluGatedMatMul(x, new MatMulTarget(gate, gateBias, output), new MatMulTarget(up, upBias, scratch));
        return [Read(b, output)];
    }

    private static float[][] SiluGatedMlp(IBackend b, DType dtype, int tokens, int inFeatures, int inner, int outFeatures, bool bias, bool stacked)
    {
        var random = new Random((tokens * 7919) + inFeatures + inner + outFeatures);
        var gateValues = Values(random, inFeatures * inner, 0.5f);
        var upValues = Values(random, inFeatures * inner, 0.5f);
        using var stack = stacked ? Weight(b, dtype, [.. gateValues, .. upValues], 2 * inner, inFeatures) : null;
        using var gate = stack is null ? Weight(b, dtype, gateValues, inner, inFeatures) : stack.SliceRows(0, inner);
        using var up = stack is null ? Weight(b, dtype, upValues, inner, inFeatures) : stack.SliceRows(inner, inner);
        using var down = Weight(b, dtype, Values(random, inner * outFeatures, 0.5f), outFeatures, inner);
        using var gateBias = bias ? F32(b, Values(random, inner), inner) : null;
        using var upBias = bias ? F32(b, Values(random, inner), inner) : null;
        using var downBias = bias ? F32(b, Values(random, outFeatures), outFeatures) : null;
        using var x = F32(b, Values(random, tokens * inFeatures), tokens, inFeatures);
        using var gateScratch = Poisoned(b, tokens, inner);
        using var upScratch = Poisoned(b, tokens, inner);
        using var output = Poisoned(b, tokens, outFeatures);
        b.SiluGatedMlp(x, new MatMulTarget(gate, gateBias, gateScratch), new MatMulTarget(up, upBias, upScratch), new MatMulTarget(down, downBias, output));
        return [Read(b, output)];
    }

    private static float[][] QuantizedMatMul(IBackend b, WeightEncoding encoding, int tokens, int inFeatures, int outFeatures, int blockRows, int blockColumns, bool bias)
    {
        var random = new Random((tokens * 31) + inFeatures + outFeatures);
        var fp8 = encoding == WeightEncoding.Fp8Block;
        int scaleRows = (outFeatures + blockRows - 1) / blockRows, scaleColumns = (inFeatures + blockColumns - 1) / blockColumns;
        var bytes = new byte[fp8 ? outFeatures * inFeatures : outFeatures * inFeatures / 2];
        random.NextBytes(bytes);
        for (var i = 0; fp8 && i < bytes.Length; i++)
        {
            if ((bytes[i] & 0x7F) == 0x7F)
            {
                bytes[i] ^= 1; // 0x7F/0xFF are NaN in e4m3: keep the weights finite
            }
        }

        var data = b.Allocate(fp8 ? DType.F8E4M3 : DType.U8, outFeatures, fp8 ? inFeatures : inFeatures / 2);
        b.UploadBytes(bytes, data);
        var scales = F32(b, Values(random, scaleRows * scaleColumns).Select(v => 0.01f + Math.Abs(v * 0.05f)).ToArray(), scaleRows, scaleColumns);
        DeviceTensor? zeros = null;
        if (!fp8)
        {
            var z = new byte[outFeatures * scaleColumns];
            for (var i = 0; i < z.Length; i++)
            {
                z[i] = (byte)random.Next(16);
            }

            zeros = b.Allocate(DType.U8, outFeatures, scaleColumns);
            b.UploadBytes(z, zeros);
        }

        using var w = new QuantizedWeight(encoding, outFeatures, inFeatures, blockRows, blockColumns, data, scales, zeros);
        using var bt = bias ? F32(b, Values(random, outFeatures), outFeatures) : null;
        using var x = F32(b, Values(random, tokens * inFeatures), tokens, inFeatures);
        using var y = Poisoned(b, tokens, outFeatures);
        b.QuantizedMatMul(x, w, bt, y);
        return [Read(b, y)];
    }

    private static float[][] Rope(IBackend b, int tokens, int heads, int headDim, int rotary, bool interleaved, float scaling)
    {
        var random = new Random((heads * 31) + headDim);
        var frequencies = Enumerable.Range(0, rotary / 2).Select(i => (float)Math.Pow(10000, -2.0 * i / rotary)).ToArray();
        var positions = Enumerable.Range(0, tokens).Select(_ => random.Next(5000)).ToArray();
        using var x = F32(b, Values(random, tokens * heads * headDim), tokens, heads, headDim);
        var batch = Simple(tokens, positions: positions);
        b.PrepareStep(batch);
        b.Rope(x, batch, new RopeSpec(frequencies, rotary, interleaved, scaling));
        return [Read(b, x)];
    }

    private static float[][] Elementwise(IBackend b, int n, bool silu, bool inPlace = false)
    {
        var random = new Random(n);
        using var x = F32(b, Values(random, n, 6f), n);
        using var y = F32(b, Values(random, n, 2f), n);
        using var output = inPlace ? null : Poisoned(b, n);
        var target = output ?? x;
        if (silu)
        {
            b.SiluMul(x, y, target);
        }
        else
        {
            b.Add(x, y, target);
        }

        return [Read(b, target)];
    }

    private static float[][] Gather(IBackend b)
    {
        var random = new Random(9);
        using var x = F32(b, Values(random, 9 * 130), 9, 130);
        using var output = Poisoned(b, 3, 130);
        var batch = Simple(9, logitRows: [8, 0, 4]);
        b.PrepareStep(batch);
        b.GatherLogitRows(x, batch, output);
        return [Read(b, output)];
    }

    /// <summary>
    /// Greedy ids of rows built to catch every rule: a tie (lowest index wins), NaN that must never win (one at index
    /// 0), a row of only -inf and NaN (0, as the host sampler returns), +inf twice, and the maximum in the last column
    /// (vocab sizes are no multiple of a block or vector). The ids are poisoned first.
    /// </summary>
    private static float[][] Argmax(IBackend b, int rows, int vocab)
    {
        var random = new Random((rows * 7) + vocab);
        var values = Values(random, rows * vocab, 4f);
        var row = (int r) => values.AsSpan(r * vocab, vocab);
        row(0)[vocab - 1] = 9f;
        row(0)[vocab - 2] = 9f;
        if (rows > 1)
        {
            row(1)[0] = float.NaN;
            row(1)[vocab / 3] = float.NaN;
            row(1)[vocab / 2] = 7f;
            row(1)[vocab - 5] = 7f;
            row(2).Fill(float.NegativeInfinity);
            row(2)[1] = float.NaN;
            row(3)[500] = float.PositiveInfinity;
            row(3)[900] = float.PositiveInfinity;
            row(4)[vocab - 1] = 11f;
        }

        using var logits = F32(b, values, rows, vocab);
        var ids = Enumerable.Repeat(int.MinValue, rows).ToArray();
        b.Argmax(logits, ids);
        return [ids.Select(i => (float)i).ToArray()];
    }

    /// <summary>
    /// Several sequences in one step, each with earlier tokens already cached in shuffled blocks and this step's
    /// tokens arriving as k/v inputs. Spare cache blocks hold NaN, so reading outside the block table shows.
    /// </summary>
    private static float[][] Attention(IBackend b, int heads, int kvHeads, int headDim, int blockSize, (int Query, int Context)[] sequences, DType cacheType = DType.F32,
        RopeSpec? rope = null)
    {
        var random = new Random((heads * 131) + (headDim * 7) + blockSize);
        var rowFloats = kvHeads * headDim;
        var (batch, cache, rows, blocks) = Paged(random, blockSize, rowFloats, sequences, streams: 2);
        var tokens = batch.TokenCount;
        using var q = F32(b, Values(random, tokens * heads * headDim, 2f), tokens, heads, headDim);
        var bf16 = cacheType == DType.BF16;
        if (bf16)
        {
            foreach (var values in cache.Concat(rows))
            {
                RoundToBf16(values);
            }
        }

        var nativeBf16 = bf16 && b.SupportsKvCache(new KvCacheSpec(1, kvHeads, headDim) { DType = DType.BF16 });
        using var kt = F32(b, rows[0], tokens, kvHeads, headDim);
        using var vt = F32(b, rows[1], tokens, kvHeads, headDim);
        using var kc = nativeBf16 ? Weight(b, DType.BF16, cache[0], blocks, blockSize, kvHeads, headDim) : F32(b, cache[0], blocks, blockSize, kvHeads, headDim);
        using var vc = nativeBf16 ? Weight(b, DType.BF16, cache[1], blocks, blockSize, kvHeads, headDim) : F32(b, cache[1], blocks, blockSize, kvHeads, headDim);
        using var output = Poisoned(b, tokens, heads, headDim);
        b.PrepareStep(batch);
        if (rope is null)
        {
            b.Attention(q, kt, vt, kc, vc, batch, 1f / MathF.Sqrt(headDim), output);
        }
        else
        {
            b.RopeAttention(q, kt, vt, kc, vc, batch, rope, 1f / MathF.Sqrt(headDim), output);
        }

        // A bf16 cache is checked through the output (which attends to the rows this step wrote); f32 caches directly.
        return bf16 ? [Read(b, output)] : [Read(b, output), Read(b, kc), Read(b, vc)];
    }

    /// <summary>Inverse frequencies theta^(-2i/rotary) with theta 10000, as RotaryEmbedding builds them for default rope.</summary>
    private static RopeSpec TestRope(int rotary, bool interleaved, float scaling)
    {
        var frequencies = Enumerable.Range(0, rotary / 2).Select(i => (float)Math.Pow(10000, -2.0 * i / rotary)).ToArray();
        return new RopeSpec(frequencies, rotary, interleaved, scaling);
    }

    /// <summary>Rounds in place to the nearest bf16 (ties to even), as a bf16 cache stores values; NaN stays NaN.</summary>
    private static void RoundToBf16(float[] values)
    {
        for (var i = 0; i < values.Length; i++)
        {
            if (!float.IsNaN(values[i]))
            {
                values[i] = BitConverter.Int32BitsToSingle(Enclave.Engine.Formats.Gguf.GgmlQuants.FloatToBf16(values[i]) << 16);
            }
        }
    }

    /// <summary>
    /// Several sequences in one step over a paged cache: each sequence's earlier rows are already in shuffled blocks,
    /// this step's rows arrive as inputs. Per stream (K and V, or MLA's latent) the cache (spare blocks NaN, so a read
    /// outside the block table shows) and the new rows [tokens, rowFloats].
    /// </summary>
    private static (ForwardBatch Batch, float[][] Cache, float[][] NewRows, int Blocks) Paged(Random random, int blockSize, int rowFloats, (int Query, int Context)[] sequences, int streams)
    {
        var blocks = sequences.Sum(s => (s.Context + blockSize - 1) / blockSize) + 3;
        var order = Enumerable.Range(0, blocks).OrderBy(_ => random.Next()).ToArray();
        var tokens = sequences.Sum(s => s.Query);
        var positions = new int[tokens];
        var slots = new int[tokens];
        var slices = new SequenceSlice[sequences.Length];
        var cache = Enumerable.Range(0, streams).Select(_ => Enumerable.Repeat(float.NaN, blocks * blockSize * rowFloats).ToArray()).ToArray();
        var newRows = Enumerable.Range(0, streams).Select(_ => new float[tokens * rowFloats]).ToArray();
        int next = 0, start = 0;
        for (var s = 0; s < sequences.Length; s++)
        {
            var (query, context) = sequences[s];
            var table = order.Skip(next).Take((context + blockSize - 1) / blockSize).ToArray();
            next += table.Length;
            slices[s] = new SequenceSlice(start, query, context, table);
            var values = Enumerable.Range(0, streams).Select(_ => Values(random, context * rowFloats)).ToArray();
            for (var p = 0; p < context; p++)
            {
                var slot = (table[p / blockSize] * blockSize) + (p % blockSize);
                var t = start + p - (context - query);
                for (var k = 0; k < streams; k++)
                {
                    if (t >= start)
                    {
                        Array.Copy(values[k], p * rowFloats, newRows[k], t * rowFloats, rowFloats);
                    }
                    else
                    {
                        Array.Copy(values[k], p * rowFloats, cache[k], slot * rowFloats, rowFloats);
                    }
                }

                if (t >= start)
                {
                    positions[t] = p;
                    slots[t] = slot;
                }
            }

            start += query;
        }

        return (Batch(new int[tokens], positions, slots, slices, [tokens - 1]), cache, newRows, blocks);
    }

    private static float[][] LatentAttention(IBackend b, int heads, int rank, int rope, int blockSize, (int Query, int Context)[] sequences)
    {
        var random = new Random((heads * 97) + rank + blockSize);
        var width = rank + rope;
        var (batch, cache, rows, blocks) = Paged(random, blockSize, width, sequences, streams: 1);
        var tokens = batch.TokenCount;
        using var q = F32(b, Values(random, tokens * heads * width, 0.5f), tokens, heads, width);
        using var latent = F32(b, rows[0], tokens, width);
        using var cacheTensor = F32(b, cache[0], blocks, blockSize, 1, width);
        using var output = Poisoned(b, tokens, heads, rank);
        b.PrepareStep(batch);
        b.LatentAttention(q, latent, cacheTensor, batch, 1f / MathF.Sqrt(width), rank, output);
        return [Read(b, output), Read(b, cacheTensor)];
    }

    private static float[][] CopyColumns(IBackend b, int rows, int xWidth, int xOffset, int outWidth, int outOffset, int count)
    {
        var random = new Random(rows + xWidth);
        using var x = F32(b, Values(random, rows * xWidth), rows, xWidth);
        using var output = Poisoned(b, rows, outWidth);
        b.CopyColumns(x, xOffset, output, outOffset, count);
        return [Read(b, output)];
    }

    private static float[][] HeadMatMul(IBackend b, int tokens, int heads, int inDim, int outDim)
    {
        var random = new Random((tokens * heads) + inDim);
        using var x = F32(b, Values(random, tokens * heads * inDim), tokens, heads, inDim);
        using var w = F32(b, Values(random, heads * outDim * inDim), heads, outDim, inDim);
        using var output = Poisoned(b, tokens, heads, outDim);
        b.HeadMatMul(x, w, output);
        return [Read(b, output)];
    }

    /// <summary>latent [T, rank + rope] normalised and rotated in place; the scratch halves start poisoned.</summary>
    private static float[][] LatentNormRope(IBackend b, DType weightType, int tokens, int rank, int rope, int rotary, bool interleaved)
    {
        var random = new Random((tokens * 13) + rank + rope);
        var positions = Enumerable.Range(0, tokens).Select(_ => random.Next(5000)).ToArray();
        using var latent = F32(b, Values(random, tokens * (rank + rope), 3f), tokens, rank + rope);
        using var weight = Weight(b, weightType, Values(random, rank), rank);
        using var compressed = Poisoned(b, tokens, rank);
        using var pe = Poisoned(b, tokens, rope);
        var batch = Simple(tokens, positions: positions);
        b.PrepareStep(batch);
        b.LatentNormRope(latent, weight, 1e-6f, batch, TestRope(rotary, interleaved, 1.1f), compressed, pe);
        return [Read(b, latent)];
    }

    /// <summary>qFull [T, heads, rank + rope] from q [T, heads, nope + rope]; qFull and the scratch start poisoned.</summary>
    private static float[][] LatentQuery(IBackend b, int tokens, int heads, int nope, int rope, int rotary, int rank, bool interleaved)
    {
        var random = new Random((tokens * heads) + nope + rank);
        var positions = Enumerable.Range(0, tokens).Select(_ => random.Next(5000)).ToArray();
        using var q = F32(b, Values(random, tokens * heads * (nope + rope)), tokens, heads, nope + rope);
        using var keyAbsorb = F32(b, Values(random, heads * rank * nope), heads, rank, nope);
        using var qFull = Poisoned(b, tokens * heads, rank + rope);
        using var qNope = Poisoned(b, tokens * heads, nope);
        using var qPe = Poisoned(b, tokens * heads, rope);
        using var qLatent = Poisoned(b, tokens * heads, rank);
        var batch = Simple(tokens, positions: positions);
        b.PrepareStep(batch);
        b.LatentQuery(q, keyAbsorb, batch, TestRope(rotary, interleaved, 1f), qFull, qNope, qPe, qLatent);
        return [Read(b, qFull)];
    }

    private static float[][] MoeRoute(IBackend b, MoeRouting routing, int tokens, bool withBias)
    {
        var random = new Random(routing.Experts * 17 + tokens);
        using var logits = F32(b, Values(random, tokens * routing.Experts, 3f), tokens, routing.Experts);
        using var bias = withBias ? F32(b, Values(random, routing.Experts, 0.5f), routing.Experts) : null;
        var ids = new int[tokens * routing.TopK];
        var weights = new float[tokens * routing.TopK];
        b.MoeRoute(logits, bias, routing, ids, weights);
        return [ids.Select(i => (float)i).ToArray(), weights];
    }

    private static float[][] MoeExperts(IBackend b, DType dtype, MoeRouting routing, int tokens, int hidden, int inter, bool withBias)
    {
        var random = new Random((routing.Experts * 31) + (tokens * 7) + hidden);
        var experts = routing.Experts;
        using var x = F32(b, Values(random, tokens * hidden), tokens, hidden);
        using var logits = F32(b, Values(random, tokens * experts, 3f), tokens, experts);
        using var bias = withBias ? F32(b, Values(random, experts, 0.5f), experts) : null;
        using var gateUp = Weight(b, dtype, Values(random, experts * 2 * inter * hidden, 0.3f), experts * 2 * inter, hidden);
        using var down = Weight(b, dtype, Values(random, experts * hidden * inter, 0.3f), experts * hidden, inter);
        using var output = F32(b, Values(random, tokens * hidden), tokens, hidden);
        b.MoeExperts(x, logits, bias, routing, gateUp, down, output);
        return [Read(b, output)];
    }

    private static float[][] Rows(IBackend b, int tokens, int columns, int picks, bool scatter)
    {
        var random = new Random((tokens * columns) + picks);
        var rows = Enumerable.Range(0, picks).Select(_ => random.Next(tokens)).ToArray();
        if (!scatter)
        {
            using var x = F32(b, Values(random, tokens * columns), tokens, columns);
            using var gathered = Poisoned(b, picks, columns);
            b.GatherRows(x, rows, gathered);
            return [Read(b, gathered)];
        }

        var weights = Values(random, picks);
        using var source = F32(b, Values(random, picks * columns), picks, columns);
        using var output = F32(b, Values(random, tokens * columns), tokens, columns);
        b.ScatterAddRows(source, rows, weights, output);
        return [Read(b, output)];
    }
}
