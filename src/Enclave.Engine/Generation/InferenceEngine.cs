using System.Collections.Concurrent;
using System.Diagnostics;
using System.Runtime.CompilerServices;
using Enclave.Engine.Backends;
using Enclave.Engine.KvCache;
using Enclave.Engine.Models;
using Enclave.Engine.Sampling;
using Enclave.Engine.Scheduling;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace Enclave.Engine.Generation;

/// <summary>
/// Runs one model: a dedicated loop thread takes submitted sequences, asks the <see cref="Scheduler"/> for each step,
/// runs the model's forward pass, samples on the host and streams tokens back to each request's reader. Callers on
/// any thread submit with <see cref="GenerateTokensAsync"/> and cancel by cancelling its token.
/// </summary>
public sealed class InferenceEngine : IAsyncDisposable, IDisposable
{
    private readonly CausalLM model;
    private readonly PagedKvCache cache;
    private readonly Scheduler scheduler;
    private readonly ConcurrentQueue<Sequence> incoming = new();
    private readonly SemaphoreSlim wake = new(0);
    private readonly Thread loop;
    private readonly ILogger logger;
    private readonly Sampler sampler = new();
    private readonly DeviceTensor logits;
    private readonly float[] hostLogits;
    private readonly int[] greedyIds;
    private readonly RowSampling[] rowSampling;
    private readonly int[] eosTokenIds;
    private volatile bool stopping;
    private long nextId;
    private int queued;
    private long promptTokensTotal;
    private long generationTokensTotal;
    private long steps;

    // Stopwatch ticks of the steps run so far: inside the model (forward pass and reading its results back; on a GPU
    // this includes waiting for the device) and outside it on the engine thread (admitting and scheduling requests,
    // building the batch, sampling, streaming tokens), while the device waits for the next step.
    private long stepDeviceTicks;
    private long stepHostTicks;
    private long argmaxSteps;
    private long backendSampleSteps;

    /// <summary>The cache element type --kv-cache-dtype asks for, refused with the reason where the backend or model cannot keep it.</summary>
    public static DType KvCacheType(string requested, CausalLM model)
    {
        var dtype = requested.ToLowerInvariant() switch
        {
            "auto" or "f32" or "fp32" or "float32" => DType.F32,
            "bf16" or "bfloat16" => DType.BF16,
            _ => throw new ArgumentException($"--kv-cache-dtype {requested}: expected auto, f32 or bf16"),
        };
        var spec = model.KvCacheSpec with { DType = dtype };
        if (!model.Backend.SupportsKvCache(spec))
        {
            throw new ArgumentException($"--kv-cache-dtype {requested}: the {model.Backend.Name} backend keeps a {dtype} cache only for standard attention on CUDA (this is {model.Config.Architecture} with {(spec.Tensors.Count == 1 ? "a latent (MLA) cache" : "key and value rows")}); use f32");
        }

        return dtype;
    }

    public InferenceEngine(CausalLM model, EngineOptions options, IReadOnlyCollection<int> eosTokenIds, ILogger? logger = null)
    {
        this.model = model;
        this.logger = logger ?? NullLogger.Instance;
        Options = options;
        // A benchmark knob, like ENCLAVE_CUDA_PDL: ENCLAVE_HOST_SAMPLING=1 measures the download-and-sample path beside the
        // backend's own sampling under the same load.
        ForceHostSampling = Environment.GetEnvironmentVariable("ENCLAVE_HOST_SAMPLING") == "1";
        MaxModelLen = options.MaxModelLen > 0 ? options.MaxModelLen : model.Config.MaxPositionEmbeddings;
        this.eosTokenIds = [.. eosTokenIds];
        var spec = model.KvCacheSpec with { DType = KvCacheType(options.KvCacheDtype, model) };
        // Without a budget, size for the default token count rounded up to whole blocks, so a request of exactly
        // MaxModelLen tokens fits even when MaxModelLen is not a multiple of the block size.
        var defaultTokens = Math.Min((long)MaxModelLen * Math.Min(options.MaxNumSeqs, 8), 1L << 20);
        var bytes = options.KvCacheBytes > 0
            ? options.KvCacheBytes
            : spec.BytesPerToken * options.BlockSize * ((defaultTokens + options.BlockSize - 1) / options.BlockSize);
        if (options.KvCacheBytes <= 0 && model.Backend is IDeviceMemory device)
        {
            var (free, total) = device.MemoryInfo();
            var plan = KvCachePlan.Create(free, total, options.GpuMemoryUtilization, model.Config, spec, options.MaxNumBatchedTokens,
                options.MaxNumSeqs, options.BlockSize, MaxModelLen, options.GpuMemoryShare);
            bytes = plan.KvBytes;
            this.logger.LogInformation("KV cache memory plan: {Plan}", plan.ToString());
        }
        var blocks = PagedKvCache.BlocksFor(bytes, spec, options.BlockSize);
        if (blocks < 1)
        {
            throw new ArgumentException($"--kv-cache-memory {bytes} bytes holds no block of {options.BlockSize} tokens ({spec.BytesPerToken} bytes per token)");
        }

        cache = new PagedKvCache(model.Backend, spec, blocks, options.BlockSize);
        scheduler = new Scheduler(new SchedulerOptions(options.MaxNumSeqs, options.MaxNumBatchedTokens, options.MaxWaiting), new BlockPool(blocks, options.BlockSize, options.EnablePrefixCaching));
        logits = model.Backend.Allocate(DType.F32, options.MaxNumSeqs, model.Config.VocabSize);
        hostLogits = new float[options.MaxNumSeqs * model.Config.VocabSize];
        greedyIds = new int[options.MaxNumSeqs];
        rowSampling = new RowSampling[options.MaxNumSeqs];
        DecodeGraphs = ConfigureDecodeGraphs(model, options, MaxModelLen, this.logger);
        this.logger.LogInformation(
            "KV cache: {Blocks} blocks of {BlockSize} tokens ({Tokens} tokens, {MiB:F1} MiB, {BytesPerToken} bytes per token)",
            blocks, options.BlockSize, (long)blocks * options.BlockSize, cache.Bytes / 1048576.0, spec.BytesPerToken);
        loop = new Thread(Run) { IsBackground = true, Name = "enclave-engine" };
        loop.Start();
    }

    public EngineOptions Options { get; }

    /// <summary>Whether the backend records pure decode steps as graphs and replays them (CUDA graphs; see <see cref="IDecodeGraphs"/>).</summary>
    public bool DecodeGraphs { get; }

    /// <summary>
    /// Samples every row on the host from downloaded logits even when the backend could choose the step's tokens (by
    /// <see cref="IBackend.Argmax"/> or <see cref="IBackend.Sample"/>), so tests can hold those paths to the host
    /// sampler's tokens, and benchmarks can compare (ENCLAVE_HOST_SAMPLING=1).
    /// </summary>
    internal bool ForceHostSampling { get; set; }

    /// <summary>Steps whose tokens were chosen by <see cref="IBackend.Argmax"/> without downloading logits.</summary>
    internal long ArgmaxSteps => Interlocked.Read(ref argmaxSteps);

    /// <summary>Steps whose tokens were chosen by <see cref="IBackend.Sample"/> without downloading logits.</summary>
    internal long BackendSampleSteps => Interlocked.Read(ref backendSampleSteps);

    public CausalLM Model => model;

    public int MaxModelLen { get; }

    public int KvCacheTokens => cache.BlockCount * cache.BlockSize;

    public long KvCacheBytes => cache.Bytes;

    /// <summary>A consistent-enough snapshot for metrics (read without locking).</summary>
    public EngineStats Stats => new(
        scheduler.Running, scheduler.Waiting + Volatile.Read(ref queued),
        scheduler.Pool.BlockCount == 0 ? 0 : (double)scheduler.Pool.UsedBlocks / scheduler.Pool.BlockCount,
        Interlocked.Read(ref promptTokensTotal), Interlocked.Read(ref generationTokensTotal), scheduler.Preemptions, Interlocked.Read(ref steps),
        scheduler.Pool.PrefixQueryTokens, scheduler.Pool.PrefixHitTokens, scheduler.Pool.UsedBlocks, scheduler.Pool.BlockCount,
        (double)Interlocked.Read(ref stepHostTicks) / Stopwatch.Frequency, (double)Interlocked.Read(ref stepDeviceTicks) / Stopwatch.Frequency);

    /// <summary>
    /// Submits a prompt and streams its tokens as they are produced. Throws <see cref="ContextLengthExceededException"/>
    /// when it cannot fit, <see cref="EngineBusyException"/> when the queue is full. Cancelling the token frees the
    /// request's cache blocks at the next step.
    /// </summary>
    public async IAsyncEnumerable<TokenEvent> GenerateTokensAsync(IReadOnlyList<int> promptIds, SamplingParams parameters, [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        var sequence = Submit(promptIds, parameters);
        await foreach (var e in ReadTokensAsync(sequence, cancellationToken).ConfigureAwait(false))
        {
            yield return e;
        }
    }

    /// <summary>Streams the tokens of a sequence returned by <see cref="Submit"/>; cancelling (or stopping early) aborts it.</summary>
    public async IAsyncEnumerable<TokenEvent> ReadTokensAsync(Sequence sequence, [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        using var registration = cancellationToken.Register(() => { sequence.Abort(); wake.Release(); });
        var reader = sequence.Output.Reader;
        var done = false;
        try
        {
            while (!done && await reader.WaitToReadAsync(cancellationToken).ConfigureAwait(false))
            {
                while (reader.TryRead(out var e))
                {
                    yield return e;
                    if (e.Finish is not null)
                    {
                        done = true;
                        break;
                    }
                }
            }
        }
        finally
        {
            if (!done)
            {
                sequence.Abort();
                wake.Release();
            }
        }
    }

    public Sequence Submit(IReadOnlyList<int> promptIds, SamplingParams parameters)
    {
        ObjectDisposedException.ThrowIf(stopping, this);
        parameters.Validate();
        if (promptIds.Count == 0)
        {
            throw new ArgumentException("the prompt is empty: at least one token is needed", nameof(promptIds));
        }

        foreach (var id in promptIds)
        {
            if ((uint)id >= (uint)model.Config.VocabSize)
            {
                throw new ArgumentException($"token id {id} is outside the vocabulary (0..{model.Config.VocabSize - 1})", nameof(promptIds));
            }
        }

        if (promptIds.Count + parameters.MaxTokens > MaxModelLen)
        {
            throw new ContextLengthExceededException(
                $"This model's maximum context length is {MaxModelLen} tokens. However, you requested {promptIds.Count + parameters.MaxTokens} tokens ({promptIds.Count} in the messages, {parameters.MaxTokens} in the completion). Please reduce the length of the messages or completion.");
        }

        if (scheduler.Pool.BlocksFor(promptIds.Count + parameters.MaxTokens) > scheduler.Pool.BlockCount)
        {
            throw new ContextLengthExceededException(
                $"the request needs {promptIds.Count + parameters.MaxTokens} tokens of KV cache but the cache holds {KvCacheTokens}; raise --kv-cache-memory or lower max_tokens");
        }

        if (Interlocked.Increment(ref queued) + scheduler.Waiting > Options.MaxWaiting)
        {
            Interlocked.Decrement(ref queued);
            throw new EngineBusyException($"the waiting queue is full ({Options.MaxWaiting} requests); retry later");
        }

        var sequence = new Sequence(Interlocked.Increment(ref nextId), promptIds, parameters, eosTokenIds);
        EngineTelemetry.Submitted(sequence);
        incoming.Enqueue(sequence);
        wake.Release();
        return sequence;
    }

    private void Run()
    {
        var timer = Stopwatch.StartNew();
        while (!stopping)
        {
            var iterationStart = Stopwatch.GetTimestamp();
            while (incoming.TryDequeue(out var s))
            {
                Interlocked.Decrement(ref queued);
                scheduler.Add(s);
            }

            foreach (var s in scheduler.RemoveFinished())
            {
                s.Output.Writer.TryComplete();
                EngineTelemetry.Finished(s);
            }

            var step = scheduler.HasWork ? scheduler.Schedule() : null;
            if (step is null)
            {
                wake.Wait(scheduler.HasWork ? 1 : Timeout.Infinite);
                continue;
            }

            try
            {
                var deviceTicks = RunStep(step);
                Interlocked.Add(ref stepDeviceTicks, deviceTicks);
                Interlocked.Add(ref stepHostTicks, Stopwatch.GetTimestamp() - iterationStart - deviceTicks);
            }
            catch (Exception e)
            {
                logger.LogError(e, "engine step failed; failing its {Count} requests", step.Entries.Length);
                foreach (var (s, _, _) in step.Entries)
                {
                    s.Finish = FinishReason.Abort;
                    s.Output.Writer.TryComplete(e);
                }
            }
        }

        foreach (var s in scheduler.RemoveFinished())
        {
            s.Output.Writer.TryComplete();
        }
    }

    /// <returns>Stopwatch ticks spent in the model: the forward pass and reading back its ids or logits.</returns>
    private long RunStep(ScheduledStep step)
    {
        var batch = step.Batch;
        var rows = batch.LogitRows.Length;
        var vocab = model.Config.VocabSize;
        var logitView = logits.SliceRows(0, Math.Max(rows, 1));
        foreach (var (s, _, _) in step.Entries)
        {
            EngineTelemetry.Scheduled(s);
        }

        var forwardStart = Stopwatch.GetTimestamp();
        model.Forward(batch, cache, logitView);
        // When every row is plain greedy only the chosen ids cross to the host, not [rows, vocab] logits; likewise when
        // every row is decided by its raw logits and one uniform draw and the backend samples itself.
        var path = rows > 0 && !ForceHostSampling ? ChoosePath(step, model.Backend.SamplesOnBackend) : TokenPath.Host;
        if (path == TokenPath.Argmax)
        {
            model.Backend.Argmax(logitView, greedyIds.AsSpan(0, rows));
            Interlocked.Increment(ref argmaxSteps);
        }
        else if (path == TokenPath.Sample)
        {
            // Each sampled row takes the one draw the host sampler would take from its request's stream, so the same
            // seed gives the same tokens on either path.
            var index = 0;
            foreach (var (s, _, samples) in step.Entries)
            {
                if (samples)
                {
                    rowSampling[index++] = RowSampling.For(s.Parameters, s.Random);
                }
            }

            model.Backend.Sample(logitView, rowSampling.AsSpan(0, rows), greedyIds.AsSpan(0, rows));
            Interlocked.Increment(ref backendSampleSteps);
        }
        else if (rows > 0)
        {
            model.Backend.Download(logitView, hostLogits.AsSpan(0, rows * vocab));
        }

        var deviceTicks = Stopwatch.GetTimestamp() - forwardStart;
        Interlocked.Increment(ref steps);
        var row = 0;
        foreach (var (s, n, samples) in step.Entries)
        {
            if (s.NumComputed < s.PromptLength)
            {
                Interlocked.Add(ref promptTokensTotal, Math.Min(n, s.PromptLength - s.NumComputed));
            }

            s.NumComputed += n;
            if (!samples)
            {
                continue;
            }

            var index = row++;
            if (s.IsAborted)
            {
                continue;
            }

            SampledToken sampled;
            if (path != TokenPath.Host)
            {
                // What the sampler returns for a row without log-probabilities: the token, log-probability 0.
                sampled = new SampledToken(greedyIds[index], 0f, null);
            }
            else
            {
                var rowLogits = hostLogits.AsSpan(index * vocab, vocab);
                var suppress = s.OutputLength < s.Parameters.MinTokens ? s.StopTokenIds : [];
                sampled = sampler.Sample(rowLogits, s.Parameters, System.Runtime.InteropServices.CollectionsMarshal.AsSpan(s.Tokens), s.PromptLength, s.Random, suppress);
            }

            s.Tokens.Add(sampled.TokenId);
            EngineTelemetry.Sampled(s);
            Interlocked.Increment(ref generationTokensTotal);
            FinishReason? finish = null;
            if (Array.IndexOf(s.StopTokenIds, sampled.TokenId) >= 0 && s.OutputLength > s.Parameters.MinTokens - 1)
            {
                finish = FinishReason.Stop;
            }
            else if (s.OutputLength >= s.Parameters.MaxTokens || s.Tokens.Count >= MaxModelLen)
            {
                finish = FinishReason.Length;
            }

            s.Finish = finish;
            s.Output.Writer.TryWrite(new TokenEvent(sampled.TokenId, sampled.Logprob, sampled.TopLogprobs, finish));
        }

        return deviceTicks;
    }

    /// <summary>
    /// Where this step's tokens are chosen: by the backend's argmax when the sampler would reduce to a bare argmax for
    /// every row that samples (<see cref="Sampler.ReducesToArgMax"/>), by the backend's sampler when every row reduces
    /// to the raw logits and one draw (<see cref="Sampler.ReducesToRowSampling"/>) and the backend samples itself, else
    /// on the host from downloaded logits. The stop tokens suppressed before min_tokens count as suppression.
    /// </summary>
    private static TokenPath ChoosePath(ScheduledStep step, bool backendSamples)
    {
        var allGreedy = true;
        foreach (var (s, _, samples) in step.Entries)
        {
            if (!samples)
            {
                continue;
            }

            if (!Sampler.ReducesToRowSampling(s.Parameters, s.OutputLength < s.Parameters.MinTokens && s.StopTokenIds.Length > 0))
            {
                return TokenPath.Host;
            }

            allGreedy &= s.Parameters.IsGreedy;
        }

        return allGreedy ? TokenPath.Argmax : backendSamples ? TokenPath.Sample : TokenPath.Host;
    }

    private enum TokenPath
    {
        Host,
        Argmax,
        Sample,
    }

    /// <summary>
    /// Turns decode graphs on where the backend offers them and the model's forward pass never needs the host mid-step,
    /// and says once which it is.
    /// </summary>
    private static bool ConfigureDecodeGraphs(CausalLM model, EngineOptions options, int maxModelLen, ILogger logger)
    {
        if (model.Backend is not IDecodeGraphs graphs)
        {
            return false;
        }

        if (!graphs.DecodeGraphsAllowed)
        {
            logger.LogInformation("Decode graphs: off (--enforce-eager); every step is launched op by op");
            return false;
        }

        if (!model.SupportsDecodeGraphs)
        {
            graphs.DisableDecodeGraphs();
            logger.LogInformation("Decode graphs: off for {Architecture}, whose steps need the host mid-forward (expert routing)", model.Config.Architecture);
            return false;
        }

        var blocksPerSequence = (maxModelLen + options.BlockSize - 1) / options.BlockSize;
        var recorded = Math.Min(options.MaxNumSeqs, model.MaxRecordedDecodeBatch);
        graphs.EnableDecodeGraphs(new DecodeGraphLimits(maxModelLen, options.MaxNumSeqs, options.MaxNumBatchedTokens, blocksPerSequence, recorded));
        logger.LogInformation("Decode graphs: on, one per decode batch size (up to {MaxSeqs} sequences), recorded the second time a size is seen", recorded);
        return true;
    }

    public void Dispose()
    {
        if (stopping)
        {
            return;
        }

        stopping = true;
        wake.Release();
        loop.Join();
        foreach (var s in incoming)
        {
            s.Output.Writer.TryComplete();
        }

        if (DecodeGraphs && model.Backend is IDecodeGraphs graphs)
        {
            graphs.DisableDecodeGraphs(); // the recorded steps point at this engine's cache and logits
        }

        logits.Dispose();
        cache.Dispose();
        wake.Dispose();
    }

    public ValueTask DisposeAsync()
    {
        Dispose();
        return ValueTask.CompletedTask;
    }
}

/// <summary>Engine counters for metrics and health.</summary>
/// <remarks>
/// PrefixCacheQueries and PrefixCacheHits count prompt tokens looked up in and found in the prefix cache (their ratio
/// is the hit rate); UsedBlocks counts KV blocks referenced by a request (cached but unreferenced ones are free).
/// </remarks>
public readonly record struct EngineStats(int Running, int Waiting, double KvCacheUsage, long PromptTokensTotal, long GenerationTokensTotal, long Preemptions, long Steps,
    long PrefixCacheQueries = 0, long PrefixCacheHits = 0, int UsedBlocks = 0, int TotalBlocks = 0, double StepHostSeconds = 0, double StepDeviceSeconds = 0)
{
    /// <summary>
    /// Share of the engine's step time spent outside the model (scheduling, batch building, sampling, streaming) since
    /// start: on a GPU the device idles for that long between steps (0 before any step).
    /// </summary>
    public double StepHostShare => StepHostSeconds + StepDeviceSeconds <= 0 ? 0 : StepHostSeconds / (StepHostSeconds + StepDeviceSeconds);

    /// <summary>Share of looked-up prompt tokens found in the prefix cache (0 before any lookup).</summary>
    public double PrefixCacheHitRate => PrefixCacheQueries == 0 ? 0 : (double)PrefixCacheHits / PrefixCacheQueries;
}
