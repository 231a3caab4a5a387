using System.Runtime.InteropServices;
using System.Security.Cryptography;

namespace Enclave.Engine.KvCache;

/// <summary>
/// Hands out KV-cache blocks and remembers what full blocks hold, so requests that share a prefix share its blocks.
/// Each block has a reference count. A full block is named by a hash of its tokens chained with its parent block's
/// hash, so equal hashes mean equal whole prefixes, not only equal blocks. A block whose count drops to zero goes
/// to the back of the free queue but keeps its contents and its hash: a later request with the same prefix takes
/// it back from the queue; an allocation takes the block at the front (least recently freed) and forgets its hash
/// (LRU eviction). Owned by the scheduler (host side); not thread-safe, the engine loop is its only user.
/// </summary>
public sealed class BlockPool
{
    private readonly int[] referenceCounts;
    private readonly LinkedList<int> freeQueue = new();
    private readonly LinkedListNode<int>?[] freeNodes;
    private readonly BlockHash?[] hashes;
    private readonly Dictionary<BlockHash, int> cached = [];

    public BlockPool(int blockCount, int blockSize, bool enablePrefixCaching = true)
    {
        BlockCount = blockCount;
        BlockSize = blockSize;
        PrefixCaching = enablePrefixCaching;
        referenceCounts = new int[blockCount];
        freeNodes = new LinkedListNode<int>?[blockCount];
        hashes = new BlockHash?[blockCount];
        for (var i = 0; i < blockCount; i++)
        {
            freeNodes[i] = freeQueue.AddLast(i);
        }
    }

    public int BlockCount { get; }

    public int BlockSize { get; }

    public bool PrefixCaching { get; }

    /// <summary>Blocks no sequence references (cached ones included: they are reclaimed on demand).</summary>
    public int FreeBlocks => freeQueue.Count;

    /// <summary>Blocks referenced by at least one sequence.</summary>
    public int UsedBlocks => BlockCount - freeQueue.Count;

    /// <summary>Full blocks whose contents are known by hash (referenced or not).</summary>
    public int CachedBlocks => cached.Count;

    /// <summary>Prompt tokens looked up in the prefix cache.</summary>
    public long PrefixQueryTokens { get; private set; }

    /// <summary>Prompt tokens found in the prefix cache (their K/V was not recomputed).</summary>
    public long PrefixHitTokens { get; private set; }

    /// <summary>Blocks needed to hold this many tokens.</summary>
    public int BlocksFor(int tokens) => (tokens + BlockSize - 1) / BlockSize;

    public int ReferenceCount(int block) => referenceCounts[block];

    /// <summary>Grows a block table so it can hold <paramref name="tokens"/> tokens; false (and no change) if the pool is short.</summary>
    public bool TryEnsureCapacity(List<int> blockTable, int tokens)
    {
        var needed = BlocksFor(tokens) - blockTable.Count;
        if (needed <= 0)
        {
            return true;
        }

        if (needed > freeQueue.Count)
        {
            return false;
        }

        for (var i = 0; i < needed; i++)
        {
            var block = freeQueue.First!.Value;
            Take(block);
            if (hashes[block] is { } old)
            {
                cached.Remove(old);
                hashes[block] = null;
            }

            blockTable.Add(block);
        }

        return true;
    }

    /// <summary>Drops the table's references; blocks nobody else references join the back of the free queue.</summary>
    public void Release(List<int> blockTable)
    {
        // Tail blocks first, so a prefix's later blocks are evicted before its earlier ones (which more requests share).
        for (var i = blockTable.Count - 1; i >= 0; i--)
        {
            var block = blockTable[i];
            if (--referenceCounts[block] == 0)
            {
                freeNodes[block] = freeQueue.AddLast(block);
            }
        }

        blockTable.Clear();
    }

    /// <summary>
    /// For a sequence that owns no blocks yet: finds the longest run of leading full blocks of <paramref name="tokens"/>
    /// already in the cache, references them and appends them to <paramref name="blockTable"/>. At least one token is
    /// always left to compute (the model needs it to produce logits). Returns the number of tokens found; their hashes
    /// are appended to <paramref name="blockHashes"/>.
    /// </summary>
    public int AcquireCachedPrefix(List<int> tokens, List<int> blockTable, List<BlockHash> blockHashes)
    {
        if (!PrefixCaching || blockTable.Count != 0)
        {
            return 0;
        }

        var maxBlocks = (tokens.Count - 1) / BlockSize;
        PrefixQueryTokens += tokens.Count;
        var parent = BlockHash.Root;
        var hits = 0;
        for (var b = 0; b < maxBlocks; b++)
        {
            var hash = BlockHash.Of(parent, CollectionsMarshal.AsSpan(tokens).Slice(b * BlockSize, BlockSize));
            if (!cached.TryGetValue(hash, out var block))
            {
                break;
            }

            if (referenceCounts[block] == 0)
            {
                Take(block);
            }
            else
            {
                referenceCounts[block]++;
            }

            blockTable.Add(block);
            blockHashes.Add(hash);
            parent = hash;
            hits++;
        }

        PrefixHitTokens += (long)hits * BlockSize;
        return hits * BlockSize;
    }

    /// <summary>
    /// Names the blocks of a sequence that became full since the last call (their K/V is computed for
    /// <paramref name="computedTokens"/> tokens), so later requests can reuse them.
    /// </summary>
    public void RegisterFullBlocks(List<int> tokens, int computedTokens, List<int> blockTable, List<BlockHash> blockHashes)
    {
        if (!PrefixCaching)
        {
            return;
        }

        var full = Math.Min(computedTokens / BlockSize, blockTable.Count);
        for (var b = blockHashes.Count; b < full; b++)
        {
            var parent = b == 0 ? BlockHash.Root : blockHashes[b - 1];
            var hash = BlockHash.Of(parent, CollectionsMarshal.AsSpan(tokens).Slice(b * BlockSize, BlockSize));
            blockHashes.Add(hash);
            var block = blockTable[b];
            if (hashes[block] is null && !cached.ContainsKey(hash))
            {
                hashes[block] = hash;
                cached[hash] = block;
            }
        }
    }

    private void Take(int block)
    {
        freeQueue.Remove(freeNodes[block]!);
        freeNodes[block] = null;
        referenceCounts[block] = 1;
    }
}

/// <summary>128 bits of SHA-256 over the parent block's hash and a block's token ids: names a whole prefix.</summary>
public readonly record struct BlockHash(ulong High, ulong Low)
{
    public static readonly BlockHash Root = new(0x656e636c617665UL, 0);

    public static BlockHash Of(BlockHash parent, ReadOnlySpan<int> blockTokens)
    {
        var buffer = new byte[16 + (blockTokens.Length * sizeof(int))];
        BitConverter.TryWriteBytes(buffer.AsSpan(0, 8), parent.High);
        BitConverter.TryWriteBytes(buffer.AsSpan(8, 8), parent.Low);
        MemoryMarshal.AsBytes(blockTokens).CopyTo(buffer.AsSpan(16));
        Span<byte> digest = stackalloc byte[32];
        SHA256.HashData(buffer, digest);
        return new BlockHash(BitConverter.ToUInt64(digest[..8]), BitConverter.ToUInt64(digest.Slice(8, 8)));
    }
}
