using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace Enclave.Engine.Backends.Cpu;

/// <summary>
/// y[T, out] = x[T, in] · W[out, in]ᵀ (+ bias), W read in its stored type (F32, F16 or BF16), fp32 accumulation.
///
/// The output columns (weight rows) are cut into tiles handed to the worker pool; a tile's weight rows are small
/// enough to stay in L2 while every block of four tokens streams past them, so each weight byte comes from memory
/// once per call whatever T is. The micro-kernel multiplies four tokens (two where only 16 vector registers
/// exist) by four weight rows with one vector accumulator per pair: each weight vector is widened once and used
/// for every token of the group, each x vector for all four rows.
/// With one token (decode) this degenerates to a streaming GEMV over four rows at a time, split across threads.
///
/// F16 (without infinities or NaN) and BF16 products of <see cref="AmxF16MinTokens"/> (BF16:
/// <see cref="AmxBf16MinTokens"/>) or more tokens run on AMX-BF16 tiles where the CPU has them (<see cref="CpuAmx.F16"/>,
/// <see cref="CpuAmx.Bf16"/>): x is split once per product into high and low bf16 parts packed as B tiles, the kernel
/// converts each pair of 16-row weight groups the same way into per-thread scratch once per call, and the tile unit
/// sums the products of the parts that matter in fp32, within about 2^-15 of each product (see
/// tools/cpu-kernels/half_amx.h).
/// </summary>
internal static unsafe class CpuMatMul
{
    private const int RowGroup = 4;

    // Rows longer than this (in elements) are read in pairs by single-token products, see RowPair.
    private const int LongRow = 4096;

    // Aim for a weight tile of about this many bytes so it stays cache-resident across token blocks.
    private const int TileBytes = 128 * 1024;

    // From this many tokens on, an F16/BF16 tile is widened once into a per-thread fp32 buffer (cache-sized, not a
    // copy of the weights) and the fp32 kernel runs over it: the conversion is paid once per tile instead of once
    // per block of four tokens, which matters most for F16, whose conversion costs several instructions a vector.
    private const int WidenTileFromTokens = 8;

    /// <summary>Weight rows and tokens of one AMX tile product.</summary>
    private const int AmxTile = 16;

    /// <summary>
    /// Tokens from which F16 products run on AMX tiles where there is a kernel (see <see cref="RunAmx"/>). Every weight
    /// is converted once a call (about 0.2 ns a weight on one core), so few tokens pay for it against the vector path,
    /// which widens halves once a tile as well: on the Emerald Rapids VM, two threads, 12 tokens won on [1536 x 1536]
    /// and [8960 x 1536] and lost on the 8960-column down projection (3.3-3.6 ms against 2.7-3.1), 16 won on all three
    /// (down 3.6-3.7 against 3.8-4.9 ms; tools/CpuBench prefill).
    /// </summary>
    internal const int AmxF16MinTokens = 16;

    /// <summary>
    /// Tokens from which BF16 products run on AMX tiles: their weights need no conversion and two tile products, so
    /// 8 tokens already won on all three shapes (0.19-0.25 against 0.31-0.35 ms on [1536 x 1536]) and 4 lost.
    /// </summary>
    internal const int AmxBf16MinTokens = 8;

    /// <summary>
    /// Bytes of packed activations (both bf16 parts of every token tile) up to which the AMX kernel walks whole rows;
    /// past that it walks them in chunks of about <see cref="AmxChunkBytes"/>, so that the chunk every group of a call
    /// reads stays in L2 (2 MiB a core on the Xeons with AMX) beside the converted weights and the running sums.
    /// </summary>
    private const long AmxWholeRowBytes = 1 << 20;

    private const long AmxChunkBytes = 512 << 10;

    public sealed class Job : CpuJob, IDisposable
    {
        private readonly CpuThreadScratch _scratch = new();

        public float* X;
        public byte* W;
        public float* Bias;
        public float* Y;
        public int Tokens;
        public int In;
        public int Out;
        public int TileRows;
        public int TokenGroup;
        public DType WeightType;
        public int Width;

        // Quantized weights (QuantizedMatMul): when Quantized is set, W is the packed data and every tile is first
        // dequantized into the worker's fp32 scratch, so the fp32 kernel runs unchanged over it.
        public bool Quantized;

        /// <summary>F16 weights with no infinity or NaN: read with the shorter conversion.</summary>
        public bool FiniteHalves;

        /// <summary>
        /// Single-token products of finite F16 weights on 512-bit vectors: x with each 32 values reordered evens then
        /// odds (see <see cref="HalfPairRow"/>); null otherwise.
        /// </summary>
        public float* XEvenOdd;
        private float* _xEvenOdd;
        private long _xEvenOddFloats;

        /// <summary>x reordered for <see cref="HalfPairRow"/>: per 32 values, the 16 at even positions, then the 16 at odd.</summary>
        public void PrepareEvenOdd(float* x, int n)
        {
            if (_xEvenOddFloats < n)
            {
                NativeMemory.AlignedFree(_xEvenOdd);
                _xEvenOdd = (float*)NativeMemory.AlignedAlloc((nuint)n * sizeof(float), 64);
                _xEvenOddFloats = n;
            }

            for (var c = 0; c + 32 <= n; c += 32)
            {
                for (var i = 0; i < 16; i++)
                {
                    _xEvenOdd[c + i] = x[c + (2 * i)];
                    _xEvenOdd[c + 16 + i] = x[c + (2 * i) + 1];
                }
            }

            XEvenOdd = _xEvenOdd;
        }
        public WeightEncoding Encoding;
        public float* Scales;
        public byte* Zeros;
        public int BlockRows;
        public int BlockColumns;
        public int ScaleColumns;

        /// <summary>
        /// The AMX kernel this call runs on, or null. When set, <see cref="AmxX"/> holds x split into high and low bf16
        /// parts as B tiles, [token tile][block of 32][2][16 pairs][16 tokens][2] (zero past the last token and past
        /// <see cref="In"/>), packed one token tile a work item while <see cref="AmxPacking"/> is set, and then each work
        /// item is <see cref="AmxGroupsPerItem"/> groups of 16 rows in one kernel call.
        /// </summary>
        public CpuAmx.HalfKernel? Amx;
        public bool AmxPacking;
        public ushort* AmxX;
        public byte* AmxScratch;
        public long AmxScratchBytes;
        public int AmxTokenTiles;
        public int AmxChunk;
        public int AmxGroupsPerItem;
        private long _amxXWords;
        private long _amxScratchCapacity;

        /// <summary>Whether products may run on AMX tiles at all (tests turn it off to compare with the vector kernels).</summary>
        public bool AllowAmx { get; set; } = true;

        /// <summary>Products this job has run on AMX tiles (for tests and profiles).</summary>
        public long AmxProducts { get; set; }

        /// <summary>Grows the packed activations to <paramref name="words"/> bf16 words and the scratch to <paramref name="scratchBytes"/> a worker.</summary>
        public void EnsureAmx(long words, int workers, long scratchBytes)
        {
            if (words > _amxXWords)
            {
                NativeMemory.AlignedFree(AmxX);
                AmxX = (ushort*)NativeMemory.AlignedAlloc((nuint)(words * sizeof(ushort)), 64);
                _amxXWords = words;
            }

            AmxScratchBytes = scratchBytes;
            if (workers * scratchBytes > _amxScratchCapacity)
            {
                NativeMemory.AlignedFree(AmxScratch);
                _amxScratchCapacity = workers * scratchBytes;
                AmxScratch = (byte*)NativeMemory.AlignedAlloc((nuint)_amxScratchCapacity, 64);
            }
        }

        /// <summary>Makes sure every thread has an fp32 buffer for a tile of <paramref name="floats"/>; grows only.</summary>
        public void EnsureScratch(int threads, long floats) => _scratch.Ensure(threads, floats);

        public void Dispose()
        {
            _scratch.Dispose();
            NativeMemory.AlignedFree(AmxX);
            NativeMemory.AlignedFree(AmxScratch);
            AmxX = null;
            AmxScratch = null;
            _amxXWords = 0;
            _amxScratchCapacity = 0;
            NativeMemory.AlignedFree(_xEvenOdd);
            _xEvenOdd = null;
            _xEvenOddFloats = 0;
        }


        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        public override void Execute(int index, int worker)
        {
            if (Amx is { } amx)
            {
                if (AmxPacking)
                {
                    // Token tile `index` of x split into high and low bf16 B tiles (tools/cpu-kernels/half_pack_amx.c).
                    amx.Pack(X, In, In, Tokens, index, AmxX);
                }
                else
                {
                    // Work item `index`: its groups of 16 rows (the last one perhaps partial) in one kernel call,
                    // y[:, first..first + rows] = x · W[first..first + rows]ᵀ (+ bias) with W: [out, in] F16 or BF16.
                    var first = index * AmxGroupsPerItem * AmxTile;
                    var rows = Math.Min(Out - first, AmxGroupsPerItem * AmxTile);
                    amx.Entry((ushort*)W + ((long)first * In), In, rows, In, AmxX, AmxTokenTiles, Tokens, Y + first, Out,
                        Bias == null ? null : Bias + first, AmxChunk, AmxScratch + (worker * AmxScratchBytes), amx.Config);
                }

                return;
            }

            var rowStart = index * TileRows;
            var rowEnd = Math.Min(Out, rowStart + TileRows);
            switch (Width)
            {
                case 512:
                    Tile<Simd512, Vector512<float>>(rowStart, rowEnd, worker);
                    break;
                case 256:
                    Tile<Simd256, Vector256<float>>(rowStart, rowEnd, worker);
                    break;
                case 128:
                    Tile<Simd128, Vector128<float>>(rowStart, rowEnd, worker);
                    break;
                default:
                    Tile<SimdScalar, float>(rowStart, rowEnd, worker);
                    break;
            }
        }

        private void Tile<TS, TV>(int rowStart, int rowEnd, int worker)
            where TS : ISimd<TV>
            where TV : struct
        {
            if (Quantized)
            {
                var scratch = _scratch[worker];
                if (Encoding == WeightEncoding.Fp8Block)
                {
                    DequantizeFp8Tile(rowStart, rowEnd, scratch);
                }
                else
                {
                    DequantizeInt4Tile(rowStart, rowEnd, scratch);
                }

                Tile<TS, TV, F32Weights>((byte*)(scratch - ((nint)rowStart * In)), rowStart, rowEnd);
                return;
            }

            switch (WeightType)
            {
                case DType.BF16 when Tokens >= WidenTileFromTokens:
                    WidenTile<TS, TV, Bf16Weights>(rowStart, rowEnd, _scratch[worker]);
                    Tile<TS, TV, F32Weights>((byte*)(_scratch[worker] - ((nint)rowStart * In)), rowStart, rowEnd);
                    break;
                case DType.F16 when Tokens >= WidenTileFromTokens && FiniteHalves:
                    WidenTile<TS, TV, FiniteF16Weights>(rowStart, rowEnd, _scratch[worker]);
                    Tile<TS, TV, F32Weights>((byte*)(_scratch[worker] - ((nint)rowStart * In)), rowStart, rowEnd);
                    break;
                case DType.F16 when Tokens >= WidenTileFromTokens:
                    WidenTile<TS, TV, F16Weights>(rowStart, rowEnd, _scratch[worker]);
                    Tile<TS, TV, F32Weights>((byte*)(_scratch[worker] - ((nint)rowStart * In)), rowStart, rowEnd);
                    break;
                case DType.BF16:
                    Tile<TS, TV, Bf16Weights>(W, rowStart, rowEnd);
                    break;
                case DType.F16 when FiniteHalves:
                    Tile<TS, TV, FiniteF16Weights>(W, rowStart, rowEnd);
                    break;
                case DType.F16:
                    Tile<TS, TV, F16Weights>(W, rowStart, rowEnd);
                    break;
                default:
                    Tile<TS, TV, F32Weights>(W, rowStart, rowEnd);
                    break;
            }
        }

        /// <summary>w = fp8 · scale[row block, column block], through the 256-entry decode table.</summary>
        private void DequantizeFp8Tile(int rowStart, int rowEnd, float* destination)
        {
            fixed (float* table = Formats.Quantization.Fp8E4M3.Table)
            {
                for (var r = rowStart; r < rowEnd; r++)
                {
                    var source = W + ((nint)r * In);
                    var y = destination + ((nint)(r - rowStart) * In);
                    var scales = Scales + ((nint)(r / BlockRows) * ScaleColumns);
                    for (var c0 = 0; c0 < In; c0 += BlockColumns)
                    {
                        var scale = scales[c0 / BlockColumns];
                        var end = Math.Min(In, c0 + BlockColumns);
                        for (var k = c0; k < end; k++)
                        {
                            y[k] = table[source[k]] * scale;
                        }
                    }
                }
            }
        }

        /// <summary>w = (q − zero) · scale per group of BlockColumns inputs; two nibbles a byte, low one first.</summary>
        private void DequantizeInt4Tile(int rowStart, int rowEnd, float* destination)
        {
            var groups = ScaleColumns;
            for (var r = rowStart; r < rowEnd; r++)
            {
                var source = W + ((nint)r * (In / 2));
                var y = destination + ((nint)(r - rowStart) * In);
                for (var g = 0; g < groups; g++)
                {
                    var scale = Scales[((nint)r * groups) + g];
                    var zero = Zeros[((nint)r * groups) + g];
                    var start = g * BlockColumns;
                    for (var k = start; k < start + BlockColumns; k += 2)
                    {
                        var packed = source[k / 2];
                        y[k] = ((packed & 0xF) - zero) * scale;
                        y[k + 1] = ((packed >> 4) - zero) * scale;
                    }
                }
            }
        }

        private void WidenTile<TS, TV, TW>(int rowStart, int rowEnd, float* destination)
            where TS : ISimd<TV>
            where TV : struct
            where TW : IWeightFormat
        {
            var rowBytes = (nint)In * TW.DType.SizeInBytes();
            for (var r = rowStart; r < rowEnd; r++)
            {
                var source = W + (r * rowBytes);
                var y = destination + ((nint)(r - rowStart) * In);
                var k = 0;
                for (; k <= In - TS.Count; k += TS.Count)
                {
                    TS.Store(TW.Load<TS, TV>(source, k), y + k);
                }

                for (; k < In; k++)
                {
                    y[k] = TW.Load<SimdScalar, float>(source, k);
                }
            }
        }

        /// <param name="w">Base such that row r of the weights starts at w + r * rowBytes.</param>
        private void Tile<TS, TV, TW>(byte* w, int rowStart, int rowEnd)
            where TS : ISimd<TV>
            where TV : struct
            where TW : IWeightFormat
        {
            var rowBytes = (nint)In * TW.DType.SizeInBytes();
            if (Tokens == 1 && typeof(TW) == typeof(FiniteF16Weights) && typeof(TS) == typeof(Simd512) && XEvenOdd != null)
            {
                for (var r = rowStart; r < rowEnd; r++)
                {
                    HalfPairRow(X, XEvenOdd, In, w + (r * rowBytes), Bias, r, Y);
                }

                return;
            }

            if (Tokens == 1)
            {
                var r = rowStart;
                if (In > LongRow)
                {
                    for (; r + 2 <= rowEnd; r += 2)
                    {
                        RowPair<TS, TV, TW>(X, In, w + (r * rowBytes), rowBytes, Bias, r, Y);
                    }
                }

                for (; r < rowEnd; r++)
                {
                    SingleRow<TS, TV, TW>(X, In, w + (r * rowBytes), Bias, r, Y);
                }

                return;
            }

            var t = 0;
            if (TokenGroup == 4)
            {
                for (; t + 4 <= Tokens; t += 4)
                {
                    for (var r = rowStart; r < rowEnd; r += RowGroup)
                    {
                        Kernel<TS, TV, TW, Four>(X + ((nint)t * In), In, w, rowBytes, r, rowEnd, Bias, Y + ((nint)t * Out), Out);
                    }
                }
            }
            else
            {
                for (; t + 2 <= Tokens; t += 2)
                {
                    for (var r = rowStart; r < rowEnd; r += RowGroup)
                    {
                        Kernel<TS, TV, TW, Two>(X + ((nint)t * In), In, w, rowBytes, r, rowEnd, Bias, Y + ((nint)t * Out), Out);
                    }
                }
            }

            var left = Tokens - t;
            for (var r = rowStart; r < rowEnd && left > 0; r += RowGroup)
            {
                var x = X + ((nint)t * In);
                var y = Y + ((nint)t * Out);
                switch (left)
                {
                    case 1:
                        Kernel<TS, TV, TW, One>(x, In, w, rowBytes, r, rowEnd, Bias, y, Out);
                        break;
                    case 2:
                        Kernel<TS, TV, TW, Two>(x, In, w, rowBytes, r, rowEnd, Bias, y, Out);
                        break;
                    default:
                        Kernel<TS, TV, TW, Three>(x, In, w, rowBytes, r, rowEnd, Bias, y, Out);
                        break;
                }
            }
        }
    }

    public static void Run(CpuWorkerPool pool, Job job, int width, CpuTensor x, CpuTensor weight, CpuTensor? bias, CpuTensor output)
    {
        x.RequireDType(DType.F32);
        output.RequireDType(DType.F32);
        if (weight.Rank != 2)
        {
            throw new ArgumentException($"weight must be [out, in], got {weight}");
        }

        var outFeatures = weight.Shape[0];
        var inFeatures = weight.Shape[1];
        if (x.Columns != inFeatures)
        {
            throw new ArgumentException($"x {x} does not match weight {weight}");
        }

        var tokens = checked((int)x.Rows);
        if (output.Columns != outFeatures || output.Rows != tokens)
        {
            throw new ArgumentException($"output {output} is not [{tokens}, {outFeatures}]");
        }

        if (bias != null)
        {
            bias.RequireDType(DType.F32);
            if (bias.ElementCount != outFeatures)
            {
                throw new ArgumentException($"bias {bias} is not [{outFeatures}]");
            }
        }

        if (tokens == 0 || outFeatures == 0)
        {
            return;
        }

        job.Amx = width >= 512 && job.AllowAmx
            ? weight.DType switch
            {
                // Infinities and NaN in the weights would turn the split's low parts into NaN: those take the vector path.
                DType.F16 when tokens >= AmxF16MinTokens && weight.HalfValuesFinite => CpuAmx.F16,
                DType.BF16 when tokens >= AmxBf16MinTokens => CpuAmx.Bf16,
                _ => null,
            }
            : null;
        job.X = x.F32Pointer;
        job.W = weight.Pointer;
        job.Bias = bias == null ? null : bias.F32Pointer;
        job.Y = output.F32Pointer;
        job.Tokens = tokens;
        job.In = inFeatures;
        job.Out = outFeatures;
        if (job.Amx is { } amx)
        {
            RunAmx(pool, job, amx);
            return;
        }

        var rowBytes = Math.Max(1L, (long)inFeatures * weight.DType.SizeInBytes());
        var tileRows = (int)Math.Clamp(TileBytes / rowBytes, RowGroup, 256);

        // Enough tiles for every thread to get several, so a slow thread does not hold up the rest.
        var perThread = (outFeatures + (pool.ThreadCount * 8) - 1) / (pool.ThreadCount * 8);
        tileRows = Math.Min(tileRows, Math.Max(RowGroup, perThread));
        tileRows = (tileRows + RowGroup - 1) / RowGroup * RowGroup;

        if (weight.DType != DType.F32 && tokens >= WidenTileFromTokens)
        {
            job.EnsureScratch(pool.ThreadCount, (long)tileRows * inFeatures);
        }

        job.Quantized = false;
        job.FiniteHalves = weight.DType == DType.F16 && weight.HalfValuesFinite;
        job.XEvenOdd = null;
        if (job.FiniteHalves && tokens == 1 && width == 512 && inFeatures >= 32)
        {
            job.PrepareEvenOdd(x.F32Pointer, inFeatures);
        }

        job.TileRows = tileRows;
        job.TokenGroup = TokenGroupFor(width);
        job.WeightType = weight.DType;
        job.Width = width;
        pool.Run(job, (outFeatures + tileRows - 1) / tileRows);
    }

    /// <summary>
    /// A product on the AMX kernel (<see cref="Job.Amx"/>, with x, the weights and the shapes set on the job): x packed
    /// one token tile a work item, then groups of 16 rows in work items of an even number of groups (about eight
    /// items a thread, so a slow thread can be caught up), each item one kernel call that converts its weights once.
    /// Packed x past <see cref="AmxWholeRowBytes"/> is walked in chunks of about <see cref="AmxChunkBytes"/> (at 128
    /// tokens, the 8960-column down projection: 9.3 ms on one core against 24 ms for whole rows).
    /// </summary>
    private static void RunAmx(CpuWorkerPool pool, Job job, CpuAmx.HalfKernel kernel)
    {
        // Packed x: [tiles][blocks][2][16][16][2] bf16, 2 KiB a tile and block.
        var blocks = (job.In + 31) / 32;
        var tiles = (job.Tokens + AmxTile - 1) / AmxTile;
        var activationBytes = (long)tiles * blocks * 2048;
        var chunks = activationBytes <= AmxWholeRowBytes ? 1 : (int)((activationBytes + AmxChunkBytes - 1) / AmxChunkBytes);
        var chunk = (blocks + chunks - 1) / chunks;
        chunks = (blocks + chunk - 1) / chunk;

        var groups = (job.Out + AmxTile - 1) / AmxTile;
        var groupsPerItem = (groups + (pool.ThreadCount * 8) - 1) / (pool.ThreadCount * 8);
        groupsPerItem = (groupsPerItem + 1) & ~1;
        job.EnsureAmx((long)tiles * blocks * 1024, pool.ThreadCount, kernel.ScratchBytes(chunk, chunks, groupsPerItem, tiles));
        job.AmxTokenTiles = tiles;
        job.AmxChunk = chunk;
        job.AmxGroupsPerItem = groupsPerItem;
        job.AmxProducts++;

        job.AmxPacking = true;
        pool.Run(job, tiles);
        job.AmxPacking = false;
        pool.Run(job, (groups + groupsPerItem - 1) / groupsPerItem);
    }

    public static void RunQuantized(CpuWorkerPool pool, Job job, int width, CpuTensor x, QuantizedWeight weight, CpuTensor? bias, CpuTensor output)
    {
        x.RequireDType(DType.F32);
        output.RequireDType(DType.F32);
        int outFeatures = weight.OutFeatures, inFeatures = weight.InFeatures;
        var tokens = checked((int)x.Rows);
        if (x.Columns != inFeatures || output.Columns != outFeatures || output.Rows != tokens)
        {
            throw new ArgumentException($"quantized matmul shape mismatch: x {x}, weight {weight}, output {output}");
        }

        if (bias != null && (bias.DType != DType.F32 || bias.ElementCount != outFeatures))
        {
            throw new ArgumentException($"bias {bias} is not F32[{outFeatures}]");
        }

        if (tokens == 0 || outFeatures == 0)
        {
            return;
        }

        // Tiles are sized by their dequantized fp32 footprint, which is what the kernel streams over.
        var rowBytes = Math.Max(1L, (long)inFeatures * sizeof(float));
        var tileRows = (int)Math.Clamp(TileBytes / rowBytes, RowGroup, 256);
        var perThread = (outFeatures + (pool.ThreadCount * 8) - 1) / (pool.ThreadCount * 8);
        tileRows = Math.Min(tileRows, Math.Max(RowGroup, perThread));
        tileRows = (tileRows + RowGroup - 1) / RowGroup * RowGroup;
        job.EnsureScratch(pool.ThreadCount, (long)tileRows * inFeatures);

        job.Quantized = true;
        job.Amx = null;
        job.FiniteHalves = false;
        job.Encoding = weight.Encoding;
        job.Scales = ((CpuTensor)weight.Scales).F32Pointer;
        job.Zeros = weight.Zeros is null ? null : ((CpuTensor)weight.Zeros).Pointer;
        job.BlockRows = weight.BlockRows;
        job.BlockColumns = weight.BlockColumns;
        job.ScaleColumns = weight.Scales.Columns;
        job.X = x.F32Pointer;
        job.W = ((CpuTensor)weight.Data).Pointer;
        job.Bias = bias == null ? null : bias.F32Pointer;
        job.Y = output.F32Pointer;
        job.Tokens = tokens;
        job.In = inFeatures;
        job.Out = outFeatures;
        job.TileRows = tileRows;
        job.TokenGroup = TokenGroupFor(width);
        job.WeightType = DType.F32;
        job.Width = width;
        pool.Run(job, (outFeatures + tileRows - 1) / tileRows);
    }

    /// <summary>
    /// Tokens per micro-kernel call. Four tokens by four rows needs sixteen accumulators plus five live vectors,
    /// which fits the 32 vector registers of AVX-512 and Arm64 but would spill on the 16 of AVX2/SSE, where two
    /// tokens (eight accumulators) are used instead.
    /// </summary>
    private static int TokenGroupFor(int width) =>
        width == 512 || (width == 128 && System.Runtime.Intrinsics.Arm.AdvSimd.Arm64.IsSupported) ? 4 : 2;

    /// <summary>
    /// TN.N tokens (1..4) times four weight rows starting at <paramref name="row"/>. Rows at or past
    /// <paramref name="rowEnd"/> re-read the last valid row and their results are dropped, so no tail kernel is needed.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Kernel<TS, TV, TW, TN>(float* x, int n, byte* w, nint rowBytes, int row, int rowEnd, float* bias, float* y, int yStride)
        where TS : ISimd<TV>
        where TV : struct
        where TW : IWeightFormat
        where TN : ITokenCount
    {
        var last = rowEnd - 1;
        var w0 = w + (row * rowBytes);
        var w1 = w + (Math.Min(row + 1, last) * rowBytes);
        var w2 = w + (Math.Min(row + 2, last) * rowBytes);
        var w3 = w + (Math.Min(row + 3, last) * rowBytes);
        var x0 = x;
        var x1 = x + n;
        var x2 = x + (2 * n);
        var x3 = x + (3 * n);

        TV a00 = TS.Zero, a01 = TS.Zero, a02 = TS.Zero, a03 = TS.Zero;
        TV a10 = TS.Zero, a11 = TS.Zero, a12 = TS.Zero, a13 = TS.Zero;
        TV a20 = TS.Zero, a21 = TS.Zero, a22 = TS.Zero, a23 = TS.Zero;
        TV a30 = TS.Zero, a31 = TS.Zero, a32 = TS.Zero, a33 = TS.Zero;

        var k = 0;
        for (; k <= n - TS.Count; k += TS.Count)
        {
            var v0 = TW.Load<TS, TV>(w0, k);
            var v1 = TW.Load<TS, TV>(w1, k);
            var v2 = TW.Load<TS, TV>(w2, k);
            var v3 = TW.Load<TS, TV>(w3, k);

            var xv = TS.Load(x0 + k);
            a00 = TS.MultiplyAdd(xv, v0, a00);
            a01 = TS.MultiplyAdd(xv, v1, a01);
            a02 = TS.MultiplyAdd(xv, v2, a02);
            a03 = TS.MultiplyAdd(xv, v3, a03);
            if (TN.N > 1)
            {
                xv = TS.Load(x1 + k);
                a10 = TS.MultiplyAdd(xv, v0, a10);
                a11 = TS.MultiplyAdd(xv, v1, a11);
                a12 = TS.MultiplyAdd(xv, v2, a12);
                a13 = TS.MultiplyAdd(xv, v3, a13);
            }

            if (TN.N > 2)
            {
                xv = TS.Load(x2 + k);
                a20 = TS.MultiplyAdd(xv, v0, a20);
                a21 = TS.MultiplyAdd(xv, v1, a21);
                a22 = TS.MultiplyAdd(xv, v2, a22);
                a23 = TS.MultiplyAdd(xv, v3, a23);
            }

            if (TN.N > 3)
            {
                xv = TS.Load(x3 + k);
                a30 = TS.MultiplyAdd(xv, v0, a30);
                a31 = TS.MultiplyAdd(xv, v1, a31);
                a32 = TS.MultiplyAdd(xv, v2, a32);
                a33 = TS.MultiplyAdd(xv, v3, a33);
            }
        }

        Finish<TW>(x0, n, k, w0, w1, w2, w3, TS.Sum(a00), TS.Sum(a01), TS.Sum(a02), TS.Sum(a03), row, rowEnd, bias, y);
        if (TN.N > 1)
        {
            Finish<TW>(x1, n, k, w0, w1, w2, w3, TS.Sum(a10), TS.Sum(a11), TS.Sum(a12), TS.Sum(a13), row, rowEnd, bias, y + yStride);
        }

        if (TN.N > 2)
        {
            Finish<TW>(x2, n, k, w0, w1, w2, w3, TS.Sum(a20), TS.Sum(a21), TS.Sum(a22), TS.Sum(a23), row, rowEnd, bias, y + (2 * yStride));
        }

        if (TN.N > 3)
        {
            Finish<TW>(x3, n, k, w0, w1, w2, w3, TS.Sum(a30), TS.Sum(a31), TS.Sum(a32), TS.Sum(a33), row, rowEnd, bias, y + (3 * yStride));
        }
    }

    /// <summary>
    /// y[row] = x · w[row] (+ bias) for one token: a row at a time with four accumulators, so each thread reads one
    /// sequential stream (the hardware prefetcher keeps up with that; four interleaved rows it did not, and decode
    /// reads every weight from DRAM once per token).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void SingleRow<TS, TV, TW>(float* x, int n, byte* w, float* bias, int row, float* y)
        where TS : ISimd<TV>
        where TV : struct
        where TW : IWeightFormat
    {
        TV a0 = TS.Zero, a1 = TS.Zero, a2 = TS.Zero, a3 = TS.Zero;
        var k = 0;
        var size = TW.DType.SizeInBytes();
        for (; k <= n - (4 * TS.Count); k += 4 * TS.Count)
        {
            // One prefetch per 64-byte line of the 4 × Count weights this step reads (the sizes are JIT constants).
            for (var line = 0; line < 4 * TS.Count * size; line += 64)
            {
                CpuSimd.PrefetchWeights(w + (k * size) + line);
            }

            a0 = TS.MultiplyAdd(TS.Load(x + k), TW.Load<TS, TV>(w, k), a0);
            a1 = TS.MultiplyAdd(TS.Load(x + k + TS.Count), TW.Load<TS, TV>(w, k + TS.Count), a1);
            a2 = TS.MultiplyAdd(TS.Load(x + k + (2 * TS.Count)), TW.Load<TS, TV>(w, k + (2 * TS.Count)), a2);
            a3 = TS.MultiplyAdd(TS.Load(x + k + (3 * TS.Count)), TW.Load<TS, TV>(w, k + (3 * TS.Count)), a3);
        }

        for (; k <= n - TS.Count; k += TS.Count)
        {
            a0 = TS.MultiplyAdd(TS.Load(x + k), TW.Load<TS, TV>(w, k), a0);
        }

        var sum = TS.Sum(TS.Add(TS.Add(a0, a1), TS.Add(a2, a3)));
        for (; k < n; k++)
        {
            sum = MathF.FusedMultiplyAdd(x[k], TW.Load<SimdScalar, float>(w, k), sum);
        }

        y[row] = bias == null ? sum : sum + bias[row];
    }

    /// <summary>
    /// y[row] = x · w[row] for one token and finite F16 weights, 32 halves per 512-bit load: each 32-bit lane holds an
    /// even and an odd half, converted in place (the even one shifted up, the odd one already in the top half) with no
    /// widening shuffle, against x reordered evens-then-odds per 32 values (<paramref name="xEvenOdd"/>).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void HalfPairRow(float* x, float* xEvenOdd, int n, byte* w, float* bias, int row, float* y)
    {
        var mask = Vector512.Create(0x0FFFE000u);
        var sign = Vector512.Create(0x80000000u);
        Vector512<float> a0 = default, a1 = default;
        var k = 0;
        for (; k + 32 <= n; k += 32)
        {
            CpuSimd.PrefetchWeights(w + (2 * k));
            var pair = Vector512.Load((uint*)(w + (2 * k)));
            var even = (HalfBits.Magnitude((pair << 13) & mask).AsUInt32() | ((pair << 16) & sign)).AsSingle();
            var odd = (HalfBits.Magnitude((pair >> 3) & mask).AsUInt32() | (pair & sign)).AsSingle();
            a0 = Vector512.FusedMultiplyAdd(Vector512.Load(xEvenOdd + k), even, a0);
            a1 = Vector512.FusedMultiplyAdd(Vector512.Load(xEvenOdd + k + 16), odd, a1);
        }

        var sum = Vector512.Sum(a0 + a1);
        for (; k < n; k++)
        {
            sum = MathF.FusedMultiplyAdd(x[k], CpuSimd.F16ToSingle(((ushort*)w)[k]), sum);
        }

        y[row] = bias == null ? sum : sum + bias[row];
    }

    /// <summary>
    /// Two rows of one token at once: for rows so long that the fp32 activations no longer stay in L1 beside the
    /// streaming weights, each activation load then serves two rows.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void RowPair<TS, TV, TW>(float* x, int n, byte* w, nint rowBytes, float* bias, int row, float* y)
        where TS : ISimd<TV>
        where TV : struct
        where TW : IWeightFormat
    {
        var w1 = w + rowBytes;
        TV a0 = TS.Zero, a1 = TS.Zero, b0 = TS.Zero, b1 = TS.Zero;
        var k = 0;
        for (; k <= n - (2 * TS.Count); k += 2 * TS.Count)
        {
            if (System.Runtime.Intrinsics.X86.Sse.IsSupported)
            {
                // Non-temporal prefetch a few KiB ahead: the weights are used once, and kept out of the way of
                // the activations (a long fp32 row does not otherwise stay in L1 beside them). Measured to help
                // long rows only; short rows are left to the hardware prefetcher.
                var ahead = (k * TW.DType.SizeInBytes()) + 4096;
                System.Runtime.Intrinsics.X86.Sse.PrefetchNonTemporal(w + ahead);
                System.Runtime.Intrinsics.X86.Sse.PrefetchNonTemporal(w1 + ahead);
            }

            var x0 = TS.Load(x + k);
            var x1 = TS.Load(x + k + TS.Count);
            a0 = TS.MultiplyAdd(x0, TW.Load<TS, TV>(w, k), a0);
            b0 = TS.MultiplyAdd(x0, TW.Load<TS, TV>(w1, k), b0);
            a1 = TS.MultiplyAdd(x1, TW.Load<TS, TV>(w, k + TS.Count), a1);
            b1 = TS.MultiplyAdd(x1, TW.Load<TS, TV>(w1, k + TS.Count), b1);
        }

        for (; k <= n - TS.Count; k += TS.Count)
        {
            var x0 = TS.Load(x + k);
            a0 = TS.MultiplyAdd(x0, TW.Load<TS, TV>(w, k), a0);
            b0 = TS.MultiplyAdd(x0, TW.Load<TS, TV>(w1, k), b0);
        }

        float s0 = TS.Sum(TS.Add(a0, a1)), s1 = TS.Sum(TS.Add(b0, b1));
        for (; k < n; k++)
        {
            s0 = MathF.FusedMultiplyAdd(x[k], TW.Load<SimdScalar, float>(w, k), s0);
            s1 = MathF.FusedMultiplyAdd(x[k], TW.Load<SimdScalar, float>(w1, k), s1);
        }

        y[row] = bias == null ? s0 : s0 + bias[row];
        y[row + 1] = bias == null ? s1 : s1 + bias[row + 1];
    }

    /// <summary>Adds the scalar tail [k, n), the bias, and stores the valid rows of one token.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Finish<TW>(float* x, int n, int k, byte* w0, byte* w1, byte* w2, byte* w3, float s0, float s1, float s2, float s3, int row, int rowEnd, float* bias, float* y)
        where TW : IWeightFormat
    {
        for (; k < n; k++)
        {
            var xv = x[k];
            s0 = MathF.FusedMultiplyAdd(xv, TW.Load<SimdScalar, float>(w0, k), s0);
            s1 = MathF.FusedMultiplyAdd(xv, TW.Load<SimdScalar, float>(w1, k), s1);
            s2 = MathF.FusedMultiplyAdd(xv, TW.Load<SimdScalar, float>(w2, k), s2);
            s3 = MathF.FusedMultiplyAdd(xv, TW.Load<SimdScalar, float>(w3, k), s3);
        }

        if (bias != null)
        {
            s0 += bias[row];
            s1 += row + 1 < rowEnd ? bias[row + 1] : 0f;
            s2 += row + 2 < rowEnd ? bias[row + 2] : 0f;
            s3 += row + 3 < rowEnd ? bias[row + 3] : 0f;
        }

        y[row] = s0;
        if (row + 1 < rowEnd)
        {
            y[row + 1] = s1;
        }

        if (row + 2 < rowEnd)
        {
            y[row + 2] = s2;
        }

        if (row + 3 < rowEnd)
        {
            y[row + 3] = s3;
        }
    }
}

/// <summary>A compile-time token count for the matmul micro-kernel; the JIT folds the branches on N.</summary>
internal interface ITokenCount
{
    static abstract int N { get; }
}

internal readonly struct One : ITokenCount
{
    public static int N => 1;
}

internal readonly struct Two : ITokenCount
{
    public static int N => 2;
}

internal readonly struct Three : ITokenCount
{
    public static int N => 3;
}

internal readonly struct Four : ITokenCount
{
    public static int N => 4;
}
