// Tiled causal prefill attention over a bf16 KV cache on bf16 tensor cores (tensor-core mode). Same tiling, GQA row
// packing, causal online softmax and fragment layouts as flash_prefill_h16.cu, with the K and V tiles copied from the
// paged cache into shared memory as they are stored (cp.async, 16 bytes a copy, no conversion), so the copies run
// behind the tensor-core work instead of before it:
//   top of tile j:    wait for K_j; start copying V_j;  S = Q K_jᵀ and the softmax run while V_j arrives;
//   middle of tile j: wait for V_j; start copying K_j+1; O += P V_j runs while K_j+1 arrives.
// One K buffer and one V buffer suffice, each refilled only after the barrier that ends its readers' phase.
// The flash_prefill_h16 kernels convert each element to f16 on the way from global memory to shared memory, so every
// tile waited on its loads with nothing to overlap (about 40 TFLOP/s of attention at 2k tokens on the 7B shape).
// K fragments (B of q·k, keys as columns) are read with ldmatrix, V fragments (B of p·v, keys as rows) with
// ldmatrix.trans, which hands each lane the (key, key + 1) pairs of a dim that the m16n8k16 B layout wants from a
// tile stored key-major. Q (scaled by scale * log2(e)) and P are rounded to bf16, as K and V already are.
// head_dim must be a multiple of 8 and at most D (64 or 128); dims past head_dim and keys past the causal end are
// zero-filled by the copies.
// Decode steps (a few packed rows per sequence) may cut the keys into `splits` spans of whole tiles, blockIdx.x =
// row tile * splits + split: each split writes its rows' unnormalised output and (max, sum) to partial_out and
// partial_stats in the layout of the decode attention kernels (max in natural-log units), and attention_combine
// merges them; a split past the sequence's keys writes an empty partial. splits 1 writes the output directly.
#include "flash_mma.cuh"

#define FB_THREADS 128
#define FB_BN 64

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
__device__ __forceinline__ void copies_wait_all() { asm volatile("cp.async.wait_group 0;" ::: "memory"); }

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

// Starts copying keys key0 .. key0 + FB_BN - 1 of one KV head into tile [FB_BN][D + 8] (bf16, key-major).
template <int D>
__device__ __forceinline__ void copy_tile_async(u16* tile, const u16* __restrict__ cache, const int* __restrict__ table, int block_size,
                                                long row_width, long head_offset, int key0, int key_end, int head_dim)
{
    constexpr int CHUNKS = D / 8; // 16-byte pieces of a row
#pragma unroll
    for (int i = 0; i < FB_BN * CHUNKS / FB_THREADS; i++)
    {
        const int idx = threadIdx.x + i * FB_THREADS;
        const int kk = idx / CHUNKS, c = idx % CHUNKS;
        const int p = key0 + kk;
        const bool valid = p < key_end && 8 * c < head_dim;
        const u16* src = cache;
        if (valid) src = cache + ((long)table[p / block_size] * block_size + p % block_size) * row_width + head_offset + 8 * c;
        copy16_async(shared_address(tile + kk * (D + 8) + 8 * c), src, valid);
    }
}

template <int D>
__device__ __forceinline__ void flash_prefill_bf16(
    const float* __restrict__ q, const u16* __restrict__ key_cache, const u16* __restrict__ value_cache,
    float* __restrict__ out, const int* __restrict__ seq_query_start, const int* __restrict__ seq_query_len,
    const int* __restrict__ seq_context, const int* __restrict__ seq_table_offset, const int* __restrict__ tables,
    int heads, int kv_heads, int head_dim, int block_size, float scale, float* __restrict__ partial_out,
    float* __restrict__ partial_stats, int splits, u16* s_k, u16* s_v)
{
    constexpr int S = D + 8;     // tile row stride in halves (272 bytes at D 128: ldmatrix rows hit distinct banks)
    constexpr int DK = D / 16;   // k-steps of q·k over the head dim
    constexpr int NT = FB_BN / 8; // n-tiles of a score tile
    constexpr int KK = FB_BN / 16; // k-steps of p·v over the keys
    constexpr int DN = D / 8;    // n-tiles of the output

    int group, rows, row0, first_position, q_start, key_end;
    const int* table;
    const int split = blockIdx.x % splits;
    if (!flash_block(seq_query_start, seq_query_len, seq_context, seq_table_offset, tables, heads, kv_heads, blockIdx.x / splits,
                     gridDim.x / splits, group, rows, row0, first_position, q_start, key_end, table))
        return;

    // This split's keys [key_begin, key_stop): spans of whole FB_BN tiles, so a tile never straddles two splits.
    const int span = (key_end + splits - 1) / splits;
    const int key_span = (span + FB_BN - 1) / FB_BN * FB_BN;
    const int key_begin = split * key_span;
    const int key_stop = min(key_end, key_begin + key_span);

    const int kvh = blockIdx.z;
    const long row_width = (long)kv_heads * head_dim;
    const long head_offset = (long)kvh * head_dim;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int g = lane >> 2, t = lane & 3;
    const int warp_row0 = row0 + warp * 16;
    const bool warp_active = warp_row0 < rows;

    if (key_begin < key_stop)
    {
        copy_tile_async<D>(s_k, key_cache, table, block_size, row_width, head_offset, key_begin, key_stop, head_dim);
        copies_commit();
    }

    const float* q_row[2];
    float* out_row[2];
    int position[2];
    flash_rows(q, out, warp_row0, g, rows, group, first_position, q_start, heads, kvh, head_dim, position, q_row, out_row);

    const float scale2 = scale * FLASH_LOG2E;
    unsigned int qf[DK][4];
    flash_load_q<DK, MmaBf16>(qf, q_row, head_dim, scale2, t);

    float o[DN][4];
#pragma unroll
    for (int n = 0; n < DN; n++) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.f;
    float m[2] = {NEG_INF, NEG_INF}, l[2] = {0.f, 0.f};

    // ldmatrix row addresses: lanes 8i .. 8i + 7 give the rows of matrix i.
    const int matrix = lane >> 3, matrix_row = lane & 7;
    const unsigned int k_base = shared_address(s_k), v_base = shared_address(s_v);

    for (int key0 = key_begin; key0 < key_stop; key0 += FB_BN)
    {
        copies_wait_all();
        __syncthreads(); // K of this tile has landed for every thread; every warp is done with the previous V
        copy_tile_async<D>(s_v, value_cache, table, block_size, row_width, head_offset, key0, key_stop, head_dim);
        copies_commit();

        float sc[NT][4];
        if (warp_active)
        {
            // Scores S[16 x FB_BN] = (Q scaled) · Kᵀ. Matrix i of an x4 load: keys 8j .. 8j + 7, dims 16k + 8i.
#pragma unroll
            for (int j = 0; j < NT; j++)
            {
                sc[j][0] = sc[j][1] = sc[j][2] = sc[j][3] = 0.f;
#pragma unroll
                for (int k = 0; k < DK; k += 2)
                {
                    unsigned int b[4];
                    ldmatrix_x4(b, k_base + (unsigned int)(((8 * j + matrix_row) * S + 16 * k + 8 * matrix) * 2));
                    MmaBf16::mma(sc[j], qf[k][0], qf[k][1], qf[k][2], qf[k][3], b[0], b[1]);
                    if (k + 1 < DK) MmaBf16::mma(sc[j], qf[k + 1][0], qf[k + 1][1], qf[k + 1][2], qf[k + 1][3], b[2], b[3]);
                }
            }

            flash_softmax_tile<NT, DN>(sc, m, l, o, position, key0, t);
        }

        copies_wait_all();
        __syncthreads(); // V of this tile has landed; every warp is done with K
        if (key0 + FB_BN < key_stop)
        {
            copy_tile_async<D>(s_k, key_cache, table, block_size, row_width, head_offset, key0 + FB_BN, key_stop, head_dim);
            copies_commit();
        }

        if (warp_active)
        {
            // O[16 x D] += P[16 x FB_BN] · V[FB_BN x D], P straight from the score registers. Matrix i of an x4.trans
            // load: keys 16kk + 8 (i & 1) .. + 7, dims 16np + 8 (i >> 1): the B halves of output n-tiles 2np, 2np + 1.
#pragma unroll
            for (int kk = 0; kk < KK; kk++)
            {
                unsigned int a0, a1, a2, a3;
                flash_p_fragment<MmaBf16>(sc[2 * kk], sc[2 * kk + 1], a0, a1, a2, a3);
#pragma unroll
                for (int np = 0; np < DN / 2; np++)
                {
                    if (16 * np < head_dim)
                    {
                        unsigned int b[4];
                        ldmatrix_x4_trans(b, v_base + (unsigned int)(((16 * kk + 8 * (matrix & 1) + matrix_row) * S + 16 * np + 8 * (matrix >> 1)) * 2));
                        MmaBf16::mma(o[2 * np], a0, a1, a2, a3, b[0], b[1]);
                        MmaBf16::mma(o[2 * np + 1], a0, a1, a2, a3, b[2], b[3]);
                    }
                }
            }
        }
    }

    if (splits == 1)
    {
        flash_store_output<DN>(out_row, o, l, head_dim, t);
        return;
    }

    // Partial of output row r (= (token * heads + head)) for this split: [r * splits + split]; o is still unnormalised
    // and m (log2 units, from the scaled q) converts to the natural-log units attention_combine merges in.
#pragma unroll
    for (int h = 0; h < 2; h++)
    {
        if (out_row[h] == nullptr) continue;
        const long part = ((out_row[h] - out) / head_dim) * splits + split;
        if (t == 0)
        {
            partial_stats[2 * part] = m[h] == NEG_INF ? NEG_INF : m[h] * FLASH_LN2;
            partial_stats[2 * part + 1] = l[h];
        }
#pragma unroll
        for (int n = 0; n < DN; n++)
        {
            const int d = 8 * n + 2 * t;
            if (d < head_dim)
            {
                partial_out[part * head_dim + d] = o[n][2 * h];
                partial_out[part * head_dim + d + 1] = o[n][2 * h + 1];
            }
        }
    }
}

#define FLASH_BF16_KERNEL(D)                                                                                             \
    extern "C" __global__ void __launch_bounds__(FB_THREADS) flash_prefill_bf16_d##D##_kvbf16(                         \
        const float* __restrict__ q, const u16* __restrict__ key_cache, const u16* __restrict__ value_cache,           \
        float* __restrict__ out, const int* __restrict__ seq_query_start, const int* __restrict__ seq_query_len,       \
        const int* __restrict__ seq_context, const int* __restrict__ seq_table_offset, const int* __restrict__ tables, \
        int heads, int kv_heads, int head_dim, int block_size, float scale, float* __restrict__ partial_out,           \
        float* __restrict__ partial_stats, int splits)                                                                 \
    {                                                                                                                  \
        __shared__ uint4 s_k[FB_BN * (D + 8) / 8]; /* uint4: 16-byte aligned */                                       \
        __shared__ uint4 s_v[FB_BN * (D + 8) / 8];                                                                     \
        launch_gate();                                                                                                 \
        flash_prefill_bf16<D>(q, key_cache, value_cache, out, seq_query_start, seq_query_len, seq_context,             \
                              seq_table_offset, tables, heads, kv_heads, head_dim, block_size, scale, partial_out,     \
                              partial_stats, splits, reinterpret_cast<u16*>(s_k), reinterpret_cast<u16*>(s_v));        \
    }

FLASH_BF16_KERNEL(64)  // 9 + 9 KB of shared memory
FLASH_BF16_KERNEL(128) // 17 + 17 KB
