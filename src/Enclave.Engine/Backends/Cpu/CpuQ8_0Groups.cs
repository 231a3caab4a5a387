using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Enclave.Engine.Backends.Cpu;

/// <summary>
/// Q8_0 weights regrouped at load time for the integer dot-product instructions, in the same number of bytes as the
/// file's layout. In the file a row is a run of 34-byte blocks (fp16 scale, 32 int8 levels), so a product reading
/// it needs one <c>vpdpbusd</c>, one conversion, one scale FMA and a horizontal sum per row and block. Here each
/// group of 16 rows (<see cref="Rows"/>) stores, block by block, the levels of its 16 rows interleaved four values at
/// a time: block b of group g, at g · 16 · rowBytes + 512 b, is eight "quads" of 64 bytes, quad q holding values
/// 4q..4q+3 of row 0, then of row 1, … row 15, as unsigned bytes w + 128 (w xor 0x80). That is the operand layout
/// of <c>vpdpbusd</c> (one instruction covers 16 rows, two on 256-bit vectors) and of an AMX B tile (8 rows of 64
/// bytes), so <c>tdpbsud</c> reads it in place. After all blocks' levels come the blocks' scales, 16 fp16 a block,
/// one vector conversion for the 16 rows. A group is 544 bytes a block, as 16 rows of 34; the rows past the last
/// whole group keep the file's layout at their usual offset, and the row kernels read them.
/// <para>
/// A product of the offset levels sums (w + 128)·x, so each block's integer sums lose 128·Σx (computed once a token
/// when the activations are quantised) before the one conversion to fp32 and the FMA by the 16 weight scales times
/// the token's scale. Used where the backend runs 512-bit vectors with AVX-VNNI (the kernels convert and scale 16
/// rows in one 512-bit vector; .NET 10 has no 512-bit <c>vpdpbusd</c>, so the dot products are 256-bit halves) and
/// every scale is finite; <c>ENCLAVE_CPU_Q8_REPACK=0</c> keeps the file's layout, for comparisons.
/// </para>
/// </summary>
internal static unsafe partial class CpuQ8_0Groups
{
    /// <summary>Weight rows of a group.</summary>
    public const int Rows = 16;

    /// <summary>Bytes of one block of a group: 16 rows × 32 levels.</summary>
    public const int BlockLevelBytes = Rows * 32;

    /// <summary>Tokens one kernel call takes at most (each group's levels, once loaded, are dotted with all of them).</summary>
    public const int MaxTokens = 4;

    private const int MadvDontneed = 4;
    private const int MadvHugepage = 14;
    private const int PageBytes = 4096;

    /// <summary>Whether a backend with <paramref name="simdWidth"/>-bit vectors regroups Q8_0 weights on this machine.</summary>
    public static bool IsSupported(int simdWidth) =>
        simdWidth >= 512 && AvxVnni.IsSupported && Avx512F.IsSupported && Avx512BW.IsSupported && Fma.IsSupported
        && Environment.GetEnvironmentVariable("ENCLAVE_CPU_Q8_REPACK") != "0";

    /// <summary>Whether a tensor of this type and shape has whole groups to regroup.</summary>
    public static bool Applies(DType type, IReadOnlyList<int> shape) =>
        type == DType.Q8_0 && shape.Count == 2 && shape[0] >= Rows && shape[1] > 0 && shape[1] % 32 == 0;

    /// <summary>
    /// Writes the grouped layout of the Q8_0 matrix at <paramref name="source"/> ([rows, inFeatures], file layout) to
    /// <paramref name="destination"/> (as many bytes). Returns false, with the destination unspecified, where a scale
    /// is an infinity or NaN (the kernels' half conversion is for finite values). With <paramref name="releaseSource"/>
    /// the source pages (a read-only file mapping) are dropped from the process as they are done with, so the file is
    /// not resident twice.
    /// </summary>
    public static bool Pack(byte* source, byte* destination, int rows, int inFeatures, bool releaseSource)
    {
        var blocks = inFeatures / 32;
        var rowBytes = (long)blocks * 34;
        var groups = rows / Rows;
        var groupBytes = Rows * rowBytes;

        // Chunks of about 2 MiB, spread over the cores: the pass is linear, but a large embedding table is 100s of MB.
        var groupsPerChunk = (int)Math.Max(1, (2L << 20) / groupBytes);
        var chunks = (groups + groupsPerChunk - 1) / groupsPerChunk;
        var finite = 1;
        var (src, dst) = ((nint)source, (nint)destination);
        Parallel.For(0, chunks, chunk =>
        {
            var first = chunk * groupsPerChunk;
            var last = Math.Min(groups, first + groupsPerChunk);
            for (var g = first; g < last && Volatile.Read(ref finite) == 1; g++)
            {
                if (!PackGroup((byte*)src + (g * groupBytes), (byte*)dst + (g * groupBytes), blocks, rowBytes))
                {
                    Volatile.Write(ref finite, 0);
                }
            }

            if (releaseSource)
            {
                Release((byte*)src + (first * groupBytes), (last - first) * groupBytes);
            }
        });

        // The rows past the last whole group stay as they are.
        var tail = groups * groupBytes;
        Buffer.MemoryCopy(source + tail, destination + tail, (rows * rowBytes) - tail, (rows * rowBytes) - tail);
        return finite == 1;
    }

    /// <summary>One group of 16 rows (file layout, <paramref name="rowBytes"/> apart) into its grouped layout; false where a scale is not finite.</summary>
    private static bool PackGroup(byte* source, byte* destination, int blocks, long rowBytes)
    {
        var scales = (ushort*)(destination + ((long)blocks * BlockLevelBytes));
        var finite = true;
        for (var r = 0; r < Rows; r++)
        {
            var row = source + (r * rowBytes);
            for (var b = 0; b < blocks; b++)
            {
                var block = row + (b * 34);
                var scale = *(ushort*)block;
                finite &= (scale & HalfBits.HalfExponent) != HalfBits.HalfExponent;
                scales[(b * Rows) + r] = scale;
                var levels = (uint*)(destination + ((long)b * BlockLevelBytes) + (r * 4));
                for (var q = 0; q < 8; q++)
                {
                    // Unaligned: the levels start two bytes into the block.
                    levels[q * Rows] = Unsafe.ReadUnaligned<uint>(block + 2 + (q * 4)) ^ 0x80808080u;
                }
            }
        }

        return finite;
    }

    /// <summary>Drops the whole pages inside [start, start + bytes) of a read-only file mapping from the process.</summary>
    internal static void Release(byte* start, long bytes)
    {
        if (!OperatingSystem.IsLinux())
        {
            return;
        }

        var first = ((long)start + PageBytes - 1) & ~(long)(PageBytes - 1);
        var end = ((long)start + bytes) & ~(long)(PageBytes - 1);
        if (end > first)
        {
            // Advice only: where the kernel refuses, the pages stay resident and nothing else changes.
            _ = Madvise((void*)first, (nuint)(end - first), MadvDontneed);
        }
    }

    /// <summary>
    /// Native memory for a grouped copy of <paramref name="bytes"/> bytes (freed with NativeMemory.AlignedFree): from
    /// 2 MiB up, aligned to 2 MiB and its whole 2 MiB pages marked for transparent huge pages, so the copy costs a
    /// fault per 2 MiB instead of per 4 KiB and the products' streaming reads miss the TLB less.
    /// </summary>
    public static byte* Allocate(long bytes)
    {
        const long huge = 2 << 20;
        if (bytes < huge || !OperatingSystem.IsLinux())
        {
            return (byte*)NativeMemory.AlignedAlloc((nuint)Math.Max(bytes, 1), 64);
        }

        var memory = (byte*)NativeMemory.AlignedAlloc((nuint)bytes, (nuint)huge);

        // Advice only: without it (or where THP is off) the pages are 4 KiB and nothing else changes. The whole huge
        // pages only: a partly used last one would be resident in full (about 1 MiB a tensor).
        _ = Madvise(memory, (nuint)(bytes & ~(huge - 1)), MadvHugepage);
        return memory;
    }

    [LibraryImport("libc", EntryPoint = "madvise")]
    private static partial int Madvise(void* address, nuint length, int advice);

    /// <summary>Row <paramref name="row"/> of a grouped Q8_0 matrix [rows, inFeatures] as fp32, exactly as the file's row dequantises.</summary>
    public static void DequantizeRow(byte* tensor, int rows, int inFeatures, int row, Span<float> y)
    {
        var blocks = inFeatures / 32;
        var rowBytes = (long)blocks * 34;
        if (row >= rows / Rows * Rows)
        {
            Formats.Gguf.GgmlQuants.Dequantize(DType.Q8_0, new ReadOnlySpan<byte>(tensor + (row * rowBytes), (int)rowBytes), y);
            return;
        }

        var group = tensor + (row / Rows * Rows * rowBytes);
        var r = row % Rows;
        var scales = (ushort*)(group + ((long)blocks * BlockLevelBytes));
        for (var b = 0; b < blocks; b++)
        {
            var d = (float)BitConverter.UInt16BitsToHalf(scales[(b * Rows) + r]);
            var levels = group + ((long)b * BlockLevelBytes) + (r * 4);
            for (var j = 0; j < 32; j++)
            {
                // Value j is byte j % 4 of quad j / 4; as GgmlQuants: level times scale.
                y[(b * 32) + j] = (sbyte)(levels[(j / 4 * 64) + (j % 4)] ^ 0x80) * d;
            }
        }
    }

    /// <summary>
    /// y[t, 16 rows] = Σ_b (Σ_k (w + 128)·x − 128·Σx) · scale_w · scale_x (+ bias) for the 16 rows of one group and
    /// <typeparamref name="TTokens"/> tokens (1 to <see cref="MaxTokens"/>). Each quad of levels is loaded once (two 256-bit halves: rows 0-7 and
    /// 8-15) and dotted with every token's four activations broadcast; a block's int32 sums of 16 rows meet in one
    /// 512-bit vector for the offset, the conversion and the FMA by its 16 scales (converted from fp16 once for all
    /// the tokens). Blocks start their integer sums from zero, so the out-of-order core overlaps consecutive blocks.
    /// </summary>
    /// <param name="group">The group: [blocks][8 quads][16 rows][4] offset levels, then [blocks][16 rows] fp16 scales.</param>
    /// <param name="qx">Token 0's int8 activations [blocks × 32]; token k at qx + k·<paramref name="n"/>.</param>
    /// <param name="offsets">Token 0's 128·Σx per block [blocks]; token k at offsets + k·blocks.</param>
    /// <param name="dx">Token 0's activation scales per block [blocks]; token k at dx + k·blocks.</param>
    /// <param name="y">Token 0's 16 outputs; token k at y + k·<paramref name="yStride"/>.</param>
    /// <param name="bias">The group's 16 biases, or null.</param>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    internal static void Product<TTokens>(byte* group, int blocks, sbyte* qx, int n, int* offsets, float* dx, float* y, long yStride, float* bias)
        where TTokens : struct, ITokenCount
    {
        var count = TTokens.N;
        var scales = (ushort*)(group + ((long)blocks * BlockLevelBytes));
        Vector512<float> a0 = default, a1 = default, a2 = default, a3 = default;
        for (var b = 0; b < blocks; b++)
        {
            var levels = group + ((long)b * BlockLevelBytes);
            var x = qx + (b * 32);

            // lo/hi: rows 0-7 and 8-15; one token's quads alternate between two sums each so that its chain of
            // vpdpbusd is half as long (more tokens give the core independent chains anyway).
            Vector256<int> lo0 = default, hi0 = default, lo0b = default, hi0b = default;
            Vector256<int> lo1 = default, hi1 = default, lo2 = default, hi2 = default, lo3 = default, hi3 = default;
            for (var q = 0; q < 8; q += 2)
            {
                var quad = levels + (q * 64);
                CpuSimd.PrefetchWeights(quad);
                CpuSimd.PrefetchWeights(quad + 64);
                var wl = Vector256.Load(quad);
                var wh = Vector256.Load(quad + 32);
                var wl2 = Vector256.Load(quad + 64);
                var wh2 = Vector256.Load(quad + 96);
                var xq = x + (q * 4);
                var x0 = Vector256.Create(*(int*)xq).AsSByte();
                var x0b = Vector256.Create(*(int*)(xq + 4)).AsSByte();
                lo0 = AvxVnni.MultiplyWideningAndAdd(lo0, wl, x0);
                hi0 = AvxVnni.MultiplyWideningAndAdd(hi0, wh, x0);
                if (count == 1)
                {
                    lo0b = AvxVnni.MultiplyWideningAndAdd(lo0b, wl2, x0b);
                    hi0b = AvxVnni.MultiplyWideningAndAdd(hi0b, wh2, x0b);
                }
                else
                {
                    lo0 = AvxVnni.MultiplyWideningAndAdd(lo0, wl2, x0b);
                    hi0 = AvxVnni.MultiplyWideningAndAdd(hi0, wh2, x0b);
                }

                if (count > 1)
                {
                    var x1 = Vector256.Create(*(int*)(xq + n)).AsSByte();
                    var x1b = Vector256.Create(*(int*)(xq + n + 4)).AsSByte();
                    lo1 = AvxVnni.MultiplyWideningAndAdd(AvxVnni.MultiplyWideningAndAdd(lo1, wl, x1), wl2, x1b);
                    hi1 = AvxVnni.MultiplyWideningAndAdd(AvxVnni.MultiplyWideningAndAdd(hi1, wh, x1), wh2, x1b);
                }

                if (count > 2)
                {
                    var x2 = Vector256.Create(*(int*)(xq + (2 * n))).AsSByte();
                    var x2b = Vector256.Create(*(int*)(xq + (2 * n) + 4)).AsSByte();
                    lo2 = AvxVnni.MultiplyWideningAndAdd(AvxVnni.MultiplyWideningAndAdd(lo2, wl, x2), wl2, x2b);
                    hi2 = AvxVnni.MultiplyWideningAndAdd(AvxVnni.MultiplyWideningAndAdd(hi2, wh, x2), wh2, x2b);
                }

                if (count > 3)
                {
                    var x3 = Vector256.Create(*(int*)(xq + (3 * n))).AsSByte();
                    var x3b = Vector256.Create(*(int*)(xq + (3 * n) + 4)).AsSByte();
                    lo3 = AvxVnni.MultiplyWideningAndAdd(AvxVnni.MultiplyWideningAndAdd(lo3, wl, x3), wl2, x3b);
                    hi3 = AvxVnni.MultiplyWideningAndAdd(AvxVnni.MultiplyWideningAndAdd(hi3, wh, x3), wh2, x3b);
                }
            }

            // The 16 rows' scales of the block; every one finite (checked when the weights were grouped).
            var ws = HalfBits.FiniteToSingle(Avx512F.ConvertToVector512UInt32(Vector256.Load(scales + (b * Rows))));
            if (count == 1)
            {
                lo0 += lo0b;
                hi0 += hi0b;
            }

            a0 = Scale(a0, lo0, hi0, offsets[b], ws, dx[b]);
            if (count > 1)
            {
                a1 = Scale(a1, lo1, hi1, offsets[blocks + b], ws, dx[blocks + b]);
            }

            if (count > 2)
            {
                a2 = Scale(a2, lo2, hi2, offsets[(2 * blocks) + b], ws, dx[(2 * blocks) + b]);
            }

            if (count > 3)
            {
                a3 = Scale(a3, lo3, hi3, offsets[(3 * blocks) + b], ws, dx[(3 * blocks) + b]);
            }
        }

        var biases = bias == null ? Vector512<float>.Zero : Vector512.Load(bias);
        (a0 + biases).Store(y);
        if (count > 1)
        {
            (a1 + biases).Store(y + yStride);
        }

        if (count > 2)
        {
            (a2 + biases).Store(y + (2 * yStride));
        }

        if (count > 3)
        {
            (a3 + biases).Store(y + (3 * yStride));
        }
    }

    /// <summary>acc + (sums of rows 0-7, 8-15 less the activation offset) · scales · dx, in one 512-bit vector.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> Scale(Vector512<float> acc, Vector256<int> lo, Vector256<int> hi, int offset, Vector512<float> ws, float dx) =>
        Avx512F.FusedMultiplyAdd(
            Avx512F.ConvertToVector512Single(Vector512.Create(lo, hi) - Vector512.Create(offset)),
            ws * Vector512.Create(dx),
            acc);
}
