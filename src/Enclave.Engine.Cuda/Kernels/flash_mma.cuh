// Pieces shared by the tensor-core prefill attention kernels (flash_prefill_h16.cu, flash_prefill_bf16.cu): one warp
// owns 16 packed query rows; fragment layouts (PTX ISA, m16n8k16): g = lane / 4, t = lane % 4; A registers hold
// (row, col pairs) (g, 2t), (g + 8, 2t), (g, 2t + 8), (g + 8, 2t + 8); B registers (k pairs, n) (2t, g), (2t + 8, g);
// C registers (g, 2t), (g, 2t + 1), (g + 8, 2t), (g + 8, 2t + 1). Row h of a lane (h = 0, 1) is g + 8h.
#pragma once
#include "common.cuh"

#define FLASH_LOG2E 1.4426950408889634f
#define FLASH_LN2 0.6931471805599453f

// The two 16-bit operand types: Mma::pack rounds two floats into one 32-bit register (the first in the low half) and
// Mma::mma is mma.sync m16n8k16 with fp32 accumulation, c += a . b (not volatile: a pure register operation, so the
// compiler may schedule fragment loads around it).
template <bool Bf16>
struct Mma16
{
    static __device__ __forceinline__ unsigned int pack(float lo, float hi)
    {
        unsigned int r;
        if constexpr (Bf16)
            asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo)); // the first source goes to the upper half
        else
            asm("cvt.rn.f16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
        return r;
    }

    static __device__ __forceinline__ void mma(float c[4], unsigned int a0, unsigned int a1, unsigned int a2, unsigned int a3,
                                               unsigned int b0, unsigned int b1)
    {
        if constexpr (Bf16)
            asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};"
                : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
        else
            asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};"
                : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
    }
};

typedef Mma16<false> MmaF16;
typedef Mma16<true> MmaBf16;

// The work of a prefill attention block of one KV head: sequence s and block_rows packed rows (row = query * group +
// head in group) from row0, row tile `row_tile` of `row_tiles` taken from the last (they see the most
// keys, so they start earliest). key_end is one past the last key any of the block's rows sees. False when the
// sequence has no rows for this block.
__device__ __forceinline__ bool flash_block(const int* __restrict__ seq_query_start, const int* __restrict__ seq_query_len,
                                            const int* __restrict__ seq_context, const int* __restrict__ seq_table_offset,
                                            const int* __restrict__ tables, int heads, int kv_heads, int s, int row_tile,
                                            int row_tiles, int block_rows, int& group, int& rows, int& row0, int& first_position, int& q_start,
                                            int& key_end, const int*& table)
{
    const int query_len = seq_query_len[s];
    group = heads / kv_heads;
    rows = query_len * group;
    row0 = (row_tiles - 1 - row_tile) * block_rows;
    if (row0 >= rows) return false;

    first_position = seq_context[s] - query_len;
    q_start = seq_query_start[s];
    table = tables + seq_table_offset[s];
    key_end = first_position + (min(row0 + block_rows, rows) - 1) / group + 1;
    return true;
}

// A lane's two rows (g and g + 8 of the warp's 16) of the block's packed rows (row = query * group + head in group):
// the position of the query, and its q and output rows; -1 and null for rows past the sequence's rows.
__device__ __forceinline__ void flash_rows(const float* q, float* out, int warp_row0, int g, int rows, int group, int first_position,
                                           int q_start, int heads, int kvh, int head_dim, int position[2], const float* q_row[2], float* out_row[2])
{
#pragma unroll
    for (int h = 0; h < 2; h++)
    {
        const int row = warp_row0 + g + 8 * h;
        const long offset = ((long)(q_start + row / group) * heads + kvh * group + row % group) * head_dim;
        position[h] = row < rows ? first_position + row / group : -1;
        q_row[h] = row < rows ? q + offset : nullptr;
        out_row[h] = row < rows ? out + offset : nullptr;
    }
}

// Q fragments of the warp's rows, scaled by scale * log2(e) (the softmax then runs on exp2) and rounded to the operand
// type of Mma (MmaF16 or MmaBf16); dims past head_dim are zero.
template <int DK, class Mma>
__device__ __forceinline__ void flash_load_q(unsigned int qf[DK][4], const float* const q_row[2], int head_dim, float scale2, int t)
{
#pragma unroll
    for (int k = 0; k < DK; k++)
    {
        float v[2][4];
#pragma unroll
        for (int h = 0; h < 2; h++)
#pragma unroll
            for (int e = 0; e < 4; e++)
            {
                const int d = 16 * k + 2 * t + (e & 1) + 8 * (e >> 1);
                v[h][e] = q_row[h] != nullptr && d < head_dim ? q_row[h][d] * scale2 : 0.f;
            }
        qf[k][0] = Mma::pack(v[0][0], v[0][1]);
        qf[k][1] = Mma::pack(v[1][0], v[1][1]);
        qf[k][2] = Mma::pack(v[0][2], v[0][3]);
        qf[k][3] = Mma::pack(v[1][2], v[1][3]);
    }
}

// The A fragment of one 16-key step of p·v from the two 8-key score tiles that cover it: the C layout of a 16 x 8
// score tile pair is the A layout of a 16 x 16 step, so the probabilities never pass through shared memory.
template <class Mma>
__device__ __forceinline__ void flash_p_fragment(const float lo[4], const float hi[4], unsigned int& a0, unsigned int& a1, unsigned int& a2, unsigned int& a3)
{
    a0 = Mma::pack(lo[0], lo[1]);
    a1 = Mma::pack(lo[2], lo[3]);
    a2 = Mma::pack(hi[0], hi[1]);
    a3 = Mma::pack(hi[2], hi[3]);
}

// Causal mask and online softmax over one score tile sc (keys key0 ..), in place: the scores become exp2(s - max),
// the running max m and sum l advance and the output accumulators o are rescaled. A row's values sit in the 4 lanes of
// its quad; a row with no visible key yet keeps max -inf and adds zeros.
template <int NT, int DN>
__device__ __forceinline__ void flash_softmax_tile(float sc[NT][4], float m[2], float l[2], float o[DN][4], const int position[2], int key0, int t)
{
#pragma unroll
    for (int h = 0; h < 2; h++)
    {
        float tile_max = NEG_INF;
#pragma unroll
        for (int j = 0; j < NT; j++)
#pragma unroll
            for (int e = 0; e < 2; e++)
            {
                const int p = key0 + 8 * j + 2 * t + e;
                float& v = sc[j][2 * h + e];
                v = p <= position[h] ? v : NEG_INF;
                tile_max = fmaxf(tile_max, v);
            }
        tile_max = fmaxf(tile_max, __shfl_xor_sync(0xffffffffu, tile_max, 1));
        tile_max = fmaxf(tile_max, __shfl_xor_sync(0xffffffffu, tile_max, 2));
        const float m_new = fmaxf(m[h], tile_max);
        const float reference = m_new == NEG_INF ? 0.f : m_new;
        const float correction = exp2f(m[h] - reference);
        float sum = 0.f;
#pragma unroll
        for (int j = 0; j < NT; j++)
#pragma unroll
            for (int e = 0; e < 2; e++)
            {
                float& v = sc[j][2 * h + e];
                v = exp2f(v - reference);
                sum += v;
            }
        sum += __shfl_xor_sync(0xffffffffu, sum, 1);
        sum += __shfl_xor_sync(0xffffffffu, sum, 2);
        l[h] = l[h] * correction + sum;
        m[h] = m_new;
#pragma unroll
        for (int n = 0; n < DN; n++)
        {
            o[n][2 * h] *= correction;
            o[n][2 * h + 1] *= correction;
        }
    }
}

// Writes the warp's normalised output rows (out_row[h] null for rows past the block's rows).
template <int DN>
__device__ __forceinline__ void flash_store_output(float* const out_row[2], float o[DN][4], const float l[2], int head_dim, int t)
{
#pragma unroll
    for (int h = 0; h < 2; h++)
    {
        if (out_row[h] == nullptr) continue;
        const float inv = 1.f / l[h];
#pragma unroll
        for (int n = 0; n < DN; n++)
        {
            const int d = 8 * n + 2 * t;
            if (d < head_dim)
            {
                out_row[h][d] = o[n][2 * h] * inv;
                out_row[h][d + 1] = o[n][2 * h + 1] * inv;
            }
        }
    }
}
