namespace Enclave.Engine.Backends.Cpu;

/// <summary>The element-wise operations split a flat range into pool items of this many elements.</summary>
internal static class CpuElementwise
{
    public const int ChunkElements = 16 * 1024;

    public static int ChunkCount(long elements) => (int)((elements + ChunkElements - 1) / ChunkElements);
}
