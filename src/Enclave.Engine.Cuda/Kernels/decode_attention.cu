// Decode attention (short queries over a paged cache), built for memory-level parallelism: one block of 4 warps per
// (kv head, token, context split) serving every query head of the GQA group (up to DECODE_GROUP_MAX), head_dim a
// multiple of 8 and at most DIM (64, 128 or 256 per instantiation).
//
// paged_attention_group (attention.cu) gives each lane a whole K row and walks the V rows one at a time, so a lane
// waits on a chain of dependent loads: 45-75 us a layer at batch 1 over a 1k context, for 2 MB of cache. Here the
// split is walked in tiles of DECODE_TILE positions and each tile in three phases with every load of a phase issued
// before any is used:
//   1. scores: a K row is read by DIM / 8 lanes, 8 elements (one or two 16-byte loads) each, so a warp covers
//      32 / (DIM / 8) rows per pass; the partial dot products with each group head's q are summed over those lanes
//      with shuffles and written to shared memory as s_score[head][position];
//   2. softmax: one warp per head takes the tile's max, rescales the running sum and turns the scores into weights;
//   3. values: warp w takes positions w, w + 4, ...; each lane owns DIM / 32 output elements of every group head and
//      adds weight * V for its positions (the V rows read once for the whole group).
// All warps share the running max, so their partial outputs are summed at the end without rescaling. Partials and
// chunk 0 (graph steps) follow paged_attention: see attention.cu and attention_combine.
// Measured on an H100 (7B shape, bf16 cache, 1k contexts): 24 us a layer at batch 1, 195 us at batch 64 (about 0.7 TB/s:
// the batch case is still bound by the loads a block keeps in flight). A variant in which each warp walked its own
// 32-position tiles with its own running max and no block barrier until the end measured slower on both (40 and 210 us).
#include "attention_common.cuh"

#define DECODE_WARPS 4
#define DECODE_TILE 64
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
__device__ __forceinline__ void decode_attention_impl(DECODE_ATTENTION_PARAMS(typename KV::storage))
{
    constexpr int LANES_PER_ROW = DIM / 8;                      // phase 1: lanes that share one K row
    constexpr int ROWS_PER_PASS = 32 / LANES_PER_ROW;           // phase 1: K rows a warp reads at once
    constexpr int PASSES = DECODE_TILE / DECODE_WARPS / ROWS_PER_PASS;
    constexpr int K_IN_FLIGHT = PASSES < DECODE_IN_FLIGHT ? PASSES : DECODE_IN_FLIGHT;
    constexpr int PER_LANE = DIM / 32;                          // phase 3: output elements a lane owns
    constexpr int V_ROWS = DECODE_TILE / DECODE_WARPS;          // phase 3: positions a warp takes per tile

    __shared__ __align__(16) float s_q[DECODE_GROUP_MAX][DIM];
    __shared__ float s_score[DECODE_GROUP_MAX][DECODE_TILE];
    __shared__ float s_acc[DECODE_WARPS][DECODE_GROUP_MAX][DIM];
    __shared__ int s_slot[DECODE_TILE];
    __shared__ float s_max[DECODE_GROUP_MAX], s_sum[DECODE_GROUP_MAX], s_correction[DECODE_GROUP_MAX];

    const int kvh = blockIdx.x, t = blockIdx.y, split = blockIdx.z;
    const int group = heads / kv_heads;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const auto [position, table, begin, end] = decode_keys(token_seq, seq_query_start, seq_query_len, seq_context, seq_table_offset, tables, t, split, chunk, splits);
    const long row_width = (long)kv_heads * head_dim;
    const long head_offset = (long)kvh * head_dim;

    // q: [tokens, heads, head_dim]; the group's heads are kvh * group .. kvh * group + group - 1. Missing heads and
    // dimensions past head_dim are zero, so they add nothing to a dot product.
    const float* qg = q + ((long)t * heads + (long)kvh * group) * head_dim;
    for (int i = threadIdx.x; i < DECODE_GROUP_MAX * DIM; i += blockDim.x)
    {
        const int g = i / DIM, d = i % DIM;
        s_q[g][d] = g < group && d < head_dim ? qg[g * head_dim + d] : 0.f;
    }
    if (threadIdx.x < DECODE_GROUP_MAX)
    {
        s_max[threadIdx.x] = NEG_INF;
        s_sum[threadIdx.x] = 0.f;
    }

    const int row_part = lane % LANES_PER_ROW, row_in_pass = lane / LANES_PER_ROW;
    const int k_dim = row_part * 8;
    const bool k_lane_active = k_dim < head_dim;
    const int v_dim = lane * PER_LANE;
    const bool v_lane_active = v_dim < head_dim;

    float acc[DECODE_GROUP_MAX][PER_LANE];
#pragma unroll
    for (int g = 0; g < DECODE_GROUP_MAX; g++)
#pragma unroll
        for (int j = 0; j < PER_LANE; j++) acc[g][j] = 0.f;

    for (int tile = begin; tile < end; tile += DECODE_TILE)
    {
        const int n = min(DECODE_TILE, end - tile);
        __syncthreads(); // the previous tile's phase 3 has finished with s_slot and s_score (and s_q is written)
        if (threadIdx.x < n)
        {
            const int p = tile + threadIdx.x;
            s_slot[threadIdx.x] = table[p / block_size] * block_size + p % block_size;
        }
        __syncthreads();

        // Phase 1: scores. Row r of the tile is read in pass (r - warp * ROWS_PER_PASS * PASSES) / ROWS_PER_PASS.
#pragma unroll
        for (int p0 = 0; p0 < PASSES; p0 += K_IN_FLIGHT)
        {
            float k[K_IN_FLIGHT][8];
#pragma unroll
            for (int i = 0; i < K_IN_FLIGHT; i++)
            {
                const int r = (warp * PASSES + p0 + i) * ROWS_PER_PASS + row_in_pass;
                if (r < n && k_lane_active)
                {
                    load_row_slice<8>(key_cache + (long)s_slot[r] * row_width + head_offset + k_dim, k[i]);
                }
                else
                {
#pragma unroll
                    for (int e = 0; e < 8; e++) k[i][e] = 0.f;
                }
            }
#pragma unroll
            for (int i = 0; i < K_IN_FLIGHT; i++)
            {
                const int r = (warp * PASSES + p0 + i) * ROWS_PER_PASS + row_in_pass;
#pragma unroll
                for (int g = 0; g < DECODE_GROUP_MAX; g++)
                {
                    if (g < group) // uniform across the warp, so the shuffles inside are safe
                    {
                        const float4 qa = *reinterpret_cast<const float4*>(&s_q[g][k_dim]);
                        const float4 qb = *reinterpret_cast<const float4*>(&s_q[g][k_dim + 4]);
                        float dot = qa.x * k[i][0] + qa.y * k[i][1] + qa.z * k[i][2] + qa.w * k[i][3]
                                  + qb.x * k[i][4] + qb.y * k[i][5] + qb.z * k[i][6] + qb.w * k[i][7];
#pragma unroll
                        for (int o = LANES_PER_ROW / 2; o > 0; o >>= 1) dot += __shfl_xor_sync(0xffffffffu, dot, o);
                        if (row_part == 0 && r < n) s_score[g][r] = dot * scale;
                    }
                }
            }
        }
        __syncthreads();

        // Phase 2: per head, the tile's max and the weights exp(score - running max).
        for (int g = warp; g < group; g += DECODE_WARPS)
        {
            float tile_max = NEG_INF;
            for (int r = lane; r < n; r += 32) tile_max = fmaxf(tile_max, s_score[g][r]);
            tile_max = warp_max(tile_max);
            const float m_old = s_max[g];
            const float m_new = fmaxf(m_old, tile_max); // finite: the tile has at least one position
            float sum = 0.f;
            for (int r = lane; r < n; r += 32)
            {
                const float e = expf(s_score[g][r] - m_new);
                s_score[g][r] = e;
                sum += e;
            }
            sum = warp_sum(sum);
            if (lane == 0)
            {
                const float correction = expf(m_old - m_new); // 0 on the first tile (m_old is -inf)
                s_sum[g] = s_sum[g] * correction + sum;
                s_correction[g] = correction;
                s_max[g] = m_new;
            }
        }
        __syncthreads();

        // Phase 3: values.
#pragma unroll
        for (int g = 0; g < DECODE_GROUP_MAX; g++)
        {
            const float correction = g < group ? s_correction[g] : 0.f;
#pragma unroll
            for (int j = 0; j < PER_LANE; j++) acc[g][j] *= correction;
        }
#pragma unroll
        for (int i0 = 0; i0 < V_ROWS; i0 += DECODE_IN_FLIGHT)
        {
            float v[DECODE_IN_FLIGHT][PER_LANE];
#pragma unroll
            for (int i = 0; i < DECODE_IN_FLIGHT; i++)
            {
                const int r = warp + DECODE_WARPS * (i0 + i);
                if (r < n && v_lane_active)
                {
                    load_row_slice<PER_LANE>(value_cache + (long)s_slot[r] * row_width + head_offset + v_dim, v[i]);
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
                const int r = warp + DECODE_WARPS * (i0 + i);
                if (r < n)
                {
#pragma unroll
                    for (int g = 0; g < DECODE_GROUP_MAX; g++)
                    {
                        if (g < group)
                        {
                            const float w = s_score[g][r];
#pragma unroll
                            for (int j = 0; j < PER_LANE; j++) acc[g][j] += w * v[i][j];
                        }
                    }
                }
            }
        }
    }

#pragma unroll
    for (int g = 0; g < DECODE_GROUP_MAX; g++)
#pragma unroll
        for (int j = 0; j < PER_LANE; j++) s_acc[warp][g][v_dim + j] = acc[g][j];
    __syncthreads();

    for (int i = threadIdx.x; i < group * head_dim; i += blockDim.x)
    {
        const int g = i / head_dim, d = i % head_dim;
        float o = 0.f;
#pragma unroll
        for (int w = 0; w < DECODE_WARPS; w++) o += s_acc[w][g][d];
        const long row = (long)t * heads + (long)kvh * group + g;
        if (splits == 1)
        {
            out[row * head_dim + d] = o / s_sum[g];
            continue;
        }

        const long part = row * splits + split;
        partial_out[part * head_dim + d] = o;
        if (d == 0)
        {
            partial_stats[2 * part] = s_max[g];
            partial_stats[2 * part + 1] = s_sum[g];
        }
    }
}

#define DECODE_ATTENTION(NAME, KV, STORAGE, DIM)                                                                       \
    extern "C" __global__ void __launch_bounds__(DECODE_WARPS * 32) NAME(DECODE_ATTENTION_PARAMS(STORAGE))             \
    {                                                                                                                  \
        launch_gate();                                                                                                 \
        decode_attention_impl<KV, DIM>(DECODE_ATTENTION_ARGS);                                                         \
    }

DECODE_ATTENTION_VARIANTS(DECODE_ATTENTION, decode_attention)
