using System.Runtime.InteropServices;
using Enclave.Engine.Formats;

namespace Enclave.Engine.Backends.Cpu;

/// <summary>
/// Runs the model on the host: SIMD kernels (AVX-512, AVX2, 128-bit or scalar, whichever is widest here) over
/// tensors in native memory, with weights read in place from the memory-mapped checkpoint, parallelised over a
/// persistent worker pool. Operations run synchronously, so <see cref="Download"/> has nothing to wait for.
/// Not thread-safe: one caller drives a backend.
/// </summary>
public sealed class CpuBackend : IBackend
{
    private readonly CpuWorkerPool _pool;
    private readonly int _width;
    private readonly CpuMatMul.Job _matMul = new();
    private readonly CpuQuantMatMul.Job _quantMatMul = new();
    private readonly CpuRmsNorm.Job _rmsNorm = new();
    private readonly CpuSiluMul.Job _siluMul = new();
    private readonly CpuAdd.Job _add = new();
    private readonly CpuRope.Job _rope = new();
    private readonly CpuAttention.Job _attention = new();
    private readonly CpuHeadMatMul.Job _headMatMul = new();
    private readonly CpuLatentAttention.Job _latentAttention = new();
    private readonly CpuLayerNorm.Job _layerNorm = new();
    private readonly CpuGelu.Job _gelu = new();
    private readonly CpuTanh.Job _tanh = new();
    private readonly CpuBidirectionalAttention.Job _bidirectionalAttention = new();
    private int[] _tokenSequence = new int[64];
    private (CpuTensor Weight, CpuTensor? Bias, CpuTensor Output)[] _sharedProducts = new (CpuTensor, CpuTensor?, CpuTensor)[3];
    private readonly Sampling.Sampler _sampler = new();
    private readonly bool _groupQ8_0;

    /// <summary>
    /// Ranges of the file mappings whose weights were copied into grouped tensors, dropped from the process once more
    /// at the next step: a fault anywhere in the file (grouping the next tensor, reading an embedding row) may map a
    /// whole large page-cache folio back in, neighbours included.
    /// </summary>
    private readonly List<(nint Start, long Bytes)> _copiedRanges = [];
    private bool _disposed;

    /// <param name="threads">Worker threads, the caller included; 0 uses every logical processor.</param>
    public CpuBackend(int threads = 0)
        : this(threads, CpuSimd.BestWidth)
    {
    }

    /// <summary>Block-quantised products this backend has run on AMX tiles (see <see cref="CpuAmx"/>).</summary>
    internal long AmxProducts => _quantMatMul.AmxProducts;

    /// <summary>Of those, the Q8_0 products on the bf16 kernel (<see cref="CpuAmx.Q8_0Bf16"/>).</summary>
    internal long AmxBf16Products => _quantMatMul.AmxBf16Products;

    /// <summary>F16 and BF16 products this backend has run on AMX tiles (<see cref="CpuAmx.F16"/>, <see cref="CpuAmx.Bf16"/>).</summary>
    internal long AmxHalfProducts => _matMul.AmxProducts;

    /// <summary>
    /// Pins the vector width (512, 256, 128 or 1 for scalar) so each code path can be exercised; <paramref name="groupQ8_0"/>
    /// false keeps Q8_0 weights in the file's layout where they would be regrouped (<see cref="CpuQ8_0Groups"/>), and
    /// <paramref name="amx"/> false keeps products off the AMX tiles, <paramref name="amxBf16"/> false keeps Q8_0 on the
    /// int8 AMX kernel where the bf16 one would run.
    /// </summary>
    internal CpuBackend(int threads, int simdWidth, bool groupQ8_0 = true, bool amx = true, bool amxBf16 = true)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(threads);
        if (!CpuSimd.IsSupported(simdWidth))
        {
            throw new PlatformNotSupportedException($"{simdWidth}-bit vectors are not accelerated on this machine");
        }

        _width = simdWidth;
        _groupQ8_0 = groupQ8_0 && CpuQ8_0Groups.IsSupported(simdWidth);
        _quantMatMul.AllowAmx = amx;
        _matMul.AllowAmx = amx;
        _quantMatMul.AllowAmxBf16 = amxBf16;
        _pool = new CpuWorkerPool(threads == 0 ? Environment.ProcessorCount : threads);
        Name = $"cpu ({CpuSimd.Describe(simdWidth)}, {_pool.ThreadCount} threads)";
    }

    public string Name { get; }

    public int ThreadCount => _pool.ThreadCount;

    internal int SimdWidth => _width;

    public DeviceTensor Allocate(DType dtype, params int[] shape) => new CpuTensor(dtype, shape);

    /// <summary>Whether this backend keeps Q8_0 weights in 16-row groups (<see cref="CpuQ8_0Groups"/>).</summary>
    internal bool GroupsQ8_0 => _groupQ8_0;

    /// <summary>
    /// Tensors up to this size (norms, biases) are copied out of the mapping where Q8_0 weights are grouped: read in
    /// place every step, they would keep mapping the large page-cache folios around them, and with them the pages of
    /// the neighbouring weights that grouping dropped.
    /// </summary>
    private const long SmallTensorBytes = 1 << 20;

    /// <summary>
    /// Weights are read in place from the mapped file. Q8_0 matrices on machines where they are regrouped are copied
    /// into the grouped layout (the same size) at their first product (<see cref="Group"/>), so an embedding table
    /// that is not also the output head stays in the mapping, resident only in the rows read.
    /// </summary>
    public unsafe DeviceTensor LoadWeight(CheckpointTensor source)
    {
        if (_groupQ8_0 && source.Mapped && !source.DType.IsQuantized() && source.ByteCount <= SmallTensorBytes)
        {
            var copy = new CpuTensor(source.DType, source.Shape);
            if (copy.ByteCount == source.ByteCount)
            {
                source.Bytes.CopyTo(copy.Bytes);
                return copy;
            }

            copy.Dispose();
        }

        var tensor = new CpuTensor(source.DType, source.Shape, source.Data, source) { MappedWeights = source.Mapped };
        if (tensor.ByteCount != source.ByteCount)
        {
            throw new ArgumentException($"{source} in {source.File} holds {source.ByteCount} bytes, its shape needs {tensor.ByteCount}");
        }

        return tensor;
    }

    public unsafe void UploadBytes(ReadOnlySpan<byte> source, DeviceTensor destination)
    {
        var tensor = Cpu(destination);
        if (source.Length != tensor.ByteCount)
        {
            throw new ArgumentException($"{source.Length} bytes for {tensor} of {tensor.ByteCount} bytes");
        }

        tensor.Q8_0Grouped = false;
        tensor.GroupingChecked = true;
        if (_groupQ8_0 && CpuQ8_0Groups.Applies(tensor.DType, tensor.Shape))
        {
            fixed (byte* bytes = source)
            {
                tensor.Q8_0Grouped = CpuQ8_0Groups.Pack(bytes, tensor.Pointer, tensor.Shape[0], tensor.Shape[1], releaseSource: false);
            }

            if (tensor.Q8_0Grouped)
            {
                return;
            }
        }

        source.CopyTo(tensor.Bytes);
        tensor.ContentsChanged();
    }

    public void Upload(ReadOnlySpan<float> source, DeviceTensor destination)
    {
        var tensor = Cpu(destination);
        if (source.Length != tensor.ElementCount)
        {
            throw new ArgumentException($"{source.Length} values for {tensor}");
        }

        source.CopyTo(tensor.F32Span);
    }

    public void Download(DeviceTensor source, Span<float> destination)
    {
        var tensor = Cpu(source);
        if (destination.Length != tensor.ElementCount)
        {
            throw new ArgumentException($"{destination.Length} values for {tensor}");
        }

        tensor.F32Span.CopyTo(destination);
    }

    public void Argmax(DeviceTensor logits, Span<int> tokenIds) => CpuArgmax.Run(_width, Cpu(logits), tokenIds);

    /// <summary>
    /// The host sampler on the rows in place (greedy rows through the vector argmax): the same tokens as downloading the
    /// logits and sampling them, without the copy.
    /// </summary>
    public unsafe void Sample(DeviceTensor logits, ReadOnlySpan<Sampling.RowSampling> rows, Span<int> tokenIds)
    {
        var t = Cpu(logits);
        t.RequireDType(DType.F32);
        var vocab = t.Columns;
        if (rows.Length != t.Rows || tokenIds.Length != t.Rows || vocab == 0)
        {
            throw new ArgumentException($"Sample: {rows.Length} rows and {tokenIds.Length} ids for logits {t}");
        }

        var data = t.F32Pointer;
        for (var r = 0; r < rows.Length; r++)
        {
            var row = data + ((long)r * vocab);
            tokenIds[r] = rows[r].IsGreedy ? CpuArgmax.Row(_width, row, vocab) : _sampler.SampleRow(new ReadOnlySpan<float>(row, vocab), rows[r]);
        }
    }

    public bool SamplesOnBackend => true;

    /// <summary>
    /// The kernels read the batch's host arrays directly, so there is nothing to stage; the step after weights were
    /// grouped drops their mapped pages once more (<see cref="_copiedRanges"/>).
    /// </summary>
    public unsafe void PrepareStep(ForwardBatch batch)
    {
        ArgumentNullException.ThrowIfNull(batch);
        if (_copiedRanges.Count > 0)
        {
            foreach (var (start, bytes) in _copiedRanges)
            {
                CpuQ8_0Groups.Release((byte*)start, bytes);
            }

            _copiedRanges.Clear();
        }
    }

    public void Embedding(DeviceTensor table, ForwardBatch batch, DeviceTensor output) =>
        CpuEmbedding.Embedding(_width, Cpu(table), batch.TokenIds, Cpu(output));

    public void RmsNorm(DeviceTensor x, DeviceTensor weight, float eps, DeviceTensor output) =>
        CpuRmsNorm.Run(_pool, _rmsNorm, _width, null, Cpu(x), Cpu(weight), eps, Cpu(output));

    public void AddRmsNorm(DeviceTensor residual, DeviceTensor x, DeviceTensor weight, float eps, DeviceTensor output) =>
        CpuRmsNorm.Run(_pool, _rmsNorm, _width, Cpu(residual), Cpu(x), Cpu(weight), eps, Cpu(output));

    /// <summary>
    /// Regroups a Q8_0 weight in the file's layout before its first product where this backend groups them
    /// (<see cref="CpuQ8_0Groups"/>): a copy of the same size, after which the pages of the mapping it came from are
    /// dropped, so the model stays resident once. Tensors with a scale that is not finite stay as they are.
    /// </summary>
    private unsafe void Group(CpuTensor weight)
    {
        if (!_groupQ8_0 || weight.Q8_0Grouped || weight.GroupingChecked || !CpuQ8_0Groups.Applies(weight.DType, weight.Shape))
        {
            return;
        }

        weight.GroupingChecked = true;
        var source = weight.Pointer;
        var grouped = CpuQ8_0Groups.Allocate(weight.ByteCount);
        if (!CpuQ8_0Groups.Pack(source, grouped, weight.Shape[0], weight.Shape[1], weight.MappedWeights))
        {
            NativeMemory.AlignedFree(grouped);
            return;
        }

        if (weight.MappedWeights)
        {
            _copiedRanges.Add(((nint)source, weight.ByteCount));
        }

        weight.Adopt(grouped);
        weight.Q8_0Grouped = true;
    }

    public void MatMul(DeviceTensor x, DeviceTensor weight, DeviceTensor? bias, DeviceTensor output)
    {
        if (weight.DType.IsQuantized())
        {
            Group(Cpu(weight));
            CpuQuantMatMul.Run(_pool, _quantMatMul, _width, Cpu(x), Cpu(weight), bias == null ? null : Cpu(bias), Cpu(output));
        }
        else
        {
            CpuMatMul.Run(_pool, _matMul, _width, Cpu(x), Cpu(weight), bias == null ? null : Cpu(bias), Cpu(output));
        }
    }

    /// <summary>
    /// Block-typed weights of one type (a GGUF model's q/k/v or gate/up) share one quantisation of x; other weights run
    /// one product at a time.
    /// </summary>
    public void MatMulShared(DeviceTensor x, ReadOnlySpan<MatMulTarget> targets)
    {
        var type = targets.Length > 0 ? targets[0].Weight.DType : DType.F32;
        var shared = type.IsQuantized();
        foreach (var target in targets)
        {
            shared &= target.Weight.DType == type;
        }

        if (!shared)
        {
            foreach (var target in targets)
            {
                MatMul(x, target.Weight, target.Bias, target.Output);
            }

            return;
        }

        if (_sharedProducts.Length < targets.Length)
        {
            _sharedProducts = new (CpuTensor, CpuTensor?, CpuTensor)[targets.Length];
        }

        var products = _sharedProducts.AsSpan(0, targets.Length);
        for (var i = 0; i < targets.Length; i++)
        {
            Group(Cpu(targets[i].Weight));
            products[i] = (Cpu(targets[i].Weight), targets[i].Bias == null ? null : Cpu(targets[i].Bias!), Cpu(targets[i].Output));
        }

        CpuQuantMatMul.RunShared(_pool, _quantMatMul, _width, Cpu(x), products);
        products.Clear();
    }

    public void QuantizedMatMul(DeviceTensor x, QuantizedWeight weight, DeviceTensor? bias, DeviceTensor output) =>
        CpuMatMul.RunQuantized(_pool, _matMul, _width, Cpu(x), weight, bias == null ? null : Cpu(bias), Cpu(output));

    public void Rope(DeviceTensor x, ForwardBatch batch, RopeSpec rope) =>
        CpuRope.Run(_pool, _rope, _width, Cpu(x), batch.Positions, rope);

    public void SiluMul(DeviceTensor gate, DeviceTensor up, DeviceTensor output) =>
        CpuSiluMul.Run(_pool, _siluMul, _width, Cpu(gate), Cpu(up), Cpu(output));

    public void Add(DeviceTensor a, DeviceTensor b, DeviceTensor output) =>
        CpuAdd.Run(_pool, _add, _width, Cpu(a), Cpu(b), Cpu(output));

    /// <summary>Rope on q and k in one pass (each token's cos/sin computed once for both), then attention.</summary>
    public void RopeAttention(DeviceTensor q, DeviceTensor k, DeviceTensor v, DeviceTensor keyCache, DeviceTensor valueCache, ForwardBatch batch, RopeSpec rope, float scale, DeviceTensor output)
    {
        CpuRope.Run(_pool, _rope, _width, Cpu(q), Cpu(k), batch.Positions, rope);
        Attention(q, k, v, keyCache, valueCache, batch, scale, output);
    }

    public void Attention(DeviceTensor q, DeviceTensor k, DeviceTensor v, DeviceTensor keyCache, DeviceTensor valueCache, ForwardBatch batch, float scale, DeviceTensor output) =>
        CpuAttention.Run(_pool, _attention, _width, Cpu(q), Cpu(k), Cpu(v), Cpu(keyCache), Cpu(valueCache), batch, scale, Cpu(output), ref _tokenSequence);

    public void GatherLogitRows(DeviceTensor x, ForwardBatch batch, DeviceTensor output) =>
        CpuEmbedding.GatherRows(Cpu(x), batch.LogitRows, Cpu(output));

    public void CopyColumns(DeviceTensor x, int xOffset, DeviceTensor output, int outputOffset, int count) =>
        CpuRows.CopyColumns(Cpu(x), xOffset, Cpu(output), outputOffset, count);

    public void HeadMatMul(DeviceTensor x, DeviceTensor weight, DeviceTensor output) =>
        CpuHeadMatMul.Run(_pool, _headMatMul, Cpu(x), Cpu(weight), Cpu(output));

    public void LatentAttention(DeviceTensor q, DeviceTensor latent, DeviceTensor latentCache, ForwardBatch batch, float scale, int valueDim, DeviceTensor output) =>
        CpuLatentAttention.Run(_pool, _latentAttention, Cpu(q), Cpu(latent), Cpu(latentCache), batch, scale, valueDim, Cpu(output));

    public void MoeRoute(DeviceTensor routerLogits, DeviceTensor? correctionBias, MoeRouting routing, Span<int> expertIds, Span<float> weights) =>
        CpuMoeRoute.Run(Cpu(routerLogits), correctionBias is null ? null : Cpu(correctionBias), routing, expertIds, weights);

    public void GatherRows(DeviceTensor x, int[] rows, DeviceTensor output) =>
        CpuEmbedding.GatherRows(Cpu(x), rows, Cpu(output));

    public void ScatterAddRows(DeviceTensor x, int[] rows, float[] weights, DeviceTensor output) =>
        CpuRows.ScatterAdd(Cpu(x), rows, weights, Cpu(output));

    public void GatherEmbedding(DeviceTensor table, int[] ids, DeviceTensor output) =>
        CpuEmbedding.Embedding(_width, Cpu(table), ids, Cpu(output));

    public void LayerNorm(DeviceTensor x, DeviceTensor weight, DeviceTensor bias, float eps, DeviceTensor output) =>
        CpuLayerNorm.Run(_pool, _layerNorm, _width, Cpu(x), Cpu(weight), Cpu(bias), eps, Cpu(output));

    public void Gelu(DeviceTensor x, DeviceTensor output) =>
        CpuGelu.Run(_pool, _gelu, _width, Cpu(x), Cpu(output));

    public void Tanh(DeviceTensor x, DeviceTensor output) =>
        CpuTanh.Run(_pool, _tanh, _width, Cpu(x), Cpu(output));

    public void BidirectionalAttention(DeviceTensor q, DeviceTensor k, DeviceTensor v, int[] sequenceStarts, float scale, DeviceTensor output) =>
        CpuBidirectionalAttention.Run(_pool, _bidirectionalAttention, _width, Cpu(q), Cpu(k), Cpu(v), sequenceStarts, scale, Cpu(output));

    public void Dispose()
    {
        if (!_disposed)
        {
            _disposed = true;
            _pool.Dispose();
            _matMul.Dispose();
            _quantMatMul.Dispose();
            _attention.Dispose();
            _rope.Dispose();
        }
    }

    private CpuTensor Cpu(DeviceTensor tensor)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        return tensor as CpuTensor ?? throw new ArgumentException($"{tensor} does not belong to the CPU backend");
    }
}
