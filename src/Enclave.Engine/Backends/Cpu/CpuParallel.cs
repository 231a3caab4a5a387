namespace Enclave.Engine.Backends.Cpu;

internal static class CpuParallel
{
    // Below this much work per call the pool's hand-off costs more than it saves.
    private const long MinElementsPerItem = 16 * 1024;

    /// <summary>How many rows of <paramref name="columns"/> elements one pool item should take.</summary>
    public static int ItemsPerChunk(int rows, int columns, int threads)
    {
        var perRow = Math.Max(1, columns);
        var minRows = (int)Math.Max(1, MinElementsPerItem / perRow);
        var fair = (rows + (threads * 4) - 1) / (threads * 4);
        return Math.Max(1, Math.Max(minRows, fair));
    }
}
