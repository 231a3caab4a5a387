namespace Enclave.Engine.KvCache;

/// <summary>
/// Hands out KV-cache blocks. Each block has a reference count; a block whose count drops to zero returns to the free
/// list. Owned by the scheduler (host side); not thread-safe, the engine loop is its only user.
/// </summary>
public sealed class BlockPool
{
    private readonly int[] referenceCounts;
    private readonly Stack<int> free;

    public BlockPool(int blockCount, int blockSize)
    {
        BlockCount = blockCount;
        BlockSize = blockSize;
        referenceCounts = new int[blockCount];
        free = new Stack<int>(blockCount);
        for (var i = blockCount - 1; i >= 0; i--)
        {
            free.Push(i);
        }
    }

    public int BlockCount { get; }

    public int BlockSize { get; }

    public int FreeBlocks => free.Count;

    public int UsedBlocks => BlockCount - free.Count;

    /// <summary>Blocks needed to hold this many tokens.</summary>
    public int BlocksFor(int tokens) => (tokens + BlockSize - 1) / BlockSize;

    /// <summary>Grows a block table so it can hold <paramref name="tokens"/> tokens; false (and no change) if the pool is short.</summary>
    public bool TryEnsureCapacity(List<int> blockTable, int tokens)
    {
        var needed = BlocksFor(tokens) - blockTable.Count;
        if (needed <= 0)
        {
            return true;
        }

        if (needed > free.Count)
        {
            return false;
        }

        for (var i = 0; i < needed; i++)
        {
            var block = free.Pop();
            referenceCounts[block] = 1;
            blockTable.Add(block);
        }

        return true;
    }

    /// <summary>Drops the table's references; blocks nobody else references return to the pool.</summary>
    public void Release(List<int> blockTable)
    {
        foreach (var block in blockTable)
        {
            if (--referenceCounts[block] == 0)
            {
                free.Push(block);
            }
        }

        blockTable.Clear();
    }
}
