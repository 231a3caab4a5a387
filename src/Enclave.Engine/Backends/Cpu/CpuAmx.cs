using System.Runtime.InteropServices;
using System.Runtime.Intrinsics.X86;

namespace Enclave.Engine.Backends.Cpu;

/// <summary>
/// Intel AMX tile products for the CPU backend (Sapphire Rapids and later Xeons). .NET has no AMX intrinsics, so the
/// kernels are C (tools/cpu-kernels) compiled ahead of time into position-independent machine code
/// (<see cref="AmxCode"/>, regenerated and compared by the test suite) that is copied once into executable memory and
/// called through a function pointer. Used on Linux x64 when CPUID reports AMX-TILE and AMX-INT8 with AVX-512F, BMI2 and
/// F16C and the kernel grants the process the tile data state (arch_prctl ARCH_REQ_XCOMP_PERM); ENCLAVE_CPU_AMX=0
/// turns it off, for comparisons. Where CPUID also reports AMX-BF16, AVX512-BF16 and AVX512-BW, Q8_0 prefill products
/// take the bf16 kernel (<see cref="Q8_0Bf16"/>) instead of the int8 one, and F16 and BF16 prefill products run on bf16
/// tiles with every value split into two bf16 parts (<see cref="F16"/>, <see cref="Bf16"/>; ENCLAVE_CPU_AMX_F16=0 keeps
/// those two on the vector units, for comparisons).
/// </summary>
internal static unsafe partial class CpuAmx
{
    private const int ArchReqXcompPerm = 0x1023;
    private const int XfeatureXtiledata = 18;
    private const int ProtRead = 1, ProtWrite = 2, ProtExec = 4, MapPrivate = 2, MapAnonymous = 0x20;

    /// <summary>The formats with a kernel, in the order of their code in the executable mapping.</summary>
    private static readonly DType[] Formats = [DType.Q8_0, DType.Q5_0, DType.Q4_K, DType.Q5_K, DType.Q6_K];

    private static readonly Lazy<State> Loaded = new(Load);

    /// <summary>Whether the AMX kernels run on this machine.</summary>
    public static bool IsSupported => Loaded.Value.Kernels != null;

    /// <summary>Why they do or do not, for start-up logs and test skip reasons.</summary>
    public static string Status => Loaded.Value.Status;

    /// <summary>The Q8_0 kernel on AMX-BF16 tiles, or null where the CPU lacks AMX-BF16 or AVX512-BF16 (or has no AMX kernels).</summary>
    public static Bf16Kernel? Q8_0Bf16 => Loaded.Value.Q8_0Bf16;

    /// <summary>The F16 weight kernel on AMX-BF16 tiles, or null where the Q8_0 one is null or ENCLAVE_CPU_AMX_F16=0.</summary>
    public static HalfKernel? F16 => Loaded.Value.F16;

    /// <summary>The BF16 weight kernel on AMX-BF16 tiles, or null where the Q8_0 one is null or ENCLAVE_CPU_AMX_F16=0.</summary>
    public static HalfKernel? Bf16 => Loaded.Value.Bf16;

    /// <summary>The kernel for weights of <paramref name="type"/>, or null where there is none (or no AMX here).</summary>
    public static Kernel? For(DType type)
    {
        var kernels = Loaded.Value.Kernels;
        var index = Array.IndexOf(Formats, type);
        return kernels == null || index < 0 ? null : kernels[index];
    }

    /// <summary>
    /// One AMX kernel (tools/cpu-kernels/*_amx.c): 16 weight rows against every 16-token tile of the packed
    /// activations, called as (w, rowBytes, blocks, xq, xs, xsum, tokenTiles, tokens, y, yStride, bias, scratch,
    /// config) with blocks counted in <see cref="BlockValues"/> values. Q8_0's reads one group of
    /// <see cref="CpuQ8_0Groups"/> (no row stride) and the activations token by token, with 128·Σx per block as xsum.
    /// </summary>
    internal readonly struct Kernel(byte* entry, byte* config, int blockValues, int sumValues, int scratchBytesPerValue)
    {
        public delegate* unmanaged<byte*, long, int, sbyte*, float*, float*, int, int, float*, long, float*, int*, byte*, void> Entry { get; } =
            (delegate* unmanaged<byte*, long, int, sbyte*, float*, float*, int, int, float*, long, float*, int*, byte*, void>)entry;

        /// <summary>The 64-byte tile configuration the kernel loads (<see cref="TileConfig"/>).</summary>
        public byte* Config { get; } = config;

        /// <summary>Values of the kernel's blocks argument: 32, or 256 for the K-quants' super-blocks.</summary>
        public int BlockValues { get; } = blockValues;

        /// <summary>Values per activation sum the kernel reads in the shared tile layout (32, 16 for Q6_K); 0 for Q8_0, whose activations have a layout of their own.</summary>
        public int SumValues { get; } = sumValues;

        /// <summary>
        /// Bytes of 64-byte aligned scratch one call needs for rows of <paramref name="inFeatures"/> values: four int32
        /// tiles and one fp32 tile, then per value the 16 rows' scales (and minimums or offsets) and unpacked levels
        /// (none for Q8_0).
        /// </summary>
        public long ScratchBytes(int inFeatures) => (5 * 1024) + ((long)inFeatures * scratchBytesPerValue);
    }

    /// <summary>
    /// The Q8_0 kernel on AMX-BF16 tiles (tools/cpu-kernels/q8_0_bf16_amx.c): each of <c>groups</c> consecutive groups of
    /// <see cref="CpuQ8_0Groups"/> dequantised once per call to bf16 B tiles in scratch, against every 16-token tile of the
    /// bf16 activations, fp32 sums over the whole row. Called as (w, groupBytes, groups, blocks, xb, tokenTiles, tokens,
    /// y, yStride, bias, scratch, config), blocks of 32 values.
    /// </summary>
    internal readonly struct Bf16Kernel(byte* entry, byte* config)
    {
        public delegate* unmanaged<byte*, long, int, int, ushort*, int, int, float*, long, float*, byte*, byte*, void> Entry { get; } =
            (delegate* unmanaged<byte*, long, int, int, ushort*, int, int, float*, long, float*, byte*, byte*, void>)entry;

        /// <summary>The 64-byte tile configuration the kernel loads: all eight tiles 16 rows × 64 bytes.</summary>
        public byte* Config { get; } = config;

        /// <summary>
        /// Bytes of 64-byte aligned scratch one call needs: two buffers of two groups of bf16 weights (the pair on the
        /// tiles and the next, 128 bytes a value of a row in all) and one fp32 tile.
        /// </summary>
        public static long ScratchBytes(int inFeatures) => ((long)inFeatures * 128) + 1024;
    }

    /// <summary>
    /// A 16-bit float weight kernel on AMX-BF16 tiles (tools/cpu-kernels/half_amx.h: f16_amx.c, bf16_amx.c): weights
    /// converted per call, a pair of 16-row groups at a time, into high and low bf16 A tiles in scratch (BF16: copied,
    /// they are exact), against the activations split the same way into B tiles by <see cref="Pack"/>, fp32 sums.
    /// Called as (w, wStride, rows, in, xb, tokenTiles, tokens, y, yStride, bias, chunk, scratch, config): any row
    /// count and length, <c>chunk</c> blocks of 32 values a pass over the activations.
    /// </summary>
    internal readonly struct HalfKernel(byte* entry, byte* pack, byte* config, bool splitWeights)
    {
        public delegate* unmanaged<ushort*, long, int, int, ushort*, int, int, float*, long, float*, int, byte*, byte*, void> Entry { get; } =
            (delegate* unmanaged<ushort*, long, int, int, ushort*, int, int, float*, long, float*, int, byte*, byte*, void>)entry;

        /// <summary>
        /// The activations' split into the kernel's B tiles, one token tile a call (tools/cpu-kernels/half_pack_amx.c),
        /// called as (x, xStride, in, tokens, tile, xb).
        /// </summary>
        public delegate* unmanaged<float*, long, int, int, int, ushort*, void> Pack { get; } =
            (delegate* unmanaged<float*, long, int, int, int, ushort*, void>)pack;

        /// <summary>The 64-byte tile configuration the kernel loads: all eight tiles 16 rows × 64 bytes.</summary>
        public byte* Config { get; } = config;

        /// <summary>Whether the weights are split into two bf16 parts (F16; BF16 weights are exact as they are).</summary>
        public bool SplitWeights { get; } = splitWeights;

        /// <summary>
        /// Bytes of 64-byte aligned scratch one call needs: two buffers of a pair of groups × <paramref name="chunk"/>
        /// blocks of converted weights (1 KiB a group and block, 2 KiB for F16), one fp32 tile, and with more than one
        /// chunk the running sums of <paramref name="groups"/> × <paramref name="tokenTiles"/> result tiles.
        /// </summary>
        public long ScratchBytes(int chunk, int chunks, int groups, int tokenTiles) =>
            (4L * chunk * (SplitWeights ? 2048 : 1024)) + 1024 + (chunks > 1 ? (long)groups * tokenTiles * 1024 : 0);
    }

    private sealed class State(Kernel[]? kernels, string status, Bf16Kernel? q8_0Bf16 = null, HalfKernel? f16 = null, HalfKernel? bf16 = null)
    {
        public Kernel[]? Kernels { get; } = kernels;

        public Bf16Kernel? Q8_0Bf16 { get; } = q8_0Bf16;

        public HalfKernel? F16 { get; } = f16;

        public HalfKernel? Bf16 { get; } = bf16;

        public string Status { get; } = status;
    }

    /// <summary>
    /// The machine code of the kernels, in the order of <see cref="Formats"/>, then the bf16 ones (Q8_0, F16, BF16) and
    /// the activation split of the last two.
    /// </summary>
    private static ReadOnlySpan<byte> Code(int index) => index switch
    {
        0 => AmxCode.Q8_0,
        1 => AmxCode.Q5_0,
        2 => AmxCode.Q4_K,
        3 => AmxCode.Q5_K,
        4 => AmxCode.Q6_K,
        5 => AmxCode.Q8_0_Bf16,
        6 => AmxCode.F16,
        7 => AmxCode.Bf16,
        _ => AmxCode.Half_Pack,
    };

    private static State Load()
    {
        if (Environment.GetEnvironmentVariable("ENCLAVE_CPU_AMX") == "0")
        {
            return new(null, "AMX off (ENCLAVE_CPU_AMX=0)");
        }

        if (!OperatingSystem.IsLinux() || RuntimeInformation.ProcessArchitecture != Architecture.X64)
        {
            return new(null, "no AMX kernels (they run on Linux x64)");
        }

        var (_, _, features1, _) = X86Base.CpuId(1, 0);
        var (_, _, _, features7) = X86Base.CpuId(7, 0);
        var (features7_1, _, _, _) = X86Base.CpuId(7, 1);
        bool tile = (features7 & (1 << 24)) != 0, int8 = (features7 & (1 << 25)) != 0, f16c = (features1 & (1 << 29)) != 0;

        // AMX-BF16 (CPUID 7.0 EDX bit 22) for tdpbf16ps, AVX512-BF16 (7.1 EAX bit 5) for the conversion to bf16.
        var bf16 = (features7 & (1 << 22)) != 0 && (features7_1 & (1 << 5)) != 0 && Avx512BW.IsSupported;
        if (!tile || !int8 || !Avx512F.IsSupported || !Bmi2.X64.IsSupported || !f16c)
        {
            return new(null, "no AMX (the CPU lacks AMX-TILE, AMX-INT8, AVX-512F, BMI2 or F16C)");
        }

        try
        {
            // Tile data is a dynamically enabled state on Linux: the process must ask for it before the first tile instruction.
            if (ArchPrctl(ArchReqXcompPerm, XfeatureXtiledata) != 0)
            {
                return new(null, $"no AMX (the kernel refused the tile data state: errno {Marshal.GetLastPInvokeError()})");
            }

            // The kernels in one executable mapping, each at a 64-byte boundary.
            var offsets = new int[Formats.Length + 4];
            var end = 0;
            for (var i = 0; i < offsets.Length; i++)
            {
                offsets[i] = (end + 63) & ~63;
                end = offsets[i] + Code(i).Length;
            }

            var pageBytes = (nuint)((end + 4095) & ~4095);
            var memory = (byte*)Mmap(null, pageBytes, ProtRead | ProtWrite, MapPrivate | MapAnonymous, -1, 0);
            if (memory == (byte*)-1)
            {
                return new(null, $"no AMX (mmap failed: errno {Marshal.GetLastPInvokeError()})");
            }

            for (var i = 0; i < offsets.Length; i++)
            {
                Code(i).CopyTo(new Span<byte>(memory + offsets[i], Code(i).Length));
            }

            if (Mprotect(memory, pageBytes, ProtRead | ProtExec) != 0)
            {
                return new(null, $"no AMX (mprotect to executable failed: errno {Marshal.GetLastPInvokeError()})");
            }

            // Tiles one block deep: 32 values, 16 for Q6_K. Scratch per value: none for Q8_0 (its grouped weights are
            // the B tiles as they lie, with their fp16 scales); the scales and minimums or offsets, plus 16 rows of
            // unpacked levels for the others.
            byte* config32 = TileConfig(32), config16 = TileConfig(16);
            Kernel[] kernels =
            [
                new(memory + offsets[0], config32, 32, 0, 0),
                new(memory + offsets[1], config32, 32, 32, 20),
                new(memory + offsets[2], config32, 256, 32, 20),
                new(memory + offsets[3], config32, 256, 32, 20),
                new(memory + offsets[4], config16, 256, 16, 24),
            ];
            if (!bf16)
            {
                return new(kernels, "AMX int8 tiles for Q8_0, Q5_0, Q4_K, Q5_K and Q6_K prefill products (no AMX-BF16)");
            }

            var config64 = TileConfig(64);
            var q8_0Bf16 = new Bf16Kernel(memory + offsets[Formats.Length], config64);
            if (Environment.GetEnvironmentVariable("ENCLAVE_CPU_AMX_F16") == "0")
            {
                return new(kernels, "AMX tiles for Q8_0 (bf16), Q5_0, Q4_K, Q5_K and Q6_K (int8) prefill products (F16 and BF16 off: ENCLAVE_CPU_AMX_F16=0)",
                    q8_0Bf16);
            }

            return new(kernels, "AMX tiles for Q8_0, F16 and BF16 (bf16), Q5_0, Q4_K, Q5_K and Q6_K (int8) prefill products", q8_0Bf16,
                new HalfKernel(memory + offsets[Formats.Length + 1], memory + offsets[Formats.Length + 3], config64, splitWeights: true),
                new HalfKernel(memory + offsets[Formats.Length + 2], memory + offsets[Formats.Length + 3], config64, splitWeights: false));
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException)
        {
            return new(null, $"no AMX ({e.Message})");
        }
    }

    /// <summary>
    /// Palette 1; tmm0-3 the int32 results (16 rows × 64 B), tmm4-5 weights (16 rows × <paramref name="blockValues"/>
    /// bytes), tmm6-7 activations (<paramref name="blockValues"/>/4 rows × 64 B). 64 gives all eight tiles 16 rows × 64 B
    /// (the bf16 kernel's fp32 results and A and B tiles).
    /// </summary>
    private static byte* TileConfig(int blockValues)
    {
        var config = (byte*)NativeMemory.AlignedAlloc(64, 64);
        new Span<byte>(config, 64).Clear();
        config[0] = 1;
        var columnBytes = (ushort*)(config + 16);
        var rows = config + 48;
        for (var tile = 0; tile < 8; tile++)
        {
            (columnBytes[tile], rows[tile]) = tile switch
            {
                < 4 => ((ushort)64, (byte)16),
                < 6 => ((ushort)blockValues, (byte)16),
                _ => ((ushort)64, (byte)(blockValues / 4)),
            };
        }
        return config;
    }

    [LibraryImport("libc", EntryPoint = "arch_prctl", SetLastError = true)]
    private static partial int ArchPrctl(int code, ulong address);

    [LibraryImport("libc", EntryPoint = "mmap", SetLastError = true)]
    private static partial void* Mmap(void* address, nuint length, int protection, int flags, int fd, long offset);

    [LibraryImport("libc", EntryPoint = "mprotect", SetLastError = true)]
    private static partial int Mprotect(void* address, nuint length, int protection);
}
