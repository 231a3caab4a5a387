using Enclave.Engine.Backends;
using Enclave.Engine.Cuda.Native;
using Enclave.Engine.Formats;

namespace Enclave.Engine.Cuda;

/// <summary>Settings of a <see cref="CudaBackend"/>.</summary>
public sealed record CudaBackendOptions
{
    /// <summary>Device ordinal (cuda:N).</summary>
    public int Device { get; init; }

    /// <summary>
    /// Matrix products of more than <see cref="CudaBackend.TensorCoreGemvTokens"/> tokens with F16/BF16 weights through cuBLAS
    /// tensor cores, the activations rounded to the weights' type first (fast prefill, bf16-level accuracy). When false
    /// they run on an fp32 tiled kernel that keeps the activations in fp32 (slower, exact to fp32 rounding).
    /// </summary>
    public bool TensorCoreGemm { get; init; }

    /// <summary>Where compiled kernels are kept; null for $ENCLAVE_HOME/cuda-cache or the temp folder.</summary>
    public string? KernelCacheDirectory { get; init; }

    /// <summary>
    /// Record pure decode steps as CUDA graphs and replay them (on by default; only models that allow it use them, see
    /// <see cref="IDecodeGraphs"/>). False is vLLM's --enforce-eager: every op is launched from the host every step.
    /// </summary>
    public bool CudaGraphs { get; init; } = true;

    /// <summary>
    /// Launch kernels with programmatic stream serialisation where the device allows it (compute capability 9.0+): a
    /// kernel's blocks start, and stream the weights they will read, while the kernel before it finishes. On by default;
    /// ENCLAVE_CUDA_PDL=0 turns it off (for comparisons).
    /// </summary>
    public bool ProgrammaticLaunch { get; init; } = true;

    /// <summary>
    /// Route MoE experts and run them on the device (<see cref="CudaBackend.MoeExperts"/>), so that MoE models record
    /// their decode steps as graphs. On by default; ENCLAVE_CUDA_MOE=host keeps the host router (for comparisons).
    /// </summary>
    public bool DeviceMoe { get; init; } = true;
}

/// <summary>
/// Runs the model on an NVIDIA GPU through the CUDA driver API: weights stay in their stored type (F32, F16, BF16)
/// in device memory, activations are F32, kernels are compiled from the embedded CUDA C sources with NVRTC for the
/// device's architecture. All work is queued on one stream; only <see cref="Download"/> waits for it.
/// Not thread-safe: one caller drives a backend.
/// <para>
/// Decode graphs (<see cref="IDecodeGraphs"/>): a pure decode step of B sequences runs eagerly the first time B is
/// seen (which sizes every scratch buffer and loads every kernel), is recorded into a CUDA graph the second time, and
/// is replayed from then on: <see cref="PrepareStep"/> uploads the step metadata to the same device addresses as
/// always, every op then only checks its shapes and adds its launch to a signature, and the step's
/// <see cref="Download"/> or <see cref="Argmax"/> launches the graph before copying the result back. A recording is
/// dropped when any device buffer is freed (it may have used it) and when the signature of a replayed step differs.
/// </para>
/// </summary>
public sealed unsafe class CudaBackend : IBackend, IDeviceMemory, IDecodeGraphs
{
    /// <summary>Up to this many tokens a matrix product can run as a GEMV that reads each weight once for all tokens.</summary>
    public const int GemvMaxTokens = 8;

    /// <summary>
    /// Up to this many tokens a product runs as a GEMV in tensor-core mode; cuBLAS beyond. The GEMV multiplies every
    /// weight by each token's activations from L1 on CUDA cores, so its cost grows with the tokens: on an H100 (7B
    /// shape, decode steps) it was 6% faster than cuBLAS at 2 tokens, 32% slower at 4 and 2.6 times slower at 8.
    /// The exact fp32 mode keeps the GEMV up to <see cref="GemvMaxTokens"/>, since its alternative is the fp32 tiled kernel.
    /// </summary>
    public const int TensorCoreGemvTokens = 2;

    /// <summary>Recorded decode steps kept at most (one per batch size; the least recently replayed goes first).</summary>
    public const int MaxDecodeGraphs = 64;

    /// <summary>cuBLAS's workspace, given once so that it never allocates while a step is being recorded (32 MiB as advised for Hopper).</summary>
    private const long CublasWorkspaceBytes = 32L << 20;

    private const ulong SignatureSeed = 14695981039346656037UL;

    private readonly CudaContext _ctx;
    private readonly CudaBackendOptions _options;
    private readonly Dictionary<RopeSpec, ulong> _ropeFrequencies = new(ReferenceEqualityComparer.Instance);
    private ForwardBatch? _prepared;
    private int[] _meta = new int[256];
    private ulong _metaDevice;
    private long _metaCapacity;
    private ulong _scratch;
    private long _scratchBytes;
    private ulong _attentionScratch;
    private long _attentionScratchBytes;
    private ulong _stackedOutput;
    private ulong _splitKPartials;
    private long _splitKPartialsBytes;
    private long _stackedOutputBytes;
    private int _maxContext;
    private int _tokens;
    private int _sequences;
    private int _logitRows;
    private ulong _indices;
    private long _indicesBytes;
    private float[] _routerHost = [];
    private float[] _biasHost = [];
    private ulong _argmaxIds;
    private long _argmaxIdsBytes;
    private ulong _sampleParams;
    private long _sampleParamsBytes;
    private SampleRowParams[] _sampleParamsHost = [];
    private ulong _cublasWorkspace;
    private ulong _moeScratch;
    private long _moeScratchBytes;
    private ulong _latentPartials;
    private long _latentPartialsBytes;
    private bool _disposed;

    // Decode graphs: the limits they were enabled with (null: off), the recordings by batch size, the sizes already run
    // eagerly once (their buffers are sized), the sizes whose recording failed, and the state of the current step.
    private DecodeGraphLimits? _graphLimits;
    private int _graphMaxBatch;
    private readonly Dictionary<int, StepGraph> _graphs = [];
    private readonly HashSet<int> _eagerDecodeSizes = [];
    private readonly HashSet<int> _uncapturable = [];
    private StepMode _mode;
    private int _stepBatch;
    private StepGraph? _replaying;
    private ulong _signature;
    private long _stepFrees;
    private long _stepAllocs;
    private long _graphFrees;
    private long _graphClock;

    public CudaBackend(CudaBackendOptions? options = null)
    {
        _options = options ?? new CudaBackendOptions();
        _ctx = new CudaContext(_options.Device, _options.KernelCacheDirectory, _options.ProgrammaticLaunch);
        TensorCoreGemm = _options.TensorCoreGemm;
        var p = _ctx.Probe;
        Name = $"cuda:{p.Ordinal} ({p.Name}, sm_{p.ComputeMajor}{p.ComputeMinor}, {_ctx.MultiprocessorCount} SMs, {_ctx.Nvrtc.LibraryName}, {_ctx.Cublas.LibraryName}"
               + (_options.TensorCoreGemm ? ", tensor-core GEMM" : "") + (_ctx.ProgrammaticLaunch ? ", programmatic launch)" : ")");
    }

    public string Name { get; }

    internal CudaContext Context => Live();

    /// <summary>The most tokens a product runs as a GEMV, to measure the alternatives; null for the default (<see cref="GemvLimit"/>).</summary>
    internal int? GemvLimitOverride { get; set; }

    /// <summary>
    /// Largest token count a product runs as a GEMV: <see cref="TensorCoreGemvTokens"/> in tensor-core mode, else
    /// <see cref="GemvMaxTokens"/>.
    /// </summary>
    private int GemvLimit => Math.Min(GemvLimitOverride ?? (TensorCoreGemm ? TensorCoreGemvTokens : GemvMaxTokens), GemvMaxTokens);

    /// <summary>Starts as <see cref="CudaBackendOptions.TensorCoreGemm"/>; settable to measure both paths on one backend.</summary>
    internal bool TensorCoreGemm { get; set; }

    public CudaProbe Device => _ctx.Probe;

    /// <summary>Kernel sources compiled by NVRTC so far (0 when every cubin came from the disk cache).</summary>
    public int KernelsCompiled => _ctx.Kernels.Compiled;

    public string KernelCacheDirectory => _ctx.Kernels.Directory;

    public bool DecodeGraphsAllowed => _options.CudaGraphs && _ctx.Driver.HasGraphs;

    public bool DecodeGraphsEnabled => _graphLimits is not null;

    /// <summary>Decode steps recorded so far (a batch size recorded again after its graph was dropped counts again).</summary>
    public long GraphCaptures { get; private set; }

    /// <summary>Decode steps replayed from a recording so far.</summary>
    public long GraphReplays { get; private set; }

    /// <summary>Recordings held now.</summary>
    public int DecodeGraphCount => _graphs.Count;

    /// <summary>
    /// When false, decode steps still run with the graph launch configuration (fixed attention splits) but are never
    /// recorded: the eager twin a replayed step must equal bit for bit.
    /// </summary>
    internal bool RecordDecodeGraphs { get; set; } = true;

    /// <summary>
    /// When set, every eager kernel launch is timed alone between two events (waiting for each one) and added here under
    /// its name and grid: where a step's device time goes. Slows everything down; for measurements only.
    /// </summary>
    public Dictionary<string, (int Count, double Milliseconds)>? KernelTimes { get; set; }

    public void EnableDecodeGraphs(DecodeGraphLimits limits)
    {
        ArgumentNullException.ThrowIfNull(limits);
        Live();
        DisableDecodeGraphs();
        if (!DecodeGraphsAllowed)
        {
            return;
        }

        if (_cublasWorkspace == 0 && _ctx.Cublas.SetWorkspace != null)
        {
            _cublasWorkspace = _ctx.Alloc(CublasWorkspaceBytes);
            _ctx.Cublas.Check(_ctx.Cublas.SetWorkspace(_ctx.CublasHandle, _cublasWorkspace, (nuint)CublasWorkspaceBytes), "cublasSetWorkspace");
        }

        // Without a workspace of its own cuBLAS would allocate while recording: keep to the sizes the GEMV kernels serve.
        _graphMaxBatch = Math.Min(limits.MaxRecordedSequences, _cublasWorkspace != 0 ? limits.MaxSequences : Math.Min(limits.MaxSequences, GemvLimit));

        // The step metadata at its largest once, so that no step moves it under a recording.
        long tokens = Math.Max(limits.MaxBatchedTokens, limits.MaxSequences);
        var ints = (5 * tokens) + (4L * limits.MaxSequences) + ((long)limits.MaxSequences * limits.MaxBlocksPerSequence);
        EnsureMetaCapacity(ints * 4);
        _graphLimits = limits;
        _graphFrees = _ctx.FreeCount;
    }

    public void DisableDecodeGraphs()
    {
        if (_disposed)
        {
            return;
        }

        AbandonGraphStep();
        DropGraphs();
        _graphLimits = null;
        _eagerDecodeSizes.Clear();
        _uncapturable.Clear();
    }

    public DeviceTensor Allocate(DType dtype, params int[] shape)
    {
        var probe = new Probe(dtype, shape);
        return new CudaTensor(Live(), dtype, shape, _ctx.Alloc(probe.ByteCount));
    }

    public DeviceTensor LoadWeight(CheckpointTensor source)
    {
        RequireEager("LoadWeight");
        if (source.DType.IsQuantized())
        {
            throw new NotSupportedException($"{source.File}: tensor '{source.Name}' is {source.DType}; the CUDA backend has no kernels for ggml block types yet, use --device cpu");
        }

        var tensor = (CudaTensor)Allocate(source.DType, source.Shape);
        if (tensor.ByteCount != source.ByteCount)
        {
            tensor.Dispose();
            throw new ArgumentException($"{source} in {source.File} holds {source.ByteCount} bytes, its shape needs {tensor.ByteCount}");
        }

        _ctx.Driver.Check(_ctx.Driver.MemcpyHtoDAsync(tensor.Pointer, source.Data, (nuint)source.ByteCount, _ctx.Stream), "cuMemcpyHtoDAsync(weight)");
        return tensor;
    }

    public void UploadBytes(ReadOnlySpan<byte> source, DeviceTensor destination)
    {
        var t = Cuda(destination);
        RequireEager("UploadBytes");
        if (source.Length != t.ByteCount)
        {
            throw new ArgumentException($"{source.Length} bytes for {t} of {t.ByteCount} bytes");
        }

        fixed (byte* p = source)
        {
            _ctx.Driver.Check(_ctx.Driver.MemcpyHtoDAsync(t.Pointer, p, (nuint)source.Length, _ctx.Stream), "cuMemcpyHtoDAsync");
        }
    }

    public void Upload(ReadOnlySpan<float> source, DeviceTensor destination)
    {
        var t = Cuda(destination);
        RequireEager("Upload");
        Require(t, DType.F32);
        if (source.Length != t.ElementCount)
        {
            throw new ArgumentException($"{source.Length} values for {t}");
        }

        fixed (float* p = source)
        {
            _ctx.Driver.Check(_ctx.Driver.MemcpyHtoDAsync(t.Pointer, p, (nuint)(source.Length * 4), _ctx.Stream), "cuMemcpyHtoDAsync");
        }
    }

    public void Download(DeviceTensor source, Span<float> destination)
    {
        var t = Cuda(source);
        Require(t, DType.F32);
        if (destination.Length != t.ElementCount)
        {
            throw new ArgumentException($"{destination.Length} values for {t}");
        }

        EndGraphStep();
        fixed (float* p = destination)
        {
            _ctx.Driver.Check(_ctx.Driver.MemcpyDtoHAsync(p, t.Pointer, (nuint)(destination.Length * 4), _ctx.Stream), "cuMemcpyDtoHAsync");
        }

        _ctx.Synchronize();
    }

    public (long Free, long Total) MemoryInfo()
    {
        Live();
        nuint free, total;
        _ctx.Driver.Check(_ctx.Driver.MemGetInfo(&free, &total), "cuMemGetInfo");
        return ((long)free, (long)total);
    }

    /// <summary>Waits for all queued work (for timing; <see cref="Download"/> does this itself).</summary>
    public void Synchronize()
    {
        Live();
        RequireEager("Synchronize");
        _ctx.Synchronize();
    }

    public void Argmax(DeviceTensor logits, Span<int> tokenIds)
    {
        var t = Cuda(logits);
        Require(t, DType.F32);
        int vocab = t.Columns, rows = tokenIds.Length;
        if (rows != t.Rows || vocab == 0)
        {
            throw new ArgumentException($"Argmax: {rows} ids for logits {t}");
        }

        EndGraphStep();
        if (rows == 0)
        {
            return;
        }

        EnsureTokenIds(rows);
        ulong pl = t.Pointer, ids = _argmaxIds;
        void** args = stackalloc void*[] { &pl, &ids, &vocab };
        Launch("argmax.cu", "argmax_rows", (uint)rows, 1, 1024, args);
        ReadTokenIds(tokenIds);
    }

    public bool SamplesOnBackend => true;

    /// <summary>
    /// sample.cu's sample_rows, one block per row: the per-row parameters go up in one copy into a buffer reused from
    /// step to step, and only the ids come back. Runs after the step like <see cref="Argmax"/> (it ends a recorded or
    /// replayed decode step first).
    /// </summary>
    public void Sample(DeviceTensor logits, ReadOnlySpan<Sampling.RowSampling> rows, Span<int> tokenIds)
    {
        var t = Cuda(logits);
        Require(t, DType.F32);
        int vocab = t.Columns, count = rows.Length;
        if (count != t.Rows || tokenIds.Length != count || vocab == 0)
        {
            throw new ArgumentException($"Sample: {count} rows and {tokenIds.Length} ids for logits {t}");
        }

        EndGraphStep();
        if (count == 0)
        {
            return;
        }

        EnsureTokenIds(count);
        if (_sampleParamsHost.Length < count)
        {
            _sampleParamsHost = new SampleRowParams[Math.Max(count, 256)];
        }

        for (var r = 0; r < count; r++)
        {
            _sampleParamsHost[r] = SampleRowParams.From(rows[r]);
        }

        // At least 256 rows' worth at once, so a growing batch does not free and reallocate it step after step.
        var parameters = Grow(ref _sampleParams, ref _sampleParamsBytes, (long)Math.Max(count, 256) * sizeof(SampleRowParams));
        fixed (SampleRowParams* p = _sampleParamsHost)
        {
            _ctx.Driver.Check(_ctx.Driver.MemcpyHtoDAsync(parameters, p, (nuint)(count * sizeof(SampleRowParams)), _ctx.Stream), "cuMemcpyHtoDAsync(sample parameters)");
        }

        ulong pl = t.Pointer, pp = parameters, ids = _argmaxIds;
        void** args = stackalloc void*[] { &pl, &pp, &ids, &vocab };
        Launch("sample.cu", "sample_rows", (uint)count, 1, 1024, args);
        ReadTokenIds(tokenIds);
    }

    /// <summary>Copies the ids the argmax or sample kernel wrote to the host and waits for them: the step's one sync.</summary>
    private void ReadTokenIds(Span<int> tokenIds)
    {
        fixed (int* p = tokenIds)
        {
            _ctx.Driver.Check(_ctx.Driver.MemcpyDtoHAsync(p, _argmaxIds, (nuint)(tokenIds.Length * 4), _ctx.Stream), "cuMemcpyDtoHAsync(token ids)");
        }

        _ctx.Synchronize();
    }

    /// <summary>Grows the device buffer the argmax and sample kernels write their ids to. ids: [rows] int.</summary>
    private void EnsureTokenIds(int rows)
    {
        if (_argmaxIdsBytes < rows * 4L)
        {
            if (_argmaxIds != 0)
            {
                _ctx.Synchronize();
                _ctx.Free(_argmaxIds);
            }

            _argmaxIdsBytes = Math.Max(rows * 4L, 1024);
            _argmaxIds = _ctx.Alloc(_argmaxIdsBytes);
        }
    }

    /// <summary>
    /// One row's parameters as sample.cu's SampleParams reads them (32 bytes). InverseTemperature is the host sampler's
    /// (float)(1 / temperature), computed here exactly as there; 0 marks a greedy row.
    /// </summary>
    [System.Runtime.InteropServices.StructLayout(System.Runtime.InteropServices.LayoutKind.Sequential)]
    private readonly struct SampleRowParams(float inverseTemperature, int topK, double topP, double minP, double u)
    {
        public readonly float InverseTemperature = inverseTemperature;
        public readonly int TopK = topK;
        public readonly double TopP = topP;
        public readonly double MinP = minP;
        public readonly double U = u;

        public static SampleRowParams From(in Sampling.RowSampling row) =>
            row.IsGreedy ? default : new SampleRowParams((float)(1.0 / row.Temperature), row.TopK, row.TopP, row.MinP, row.U);
    }

    /// <summary>
    /// Packs the batch into one int array and copies it to the device in one transfer:
    /// ids, positions, slots, token→sequence, logit rows, then per sequence query start, query length, context
    /// length and block-table offset, then the block tables back to back.
    /// </summary>
    public void PrepareStep(ForwardBatch batch)
    {
        Live();
        AbandonGraphStep();
        int t = batch.TokenCount, s = batch.Sequences.Length, l = batch.LogitRows.Length;
        var tableInts = 0;
        foreach (var seq in batch.Sequences)
        {
            tableInts += seq.BlockTable.Length;
        }

        var total = (4 * t) + l + (4 * s) + tableInts;
        if (_meta.Length < total)
        {
            _meta = new int[Math.Max(total, _meta.Length * 2)];
        }

        var m = _meta.AsSpan();
        batch.TokenIds.CopyTo(m);
        batch.Positions.CopyTo(m[t..]);
        batch.SlotMapping.CopyTo(m[(2 * t)..]);
        batch.LogitRows.CopyTo(m[(4 * t)..]);
        int seqBase = (4 * t) + l, tables = seqBase + (4 * s), offset = 0;
        for (var i = 0; i < s; i++)
        {
            var seq = batch.Sequences[i];
            if (seq.QueryStart < 0 || seq.QueryLength < 0 || seq.QueryStart + seq.QueryLength > t)
            {
                throw new ArgumentException($"sequence {i} covers tokens [{seq.QueryStart}, {seq.QueryStart + seq.QueryLength}) of a {t}-token batch");
            }

            for (var j = 0; j < seq.QueryLength; j++)
            {
                m[(3 * t) + seq.QueryStart + j] = i;
            }

            m[seqBase + i] = seq.QueryStart;
            m[seqBase + s + i] = seq.QueryLength;
            m[seqBase + (2 * s) + i] = seq.ContextLength;
            m[seqBase + (3 * s) + i] = offset;
            seq.BlockTable.CopyTo(m[(tables + offset)..]);
            offset += seq.BlockTable.Length;
        }

        EnsureMetaCapacity(total * 4L);
        fixed (int* p = _meta)
        {
            _ctx.Driver.Check(_ctx.Driver.MemcpyHtoDAsync(_metaDevice, p, (nuint)(total * 4), _ctx.Stream), "cuMemcpyHtoDAsync(step metadata)");
        }

        _tokens = t;
        _maxContext = batch.MaxContextLength;
        _sequences = s;
        _logitRows = l;
        _prepared = batch;
        var graphBatch = DecodeGraphBatch(batch);
        if (graphBatch > 0)
        {
            BeginGraphStep(graphBatch); // after the metadata copy: a recording reads the metadata, it does not contain it
        }
    }

    /// <summary>Grows the step-metadata buffer (dropping every recording, which reads it at its old address).</summary>
    private void EnsureMetaCapacity(long bytes)
    {
        if (_metaCapacity >= bytes)
        {
            return;
        }

        DropGraphs();
        if (_metaDevice != 0)
        {
            _ctx.Synchronize();
            _ctx.Free(_metaDevice);
        }

        _metaCapacity = Math.Max(bytes * 2, 4096);
        _metaDevice = _ctx.Alloc(_metaCapacity);
    }

    /// <summary>B when the step is a pure decode of B sequences that may be recorded (tokens = sequences = logit rows = B), else 0.</summary>
    private int DecodeGraphBatch(ForwardBatch batch)
    {
        var b = batch.Sequences.Length;
        if (_graphLimits is null || b == 0 || b > _graphMaxBatch || batch.TokenCount != b || batch.LogitRows.Length != b)
        {
            return 0;
        }

        foreach (var seq in batch.Sequences)
        {
            if (seq.QueryLength != 1)
            {
                return 0;
            }
        }

        return b;
    }

    private void BeginGraphStep(int batch)
    {
        if (_ctx.FreeCount != _graphFrees)
        {
            DropGraphs(); // some buffer was freed since the recordings were made: any of them may point at it
            _graphFrees = _ctx.FreeCount;
        }

        _stepBatch = batch;
        _signature = SignatureSeed;
        if (RecordDecodeGraphs && _graphs.TryGetValue(batch, out var graph))
        {
            graph.LastUsed = ++_graphClock;
            _replaying = graph;
            _mode = StepMode.Replay;
        }
        else if (RecordDecodeGraphs && _eagerDecodeSizes.Contains(batch) && !_uncapturable.Contains(batch))
        {
            if (_graphs.Count >= MaxDecodeGraphs)
            {
                EvictLeastRecentlyUsed();
            }

            _ctx.Driver.Check(_ctx.Driver.StreamBeginCapture(_ctx.Stream, CudaDriver.CaptureModeThreadLocal), "cuStreamBeginCapture");
            _ctx.CapturingFor = $"the decode step of batch size {batch}";
            _mode = StepMode.Capture;
        }
        else
        {
            _eagerDecodeSizes.Add(batch);
            _mode = StepMode.Shaped;
        }

        _stepFrees = _ctx.FreeCount;
        _stepAllocs = _ctx.AllocCount;
    }

    /// <summary>
    /// Ends the current decode step at its Download or Argmax: a recording is finished, instantiated and launched; a
    /// replay is checked against its recording and launched. Eager steps have nothing to do.
    /// </summary>
    private void EndGraphStep()
    {
        var mode = _mode;
        _mode = StepMode.Eager;
        if (mode == StepMode.Capture)
        {
            _ctx.CapturingFor = null;
            nint graph = 0;
            var status = _ctx.Driver.StreamEndCapture(_ctx.Stream, &graph);
            if (status != 0 || graph == 0)
            {
                if (graph != 0)
                {
                    _ctx.Driver.GraphDestroy(graph);
                }

                _uncapturable.Add(_stepBatch);
                _ctx.Driver.Check(status == 0 ? 999 : status, "cuStreamEndCapture");
            }

            nint exec;
            status = _ctx.Driver.GraphInstantiateWithFlags(&exec, graph, 0);
            if (status != 0)
            {
                _ctx.Driver.GraphDestroy(graph);
                _uncapturable.Add(_stepBatch);
                _ctx.Driver.Check(status, "cuGraphInstantiateWithFlags");
            }

            _graphs[_stepBatch] = new StepGraph(graph, exec, _signature) { LastUsed = ++_graphClock };
            GraphCaptures++;
            _ctx.Driver.Check(_ctx.Driver.GraphLaunch(exec, _ctx.Stream), "cuGraphLaunch");
        }
        else if (mode == StepMode.Replay)
        {
            var graph = _replaying!;
            _replaying = null;
            if (graph.Signature != _signature || _ctx.FreeCount != _stepFrees || _ctx.AllocCount != _stepAllocs)
            {
                DropGraphs();
                throw new InvalidOperationException(
                    $"the decode step of batch size {_stepBatch} made other backend calls (or allocations) than the step recorded for it, so the recording cannot stand in for it and the step was not run; the recordings were dropped and will be made again");
            }

            _ctx.Driver.Check(_ctx.Driver.GraphLaunch(graph.Exec, _ctx.Stream), "cuGraphLaunch");
            GraphReplays++;
        }
    }

    /// <summary>Forgets a decode step that never reached its Download: an open recording is ended and thrown away.</summary>
    private void AbandonGraphStep()
    {
        if (_mode == StepMode.Capture)
        {
            _ctx.CapturingFor = null;
            nint graph = 0;
            _ = _ctx.Driver.StreamEndCapture(_ctx.Stream, &graph); // invalidated or not, the recording is discarded
            if (graph != 0)
            {
                _ctx.Driver.GraphDestroy(graph);
            }

            _uncapturable.Add(_stepBatch); // recording failed once for this size: run it eagerly from now on
        }

        _mode = StepMode.Eager;
        _replaying = null;
    }

    private void DropGraphs()
    {
        foreach (var graph in _graphs.Values)
        {
            graph.Destroy(_ctx.Driver);
        }

        _graphs.Clear();
    }

    private void EvictLeastRecentlyUsed()
    {
        var oldest = _graphs.MinBy(g => g.Value.LastUsed);
        oldest.Value.Destroy(_ctx.Driver);
        _graphs.Remove(oldest.Key);
    }

    /// <summary>Throws when an op that needs the host runs inside a recorded or replayed decode step.</summary>
    private void RequireEager(string op)
    {
        if (_mode is StepMode.Capture or StepMode.Replay)
        {
            throw new InvalidOperationException(
                $"{op} needs the host in the middle of a decode step recorded as a CUDA graph; a model that does this must not enable decode graphs (or run with --enforce-eager)");
        }
    }

    private void Fold(ulong value) => _signature = (_signature ^ value) * 1099511628211UL;

    private ulong Meta(int intOffset) => _metaDevice + ((ulong)intOffset * 4);

    private void EnsurePrepared(ForwardBatch batch)
    {
        if (!ReferenceEquals(batch, _prepared))
        {
            PrepareStep(batch);
        }
    }

    public void Embedding(DeviceTensor table, ForwardBatch batch, DeviceTensor output)
    {
        var w = Cuda(table);
        var o = Cuda(output);
        Require(o, DType.F32);
        EnsurePrepared(batch);
        int n = w.Columns, tokens = _tokens;
        if (o.Columns != n || o.Rows != tokens)
        {
            throw new ArgumentException($"embedding shape mismatch: table {w}, output {o}, {tokens} tokens");
        }

        ulong pw = w.Pointer, ids = Meta(0), po = o.Pointer;
        void** args = stackalloc void*[] { &pw, &ids, &po, &n };
        Launch("embedding.cu", EmbeddingKernels[TypeIndex(w.DType)], (uint)Math.Min((n + 255) / 256, 64), (uint)tokens, 256, args);
    }

    public void RmsNorm(DeviceTensor x, DeviceTensor weight, float eps, DeviceTensor output) => Norm(null, x, weight, eps, output);

    public void AddRmsNorm(DeviceTensor residual, DeviceTensor x, DeviceTensor weight, float eps, DeviceTensor output) => Norm(residual, x, weight, eps, output);

    private void Norm(DeviceTensor? residual, DeviceTensor x, DeviceTensor weight, float eps, DeviceTensor output)
    {
        var xt = Cuda(x);
        var w = Cuda(weight);
        var o = Cuda(output);
        int n = xt.Columns;
        if (w.ElementCount != n || o.ElementCount != xt.ElementCount || (residual is not null && residual.ElementCount != xt.ElementCount))
        {
            throw new ArgumentException($"rmsnorm shape mismatch: x {xt}, weight {w}, output {o}");
        }

        Require(xt, DType.F32);
        Require(o, DType.F32);
        ulong px = xt.Pointer, pw = w.Pointer, po = o.Pointer;
        var rows = (uint)xt.Rows;
        var threads = n >= 2048 ? 1024u : n >= 512 ? 256u : 64u;
        if (residual is null)
        {
            void** args = stackalloc void*[] { &px, &pw, &po, &n, &eps };
            Launch("rmsnorm.cu", RmsNormKernels[TypeIndex(w.DType)], rows, 1, threads, args);
        }
        else
        {
            var r = Cuda(residual);
            Require(r, DType.F32);
            var pr = r.Pointer;
            void** args = stackalloc void*[] { &pr, &px, &pw, &po, &n, &eps };
            Launch("rmsnorm.cu", AddRmsNormKernels[TypeIndex(w.DType)], rows, 1, threads, args);
        }
    }

    public void MatMul(DeviceTensor x, DeviceTensor weight, DeviceTensor? bias, DeviceTensor output)
    {
        var xt = Cuda(x);
        var w = Cuda(weight);
        var o = Cuda(output);
        var b = bias is null ? null : Cuda(bias);
        int inDim = xt.Columns, outDim = w.Shape[0], tokens = (int)xt.Rows;
        if (w.Columns != inDim || o.Columns != outDim || o.Rows != tokens || (b is not null && (b.ElementCount != outDim || b.DType != DType.F32)))
        {
            throw new ArgumentException($"matmul shape mismatch: x {xt}, weight {w}, bias {b}, output {o}");
        }

        Require(xt, DType.F32);
        Require(o, DType.F32);
        if (tokens == 0 || outDim == 0)
        {
            return;
        }

        ulong px = xt.Pointer, pw = w.Pointer, pb = b?.Pointer ?? 0, po = o.Pointer;
        if (tokens <= GemvLimit)
        {
            var vec = inDim % 8 == 0 && px % 16 == 0 && pw % 16 == 0 ? 1 : 0;
            void** args = stackalloc void*[] { &px, &pw, &pb, &po, &inDim, &outDim, &vec };
            var (blocks, threads) = GemvGrid(GemvWarps(outDim, w.DType));
            Launch("matmul.cu", GemvKernels[tokens][TypeIndex(w.DType)], blocks, 1, threads, args);
            return;
        }

        if (w.DType == DType.F32 || TensorCoreGemm)
        {
            CublasGemm(xt, w, pb, o, tokens, inDim, outDim);
            return;
        }

        void** gemmArgs = stackalloc void*[] { &px, &pw, &pb, &po, &tokens, &inDim, &outDim };
        Launch("matmul.cu", GemmKernels[TypeIndex(w.DType)], (uint)((outDim + 63) / 64), (uint)((tokens + 63) / 64), 256, gemmArgs);
    }

    /// <summary>
    /// The gate and up products of a gated MLP with the activation as their epilogue, in one GEMV launch for
    /// decode-sized T (each warp streams one row of both weights): no [T, intermediate] products are stored and no
    /// silu_mul kernel runs. Larger T: one shared product, then <see cref="SiluMul"/>.
    /// </summary>
    public void SiluGatedMatMul(DeviceTensor x, MatMulTarget gate, MatMulTarget up)
    {
        var xt = Cuda(x);
        var wg = Cuda(gate.Weight);
        var wu = Cuda(up.Weight);
        var o = Cuda(gate.Output);
        int inDim = xt.Columns, tokens = (int)xt.Rows, outDim = wg.Shape[0];
        var fits = tokens > 0 && tokens <= GemvLimit && xt.DType == DType.F32 && wg.DType is DType.F32 or DType.F16 or DType.BF16
                   && wu.DType == wg.DType && wg.Columns == inDim && wu.Columns == inDim && wu.Shape[0] == outDim
                   && o.DType == DType.F32 && o.Rows == tokens && o.Columns == outDim
                   && (gate.Bias is null || (gate.Bias.DType == DType.F32 && gate.Bias.ElementCount == outDim))
                   && (up.Bias is null || (up.Bias.DType == DType.F32 && up.Bias.ElementCount == outDim));
        if (!fits)
        {
            MatMulShared(x, [gate, up]);
            SiluMul(gate.Output, up.Output, gate.Output);
            return;
        }

        ulong px = xt.Pointer, pg = wg.Pointer, pu = wu.Pointer, py = o.Pointer;
        ulong bg = gate.Bias is { } gb ? Cuda(gb).Pointer : 0, bu = up.Bias is { } ub ? Cuda(ub).Pointer : 0;
        var vec = inDim % 8 == 0 && (px | pg | pu) % 16 == 0 ? 1 : 0;
        void** args = stackalloc void*[] { &px, &pg, &bg, &pu, &bu, &py, &inDim, &outDim, &vec };
        var (blocks, threads) = GemvGrid(outDim); // a warp a (gate, up) row pair
        Launch("matmul.cu", SiluGatedGemvKernels[tokens][TypeIndex(wg.DType)], blocks, 1, threads, args);
    }

    /// <summary>
    /// A gated MLP with its intermediate kept in the weights' 16-bit type, for products that run on cuBLAS (tensor-core
    /// mode, more tokens than a GEMV takes): x is rounded once; the gate and up products (one GEMM when the weights are
    /// stacked) are stored rounded in gate.Output's memory; silu_mul_rounded writes the rounded silu(g) * u into
    /// up.Output's memory; the down product reads it as its operand. So the [T, intermediate] values cross memory as
    /// 16-bit twice instead of as fp32 four times with a rounding pass (about a third of the non-product time of a 2k
    /// prefill). Everything else runs as the default: <see cref="SiluGatedMatMul"/>, then <see cref="MatMul"/>.
    /// </summary>
    public void SiluGatedMlp(DeviceTensor x, MatMulTarget gate, MatMulTarget up, MatMulTarget down)
    {
        var xt = Cuda(x);
        CudaTensor wg = Cuda(gate.Weight), wu = Cuda(up.Weight), wd = Cuda(down.Weight);
        CudaTensor og = Cuda(gate.Output), ou = Cuda(up.Output), o = Cuda(down.Output);
        int inDim = xt.Columns, tokens = (int)xt.Rows, inner = wg.Shape[0], outDim = wd.Shape[0];
        var dtype = wg.DType;
        var fits = tokens > GemvLimit && TensorCoreGemm && dtype is DType.BF16 or DType.F16 && wu.DType == dtype && wd.DType == dtype
                   && xt.DType == DType.F32 && wg.Columns == inDim && wu.Columns == inDim && wu.Shape[0] == inner && wd.Columns == inner
                   && og.DType == DType.F32 && og.Rows == tokens && og.Columns == inner && ou.DType == DType.F32 && ou.Rows == tokens && ou.Columns == inner
                   && o.DType == DType.F32 && o.Rows == tokens && o.Columns == outDim
                   && (gate.Bias is null || (gate.Bias.DType == DType.F32 && gate.Bias.ElementCount == inner))
                   && (up.Bias is null || (up.Bias.DType == DType.F32 && up.Bias.ElementCount == inner))
                   && (down.Bias is null || (down.Bias.DType == DType.F32 && down.Bias.ElementCount == outDim));
        if (!fits)
        {
            IBackend.SiluGatedMlpAsParts(this, x, gate, up, down);
            return;
        }

        // gate.Output's fp32 [T, inner] holds the rounded [T, 2 * inner] products; up.Output's the rounded intermediate.
        var rounded = RoundActivations(xt, dtype);
        var products = og.Pointer;
        long rowStride, upOffset;
        if (StackOf([gate, up]) is { } stack)
        {
            CublasGemm(rounded, stack, 0, products, tokens, inDim, 2 * inner, roundedOutput: true);
            rowStride = 2 * inner;
            upOffset = inner;
        }
        else
        {
            upOffset = (long)tokens * inner;
            CublasGemm(rounded, wg, 0, products, tokens, inDim, inner, roundedOutput: true);
            CublasGemm(rounded, wu, 0, products + (ulong)(upOffset * 2), tokens, inDim, inner, roundedOutput: true);
            rowStride = inner;
        }

        ulong bg = gate.Bias is { } gb ? Cuda(gb).Pointer : 0, bu = up.Bias is { } ub ? Cuda(ub).Pointer : 0;
        ulong intermediate = ou.Pointer;
        var count = (long)tokens * inner;
        void** args = stackalloc void*[] { &products, &rowStride, &upOffset, &bg, &bu, &intermediate, &tokens, &inner };
        Launch("silu_mul.cu", dtype == DType.BF16 ? "silu_mul_rounded_bf16" : "silu_mul_rounded_f16", GridFor((count + 7) / 8), 1, 256, args);
        CublasGemm(intermediate, wd, down.Bias is { } db ? Cuda(db).Pointer : 0, o.Pointer, tokens, inner, outDim);
    }

    public bool FusesGatedMlp => true;

    /// <summary>
    /// Products of one x: up to three weights of one type in a single GEMV launch for decode-sized T (q/k/v or
    /// gate/up: the small k and v products no longer leave most multiprocessors idle), and one rounding of x to
    /// bf16/f16 shared by the cuBLAS products of larger T. Anything else runs as separate <see cref="MatMul"/> calls.
    /// </summary>
    public void MatMulShared(DeviceTensor x, ReadOnlySpan<MatMulTarget> targets)
    {
        var xt = Cuda(x);
        int inDim = xt.Columns, tokens = (int)xt.Rows;
        var dtype = targets.Length > 0 ? targets[0].Weight.DType : DType.F32;
        var fits = targets.Length is 2 or 3 && xt.DType == DType.F32 && tokens > 0;
        foreach (var target in targets)
        {
            var w = Cuda(target.Weight);
            var o = Cuda(target.Output);
            fits &= w.DType == dtype && w.Columns == inDim && o.DType == DType.F32 && o.Rows == tokens && o.Columns == w.Shape[0]
                && (target.Bias is null || (target.Bias.DType == DType.F32 && target.Bias.ElementCount == w.Shape[0]));
        }

        if (!fits || dtype is not (DType.F32 or DType.F16 or DType.BF16))
        {
            foreach (var target in targets)
            {
                MatMul(x, target.Weight, target.Bias, target.Output);
            }

            return;
        }

        if (tokens <= GemvLimit)
        {
            ulong px = xt.Pointer;
            var vec = inDim % 8 == 0 && px % 16 == 0 ? 1 : 0;
            Span<ulong> w = stackalloc ulong[3];
            Span<ulong> b = stackalloc ulong[3];
            Span<ulong> y = stackalloc ulong[3];
            Span<int> rows = stackalloc int[3];
            var total = 0L;
            var warps = 0L;
            for (var i = 0; i < targets.Length; i++)
            {
                w[i] = Cuda(targets[i].Weight).Pointer;
                b[i] = targets[i].Bias is { } bias ? Cuda(bias).Pointer : 0;
                y[i] = Cuda(targets[i].Output).Pointer;
                rows[i] = targets[i].Weight.Shape[0];
                vec = w[i] % 16 == 0 ? vec : 0;
                total += rows[i];
                warps += GemvWarps(rows[i], dtype);
            }

            if (total == 0)
            {
                return;
            }

            ulong w0 = w[0], b0 = b[0], y0 = y[0], w1 = w[1], b1 = b[1], y1 = y[1], w2 = w[2], b2 = b[2], y2 = y[2];
            int out0 = rows[0], out1 = rows[1], out2 = rows[2];
            void** args = stackalloc void*[] { &px, &inDim, &vec, &w0, &b0, &y0, &out0, &w1, &b1, &y1, &out1, &w2, &b2, &y2, &out2 };
            var (blocks, threads) = GemvGrid(warps);
            Launch("matmul.cu", SharedGemvKernels[tokens][TypeIndex(dtype)], blocks, 1, threads, args);
            return;
        }

        if (dtype != DType.F32 && TensorCoreGemm)
        {
            var rounded = RoundActivations(xt, dtype);
            if (StackOf(targets) is { } stack)
            {
                // Consecutive rows of one allocation (LoadWeightStack): one GEMM over the stack into a [T, total]
                // buffer, then one pass that splits its columns into the outputs and adds the biases. The small k/v
                // products alone would fill a fraction of the multiprocessors.
                var total = stack.Shape[0];
                var buffer = Grow(ref _stackedOutput, ref _stackedOutputBytes, (long)tokens * total * 4);
                CublasGemm(rounded, stack, 0, buffer, tokens, inDim, total);
                SplitColumns(buffer, tokens, total, targets);
                return;
            }

            foreach (var target in targets)
            {
                var bias = target.Bias is null ? 0 : Cuda(target.Bias).Pointer;
                CublasGemm(rounded, Cuda(target.Weight), bias, Cuda(target.Output).Pointer, tokens, inDim, target.Weight.Shape[0]);
            }

            return;
        }

        foreach (var target in targets)
        {
            MatMul(x, target.Weight, target.Bias, target.Output);
        }
    }

    /// <summary>The allocation the targets' weights are consecutive row slices of, in order and covering it all; else null.</summary>
    private static CudaTensor? StackOf(ReadOnlySpan<MatMulTarget> targets)
    {
        if (targets[0].Weight is not CudaTensor { Parent: { } stack } first || first.Pointer != stack.Pointer)
        {
            return null;
        }

        var next = stack.Pointer;
        var rows = 0;
        foreach (var target in targets)
        {
            if (target.Weight is not CudaTensor w || w.Parent != stack || w.Pointer != next)
            {
                return null;
            }

            next += (ulong)w.ByteCount;
            rows += w.Shape[0];
        }

        return rows == stack.Shape[0] ? stack : null;
    }

    /// <summary>buffer [T, total] → the targets' outputs [T, out_i] (+ bias_i), columns in target order.</summary>
    private void SplitColumns(ulong buffer, int tokens, int total, ReadOnlySpan<MatMulTarget> targets)
    {
        Span<ulong> y = stackalloc ulong[3];
        Span<ulong> b = stackalloc ulong[3];
        Span<int> n = stackalloc int[3];
        for (var i = 0; i < targets.Length; i++)
        {
            y[i] = Cuda(targets[i].Output).Pointer;
            b[i] = targets[i].Bias is { } bias ? Cuda(bias).Pointer : 0;
            n[i] = targets[i].Weight.Shape[0];
        }

        ulong y0 = y[0], b0 = b[0], y1 = y[1], b1 = b[1], y2 = y[2], b2 = b[2];
        int n0 = n[0], n1 = n[1], n2 = n[2];
        var count = (long)tokens * total;
        void** args = stackalloc void*[] { &buffer, &total, &tokens, &y0, &b0, &n0, &y1, &b1, &n1, &y2, &b2, &n2 };
        Launch("matmul.cu", "split_columns", GridFor(count), 1, 256, args);
    }

    /// <summary>
    /// Loads weights of one 16-bit or f32 type and one row width as consecutive rows of a single allocation, so that
    /// products over them can run as one (<see cref="MatMulShared"/>).
    /// </summary>
    public bool StacksWeights => true;

    /// <summary>F32 caches for every attention op; BF16 for standard (key and value) attention.</summary>
    public bool SupportsKvCache(KvCache.KvCacheSpec spec) => spec.DType == DType.F32 || (spec.DType == DType.BF16 && spec.Tensors.Count == 2);

    public DeviceTensor? LoadWeightStack(ReadOnlySpan<CheckpointTensor> sources)
    {
        RequireEager("LoadWeightStack");
        if (sources.Length < 2)
        {
            return null;
        }

        var dtype = sources[0].DType;
        var columns = sources[0].Shape.Length == 2 ? sources[0].Shape[1] : -1;
        var rows = 0;
        foreach (var source in sources)
        {
            if (source.DType != dtype || dtype is not (DType.F32 or DType.F16 or DType.BF16) || source.Shape.Length != 2 || source.Shape[1] != columns
                || source.ByteCount != (long)source.Shape[0] * columns * dtype.SizeInBytes())
            {
                return null;
            }

            rows += source.Shape[0];
        }

        var stack = (CudaTensor)Allocate(dtype, rows, columns);
        var offset = stack.Pointer;
        foreach (var source in sources)
        {
            _ctx.Driver.Check(_ctx.Driver.MemcpyHtoDAsync(offset, source.Data, (nuint)source.ByteCount, _ctx.Stream), "cuMemcpyHtoDAsync(weight)");
            offset += (ulong)source.ByteCount;
        }

        return stack;
    }

    /// <summary>
    /// output = x · Wᵀ through cublasGemmEx with fp32 accumulation. cuBLAS is column-major, so it computes
    /// outputᵀ [out, T] = W [out, in] (read as in × out, transposed) · xᵀ (read as in × T).
    /// F16/BF16 weights need the activations in the same type: they are rounded into a scratch buffer first.
    /// </summary>
    private void CublasGemm(CudaTensor x, CudaTensor w, ulong bias, CudaTensor o, int tokens, int inDim, int outDim) =>
        CublasGemm(w.DType == DType.F32 ? x.Pointer : RoundActivations(x, w.DType), w, bias, o.Pointer, tokens, inDim, outDim);

    /// <summary>x rounded to the weights' 16-bit type in the scratch buffer (cuBLAS needs both operands in one type).</summary>
    private ulong RoundActivations(CudaTensor x, DType dtype)
    {
        var count = x.ElementCount;
        var scratch = Scratch(count * 2);
        ulong px = x.Pointer;
        void** args = stackalloc void*[] { &px, &scratch, &count };
        Launch("matmul.cu", dtype == DType.BF16 ? "convert_to_bf16" : "convert_to_f16", GridFor(count), 1, 256, args);
        return scratch;
    }

    /// <summary>
    /// The product on cuBLAS with x already in the weights' type (x itself for F32 weights). o is F32, or with
    /// <paramref name="roundedOutput"/> in the weights' 16-bit type (then no bias and no split).
    /// </summary>
    private void CublasGemm(ulong b, CudaTensor w, ulong bias, ulong o, int tokens, int inDim, int outDim, bool roundedOutput = false)
    {
        var type = w.DType switch
        {
            DType.F32 => Cublas.DataF32,
            DType.BF16 => Cublas.DataBF16,
            _ => Cublas.DataF16,
        };

        float alpha = 1, beta = 0;
        var cublas = _ctx.Cublas;
        if (_mode is StepMode.Capture or StepMode.Replay)
        {
            Fold(w.Pointer);
            Fold(b);
            Fold(o);
            Fold(((ulong)(uint)tokens << 32) | (uint)inDim);
            Fold((ulong)(uint)outDim);
        }

        if (roundedOutput && (w.DType == DType.F32 || bias != 0))
        {
            throw new ArgumentException("a rounded cuBLAS output needs 16-bit weights and no bias");
        }

        var outputType = roundedOutput ? type : Cublas.DataF32;
        var splits = w.DType == DType.F32 || roundedOutput ? 1 : SplitK(tokens, inDim, outDim);
        if (splits > 1)
        {
            // Few tokens and few output rows leave most multiprocessors without an output tile (a 3584 x 3584 product
            // of 64 tokens ran at a tenth of the memory bandwidth): the K dimension is cut into `splits` chunks, one
            // batch entry each, written as fp32 partials [splits, T, out] that one pass sums (and adds the bias to).
            var chunk = inDim / splits;
            var partial = Grow(ref _splitKPartials, ref _splitKPartialsBytes, (long)splits * tokens * outDim * 4);
            if (_mode is StepMode.Capture or StepMode.Replay)
            {
                Fold(partial);
                Fold((ulong)splits);
            }

            if (_mode != StepMode.Replay)
            {
                var timing = KernelTimes is not null && _mode != StepMode.Capture ? StartTiming() : default;
                cublas.Check(
                    cublas.GemmStridedBatchedEx(_ctx.CublasHandle, Cublas.OpT, Cublas.OpN, outDim, tokens, chunk, &alpha, w.Pointer, type, inDim, chunk, b, type, inDim, chunk,
                        &beta, partial, Cublas.DataF32, outDim, (long)tokens * outDim, splits, Cublas.Compute32F, Cublas.GemmDefault),
                    "cublasGemmStridedBatchedEx");
                if (timing.Start != 0)
                {
                    StopTiming(timing, $"cublasGemmStridedBatchedEx {outDim}x{inDim} tokens {tokens} split {splits}");
                }
            }

            var count = (long)tokens * outDim;
            void** sumArgs = stackalloc void*[] { &partial, &bias, &o, &count, &outDim, &splits };
            Launch("matmul.cu", "sum_partials", GridFor(count), 1, 256, sumArgs);
            return;
        }

        if (_mode != StepMode.Replay)
        {
            var timing = KernelTimes is not null && _mode != StepMode.Capture ? StartTiming() : default;
            cublas.Check(
                cublas.GemmEx(_ctx.CublasHandle, Cublas.OpT, Cublas.OpN, outDim, tokens, inDim, &alpha, w.Pointer, type, inDim, b, type, inDim, &beta, o, outputType, outDim, Cublas.Compute32F, Cublas.GemmDefault),
                "cublasGemmEx");
            if (timing.Start != 0)
            {
                StopTiming(timing, $"cublasGemmEx {outDim}x{inDim} tokens {tokens}{(roundedOutput ? " rounded" : "")}");
            }
        }

        if (bias != 0)
        {
            ulong po = o;
            var n = (long)tokens * outDim;
            void** args = stackalloc void*[] { &po, &bias, &tokens, &outDim };
            Launch("matmul.cu", "bias_add", (uint)((n + 255) / 256), 1, 256, args);
        }
    }

    /// <summary>
    /// Most K-dimension chunks of one skinny tensor-core product (1 turns the split off); a property so that a benchmark
    /// can compare.
    /// </summary>
    public int SplitKLimit { get; set; } = 4;

    /// <summary>
    /// K chunks for a product of T tokens: enough that (128 x 128 output tiles) x chunks reach the multiprocessor count,
    /// at most <see cref="SplitKLimit"/>, each chunk a multiple of 64 columns (16-byte aligned operands) and at least
    /// 512 long. 1 (no split) for prefill-sized products, which have tiles for every multiprocessor already.
    /// </summary>
    internal int SplitK(int tokens, int inDim, int outDim)
    {
        long tiles = (long)((outDim + 127) / 128) * ((tokens + 127) / 128);
        var splits = (int)Math.Min(SplitKLimit, _ctx.MultiprocessorCount / Math.Max(1, tiles));
        while (splits > 1 && (inDim % (splits * 64) != 0 || inDim / splits < 512))
        {
            splits--;
        }

        return Math.Max(1, splits);
    }

    private ulong Scratch(long bytes) => Grow(ref _scratch, ref _scratchBytes, bytes);

    /// <summary>A device buffer of at least <paramref name="bytes"/>, grown (never shrunk) on demand; growing frees the old one, which drops recorded graphs.</summary>
    private ulong Grow(ref ulong buffer, ref long size, long bytes)
    {
        if (size < bytes)
        {
            if (buffer != 0)
            {
                _ctx.Synchronize();
                _ctx.Free(buffer);
            }

            size = Math.Max(bytes, size * 2);
            buffer = _ctx.Alloc(size);
        }

        return buffer;
    }

    public void Rope(DeviceTensor x, ForwardBatch batch, RopeSpec rope)
    {
        var xt = Cuda(x);
        EnsurePrepared(batch);
        CheckRope(xt, rope);
        var frequencies = RopeFrequencies(rope);
        ulong px = xt.Pointer, positions = Meta(_tokens);
        int tokens = _tokens, heads = xt.Shape[1], headDim = xt.Shape[2], rotary = rope.RotaryDim, interleaved = rope.Interleaved ? 1 : 0;
        var scaling = rope.AttentionScaling;
        void** args = stackalloc void*[] { &px, &positions, &frequencies, &tokens, &heads, &headDim, &rotary, &interleaved, &scaling };
        var pairs = (long)tokens * heads * (rotary / 2);
        Launch("rope.cu", "rope", (uint)((pairs + 255) / 256), 1, 256, args);
    }

    private void CheckRope(CudaTensor xt, RopeSpec rope)
    {
        Require(xt, DType.F32);
        if (xt.Rank != 3 || xt.Shape[0] != _tokens || rope.RotaryDim > xt.Shape[2] || rope.RotaryDim % 2 != 0 || rope.InverseFrequencies.Length < rope.RotaryDim / 2)
        {
            throw new ArgumentException($"rope shape mismatch: x {xt}, rotary dim {rope.RotaryDim}, {_tokens} tokens");
        }
    }

    /// <summary>The device copy of a rotary table's inverse frequencies, uploaded on first use.</summary>
    private ulong RopeFrequencies(RopeSpec rope)
    {
        if (!_ropeFrequencies.TryGetValue(rope, out var frequencies))
        {
            RequireEager("uploading rotary frequencies");
            frequencies = _ctx.Alloc(rope.InverseFrequencies.Length * 4L);
            fixed (float* p = rope.InverseFrequencies)
            {
                _ctx.Driver.Check(_ctx.Driver.MemcpyHtoDAsync(frequencies, p, (nuint)(rope.InverseFrequencies.Length * 4), _ctx.Stream), "cuMemcpyHtoDAsync(rope)");
            }

            _ropeFrequencies[rope] = frequencies;
        }

        return frequencies;
    }

    public void SiluMul(DeviceTensor gate, DeviceTensor up, DeviceTensor output) => Elementwise("silu_mul.cu", "silu_mul", gate, up, output);

    public void Add(DeviceTensor a, DeviceTensor b, DeviceTensor output) => Elementwise("add.cu", "add", a, b, output);

    private void Elementwise(string source, string kernel, DeviceTensor a, DeviceTensor b, DeviceTensor output)
    {
        var at = Cuda(a);
        var bt = Cuda(b);
        var o = Cuda(output);
        if (at.ElementCount != bt.ElementCount || at.ElementCount != o.ElementCount)
        {
            throw new ArgumentException($"{kernel} shape mismatch: {at}, {bt}, {o}");
        }

        Require(at, DType.F32);
        Require(bt, DType.F32);
        Require(o, DType.F32);
        ulong pa = at.Pointer, pb = bt.Pointer, po = o.Pointer;
        var n = at.ElementCount;
        void** args = stackalloc void*[] { &pa, &pb, &po, &n };
        Launch(source, kernel, GridFor(n), 1, 256, args);
    }

    public void Attention(DeviceTensor q, DeviceTensor k, DeviceTensor v, DeviceTensor keyCache, DeviceTensor valueCache, ForwardBatch batch, float scale, DeviceTensor output)
    {
        var (qt, kc, vc, o) = CheckAttention(q, k, v, keyCache, valueCache, batch, output);
        int tokens = _tokens, rowWidth = k.Shape[1] * k.Shape[2];
        ulong pk = Cuda(k).Pointer, pv = Cuda(v).Pointer, pkc = kc.Pointer, pvc = vc.Pointer, slots = Meta(2 * tokens);
        void** writeArgs = stackalloc void*[] { &pk, &pv, &pkc, &pvc, &slots, &tokens, &rowWidth };
        Launch("attention.cu", KvWriteKernels[kc.DType == DType.BF16 ? 1 : 0], (uint)(((long)tokens * rowWidth + 255) / 256), 1, 256, writeArgs);
        Attend(qt, kc, vc, o, k.Shape[1], batch, scale);
    }

    /// <summary>
    /// Rotates q in place and k on its way into the cache in one kernel (rope_kv_write), then attends: two rope
    /// launches and the cache write become one. k itself is left unrotated, as <see cref="IBackend.RopeAttention"/> allows.
    /// </summary>
    public void RopeAttention(DeviceTensor q, DeviceTensor k, DeviceTensor v, DeviceTensor keyCache, DeviceTensor valueCache, ForwardBatch batch, RopeSpec rope, float scale, DeviceTensor output)
    {
        var (qt, kc, vc, o) = CheckAttention(q, k, v, keyCache, valueCache, batch, output);
        CheckRope(qt, rope);
        CheckRope(Cuda(k), rope);
        var frequencies = RopeFrequencies(rope);
        int tokens = _tokens, heads = qt.Shape[1], kvHeads = k.Shape[1], headDim = qt.Shape[2], rotary = rope.RotaryDim, interleaved = rope.Interleaved ? 1 : 0;
        var scaling = rope.AttentionScaling;
        ulong pq = qt.Pointer, pk = Cuda(k).Pointer, pv = Cuda(v).Pointer, pkc = kc.Pointer, pvc = vc.Pointer, positions = Meta(_tokens), slots = Meta(2 * tokens);
        void** args = stackalloc void*[] { &pq, &pk, &pv, &pkc, &pvc, &positions, &slots, &frequencies, &tokens, &heads, &kvHeads, &headDim, &rotary, &interleaved, &scaling };
        var work = ((long)tokens * heads * (rotary / 2)) + ((long)tokens * kvHeads * headDim);
        Launch("rope.cu", kc.DType == DType.BF16 ? "rope_kv_write_kvbf16" : "rope_kv_write", (uint)((work + 255) / 256), 1, 256, args);
        Attend(qt, kc, vc, o, kvHeads, batch, scale);
    }

    private (CudaTensor Q, CudaTensor KeyCache, CudaTensor ValueCache, CudaTensor Output) CheckAttention(DeviceTensor q, DeviceTensor k, DeviceTensor v,
        DeviceTensor keyCache, DeviceTensor valueCache, ForwardBatch batch, DeviceTensor output)
    {
        var qt = Cuda(q);
        var kt = Cuda(k);
        var vt = Cuda(v);
        var kc = Cuda(keyCache);
        var vc = Cuda(valueCache);
        var o = Cuda(output);
        EnsurePrepared(batch);
        int tokens = _tokens, heads = qt.Shape[1], headDim = qt.Shape[2], kvHeads = kt.Shape[1];
        if (qt.Shape[0] != tokens || kt.Shape[0] != tokens || vt.ElementCount != kt.ElementCount || kt.Shape[2] != headDim
            || kc.Shape[2] != kvHeads || kc.Shape[3] != headDim || vc.ElementCount != kc.ElementCount || o.ElementCount != qt.ElementCount
            || kvHeads == 0 || heads % kvHeads != 0)
        {
            throw new ArgumentException($"attention shape mismatch: q {qt}, k {kt}, v {vt}, cache {kc}, output {o}");
        }

        if (headDim > 256)
        {
            throw new NotSupportedException($"the CUDA attention kernel handles head_dim up to 256, not {headDim}");
        }

        Require(qt, DType.F32);
        Require(kt, DType.F32);
        Require(vt, DType.F32);
        Require(o, DType.F32);
        if (kc.DType is not (DType.F32 or DType.BF16) || vc.DType != kc.DType)
        {
            throw new ArgumentException($"attention: the key and value caches must both be F32 or both BF16 (key {kc.DType}, value {vc.DType})");
        }

        return (qt, kc, vc, o);
    }

    /// <summary>Attention of q over the cache, whose rows for this step's tokens are already written. Kernels for a bf16
    /// cache carry the suffix _kvbf16 (same arithmetic, rows rounded on write, widened on read).</summary>
    private void Attend(CudaTensor qt, CudaTensor kc, CudaTensor vc, CudaTensor o, int kvHeads, ForwardBatch batch, float scale)
    {
        int tokens = _tokens, heads = qt.Shape[1], headDim = qt.Shape[2], blockSize = kc.Shape[1];
        ulong pkc = kc.Pointer, pvc = vc.Pointer;
        var bf16 = kc.DType == DType.BF16 ? 1 : 0;
        var maxQueryLength = MaxQueryLength(batch);
        if (headDim % 4 == 0 && maxQueryLength > FlashMinQueryLength)
        {
            FlashPrefill(qt, kc, vc, o, heads, kvHeads, headDim, blockSize, scale, maxQueryLength, 1);
            return;
        }

        if (MmaDecode(kc.DType, heads / kvHeads, kvHeads, headDim, maxQueryLength))
        {
            FlashPrefill(qt, kc, vc, o, heads, kvHeads, headDim, blockSize, scale, maxQueryLength, MmaDecodeSplits(kvHeads));
            return;
        }

        // Groups of up to 8 query heads per KV head run one block per (kv head, token, split), reading each K/V row once
        // for the whole group: decode_attention.cu when head_dim is a multiple of 8 (its 16-byte row slices), else
        // paged_attention_group; wider groups one block per (query head, token, split).
        var group = heads / kvHeads;
        var grouped = group <= AttentionGroupMax;
        var sized = headDim <= 64 ? 1 : headDim <= 128 ? 2 : 3;
        var (source, kernel) = !grouped ? ("attention.cu", DecodeAttentionKernels[bf16][0])
            : headDim % 8 == 0 ? ("decode_attention.cu", TiledDecodeAttentionKernels[bf16][sized])
            : ("attention.cu", DecodeAttentionKernels[bf16][sized]);
        var blockHeads = grouped ? kvHeads : heads;

        // Split long contexts so that at least two blocks per multiprocessor have work (decode has few (token, head) pairs).
        var pairs = heads * tokens;
        var blockPairs = blockHeads * tokens;
        var wanted = Math.Clamp(((2 * _ctx.MultiprocessorCount) + blockPairs - 1) / blockPairs, 1, AttentionMaxSplits);
        int chunk, splits;
        if (_mode != StepMode.Eager)
        {
            // A graph decode step must not depend on this step's context lengths: the split count comes from the
            // longest context allowed, and chunk 0 lets each block size its chunk from its sequence's context.
            chunk = 0;
            splits = Math.Max(1, Math.Min(wanted, (_graphLimits!.MaxModelLength + AttentionSpanGranule - 1) / AttentionSpanGranule));
        }
        else
        {
            chunk = Math.Max(AttentionSpanGranule, (((_maxContext + wanted - 1) / wanted) + AttentionSpanGranule - 1) / AttentionSpanGranule * AttentionSpanGranule);
            splits = Math.Max(1, (_maxContext + chunk - 1) / chunk);
        }

        ulong partialOut = 0, partialStats = 0;
        if (splits > 1)
        {
            var partialFloats = (long)pairs * splits * headDim;
            partialOut = AttentionScratch((partialFloats + ((long)pairs * splits * 2)) * 4);
            partialStats = partialOut + (ulong)(partialFloats * 4);
        }

        int s = _sequences, seqBase = (4 * tokens) + _logitRows;
        ulong pq = qt.Pointer, po = o.Pointer, tokenSeq = Meta(3 * tokens), qStart = Meta(seqBase), qLen = Meta(seqBase + s),
            context = Meta(seqBase + (2 * s)), tableOffset = Meta(seqBase + (3 * s)), tables = Meta(seqBase + (4 * s));
        void** args = stackalloc void*[]
        {
            &pq, &pkc, &pvc, &po, &partialOut, &partialStats, &tokenSeq, &qStart, &qLen, &context, &tableOffset, &tables,
            &heads, &kvHeads, &headDim, &blockSize, &scale, &chunk, &splits,
        };
        Launch(source, kernel, (uint)blockHeads, (uint)tokens, (uint)splits, 128, args);
        if (splits > 1)
        {
            void** combineArgs = stackalloc void*[] { &partialOut, &partialStats, &po, &heads, &headDim, &splits };
            Launch("attention.cu", "attention_combine", (uint)heads, (uint)tokens, 128, combineArgs);
        }
    }

    /// <summary>
    /// Sequences × KV heads from which a decode step over a bf16 cache in tensor-core mode runs its attention on the bf16
    /// MMA prefill kernel (0: never; default <see cref="DefaultMmaDecodeMinBlocks"/>); a property so that a benchmark
    /// can compare. That kernel gives each (sequence, KV head, key span) one block, the group's heads as packed query
    /// rows, and streams the K and V tiles through shared memory with asynchronous copies, so a block always has a tile
    /// in flight; the tiled decode kernel waits on its loads phase by phase. On an H100 (7B shape, 1k contexts) batch 64
    /// took 113 µs a layer against 195 and decode throughput rose 25–36% at batch 64–256; with key spans
    /// (<see cref="MmaDecodeSplits"/>) batch 16 and 32 gained 9.5% over the tiled kernel, batch 1 4% (162.6 against
    /// 156.3 tokens/s) and batch 8 1%, so it is the default for every decode step it can serve.
    /// </summary>
    public int MmaDecodeMinBlocks { get; set; } = DefaultMmaDecodeMinBlocks;

    /// <summary>The default of <see cref="MmaDecodeMinBlocks"/>.</summary>
    public const int DefaultMmaDecodeMinBlocks = 1;

    /// <summary>The most key spans of a decode step on the MMA kernel (1: one span a sequence); a property so that a benchmark can compare.</summary>
    public int MmaDecodeMaxSplits { get; set; } = AttentionMaxSplits;

    private bool MmaDecode(DType cache, int group, int kvHeads, int headDim, int maxQueryLength)
    {
        return MmaDecodeMinBlocks > 0 && TensorCoreGemm && cache == DType.BF16 && headDim % 8 == 0 && headDim <= 128
            && (long)maxQueryLength * group <= FlashRowsPerBlock && (long)_sequences * kvHeads >= MmaDecodeMinBlocks;
    }

    /// <summary>Packed query rows (query × head in group) of one MMA prefill attention block.</summary>
    private const int FlashRowsPerBlock = 64;

    /// <summary>The most query heads per KV head that one block of the grouped decode attention kernel serves.</summary>
    internal const int AttentionGroupMax = 8;

    /// <summary>Decode attention splits cover multiples of this many positions (ATTN_SPAN_GRANULE in common.cuh).</summary>
    internal const int AttentionSpanGranule = 64;

    /// <summary>The most context splits of one decode attention row (ATTN_COMBINE_MAX_SPLITS in attention.cu).</summary>
    internal const int AttentionMaxSplits = 512;

    /// <summary>Steps whose longest query is longer than this run attention on the tiled prefill kernel.</summary>
    internal const int FlashMinQueryLength = 16;

    /// <summary>Packed query rows a block of the bf16 MMA prefill kernel takes (FB_ROWS in flash_prefill_bf16.cu).</summary>
    internal const int FlashBf16Rows = 128;

    /// <summary>Dynamic shared memory of the bf16 MMA prefill kernel at head-dim bound d (FB_SMEM_BYTES in flash_prefill_bf16.cu):
    /// the block's Q rows and two stages of a 64-key K and V tile, rows of d + 8 bf16.</summary>
    internal static uint FlashBf16SharedBytes(int d) => (uint)((FlashBf16Rows + (2 * 2 * 64)) * (d + 8) * 2);

    private static int MaxQueryLength(ForwardBatch batch)
    {
        var longest = 0;
        foreach (var seq in batch.Sequences)
        {
            longest = Math.Max(longest, seq.QueryLength);
        }

        return longest;
    }

    /// <summary>
    /// Prefill attention (flash_prefill.cu): one block per (tile of query rows, sequence, kv head), a query row being a
    /// (token, head) pair of the kv head's group, so each K/V tile read from the paged cache serves the whole group and
    /// no [query × context] score matrix is stored. Handles every sequence of the step, decode tokens included.
    /// Exact fp32 by default; with <see cref="TensorCoreGemm"/> the products run on TF32 tensor cores.
    /// </summary>
    /// <param name="splits">
    /// Key spans per (row tile, sequence, KV head), merged by attention_combine (only the bf16 MMA kernel takes more
    /// than 1).
    /// </param>
    private void FlashPrefill(CudaTensor qt, CudaTensor kc, CudaTensor vc, CudaTensor o, int heads, int kvHeads, int headDim, int blockSize, float scale, int maxQueryLength, int splits)
    {
        // Per head-dim bound: (kernel, query rows per block), as instantiated in flash_prefill.cu. In tensor-core mode
        // (prefill products already round activations to bf16) q·k and p·v run on MMA where the head dim allows: f16 over
        // an fp32 cache, bf16 over a bf16 cache (its tiles copied as stored; FlashBf16Rows rows a block, with dynamic
        // shared memory past the 48 KB default).
        var (variant, rowsPerBlock) = (TensorCoreGemm && headDim % 8 == 0 && headDim <= 128, headDim) switch
        {
            (true, <= 64) => (0, 64),
            (true, _) => (1, 64),
            (false, <= 64) => (2, 64),
            (false, <= 128) => (3, 64),
            _ => (4, 32),
        };
        var (source, kernel) = FlashPrefillKernels[kc.DType == DType.BF16 ? 1 : 0][variant];
        var bf16Mma = kc.DType == DType.BF16 && variant <= 1;
        var sharedBytes = 0u;
        if (bf16Mma)
        {
            rowsPerBlock = FlashBf16Rows;
            sharedBytes = FlashBf16SharedBytes(variant == 0 ? 64 : 128);
        }

        var group = heads / kvHeads;
        var rowTiles = (uint)((((long)maxQueryLength * group) + rowsPerBlock - 1) / rowsPerBlock);
        int tokens = _tokens, s = _sequences, seqBase = (4 * tokens) + _logitRows;
        ulong pq = qt.Pointer, pkc = kc.Pointer, pvc = vc.Pointer, po = o.Pointer, qStart = Meta(seqBase), qLen = Meta(seqBase + s),
            context = Meta(seqBase + (2 * s)), tableOffset = Meta(seqBase + (3 * s)), tables = Meta(seqBase + (4 * s));
        ulong partialOut = 0, partialStats = 0;
        if (splits > 1)
        {
            var partialFloats = (long)heads * tokens * splits * headDim;
            partialOut = AttentionScratch((partialFloats + ((long)heads * tokens * splits * 2)) * 4);
            partialStats = partialOut + (ulong)(partialFloats * 4);
        }

        // The bf16 MMA kernels take three more parameters (partials and splits); the driver reads only as many
        // entries as a kernel declares, so the others ignore them.
        void** args = stackalloc void*[]
        {
            &pq, &pkc, &pvc, &po, &qStart, &qLen, &context, &tableOffset, &tables, &heads, &kvHeads, &headDim, &blockSize, &scale,
            &partialOut, &partialStats, &splits,
        };
        Launch(source, kernel, rowTiles * (uint)splits, (uint)s, (uint)kvHeads, 128, args, sharedBytes);
        if (splits > 1)
        {
            void** combineArgs = stackalloc void*[] { &partialOut, &partialStats, &po, &heads, &headDim, &splits };
            Launch("attention.cu", "attention_combine", (uint)heads, (uint)tokens, 128, combineArgs);
        }
    }

    /// <summary>
    /// Key spans of a decode step on the MMA kernel: one while (sequence, KV head) blocks alone fill the multiprocessors
    /// (on an H100 at batch 64, 256 blocks, three spans were 7% slower than one), else enough that blocks times spans
    /// give each multiprocessor about four blocks, each span at least one 64-key tile. Graph steps size it from the
    /// longest context allowed (the kernel then cuts each sequence's keys into that many spans of whole tiles).
    /// </summary>
    private int MmaDecodeSplits(int kvHeads)
    {
        var blocks = (long)_sequences * kvHeads;
        if (blocks >= _ctx.MultiprocessorCount)
        {
            return 1;
        }

        var wanted = (int)Math.Clamp(((4L * _ctx.MultiprocessorCount) + blocks - 1) / blocks, 1, Math.Clamp(MmaDecodeMaxSplits, 1, AttentionMaxSplits));
        var longest = _mode != StepMode.Eager ? _graphLimits!.MaxModelLength : _maxContext;
        return Math.Max(1, Math.Min(wanted, (longest + AttentionSpanGranule - 1) / AttentionSpanGranule));
    }

    private ulong AttentionScratch(long bytes) => Grow(ref _attentionScratch, ref _attentionScratchBytes, bytes);

    public void GatherLogitRows(DeviceTensor x, ForwardBatch batch, DeviceTensor output)
    {
        var xt = Cuda(x);
        var o = Cuda(output);
        EnsurePrepared(batch);
        int n = xt.Columns;
        if (o.Columns != n || o.Rows != _logitRows)
        {
            throw new ArgumentException($"gather shape mismatch: x {xt}, output {o}, {_logitRows} rows");
        }

        Require(xt, DType.F32);
        Require(o, DType.F32);
        ulong px = xt.Pointer, rows = Meta(4 * _tokens), po = o.Pointer;
        void** args = stackalloc void*[] { &px, &rows, &po, &n };
        Launch("gather_rows.cu", "gather_rows", (uint)Math.Min((n + 255) / 256, 64), (uint)_logitRows, 256, args);
    }

    public void Dispose()
    {
        if (_disposed)
        {
            return;
        }

        AbandonGraphStep();
        DropGraphs();
        _disposed = true;
        foreach (var p in _ropeFrequencies.Values)
        {
            _ctx.Free(p);
        }

        if (_metaDevice != 0)
        {
            _ctx.Free(_metaDevice);
        }

        if (_scratch != 0)
        {
            _ctx.Free(_scratch);
        }

        if (_attentionScratch != 0)
        {
            _ctx.Free(_attentionScratch);
        }

        if (_stackedOutput != 0)
        {
            _ctx.Free(_stackedOutput);
        }

        if (_splitKPartials != 0)
        {
            _ctx.Free(_splitKPartials);
        }

        if (_indices != 0)
        {
            _ctx.Free(_indices);
        }

        if (_moeScratch != 0)
        {
            _ctx.Free(_moeScratch);
        }

        if (_latentPartials != 0)
        {
            _ctx.Free(_latentPartials);
        }

        if (_argmaxIds != 0)
        {
            _ctx.Free(_argmaxIds);
        }

        if (_sampleParams != 0)
        {
            _ctx.Free(_sampleParams);
        }

        if (_cublasWorkspace != 0)
        {
            _ctx.Free(_cublasWorkspace);
        }

        _ctx.Dispose();
    }

    private void Launch(string source, string kernel, uint gridX, uint gridY, uint block, void** args) =>
        Launch(source, kernel, gridX, gridY, 1, block, args);

    /// <summary>
    /// Queues a kernel, or during a replayed decode step only adds it to the step's signature (the recording runs it).
    /// Recording and replay fold the same values, so a replay whose calls differ from its recording is caught.
    /// </summary>
    private void Launch(string source, string kernel, uint gridX, uint gridY, uint gridZ, uint block, void** args, uint sharedBytes = 0)
    {
        var function = _ctx.Function(source, kernel);
        _ctx.AllowDynamicShared(function, sharedBytes);
        if (_mode is StepMode.Capture or StepMode.Replay)
        {
            Fold((ulong)function);
            Fold(((ulong)gridX << 32) | gridY);
            Fold(((ulong)gridZ << 32) | block);
            if (_mode == StepMode.Replay)
            {
                return;
            }
        }

        if (KernelTimes is null || _mode == StepMode.Capture)
        {
            _ctx.Launch(function, kernel, gridX, gridY, block, args, sharedBytes, gridZ);
            return;
        }

        var timing = StartTiming();
        _ctx.Launch(function, kernel, gridX, gridY, block, args, sharedBytes, gridZ);
        StopTiming(timing, $"{kernel} grid {gridX}x{gridY}x{gridZ}");
    }

    /// <summary>Records a start and a stop event around work queued in between (only while <see cref="KernelTimes"/> is set).</summary>
    private (nint Start, nint Stop) StartTiming()
    {
        var driver = _ctx.Driver;
        nint start, stop;
        driver.Check(driver.EventCreate(&start, 0), "cuEventCreate");
        driver.Check(driver.EventCreate(&stop, 0), "cuEventCreate");
        driver.Check(driver.EventRecord(start, _ctx.Stream), "cuEventRecord");
        return (start, stop);
    }

    /// <summary>Waits for the work since <see cref="StartTiming"/> and adds its device time to <see cref="KernelTimes"/> under <paramref name="key"/>.</summary>
    private void StopTiming((nint Start, nint Stop) timing, string key)
    {
        var driver = _ctx.Driver;
        try
        {
            driver.Check(driver.EventRecord(timing.Stop, _ctx.Stream), "cuEventRecord");
            driver.Check(driver.EventSynchronize(timing.Stop), "cuEventSynchronize");
            float ms;
            driver.Check(driver.EventElapsedTime(&ms, timing.Start, timing.Stop), "cuEventElapsedTime");
            var times = KernelTimes!;
            var (count, total) = times.GetValueOrDefault(key);
            times[key] = (count + 1, total + ms);
        }
        finally
        {
            driver.EventDestroy(timing.Start);
            driver.EventDestroy(timing.Stop);
        }
    }

    private uint GridFor(long n) => (uint)Math.Max(1, Math.Min((n + 255) / 256, _ctx.MultiprocessorCount * 16L));

    // Kernel names per weight type (f32, f16, bf16), built once: a decode step launches hundreds of kernels and a
    // launch must not allocate a name.
    private static readonly string[] EmbeddingKernels = PerWeightType("embedding_");
    private static readonly string[] RmsNormKernels = PerWeightType("rmsnorm_");
    private static readonly string[] LatentNormRopeKernels = PerWeightType("latent_norm_rope_");
    private static readonly string[] AddRmsNormKernels = PerWeightType("add_rmsnorm_");
    private static readonly string[] GemmKernels = PerWeightType("gemm_");

    // Attention kernels per cache type: [0] fp32 cache, [1] bf16 cache.
    private static readonly string[] KvWriteKernels = ["kv_write", "kv_write_kvbf16"];
    private static readonly string[][] DecodeAttentionKernels = [.. new[] { string.Empty, "_kvbf16" }.Select(suffix => new[]
    {
        "paged_attention" + suffix, "paged_attention_group_d64" + suffix, "paged_attention_group_d128" + suffix, "paged_attention_group_d256" + suffix,
    })];

    // decode_attention.cu per cache type, indexed like DecodeAttentionKernels (entry 0 unused: it serves groups only).
    private static readonly string[][] TiledDecodeAttentionKernels = [.. new[] { string.Empty, "_kvbf16" }.Select(suffix => new[]
    {
        string.Empty, "decode_attention_d64" + suffix, "decode_attention_d128" + suffix, "decode_attention_d256" + suffix,
    })];

    // Prefill attention (source, kernel) per cache type, indexed by FlashPrefill's variant: the two tensor-core kernels
    // (d64, d128), then the fp32 ones (d64, d128, d256).
    private static readonly (string Source, string Kernel)[][] FlashPrefillKernels =
    [
        [
            ("flash_prefill_h16.cu", "flash_prefill_h16_d64"), ("flash_prefill_h16.cu", "flash_prefill_h16_d128"),
            ("flash_prefill.cu", "flash_prefill_d64"), ("flash_prefill.cu", "flash_prefill_d128"), ("flash_prefill.cu", "flash_prefill_d256"),
        ],
        [
            ("flash_prefill_bf16.cu", "flash_prefill_bf16_d64_kvbf16"), ("flash_prefill_bf16.cu", "flash_prefill_bf16_d128_kvbf16"),
            ("flash_prefill.cu", "flash_prefill_d64_kvbf16"), ("flash_prefill.cu", "flash_prefill_d128_kvbf16"), ("flash_prefill.cu", "flash_prefill_d256_kvbf16"),
        ],
    ];
    /// <summary>Warps a GEMV of <paramref name="rows"/> output rows takes: matmul.cu's W::warp_rows rows a warp (2 for 16-bit weights).</summary>
    private static long GemvWarps(long rows, DType weightType) => weightType == DType.F32 ? rows : (rows + 1) / 2;

    /// <summary>
    /// The grid of a GEMV launch of <paramref name="warps"/> warps: blocks of 8 warps, or of 4, 2 or 1 where 8 would
    /// give fewer blocks than multiprocessors. A small model's products (1536 rows on the 1.5B shape: 768 warps at two
    /// rows a warp, 96 blocks) would otherwise leave a third of an H100's multiprocessors without a block.
    /// </summary>
    private (uint Blocks, uint Threads) GemvGrid(long warps)
    {
        var perBlock = 8L;
        while (perBlock > 1 && warps / perBlock < _ctx.MultiprocessorCount)
        {
            perBlock /= 2;
        }

        return ((uint)((warps + perBlock - 1) / perBlock), (uint)(32 * perBlock));
    }

    private static readonly string[][] GemvKernels = [.. Enumerable.Range(0, GemvMaxTokens + 1).Select(tokens => PerWeightType("gemv_", "_" + tokens))];
    private static readonly string[][] SharedGemvKernels = [.. Enumerable.Range(0, GemvMaxTokens + 1).Select(tokens => PerWeightType("gemv_shared_", "_" + tokens))];
    private static readonly string[][] SiluGatedGemvKernels = [.. Enumerable.Range(0, GemvMaxTokens + 1).Select(tokens => PerWeightType("gemv_silu_gated_", "_" + tokens))];

    private static string[] PerWeightType(string prefix, string suffix = "") => [prefix + "f32" + suffix, prefix + "f16" + suffix, prefix + "bf16" + suffix];

    private static int TypeIndex(DType dtype) => dtype switch
    {
        DType.F32 => 0,
        DType.F16 => 1,
        DType.BF16 => 2,
        _ => throw new NotSupportedException($"no CUDA kernel for {dtype} weights"),
    };

    private static void Require(CudaTensor t, DType dtype)
    {
        if (t.DType != dtype)
        {
            throw new ArgumentException($"expected a {dtype} tensor, got {t}");
        }
    }

    /// <summary><see cref="Require(CudaTensor, DType)"/> for each of <paramref name="tensors"/> (a span, so a per-layer call allocates nothing).</summary>
    private static void Require(DType dtype, params ReadOnlySpan<CudaTensor> tensors)
    {
        foreach (var t in tensors)
        {
            Require(t, dtype);
        }
    }

    private CudaContext Live()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        _ctx.Bind();
        return _ctx;
    }

    private CudaTensor Cuda(DeviceTensor tensor)
    {
        Live();
        var t = tensor as CudaTensor ?? throw new ArgumentException($"{tensor} does not belong to the CUDA backend");
        if (!ReferenceEquals(t.Context, _ctx))
        {
            throw new ArgumentException($"{tensor} belongs to another CUDA backend");
        }

        return t;
    }

    /// <summary>Shape arithmetic for an allocation, without allocating.</summary>
    private sealed class Probe(DType dtype, int[] shape) : DeviceTensor(dtype, shape)
    {
        public override DeviceTensor Reshape(params int[] shape) => throw new NotSupportedException();

        public override DeviceTensor SliceRows(int start, int count) => throw new NotSupportedException();
    }

    // FP8/AWQ/GPTQ weights have no CUDA kernels yet: say so instead of computing wrongly.
    public void QuantizedMatMul(DeviceTensor x, QuantizedWeight weight, DeviceTensor? bias, DeviceTensor output) =>
        throw new NotSupportedException(
            $"the CUDA backend has no kernel for {weight.Encoding} weights yet: FP8, AWQ and GPTQ checkpoints run only on --device cpu for now");

    public void CopyColumns(DeviceTensor x, int xOffset, DeviceTensor output, int outputOffset, int count)
    {
        var xt = Cuda(x);
        var o = Cuda(output);
        Require(xt, DType.F32);
        Require(o, DType.F32);
        int xWidth = xt.Columns, outWidth = o.Columns;
        if (xt.Rows != o.Rows || xOffset < 0 || outputOffset < 0 || count < 0 || xOffset + count > xWidth || outputOffset + count > outWidth)
        {
            throw new ArgumentException($"CopyColumns: [{xOffset}, +{count}) of {xt} into [{outputOffset}, +{count}) of {o}");
        }

        ulong px = xt.Pointer, po = o.Pointer;
        var total = xt.Rows * count;
        if (total == 0)
        {
            return;
        }

        void** args = stackalloc void*[] { &px, &xWidth, &xOffset, &po, &outWidth, &outputOffset, &count, &total };
        Launch("copy_columns.cu", "copy_columns", GridFor(total), 1, 256, args);
    }

    public void HeadMatMul(DeviceTensor x, DeviceTensor weight, DeviceTensor output)
    {
        var xt = Cuda(x);
        var w = Cuda(weight);
        var o = Cuda(output);
        Require(DType.F32, xt, w, o);

        int tokens = xt.Shape[0], heads = xt.Shape[1], inDim = xt.Shape[2], outDim = w.Shape[1];
        if (w.Rank != 3 || w.Shape[0] != heads || w.Shape[2] != inDim || o.ElementCount != (long)tokens * heads * outDim)
        {
            throw new ArgumentException($"HeadMatMul shapes do not match: x {xt}, weight {w}, output {o}");
        }

        if (tokens == 0)
        {
            return;
        }

        LaunchHeadMatMul(xt.Pointer, inDim, w.Pointer, o.Pointer, outDim, tokens, heads, inDim, outDim);
    }

    /// <summary>head_matmul over rows (t, h) that are xStride and outStride floats apart.</summary>
    private void LaunchHeadMatMul(ulong px, int xStride, ulong pw, ulong po, int outStride, int tokens, int heads, int inDim, int outDim)
    {
        void** args = stackalloc void*[] { &px, &pw, &po, &heads, &inDim, &outDim, &xStride, &outStride };
        const int warps = 8; // a row a warp, 8 rows a block (head_matmul.cu)
        Launch("head_matmul.cu", "head_matmul", (uint)(heads * ((outDim + warps - 1) / warps)), (uint)tokens, 32 * warps, args);
    }

    /// <summary>
    /// Whether <see cref="LatentNormRope"/> and <see cref="LatentQuery"/> run as one and two launches (default) or as
    /// their parts (copies, RmsNorm, Rope, HeadMatMul), for comparisons (ENCLAVE_CUDA_MLA_FUSED=0).
    /// </summary>
    public bool FusedLatentOps { get; set; } = true;

    /// <summary>One launch (latent_norm_rope.cu) where the default takes six; the default's when rope rotates only part of the rope columns.</summary>
    public void LatentNormRope(DeviceTensor latent, DeviceTensor normWeight, float eps, ForwardBatch batch, RopeSpec rope, DeviceTensor compressed, DeviceTensor pe)
    {
        var lt = Cuda(latent);
        var w = Cuda(normWeight);
        EnsurePrepared(batch);
        int rank = compressed.Columns, width = lt.Columns, rotary = rope.RotaryDim;
        if (lt.Rows != _tokens || rank + pe.Columns != width || w.ElementCount != rank || rotary > pe.Columns || rotary % 2 != 0 || rope.InverseFrequencies.Length < rotary / 2)
        {
            throw new ArgumentException($"LatentNormRope shapes do not match: latent {lt}, weight {w}, rank {rank}, rope {pe.Columns} (rotary {rotary}), {_tokens} tokens");
        }

        Require(lt, DType.F32);
        if (rotary != pe.Columns || !FusedLatentOps)
        {
            IBackend.LatentNormRopeAsParts(this, latent, normWeight, eps, batch, rope, compressed, pe);
            return;
        }

        if (_tokens == 0)
        {
            return;
        }

        var frequencies = RopeFrequencies(rope);
        ulong pl = lt.Pointer, pw = w.Pointer, positions = Meta(_tokens);
        var interleaved = rope.Interleaved ? 1 : 0;
        var scaling = rope.AttentionScaling;
        void** args = stackalloc void*[] { &pl, &pw, &rank, &width, &eps, &positions, &frequencies, &rotary, &interleaved, &scaling };
        Launch("latent_norm_rope.cu", LatentNormRopeKernels[TypeIndex(w.DType)], (uint)_tokens, 1, 256, args);
    }

    /// <summary>
    /// Two launches where the default takes six: head_matmul reads q_nope inside q and writes the first rank columns of
    /// each qFull row, and rope_copy writes rope(q_pe) into the rest. The default's when rope rotates only part of q_pe.
    /// </summary>
    public void LatentQuery(DeviceTensor q, DeviceTensor keyAbsorb, ForwardBatch batch, RopeSpec rope, DeviceTensor qFull, DeviceTensor qNope, DeviceTensor qPe, DeviceTensor qLatent)
    {
        var qt = Cuda(q);
        var w = Cuda(keyAbsorb);
        var o = Cuda(qFull);
        EnsurePrepared(batch);
        int nope = qNope.Columns, ropeWidth = qPe.Columns, rank = qLatent.Columns, rotary = rope.RotaryDim;
        int tokens = qt.Rank == 3 ? qt.Shape[0] : -1, heads = qt.Rank == 3 ? qt.Shape[1] : 0;
        if (tokens != _tokens || qt.Shape[^1] != nope + ropeWidth || w.Rank != 3 || w.Shape[0] != heads || w.Shape[1] != rank || w.Shape[2] != nope
            || o.ElementCount != (long)tokens * heads * (rank + ropeWidth) || rotary > ropeWidth || rotary % 2 != 0 || rope.InverseFrequencies.Length < rotary / 2)
        {
            throw new ArgumentException($"LatentQuery shapes do not match: q {qt}, key absorb {w}, q full {o}, nope {nope}, rope {ropeWidth} (rotary {rotary}), rank {rank}, {_tokens} tokens");
        }

        Require(DType.F32, qt, w, o);

        if (rotary != ropeWidth || !FusedLatentOps)
        {
            IBackend.LatentQueryAsParts(this, q, keyAbsorb, batch, rope, qFull, qNope, qPe, qLatent);
            return;
        }

        if (tokens == 0)
        {
            return;
        }

        int qStride = nope + ropeWidth, fullStride = rank + ropeWidth;
        LaunchHeadMatMul(qt.Pointer, qStride, w.Pointer, o.Pointer, fullStride, tokens, heads, nope, rank);
        var frequencies = RopeFrequencies(rope);
        ulong src = qt.Pointer + ((ulong)nope * sizeof(float)), dst = o.Pointer + ((ulong)rank * sizeof(float)), positions = Meta(_tokens);
        var interleaved = rope.Interleaved ? 1 : 0;
        var scaling = rope.AttentionScaling;
        void** args = stackalloc void*[] { &src, &qStride, &dst, &fullStride, &positions, &frequencies, &tokens, &heads, &rotary, &interleaved, &scaling };
        var pairs = (long)tokens * heads * (rotary / 2);
        Launch("rope.cu", "rope_copy", (uint)((pairs + 255) / 256), 1, 256, args);
    }

    public void LatentAttention(DeviceTensor q, DeviceTensor latent, DeviceTensor latentCache, ForwardBatch batch, float scale, int valueDim, DeviceTensor output)
    {
        var qt = Cuda(q);
        var lt = Cuda(latent);
        var cache = Cuda(latentCache);
        var o = Cuda(output);
        Require(DType.F32, qt, lt, cache, o);

        EnsurePrepared(batch);
        int tokens = _tokens, heads = qt.Shape[1], width = qt.Shape[2], blockSize = cache.Shape[1];
        if (qt.Shape[0] != tokens || lt.Rows != tokens || lt.Columns != width || cache.Columns != width || valueDim > width
            || o.ElementCount != (long)tokens * heads * valueDim)
        {
            throw new ArgumentException($"LatentAttention shapes do not match: q {qt}, latent {lt}, cache {cache}, output {o}, value dim {valueDim}");
        }

        if (width > 1024)
        {
            throw new NotSupportedException($"the CUDA latent attention kernel handles rows up to 1024 values (kv_lora_rank + rope dim), not {width}");
        }

        ulong pl = lt.Pointer, pc = cache.Pointer, slots = Meta(2 * tokens);
        void** writeArgs = stackalloc void*[] { &pl, &pc, &slots, &tokens, &width };
        Launch("latent_attention.cu", "latent_write", GridFor((long)tokens * width), 1, 256, writeArgs);

        int s = _sequences, seqBase = (4 * tokens) + _logitRows;
        ulong pq = qt.Pointer, po = o.Pointer, tokenSeq = Meta(3 * tokens), qStart = Meta(seqBase), qLen = Meta(seqBase + s),
            context = Meta(seqBase + (2 * s)), tableOffset = Meta(seqBase + (3 * s)), tables = Meta(seqBase + (4 * s));
        // Few heads × tokens (decode): split each context into spans so the grid has LatentSplitBlocksPerMultiprocessor
        // blocks a multiprocessor; the count depends on the step's shape only, so a recorded step replays at any context
        // length.
        var blocks = (long)heads * tokens;
        var target = (long)LatentSplitBlocksPerMultiprocessor * _ctx.MultiprocessorCount;
        var splits = (int)Math.Clamp((target + blocks - 1) / blocks, 1, LatentMaxSplits);
        var partial = splits == 1 ? 0 : Grow(ref _latentPartials, ref _latentPartialsBytes, blocks * splits * (valueDim + 2) * 4L);
        void** args = stackalloc void*[]
        {
            &pq, &pc, &po, &tokenSeq, &qStart, &qLen, &context, &tableOffset, &tables, &heads, &width, &valueDim, &blockSize, &scale, &splits, &partial,
        };
        Launch("latent_attention.cu", "latent_attention", (uint)heads, (uint)tokens, (uint)splits, 128, args);
        if (splits > 1)
        {
            void** combineArgs = stackalloc void*[] { &partial, &po, &heads, &valueDim, &splits };
            Launch("latent_attention.cu", "latent_combine", (uint)heads, (uint)tokens, 128, combineArgs);
        }
    }

    /// <summary>Most spans <see cref="LatentAttention"/> splits a context into (decode steps with few heads × tokens).</summary>
    private const int LatentMaxSplits = 16;

    /// <summary>
    /// Blocks a multiprocessor <see cref="LatentAttention"/> aims at when it splits contexts (2: the grid covers the GPU
    /// twice). Set from ENCLAVE_CUDA_LATENT_SPLIT_BLOCKS, for comparisons.
    /// </summary>
    public int LatentSplitBlocksPerMultiprocessor { get; set; } = 2;

    /// <summary>
    /// Routing decides which expert weights the next kernels read, so it needs the choice on the host: the router
    /// logits ([T, experts], a few KB) come down once and the shared host router picks, as the interface specifies.
    /// </summary>
    public void MoeRoute(DeviceTensor routerLogits, DeviceTensor? correctionBias, MoeRouting routing, Span<int> expertIds, Span<float> weights)
    {
        var lt = Cuda(routerLogits);
        RequireEager("MoeRoute (router logits downloaded for the host router)");
        if (_routerHost.Length < lt.ElementCount)
        {
            _routerHost = new float[lt.ElementCount];
        }

        var logits = _routerHost.AsSpan(0, (int)lt.ElementCount);
        Download(lt, logits);
        var bias = Span<float>.Empty;
        if (correctionBias is not null)
        {
            if (_biasHost.Length < correctionBias.ElementCount)
            {
                _biasHost = new float[correctionBias.ElementCount];
            }

            bias = _biasHost.AsSpan(0, (int)correctionBias.ElementCount);
            Download(correctionBias, bias);
        }

        MoeRouter.Route(logits, bias, routing, expertIds, weights);
    }

    /// <summary>Experts a layer may have for <see cref="MoeExperts"/>' kernels (moe_route holds 16 a lane of one warp).</summary>
    public const int MoeMaxExperts = 512;

    /// <summary>Picks (tokens × top-k) one <see cref="MoeExperts"/> call takes on the device; larger steps route on the host.</summary>
    public const int MoeMaxPicks = 4096;

    /// <summary>
    /// Picks an expert on average up to which a step goes to <see cref="MoeExperts"/>. Its kernels stream an expert's
    /// rows once for every 8 of its picks, so long prefill chunks read each expert many times, where the host path's
    /// per-expert GEMMs read it once: on DeepSeek-V2-Lite (64 experts, 6 a token) 512-token chunks (48 picks an expert)
    /// prefilled 43% faster on the host path, 256-token steps (24) were level to 52% faster on the device path, and
    /// decode steps (up to 3 picks an expert at batch 32) 4–95% faster on the device path.
    /// </summary>
    public const int MoePicksPerExpert = 16;

    public int MoeExpertsOnBackendMaxPicks(int experts) => _options.DeviceMoe ? Math.Min(MoeMaxPicks, MoePicksPerExpert * experts) : 0;

    /// <summary>
    /// Routing and the routed experts on the device, in six launches (moe_experts.cu): route, sort the picks by expert,
    /// gather their rows, the gate/up and down products grouped per active expert (each expert's weights streamed once
    /// for up to 8 of its picks at a time), and the weighted sum into output. No host decision, so decode steps of MoE
    /// models can be recorded. Steps with more than <see cref="MoeMaxPicks"/> picks (long prefills), layouts the kernels
    /// do not take, or ENCLAVE_CUDA_MOE=host run the default: the host router and one product per chosen expert.
    /// </summary>
    public void MoeExperts(DeviceTensor x, DeviceTensor routerLogits, DeviceTensor? correctionBias, MoeRouting routing, DeviceTensor gateUp, DeviceTensor down, DeviceTensor output)
    {
        var shapes = MoeExpertShapes.Check(x, routerLogits, routing, gateUp, down, output);
        CudaTensor xt = Cuda(x), lt = Cuda(routerLogits), wgu = Cuda(gateUp), wd = Cuda(down), o = Cuda(output);
        var bt = correctionBias is null ? null : Cuda(correctionBias);
        int tokens = shapes.Tokens, hidden = shapes.Hidden, inter = shapes.Intermediate, experts = routing.Experts, topK = routing.TopK;
        var picks = tokens * topK;
        var fits = _options.DeviceMoe && picks <= MoeMaxPicks && experts <= MoeMaxExperts && topK <= 32 && routing.Groups is >= 1 and <= 32
                   && experts % routing.Groups == 0 && routing.TopKGroups <= routing.Groups
                   && xt.DType == DType.F32 && lt.DType == DType.F32 && o.DType == DType.F32 && wgu.DType is DType.F32 or DType.F16 or DType.BF16
                   && (bt is null || (bt.DType == DType.F32 && bt.ElementCount == experts));
        if (!fits)
        {
            IBackend.MoeExpertsAsParts(this, x, routerLogits, correctionBias, routing, gateUp, down, output);
            return;
        }

        if (picks == 0)
        {
            return;
        }

        // Scratch, 16-byte aligned regions: ids, weights, position, sorted [P]; offsets [E + 1]; active [E]; active count;
        // then xs [P, H], hs [P, I], ys [P, H] as F32.
        static long Align(long bytes) => (bytes + 15) & ~15L;
        var ints = Align(4L * picks);
        var headBytes = (4 * ints) + Align(4L * (experts + 1)) + Align(4L * experts) + 16;
        var bytes = headBytes + Align(4L * picks * hidden) + Align(4L * picks * inter) + Align(4L * picks * hidden);
        var scratch = Grow(ref _moeScratch, ref _moeScratchBytes, bytes);
        ulong ids = scratch, weights = ids + (ulong)ints, position = weights + (ulong)ints, sorted = position + (ulong)ints;
        var offsets = sorted + (ulong)ints;
        var active = offsets + (ulong)Align(4L * (experts + 1));
        var activeCount = active + (ulong)Align(4L * experts);
        var xs = scratch + (ulong)headBytes;
        var hs = xs + (ulong)Align(4L * picks * hidden);
        var ys = hs + (ulong)Align(4L * picks * inter);

        ulong px = xt.Pointer, pl = lt.Pointer, pb = bt?.Pointer ?? 0, pgu = wgu.Pointer, pd = wd.Pointer, po = o.Pointer;
        int groups = routing.Groups, topKGroups = routing.TopKGroups;
        int softmax = routing.Scoring == MoeScoring.Softmax ? 1 : 0, topTwo = routing.GroupScore == MoeGroupScore.TopTwoSum ? 1 : 0;
        int normalize = routing.NormalizeTopK ? 1 : 0;
        var scaling = routing.ScalingFactor;
        void** routeArgs = stackalloc void*[] { &pl, &pb, &tokens, &experts, &topK, &groups, &topKGroups, &softmax, &topTwo, &normalize, &scaling, &ids, &weights };
        Launch("moe_experts.cu", "moe_route", (uint)((tokens + 3) / 4), 1, 1, 128, routeArgs);

        void** sortArgs = stackalloc void*[] { &ids, &picks, &experts, &offsets, &active, &activeCount, &sorted, &position };
        Launch("moe_experts.cu", "moe_sort", 1, 1, 1, 256, sortArgs, (uint)(4 * (picks + (2 * experts))));

        void** gatherArgs = stackalloc void*[] { &px, &sorted, &topK, &hidden, &xs };
        Launch("moe_experts.cu", "moe_gather", (uint)Math.Min((hidden + 255) / 256, 16), (uint)picks, 256, gatherArgs);

        // Grid y: a slot per expert that can be active this step; blocks past the active count leave at once.
        var slots = (uint)Math.Min(experts, picks);
        var type = TypeIndex(wgu.DType);
        var vecGateUp = hidden % 8 == 0 && pgu % 16 == 0 ? 1 : 0;
        void** gateUpArgs = stackalloc void*[] { &xs, &pgu, &offsets, &active, &activeCount, &hidden, &inter, &vecGateUp, &hs };
        Launch("moe_experts.cu", MoeGateUpKernels[type], (uint)((inter + 7) / 8), slots, 256, gateUpArgs);

        var vecDown = inter % 8 == 0 && pd % 16 == 0 ? 1 : 0;
        void** downArgs = stackalloc void*[] { &hs, &pd, &offsets, &active, &activeCount, &hidden, &inter, &vecDown, &ys };
        Launch("moe_experts.cu", MoeDownKernels[type], (uint)((GemvWarps(hidden, wd.DType) + 7) / 8), slots, 256, downArgs);

        void** combineArgs = stackalloc void*[] { &ys, &position, &weights, &topK, &hidden, &po };
        Launch("moe_experts.cu", "moe_combine", (uint)Math.Min((hidden + 255) / 256, 16), (uint)tokens, 256, combineArgs);
    }

    private static readonly string[] MoeGateUpKernels = PerWeightType("moe_gate_up_");
    private static readonly string[] MoeDownKernels = PerWeightType("moe_down_");

    public void GatherRows(DeviceTensor x, int[] rows, DeviceTensor output)
    {
        var xt = Cuda(x);
        var o = Cuda(output);
        Require(xt, DType.F32);
        Require(o, DType.F32);
        int n = xt.Columns;
        if (o.Columns != n || o.Rows != rows.Length)
        {
            throw new ArgumentException($"GatherRows: {rows.Length} rows of {xt} into {o}");
        }

        if (rows.Length == 0)
        {
            return;
        }

        CheckRows(rows, xt.Rows, nameof(GatherRows));
        var indices = UploadIndices(rows, null);
        ulong px = xt.Pointer, po = o.Pointer;
        void** args = stackalloc void*[] { &px, &indices, &po, &n };
        Launch("gather_rows.cu", "gather_rows", (uint)Math.Min((n + 255) / 256, 64), (uint)rows.Length, 256, args);
    }

    public void ScatterAddRows(DeviceTensor x, int[] rows, float[] weights, DeviceTensor output)
    {
        var xt = Cuda(x);
        var o = Cuda(output);
        Require(xt, DType.F32);
        Require(o, DType.F32);
        int n = xt.Columns, picks = rows.Length;
        if (o.Columns != n || xt.Rows != picks || weights.Length < picks)
        {
            throw new ArgumentException($"ScatterAddRows: {xt} with {picks} rows and {weights.Length} weights into {o}");
        }

        if (picks == 0)
        {
            return;
        }

        CheckRows(rows, o.Rows, nameof(ScatterAddRows));
        var indices = UploadIndices(rows, weights);
        var pweights = indices + (ulong)(picks * 4);
        ulong px = xt.Pointer, po = o.Pointer;
        void** args = stackalloc void*[] { &px, &indices, &pweights, &po, &picks, &n };
        Launch("scatter_add_rows.cu", "scatter_add_rows", (uint)Math.Max(1, Math.Min((n + 255) / 256, _ctx.MultiprocessorCount * 4)), 1, 256, args);
    }

    private static void CheckRows(int[] rows, long limit, string op)
    {
        foreach (var r in rows)
        {
            if ((uint)r >= limit)
            {
                throw new ArgumentOutOfRangeException(nameof(rows), $"{op}: row {r} outside [0, {limit})");
            }
        }
    }

    /// <summary>
    /// Copies row indices (and weights, right after them) into a device buffer that grows only. Later kernels on the
    /// stream read it before the next call's copy overwrites it, as copies and kernels run in stream order.
    /// </summary>
    private ulong UploadIndices(int[] rows, float[]? weights)
    {
        RequireEager("uploading row indices (GatherRows/ScatterAddRows)");
        var bytes = rows.Length * 4L * (weights is null ? 1 : 2);
        if (_indicesBytes < bytes)
        {
            if (_indices != 0)
            {
                _ctx.Synchronize();
                _ctx.Free(_indices);
            }

            _indicesBytes = Math.Max(bytes, Math.Max(4096, _indicesBytes * 2));
            _indices = _ctx.Alloc(_indicesBytes);
        }

        fixed (int* p = rows)
        {
            _ctx.Driver.Check(_ctx.Driver.MemcpyHtoDAsync(_indices, p, (nuint)(rows.Length * 4), _ctx.Stream), "cuMemcpyHtoDAsync(rows)");
        }

        if (weights is not null)
        {
            fixed (float* p = weights)
            {
                _ctx.Driver.Check(_ctx.Driver.MemcpyHtoDAsync(_indices + (ulong)(rows.Length * 4), p, (nuint)(rows.Length * 4), _ctx.Stream), "cuMemcpyHtoDAsync(weights)");
            }
        }

        return _indices;
    }

    // Encoders (BERT / XLM-RoBERTa embedders and rerankers) have no CUDA kernels yet: say so instead of computing wrongly.
    private static NotSupportedException NoEncoderKernels(string op) =>
        new($"the CUDA backend has no {op} kernel yet, so embedding and rerank models (BertModel, XLMRobertaModel) run only on --device cpu for now");

    public void GatherEmbedding(DeviceTensor table, int[] ids, DeviceTensor output) => throw NoEncoderKernels(nameof(GatherEmbedding));

    public void LayerNorm(DeviceTensor x, DeviceTensor weight, DeviceTensor bias, float eps, DeviceTensor output) => throw NoEncoderKernels(nameof(LayerNorm));

    public void Gelu(DeviceTensor x, DeviceTensor output) => throw NoEncoderKernels(nameof(Gelu));

    public void Tanh(DeviceTensor x, DeviceTensor output) => throw NoEncoderKernels(nameof(Tanh));

    public void BidirectionalAttention(DeviceTensor q, DeviceTensor k, DeviceTensor v, int[] sequenceStarts, float scale, DeviceTensor output) => throw NoEncoderKernels(nameof(BidirectionalAttention));

    private enum StepMode
    {
        /// <summary>Not a graph decode step: ops launch as they come.</summary>
        Eager,

        /// <summary>A graph decode step seen for the first time: launched eagerly with the graph's launch configuration.</summary>
        Shaped,

        /// <summary>Ops are recorded into a graph on the capturing stream.</summary>
        Capture,

        /// <summary>Ops only check shapes and extend the signature; the recording runs at the step's end.</summary>
        Replay,
    }

    /// <summary>One recorded decode step: the graph, its executable instance and the signature of the calls it holds.</summary>
    private sealed class StepGraph(nint graph, nint exec, ulong signature)
    {
        public nint Exec => exec;

        public ulong Signature => signature;

        public long LastUsed { get; set; }

        public void Destroy(CudaDriver driver)
        {
            driver.GraphExecDestroy(exec);
            driver.GraphDestroy(graph);
        }
    }
}
