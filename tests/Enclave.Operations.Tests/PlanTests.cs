using System.CommandLine;
using System.Text.Json;
using Enclave.Operations.Cli;
using Enclave.Operations.Planning;

namespace Enclave.Operations.Tests;

/// <summary>
/// The planner against hand calculations from the published config.json files (Configs/). Each expected value is
/// worked out below from the config's numbers, independently of the planner's code paths.
/// </summary>
public sealed class PlanTests
{
    private static RootCommand Root()
    {
        var root = new RootCommand();
        foreach (var c in OperationsCommands.Create())
        {
            root.Subcommands.Add(c);
        }

        return root;
    }

    private static string Config(string name) => Path.Combine(AppContext.BaseDirectory, "Configs", name);

    private static SizingPlan Plan(string config, string quant, int context, int concurrency, string gpu) =>
        SizingPlan.Compute(new PlanRequest(ModelShape.Load(Config(config)), QuantScheme.Find(quant), context, concurrency, GpuSpec.Find(gpu)));

    [Fact]
    public void DeepSeekR1At671BInFp8()
    {
        // Per layer, MLA projections: q_a 7168×1536, q_b 1536×128×(128+64), kv_a 7168×(512+64), kv_b 512×128×(128+128), o 128×128×7168.
        long attention = 7168L * 1536 + 1536L * 128 * 192 + 7168L * 576 + 512L * 128 * 256 + 128L * 128 * 7168;
        long expert = 3L * 7168 * 2048; // gate, up, down of one expert
        long projection = 61 * attention + 3 * (3L * 7168 * 18432) + 58 * (256 + 1) * expert; // 3 dense layers, 58 MoE layers (256 routed + 1 shared)
        long sixteenBit = 2L * 129280 * 7168 + 7168 // embed_tokens, lm_head, final norm
            + 61L * (1536 + 512) + 61L * 2 * 7168 // q_a/kv_a layernorms, input/post-attention norms
            + 58L * (256 * 7168 + 256); // router weight and e_score_correction_bias
        Assert.Equal(671_026_419_200, projection + sixteenBit); // the published 671B (the MTP layer is not served)

        // FP8: one byte per projection weight plus one fp32 scale per 128×128 block; the rest stays BF16.
        long weightBytes = projection + (projection + 16383) / 16384 * 4 + 2 * sixteenBit;
        long kvPerToken = 61L * (512 + 64) * 2; // MLA caches the latent and the rope key: 70,272 bytes

        var h200 = Plan("deepseek-r1.json", "fp8", 8192, 16, "h200");
        Assert.Equal(671_026_419_200, h200.Request.Model.TotalParameters);
        Assert.Equal(673_150_575_280, weightBytes);
        Assert.Equal(weightBytes, h200.WeightBytes);
        Assert.Equal(kvPerToken, h200.KvBytesPerToken);
        Assert.Equal(70_272, h200.KvBytesPerToken);
        // Active per token: everything but 248 of the 256 routed experts in each MoE layer (about 37B).
        Assert.Equal(projection + sixteenBit - 58L * 248 * expert, h200.Request.Model.ActiveParameters);

        // 8 × H200: 673.2 GB / 8 = 84.1 GB weights + 9.2 GB replicated MLA cache + 2.6 GB activations ≤ 0.9 × 141 GiB.
        Assert.Equal(8, h200.GpusNeeded);
        Assert.Equal((8, 1), (h200.TensorParallel, h200.PipelineParallel));
        // H100 80GB: 84.1 GB per GPU does not fit 8; 16 GPUs = two nodes, TP 8 × PP 2.
        var h100 = Plan("deepseek-r1.json", "fp8", 8192, 16, "h100-80g");
        Assert.Equal(16, h100.GpusNeeded);
        Assert.Equal((8, 2), (h100.TensorParallel, h100.PipelineParallel));
    }

    [Fact]
    public void R1DistillQwen7BInBf16()
    {
        long attention = 2L * 3584 * 3584 + 2L * 3584 * (4 * 128); // q and o, then k and v (4 KV heads × 128)
        long mlp = 3L * 3584 * 18944;
        long sixteenBit = 2L * 152064 * 3584 + 3584 + 28L * (2 * 3584) + 28L * (3584 + 2 * 512); // embeddings+lm_head, norms, q/k/v biases
        long parameters = 28 * (attention + mlp) + sixteenBit;
        Assert.Equal(7_615_616_512, parameters);

        var plan = Plan("r1-distill-qwen-7b.json", "bf16", 8192, 64, "h100-80g");
        Assert.Equal(2 * parameters, plan.WeightBytes);
        Assert.Equal(2L * 28 * 4 * 128 * 2, plan.KvBytesPerToken); // 57,344
        Assert.Equal(57_344L * 8192 * 64, plan.KvBytesTotal); // 28 GiB
        Assert.Equal(1, plan.GpusNeeded); // 14.2 GiB + 28 GiB + 2.5 GiB on one 80 GB card

        // On 24 GB cards the same load needs 4: 15.2/4 GB weights + 30.1/4 GB KV + 2.7 GB activations ≤ 23.2 GB.
        Assert.Equal(4, Plan("r1-distill-qwen-7b.json", "bf16", 8192, 64, "4090").GpusNeeded);
        // Decode bound for one stream: bandwidth / (weights + one context of KV).
        Assert.Equal(3.35e12 / (2.0 * parameters + 57_344.0 * 8192), plan.SingleStreamTokensPerSecond, 6);
    }

    [Fact]
    public void R1DistillQwen32BInBf16()
    {
        long attention = 2L * 5120 * 5120 + 2L * 5120 * (8 * 128);
        long mlp = 3L * 5120 * 27648;
        long sixteenBit = 2L * 152064 * 5120 + 5120 + 64L * (2 * 5120) + 64L * (5120 + 2 * 1024);
        long parameters = 64 * (attention + mlp) + sixteenBit;
        Assert.Equal(32_763_876_352, parameters);

        var plan = Plan("r1-distill-qwen-32b.json", "bf16", 32768, 32, "h100-80g");
        Assert.Equal(65_527_752_704, plan.WeightBytes);
        Assert.Equal(2L * 64 * 8 * 128 * 2, plan.KvBytesPerToken); // 262,144
        // KV total 262,144 × 32768 × 32 = 256 GiB: weights/n + KV/min(n, 8) + activations must fit 0.9 × 80 GiB → n = 8.
        Assert.Equal(262_144L * 32768 * 32, plan.KvBytesTotal);
        Assert.Equal(8, plan.GpusNeeded);
    }

    [Fact]
    public void Llama3At70BInInt4()
    {
        long attention = 2L * 8192 * 8192 + 2L * 8192 * (8 * 128);
        long mlp = 3L * 8192 * 28672;
        long projection = 80 * (attention + mlp);
        long sixteenBit = 2L * 128256 * 8192 + 8192 + 80L * 2 * 8192;
        Assert.Equal(70_553_706_496, projection + sixteenBit);

        // INT4: half a byte per weight plus fp16 scale and zero point (4 bytes) per group of 128.
        long weightBytes = projection / 2 + projection / 128 * 4 + 2 * sixteenBit;
        var plan = Plan("llama-3-70b.json", "int4", 8192, 32, "a100-80g");
        Assert.Equal(40_569_946_112, weightBytes);
        Assert.Equal(weightBytes, plan.WeightBytes);
        Assert.Equal(2L * 80 * 8 * 128 * 2, plan.KvBytesPerToken); // 327,680
        // 80 GiB of KV: one A100 cannot hold it; two hold 20.3 GB weights + 43 GB KV + 2.7 GB activations each.
        Assert.Equal(2, plan.GpusNeeded);
    }

    [Fact]
    public async Task TheCommandPrintsJsonWithTheContractKeysAndRejectsBadInput()
    {
        var output = new StringWriter();
        var root = Root();
        var rc = await root.Parse(["plan", "--model", Config("r1-distill-qwen-7b.json"), "--quant", "bf16", "--context", "8192", "--concurrency", "64", "--gpu", "h100-80g", "--json"])
            .InvokeAsync(new InvocationConfiguration { Output = output, EnableDefaultExceptionHandler = false });
        Assert.Equal(0, rc);
        using var doc = JsonDocument.Parse(output.ToString());
        Assert.Equal(15_231_233_024, doc.RootElement.GetProperty("weight_bytes").GetInt64());
        Assert.Equal(57_344, doc.RootElement.GetProperty("kv_bytes_per_token").GetInt64());
        Assert.Equal(1, doc.RootElement.GetProperty("gpus_needed").GetInt32());
        Assert.Contains(doc.RootElement.GetProperty("formulas").EnumerateArray(), f => f.GetString()!.StartsWith("kv_bytes_per_token = 2 (K,V)", StringComparison.Ordinal));

        var bad = await Assert.ThrowsAsync<ArgumentException>(() => root.Parse(["plan", "--model", Config("r1-distill-qwen-7b.json"), "--quant", "fp4"])
            .InvokeAsync(new InvocationConfiguration { Output = output, EnableDefaultExceptionHandler = false }));
        Assert.Contains("--quant fp4: unknown scheme", bad.Message);
        Assert.Throws<ArgumentException>(() => GpuSpec.Find("b200"));
    }

    [Fact]
    public void CostComparesOnPremisesWithTheCloudAndFindsTheBreakEven()
    {
        var inputs = new CostInputs
        {
            HardwareCost = 365_000, AmortisationYears = 5, PowerKw = 10, Pue = 1.5, ElectricityPerKwh = 0.1, SpacePerMonth = 0, StaffPerYear = 36_500,
            RequestsPerDay = 200_000, InputTokensPerRequest = 1000, OutputTokensPerRequest = 1000, CloudInputPerMillion = 1, CloudOutputPerMillion = 3,
        };
        var r = CostResult.Compute(inputs);
        // hardware 365000/(5×365) = 200; energy 10×1.5×24×0.1 = 36; staff 100 → 336 per day.
        Assert.Equal(336, r.OnPremPerDay, 9);
        // cloud per request (1000×1 + 1000×3)/1e6 = 0.004 → 800 per day; break-even 336/0.004 = 84,000 requests per day.
        Assert.Equal(0.004, r.CloudPerRequest, 12);
        Assert.Equal(800, r.CloudPerDay, 9);
        Assert.Equal(84_000, r.BreakEvenRequestsPerDay!.Value, 6);
        Assert.Contains("on-premises is cheaper", r.ToText(false));
        Assert.StartsWith("EXAMPLE inputs", r.ToText(true));
    }

    [Fact]
    public async Task CostReadsAYamlFileAndRefusesUnknownKeys()
    {
        var dir = Directory.CreateTempSubdirectory("enclave-cost-");
        try
        {
            var file = Path.Combine(dir.FullName, "cost.yaml");
            await File.WriteAllTextAsync(file, string.Join('\n', CostInputs.Fields.Select(f => $"{f.Key}: 2")) + "\n");
            var output = new StringWriter();
            var root = Root();
            Assert.Equal(0, await root.Parse(["plan", "cost", "--config", file, "--requests-per-day", "1000", "--json"]).InvokeAsync(new InvocationConfiguration { Output = output }));
            using var doc = JsonDocument.Parse(output.ToString());
            Assert.False(doc.RootElement.GetProperty("example_defaults_used").GetBoolean());
            // All inputs 2 except volume: on-prem 2/(2×365) + 2×2×24×2 + 2×12/365 + 2/365; cloud (2×2 + 2×2)/1e6 per request.
            var onPrem = 2.0 / 730 + 192 + 24.0 / 365 + 2.0 / 365;
            Assert.Equal(Math.Round(onPrem, 2), doc.RootElement.GetProperty("on_prem_per_day").GetDouble());
            Assert.Equal(Math.Round(onPrem / 8e-6), doc.RootElement.GetProperty("break_even_requests_per_day").GetDouble());

            await File.WriteAllTextAsync(file, "gpu_price: 3\n");
            var e = await Assert.ThrowsAsync<InvalidDataException>(() => root.Parse(["plan", "cost", "--config", file]).InvokeAsync(new InvocationConfiguration { Output = output, EnableDefaultExceptionHandler = false }));
            Assert.Contains("unknown key 'gpu_price'", e.Message);
        }
        finally
        {
            dir.Delete(true);
        }
    }
}
