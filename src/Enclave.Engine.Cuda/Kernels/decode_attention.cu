// Decode attention (short queries over a paged cache), built for memory-level parallelism: one block of 4 warps per
// (kv head, token, context split) serving every query head of the GQA group (up to DECODE_GROUP_MAX), head_dim a
// multiple of 8 and at most DIM (64, 128 or 256 per instantiation).
//
// paged_attention_group (attention.cu) gives each lane a whole K row and walks the V rows one at a time, so a lane
// waits on a chain of dependent loads: 45-75 us a layer at batch 1 over a 1k context, for 2 MB of cache. Here each
// warp walks its own tiles of 32 positions (warp w takes tiles w, w + 4, ... of the split) with its own running max,
// and no block barrier until the end, so the warps of a multiprocessor overlap each other's memory waits. A tile:
//   1. scores: a K row is read by DIM / 8 lanes, 8 elements (one or two 16-byte loads) each, so the warp covers
//      32 / (DIM / 8) rows per pass, DECODE_IN_FLIGHT passes loaded before the first is used; the partial dot
//      products with each group head's q are summed over those lanes with shuffles into the warp's score row;
//   2. softmax: lane r takes position r; the running max and sum advance and the scores become weights;
//   3. values: each lane owns DIM / 32 output elements of every group head and adds weight * V over the tile's rows,
//      DECODE_IN_FLIGHT rows loaded at a time (each V row read once for the whole group).
// The warps are merged at the end, rescaled to the block's max. Partials and chunk 0 (graph steps) follow
// paged_attention: see attention.cu and attention_combine.
#include "attention_common.cuh"

#define DECODE_WARPS 4
#define DECODE_TILE 32
#define DECODE_GROUP_MAX 8
// Rows whose loads a lane keeps in flight before using them (bounds the registers the prefetch takes).
#define DECODE_IN_FLIGHT 8

// N consecutive cache elements (N = 2, 4 or 8, the address aligned to N elements) as floats.
template <int N>
__device__ __forceinline__ void load_row_slice(const float* p, float o[N])
{
    if constexpr (N == 2)
    {
        const float2 a = *reinterpret_cast<const float2*>(p);
        o[0] = a.x;
        o[1] = a.y;
    }
    else
    {
#pragma unroll
        for (int i = 0; i < N; i += 4)
        {
            const float4 a = *reinterpret_cast<const float4*>(p + i);
            o[i] = a.x;
            o[i + 1] = a.y;
            o[i + 2] = a.z;
            o[i + 3] = a.w;
        }
    }
}

template <int N>
__device__ __forceinline__ void load_row_slice(const u16* p, float o[N])
{
    // bf16 is the high half of an fp32: the first element of each 32-bit word is its low half (little endian).
    unsigned int w[N / 2];
    if constexpr (N == 2)
    {
        w[0] = *reinterpret_cast<const unsigned int*>(p);
    }
    else if constexpr (N == 4)
    {
        const uint2 r = *reinterpret_cast<const uint2*>(p);
        w[0] = r.x;
        w[1] = r.y;
    }
    else
    {
        const uint4 r = *reinterpret_cast<const uint4*>(p);
        w[0] = r.x;
        w[1] = r.y;
        w[2] = r.z;
        w[3] = r.w;
    }
#pragma unroll
    for (int i = 0; i < N / 2; i++)
    {
        o[2 * i] = __uint_as_float(w[i] << 16);
        o[2 * i + 1] = __uint_as_float(w[i] & 0xffff0000u);
    }
}

template <class KV, int DIM>
__device__ __forceinline__ void decode_attention_impl(
    const float* __restrict__ q, const typename KV::storage* __restrict__ key_cache, const typename KV::storage* __restrict__ value_cache,
    float* __restrict__ out, float* __restrict__ partial_out, float* __restrict__ partial_stats,
    const int* __restrict__ token_seq, const int* __restrict__ seq_query_start, const int* __restrict__ seq_query_len,
    const int* __restrict__ seq_context, const int* __restrict__ seq_table_offset, const int* __restrict__ tables,
    int heads, int kv_heads, int head_dim, int block_size, float scale, int chunk, int splits)
{
    constexpr int LANES_PER_ROW = DIM / 8;                   // scores: lanes that share one K row
    constexpr int ROWS_PER_PASS = 32 / LANES_PER_ROW;        // scores: K rows a warp reads at once
    constexpr int PASSES = DECODE_TILE / ROWS_PER_PASS;       // 4 (DIM 64) to 32 (DIM 256)
    constexpr int K_IN_FLIGHT = PASSES < DECODE_IN_FLIGHT ? PASSES : DECODE_IN_FLIGHT;
    constexpr int PER_LANE = DIM / 32;                       // values: output elements a lane owns

    __shared__ __align__(16) float s_q[DECODE_GROUP_MAX][DIM];
    __shared__ float s_weight[DECODE_WARPS][DECODE_GROUP_MAX][DECODE_TILE];
    __shared__ float s_acc[DECODE_WARPS][DECODE_GROUP_MAX][DIM];
    __shared__ float s_max[DECODE_WARPS][DECODE_GROUP_MAX], s_sum[DECODE_WARPS][DECODE_GROUP_MAX];

    const int kvh = blockIdx.x, t = blockIdx.y, split = blockIdx.z;
    const int group = heads / kv_heads;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int s = token_seq[t];
    const int position = seq_context[s] - seq_query_len[s] + (t - seq_query_start[s]);
    const int* table = tables + seq_table_offset[s];
    const long row_width = (long)kv_heads * head_dim;
    const long head_offset = (long)kvh * head_dim;
    const int span = chunk > 0 ? chunk : max(ATTN_SPAN_GRANULE, ((seq_context[s] + splits - 1) / splits + ATTN_SPAN_GRANULE - 1) / ATTN_SPAN_GRANULE * ATTN_SPAN_GRANULE);
    const int begin = split * span;
    const int end = min(position + 1, begin + span);

    // q: [tokens, heads, head_dim]; the group's heads are kvh * group .. kvh * group + group - 1. Missing heads and
    // dimensions past head_dim are zero, so they add nothing to a dot product.
    const float* qg = q + ((long)t * heads + (long)kvh * group) * head_dim;
    for (int i = threadIdx.x; i < DECODE_GROUP_MAX * DIM; i += blockDim.x)
    {
        const int g = i / DIM, d = i % DIM;
        s_q[g][d] = g < group && d < head_dim ? qg[g * head_dim + d] : 0.f;
    }
    __syncthreads();

    const int row_part = lane % LANES_PER_ROW, row_in_pass = lane / LANES_PER_ROW;
    const int k_dim = row_part * 8;
    const bool k_lane_active = k_dim < head_dim;
    const int v_dim = lane * PER_LANE;
    const bool v_lane_active = v_dim < head_dim;
    float (*weight)[DECODE_TILE] = s_weight[warp];

    float acc[DECODE_GROUP_MAX][PER_LANE];
    float m[DECODE_GROUP_MAX], l[DECODE_GROUP_MAX];
#pragma unroll
    for (int g = 0; g < DECODE_GROUP_MAX; g++)
    {
        m[g] = NEG_INF;
        l[g] = 0.f;
#pragma unroll
        for (int j = 0; j < PER_LANE; j++) acc[g][j] = 0.f;
    }

    // Each warp walks its own tiles (warp, warp + DECODE_WARPS, ...) with its own running max: no block barrier until
    // the end, so the warps of a multiprocessor overlap each other's memory waits.
    for (int tile = begin + warp * DECODE_TILE; tile < end; tile += DECODE_WARPS * DECODE_TILE)
    {
        const int n = min(DECODE_TILE, end - tile);
        const int slot = lane < n ? table[(tile + lane) / block_size] * block_size + (tile + lane) % block_size : 0;

        // Scores: pass i reads rows i * ROWS_PER_PASS + row_in_pass; DECODE_IN_FLIGHT passes are loaded before the
        // first is used.
#pragma unroll
        for (int i0 = 0; i0 < PASSES; i0 += K_IN_FLIGHT)
        {
            float k[K_IN_FLIGHT][8];
#pragma unroll
            for (int i = 0; i < K_IN_FLIGHT; i++)
            {
                const int r = (i0 + i) * ROWS_PER_PASS + row_in_pass;
                const int row_slot = __shfl_sync(0xffffffffu, slot, r);
                if (r < n && k_lane_active)
                {
                    load_row_slice<8>(key_cache + (long)row_slot * row_width + head_offset + k_dim, k[i]);
                }
                else
                {
#pragma unroll
                    for (int e = 0; e < 8; e++) k[i][e] = 0.f;
                }
            }
#pragma unroll
            for (int g = 0; g < DECODE_GROUP_MAX; g++)
            {
                if (g < group) // uniform across the warp, so the shuffles inside are safe
                {
                    const float4 qa = *reinterpret_cast<const float4*>(&s_q[g][k_dim]);
                    const float4 qb = *reinterpret_cast<const float4*>(&s_q[g][k_dim + 4]);
#pragma unroll
                    for (int i = 0; i < K_IN_FLIGHT; i++)
                    {
                        float dot = qa.x * k[i][0] + qa.y * k[i][1] + qa.z * k[i][2] + qa.w * k[i][3]
                                  + qb.x * k[i][4] + qb.y * k[i][5] + qb.z * k[i][6] + qb.w * k[i][7];
#pragma unroll
                        for (int o = LANES_PER_ROW / 2; o > 0; o >>= 1) dot += __shfl_xor_sync(0xffffffffu, dot, o);
                        if (row_part == 0) weight[g][(i0 + i) * ROWS_PER_PASS + row_in_pass] = dot * scale;
                    }
                }
            }
        }
        __syncwarp();

        // Softmax: lane r holds position r of the tile; the weights replace the scores.
#pragma unroll
        for (int g = 0; g < DECODE_GROUP_MAX; g++)
        {
            if (g < group)
            {
                const float score = lane < n ? weight[g][lane] : NEG_INF;
                const float m_new = fmaxf(m[g], warp_max(score)); // finite: the tile has at least one position
                const float e = lane < n ? expf(score - m_new) : 0.f;
                const float correction = expf(m[g] - m_new); // 0 on the warp's first tile (m is -inf)
                l[g] = l[g] * correction + warp_sum(e);
                m[g] = m_new;
                weight[g][lane] = e;
#pragma unroll
                for (int j = 0; j < PER_LANE; j++) acc[g][j] *= correction;
            }
        }
        __syncwarp();

        // Values: every row of the tile, DECODE_IN_FLIGHT loads in flight per lane.
#pragma unroll
        for (int i0 = 0; i0 < DECODE_TILE; i0 += DECODE_IN_FLIGHT)
        {
            float v[DECODE_IN_FLIGHT][PER_LANE];
#pragma unroll
            for (int i = 0; i < DECODE_IN_FLIGHT; i++)
            {
                const int r = i0 + i;
                const int row_slot = __shfl_sync(0xffffffffu, slot, r);
                if (r < n && v_lane_active)
                {
                    load_row_slice<PER_LANE>(value_cache + (long)row_slot * row_width + head_offset + v_dim, v[i]);
                }
                else
                {
#pragma unroll
                    for (int j = 0; j < PER_LANE; j++) v[i][j] = 0.f;
                }
            }
#pragma unroll
            for (int i = 0; i < DECODE_IN_FLIGHT; i++)
            {
#pragma unroll
                for (int g = 0; g < DECODE_GROUP_MAX; g++)
                {
                    if (g < group)
                    {
                        const float w = weight[g][i0 + i]; // 0 past n
#pragma unroll
                        for (int j = 0; j < PER_LANE; j++) acc[g][j] += w * v[i][j];
                    }
                }
            }
        }
        __syncwarp(); // the next tile's scores overwrite the weights
    }

    // Merge the warps: each rescales to the block's max.
#pragma unroll
    for (int g = 0; g < DECODE_GROUP_MAX; g++)
    {
        if (lane == 0)
        {
            s_max[warp][g] = m[g];
            s_sum[warp][g] = l[g];
        }
#pragma unroll
        for (int j = 0; j < PER_LANE; j++) s_acc[warp][g][v_dim + j] = acc[g][j];
    }
    __syncthreads();
    attention_merge_warps<DECODE_WARPS, DECODE_GROUP_MAX, DIM>(s_max, s_sum, s_acc, group, head_dim, t, heads, kvh, split, splits, out, partial_out, partial_stats);
}

#define DECODE_ATTENTION(NAME, KV, STORAGE, DIM)                                                                       \
    extern "C" __global__ void __launch_bounds__(DECODE_WARPS * 32) NAME(DECODE_ATTENTION_PARAMS(STORAGE))             \
    {                                                                                                                  \
        decode_attention_impl<KV, DIM>(DECODE_ATTENTION_ARGS);                                                         \
    }

DECODE_ATTENTION(decode_attention_d64, KvF32, float, 64)
DECODE_ATTENTION(decode_attention_d128, KvF32, float, 128)
DECODE_ATTENTION(decode_attention_d256, KvF32, float, 256)
DECODE_ATTENTION(decode_attention_d64_kvbf16, KvBf16, u16, 64)
DECODE_ATTENTION(decode_attention_d128_kvbf16, KvBf16, u16, 128)
DECODE_ATTENTION(decode_attention_d256_kvbf16, KvBf16, u16, 256)
