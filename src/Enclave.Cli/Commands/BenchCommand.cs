using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using Enclave.Engine.Backends;
using Enclave.Engine.Backends.Cpu;
using Enclave.Engine.Cuda;
using Enclave.Engine.Formats;
using Enclave.Engine.Generation;
using Enclave.Engine.Models;
using Enclave.Engine.Sampling;

namespace Enclave.Cli.Commands;

/// <summary>
/// <c>enclave bench</c>: prefill and decode throughput of one model on this machine, and decode speed as a fraction
/// of the memory-bandwidth roofline (bandwidth ÷ weight bytes read per token).
/// </summary>
internal static class BenchCommand
{
    public static Command Create(IEnumerable<Command> subcommands)
    {
        var model = CommonOptions.Model(required: false);
        var dummy = new Option<FileInfo?>("--dummy") { Description = "A config.json: benchmark random weights of that shape (no download needed)" };
        var promptLen = new Option<int>("--prompt-len") { Description = "Prompt tokens per sequence", DefaultValueFactory = _ => 128 };
        var genLen = new Option<int>("--gen-len") { Description = "Generated tokens per sequence", DefaultValueFactory = _ => 32 };
        var batch = new Option<int>("--batch") { Description = "Concurrent sequences", DefaultValueFactory = _ => 1 };
        var device = CommonOptions.Device();
        var threads = CommonOptions.Threads();
        var enforceEager = CommonOptions.EnforceEager();
        var kvDtype = new Option<string>("--kv-cache-dtype") { Description = "KV cache element type: auto (f32), f32, or bf16 (CUDA)", DefaultValueFactory = _ => "auto" };
        var profile = new Option<bool>("--profile") { Description = "Time every operation and print where prefill and decode spend it (CPU: the operations' own time; CUDA: host enqueue time)" };
        var command = new Command("bench", "Measure prefill and decode speed (see also: bench serve)") { model, dummy, promptLen, genLen, batch, device, threads, enforceEager, kvDtype, profile };
        foreach (var sub in subcommands)
        {
            command.Subcommands.Add(sub);
        }

        command.SetAction(async (result, cancellationToken) =>
        {
            var dir = result.GetValue(model);
            var config = result.GetValue(dummy);
            if ((dir is null) == (config is null))
            {
                throw new CliException("give exactly one of --model DIR or --dummy CONFIG.json");
            }

            int p = result.GetValue(promptLen), g = result.GetValue(genLen), b = result.GetValue(batch);
            if (p < 1 || g < 2 || b < 1)
            {
                throw new CliException("--prompt-len must be ≥ 1, --gen-len ≥ 2 and --batch ≥ 1");
            }

            string directory;
            if (config is not null)
            {
                if (!config.Exists)
                {
                    throw new CliException($"--dummy {config.FullName}: file not found");
                }

                // The dummy load reads only config.json; a tokenizer next to it is optional, so use a scratch folder.
                directory = Path.Combine(Path.GetTempPath(), "enclave-bench-" + Environment.ProcessId);
                Directory.CreateDirectory(directory);
                File.Copy(config.FullName, Path.Combine(directory, "config.json"), overwrite: true);
            }
            else
            {
                directory = dir!;
            }

            var options = new EngineOptions
            {
                MaxNumSeqs = b,
                MaxNumBatchedTokens = Math.Max(512, p),
                MaxModelLen = p + g,
                KvCacheDtype = result.GetValue(kvDtype)!,
            };
            // The engine alone: a benchmark needs no tokenizer, so a bare config.json is enough.
            var load = Stopwatch.StartNew();
            var gguf = config is null && Enclave.Engine.Formats.Gguf.GgufModel.IsGgufPath(directory) ? Enclave.Engine.Formats.Gguf.GgufModel.Open(directory) : null;
            var modelConfig = gguf?.Config ?? ModelConfig.Load(directory);
            ModelRegistry.EnsureSupported(modelConfig);

            var deviceBackend = CommonOptions.CreateBackend(result.GetValue(device)!, result.GetValue(threads), result.GetValue(enforceEager));
            var profiler = result.GetValue(profile) ? new ProfilingBackend(deviceBackend) : null;
            using var backend = (IBackend?)profiler ?? deviceBackend;
            using IWeightSource weights = gguf is not null ? gguf : config is not null ? DummyWeights.Create(modelConfig) : SafetensorsCheckpoint.Open(directory);
            using var causalLm = ModelRegistry.Create(modelConfig, weights, backend);
            // The KV cache the workload needs (every sequence at full length, whole blocks), not a GPU's worth of it.
            var blocksPerSequence = (p + g + options.BlockSize - 1) / options.BlockSize;
            var kvSpec = causalLm.KvCacheSpec with { DType = InferenceEngine.KvCacheType(options.KvCacheDtype, causalLm) };
            options.KvCacheBytes = (long)b * blocksPerSequence * options.BlockSize * kvSpec.BytesPerToken;
            using var engine = new InferenceEngine(causalLm, options, []);
            load.Stop();
            var lm = (Config: modelConfig, Model: causalLm, Engine: engine);
            var vocab = lm.Config.VocabSize;
            var random = new Random(1234);
            int[][] prompts = [.. Enumerable.Range(0, b).Select(_ => Enumerable.Range(0, p).Select(_ => random.Next(vocab)).ToArray())];
            var greedy = new SamplingParams { Temperature = 0, IgnoreEos = true };

            // Warm up (JIT, page-in of mapped weights, kernels of both the prefill and the decode path, the activation
            // and scratch buffers at the full prompt length, which are allocated on first need), then prefill alone:
            // every sequence generates one token. Prompts of their own, so that no timed prompt finds its start in the
            // prefix cache. Twice on the CPU: library code (TensorPrimitives) starts as precompiled baseline code and is
            // recompiled for this CPU's vectors only after enough calls, which one 128-token prefill does not reach.
            for (var pass = 0; pass < (deviceBackend is CudaBackend ? 1 : 2); pass++)
            {
                int[] warmUp = [.. Enumerable.Range(0, p).Select(_ => random.Next(vocab))];
                await RunAsync(engine, [warmUp], greedy with { MaxTokens = 2 }, cancellationToken);
            }

            profiler?.Reset();
            // On CUDA the profile also times every kernel and cuBLAS call on the device (waiting after each one).
            var gpuProfile = profiler is not null ? deviceBackend as CudaBackend : null;
            gpuProfile?.KernelTimes = [];
            var prefill = Stopwatch.StartNew();
            await RunAsync(engine, prompts, greedy with { MaxTokens = 1 }, cancellationToken);
            prefill.Stop();
            var prefillProfile = profiler?.Report($"prefill of {b * p} tokens") + KernelReport(gpuProfile, $"prefill of {b * p} tokens");
            profiler?.Reset();
            gpuProfile?.KernelTimes = [];

            var before = engine.Stats;
            var decode = await RunAsync(engine, prompts, greedy with { MaxTokens = g }, cancellationToken);
            var after = engine.Stats;
            var decodeProfile = profiler?.Report($"prefill of {b * p} tokens, then {g - 1} decode steps of batch {b}")
                + KernelReport(gpuProfile, $"the {g - 1} decode steps of batch {b} (prompts from the prefix cache)");
            gpuProfile?.KernelTimes = null;
            var decodeTokens = (double)b * (g - 1);
            var decodeSeconds = decode.End - decode.AllFirstToken;
            var bandwidth = deviceBackend is CudaBackend gpu ? CudaTimer.CopyBandwidthGBps(gpu) : MemoryBandwidth.MeasureGBps();
            var weightBytes = lm.Model.WeightBytes;
            var rooflineTokensPerSecond = bandwidth * 1e9 / weightBytes;
            var decodeRate = decodeTokens / decodeSeconds;
            var perSequence = decodeRate / b;
            Console.WriteLine($"model        {lm.Config.Architecture} ({(config is not null ? "dummy weights from " + config.Name : directory)})");
            Console.WriteLine($"backend      {lm.Model.Backend.Name}" + (deviceBackend is CudaBackend ? $", decode graphs {(engine.DecodeGraphs ? "on" : "off")}" : string.Empty));
            Console.WriteLine($"shape        hidden {lm.Config.HiddenSize}, layers {lm.Config.NumHiddenLayers}, heads {lm.Config.NumAttentionHeads}/{lm.Config.NumKeyValueHeads} kv, vocab {vocab}");
            Console.WriteLine($"weights      {weightBytes / 1e9:F3} GB read per token; loaded in {load.Elapsed.TotalSeconds:F2} s");
            Console.WriteLine($"kv cache     {kvSpec.BytesPerToken} bytes per token ({kvSpec.DType})");
            Console.WriteLine($"workload     batch {b}, prompt {p}, generate {g}");
            Console.WriteLine($"prefill      {b * p / prefill.Elapsed.TotalSeconds:F1} tokens/s ({prefill.Elapsed.TotalMilliseconds:F0} ms for {b * p} tokens)");
            if (PrefillFlops(lm.Config, b, p) is { } flops)
            {
                Console.WriteLine($"prefill work {flops.Linear / 1e12:F2} TFLOP in products + {flops.Attention / 1e12:F2} TFLOP in attention; achieved {(flops.Linear + flops.Attention) / prefill.Elapsed.TotalSeconds / 1e12:F1} TFLOP/s");
            }

            Console.WriteLine($"decode       {decodeRate:F2} tokens/s total, {perSequence:F2} tokens/s per sequence, {1000 / perSequence:F1} ms per step");
            var hostSeconds = after.StepHostSeconds - before.StepHostSeconds;
            var stepSeconds = hostSeconds + after.StepDeviceSeconds - before.StepDeviceSeconds;
            var decodeSteps = after.Steps - before.Steps;
            if (stepSeconds > 0 && decodeSteps > 0)
            {
                // The engine thread outside the model: while it schedules, samples and streams, the device has no step to run.
                Console.WriteLine($"host         {100 * hostSeconds / stepSeconds:F1}% of the engine's step time outside the model ({1000 * hostSeconds / decodeSteps:F3} ms a step: scheduling, batch building, sampling, streaming)");
            }

            Console.WriteLine($"bandwidth    {bandwidth:F1} GB/s measured; roofline {rooflineTokensPerSecond:F2} tokens/s at batch 1");
            Console.WriteLine($"efficiency   {100 * perSequence / rooflineTokensPerSecond:F1}% of the roofline per sequence" + (b > 1 ? $" ({100 * decodeRate / rooflineTokensPerSecond:F1}% aggregate)" : string.Empty));
            var process = Process.GetCurrentProcess();
            Console.WriteLine($"memory       {process.PeakWorkingSet64 / 1048576.0:F0} MiB peak resident, {process.WorkingSet64 / 1048576.0:F0} MiB now" +
                (gguf is not null ? $" (file {new FileInfo(directory).Length / 1048576.0:F0} MiB, kv cache {kvSpec.BytesPerToken * (p + g) * b / 1048576.0:F0} MiB)" : string.Empty));
            if (profiler is not null)
            {
                Console.Write(prefillProfile);
                Console.Write(decodeProfile);
            }

            if (config is not null)
            {
                Directory.Delete(directory, recursive: true);
            }

            return 0;
        });
        return command;
    }

    /// <summary>Device time by kernel and grid (cuBLAS calls by shape), the most expensive first.</summary>
    private static string KernelReport(CudaBackend? cuda, string title)
    {
        if (cuda?.KernelTimes is not { Count: > 0 } times)
        {
            return string.Empty;
        }

        var sum = times.Values.Sum(v => v.Milliseconds);
        var text = new System.Text.StringBuilder();
        text.AppendLine(CultureInfo.InvariantCulture, $"kernels      {title}: {sum:F1} ms of device time in {times.Values.Sum(v => v.Count)} launches, each timed alone");
        foreach (var (key, (count, ms)) in times.OrderByDescending(e => e.Value.Milliseconds).Take(24))
        {
            text.AppendLine(CultureInfo.InvariantCulture, $"  {100 * ms / sum,5:F1}%  {ms,9:F2} ms  {count,6} x {1000 * ms / count,9:F1} µs  {key}");
        }

        return text.ToString();
    }

    /// <summary>
    /// Floating-point work of prefilling <paramref name="batch"/> fresh prompts of <paramref name="promptLength"/> tokens
    /// on a dense decoder: 2 × (projection and MLP parameters) per token, plus causal attention, 4 × heads × head_dim per
    /// (query, visible key) pair (q·k and p·v). The embedding lookup and the one logit row per sequence are left out.
    /// Null for mixture-of-experts and latent-attention models, whose work per token this formula does not describe.
    /// </summary>
    internal static (double Linear, double Attention)? PrefillFlops(ModelConfig config, int batch, int promptLength)
    {
        if (config.Raw.ContainsKey("kv_lora_rank") || config.Raw.ContainsKey("n_routed_experts") || config.Raw.ContainsKey("num_experts") || config.Raw.ContainsKey("num_local_experts"))
        {
            return null;
        }

        double hidden = config.HiddenSize, queryWidth = (double)config.NumAttentionHeads * config.HeadDim, kvWidth = (double)config.NumKeyValueHeads * config.HeadDim;
        var perLayer = (hidden * queryWidth) + (2 * hidden * kvWidth) + (queryWidth * hidden) + (3 * hidden * config.IntermediateSize);
        double tokens = (double)batch * promptLength, layers = config.NumHiddenLayers;
        var linear = 2 * perLayer * layers * tokens;
        var pairs = (double)batch * promptLength * (promptLength + 1) / 2;
        var attention = 4 * queryWidth * pairs * layers;
        return (linear, attention);
    }

    private static async Task<(double AllFirstToken, double End)> RunAsync(InferenceEngine engine, int[][] prompts, SamplingParams parameters, CancellationToken cancellationToken)
    {
        var clock = Stopwatch.StartNew();
        var firsts = new double[prompts.Length];
        var tasks = prompts.Select(async (prompt, i) =>
        {
            var first = true;
            await foreach (var _ in engine.GenerateTokensAsync(prompt, parameters, cancellationToken))
            {
                if (first)
                {
                    firsts[i] = clock.Elapsed.TotalSeconds;
                    first = false;
                }
            }
        }).ToArray();
        await Task.WhenAll(tasks);
        return (firsts.Max(), clock.Elapsed.TotalSeconds);
    }
}
