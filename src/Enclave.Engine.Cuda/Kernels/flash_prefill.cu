// Tiled causal attention for prefill steps (query length > 1), reading K/V through each sequence's block table.
//
// One block of 4 warps per (tile of BM query rows of one sequence, kv head). A query row is one (token, head) pair of
// the kv head's GQA group: row r of a sequence is its query token r / G and head kv_head * G + r % G, so a K/V tile
// loaded once serves every head of the group. The block keeps its Q tile in shared memory, walks the keys 0..(last
// row's position) in tiles of BN, loads each K tile (then each V tile) into shared memory, and keeps an online
// softmax per row in fp32 (running max m and sum l, exp2 with log2(e) folded into the scale). No [seq x seq] score
// matrix is ever stored: scores live in registers for one key tile.
//
// Causal mask: the query token i of a sequence with context length C and query length Q sits at position
// C - Q + i (a cached prefix, or earlier chunks of a chunked prefill, come first) and sees keys 0..C - Q + i.
//
// Inside a warp (16 rows for BM = 64, 8 for BM = 32) lane = rg * 8 + cg: row group rg (4 of them, RM rows each)
// and column group cg (8 of them, CN keys each). A lane computes the RM x CN scores of its rows and keys, reduces
// row max and sum over the 8 lanes of its row group with shuffles, and accumulates the output of its RM rows over the
// head dims cg, cg + 8, cg + 16, ... (the probabilities of the other keys come from their lanes by shuffle).
// Shared-memory bank conflicts: Q rows are stored rotated by 8 * rg columns and K rows by 4 * cg, so the lanes that
// read different rows at the same head dim hit different banks; V is read along the head dim, contiguous per lane.
//
// The activations are fp32; the cache fp32 or bf16 (the _kvbf16 kernels, widened to fp32 as tiles load). head_dim must be a multiple of 4 and at most D (64, 128 or 256); the loops
// run to the runtime head_dim, the shared arrays are sized for D.
#include "common.cuh"

#define FLASH_THREADS 128
#define LOG2E 1.4426950408889634f

template <class KV, int D, int BM, int BN>
__device__ __forceinline__ void flash_prefill(
    const float* __restrict__ q, const typename KV::storage* __restrict__ key_cache, const typename KV::storage* __restrict__ value_cache,
    float* __restrict__ out, const int* __restrict__ seq_query_start, const int* __restrict__ seq_query_len,
    const int* __restrict__ seq_context, const int* __restrict__ seq_table_offset, const int* __restrict__ tables,
    int heads, int kv_heads, int head_dim, int block_size, float scale, float* s_q, float* s_kv)
{
    constexpr int WR = BM / 4;          // rows per warp
    constexpr int RM = WR / 4;          // rows per lane
    constexpr int CN = BN / 8;          // keys per lane
    constexpr int DL = D / 8;           // head dims per lane in the output
    constexpr int V4 = BN * D / 4 / FLASH_THREADS; // float4 loads per thread for a full K or V tile
    static_assert(RM >= 1 && CN >= 1 && V4 >= 1, "tile shape");

    const int s = blockIdx.y, kvh = blockIdx.z;
    const int group = heads / kv_heads;
    const int query_len = seq_query_len[s];
    const int rows = query_len * group;
    const int tile = gridDim.x - 1 - blockIdx.x; // the longest tiles (last rows, most keys) start first
    const int row0 = tile * BM;
    if (row0 >= rows) return;

    const int context = seq_context[s];
    const int first_position = context - query_len; // position of query token 0
    const int q_start = seq_query_start[s];
    const int* table = tables + seq_table_offset[s];
    const long row_width = (long)kv_heads * head_dim;
    const long head_offset = (long)kvh * head_dim;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int rg = lane >> 3, cg = lane & 7;
    const int d4 = head_dim >> 2;

    // Q tile: row r of the tile at s_q[r * D + rotated column]; rows past the sequence are zero.
    for (int i = threadIdx.x; i < BM * d4; i += FLASH_THREADS)
    {
        const int r = i / d4, d = (i - r * d4) * 4;
        const int row = row0 + r;
        float4 v = float4{0.f, 0.f, 0.f, 0.f};
        if (row < rows)
        {
            const int token = q_start + row / group, h = kvh * group + row % group;
            v = *reinterpret_cast<const float4*>(q + ((long)token * heads + h) * head_dim + d);
        }
        const int rot = 8 * ((r % WR) / RM);
        *reinterpret_cast<float4*>(s_q + r * D + ((d + rot) & (D - 1))) = v;
    }

    // This lane's rows: their positions (-1 for rows past the sequence: every key masked, never written).
    const int lane_row0 = warp * WR + rg * RM;
    // A warp whose rows all lie past the sequence (a decode token's few rows, a sequence's last tile) only helps load
    // the tiles. The condition is the same for the whole warp, so its shuffles stay converged.
    const bool warp_active = row0 + warp * WR < rows;
    int position[RM];
#pragma unroll
    for (int r = 0; r < RM; r++)
    {
        const int row = row0 + lane_row0 + r;
        position[r] = row < rows ? first_position + row / group : -1;
    }

    const int last_row = min(row0 + BM, rows) - 1;
    const int key_end = first_position + last_row / group + 1; // keys [0, key_end) matter to this tile
    const float scale2 = scale * LOG2E;

    float acc[RM][DL];
    float m[RM], l[RM];
#pragma unroll
    for (int r = 0; r < RM; r++)
    {
        m[r] = NEG_INF;
        l[r] = 0.f;
#pragma unroll
        for (int j = 0; j < DL; j++) acc[r][j] = 0.f;
    }

    for (int key0 = 0; key0 < key_end; key0 += BN)
    {
        // K tile, stored rotated by 4 * (column group of the key); keys past key_end are zero.
        float4 staged[V4];
#pragma unroll
        for (int i = 0; i < V4; i++)
        {
            const int idx = threadIdx.x + i * FLASH_THREADS;
            const int kk = idx / d4, d = (idx - kk * d4) * 4;
            const int p = key0 + kk;
            staged[i] = float4{0.f, 0.f, 0.f, 0.f};
            if (kk < BN && p < key_end)
            {
                const long slot = (long)table[p / block_size] * block_size + p % block_size;
                staged[i] = KV::load4(key_cache + slot * row_width + head_offset + d);
            }
        }
#pragma unroll
        for (int i = 0; i < V4; i++)
        {
            const int idx = threadIdx.x + i * FLASH_THREADS;
            const int kk = idx / d4, d = (idx - kk * d4) * 4;
            if (kk < BN) *reinterpret_cast<float4*>(s_kv + kk * D + ((d + 4 * (kk / CN)) & (D - 1))) = staged[i];
        }
        __syncthreads();

        // Issue the V tile's loads now; they land while the scores are computed.
#pragma unroll
        for (int i = 0; i < V4; i++)
        {
            const int idx = threadIdx.x + i * FLASH_THREADS;
            const int kk = idx / d4, d = (idx - kk * d4) * 4;
            const int p = key0 + kk;
            staged[i] = float4{0.f, 0.f, 0.f, 0.f};
            if (kk < BN && p < key_end)
            {
                const long slot = (long)table[p / block_size] * block_size + p % block_size;
                staged[i] = KV::load4(value_cache + slot * row_width + head_offset + d);
            }
        }

        // Scores of this lane's RM rows x CN keys.
        float score[RM][CN];
#pragma unroll
        for (int r = 0; r < RM; r++)
#pragma unroll
            for (int c = 0; c < CN; c++) score[r][c] = 0.f;
        if (warp_active)
        {
            const float* qrow = s_q + lane_row0 * D;
            const float* krow = s_kv + cg * CN * D;
            const int qrot = 8 * rg, krot = 4 * cg;
#pragma unroll 4
            for (int d = 0; d < head_dim; d++)
            {
                float qv[RM], kv[CN];
                const int qd = (d + qrot) & (D - 1), kd = (d + krot) & (D - 1);
#pragma unroll
                for (int r = 0; r < RM; r++) qv[r] = qrow[r * D + qd];
#pragma unroll
                for (int c = 0; c < CN; c++) kv[c] = krow[c * D + kd];
#pragma unroll
                for (int r = 0; r < RM; r++)
#pragma unroll
                    for (int c = 0; c < CN; c++) score[r][c] += qv[r] * kv[c];
            }

            // Online softmax per row, the row's 8 column-group lanes reducing together.
#pragma unroll
            for (int r = 0; r < RM; r++)
            {
                float tile_max = NEG_INF;
#pragma unroll
                for (int c = 0; c < CN; c++)
                {
                    const int p = key0 + cg * CN + c;
                    score[r][c] = p <= position[r] ? score[r][c] * scale2 : NEG_INF;
                    tile_max = fmaxf(tile_max, score[r][c]);
                }
                tile_max = fmaxf(tile_max, __shfl_xor_sync(0xffffffffu, tile_max, 1));
                tile_max = fmaxf(tile_max, __shfl_xor_sync(0xffffffffu, tile_max, 2));
                tile_max = fmaxf(tile_max, __shfl_xor_sync(0xffffffffu, tile_max, 4));
                const float m_new = fmaxf(m[r], tile_max);
                // A row with no visible key yet (or a row past the sequence) keeps m = -inf: use 0 as the reference so
                // that exp2(-inf - ref) is 0 rather than NaN.
                const float reference = m_new == NEG_INF ? 0.f : m_new;
                const float correction = exp2f(m[r] - reference);
                float sum = 0.f;
#pragma unroll
                for (int c = 0; c < CN; c++)
                {
                    score[r][c] = exp2f(score[r][c] - reference);
                    sum += score[r][c];
                }
                sum += __shfl_xor_sync(0xffffffffu, sum, 1);
                sum += __shfl_xor_sync(0xffffffffu, sum, 2);
                sum += __shfl_xor_sync(0xffffffffu, sum, 4);
                l[r] = l[r] * correction + sum;
                m[r] = m_new;
#pragma unroll
                for (int j = 0; j < DL; j++) acc[r][j] *= correction;
            }
        }

        __syncthreads(); // every warp is done with the K tile
#pragma unroll
        for (int i = 0; i < V4; i++)
        {
            const int idx = threadIdx.x + i * FLASH_THREADS;
            const int kk = idx / d4, d = (idx - kk * d4) * 4;
            if (kk < BN) *reinterpret_cast<float4*>(s_kv + kk * D + d) = staged[i];
        }
        __syncthreads();

        // acc[r][dims cg + 8j] += p[r][key] * V[key][dim] over the tile's keys; p of key k is held by lane
        // (rg, k / CN) as its element k % CN.
        const int source_base = lane & ~7;
        if (warp_active)
        {
#pragma unroll
            for (int k = 0; k < BN; k++)
            {
                float p[RM];
#pragma unroll
                for (int r = 0; r < RM; r++) p[r] = __shfl_sync(0xffffffffu, score[r][k % CN], source_base + k / CN);
                const float* vrow = s_kv + k * D + cg;
#pragma unroll
                for (int j = 0; j < DL; j++)
                {
                    const float v = vrow[8 * j]; // dims past head_dim hold stale values, never written out
#pragma unroll
                    for (int r = 0; r < RM; r++) acc[r][j] += p[r] * v;
                }
            }
        }
        __syncthreads(); // every warp is done with the V tile before the next K tile overwrites it
    }

#pragma unroll
    for (int r = 0; r < RM; r++)
    {
        const int row = row0 + lane_row0 + r;
        if (row >= rows) continue;
        const int token = q_start + row / group, h = kvh * group + row % group;
        float* o = out + ((long)token * heads + h) * head_dim;
        const float inv = 1.f / l[r];
#pragma unroll
        for (int j = 0; j < DL; j++)
        {
            const int d = cg + 8 * j;
            if (d < head_dim) o[d] = acc[r][j] * inv;
        }
    }
}

// Per head-dim bound D: the query tile BM and key tile BN keep Q plus one K/V tile within 48 KB of static shared
// memory and the per-lane output accumulator (RM x D / 8 floats) within the register file.
#define FLASH_KERNEL_KV(NAME, KV, STORAGE, D, BM, BN)                                                                 \
    extern "C" __global__ void __launch_bounds__(FLASH_THREADS) NAME(                                                  \
        const float* __restrict__ q, const STORAGE* __restrict__ key_cache, const STORAGE* __restrict__ value_cache,   \
        float* __restrict__ out, const int* __restrict__ seq_query_start, const int* __restrict__ seq_query_len,       \
        const int* __restrict__ seq_context, const int* __restrict__ seq_table_offset, const int* __restrict__ tables, \
        int heads, int kv_heads, int head_dim, int block_size, float scale)                                            \
    {                                                                                                                  \
        __shared__ float4 s_q[BM * D / 4]; /* float4: 16-byte aligned for the vector stores */                        \
        __shared__ float4 s_kv[BN * D / 4];                                                                            \
        launch_gate();                                                                                                 \
        flash_prefill<KV, D, BM, BN>(q, key_cache, value_cache, out, seq_query_start, seq_query_len, seq_context,      \
                                     seq_table_offset, tables, heads, kv_heads, head_dim, block_size, scale,           \
                                     reinterpret_cast<float*>(s_q), reinterpret_cast<float*>(s_kv));                   \
    }
#define FLASH_KERNEL(D, BM, BN)                                                                                          \
    FLASH_KERNEL_KV(flash_prefill_d##D, KvF32, float, D, BM, BN)                                                       \
    FLASH_KERNEL_KV(flash_prefill_d##D##_kvbf16, KvBf16, u16, D, BM, BN)

FLASH_KERNEL(64, 64, 64)   // 16 KB + 16 KB
FLASH_KERNEL(128, 64, 32)  // 32 KB + 16 KB
FLASH_KERNEL(256, 32, 16)  // 32 KB + 16 KB
