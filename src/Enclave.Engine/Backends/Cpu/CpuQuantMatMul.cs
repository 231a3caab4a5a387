using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Enclave.Engine.Backends.Cpu;

/// <summary>
/// y[T, out] = x[T, in] · W[out, in]ᵀ (+ bias) with W in a ggml block format (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K,
/// Q5_K, Q6_K), read in place (Q8_0 in the 16-row groups of <see cref="CpuQ8_0Groups"/> where the backend keeps it
/// so): weights are never expanded to floats. As llama.cpp does, x is first quantised once per call to int8 in
/// blocks of 32 (one fp32 scale per block, plus the sum of each 16 values for the formats whose levels are offset),
/// then every weight block is dotted with it in integers: unsigned weight levels times signed activations with
/// AVX-VNNI's <c>vpdpbusd</c> where present, AVX2's <c>vpmaddubsw</c>/<c>vpmaddwd</c> otherwise, or a scalar loop.
/// The integer dot of each 32 values is scaled in fp32 by the weight and activation scales, and the level offsets
/// (Q4_0's 8, Q6_K's 32, the Q4_1/Q5_1 and K-quant minimums) are applied through the activation block sums;
/// Q5_0's levels are made signed instead.
///
/// Output rows are cut into tiles spread over the worker pool. A tile's weight rows stay in L2 while the tokens
/// stream past in groups of four (Q8_0 with AVX-VNNI: eight): each weight block is unpacked once and dotted with all
/// the group's tokens (prefill is a tiled matrix product, not repeated vector products). Grouped Q8_0 weights go
/// 16 rows at a time to <see cref="CpuQ8_0Groups.Product"/>, up to four tokens a call. Q8_0, Q5_0, Q4_K, Q5_K and Q6_K products of
/// <see cref="AmxMinTokens"/> or more tokens run on AMX tiles where the CPU has them (<see cref="CpuAmx"/>): 16
/// weight rows × 16 tokens × one block of 32 a tile product. Where the CPU has AMX-BF16, Q8_0 products instead take x
/// as bf16 and each group of weights dequantised to bf16 once per call (<see cref="CpuAmx.Q8_0Bf16"/>), summing whole
/// rows on the tiles. Buffers grow only, so steady-state calls do not allocate.
/// </summary>
internal static unsafe class CpuQuantMatMul
{
    private const int TokenGroup = 4;

    /// <summary>Tokens per group of the Q8_0 prefill kernel on AVX-VNNI (<see cref="OctetQ8_0"/>).</summary>
    private const int TokenOctet = 8;

    /// <summary>Weight rows and tokens of one AMX tile product.</summary>
    private const int AmxTile = 16;

    /// <summary>
    /// Tokens from which Q8_0, Q5_0, Q4_K, Q5_K and Q6_K products run on AMX (the last tile is padded with zero tokens; fewer tokens are decode
    /// steps, bound by reading the weights, where the vector kernels already keep up).
    /// </summary>
    internal const int AmxMinTokens = 8;

    /// <summary>
    /// Tokens from which Q8_0 products take the bf16 kernel where there is one: it dequantises every weight once per
    /// call, which costs about what two token tiles of the int8 kernel's read-out do, so it pays from three tiles on
    /// (on an Emerald Rapids core: 32 tokens 0.69 ms against the int8 kernel's 0.54 for a 4864 × 896 product, 64
    /// tokens 0.90 against 1.00, 128 tokens 1.3 against 2.0).
    /// </summary>
    internal const int AmxBf16MinTokens = 48;
    private const int TileBytes = 96 * 1024;

    /// <summary>Products one multi-target region takes at most (q/k/v: three).</summary>
    internal const int MaxTargets = 4;

    /// <summary>A compile-time switch: the JIT specialises a kernel per struct argument and folds the branches away.</summary>
    internal interface IFlag
    {
        static abstract bool Value { get; }
    }

    internal readonly struct True : IFlag
    {
        public static bool Value => true;
    }

    internal readonly struct False : IFlag
    {
        public static bool Value => false;
    }

    /// <summary>The integer dot-product instructions a kernel uses.</summary>
    public enum Kernel
    {
        Scalar,
        Avx2,
        AvxVnni,
    }

    /// <summary>The best kernel on this machine for a backend pinned to <paramref name="simdWidth"/> (1 = scalar).</summary>
    public static Kernel KernelFor(int simdWidth) =>
        simdWidth <= 1 || !Avx2.IsSupported ? Kernel.Scalar
        : simdWidth >= 512 && AvxVnni.IsSupported ? Kernel.AvxVnni
        : simdWidth == 128 ? Kernel.Avx2
        : AvxVnni.IsSupported ? Kernel.AvxVnni : Kernel.Avx2;

    public sealed class Job : CpuJob, IDisposable
    {
        private long _capacity;

        public sbyte* Qx;
        public float* Dx;
        public short* Sx;

        /// <summary>Per block of 32 activations, its scale times the sum of its quantised values (Q4_1/Q5_1 minimums).</summary>
        public float* Bx;

        /// <summary>
        /// Products of four or more tokens with per-32 activation scales: those scales regrouped [token group][block][4 tokens],
        /// so a prefill kernel multiplies a block's four token scales by the weight scale in one vector operation.
        /// </summary>
        public float* GroupScales;

        /// <summary>
        /// For <see cref="OctetQ8_0"/>: the quantised activations plus 128 as unsigned bytes (x ^ 0x80), and the per-32
        /// activation scales regrouped [token octet][block][8 tokens].
        /// </summary>
        public byte* OffsetQx;
        public float* OctetScales;

        /// <summary>Q8_0 products: per token and block of 32, 128 times the sum of its int8 activations [tokens][blocks], which the grouped weights' offset levels add.</summary>
        public int* Offsets;
        public byte* W;
        public float* Bias;
        public float* Y;
        public int Tokens;
        public int In;
        public int Out;
        public int TileRows;
        public long RowBytes;
        public DType WeightType;
        public Kernel Kernel;

        /// <summary>Tokens, from the first, that <see cref="OctetQ8_0"/> computes (whole octets; 0 when it does not apply).</summary>
        public int OctetTokens;

        /// <summary>
        /// AMX products: the activations in tile layout [token tile][block][8][16 tokens][4] (zero past the last
        /// token), their scales [token tile][scale block][16 tokens] (per 32 values for Q8_0 and Q5_0, per 256 for
        /// the K-quants), for the formats with offsets or minimums the sums of each block's int8 activations [token
        /// tile][block][16 tokens] (blocks of 32; 16 for Q6_K), and per-worker scratch of
        /// <see cref="AmxScratchBytes"/>.
        /// </summary>
        public sbyte* AmxX;
        public float* AmxScales;
        public float* AmxSums;
        public int* AmxScratch;

        /// <summary>
        /// Groups of 16 rows computed together, on AMX or from grouped Q8_0 weights (0: rows in tiles this call), the
        /// work items they are cut into and groups per item.
        /// </summary>
        public int Groups;
        public int GroupItems;
        public int GroupsPerItem;

        /// <summary>
        /// Products of one x with several grouped Q8_0 weights in one parallel region (<see cref="LaunchTargets"/>; 0: one
        /// product at a time): each target's weights, biases, outputs and output width, its groups per item and the end
        /// of its items.
        /// </summary>
        public int TargetCount;
        private readonly nint[] _targetW = new nint[MaxTargets];
        private readonly nint[] _targetBias = new nint[MaxTargets];
        private readonly nint[] _targetY = new nint[MaxTargets];
        private readonly int[] _targetOut = new int[MaxTargets];
        private readonly int[] _targetGroupsPerItem = new int[MaxTargets];
        private readonly int[] _targetItemEnd = new int[MaxTargets];

        /// <summary>Sets target <paramref name="index"/> of a multi-target region; returns the end of its items.</summary>
        internal int SetTarget(int index, byte* w, float* bias, float* y, int outFeatures, int groupsPerItem, int firstItem)
        {
            _targetW[index] = (nint)w;
            _targetBias[index] = (nint)bias;
            _targetY[index] = (nint)y;
            _targetOut[index] = outFeatures;
            _targetGroupsPerItem[index] = groupsPerItem;
            var groups = outFeatures / CpuQ8_0Groups.Rows;
            _targetItemEnd[index] = firstItem + ((groups + groupsPerItem - 1) / groupsPerItem);
            return _targetItemEnd[index];
        }

        /// <summary>Whether this call's groups run on AMX (else they are grouped Q8_0 weights on the vector units).</summary>
        public bool GroupsOnAmx;

        /// <summary>Whether products may take the Q8_0 bf16 kernel where there is one (tests turn it off to check the int8 kernel).</summary>
        public bool AllowAmxBf16 { get; set; } = true;

        /// <summary>
        /// The Q8_0 bf16 kernel x is packed for, or null: then <see cref="AmxX"/> holds x as bf16, [token tile][block of
        /// 32][16 tokens][32] (zero past the last token), and grouped Q8_0 weights run there instead of on <see cref="Amx"/>.
        /// </summary>
        public CpuAmx.Bf16Kernel? AmxBf16;

        /// <summary>Whether products may run on AMX tiles at all (tests turn it off to compare the vector kernels).</summary>
        public bool AllowAmx { get; set; } = true;
        public int AmxTokenTiles;
        public long AmxScratchBytes;

        private long _amxCapacity;
        private long _amxScratchCapacity;

        /// <summary>The AMX kernel x is packed for (<see cref="AmxX"/>), or null; products of 16 rows or more then run there.</summary>
        public CpuAmx.Kernel? Amx;

        /// <summary>Products this job has run on AMX tiles (for tests and profiles).</summary>
        public long AmxProducts { get; set; }

        /// <summary>Of those, the products on the Q8_0 bf16 kernel.</summary>
        public long AmxBf16Products { get; set; }

        /// <summary>Grows the AMX buffers to hold <paramref name="paddedValues"/> activations and scratch for <paramref name="workers"/> threads.</summary>
        public void EnsureAmx(long paddedValues, int workers, long scratchBytes)
        {
            if (paddedValues > _amxCapacity)
            {
                NativeMemory.AlignedFree(AmxX);
                NativeMemory.AlignedFree(AmxScales);
                NativeMemory.AlignedFree(AmxSums);
                _amxCapacity = paddedValues;
                AmxX = (sbyte*)NativeMemory.AlignedAlloc((nuint)paddedValues, 64);
                AmxScales = (float*)NativeMemory.AlignedAlloc((nuint)(paddedValues / 32 * sizeof(float)), 64);
                AmxSums = (float*)NativeMemory.AlignedAlloc((nuint)(paddedValues / 16 * sizeof(float)), 64);
            }

            AmxScratchBytes = scratchBytes;
            if (workers * AmxScratchBytes > _amxScratchCapacity)
            {
                NativeMemory.AlignedFree(AmxScratch);
                _amxScratchCapacity = workers * AmxScratchBytes;
                AmxScratch = (int*)NativeMemory.AlignedAlloc((nuint)_amxScratchCapacity, 64);
            }
        }

        /// <summary>Grows the quantised-activation buffers to hold <paramref name="values"/> values.</summary>
        public void Ensure(long values)
        {
            if (values <= _capacity)
            {
                return;
            }

            Free();
            _capacity = values;
            Qx = (sbyte*)NativeMemory.AlignedAlloc((nuint)values, 64);
            Dx = (float*)NativeMemory.AlignedAlloc((nuint)(values / 32 * sizeof(float)) + 64, 64);
            Sx = (short*)NativeMemory.AlignedAlloc((nuint)(values / 16 * sizeof(short)) + 64, 64);
            Bx = (float*)NativeMemory.AlignedAlloc((nuint)(values / 32 * sizeof(float)) + 64, 64);
            GroupScales = (float*)NativeMemory.AlignedAlloc((nuint)(values / 32 * sizeof(float)) + 64, 64);
            OffsetQx = (byte*)NativeMemory.AlignedAlloc((nuint)values, 64);
            OctetScales = (float*)NativeMemory.AlignedAlloc((nuint)(values / 32 * sizeof(float)) + 64, 64);
            Offsets = (int*)NativeMemory.AlignedAlloc((nuint)(values / 32 * sizeof(int)) + 64, 64);
        }

        public void Dispose()
        {
            Free();
            NativeMemory.AlignedFree(AmxX);
            NativeMemory.AlignedFree(AmxScales);
            NativeMemory.AlignedFree(AmxSums);
            NativeMemory.AlignedFree(AmxScratch);
            AmxX = null;
            AmxScales = null;
            AmxSums = null;
            AmxScratch = null;
            _amxCapacity = 0;
            _amxScratchCapacity = 0;
        }

        private void Free()
        {
            NativeMemory.AlignedFree(Qx);
            NativeMemory.AlignedFree(Dx);
            NativeMemory.AlignedFree(Sx);
            NativeMemory.AlignedFree(Bx);
            NativeMemory.AlignedFree(GroupScales);
            NativeMemory.AlignedFree(OffsetQx);
            NativeMemory.AlignedFree(OctetScales);
            NativeMemory.AlignedFree(Offsets);
            Qx = null;
            Dx = null;
            Sx = null;
            Bx = null;
            GroupScales = null;
            OffsetQx = null;
            OctetScales = null;
            Offsets = null;
            _capacity = 0;
        }

        // Fully optimised from the first call: these loops run once per row, and a tier-0 body (before tiering
        // replaces it) costs more than the row's integer products on small matrices.
        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        public override void Execute(int index, int worker)
        {
            if (TargetCount > 0)
            {
                RunTargets(index);
                return;
            }

            int rowStart, rowEnd;
            if (Groups > 0)
            {
                if (index < GroupItems)
                {
                    if (GroupsOnAmx && AmxBf16 != null)
                    {
                        RunAmxBf16(index, worker);
                    }
                    else if (GroupsOnAmx)
                    {
                        RunAmx(index, worker);
                    }
                    else
                    {
                        RunGroups(index);
                    }

                    return;
                }

                // The one item after the group items: the rows past the last whole group of 16.
                rowStart = Groups * AmxTile;
                rowEnd = Out;
            }
            else
            {
                rowStart = index * TileRows;
                rowEnd = Math.Min(Out, rowStart + TileRows);
            }

            Span<float> results = stackalloc float[TokenOctet];
            var t = 0;
            if (OctetTokens > 0)
            {
                var scaleProducts = stackalloc float[TokenOctet];
                var blocks = In / 32;
                for (; t < OctetTokens; t += TokenOctet)
                {
                    var qx = OffsetQx + ((long)t * In);
                    var octetScales = OctetScales + ((long)t * blocks);
                    for (var r = rowStart; r < rowEnd; r++)
                    {
                        OctetQ8_0(W + (r * RowBytes), blocks, qx, octetScales, In, scaleProducts, results);
                        var b = Bias == null ? 0f : Bias[r];
                        for (var k = 0; k < TokenOctet; k++)
                        {
                            Y[((long)(t + k) * Out) + r] = results[k] + b;
                        }
                    }
                }
            }

            for (; t < Tokens; t += TokenGroup)
            {
                var tn = Math.Min(TokenGroup, Tokens - t);
                for (var r = rowStart; r < rowEnd; r++)
                {
                    var row = W + (r * RowBytes);
                    Row(row, t, tn, results);
                    var b = Bias == null ? 0f : Bias[r];
                    for (var k = 0; k < tn; k++)
                    {
                        Y[((long)(t + k) * Out) + r] = results[k] + b;
                    }
                }
            }
        }

        /// <summary>Work item <paramref name="index"/> over grouped Q8_0 weights: each group of 16 rows against every token, four at a time.</summary>
        private void RunGroups(int index) =>
            RunGroupRange(W, Bias, Y, Out, index * GroupsPerItem, Math.Min(Groups, (index + 1) * GroupsPerItem));

        /// <summary>Item <paramref name="index"/> of a multi-target region: its target's groups.</summary>
        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        private void RunTargets(int index)
        {
            var target = 0;
            while (index >= _targetItemEnd[target])
            {
                target++;
            }

            var item = index - (target == 0 ? 0 : _targetItemEnd[target - 1]);
            var groupsPerItem = _targetGroupsPerItem[target];
            var groups = _targetOut[target] / CpuQ8_0Groups.Rows;
            RunGroupRange((byte*)_targetW[target], (float*)_targetBias[target], (float*)_targetY[target], _targetOut[target],
                item * groupsPerItem, Math.Min(groups, (item + 1) * groupsPerItem));
        }

        /// <summary>Groups [first, last) of grouped Q8_0 weights <paramref name="w"/> ([outFeatures, In]) against every token, four at a time.</summary>
        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        private void RunGroupRange(byte* w, float* biases, float* output, int outFeatures, int first, int last)
        {
            var blocks = In / 32;
            for (var g = first; g < last; g++)
            {
                var row = (long)g * CpuQ8_0Groups.Rows;
                var group = w + (row * RowBytes);
                var bias = biases == null ? null : biases + row;
                for (var t = 0; t < Tokens; t += CpuQ8_0Groups.MaxTokens)
                {
                    var qx = Qx + ((long)t * In);
                    var offsets = Offsets + ((long)t * blocks);
                    var dx = Dx + ((long)t * blocks);
                    var y = output + ((long)t * outFeatures) + row;
                    switch (Math.Min(CpuQ8_0Groups.MaxTokens, Tokens - t))
                    {
                        case 1:
                            CpuQ8_0Groups.Product<One>(group, blocks, qx, In, offsets, dx, y, outFeatures, bias);
                            break;
                        case 2:
                            CpuQ8_0Groups.Product<Two>(group, blocks, qx, In, offsets, dx, y, outFeatures, bias);
                            break;
                        case 3:
                            CpuQ8_0Groups.Product<Three>(group, blocks, qx, In, offsets, dx, y, outFeatures, bias);
                            break;
                        default:
                            CpuQ8_0Groups.Product<Four>(group, blocks, qx, In, offsets, dx, y, outFeatures, bias);
                            break;
                    }
                }
            }
        }

        private void RunAmx(int index, int worker)
        {
            var kernel = Amx!.Value;
            var scratch = AmxScratch + (worker * AmxScratchBytes / sizeof(int));
            var last = Math.Min(Groups, (index + 1) * GroupsPerItem);
            for (var g = index * GroupsPerItem; g < last; g++)
            {
                var row = (long)g * AmxTile;
                kernel.Entry(W + (row * RowBytes), RowBytes, In / kernel.BlockValues, AmxX, AmxScales, AmxSums, AmxTokenTiles, Tokens, Y + row, Out,
                    Bias == null ? null : Bias + row, scratch, kernel.Config);
            }
        }

        /// <summary>Work item <paramref name="index"/> on the bf16 kernel: its groups (an even number, but for the last item) in one call.</summary>
        private void RunAmxBf16(int index, int worker)
        {
            var kernel = AmxBf16!.Value;
            var first = index * GroupsPerItem;
            var count = Math.Min(Groups, first + GroupsPerItem) - first;
            var row = (long)first * AmxTile;
            kernel.Entry(W + (row * RowBytes), AmxTile * RowBytes, count, In / 32, (ushort*)AmxX, AmxTokenTiles, Tokens, Y + row, Out,
                Bias == null ? null : Bias + row, (byte*)AmxScratch + (worker * AmxScratchBytes), kernel.Config);
        }

        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        private void Row(byte* row, int t0, int tn, Span<float> results)
        {
            var scalesPerToken = In / ActivationBlock(WeightType);
            var qx = Qx + ((long)t0 * In);
            var dx = Dx + ((long)t0 * scalesPerToken);
            var sx = Sx + ((long)t0 * (In / 16));
            var bx = Bx + ((long)t0 * (In / 32));

            // Full groups start at multiples of the group size (Execute steps t0 by TokenGroup).
            var groupScales = GroupScales + ((long)t0 * (In / 32));
            if (Kernel == Kernel.Scalar)
            {
                for (var k = 0; k < tn; k++)
                {
                    results[k] = ScalarRow(WeightType, row, In, qx + ((long)k * In), dx + ((long)k * scalesPerToken), sx + ((long)k * (In / 16)));
                }

                return;
            }

            if (Kernel == Kernel.AvxVnni)
            {
                RowKernel<True>(row, qx, dx, sx, bx, groupScales, tn, results);
            }
            else
            {
                RowKernel<False>(row, qx, dx, sx, bx, groupScales, tn, results);
            }
        }

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        private void RowKernel<TVnni>(byte* row, sbyte* qx, float* dx, short* sx, float* bx, float* groupScales, int tn, Span<float> results)
            where TVnni : struct, IFlag
        {
            if (tn == TokenGroup)
            {
                // A full group of tokens: each weight block is unpacked once and dotted with all of them.
                switch (WeightType)
                {
                    case DType.Q8_0:
                        GroupSigned<TVnni, False>(row, In / 32, qx, groupScales, In, results);
                        return;
                    case DType.Q4_0:
                        GroupSigned<TVnni, True>(row, In / 32, qx, groupScales, In, results);
                        return;
                    case DType.Q4_1:
                        GroupQ4Q5<TVnni, False, True>(row, In / 32, qx, groupScales, bx, In, results);
                        return;
                    case DType.Q5_0:
                        GroupQ4Q5<TVnni, True, False>(row, In / 32, qx, groupScales, bx, In, results);
                        return;
                    case DType.Q5_1:
                        GroupQ4Q5<TVnni, True, True>(row, In / 32, qx, groupScales, bx, In, results);
                        return;
                    case DType.Q4_K:
                        GroupQ45K<TVnni, False>(row, In / 256, qx, dx, sx, In, results);
                        return;
                    case DType.Q5_K:
                        GroupQ45K<TVnni, True>(row, In / 256, qx, dx, sx, In, results);
                        return;
                    case DType.Q6_K:
                        GroupQ6K<TVnni>(row, In / 256, qx, dx, sx, In, results);
                        return;
                }
            }

            switch (WeightType)
            {
                case DType.Q8_0:
                    RowQ8_0<TVnni>(row, In / 32, qx, dx, In, tn, results);
                    break;
                case DType.Q4_0:
                    RowQ4_0<TVnni>(row, In / 32, qx, dx, sx, In, tn, results);
                    break;
                case DType.Q4_1:
                    RowQ4Q5<TVnni, False, True>(row, In / 32, qx, dx, bx, In, tn, results);
                    break;
                case DType.Q5_0:
                    RowQ4Q5<TVnni, True, False>(row, In / 32, qx, dx, bx, In, tn, results);
                    break;
                case DType.Q5_1:
                    RowQ4Q5<TVnni, True, True>(row, In / 32, qx, dx, bx, In, tn, results);
                    break;
                case DType.Q4_K:
                    RowQ45K<TVnni, False>(row, In / 256, qx, dx, sx, In, tn, results);
                    break;
                case DType.Q5_K:
                    RowQ45K<TVnni, True>(row, In / 256, qx, dx, sx, In, tn, results);
                    break;
                case DType.Q6_K:
                    RowQ6K<TVnni>(row, In / 256, qx, dx, sx, In, tn, results);
                    break;
                default:
                    throw new InvalidOperationException($"{WeightType} is not a block type");
            }
        }
    }

    /// <summary>Values per activation scale for a weight type: 256 for the K-quants (one per super-block), else 32.</summary>
    internal static int ActivationBlock(DType weightType) => weightType is DType.Q4_K or DType.Q5_K or DType.Q6_K ? 256 : 32;

    public static void Run(CpuWorkerPool pool, Job job, int width, CpuTensor x, CpuTensor weight, CpuTensor? bias, CpuTensor output)
    {
        var tokens = Validate(x, weight, bias, output);
        if (tokens == 0 || weight.Shape[0] == 0)
        {
            return;
        }

        Prepare(pool, job, width, x, weight.DType, tokens, OnGroupsOnly(weight));
        Launch(pool, job, weight, bias, output);
    }

    /// <summary>
    /// Products of one x with weights of one block type and width (q/k/v, gate/up): x is quantised, regrouped and packed
    /// once for all of them; the results equal separate <see cref="Run"/> calls.
    /// </summary>
    public static void RunShared(CpuWorkerPool pool, Job job, int width, CpuTensor x, ReadOnlySpan<(CpuTensor Weight, CpuTensor? Bias, CpuTensor Output)> targets)
    {
        var tokens = 0;
        foreach (var (weight, bias, output) in targets)
        {
            if (weight.DType != targets[0].Weight.DType)
            {
                throw new ArgumentException($"shared products need one weight type, got {targets[0].Weight.DType} and {weight.DType}");
            }

            tokens = Validate(x, weight, bias, output);
        }

        if (tokens == 0)
        {
            return;
        }

        var groupsOnly = true;
        foreach (var (weight, _, _) in targets)
        {
            groupsOnly &= OnGroupsOnly(weight);
        }

        Prepare(pool, job, width, x, targets[0].Weight.DType, tokens, groupsOnly);
        if (groupsOnly && job.Amx == null && targets.Length <= MaxTargets)
        {
            // Every product on grouped weights on the vector units (decode): one parallel region for all of them.
            LaunchTargets(pool, job, targets);
            return;
        }

        foreach (var (weight, bias, output) in targets)
        {
            if (weight.Shape[0] > 0)
            {
                Launch(pool, job, weight, bias, output);
            }
        }
    }

    /// <summary>
    /// Products of the prepared x with grouped Q8_0 weights (every row in a whole group) as one parallel region: the
    /// items of each target one after another, cut as <see cref="Launch"/> cuts them.
    /// </summary>
    private static void LaunchTargets(CpuWorkerPool pool, Job job, ReadOnlySpan<(CpuTensor Weight, CpuTensor? Bias, CpuTensor Output)> targets)
    {
        job.RowBytes = DType.Q8_0.RowBytes(job.In);
        var items = 0;
        var count = 0;
        foreach (var (weight, bias, output) in targets)
        {
            var groups = weight.Shape[0] / AmxTile;
            if (groups == 0)
            {
                continue;
            }

            var groupsPerItem = GroupsPerItem(groups, pool.ThreadCount);
            items = job.SetTarget(count++, weight.Pointer, bias == null ? null : bias.F32Pointer, output.F32Pointer, weight.Shape[0], groupsPerItem, items);
        }

        job.TargetCount = count;
        try
        {
            pool.Run(job, items);
        }
        finally
        {
            job.TargetCount = 0;
        }
    }

    /// <summary>The token count of a product after checking the shapes and types of its operands.</summary>
    private static int Validate(CpuTensor x, CpuTensor weight, CpuTensor? bias, CpuTensor output)
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

        if (bias != null && (bias.DType != DType.F32 || bias.ElementCount != outFeatures))
        {
            throw new ArgumentException($"bias {bias} is not F32[{outFeatures}]");
        }

        return tokens;
    }

    /// <summary>Groups of 16 rows a work item takes: about eight items a thread, so a slow thread can be caught up.</summary>
    private static int GroupsPerItem(int groups, int threads) => (groups + (threads * 8) - 1) / (threads * 8);

    /// <summary>Whether every row of <paramref name="weight"/> is in a whole group of grouped Q8_0 weights (none left to the row kernels).</summary>
    private static bool OnGroupsOnly(CpuTensor weight) => weight.Q8_0Grouped && weight.Shape[0] % AmxTile == 0;

    /// <summary>
    /// Everything a product needs from x for weights of <paramref name="weightType"/>: its int8 blocks and their scales,
    /// sums and regroupings, or x in bf16 alone where the Q8_0 bf16 kernel takes every row
    /// (<paramref name="groupsOnly"/>: all weights grouped, no rows past the last group).
    /// </summary>
    private static void Prepare(CpuWorkerPool pool, Job job, int width, CpuTensor x, DType weightType, int tokens, bool groupsOnly)
    {
        var inFeatures = checked((int)x.Columns);
        job.Ensure((long)tokens * inFeatures);
        var amx = width >= 512 && tokens >= AmxMinTokens && job.AllowAmx ? CpuAmx.For(weightType) : null;
        job.AmxBf16 = amx != null && weightType == DType.Q8_0 && tokens >= AmxBf16MinTokens && job.AllowAmxBf16 ? CpuAmx.Q8_0Bf16 : null;
        var kernel = KernelFor(width);
        var octetTokens = 0;

        // Where the bf16 kernel takes every row, x is needed in bf16 alone; otherwise as int8 blocks for the other kernels.
        if (job.AmxBf16 == null || !groupsOnly)
        {
            QuantizeActivations(x.F32Pointer, (long)tokens * inFeatures, ActivationBlock(weightType), job.Qx, job.Dx, job.Sx);
            if (weightType is DType.Q4_1 or DType.Q5_1)
            {
                // Σ_b m_b · dx_b · (sum of block b) needs dx_b · sum once per activation block, not once per weight row.
                for (long b = 0; b < (long)tokens * inFeatures / 32; b++)
                {
                    job.Bx[b] = job.Dx[b] * (job.Sx[2 * b] + job.Sx[(2 * b) + 1]);
                }
            }

            if (weightType == DType.Q8_0)
            {
                // The grouped weights' levels are offset by 128: their integer sums lose 128·Σx per block.
                for (long b = 0; b < (long)tokens * inFeatures / 32; b++)
                {
                    job.Offsets[b] = 128 * (job.Sx[2 * b] + job.Sx[(2 * b) + 1]);
                }
            }

            // Q8_0 rows in the file's layout never run on AMX (its kernel reads grouped weights), so they may need the octets even with AMX.
            octetTokens = weightType == DType.Q8_0 && kernel == Kernel.AvxVnni ? tokens / TokenOctet * TokenOctet : 0;
            if (octetTokens > 0)
            {
                OffsetAndRegroup(job, octetTokens, inFeatures);
            }

            if (ActivationBlock(weightType) == 32 && tokens >= TokenGroup)
            {
                RegroupScales(job.Dx, job.GroupScales, tokens, inFeatures / 32, TokenGroup);
            }
        }

        job.Tokens = tokens;
        job.In = inFeatures;
        job.WeightType = weightType;
        job.Kernel = kernel;
        job.OctetTokens = octetTokens;
        job.Amx = amx;
        if (job.AmxBf16 != null)
        {
            PackAmxBf16(job, pool.ThreadCount, x.F32Pointer, tokens, inFeatures);
        }
        else if (amx is { } amxKernel)
        {
            PackAmxActivations(job, amxKernel, pool.ThreadCount, tokens, inFeatures);
        }
    }

    /// <summary>
    /// One product over the prepared x: rows in tiles, or in groups of 16 on AMX or from grouped Q8_0 weights (the rows
    /// past the last group on the row kernels).
    /// </summary>
    private static void Launch(CpuWorkerPool pool, Job job, CpuTensor weight, CpuTensor? bias, CpuTensor output)
    {
        var outFeatures = weight.Shape[0];
        var rowBytes = weight.DType.RowBytes(job.In);
        var tileRows = (int)Math.Clamp(TileBytes / rowBytes, 1, 256);
        var perThread = (outFeatures + (pool.ThreadCount * 8) - 1) / (pool.ThreadCount * 8);
        job.W = weight.Pointer;
        job.Bias = bias == null ? null : bias.F32Pointer;
        job.Y = output.F32Pointer;
        job.Out = outFeatures;
        job.TileRows = Math.Max(1, Math.Min(tileRows, perThread));
        job.RowBytes = rowBytes;
        job.Groups = 0;

        // The Q8_0 AMX kernel reads grouped weights only; weights left in the file's layout take the vector kernels.
        var amx = job.Amx != null && (weight.DType != DType.Q8_0 || weight.Q8_0Grouped);
        var groups = amx || weight.Q8_0Grouped ? outFeatures / AmxTile : 0;
        if (groups > 0)
        {
            var bf16 = amx && job.AmxBf16 != null && weight.DType == DType.Q8_0;
            job.AmxProducts += amx ? 1 : 0;
            job.AmxBf16Products += bf16 ? 1 : 0;
            job.GroupsOnAmx = amx;
            job.GroupsPerItem = GroupsPerItem(groups, pool.ThreadCount);
            if (bf16)
            {
                // The bf16 kernel works on pairs of groups (each loaded tile feeds two products).
                job.GroupsPerItem = (job.GroupsPerItem + 1) & ~1;
            }

            job.GroupItems = (groups + job.GroupsPerItem - 1) / job.GroupsPerItem;
            job.Groups = groups;
            pool.Run(job, job.GroupItems + (outFeatures % AmxTile == 0 ? 0 : 1));
            return;
        }

        pool.Run(job, (outFeatures + job.TileRows - 1) / job.TileRows);
    }

    /// <summary>
    /// The activations of an AMX product in tile layout (Q8_0: <see cref="PackAmxQ8_0"/>): for each 16-token tile and
    /// block of 32, eight rows of 64 bytes, row k holding values 4k..4k+3 of each of the 16 tokens side by side (the B
    /// operand of <c>tdpbssd</c>/<c>tdpbusd</c>), zeros for the tokens past the last; the activation scales [tile][scale
    /// block][16 tokens]; the block sums [tile][block][16 tokens] (of 32 values; 16 for Q6_K) for the offsets or minimums.
    /// </summary>
    private static void PackAmxActivations(Job job, CpuAmx.Kernel kernel, int workers, int tokens, int inFeatures)
    {
        var blocks = inFeatures / 32;
        if (job.WeightType == DType.Q8_0)
        {
            PackAmxQ8_0(job, kernel, workers, tokens, inFeatures);
            return;
        }

        var sumBlocks = inFeatures / kernel.SumValues;
        var scaleBlocks = inFeatures / ActivationBlock(job.WeightType);
        var tiles = (tokens + AmxTile - 1) / AmxTile;
        job.EnsureAmx((long)tiles * AmxTile * inFeatures, workers, kernel.ScratchBytes(inFeatures));
        job.AmxTokenTiles = tiles;
        var packed = (int*)job.AmxX;
        for (var tile = 0; tile < tiles; tile++)
        {
            for (var t = 0; t < AmxTile; t++)
            {
                var token = (tile * AmxTile) + t;
                var quads = token < tokens ? (int*)(job.Qx + ((long)token * inFeatures)) : null;
                for (var b = 0; b < blocks; b++)
                {
                    // [tile][block][quad k][token t]: one int holds four consecutive int8 values.
                    var destination = packed + ((((long)tile * blocks) + b) * 8 * AmxTile) + t;
                    for (var k = 0; k < 8; k++)
                    {
                        destination[k * AmxTile] = quads == null ? 0 : quads[(b * 8) + k];
                    }

                }

                // Activation sums of each block: the sums of 16 as they are (Q6_K), or in pairs (blocks of 32).
                var sums16 = job.Sx + ((long)token * (inFeatures / 16));
                for (var b = 0; b < sumBlocks; b++)
                {
                    var sum = quads == null ? 0f : sumBlocks == blocks ? sums16[2 * b] + sums16[(2 * b) + 1] : sums16[b];
                    job.AmxSums[((((long)tile * sumBlocks) + b) * AmxTile) + t] = sum;
                }

                for (var s = 0; s < scaleBlocks; s++)
                {
                    job.AmxScales[((((long)tile * scaleBlocks) + s) * AmxTile) + t] = quads == null ? 0f : job.Dx[((long)token * scaleBlocks) + s];
                }
            }
        }
    }

    /// <summary>
    /// The activations of a Q8_0 product on the bf16 kernel: x rounded to nearest even bf16, [token tile][block of
    /// 32][16 tokens][32] (the A tile of a block, 1 KiB), zero past the last token.
    /// </summary>
    private static void PackAmxBf16(Job job, int workers, float* x, int tokens, int inFeatures)
    {
        var blocks = inFeatures / 32;
        var tiles = (tokens + AmxTile - 1) / AmxTile;

        // Two bytes a value in AmxX.
        job.EnsureAmx(2L * tiles * AmxTile * inFeatures, workers, CpuAmx.Bf16Kernel.ScratchBytes(inFeatures));
        job.AmxTokenTiles = tiles;
        var packed = (ushort*)job.AmxX;
        var half = Vector512.Create(0x7FFFu);
        var one = Vector512.Create(1u);
        for (var tile = 0; tile < tiles; tile++)
        {
            for (var t = 0; t < AmxTile; t++)
            {
                var token = (tile * AmxTile) + t;
                var source = (uint*)(x + ((long)token * inFeatures));
                var destination = packed + ((long)tile * blocks * 512) + (t * 32);
                for (var b = 0; b < blocks; b++, destination += 512)
                {
                    if (token >= tokens)
                    {
                        Vector512<ushort>.Zero.Store(destination);
                        continue;
                    }

                    var low = Vector512.Load(source + (b * 32));
                    var high = Vector512.Load(source + (b * 32) + 16);
                    low = (low + half + ((low >> 16) & one)) >> 16;
                    high = (high + half + ((high >> 16) & one)) >> 16;
                    Vector512.Narrow(low, high).Store(destination);
                }
            }
        }
    }

    /// <summary>
    /// The activations of a Q8_0 AMX product, whose weights are the B tiles (<see cref="CpuQ8_0Groups"/>): the int8
    /// activations as quantised, [token tile][block][16 tokens][32] (the A tile of a block, 512 contiguous bytes), zero
    /// past the last token; their scales and 128·Σx per block [tile][block][16 tokens].
    /// </summary>
    private static void PackAmxQ8_0(Job job, CpuAmx.Kernel kernel, int workers, int tokens, int inFeatures)
    {
        var blocks = inFeatures / 32;
        var tiles = (tokens + AmxTile - 1) / AmxTile;
        job.EnsureAmx((long)tiles * AmxTile * inFeatures, workers, kernel.ScratchBytes(inFeatures));
        job.AmxTokenTiles = tiles;
        for (var tile = 0; tile < tiles; tile++)
        {
            for (var t = 0; t < AmxTile; t++)
            {
                var token = (tile * AmxTile) + t;
                for (var b = 0; b < blocks; b++)
                {
                    var at = ((((long)tile * blocks) + b) * AmxTile) + t;
                    var source = ((long)token * blocks) + b;
                    var destination = job.AmxX + (at * 32);
                    if (token < tokens)
                    {
                        Vector256.Load(job.Qx + (source * 32)).Store(destination);
                        job.AmxScales[at] = job.Dx[source];
                        job.AmxSums[at] = job.Offsets[source];
                    }
                    else
                    {
                        Vector256<sbyte>.Zero.Store(destination);
                        job.AmxScales[at] = 0f;
                        job.AmxSums[at] = 0f;
                    }
                }
            }
        }
    }

    /// <summary>
    /// The inputs of <see cref="OctetQ8_0"/> for the first <paramref name="tokens"/> tokens (a multiple of eight):
    /// activations offset to unsigned bytes and their scales regrouped by octet of tokens.
    /// </summary>
    private static void OffsetAndRegroup(Job job, int tokens, int inFeatures)
    {
        var count = (long)tokens * inFeatures;
        var offset = Vector256.Create((byte)0x80);
        long i = 0;
        for (; i + 32 <= count; i += 32)
        {
            (Vector256.Load((byte*)job.Qx + i) ^ offset).Store(job.OffsetQx + i);
        }

        for (; i < count; i++)
        {
            job.OffsetQx[i] = (byte)(job.Qx[i] ^ unchecked((sbyte)0x80));
        }

        RegroupScales(job.Dx, job.OctetScales, tokens, inFeatures / 32, TokenOctet);
    }

    /// <summary>
    /// Per-32 activation scales [token][block] regrouped [token group][block][group] for the whole groups of
    /// <paramref name="group"/> tokens, so that a kernel reads a block's scales for all the group's tokens as one vector.
    /// </summary>
    private static void RegroupScales(float* scales, float* regrouped, int tokens, int blocks, int group)
    {
        for (var g = 0; g < tokens / group; g++)
        {
            var destination = regrouped + ((long)g * blocks * group);
            for (var k = 0; k < group; k++)
            {
                var tokenScales = scales + ((long)((g * group) + k) * blocks);
                for (var b = 0; b < blocks; b++)
                {
                    destination[(b * group) + k] = tokenScales[b];
                }
            }
        }
    }

    /// <summary>
    /// Symmetric int8 quantisation of x in blocks of <paramref name="block"/> values (32 for Q8_0/Q4_0 weights, whose
    /// scales change every 32 values; 256 for the K-quants, whose integer products are then summed over a whole
    /// super-block before the one conversion to fp32): d = max|x| / 127, q = round-half-even(x / d) in [-127, 127]
    /// (never -128, so sign tricks stay exact), plus the sum of every 16 quantised values.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    internal static void QuantizeActivations(float* x, long count, int block, sbyte* qx, float* dx, short* sx)
    {
        for (long b = 0; b < count / block; b++)
        {
            var xb = x + (b * block);
            var q = qx + (b * block);
            var sums = sx + (b * block / 16);
            if (Vector256.IsHardwareAccelerated && Avx2.IsSupported)
            {
                var m = Vector256<float>.Zero;
                for (var i = 0; i < block; i += 8)
                {
                    m = Vector256.Max(m, Vector256.Abs(Vector256.Load(xb + i)));
                }

                var amax = Vector128.Max(m.GetLower(), m.GetUpper());
                amax = Vector128.Max(amax, Vector128.Shuffle(amax, Vector128.Create(2, 3, 0, 1)));
                amax = Vector128.Max(amax, Vector128.Shuffle(amax, Vector128.Create(1, 0, 3, 2)));
                var d = amax.ToScalar() / 127f;
                dx[b] = d;
                var id = Vector256.Create(d != 0 ? 1f / d : 0f);
                for (var i = 0; i < block; i += 16)
                {
                    // cvtps2dq rounds half to even, as MathF.Round does.
                    var lo = Avx.ConvertToVector256Int32(Vector256.Load(xb + i) * id);
                    var hi = Avx.ConvertToVector256Int32(Vector256.Load(xb + i + 8) * id);
                    var narrowed = Vector256.Narrow(lo, hi);
                    Vector128.Narrow(narrowed.GetLower(), narrowed.GetUpper()).Store(q + i);
                    sums[i / 16] = (short)Vector256.Sum(lo + hi);
                }
            }
            else
            {
                var amax = 0f;
                for (var i = 0; i < block; i++)
                {
                    amax = MathF.Max(amax, MathF.Abs(xb[i]));
                }

                var d = amax / 127f;
                var id = d != 0 ? 1f / d : 0f;
                dx[b] = d;
                for (var i = 0; i < block; i += 16)
                {
                    var sum = 0;
                    for (var j = i; j < i + 16; j++)
                    {
                        var v = (int)MathF.Round(xb[j] * id);
                        q[j] = (sbyte)v;
                        sum += v;
                    }

                    sums[i / 16] = (short)sum;
                }
            }
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> Dot<TVnni>(Vector256<byte> unsignedLevels, Vector256<sbyte> x)
        where TVnni : struct, IFlag
    {
        // Lane i of the result holds the sum over values 4i..4i+3, for both instruction sequences.
        if (TVnni.Value)
        {
            return AvxVnni.MultiplyWideningAndAdd(Vector256<int>.Zero, unsignedLevels, x);
        }

        return Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(unsignedLevels, x), Vector256.Create((short)1));
    }

    /// <summary>
    /// sum + Σ levels·x·scale in integers: pairs of u8·s8 products to int16 (at most 63·127·2, no saturation), then
    /// times the int16 scales and pairs summed to int32 (<c>vpdpwssd</c> on AVX-VNNI).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> ScaledDot<TVnni>(Vector256<int> sum, Vector256<byte> unsignedLevels, Vector256<sbyte> x, Vector256<short> scales)
        where TVnni : struct, IFlag
    {
        var pairs = Avx2.MultiplyAddAdjacent(unsignedLevels, x);
        return TVnni.Value ? AvxVnni.MultiplyWideningAndAdd(sum, pairs, scales) : sum + Avx2.MultiplyAddAdjacent(pairs, scales);
    }

    private static float Sum(Vector256<float> v) => Vector256.Sum(v);

    /// <summary>
    /// 64 values of a Q4_K/Q5_K super-block: 32 bytes of 4-bit levels (low nibbles: values 0-31 with scale
    /// <paramref name="pickLo"/>, high nibbles: values 32-63 with <paramref name="pickHi"/>), for Q5_K plus the fifth
    /// bits <paramref name="bit"/> and bit+1 of qh.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> Q45KPair<TVnni, TFiveBit>(Vector256<int> sumi, byte* qs, sbyte* y, Vector256<byte> scales, Vector256<byte> pickLo, Vector256<byte> pickHi, Vector256<byte> qh, int bit)
        where TVnni : struct, IFlag
        where TFiveBit : struct, IFlag
    {
        var (lo, hi) = Levels45K<TFiveBit>(qs, qh, bit);
        sumi = ScaledDot<TVnni>(sumi, lo, Vector256.Load(y), Avx2.Shuffle(scales, pickLo).AsInt16());
        return ScaledDot<TVnni>(sumi, hi, Vector256.Load(y + 32), Avx2.Shuffle(scales, pickHi).AsInt16());
    }

    /// <summary>
    /// One half (128 values) of a Q6_K super-block: ql [64 bytes] holds the low four bits, qh [32 bytes] the top two; each 32 levels are dotted with their activations and their two per-16 scales (int16 lanes 0-7 of a
    /// product come from values 0-15, lanes 8-15 from values 16-31), picked out of the 16 scale bytes by a shuffle.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> Q6KHalf<TVnni>(Vector256<int> sumi, byte* ql, byte* qhBytes, sbyte* y, Vector128<sbyte> scales, Vector128<sbyte> pickA, Vector128<sbyte> pickB, Vector128<sbyte> pickC, Vector128<sbyte> pickD)
        where TVnni : struct, IFlag
    {
        var (l0, l1, l2, l3) = Levels6K(ql, qhBytes);
        sumi = ScaledDot<TVnni>(sumi, l0, Vector256.Load(y), Avx2.ConvertToVector256Int16(Ssse3.Shuffle(scales, pickA)));
        sumi = ScaledDot<TVnni>(sumi, l1, Vector256.Load(y + 32), Avx2.ConvertToVector256Int16(Ssse3.Shuffle(scales, pickB)));
        sumi = ScaledDot<TVnni>(sumi, l2, Vector256.Load(y + 64), Avx2.ConvertToVector256Int16(Ssse3.Shuffle(scales, pickC)));
        return ScaledDot<TVnni>(sumi, l3, Vector256.Load(y + 96), Avx2.ConvertToVector256Int16(Ssse3.Shuffle(scales, pickD)));
    }

    /// <summary>
    /// The 6-bit levels (0..63) of one half (128 values) of a Q6_K super-block, in four groups of 32: low four bits
    /// from ql [64 bytes], top two from qh [32 bytes].
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static (Vector256<byte> L0, Vector256<byte> L1, Vector256<byte> L2, Vector256<byte> L3) Levels6K(byte* ql, byte* qhBytes)
    {
        var low = Vector256.Create((byte)0x0F);
        var high = Vector256.Create((byte)0x30);
        var qlA = Vector256.Load(ql);
        var qlB = Vector256.Load(ql + 32);
        var qh = Vector256.Load(qhBytes);
        return (
            (qlA & low) | (Vector256.ShiftLeft(qh.AsUInt16(), 4).AsByte() & high),
            (qlB & low) | (Vector256.ShiftLeft(qh.AsUInt16(), 2).AsByte() & high),
            (Vector256.ShiftRightLogical(qlA.AsUInt16(), 4).AsByte() & low) | (qh & high),
            (Vector256.ShiftRightLogical(qlB.AsUInt16(), 4).AsByte() & low) | (Vector256.ShiftRightLogical(qh.AsUInt16(), 2).AsByte() & high));
    }

    /// <summary>The half at p, through the conversion table (passed in so loops hold it in a register).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float Half(float* table, byte* p) => table[*(ushort*)p];

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void RowQ8_0<TVnni>(byte* w, int blocks, sbyte* qx, float* dx, int n, int tn, Span<float> results)
        where TVnni : struct, IFlag
    {
        var halves = CpuSimd.HalfTable;
        var nb = n / 32;
        for (var k = 0; k < tn; k++)
        {
            // Two accumulators: one FMA chain would wait on its own latency every block.
            Vector256<float> a0 = default, a1 = default;
            var xk = qx + ((long)k * n);
            var dk = dx + ((long)k * nb);
            var b = 0;
            for (; b + 1 < blocks; b += 2)
            {
                var wb = w + (b * 34);
                CpuSimd.PrefetchWeights(wb);
                var w0 = Vector256.Load((sbyte*)(wb + 2));
                var w1 = Vector256.Load((sbyte*)(wb + 36));
                var p0 = Dot<TVnni>(Avx2.Abs(w0), Avx2.Sign(Vector256.Load(xk + (b * 32)), w0));
                var p1 = Dot<TVnni>(Avx2.Abs(w1), Avx2.Sign(Vector256.Load(xk + (b * 32) + 32), w1));
                a0 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(p0), Vector256.Create(Half(halves, wb) * dk[b]), a0);
                a1 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(p1), Vector256.Create(Half(halves, wb + 34) * dk[b + 1]), a1);
            }

            if (b < blocks)
            {
                var wb = w + (b * 34);
                var w0 = Vector256.Load((sbyte*)(wb + 2));
                var p0 = Dot<TVnni>(Avx2.Abs(w0), Avx2.Sign(Vector256.Load(xk + (b * 32)), w0));
                a0 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(p0), Vector256.Create(Half(halves, wb) * dk[b]), a0);
            }

            results[k] = Sum(a0 + a1);
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void RowQ4_0<TVnni>(byte* w, int blocks, sbyte* qx, float* dx, short* sx, int n, int tn, Span<float> results)
        where TVnni : struct, IFlag
    {
        var halves = CpuSimd.HalfTable;
        var nb = n / 32;
        var mask = Vector128.Create((byte)0x0F);
        for (var k = 0; k < tn; k++)
        {
            Vector256<float> a0 = default, a1 = default;
            var offset = 0f;
            var xk = qx + ((long)k * n);
            var dk = dx + ((long)k * nb);
            var sk = sx + ((long)k * (n / 16));
            for (var b = 0; b < blocks; b++)
            {
                var wb = w + (b * 18);
                CpuSimd.PrefetchWeights(wb);
                var q = Vector128.Load(wb + 2);
                var levels = Vector256.Create(q & mask, Vector128.ShiftRightLogical(q.AsUInt16(), 4).AsByte() & mask);
                var scale = Half(halves, wb) * dk[b];
                var product = Avx.ConvertToVector256Single(Dot<TVnni>(levels, Vector256.Load(xk + (b * 32))));
                if ((b & 1) == 0)
                {
                    a0 = Fma.MultiplyAdd(product, Vector256.Create(scale), a0);
                }
                else
                {
                    a1 = Fma.MultiplyAdd(product, Vector256.Create(scale), a1);
                }

                offset += scale * 8 * (sk[2 * b] + sk[(2 * b) + 1]);
            }

            results[k] = Sum(a0 + a1) - offset;
        }
    }

    /// <summary>
    /// The 32 levels of a Q4_1/Q5_0/Q5_1 block in value order (low nibbles, then high): unsigned 0..15 or 0..31 for
    /// Q4_1/Q5_1; for Q5_0 signed −16..15 (the offset of 16 taken off by setting the top four bits of the values whose
    /// fifth bit is clear), so its products need no activation sums, as Q8_0's. The fifth bit of value v is bit v of
    /// the u32 qh: byte v of the shuffle holds qh byte v / 8 (vpshufb picks within each 128-bit lane, and the
    /// broadcast puts all four bytes in both), the mask then bit v % 8.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<byte> Levels4Or5<TFiveBit, TMin>(byte* block)
        where TFiveBit : struct, IFlag
        where TMin : struct, IFlag
    {
        var qsOffset = (TMin.Value ? 4 : 2) + (TFiveBit.Value ? 4 : 0);
        var mask = Vector128.Create((byte)0x0F);
        var q = Vector128.Load(block + qsOffset);
        var levels = Vector256.Create(q & mask, Vector128.ShiftRightLogical(q.AsUInt16(), 4).AsByte() & mask);
        if (TFiveBit.Value)
        {
            var spread = Vector256.Create((byte)0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3);
            var bitMask = Vector256.Create(0x8040201008040201UL).AsByte();
            var qh = Vector256.Create(*(uint*)(block + (TMin.Value ? 4 : 2))).AsByte();
            var set = Vector256.Equals(Avx2.Shuffle(qh, spread) & bitMask, bitMask);
            levels |= TMin.Value ? set & Vector256.Create((byte)0x10) : Vector256.AndNot(Vector256.Create((byte)0xF0), set);
        }

        return levels;
    }

    /// <summary>Σ over a block of level · activation: unsigned levels directly, Q5_0's signed ones through the sign trick of Q8_0.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> Dot4Or5<TVnni, TMin>(Vector256<byte> levels, Vector256<sbyte> x)
        where TVnni : struct, IFlag
        where TMin : struct, IFlag
    {
        if (TMin.Value)
        {
            return Dot<TVnni>(levels, x);
        }

        var signed = levels.AsSByte();
        return Dot<TVnni>(Avx2.Abs(signed), Avx2.Sign(x, signed));
    }

    /// <summary>
    /// Q4_1, Q5_0 and Q5_1 (32-value blocks like Q4_0) against activations quantised per 32: the levels dotted with
    /// the int8 activations in integers (see <see cref="Levels4Or5"/>), scaled per block in fp32; the Q4_1/Q5_1
    /// minimum comes in through the activations' block sums (bx: scale times sum, as ggml's q8_1 carries).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void RowQ4Q5<TVnni, TFiveBit, TMin>(byte* w, int blocks, sbyte* qx, float* dx, float* bx, int n, int tn, Span<float> results)
        where TVnni : struct, IFlag
        where TFiveBit : struct, IFlag
        where TMin : struct, IFlag
    {
        var halves = CpuSimd.HalfTable;
        var nb = n / 32;

        // Q4_1: d, m, qs (20 bytes); Q5_0: d, qh, qs (22); Q5_1: d, m, qh, qs (24).
        var blockBytes = (TMin.Value ? 4 : 2) + (TFiveBit.Value ? 4 : 0) + 16;
        for (var k = 0; k < tn; k++)
        {
            // Two accumulators: one FMA chain would wait on its own latency every block.
            Vector256<float> a0 = default, a1 = default;
            var minimums = 0f;
            var xk = qx + ((long)k * n);
            var dk = dx + ((long)k * nb);
            var bk = bx + ((long)k * nb);
            var b = 0;
            for (; b + 1 < blocks; b += 2)
            {
                var wb = w + (b * blockBytes);
                CpuSimd.PrefetchWeights(wb);
                var p0 = Dot4Or5<TVnni, TMin>(Levels4Or5<TFiveBit, TMin>(wb), Vector256.Load(xk + (b * 32)));
                var p1 = Dot4Or5<TVnni, TMin>(Levels4Or5<TFiveBit, TMin>(wb + blockBytes), Vector256.Load(xk + (b * 32) + 32));
                a0 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(p0), Vector256.Create(Half(halves, wb) * dk[b]), a0);
                a1 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(p1), Vector256.Create(Half(halves, wb + blockBytes) * dk[b + 1]), a1);
                if (TMin.Value)
                {
                    minimums += (Half(halves, wb + 2) * bk[b]) + (Half(halves, wb + blockBytes + 2) * bk[b + 1]);
                }
            }

            if (b < blocks)
            {
                var wb = w + (b * blockBytes);
                var p0 = Dot4Or5<TVnni, TMin>(Levels4Or5<TFiveBit, TMin>(wb), Vector256.Load(xk + (b * 32)));
                a0 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(p0), Vector256.Create(Half(halves, wb) * dk[b]), a0);
                if (TMin.Value)
                {
                    minimums += Half(halves, wb + 2) * bk[b];
                }
            }

            results[k] = Sum(a0 + a1) + minimums;
        }
    }

    /// <summary>Four tokens against one Q4_1/Q5_0/Q5_1 row: each block's levels unpacked and its scales read once.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void GroupQ4Q5<TVnni, TFiveBit, TMin>(byte* w, int blocks, sbyte* qx, float* groupScales, float* bx, int n, Span<float> results)
        where TVnni : struct, IFlag
        where TFiveBit : struct, IFlag
        where TMin : struct, IFlag
    {
        var halves = CpuSimd.HalfTable;
        var nb = n / 32;
        var blockBytes = (TMin.Value ? 4 : 2) + (TFiveBit.Value ? 4 : 0) + 16;
        Vector256<int> lane0 = Vector256.Create(0), lane1 = Vector256.Create(1), lane2 = Vector256.Create(2), lane3 = Vector256.Create(3);
        Vector256<float> a0 = default, a1 = default, a2 = default, a3 = default;
        float m0 = 0, m1 = 0, m2 = 0, m3 = 0;
        for (var b = 0; b < blocks; b++)
        {
            var wb = w + (b * blockBytes);
            var levels = Levels4Or5<TFiveBit, TMin>(wb);

            // The block's four token scales times the weight scale at once (see GroupSigned).
            var scales = (Vector128.Load(groupScales + (b * TokenGroup)) * Vector128.Create(Half(halves, wb))).ToVector256Unsafe();
            var x = qx + (b * 32);
            a0 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(Dot4Or5<TVnni, TMin>(levels, Vector256.Load(x))), Avx2.PermuteVar8x32(scales, lane0), a0);
            a1 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(Dot4Or5<TVnni, TMin>(levels, Vector256.Load(x + n))), Avx2.PermuteVar8x32(scales, lane1), a1);
            a2 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(Dot4Or5<TVnni, TMin>(levels, Vector256.Load(x + (2 * n)))), Avx2.PermuteVar8x32(scales, lane2), a2);
            a3 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(Dot4Or5<TVnni, TMin>(levels, Vector256.Load(x + (3 * n)))), Avx2.PermuteVar8x32(scales, lane3), a3);
            if (TMin.Value)
            {
                var m = Half(halves, wb + 2);
                var s = bx + b;
                m0 += m * s[0];
                m1 += m * s[nb];
                m2 += m * s[2 * nb];
                m3 += m * s[3 * nb];
            }
        }

        results[0] = Sum(a0) + m0;
        results[1] = Sum(a1) + m1;
        results[2] = Sum(a2) + m2;
        results[3] = Sum(a3) + m3;
    }

    /// <summary>
    /// Q4_K / Q5_K against activations quantised per 256 (one scale per super-block): the eight 6-bit scales multiply
    /// the integer products in int16, so each super-block is one int32 vector converted to fp32 once; the 6-bit
    /// minimums come off through the activations' sums of 16.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void RowQ45K<TVnni, TFiveBit>(byte* w, int superBlocks, sbyte* qx, float* dx, short* sx, int n, int tn, Span<float> results)
        where TVnni : struct, IFlag
        where TFiveBit : struct, IFlag
    {
        var halves = CpuSimd.HalfTable;
        var fiveBit = TFiveBit.Value;
        // Byte shuffles that spread 16-bit scale j over all sixteen lanes (see WideScales).
        Vector256<byte> pick0 = ScalePick(0), pick1 = ScalePick(1), pick2 = ScalePick(2), pick3 = ScalePick(3);
        Vector256<byte> pick4 = ScalePick(4), pick5 = ScalePick(5), pick6 = ScalePick(6), pick7 = ScalePick(7);
        var blockBytes = fiveBit ? 176 : 144;
        var perToken = n / 256;
        for (var k = 0; k < tn; k++)
        {
            // a0: the scaled products; a1: the minimums' share, subtracted at the end.
            Vector256<float> a0 = default, a1 = default;
            var xk = qx + ((long)k * n);
            var dk = dx + ((long)k * perToken);
            var sk = sx + ((long)k * (n / 16));
            for (var s = 0; s < superBlocks; s++)
            {
                var blk = w + (s * blockBytes);
                CpuSimd.PrefetchWeights(blk);
                CpuSimd.PrefetchWeights(blk + 64);
                CpuSimd.PrefetchWeights(blk + 128);
                var (sc, mn) = ScalesAndMinimums(blk);
                var scaleBytes = WideScales(sc);

                var qs = fiveBit ? blk + 48 : blk + 16;
                var qh = fiveBit ? Vector256.Load(blk + 16) : default;
                var y = xk + (s * 256);
                var sumi = Vector256<int>.Zero;
                sumi = Q45KPair<TVnni, TFiveBit>(sumi, qs, y, scaleBytes, pick0, pick1, qh, 0);
                sumi = Q45KPair<TVnni, TFiveBit>(sumi, qs + 32, y + 64, scaleBytes, pick2, pick3, qh, 2);
                sumi = Q45KPair<TVnni, TFiveBit>(sumi, qs + 64, y + 128, scaleBytes, pick4, pick5, qh, 4);
                sumi = Q45KPair<TVnni, TFiveBit>(sumi, qs + 96, y + 192, scaleBytes, pick6, pick7, qh, 6);

                // Σ_j min_j · (sum of the activations of block j), lane j holding block j: the minimums doubled
                // (one per sum of 16) and multiplied pairwise with the 16 sums.
                var minBytes = Vector128.CreateScalar(mn).AsByte();
                var minPairs = Avx2.ConvertToVector256Int16(Sse2.UnpackLow(minBytes, minBytes));
                var minDot = Avx2.MultiplyAddAdjacent(Vector256.Load(sk + (s * 16)), minPairs);

                var dy = dk[s];
                a0 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(sumi), Vector256.Create(Half(halves, blk) * dy), a0);
                a1 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(minDot), Vector256.Create(Half(halves, blk + 2) * dy), a1);
            }

            results[k] = Sum(a0 - a1);
        }
    }

    /// <summary>
    /// Q6_K against activations quantised per 256: six-bit levels (0..63) times int8 activations in pairs, then the
    /// signed per-16 scales in int16, one conversion to fp32 per super-block; the levels' offset of 32 comes off
    /// through the activations' sums of 16.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void RowQ6K<TVnni>(byte* w, int superBlocks, sbyte* qx, float* dx, short* sx, int n, int tn, Span<float> results)
        where TVnni : struct, IFlag
    {
        var halves = CpuSimd.HalfTable;
        // Byte shuffles that spread scales (2g, 2g+1) of each half super-block over the two 8-lane halves.
        var pick0 = Vector128.Create(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1).AsSByte();
        Vector128<sbyte> pick1 = pick0 + Vector128.Create((sbyte)2), pick2 = pick0 + Vector128.Create((sbyte)4), pick3 = pick0 + Vector128.Create((sbyte)6);
        Vector128<sbyte> pick4 = pick0 + Vector128.Create((sbyte)8), pick5 = pick0 + Vector128.Create((sbyte)10), pick6 = pick0 + Vector128.Create((sbyte)12), pick7 = pick0 + Vector128.Create((sbyte)14);
        var perToken = n / 256;
        for (var k = 0; k < tn; k++)
        {
            Vector256<float> a0 = default, a1 = default;
            var xk = qx + ((long)k * n);
            var dk = dx + ((long)k * perToken);
            var sk = sx + ((long)k * (n / 16));
            for (var s = 0; s < superBlocks; s++)
            {
                var blk = w + (s * 210);
                CpuSimd.PrefetchWeights(blk);
                CpuSimd.PrefetchWeights(blk + 64);
                CpuSimd.PrefetchWeights(blk + 128);
                CpuSimd.PrefetchWeights(blk + 192);
                var scaleBytes = Vector128.Load((sbyte*)(blk + 192));
                var y = xk + (s * 256);

                // The levels' offset of 32, folded into the integer sum: Σ_j scale_j · 32 · (sum of activations j).
                var sumi = -Vector256.ShiftLeft(Avx2.MultiplyAddAdjacent(Vector256.Load(sk + (s * 16)), Avx2.ConvertToVector256Int16(scaleBytes)), 5);
                sumi = Q6KHalf<TVnni>(sumi, blk, blk + 128, y, scaleBytes, pick0, pick1, pick2, pick3);
                sumi = Q6KHalf<TVnni>(sumi, blk + 64, blk + 160, y + 128, scaleBytes, pick4, pick5, pick6, pick7);

                var ddy = Vector256.Create(Half(halves, blk + 208) * dk[s]);
                if ((s & 1) == 0)
                {
                    a0 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(sumi), ddy, a0);
                }
                else
                {
                    a1 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(sumi), ddy, a1);
                }
            }

            results[k] = Sum(a0 + a1);
        }
    }

    /// <summary>
    /// Four tokens against one Q8_0 row (or Q4_0, whose nibbles less 8 are its signed levels): each block loaded, its
    /// sign split off and its scale read once; the four token scales of the block come as one vector
    /// (<see cref="Job.GroupScales"/>), multiplied by the weight scale together and spread to each token's lanes by
    /// one permute.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void GroupSigned<TVnni, TFromNibbles>(byte* w, int blocks, sbyte* qx, float* groupScales, int n, Span<float> results)
        where TVnni : struct, IFlag
        where TFromNibbles : struct, IFlag
    {
        var blockBytes = TFromNibbles.Value ? 18 : 34;
        var nibble = Vector128.Create((byte)0x0F);
        var halves = CpuSimd.HalfTable;
        Vector256<int> lane0 = Vector256.Create(0), lane1 = Vector256.Create(1), lane2 = Vector256.Create(2), lane3 = Vector256.Create(3);
        Vector256<float> a0 = default, a1 = default, a2 = default, a3 = default;
        for (var b = 0; b < blocks; b++)
        {
            var wb = w + (b * blockBytes);
            Vector256<sbyte> wv;
            if (TFromNibbles.Value)
            {
                var q = Vector128.Load(wb + 2);
                wv = Vector256.Create(q & nibble, Vector128.ShiftRightLogical(q.AsUInt16(), 4).AsByte() & nibble).AsSByte() - Vector256.Create((sbyte)8);
            }
            else
            {
                wv = Vector256.Load((sbyte*)(wb + 2));
            }

            var aw = Avx2.Abs(wv);
            var scales = (Vector128.Load(groupScales + (b * TokenGroup)) * Vector128.Create(Half(halves, wb))).ToVector256Unsafe();
            var x = qx + (b * 32);
            a0 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(Dot<TVnni>(aw, Avx2.Sign(Vector256.Load(x), wv))), Avx2.PermuteVar8x32(scales, lane0), a0);
            a1 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(Dot<TVnni>(aw, Avx2.Sign(Vector256.Load(x + n), wv))), Avx2.PermuteVar8x32(scales, lane1), a1);
            a2 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(Dot<TVnni>(aw, Avx2.Sign(Vector256.Load(x + (2 * n)), wv))), Avx2.PermuteVar8x32(scales, lane2), a2);
            a3 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(Dot<TVnni>(aw, Avx2.Sign(Vector256.Load(x + (3 * n)), wv))), Avx2.PermuteVar8x32(scales, lane3), a3);
        }

        results[0] = Sum(a0);
        results[1] = Sum(a1);
        results[2] = Sum(a2);
        results[3] = Sum(a3);
    }

    /// <summary>
    /// Eight tokens against one Q8_0 row, the prefill kernel on AVX-VNNI. <c>vpdpbusd</c> multiplies unsigned by signed
    /// bytes, so the activations come offset by 128 (<paramref name="offsetQx"/>, x + 128 as unsigned) and each
    /// block's integer sums start from −128·Σw (one more <c>vpdpbusd</c> a block, shared by the eight tokens): a token
    /// then costs one <c>vpdpbusd</c>, one conversion and one FMA per block, where the sign trick of
    /// <see cref="GroupSigned"/> adds a sign and a permute. The eight weight × token scales of a block are multiplied
    /// in one vector and stored, so each token's FMA reads its scale as a broadcast load instead of a shuffle.
    /// </summary>
    /// <param name="offsetQx">The octet's activations, [8 tokens, n] bytes of x + 128.</param>
    /// <param name="octetScales">The octet's activation scales, [blocks][8 tokens].</param>
    /// <param name="scaleProducts">Eight floats of scratch for the scale products of the current block.</param>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void OctetQ8_0(byte* w, int blocks, byte* offsetQx, float* octetScales, int n, float* scaleProducts, Span<float> results)
    {
        var halves = CpuSimd.HalfTable;
        var offset = Vector256.Create((byte)0x80);
        Vector256<float> a0 = default, a1 = default, a2 = default, a3 = default, a4 = default, a5 = default, a6 = default, a7 = default;
        for (var b = 0; b < blocks; b++)
        {
            var wb = w + (b * 34);
            var wv = Vector256.Load((sbyte*)(wb + 2));

            // start: 8 lanes, lane i = −128 · (w[4i] + … + w[4i+3]), so start + Σ (x + 128)·w = Σ x·w per lane.
            var start = Vector256<int>.Zero - AvxVnni.MultiplyWideningAndAdd(Vector256<int>.Zero, offset, wv);
            (Vector256.Load(octetScales + (b * TokenOctet)) * Vector256.Create(Half(halves, wb))).Store(scaleProducts);
            var x = offsetQx + (b * 32);
            a0 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(AvxVnni.MultiplyWideningAndAdd(start, Vector256.Load(x), wv)), Vector256.Create(scaleProducts[0]), a0);
            a1 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(AvxVnni.MultiplyWideningAndAdd(start, Vector256.Load(x + n), wv)), Vector256.Create(scaleProducts[1]), a1);
            a2 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(AvxVnni.MultiplyWideningAndAdd(start, Vector256.Load(x + (2 * n)), wv)), Vector256.Create(scaleProducts[2]), a2);
            a3 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(AvxVnni.MultiplyWideningAndAdd(start, Vector256.Load(x + (3 * n)), wv)), Vector256.Create(scaleProducts[3]), a3);
            a4 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(AvxVnni.MultiplyWideningAndAdd(start, Vector256.Load(x + (4 * n)), wv)), Vector256.Create(scaleProducts[4]), a4);
            a5 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(AvxVnni.MultiplyWideningAndAdd(start, Vector256.Load(x + (5 * n)), wv)), Vector256.Create(scaleProducts[5]), a5);
            a6 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(AvxVnni.MultiplyWideningAndAdd(start, Vector256.Load(x + (6 * n)), wv)), Vector256.Create(scaleProducts[6]), a6);
            a7 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(AvxVnni.MultiplyWideningAndAdd(start, Vector256.Load(x + (7 * n)), wv)), Vector256.Create(scaleProducts[7]), a7);
        }

        results[0] = Sum(a0);
        results[1] = Sum(a1);
        results[2] = Sum(a2);
        results[3] = Sum(a3);
        results[4] = Sum(a4);
        results[5] = Sum(a5);
        results[6] = Sum(a6);
        results[7] = Sum(a7);
    }

    /// <summary>
    /// Four tokens against one Q4_K/Q5_K row: per super-block the levels and the scales spread to int16 lanes are
    /// unpacked once into sixteen registers, then dotted with every token.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void GroupQ45K<TVnni, TFiveBit>(byte* w, int superBlocks, sbyte* qx, float* dx, short* sx, int n, Span<float> results)
        where TVnni : struct, IFlag
        where TFiveBit : struct, IFlag
    {
        var halves = CpuSimd.HalfTable;
        var blockBytes = TFiveBit.Value ? 176 : 144;
        var perToken = n / 256;
        var sums = n / 16;
        Vector256<float> a0 = default, a1 = default, a2 = default, a3 = default;
        Vector256<float> m0 = default, m1 = default, m2 = default, m3 = default;
        for (var s = 0; s < superBlocks; s++)
        {
            var blk = w + (s * blockBytes);
            var (packedScales, packedMinimums) = ScalesAndMinimums(blk);
            var sc = WideScales(packedScales);
            var mn = Vector128.CreateScalar(packedMinimums).AsByte();
            var qs = TFiveBit.Value ? blk + 48 : blk + 16;
            var qh = TFiveBit.Value ? Vector256.Load(blk + 16) : default;
            var (l0, l1) = Levels45K<TFiveBit>(qs, qh, 0);
            var (l2, l3) = Levels45K<TFiveBit>(qs + 32, qh, 2);
            var (l4, l5) = Levels45K<TFiveBit>(qs + 64, qh, 4);
            var (l6, l7) = Levels45K<TFiveBit>(qs + 96, qh, 6);
            var s0 = Avx2.Shuffle(sc, ScalePick(0)).AsInt16();
            var s1 = Avx2.Shuffle(sc, ScalePick(1)).AsInt16();
            var s2 = Avx2.Shuffle(sc, ScalePick(2)).AsInt16();
            var s3 = Avx2.Shuffle(sc, ScalePick(3)).AsInt16();
            var s4 = Avx2.Shuffle(sc, ScalePick(4)).AsInt16();
            var s5 = Avx2.Shuffle(sc, ScalePick(5)).AsInt16();
            var s6 = Avx2.Shuffle(sc, ScalePick(6)).AsInt16();
            var s7 = Avx2.Shuffle(sc, ScalePick(7)).AsInt16();
            var minPairs = Avx2.ConvertToVector256Int16(Sse2.UnpackLow(mn, mn));
            float d = Half(halves, blk), dmin = Half(halves, blk + 2);
            var y = qx + (s * 256);
            var ys = sx + (s * 16);
            var dy = dx + s;

            var sumi = TokenSum<TVnni>(y, l0, l1, l2, l3, l4, l5, l6, l7, s0, s1, s2, s3, s4, s5, s6, s7);
            a0 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(sumi), Vector256.Create(d * dy[0]), a0);
            m0 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(Avx2.MultiplyAddAdjacent(Vector256.Load(ys), minPairs)), Vector256.Create(dmin * dy[0]), m0);
            sumi = TokenSum<TVnni>(y + n, l0, l1, l2, l3, l4, l5, l6, l7, s0, s1, s2, s3, s4, s5, s6, s7);
            a1 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(sumi), Vector256.Create(d * dy[perToken]), a1);
            m1 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(Avx2.MultiplyAddAdjacent(Vector256.Load(ys + sums), minPairs)), Vector256.Create(dmin * dy[perToken]), m1);
            sumi = TokenSum<TVnni>(y + (2 * n), l0, l1, l2, l3, l4, l5, l6, l7, s0, s1, s2, s3, s4, s5, s6, s7);
            a2 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(sumi), Vector256.Create(d * dy[2 * perToken]), a2);
            m2 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(Avx2.MultiplyAddAdjacent(Vector256.Load(ys + (2 * sums)), minPairs)), Vector256.Create(dmin * dy[2 * perToken]), m2);
            sumi = TokenSum<TVnni>(y + (3 * n), l0, l1, l2, l3, l4, l5, l6, l7, s0, s1, s2, s3, s4, s5, s6, s7);
            a3 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(sumi), Vector256.Create(d * dy[3 * perToken]), a3);
            m3 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(Avx2.MultiplyAddAdjacent(Vector256.Load(ys + (3 * sums)), minPairs)), Vector256.Create(dmin * dy[3 * perToken]), m3);
        }

        results[0] = Sum(a0 - m0);
        results[1] = Sum(a1 - m1);
        results[2] = Sum(a2 - m2);
        results[3] = Sum(a3 - m3);
    }

    /// <summary>The 4-bit (or 5-bit) levels of 64 values of a Q4_K/Q5_K super-block: low nibbles, then high.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static (Vector256<byte> Low, Vector256<byte> High) Levels45K<TFiveBit>(byte* qs, Vector256<byte> qh, int bit)
        where TFiveBit : struct, IFlag
    {
        var mask = Vector256.Create((byte)0x0F);
        var qv = Vector256.Load(qs);
        var lo = qv & mask;
        var hi = Vector256.ShiftRightLogical(qv.AsUInt16(), 4).AsByte() & mask;
        if (TFiveBit.Value)
        {
            var sixteen = Vector256.Create((byte)16);
            var bitLo = Vector256.Create((byte)(1 << bit));
            var bitHi = Vector256.Create((byte)(2 << bit));
            lo |= Vector256.Equals(qh & bitLo, bitLo) & sixteen;
            hi |= Vector256.Equals(qh & bitHi, bitHi) & sixteen;
        }

        return (lo, hi);
    }

    /// <summary>
    /// The twelve bytes of 6-bit scales and minimums of a Q4_K/Q5_K super-block, unpacked four at a time (ggml's
    /// get_scale_min_k4): scales 0-3 and minimums 0-3 are the low six bits of bytes 0-3 and 4-7; scales and minimums
    /// 4-7 take their low four bits from bytes 8-11 and their top two from the spare bits of bytes 0-7. Each result
    /// holds eight values, one per byte.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static (ulong Scales, ulong Minimums) ScalesAndMinimums(byte* superBlock)
    {
        const uint Low6 = 0x3f3f3f3f, Low4 = 0x0f0f0f0f, Low2 = 0x03030303;
        uint u0 = *(uint*)(superBlock + 4), u1 = *(uint*)(superBlock + 8), u2 = *(uint*)(superBlock + 12);
        return ((u0 & Low6) | ((ulong)((u2 & Low4) | (((u0 >> 6) & Low2) << 4)) << 32),
            (u1 & Low6) | ((ulong)(((u2 >> 4) & Low4) | (((u1 >> 6) & Low2) << 4)) << 32));
    }

    /// <summary>
    /// Eight 6-bit scales (one per byte of <paramref name="packed"/>) widened to int16 and repeated in both 128-bit
    /// halves, so <see cref="ScalePick"/>'s in-lane byte shuffle can spread any one of them over a whole vector.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<byte> WideScales(ulong packed)
    {
        var wide = Sse41.ConvertToVector128Int16(Vector128.CreateScalar(packed).AsByte()).AsByte();
        return Vector256.Create(wide, wide);
    }

    /// <summary>The byte shuffle that copies int16 scale j of <see cref="WideScales"/> into all sixteen lanes.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<byte> ScalePick(int j) =>
        Vector256.Create((ushort)((((2 * j) + 1) << 8) | (2 * j))).AsByte();

    /// <summary>Σ over 256 values of level · activation · scale for one token (eight groups of 32).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> TokenSum<TVnni>(
        sbyte* y,
        Vector256<byte> l0, Vector256<byte> l1, Vector256<byte> l2, Vector256<byte> l3, Vector256<byte> l4, Vector256<byte> l5, Vector256<byte> l6, Vector256<byte> l7,
        Vector256<short> s0, Vector256<short> s1, Vector256<short> s2, Vector256<short> s3, Vector256<short> s4, Vector256<short> s5, Vector256<short> s6, Vector256<short> s7)
        where TVnni : struct, IFlag
    {
        var sumi = ScaledDot<TVnni>(Vector256<int>.Zero, l0, Vector256.Load(y), s0);
        sumi = ScaledDot<TVnni>(sumi, l1, Vector256.Load(y + 32), s1);
        sumi = ScaledDot<TVnni>(sumi, l2, Vector256.Load(y + 64), s2);
        sumi = ScaledDot<TVnni>(sumi, l3, Vector256.Load(y + 96), s3);
        sumi = ScaledDot<TVnni>(sumi, l4, Vector256.Load(y + 128), s4);
        sumi = ScaledDot<TVnni>(sumi, l5, Vector256.Load(y + 160), s5);
        sumi = ScaledDot<TVnni>(sumi, l6, Vector256.Load(y + 192), s6);
        return ScaledDot<TVnni>(sumi, l7, Vector256.Load(y + 224), s7);
    }

    /// <summary>Four tokens against one Q6_K row: levels and scale pairs unpacked once per super-block, as GroupQ45K.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void GroupQ6K<TVnni>(byte* w, int superBlocks, sbyte* qx, float* dx, short* sx, int n, Span<float> results)
        where TVnni : struct, IFlag
    {
        var halves = CpuSimd.HalfTable;
        var perToken = n / 256;
        var sums = n / 16;
        var pick = Vector128.Create(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1).AsSByte();
        Vector256<float> a0 = default, a1 = default, a2 = default, a3 = default;
        for (var s = 0; s < superBlocks; s++)
        {
            var blk = w + (s * 210);
            var (l0, l1, l2, l3) = Levels6K(blk, blk + 128);
            var (l4, l5, l6, l7) = Levels6K(blk + 64, blk + 160);

            var scaleBytes = Vector128.Load((sbyte*)(blk + 192));
            var s0 = Avx2.ConvertToVector256Int16(Ssse3.Shuffle(scaleBytes, pick));
            var s1 = Avx2.ConvertToVector256Int16(Ssse3.Shuffle(scaleBytes, pick + Vector128.Create((sbyte)2)));
            var s2 = Avx2.ConvertToVector256Int16(Ssse3.Shuffle(scaleBytes, pick + Vector128.Create((sbyte)4)));
            var s3 = Avx2.ConvertToVector256Int16(Ssse3.Shuffle(scaleBytes, pick + Vector128.Create((sbyte)6)));
            var s4 = Avx2.ConvertToVector256Int16(Ssse3.Shuffle(scaleBytes, pick + Vector128.Create((sbyte)8)));
            var s5 = Avx2.ConvertToVector256Int16(Ssse3.Shuffle(scaleBytes, pick + Vector128.Create((sbyte)10)));
            var s6 = Avx2.ConvertToVector256Int16(Ssse3.Shuffle(scaleBytes, pick + Vector128.Create((sbyte)12)));
            var s7 = Avx2.ConvertToVector256Int16(Ssse3.Shuffle(scaleBytes, pick + Vector128.Create((sbyte)14)));
            var scales16 = Avx2.ConvertToVector256Int16(scaleBytes);
            var d = Half(halves, blk + 208);
            var y = qx + (s * 256);
            var ys = sx + (s * 16);
            var dy = dx + s;

            // The levels' offset of 32 comes off through each token's sums of 16, as in RowQ6K.
            var sumi = TokenSum<TVnni>(y, l0, l1, l2, l3, l4, l5, l6, l7, s0, s1, s2, s3, s4, s5, s6, s7)
                - Vector256.ShiftLeft(Avx2.MultiplyAddAdjacent(Vector256.Load(ys), scales16), 5);
            a0 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(sumi), Vector256.Create(d * dy[0]), a0);
            sumi = TokenSum<TVnni>(y + n, l0, l1, l2, l3, l4, l5, l6, l7, s0, s1, s2, s3, s4, s5, s6, s7)
                - Vector256.ShiftLeft(Avx2.MultiplyAddAdjacent(Vector256.Load(ys + sums), scales16), 5);
            a1 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(sumi), Vector256.Create(d * dy[perToken]), a1);
            sumi = TokenSum<TVnni>(y + (2 * n), l0, l1, l2, l3, l4, l5, l6, l7, s0, s1, s2, s3, s4, s5, s6, s7)
                - Vector256.ShiftLeft(Avx2.MultiplyAddAdjacent(Vector256.Load(ys + (2 * sums)), scales16), 5);
            a2 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(sumi), Vector256.Create(d * dy[2 * perToken]), a2);
            sumi = TokenSum<TVnni>(y + (3 * n), l0, l1, l2, l3, l4, l5, l6, l7, s0, s1, s2, s3, s4, s5, s6, s7)
                - Vector256.ShiftLeft(Avx2.MultiplyAddAdjacent(Vector256.Load(ys + (3 * sums)), scales16), 5);
            a3 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(sumi), Vector256.Create(d * dy[3 * perToken]), a3);
        }

        results[0] = Sum(a0);
        results[1] = Sum(a1);
        results[2] = Sum(a2);
        results[3] = Sum(a3);
    }

    /// <summary>The portable kernel: the same integer arithmetic one value at a time (activations as <see cref="ActivationBlock"/> says).</summary>
    internal static float ScalarRow(DType type, byte* w, int n, sbyte* qx, float* dx, short* sx)
    {
        var halves = CpuSimd.HalfTable;
        var result = 0f;
        Span<byte> levels = stackalloc byte[256];
        switch (type)
        {
            case DType.Q8_0:
                for (var b = 0; b < n / 32; b++)
                {
                    var wb = w + (b * 34);
                    var dot = 0;
                    for (var i = 0; i < 32; i++)
                    {
                        dot += ((sbyte*)(wb + 2))[i] * qx[(b * 32) + i];
                    }

                    result += Half(halves, wb) * dx[b] * dot;
                }

                return result;
            case DType.Q4_0:
                for (var b = 0; b < n / 32; b++)
                {
                    var wb = w + (b * 18);
                    var dot = 0;
                    for (var i = 0; i < 16; i++)
                    {
                        dot += (wb[2 + i] & 0xF) * qx[(b * 32) + i];
                        dot += (wb[2 + i] >> 4) * qx[(b * 32) + 16 + i];
                    }

                    result += Half(halves, wb) * dx[b] * (dot - (8 * (sx[2 * b] + sx[(2 * b) + 1])));
                }

                return result;
            case DType.Q4_1:
            case DType.Q5_0:
            case DType.Q5_1:
            {
                var hasMin = type != DType.Q5_0;
                var fiveBit = type != DType.Q4_1;
                var qhOffset = hasMin ? 4 : 2;
                var qsOffset = qhOffset + (fiveBit ? 4 : 0);
                for (var b = 0; b < n / 32; b++)
                {
                    var wb = w + (b * (qsOffset + 16));
                    var qh = fiveBit ? *(uint*)(wb + qhOffset) : 0u;
                    var dot = 0;
                    for (var i = 0; i < 16; i++)
                    {
                        var l0 = (wb[qsOffset + i] & 0xF) | (int)(((qh >> i) & 1) << 4);
                        var l1 = (wb[qsOffset + i] >> 4) | (int)(((qh >> (i + 16)) & 1) << 4);
                        dot += l0 * qx[(b * 32) + i];
                        dot += l1 * qx[(b * 32) + 16 + i];
                    }

                    var sum = sx[2 * b] + sx[(2 * b) + 1];
                    result += hasMin
                        ? (Half(halves, wb) * dx[b] * dot) + (Half(halves, wb + 2) * dx[b] * sum)
                        : Half(halves, wb) * dx[b] * (dot - (16 * sum));
                }

                return result;
            }

            case DType.Q4_K:
            case DType.Q5_K:
            {
                var five = type == DType.Q5_K;
                var bytes = five ? 176 : 144;
                for (var s = 0; s < n / 256; s++)
                {
                    var blk = w + (s * bytes);
                    var d = Half(halves, blk);
                    var dmin = Half(halves, blk + 2);
                    var packed = new ReadOnlySpan<byte>(blk + 4, 12);
                    var qs = five ? blk + 48 : blk + 16;
                    for (var p = 0; p < 4; p++)
                    {
                        for (var l = 0; l < 32; l++)
                        {
                            var q = qs[(32 * p) + l];
                            levels[(64 * p) + l] = (byte)((q & 0xF) + (five && (blk[16 + l] & (1 << (2 * p))) != 0 ? 16 : 0));
                            levels[(64 * p) + 32 + l] = (byte)((q >> 4) + (five && (blk[16 + l] & (1 << ((2 * p) + 1))) != 0 ? 16 : 0));
                        }
                    }

                    for (var j = 0; j < 8; j++)
                    {
                        var (sc, m) = Formats.Gguf.GgmlQuants.ScaleMinK4(j, packed);
                        var bi = (s * 8) + j;
                        var dot = 0;
                        for (var i = 0; i < 32; i++)
                        {
                            dot += levels[(32 * j) + i] * qx[(bi * 32) + i];
                        }

                        // One activation scale per super-block (dx[s]), sums per 16 values.
                        result += (d * sc * dx[s] * dot) - (dmin * m * dx[s] * (sx[2 * bi] + sx[(2 * bi) + 1]));
                    }
                }

                return result;
            }

            case DType.Q6_K:
                for (var s = 0; s < n / 256; s++)
                {
                    var blk = w + (s * 210);
                    var d = Half(halves, blk + 208);
                    for (var h = 0; h < 2; h++)
                    {
                        var ql = blk + (64 * h);
                        var qh = blk + 128 + (32 * h);
                        for (var l = 0; l < 32; l++)
                        {
                            levels[(128 * h) + l] = (byte)((ql[l] & 0xF) | ((qh[l] & 3) << 4));
                            levels[(128 * h) + 32 + l] = (byte)((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4));
                            levels[(128 * h) + 64 + l] = (byte)((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4));
                            levels[(128 * h) + 96 + l] = (byte)((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4));
                        }
                    }

                    var scales = (sbyte*)(blk + 192);
                    for (var j = 0; j < 16; j++)
                    {
                        var dot = 0;
                        for (var i = 0; i < 16; i++)
                        {
                            dot += levels[(16 * j) + i] * qx[(s * 256) + (16 * j) + i];
                        }

                        result += d * scales[j] * dx[s] * (dot - (32 * sx[(s * 16) + j]));
                    }
                }

                return result;
            default:
                throw new InvalidOperationException($"{type} is not a block type");
        }
    }
}
