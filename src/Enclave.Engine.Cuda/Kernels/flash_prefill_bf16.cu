// Tiled causal prefill attention over a bf16 KV cache on bf16 tensor cores (tensor-core mode). GQA row packing
// (row = query * group + head in group, so each K/V tile read from the paged cache serves the whole group), causal
// online softmax in log2 units and the m16n8k16 fragment layouts of flash_mma.cuh.
//
// A block takes FB_ROWS = 128 packed rows with 4 warps, each warp 32 rows as two m16 tiles: each K and V fragment
// read from shared memory feeds two MMAs, and a K/V tile copy and its barrier serve twice the rows of the earlier
// 64-row blocks of 16-row warps. The 32-row accumulators (o: 128 floats, scores: 64) leave no registers for Q, so Q
// (scaled by scale * log2(e), rounded to bf16) is staged once in shared memory and its A fragments are read with
// ldmatrix at each k-step. Two blocks fit a multiprocessor at D 128 (255 registers, 103 KB of shared memory each).
//
// K and V tiles of FB_BN keys are copied from the paged cache as stored (cp.async, 16 bytes a copy, no conversion)
// into two stages: at the top of tile j every thread waits for its copies of tile j, one barrier makes them visible
// to all and tells that every warp is done with tile j - 1, and the copies of tile j + 1 go into the stage tile j - 1
// used, so they run behind all of tile j's MMAs and softmax. One barrier and one wait per tile (the single-buffered
// kernel had two of each, and its V and next-K copies had only half a tile to hide behind).
// The keys' cache rows (block table lookup, a division by the block size) are worked out once per key into shared
// memory, a tile ahead of the copies that use them, by FB_BN threads: per-copy lookups were about a third of the
// instructions a tile issued (2k tokens, 7B shape: 261 -> 199 us).
// Blocks take their work in the order (row tile, sequence, KV head) with the KV head fastest, whatever the grid's
// shape, so every KV head's heaviest row tiles start first (largest-first across the whole grid, not per KV head).
// K fragments (B of q·k, keys as columns) are read with ldmatrix, V fragments (B of p·v, keys as rows) with
// ldmatrix.trans, which hands each lane the (key, key + 1) pairs of a dim that the m16n8k16 B layout wants from a
// tile stored key-major; P goes from the score registers straight into A fragments. The causal mask (no division:
// key visible to row r when (key - first_position) * group <= r) runs only on the tiles that reach past a warp's first
// row, and a warp skips a tile that lies wholly past its last row. Row sums stay per lane and are reduced across the
// quad once, at the end; a warp whose row maxima did not move skips rescaling its accumulators.
// Measured with tools/gpu/flash-harness on an H100, 7B shape (28/4 heads, head_dim 128), one causal sequence:
// 2k tokens 402 -> 153 us (75 -> 197 TFLOP/s; torch's FlashAttention-2 path 151 us, its cuDNN path 75 us),
// 8k 5405 -> 1627 us (89 -> 296 TFLOP/s), 512 59 -> 37 us. 8 warps of one m-tile (256 threads) were faster at
// head_dim 64 (14/2 heads, 2k: 51 us against about 72) and on decode steps, slower at head_dim 128 (2k 186 us, 8k
// 1996 us).
// head_dim must be a multiple of 8 and at most D (64 or 128); dims past head_dim and keys past the span's end are
// zero-filled by the copies.
// Decode steps (a few packed rows per sequence) may cut the keys into `splits` spans of whole tiles, the block's
// row-tile index = row tile * splits + split: each split writes its rows' unnormalised output and (max, sum) to
// partial_out and partial_stats in the layout of the decode attention kernels (max in natural-log units), and
// attention_combine merges them; a split past the sequence's keys writes an empty partial. splits 1 writes the output
// directly. A warp whose second m-tile has no rows (decode) runs the first alone.
// Launch (CudaBackend.FlashPrefill, which mirrors FB_ROWS and FB_SMEM_BYTES): grid (row tiles * splits, sequences,
// KV heads), FB_THREADS threads, FB_SMEM_BYTES(D) bytes of dynamic shared memory (past the 48 KB default, so the
// function's limit is raised first). The FB_ settings below can be overridden only for measuring variants.
#include "flash_mma.cuh"

#ifndef FB_WARPS
#define FB_WARPS 4
#endif
#ifndef FB_MT
#define FB_MT 2 // m16 tiles per warp
#endif
#define FB_THREADS (32 * FB_WARPS)
#define FB_ROWS (16 * FB_MT * FB_WARPS)
#ifndef FB_BN
#define FB_BN 64
#endif
#ifndef FB_STAGES
#define FB_STAGES 2 // K/V tiles in flight (2 or 3)
#endif
// Q [FB_ROWS][D + 8], then K [FB_STAGES][FB_BN][D + 8] and V [FB_STAGES][FB_BN][D + 8], bf16. Rows of D + 8 halves (272 bytes at D 128)
// put the 8 rows of an ldmatrix in distinct banks.
#define FB_SMEM_BYTES(D) ((FB_ROWS + 2 * FB_STAGES * FB_BN) * ((D) + 8) * 2)

__device__ __forceinline__ unsigned int shared_address(const void* p)
{
    unsigned int r;
    asm volatile("{ .reg .u64 a; cvta.to.shared.u64 a, %1; cvt.u32.u64 %0, a; }" : "=r"(r) : "l"(p));
    return r;
}

// 16 bytes from global to shared memory, or 16 zero bytes when !valid (src is then not read).
__device__ __forceinline__ void copy16_async(unsigned int dst, const void* src, bool valid)
{
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(dst), "l"(src), "r"(valid ? 16 : 0));
}

__device__ __forceinline__ void copies_commit() { asm volatile("cp.async.commit_group;"); }
// Waits until at most N of this thread's most recent copy groups are still in flight.
template <int N>
__device__ __forceinline__ void copies_wait() { asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory"); }

__device__ __forceinline__ void ldmatrix_x4(unsigned int r[4], unsigned int address)
{
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(address));
}

__device__ __forceinline__ void ldmatrix_x4_trans(unsigned int r[4], unsigned int address)
{
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(address));
}

__device__ __forceinline__ float fast_exp2(float x)
{
    float r;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(x));
    return r;
}

// The cache row of key p (table lookup), or -1 past key_stop.
__device__ __forceinline__ int cache_row(const int* __restrict__ table, int block_size, int p, int key_stop)
{
    return p < key_stop ? table[p / block_size] * block_size + p % block_size : -1;
}

// Starts copying one tile of FB_BN keys of one KV head, whose cache rows (-1: none, zero-filled) are rows[0 ..
// FB_BN - 1], into the K and V tiles at k_tile and v_tile (shared addresses, [FB_BN][D + 8] bf16, key-major). A
// thread copies the 16-byte piece threadIdx.x % (D / 8) of every (FB_THREADS / (D / 8))-th key; key_src and value_src
// already point at that piece of the KV head in cache row 0.
template <int D>
__device__ __forceinline__ void copy_kv_async(unsigned int k_tile, unsigned int v_tile, const u16* key_src, const u16* value_src,
                                              const int* rows, long row_width, bool piece_used)
{
    constexpr int CHUNKS = D / 8;                 // 16-byte pieces of a row
    constexpr int KSTEP = FB_THREADS / CHUNKS;    // keys a pass of the block covers
    const int c = threadIdx.x % CHUNKS, kk0 = threadIdx.x / CHUNKS;
#pragma unroll
    for (int i = 0; i < FB_BN / KSTEP; i++)
    {
        const int kk = kk0 + i * KSTEP;
        const int row = rows[kk];
        const bool valid = row >= 0 && piece_used;
        const long offset = valid ? row * row_width : 0;
        const unsigned int dst = (unsigned int)((kk * (D + 8) + 8 * c) * 2);
        copy16_async(k_tile + dst, key_src + offset, valid);
        copy16_async(v_tile + dst, value_src + offset, valid);
    }
}

// A key is visible to packed row r (query first_position + r / group) when (key - first_position) * group <= r, so the
// mask needs no division; `row` is the lane's row g of m-tile 0. Rows past the block's rows are not masked (their
// scores are finite and never stored).
template <int D, int MT, int MTA>
__device__ __forceinline__ void attend_tile(float (&o)[MT][D / 8][4], float (&m)[MT][2], float (&l)[MT][2], unsigned int q_address,
                                            unsigned int k_address, unsigned int v_address, int key0, bool masked, int row,
                                            int group, int first_position, int t)
{
    constexpr int S2 = (D + 8) * 2; // row stride in bytes
    constexpr int DK = D / 16;      // k-steps of q·k over the head dim
    constexpr int NT = FB_BN / 8;   // n-tiles of a score tile
    constexpr int KK = FB_BN / 16;  // k-steps of p·v over the keys
    constexpr int DN = D / 8;       // n-tiles of the output

    // Scores S[16 MTA x FB_BN] = (Q scaled) · Kᵀ. Q matrix i: rows 8 (i & 1) .., dims 16k + 8 (i >> 1); K matrix i:
    // keys 16jj + 8 (i >> 1) .., dims 16k + 8 (i & 1): the B halves of n-tiles 2jj and 2jj + 1.
    float sc[MT][NT][4];
#pragma unroll
    for (int mt = 0; mt < MTA; mt++)
#pragma unroll
        for (int j = 0; j < NT; j++) sc[mt][j][0] = sc[mt][j][1] = sc[mt][j][2] = sc[mt][j][3] = 0.f;
#pragma unroll
    for (int k = 0; k < DK; k++)
    {
        unsigned int a[MT][4];
#pragma unroll
        for (int mt = 0; mt < MTA; mt++) ldmatrix_x4(a[mt], q_address + mt * 16 * S2 + k * 32);
#pragma unroll
        for (int jj = 0; jj < NT / 2; jj++)
        {
            unsigned int b[4];
            ldmatrix_x4(b, k_address + jj * 16 * S2 + k * 32);
#pragma unroll
            for (int mt = 0; mt < MTA; mt++)
            {
                MmaBf16::mma(sc[mt][2 * jj], a[mt][0], a[mt][1], a[mt][2], a[mt][3], b[0], b[1]);
                MmaBf16::mma(sc[mt][2 * jj + 1], a[mt][0], a[mt][1], a[mt][2], a[mt][3], b[2], b[3]);
            }
        }
    }

    // Online softmax, a row's values in the 4 lanes of its quad; a row with no visible key yet keeps max -inf and adds
    // zeros. l stays this lane's share of the row sum. Once the running maxima settle, every correction is 1 and the
    // warp skips rescaling its accumulators.
    float correction[MT][2];
#pragma unroll
    for (int mt = 0; mt < MTA; mt++)
#pragma unroll
        for (int h = 0; h < 2; h++)
        {
            if (masked)
            {
#pragma unroll
                for (int j = 0; j < NT; j++)
#pragma unroll
                    for (int e = 0; e < 2; e++)
                        if ((key0 - first_position + 8 * j + 2 * t + e) * group > row + 16 * mt + 8 * h) sc[mt][j][2 * h + e] = NEG_INF;
            }
            float tile_max = NEG_INF;
#pragma unroll
            for (int j = 0; j < NT; j++) tile_max = fmaxf(tile_max, fmaxf(sc[mt][j][2 * h], sc[mt][j][2 * h + 1]));
            tile_max = fmaxf(tile_max, __shfl_xor_sync(0xffffffffu, tile_max, 1));
            tile_max = fmaxf(tile_max, __shfl_xor_sync(0xffffffffu, tile_max, 2));
            const float m_new = fmaxf(m[mt][h], tile_max);
            const float reference = m_new == NEG_INF ? 0.f : m_new;
            correction[mt][h] = fast_exp2(m[mt][h] - reference);
            float sum = 0.f;
#pragma unroll
            for (int j = 0; j < NT; j++)
#pragma unroll
                for (int e = 0; e < 2; e++)
                {
                    float& v = sc[mt][j][2 * h + e];
                    v = fast_exp2(v - reference);
                    sum += v;
                }
            l[mt][h] = l[mt][h] * correction[mt][h] + sum;
            m[mt][h] = m_new;
        }
    bool rescale = false;
#pragma unroll
    for (int mt = 0; mt < MTA; mt++) rescale |= correction[mt][0] != 1.f || correction[mt][1] != 1.f;
    if (__any_sync(0xffffffffu, rescale))
    {
#pragma unroll
        for (int mt = 0; mt < MTA; mt++)
#pragma unroll
            for (int n = 0; n < DN; n++)
            {
                o[mt][n][0] *= correction[mt][0];
                o[mt][n][1] *= correction[mt][0];
                o[mt][n][2] *= correction[mt][1];
                o[mt][n][3] *= correction[mt][1];
            }
    }

    // O[16 MTA x D] += P[16 MTA x FB_BN] · V[FB_BN x D]. V matrix i (x4.trans): keys 16kk + 8 (i & 1) .., dims
    // 16np + 8 (i >> 1): the B halves of output n-tiles 2np, 2np + 1.
#pragma unroll
    for (int kk = 0; kk < KK; kk++)
    {
        unsigned int a[MT][4];
#pragma unroll
        for (int mt = 0; mt < MTA; mt++) flash_p_fragment<MmaBf16>(sc[mt][2 * kk], sc[mt][2 * kk + 1], a[mt][0], a[mt][1], a[mt][2], a[mt][3]);
#pragma unroll
        for (int np = 0; np < DN / 2; np++)
        {
            unsigned int b[4];
            ldmatrix_x4_trans(b, v_address + kk * 16 * S2 + np * 32);
#pragma unroll
            for (int mt = 0; mt < MTA; mt++)
            {
                MmaBf16::mma(o[mt][2 * np], a[mt][0], a[mt][1], a[mt][2], a[mt][3], b[0], b[1]);
                MmaBf16::mma(o[mt][2 * np + 1], a[mt][0], a[mt][1], a[mt][2], a[mt][3], b[2], b[3]);
            }
        }
    }
}

template <int D>
__device__ __forceinline__ void flash_prefill_bf16(
    const float* __restrict__ q, const u16* __restrict__ key_cache, const u16* __restrict__ value_cache,
    float* __restrict__ out, const int* __restrict__ seq_query_start, const int* __restrict__ seq_query_len,
    const int* __restrict__ seq_context, const int* __restrict__ seq_table_offset, const int* __restrict__ tables,
    int heads, int kv_heads, int head_dim, int block_size, float scale, float* __restrict__ partial_out,
    float* __restrict__ partial_stats, int splits, u16* smem)
{
    constexpr int S = D + 8; // tile row stride in halves
    constexpr int DN = D / 8; // n-tiles of the output
    constexpr int MT = FB_MT;
    constexpr unsigned int TILE_BYTES = FB_BN * S * 2;

    // The grid is (row tiles * splits, sequences, KV heads); blocks start in launch order, so they take their work
    // with the KV head varying fastest, then the sequence, then the row tile: every KV head's heaviest row tiles (the
    // last, which see the most keys) start first, and the light ones fill in behind them.
    const unsigned int linear = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
    const int kvh = (int)(linear % gridDim.z);
    const int seq = (int)(linear / gridDim.z % gridDim.y);
    const int tile_split = (int)(linear / (gridDim.z * gridDim.y));
    int group, rows, row0, first_position, q_start, key_end;
    const int* table;
    const int split = tile_split % splits;
    if (!flash_block(seq_query_start, seq_query_len, seq_context, seq_table_offset, tables, heads, kv_heads, seq, tile_split / splits,
                     gridDim.x / splits, FB_ROWS, group, rows, row0, first_position, q_start, key_end, table))
        return;

    // This split's keys [key_begin, key_stop): spans of whole FB_BN tiles, so a tile never straddles two splits.
    const int span = (key_end + splits - 1) / splits;
    const int key_span = (span + FB_BN - 1) / FB_BN * FB_BN;
    const int key_begin = split * key_span;
    const int key_stop = min(key_end, key_begin + key_span);
    const int tiles = key_begin < key_stop ? (key_stop - key_begin + FB_BN - 1) / FB_BN : 0;

    const long row_width = (long)kv_heads * head_dim;
    const long head_offset = (long)kvh * head_dim;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int g = lane >> 2, t = lane & 3;
    const unsigned int q_base = shared_address(smem), k_base = q_base + FB_ROWS * S * 2, v_base = k_base + FB_STAGES * TILE_BYTES;

    // Cache rows of the keys of tile i in s_rows[i % 4]: the first FB_STAGES tiles' now, each later one a tile before
    // its copies start (its table reads then run behind a tile's MMAs).
    __shared__ int s_rows[4][FB_BN];
    for (int i = threadIdx.x; i < FB_STAGES * FB_BN; i += FB_THREADS)
        s_rows[i / FB_BN][i % FB_BN] = cache_row(table, block_size, key_begin + i, key_stop);
    __syncthreads();
    const int piece = threadIdx.x % (D / 8);
    const u16* key_src = key_cache + head_offset + 8 * piece;
    const u16* value_src = value_cache + head_offset + 8 * piece;
    const bool piece_used = 8 * piece < head_dim;
#pragma unroll
    for (int i = 0; i < FB_STAGES - 1; i++)
    {
        if (i < tiles) copy_kv_async<D>(k_base + i * TILE_BYTES, v_base + i * TILE_BYTES, key_src, value_src, s_rows[i], row_width, piece_used);
        copies_commit(); // a group a tile, empty or not, so that the wait below counts tiles
    }

    // Q rows of the block, scaled and rounded to bf16, into shared memory while the first tile's copies run; rows
    // past the sequence's rows and dims past head_dim are zero. The first loop barrier makes them visible.
    const float scale2 = scale * FLASH_LOG2E;
    {
        constexpr int C4 = D / 4; // float4 pieces of a row
#pragma unroll 4
        for (int idx = threadIdx.x; idx < FB_ROWS * C4; idx += FB_THREADS)
        {
            const int r = idx / C4, c = idx % C4, row = row0 + r;
            float4 v = make_float4(0.f, 0.f, 0.f, 0.f);
            if (row < rows && 4 * c < head_dim)
                v = *reinterpret_cast<const float4*>(q + ((long)(q_start + row / group) * heads + kvh * group + row % group) * head_dim + 4 * c);
            uint2 packed;
            packed.x = MmaBf16::pack(v.x * scale2, v.y * scale2);
            packed.y = MmaBf16::pack(v.z * scale2, v.w * scale2);
            *reinterpret_cast<uint2*>(smem + r * S + 4 * c) = packed;
        }
    }

    const int warp_row0 = row0 + warp * 16 * MT;
    const bool warp_active = warp_row0 < rows;
    const bool second = warp_row0 + 16 < rows; // the second m-tile has rows
    const int warp_first = first_position + warp_row0 / group;
    const int warp_last = first_position + (min(warp_row0 + 16 * MT, rows) - 1) / group;

    float o[MT][DN][4];
#pragma unroll
    for (int mt = 0; mt < MT; mt++)
#pragma unroll
        for (int n = 0; n < DN; n++) o[mt][n][0] = o[mt][n][1] = o[mt][n][2] = o[mt][n][3] = 0.f;
    float m[MT][2], l[MT][2];
#pragma unroll
    for (int mt = 0; mt < MT; mt++) m[mt][0] = m[mt][1] = NEG_INF, l[mt][0] = l[mt][1] = 0.f;

    const int matrix = lane >> 3, matrix_row = lane & 7;
    const unsigned int q_address = q_base + (((warp * 16 * MT + 8 * (matrix & 1) + matrix_row) * S + 8 * (matrix >> 1)) * 2);
    const unsigned int k_offset = ((8 * (matrix >> 1) + matrix_row) * S + 8 * (matrix & 1)) * 2;
    const unsigned int v_offset = ((8 * (matrix & 1) + matrix_row) * S + 8 * (matrix >> 1)) * 2;

    unsigned int stage = 0, ahead_stage = (FB_STAGES - 1) * TILE_BYTES; // of tiles j and j + FB_STAGES - 1
    for (int j = 0; j < tiles; j++)
    {
        const int key0 = key_begin + j * FB_BN;
        copies_wait<FB_STAGES - 2>();
        __syncthreads(); // tile j has landed for every thread; every warp is done with tile j - 1 and its stage
        if (j + FB_STAGES - 1 < tiles)
            copy_kv_async<D>(k_base + ahead_stage, v_base + ahead_stage, key_src, value_src, s_rows[(j + FB_STAGES - 1) % 4], row_width, piece_used);
        copies_commit();
        int later_row = -1;
        if (threadIdx.x < FB_BN) later_row = cache_row(table, block_size, key0 + FB_STAGES * FB_BN + threadIdx.x, key_stop);
        if (warp_active && key0 <= warp_last)
        {
            const bool masked = key0 + FB_BN - 1 > warp_first;
            if (second)
                attend_tile<D, MT, MT>(o, m, l, q_address, k_base + stage + k_offset, v_base + stage + v_offset, key0, masked, warp_row0 + g,
                                       group, first_position, t);
            else
                attend_tile<D, MT, 1>(o, m, l, q_address, k_base + stage + k_offset, v_base + stage + v_offset, key0, masked, warp_row0 + g,
                                      group, first_position, t);
        }
        if (threadIdx.x < FB_BN) s_rows[(j + FB_STAGES) % 4][threadIdx.x] = later_row;
        stage = stage == (FB_STAGES - 1) * TILE_BYTES ? 0 : stage + TILE_BYTES;
        ahead_stage = ahead_stage == (FB_STAGES - 1) * TILE_BYTES ? 0 : ahead_stage + TILE_BYTES;
    }

#pragma unroll
    for (int mt = 0; mt < MT; mt++)
#pragma unroll
        for (int h = 0; h < 2; h++)
        {
            l[mt][h] += __shfl_xor_sync(0xffffffffu, l[mt][h], 1);
            l[mt][h] += __shfl_xor_sync(0xffffffffu, l[mt][h], 2);
        }

    // The lane's output rows: g + 8h of each of the warp's m-tiles (null past the block's rows).
    float* out_row[MT][2];
#pragma unroll
    for (int mt = 0; mt < MT; mt++)
#pragma unroll
        for (int h = 0; h < 2; h++)
        {
            const int row = warp_row0 + 16 * mt + g + 8 * h;
            out_row[mt][h] = row < rows ? out + ((long)(q_start + row / group) * heads + kvh * group + row % group) * head_dim : nullptr;
        }

    if (splits == 1)
    {
#pragma unroll
        for (int mt = 0; mt < MT; mt++)
            flash_store_output<DN>(out_row[mt], o[mt], l[mt], head_dim, t);
        return;
    }

    // Partial of output row r (= (token * heads + head)) for this split: [r * splits + split]; o is still unnormalised
    // and m (log2 units, from the scaled q) converts to the natural-log units attention_combine merges in.
#pragma unroll
    for (int mt = 0; mt < MT; mt++)
#pragma unroll
        for (int h = 0; h < 2; h++)
        {
            if (out_row[mt][h] == nullptr) continue;
            const long part = ((out_row[mt][h] - out) / head_dim) * splits + split;
            if (t == 0)
            {
                partial_stats[2 * part] = m[mt][h] == NEG_INF ? NEG_INF : m[mt][h] * FLASH_LN2;
                partial_stats[2 * part + 1] = l[mt][h];
            }
#pragma unroll
            for (int n = 0; n < DN; n++)
            {
                const int d = 8 * n + 2 * t;
                if (d < head_dim)
                {
                    partial_out[part * head_dim + d] = o[mt][n][2 * h];
                    partial_out[part * head_dim + d + 1] = o[mt][n][2 * h + 1];
                }
            }
        }
}

// Two blocks a multiprocessor at both head-dim bounds (three at D 64 capped registers at 168 and spilled: 2k tokens 79 us
// against about 72).
#define FLASH_BF16_KERNEL(D, MIN_BLOCKS)                                                                                 \
    extern "C" __global__ void __launch_bounds__(FB_THREADS, MIN_BLOCKS) flash_prefill_bf16_d##D##_kvbf16(             \
        const float* __restrict__ q, const u16* __restrict__ key_cache, const u16* __restrict__ value_cache,           \
        float* __restrict__ out, const int* __restrict__ seq_query_start, const int* __restrict__ seq_query_len,       \
        const int* __restrict__ seq_context, const int* __restrict__ seq_table_offset, const int* __restrict__ tables, \
        int heads, int kv_heads, int head_dim, int block_size, float scale, float* __restrict__ partial_out,           \
        float* __restrict__ partial_stats, int splits)                                                                 \
    {                                                                                                                  \
        ENCLAVE_DYNAMIC_SHARED(uint4, fb_smem); /* uint4: 16-byte aligned; FB_SMEM_BYTES(D) bytes */                 \
        launch_gate();                                                                                                 \
        flash_prefill_bf16<D>(q, key_cache, value_cache, out, seq_query_start, seq_query_len, seq_context,             \
                              seq_table_offset, tables, heads, kv_heads, head_dim, block_size, scale, partial_out,     \
                              partial_stats, splits, reinterpret_cast<u16*>(fb_smem));                                 \
    }

#ifndef FB_MIN_BLOCKS_64
#define FB_MIN_BLOCKS_64 2
#endif
#ifndef FB_MIN_BLOCKS_128
#define FB_MIN_BLOCKS_128 2
#endif
FLASH_BF16_KERNEL(64, FB_MIN_BLOCKS_64)   // 54 KB of shared memory
FLASH_BF16_KERNEL(128, FB_MIN_BLOCKS_128) // 103 KB
