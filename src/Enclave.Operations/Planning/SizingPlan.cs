using System.Globalization;
using System.Text;

namespace Enclave.Operations.Planning;

/// <summary>A GPU model as the planner sees it: usable memory as the driver reports it, and peak memory bandwidth.</summary>
public sealed record GpuSpec(string Id, string Name, long MemoryBytes, double BandwidthBytesPerSecond, int PerNode)
{
    private const long MiB = 1024 * 1024;

    /// <summary>Memory as nvidia-smi reports it (MiB) and the vendor's published peak bandwidth.</summary>
    public static readonly IReadOnlyList<GpuSpec> Catalog =
    [
        new("h100-80g", "NVIDIA H100 SXM 80GB", 81559 * MiB, 3.35e12, 8),
        new("h200", "NVIDIA H200 SXM 141GB", 143771 * MiB, 4.8e12, 8),
        new("a100-80g", "NVIDIA A100 SXM 80GB", 81920 * MiB, 2.039e12, 8),
        new("l40s", "NVIDIA L40S 48GB", 46068 * MiB, 0.864e12, 8),
        new("4090", "NVIDIA GeForce RTX 4090 24GB", 24564 * MiB, 1.008e12, 4),
    ];

    public static GpuSpec Find(string id) =>
        Catalog.FirstOrDefault(g => string.Equals(g.Id, id, StringComparison.OrdinalIgnoreCase))
        ?? throw new ArgumentException($"--gpu {id}: unknown GPU; known: {string.Join(", ", Catalog.Select(g => g.Id))}");
}

/// <summary>How a quantization scheme stores projection weights: bits per weight plus a scale per group.</summary>
public sealed record QuantScheme(string Id, int BitsPerWeight, int GroupSize, int ScaleBytesPerGroup, string Layout)
{
    public static readonly IReadOnlyList<QuantScheme> All =
    [
        new("bf16", 16, 0, 0, "16-bit weights, no scales"),
        new("fp8", 8, 128 * 128, 4, "e4m3 weights, one fp32 scale per 128x128 block (DeepSeek's FP8 layout)"),
        new("int8", 8, 128, 2, "int8 weights, one fp16 scale per group of 128"),
        new("int4", 4, 128, 4, "int4 weights, fp16 scale and zero point per group of 128 (AWQ/GPTQ layout)"),
    ];

    public static QuantScheme Find(string id) =>
        All.FirstOrDefault(q => string.Equals(q.Id, id, StringComparison.OrdinalIgnoreCase))
        ?? throw new ArgumentException($"--quant {id}: unknown scheme; use bf16, fp8, int8 or int4");

    /// <summary>Bytes for <paramref name="weights"/> projection weights: ceil(weights × bits / 8) + ceil(weights / group) × scale bytes.</summary>
    public long Bytes(long weights) =>
        (weights * BitsPerWeight + 7) / 8 + (GroupSize == 0 ? 0 : (weights + GroupSize - 1) / GroupSize * ScaleBytesPerGroup);
}

public sealed record PlanRequest(ModelShape Model, QuantScheme Quant, int Context, int Concurrency, GpuSpec Gpu, int KvBytesPerValue = 2, double MemoryUtilization = 0.9, int PrefillChunkTokens = 2048);

/// <summary>The sizing result; every figure comes with the formula that produced it in <see cref="Formulas"/>.</summary>
public sealed record SizingPlan
{
    public required PlanRequest Request { get; init; }
    public required long WeightBytes { get; init; }
    public required long ActiveWeightBytes { get; init; }
    public required long KvBytesPerToken { get; init; }
    public required long KvBytesTotal { get; init; }
    public required long ActivationBytesPerGpu { get; init; }
    public required int GpusNeeded { get; init; }
    public required int TensorParallel { get; init; }
    public required int PipelineParallel { get; init; }
    public required long WeightBytesPerGpu { get; init; }
    public required long KvBytesPerGpu { get; init; }
    public required long UsableBytesPerGpu { get; init; }
    public required double SingleStreamTokensPerSecond { get; init; }
    public required double AggregateTokensPerSecond { get; init; }
    public required IReadOnlyList<string> Formulas { get; init; }
    public required IReadOnlyList<string> Notes { get; init; }

    public static SizingPlan Compute(PlanRequest r)
    {
        if (r.Context <= 0 || r.Concurrency <= 0)
        {
            throw new ArgumentException("--context and --concurrency must be positive");
        }

        var m = r.Model;
        var formulas = new List<string>();
        var notes = new List<string>();

        var weightBytes = r.Quant.Bytes(m.ProjectionParameters) + m.SixteenBitParameters * 2;
        formulas.Add($"weight_bytes = quant({m.ProjectionParameters:N0} projection weights) + 2 × {m.SixteenBitParameters:N0} 16-bit weights = {weightBytes:N0}  [{r.Quant.Id}: {r.Quant.Layout}]");
        var activeProjection = m.ProjectionParameters - m.RoutedExpertParameters + (m.IsMoe ? m.RoutedExpertParameters / m.RoutedExperts * m.ExpertsPerToken : 0);
        var activeBytes = r.Quant.Bytes(activeProjection) + m.SixteenBitParameters * 2;
        if (m.IsMoe)
        {
            formulas.Add($"active_weight_bytes (one token: {m.ExpertsPerToken} of {m.RoutedExperts} routed experts) = {activeBytes:N0}");
        }

        long kvPerToken;
        if (m.UsesMla)
        {
            kvPerToken = (long)m.Layers * (m.KvLoraRank + m.QkRopeHeadDim) * r.KvBytesPerValue;
            formulas.Add($"kv_bytes_per_token (MLA) = layers × (kv_lora_rank + qk_rope_head_dim) × bytes = {m.Layers} × ({m.KvLoraRank} + {m.QkRopeHeadDim}) × {r.KvBytesPerValue} = {kvPerToken:N0}");
        }
        else
        {
            kvPerToken = 2L * m.Layers * m.KvHeads * m.HeadDim * r.KvBytesPerValue;
            formulas.Add($"kv_bytes_per_token = 2 (K,V) × layers × kv_heads × head_dim × bytes = 2 × {m.Layers} × {m.KvHeads} × {m.HeadDim} × {r.KvBytesPerValue} = {kvPerToken:N0}");
        }

        var kvTotal = kvPerToken * r.Context * r.Concurrency;
        formulas.Add($"kv_bytes_total = kv_bytes_per_token × context × concurrency = {kvPerToken:N0} × {r.Context} × {r.Concurrency} = {kvTotal:N0}");

        // Peak activations of one prefill chunk in fp32: residual + MLP gate/up + logits rows, plus a fixed
        // allowance for the CUDA context, cuBLAS workspace and allocator slack.
        const long RuntimeReserve = 1L << 30;
        var widestMlp = Math.Max(m.IntermediateSize, 1);
        var activation = (long)r.PrefillChunkTokens * (2L * m.HiddenSize + 2L * widestMlp + m.VocabSize) * 4 + RuntimeReserve;
        formulas.Add($"activation_bytes_per_gpu = chunk × (2×hidden + 2×intermediate + vocab) × 4 + 1 GiB runtime = {r.PrefillChunkTokens} × (2×{m.HiddenSize} + 2×{widestMlp} + {m.VocabSize}) × 4 + {RuntimeReserve:N0} = {activation:N0}");

        var usable = (long)(r.Gpu.MemoryBytes * r.MemoryUtilization);
        formulas.Add($"usable_bytes_per_gpu = memory × utilization = {r.Gpu.MemoryBytes:N0} × {r.MemoryUtilization.ToString(CultureInfo.InvariantCulture)} = {usable:N0}");

        // Smallest GPU count (powers of two within a node, whole nodes beyond) whose shard fits.
        int n = 0;
        long weightsPerGpu = 0, kvPerGpu = 0;
        foreach (var candidate in Candidates(r.Gpu.PerNode))
        {
            weightsPerGpu = Ceil(weightBytes, candidate);
            kvPerGpu = KvPerGpu(m, kvTotal, candidate);
            if (weightsPerGpu + kvPerGpu + activation <= usable)
            {
                n = candidate;
                break;
            }
        }

        if (n == 0)
        {
            throw new ArgumentException($"{m.Name} at {r.Quant.Id} with {r.Context} context × {r.Concurrency} sequences does not fit in 64 nodes of {r.Gpu.Id}");
        }

        formulas.Add(m.UsesMla
            ? "gpus_needed = smallest n with weight_bytes / n + kv_bytes_total + activation ≤ usable (MLA's latent cache is replicated on every tensor-parallel rank)"
            : "gpus_needed = smallest n with weight_bytes / n + kv_bytes_total / min(n, kv_heads) + activation ≤ usable");
        var tp = Math.Min(n, r.Gpu.PerNode);
        var pp = n / tp;
        if (pp > 1)
        {
            notes.Add($"{n} GPUs exceed one {r.Gpu.PerNode}-GPU node: tensor parallel {tp} inside each node, pipeline parallel {pp} across nodes");
        }

        if (m.IsMoe && n > 1)
        {
            notes.Add("MoE: expert parallelism (EP = data-parallel attention × experts spread over the GPUs) can replace TP for the expert layers and relieves the replicated MLA cache");
        }

        if (!m.UsesMla && m.KvHeads < tp)
        {
            notes.Add($"tensor parallel {tp} exceeds the {m.KvHeads} KV heads: each KV head is replicated on {tp / m.KvHeads} ranks");
        }

        // Decode is bound by memory bandwidth: each step reads the weights once and every sequence's KV cache.
        var bandwidth = r.Gpu.BandwidthBytesPerSecond * n;
        var contextKv = (double)kvPerToken * r.Context;
        var single = bandwidth / (activeBytes + contextKv);
        formulas.Add($"single_stream_tokens_per_s ≤ n × bandwidth / (active_weight_bytes + kv_bytes_per_token × context) = {n} × {r.Gpu.BandwidthBytesPerSecond:E3} / ({activeBytes:N0} + {contextKv:N0}) = {single:F1}");
        double stepWeights = weightBytes;
        if (m.IsMoe)
        {
            // Expected distinct experts touched by B tokens each choosing k of E: E × (1 − (1 − k/E)^B).
            var touched = m.RoutedExperts * (1 - Math.Pow(1 - (double)m.ExpertsPerToken / m.RoutedExperts, r.Concurrency));
            var routedBytes = (double)r.Quant.Bytes(m.RoutedExpertParameters);
            stepWeights = weightBytes - routedBytes + routedBytes * touched / m.RoutedExperts;
            formulas.Add($"weights_read_per_step (MoE, {r.Concurrency} tokens) = non-expert + routed × E(1 − (1 − k/E)^B)/E = {stepWeights:N0}");
        }

        var aggregate = r.Concurrency * bandwidth / (stepWeights + r.Concurrency * contextKv);
        formulas.Add($"aggregate_tokens_per_s ≤ B × n × bandwidth / (weights_read_per_step + B × kv_bytes_per_token × context) = {aggregate:F1}");
        notes.Add("throughput figures are upper bounds from peak bandwidth at full context; real decode reaches 50-80% of them");

        return new SizingPlan
        {
            Request = r,
            WeightBytes = weightBytes,
            ActiveWeightBytes = activeBytes,
            KvBytesPerToken = kvPerToken,
            KvBytesTotal = kvTotal,
            ActivationBytesPerGpu = activation,
            GpusNeeded = n,
            TensorParallel = tp,
            PipelineParallel = pp,
            WeightBytesPerGpu = weightsPerGpu,
            KvBytesPerGpu = kvPerGpu,
            UsableBytesPerGpu = usable,
            SingleStreamTokensPerSecond = single,
            AggregateTokensPerSecond = aggregate,
            Formulas = formulas,
            Notes = notes,
        };
    }

    internal static long KvPerGpu(ModelShape m, long kvTotal, int gpus) =>
        m.UsesMla ? kvTotal : Ceil(kvTotal, Math.Min(gpus, m.KvHeads));

    private static IEnumerable<int> Candidates(int perNode)
    {
        for (var n = 1; n <= perNode; n *= 2)
        {
            yield return n;
        }

        for (var nodes = 2; nodes <= 64; nodes++)
        {
            yield return nodes * perNode;
        }
    }

    private static long Ceil(long a, long b) => (a + b - 1) / b;

    public string ToText()
    {
        var r = Request;
        var sb = new StringBuilder();
        sb.AppendLine(CultureInfo.InvariantCulture, $"{r.Model.Name}: {r.Model.TotalParameters / 1e9:F1}B parameters{(r.Model.IsMoe ? $" ({r.Model.ActiveParameters / 1e9:F1}B active per token)" : "")}, {r.Quant.Id}, context {r.Context}, concurrency {r.Concurrency}, {r.Gpu.Name}");
        sb.AppendLine(CultureInfo.InvariantCulture, $"  weights            {Gib(WeightBytes)}");
        sb.AppendLine(CultureInfo.InvariantCulture, $"  KV cache per token {KvBytesPerToken:N0} bytes{(r.Model.UsesMla ? " (MLA latent)" : "")}");
        sb.AppendLine(CultureInfo.InvariantCulture, $"  KV cache total     {Gib(KvBytesTotal)}");
        sb.AppendLine(CultureInfo.InvariantCulture, $"  activations/GPU    {Gib(ActivationBytesPerGpu)}");
        sb.AppendLine(CultureInfo.InvariantCulture, $"  GPUs needed        {GpusNeeded} (tensor parallel {TensorParallel}{(PipelineParallel > 1 ? $", pipeline parallel {PipelineParallel}" : "")}); per GPU {Gib(WeightBytesPerGpu)} weights + {Gib(KvBytesPerGpu)} KV + {Gib(ActivationBytesPerGpu)} activations of {Gib(UsableBytesPerGpu)} usable");
        sb.AppendLine(CultureInfo.InvariantCulture, $"  decode bound       {SingleStreamTokensPerSecond:F1} tokens/s for one stream, {AggregateTokensPerSecond:F0} tokens/s across {r.Concurrency}");
        sb.AppendLine("formulas:");
        foreach (var f in Formulas)
        {
            sb.AppendLine("  " + f);
        }

        foreach (var n in Notes)
        {
            sb.AppendLine("note: " + n);
        }

        return sb.ToString();
    }

    private static string Gib(long bytes) => string.Create(CultureInfo.InvariantCulture, $"{bytes / (1024.0 * 1024 * 1024):F2} GiB");

    public object ToJson() => new Dictionary<string, object>
    {
        ["model"] = Request.Model.Name,
        ["quant"] = Request.Quant.Id,
        ["gpu"] = Request.Gpu.Id,
        ["context"] = Request.Context,
        ["concurrency"] = Request.Concurrency,
        ["parameters"] = Request.Model.TotalParameters,
        ["active_parameters"] = Request.Model.ActiveParameters,
        ["weight_bytes"] = WeightBytes,
        ["active_weight_bytes"] = ActiveWeightBytes,
        ["kv_bytes_per_token"] = KvBytesPerToken,
        ["kv_bytes_total"] = KvBytesTotal,
        ["activation_bytes_per_gpu"] = ActivationBytesPerGpu,
        ["gpus_needed"] = GpusNeeded,
        ["tensor_parallel"] = TensorParallel,
        ["pipeline_parallel"] = PipelineParallel,
        ["weight_bytes_per_gpu"] = WeightBytesPerGpu,
        ["kv_bytes_per_gpu"] = KvBytesPerGpu,
        ["usable_bytes_per_gpu"] = UsableBytesPerGpu,
        ["decode_tokens_per_s_single_stream_bound"] = Math.Round(SingleStreamTokensPerSecond, 2),
        ["decode_tokens_per_s_aggregate_bound"] = Math.Round(AggregateTokensPerSecond, 2),
        ["formulas"] = Formulas,
        ["notes"] = Notes,
    };
}
