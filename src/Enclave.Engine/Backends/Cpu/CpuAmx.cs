using System.Runtime.InteropServices;
using System.Runtime.Intrinsics.X86;

namespace Enclave.Engine.Backends.Cpu;

/// <summary>
/// Intel AMX tile products for the CPU backend (Sapphire Rapids and later Xeons). .NET has no AMX intrinsics, so the
/// kernels are C (tools/cpu-kernels) compiled ahead of time into position-independent machine code
/// (<see cref="AmxCode"/>, regenerated and compared by the test suite) that is copied once into executable memory and
/// called through a function pointer. Used on Linux x64 when CPUID reports AMX-TILE and AMX-INT8 with AVX-512F, BMI2 and
/// F16C and the kernel grants the process the tile data state (arch_prctl ARCH_REQ_XCOMP_PERM); ENCLAVE_CPU_AMX=0
/// turns it off, for comparisons.
/// </summary>
internal static unsafe partial class CpuAmx
{
    /// <summary>
    /// Bytes of scratch one call of the Q8_0 kernel needs (64-byte aligned) for rows of <paramref name="blocks"/> blocks:
    /// four int32 tiles, one fp32 tile and the 16 rows' weight scales.
    /// </summary>
    public static long Q8_0ScratchBytes(int blocks) => (5 * 1024) + (blocks * 64L);

    /// <summary>
    /// Bytes of scratch one call of the Q4_K or Q5_K kernel needs for rows of <paramref name="superBlocks"/> super-blocks: as
    /// Q8_0's, plus the 16 rows' block scales and minimums and their levels unpacked to bytes.
    /// </summary>
    public static long Q4_KScratchBytes(int superBlocks) => (5 * 1024) + (superBlocks * (1024L + 4096L));

    /// <summary>As <see cref="Q4_KScratchBytes"/> for Q5_0 rows of <paramref name="blocks"/> blocks of 32.</summary>
    public static long Q5_0ScratchBytes(int blocks) => (5 * 1024) + (blocks * (128L + 512L));

    /// <summary>As <see cref="Q4_KScratchBytes"/> for Q6_K, whose blocks are 16 values (twice the scales).</summary>
    public static long Q6_KScratchBytes(int superBlocks) => (5 * 1024) + (superBlocks * (2048L + 4096L));

    private const int ArchReqXcompPerm = 0x1023;
    private const int XfeatureXtiledata = 18;
    private const int ProtRead = 1, ProtWrite = 2, ProtExec = 4, MapPrivate = 2, MapAnonymous = 0x20;

    private static readonly Lazy<State> Loaded = new(Load);

    /// <summary>Whether the AMX kernels run on this machine.</summary>
    public static bool IsSupported => Loaded.Value.Code != null;

    /// <summary>Why they do or do not, for start-up logs and test skip reasons.</summary>
    public static string Status => Loaded.Value.Status;

    /// <summary>
    /// 16 Q8_0 weight rows against every 16-token tile of the activations (tools/cpu-kernels/q8_0_amx.c has the
    /// layouts): (w, rowBytes, blocks, xq, xs, tokenTiles, tokens, y, yStride, bias, scratch, config).
    /// </summary>
    public static delegate* unmanaged<byte*, long, int, sbyte*, float*, int, int, float*, long, float*, int*, byte*, void> Q8_0 =>
        (delegate* unmanaged<byte*, long, int, sbyte*, float*, int, int, float*, long, float*, int*, byte*, void>)Loaded.Value.Code;

    /// <summary>
    /// 16 Q4_K weight rows against every 16-token tile (tools/cpu-kernels/q4_k_amx.c): (w, rowBytes, superBlocks, xq,
    /// xs, xsum, tokenTiles, tokens, y, yStride, bias, scratch, config).
    /// </summary>
    public static delegate* unmanaged<byte*, long, int, sbyte*, float*, float*, int, int, float*, long, float*, int*, byte*, void> Q4_K =>
        (delegate* unmanaged<byte*, long, int, sbyte*, float*, float*, int, int, float*, long, float*, int*, byte*, void>)(Loaded.Value.Code + Q4_KOffset);

    /// <summary>
    /// 16 Q5_0 weight rows against every 16-token tile (tools/cpu-kernels/q5_0_amx.c), arguments as <see cref="Q4_K"/>
    /// but blocks of 32 where it takes super-blocks.
    /// </summary>
    public static delegate* unmanaged<byte*, long, int, sbyte*, float*, float*, int, int, float*, long, float*, int*, byte*, void> Q5_0 =>
        (delegate* unmanaged<byte*, long, int, sbyte*, float*, float*, int, int, float*, long, float*, int*, byte*, void>)(Loaded.Value.Code + Q5_0Offset);

    /// <summary>16 Q5_K weight rows against every 16-token tile (tools/cpu-kernels/q5_k_amx.c), arguments as <see cref="Q4_K"/>.</summary>
    public static delegate* unmanaged<byte*, long, int, sbyte*, float*, float*, int, int, float*, long, float*, int*, byte*, void> Q5_K =>
        (delegate* unmanaged<byte*, long, int, sbyte*, float*, float*, int, int, float*, long, float*, int*, byte*, void>)(Loaded.Value.Code + Q5_KOffset);

    /// <summary>16 Q6_K weight rows against every 16-token tile (tools/cpu-kernels/q6_k_amx.c), arguments as <see cref="Q4_K"/>.</summary>
    public static delegate* unmanaged<byte*, long, int, sbyte*, float*, float*, int, int, float*, long, float*, int*, byte*, void> Q6_K =>
        (delegate* unmanaged<byte*, long, int, sbyte*, float*, float*, int, int, float*, long, float*, int*, byte*, void>)(Loaded.Value.Code + Q6_KOffset);

    /// <summary>
    /// The 64-byte tile configuration a kernel loads: int32 result tiles 16×64 B, weight tiles 16 rows × one block,
    /// activation tiles one block deep (32 values for Q8_0 and Q4_K, 16 for Q6_K).
    /// </summary>
    public static byte* ConfigFor(DType type) => type == DType.Q6_K ? Loaded.Value.Config16 : Loaded.Value.Config32;

    private static int Q4_KOffset => (AmxCode.Q8_0.Length + 63) & ~63;

    private static int Q6_KOffset => (Q4_KOffset + AmxCode.Q4_K.Length + 63) & ~63;

    private static int Q5_0Offset => (Q6_KOffset + AmxCode.Q6_K.Length + 63) & ~63;

    private static int Q5_KOffset => (Q5_0Offset + AmxCode.Q5_0.Length + 63) & ~63;

    private sealed class State(byte* code, byte* config32, byte* config16, string status)
    {
        public byte* Code { get; } = code;

        public byte* Config32 { get; } = config32;

        public byte* Config16 { get; } = config16;

        public string Status { get; } = status;
    }

    private static State Load()
    {
        if (Environment.GetEnvironmentVariable("ENCLAVE_CPU_AMX") == "0")
        {
            return new(null, null, null, "AMX off (ENCLAVE_CPU_AMX=0)");
        }

        if (!OperatingSystem.IsLinux() || RuntimeInformation.ProcessArchitecture != Architecture.X64)
        {
            return new(null, null, null, "no AMX kernels (they run on Linux x64)");
        }

        var (_, _, features1, _) = X86Base.CpuId(1, 0);
        var (_, _, _, features7) = X86Base.CpuId(7, 0);
        bool tile = (features7 & (1 << 24)) != 0, int8 = (features7 & (1 << 25)) != 0, f16c = (features1 & (1 << 29)) != 0;
        if (!tile || !int8 || !Avx512F.IsSupported || !Bmi2.X64.IsSupported || !f16c)
        {
            return new(null, null, null, "no AMX (the CPU lacks AMX-TILE, AMX-INT8, AVX-512F, BMI2 or F16C)");
        }

        try
        {
            // Tile data is a dynamically enabled state on Linux: the process must ask for it before the first tile instruction.
            if (ArchPrctl(ArchReqXcompPerm, XfeatureXtiledata) != 0)
            {
                return new(null, null, null, $"no AMX (the kernel refused the tile data state: errno {Marshal.GetLastPInvokeError()})");
            }

            // The kernels in one executable mapping, each at a 64-byte boundary: Q8_0, Q4_K, Q6_K, Q5_0, Q5_K.
            ReadOnlySpan<byte> q8_0 = AmxCode.Q8_0, q4_k = AmxCode.Q4_K, q6_k = AmxCode.Q6_K, q5_0 = AmxCode.Q5_0, q5_k = AmxCode.Q5_K;
            var pageBytes = (nuint)((Q5_KOffset + q5_k.Length + 4095) & ~4095);
            var memory = Mmap(null, pageBytes, ProtRead | ProtWrite, MapPrivate | MapAnonymous, -1, 0);
            if (memory == (void*)-1)
            {
                return new(null, null, null, $"no AMX (mmap failed: errno {Marshal.GetLastPInvokeError()})");
            }

            q8_0.CopyTo(new Span<byte>(memory, q8_0.Length));
            q4_k.CopyTo(new Span<byte>((byte*)memory + Q4_KOffset, q4_k.Length));
            q6_k.CopyTo(new Span<byte>((byte*)memory + Q6_KOffset, q6_k.Length));
            q5_0.CopyTo(new Span<byte>((byte*)memory + Q5_0Offset, q5_0.Length));
            q5_k.CopyTo(new Span<byte>((byte*)memory + Q5_KOffset, q5_k.Length));
            if (Mprotect(memory, pageBytes, ProtRead | ProtExec) != 0)
            {
                return new(null, null, null, $"no AMX (mprotect to executable failed: errno {Marshal.GetLastPInvokeError()})");
            }

            return new((byte*)memory, TileConfig(32), TileConfig(16), "AMX int8 tiles for Q8_0, Q5_0, Q4_K, Q5_K and Q6_K prefill products");
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException)
        {
            return new(null, null, null, $"no AMX ({e.Message})");
        }
    }

    /// <summary>
    /// Palette 1; tmm0-3 the int32 results (16 rows × 64 B), tmm4-5 weights (16 rows × <paramref name="blockValues"/>
    /// bytes), tmm6-7 activations (<paramref name="blockValues"/>/4 rows × 64 B).
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
