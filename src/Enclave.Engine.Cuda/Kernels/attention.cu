// Paged attention for any mix of prefill chunks and decode tokens, reading K/V through each sequence's block table.
//
// kv_write: copies this step's k/v rows into the cache at their slots (one thread per element).
//
// Every kernel that touches the cache comes for an fp32 cache and, with the suffix _kvbf16, for a bf16 one (rounded to
// nearest even on write, widened to fp32 on read; the arithmetic stays fp32).
//
// paged_attention: one block of 4 warps per (query head, token, context split). A split covers `chunk` cached
// positions of the token's causal range; the warps take tiles of 32 positions, one position per lane for the q.k
// dot product (a whole K row per lane), then a tile-wide max and sum (online softmax), then all lanes accumulate the
// 32 weighted V rows with the head dimension across lanes. The warps are merged in shared memory. With one split
// the block writes the normalised output; with several (long contexts with few heads, the decode case) it writes
// its running max, sum and unnormalised output, and attention_combine merges the splits.
// Grouped-query: head h reads kv head h / (heads / kv_heads). head_dim is at most 256.
//
// paged_attention_group_dNN: the same walk, but one block per (kv head, token, context split) serving every query
// head of the group (up to ATTN_GROUP_MAX): each K and V row is read once for the group instead of once per query
// head, which divides the attention reads of a batched decode step by the group size (7 on the Qwen2-7B shape).
// Lane p still walks K row p, now against the group's q rows held in shared memory; the V rows are read once and
// accumulated into every head's output. Same partial layout as paged_attention, so attention_combine serves both.
//
// chunk 0 (recorded decode steps, whose launch cannot depend on this step's context lengths): the grid has a fixed
// number of splits and each block derives its sequence's chunk from the context length in the step metadata, in
// multiples of ATTN_SPAN_GRANULE positions. Splits that start past the context write an empty partial (max -inf, sum 0, output 0),
// which attention_combine skips.
//
// Step metadata (uploaded once per step): token_seq[t] = sequence of token t; per sequence its query start, query
// length, context length and the offset of its block table in `tables`.
#include "attention_common.cuh"

#define ATTN_WARPS 4
#define ATTN_MAX_DIM 256
#define ATTN_PER_LANE (ATTN_MAX_DIM / 32)

template <class KV>
__device__ __forceinline__ void kv_write_impl(const float* k, const float* v, typename KV::storage* key_cache, typename KV::storage* value_cache,
                                              const int* slots, int tokens, int row_width)
{
    const long idx = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (long)tokens * row_width) return;
    const int t = (int)(idx / row_width), j = (int)(idx % row_width);
    const long dst = (long)slots[t] * row_width + j;
    key_cache[dst] = KV::store(k[idx]);
    value_cache[dst] = KV::store(v[idx]);
}

extern "C" __global__ void kv_write(const float* k, const float* v, float* key_cache, float* value_cache, const int* slots, int tokens, int row_width)
{
    launch_gate();
    kv_write_impl<KvF32>(k, v, key_cache, value_cache, slots, tokens, row_width);
}

extern "C" __global__ void kv_write_kvbf16(const float* k, const float* v, u16* key_cache, u16* value_cache, const int* slots, int tokens, int row_width)
{
    launch_gate();
    kv_write_impl<KvBf16>(k, v, key_cache, value_cache, slots, tokens, row_width);
}

template <class KV>
__device__ __forceinline__ void paged_attention_impl(DECODE_ATTENTION_PARAMS(typename KV::storage))
{
    __shared__ float s_q[ATTN_MAX_DIM];
    __shared__ float s_max[ATTN_WARPS], s_sum[ATTN_WARPS];
    __shared__ float s_acc[ATTN_WARPS][ATTN_MAX_DIM];
    const int h = blockIdx.x, t = blockIdx.y, split = blockIdx.z;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const auto [position, table, begin, end] = decode_keys(token_seq, seq_query_start, seq_query_len, seq_context, seq_table_offset, tables, t, split, chunk, splits);
    const int kvh = h / (heads / kv_heads);
    const long row_width = (long)kv_heads * head_dim;
    const long head_offset = (long)kvh * head_dim;
    const bool vec4 = (head_dim & 3) == 0;

    const float* qh = q + ((long)t * heads + h) * head_dim;
    for (int d = threadIdx.x; d < head_dim; d += blockDim.x) s_q[d] = qh[d];
    __syncthreads();

    float acc[ATTN_PER_LANE];
#pragma unroll
    for (int j = 0; j < ATTN_PER_LANE; j++) acc[j] = 0.f;
    float m = NEG_INF, l = 0.f;

    for (int tile = begin + warp * 32; tile < end; tile += ATTN_WARPS * 32)
    {
        const int p = tile + lane;
        const bool valid = p < end;
        int slot = 0;
        float score = NEG_INF;
        if (valid)
        {
            slot = table[p / block_size] * block_size + p % block_size;
            const typename KV::storage* kr = key_cache + (long)slot * row_width + head_offset;
            float dot = 0.f;
            if (vec4)
            {
                // Unrolled so that several 16-byte loads of the row are in flight at once: one lane walks a whole
                // row, and a load-then-add chain one float4 at a time left each lane waiting on memory latency.
#pragma unroll 8
                for (int d = 0; d < head_dim; d += 4)
                {
                    const float4 k4 = KV::load4(kr + d);
                    dot += s_q[d] * k4.x + s_q[d + 1] * k4.y + s_q[d + 2] * k4.z + s_q[d + 3] * k4.w;
                }
            }
            else
            {
                for (int d = 0; d < head_dim; d++) dot += s_q[d] * KV::load(kr + d);
            }
            score = dot * scale;
        }

        const float m_new = fmaxf(m, warp_max(score)); // finite: lane 0 of a tile is always valid
        const float e = valid ? expf(score - m_new) : 0.f;
        const float correction = expf(m - m_new);
        l = l * correction + warp_sum(e);
#pragma unroll
        for (int j = 0; j < ATTN_PER_LANE; j++) acc[j] *= correction;
        const int n = min(32, end - tile);
#pragma unroll 4
        for (int i = 0; i < n; i++)
        {
            const float w = __shfl_sync(0xffffffffu, e, i);
            const int vs = __shfl_sync(0xffffffffu, slot, i);
            const typename KV::storage* vr = value_cache + (long)vs * row_width + head_offset;
#pragma unroll
            for (int j = 0; j < ATTN_PER_LANE; j++)
            {
                const int d = lane + 32 * j;
                if (d < head_dim) acc[j] += w * KV::load(vr + d);
            }
        }
        m = m_new;
    }

    if (lane == 0)
    {
        s_max[warp] = m;
        s_sum[warp] = l;
    }
#pragma unroll
    for (int j = 0; j < ATTN_PER_LANE; j++) s_acc[warp][lane + 32 * j] = acc[j];
    __syncthreads();

    float total_max = NEG_INF;
    for (int w = 0; w < ATTN_WARPS; w++) total_max = fmaxf(total_max, s_max[w]);
    float total_sum = 0.f, factors[ATTN_WARPS];
#pragma unroll
    for (int w = 0; w < ATTN_WARPS; w++)
    {
        factors[w] = s_sum[w] > 0.f ? expf(s_max[w] - total_max) : 0.f;
        total_sum += s_sum[w] * factors[w];
    }

    const long row = (long)t * heads + h;
    if (splits == 1)
    {
        float* oh = out + row * head_dim;
        for (int d = threadIdx.x; d < head_dim; d += blockDim.x)
        {
            float o = 0.f;
#pragma unroll
            for (int w = 0; w < ATTN_WARPS; w++) o += s_acc[w][d] * factors[w];
            oh[d] = o / total_sum;
        }
        return;
    }

    const long part = row * splits + split;
    if (threadIdx.x == 0)
    {
        partial_stats[2 * part] = total_max;
        partial_stats[2 * part + 1] = total_sum;
    }
    for (int d = threadIdx.x; d < head_dim; d += blockDim.x)
    {
        float o = 0.f;
#pragma unroll
        for (int w = 0; w < ATTN_WARPS; w++) o += s_acc[w][d] * factors[w];
        partial_out[part * head_dim + d] = o;
    }
}

#define PAGED_ATTENTION(NAME, KV, STORAGE)                                                                             \
    extern "C" __global__ void __launch_bounds__(ATTN_WARPS * 32) NAME(DECODE_ATTENTION_PARAMS(STORAGE))               \
    {                                                                                                                  \
        launch_gate();                                                                                                 \
        paged_attention_impl<KV>(DECODE_ATTENTION_ARGS);                                                               \
    }

PAGED_ATTENTION(paged_attention, KvF32, float)
PAGED_ATTENTION(paged_attention_kvbf16, KvBf16, u16)

#define ATTN_GROUP_MAX 8

template <class KV, int PER_LANE>
__device__ __forceinline__ void paged_attention_group_impl(DECODE_ATTENTION_PARAMS(typename KV::storage))
{
    constexpr int DIM = PER_LANE * 32;
    __shared__ __align__(16) float s_q[ATTN_GROUP_MAX][DIM];
    __shared__ float s_max[ATTN_WARPS][ATTN_GROUP_MAX], s_sum[ATTN_WARPS][ATTN_GROUP_MAX];
    __shared__ float s_acc[ATTN_WARPS][ATTN_GROUP_MAX][DIM];
    const int kvh = blockIdx.x, t = blockIdx.y, split = blockIdx.z;
    const int group = heads / kv_heads;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const auto [position, table, begin, end] = decode_keys(token_seq, seq_query_start, seq_query_len, seq_context, seq_table_offset, tables, t, split, chunk, splits);
    const long row_width = (long)kv_heads * head_dim;
    const long head_offset = (long)kvh * head_dim;
    const bool vec4 = (head_dim & 3) == 0;

    // q: [tokens, heads, head_dim]; the group's heads are kvh * group .. kvh * group + group - 1.
    const float* qg = q + ((long)t * heads + (long)kvh * group) * head_dim;
    for (int i = threadIdx.x; i < group * head_dim; i += blockDim.x) s_q[i / head_dim][i % head_dim] = qg[i];
    __syncthreads();

    float acc[ATTN_GROUP_MAX][PER_LANE];
    float m[ATTN_GROUP_MAX], l[ATTN_GROUP_MAX];
#pragma unroll
    for (int g = 0; g < ATTN_GROUP_MAX; g++)
    {
        m[g] = NEG_INF;
        l[g] = 0.f;
#pragma unroll
        for (int j = 0; j < PER_LANE; j++) acc[g][j] = 0.f;
    }

    for (int tile = begin + warp * 32; tile < end; tile += ATTN_WARPS * 32)
    {
        const int p = tile + lane;
        const bool valid = p < end;
        int slot = 0;
        float score[ATTN_GROUP_MAX];
#pragma unroll
        for (int g = 0; g < ATTN_GROUP_MAX; g++) score[g] = NEG_INF;
        if (valid)
        {
            slot = table[p / block_size] * block_size + p % block_size;
            const typename KV::storage* kr = key_cache + (long)slot * row_width + head_offset;
            float dot[ATTN_GROUP_MAX];
#pragma unroll
            for (int g = 0; g < ATTN_GROUP_MAX; g++) dot[g] = 0.f;
            if (vec4)
            {
#pragma unroll 4
                for (int d = 0; d < head_dim; d += 4)
                {
                    const float4 k4 = KV::load4(kr + d);
#pragma unroll
                    for (int g = 0; g < ATTN_GROUP_MAX; g++)
                    {
                        if (g < group)
                        {
                            const float4 q4 = *reinterpret_cast<const float4*>(&s_q[g][d]);
                            dot[g] += q4.x * k4.x + q4.y * k4.y + q4.z * k4.z + q4.w * k4.w;
                        }
                    }
                }
            }
            else
            {
                for (int d = 0; d < head_dim; d++)
                {
                    const float kv = KV::load(kr + d);
#pragma unroll
                    for (int g = 0; g < ATTN_GROUP_MAX; g++)
                        if (g < group) dot[g] += s_q[g][d] * kv;
                }
            }
#pragma unroll
            for (int g = 0; g < ATTN_GROUP_MAX; g++) score[g] = dot[g] * scale;
        }

        float e[ATTN_GROUP_MAX];
#pragma unroll
        for (int g = 0; g < ATTN_GROUP_MAX; g++)
        {
            e[g] = 0.f;
            if (g < group) // uniform across the warp, so the shuffles inside are safe
            {
                const float m_new = fmaxf(m[g], warp_max(score[g])); // finite: lane 0 of a tile is always valid
                e[g] = valid ? expf(score[g] - m_new) : 0.f;
                const float correction = expf(m[g] - m_new);
                l[g] = l[g] * correction + warp_sum(e[g]);
#pragma unroll
                for (int j = 0; j < PER_LANE; j++) acc[g][j] *= correction;
                m[g] = m_new;
            }
        }

        const int n = min(32, end - tile);
#pragma unroll 2
        for (int i = 0; i < n; i++)
        {
            const int vs = __shfl_sync(0xffffffffu, slot, i);
            const typename KV::storage* vr = value_cache + (long)vs * row_width + head_offset;
            float v[PER_LANE];
#pragma unroll
            for (int j = 0; j < PER_LANE; j++)
            {
                const int d = lane + 32 * j;
                v[j] = d < head_dim ? KV::load(vr + d) : 0.f;
            }
#pragma unroll
            for (int g = 0; g < ATTN_GROUP_MAX; g++)
            {
                if (g < group)
                {
                    const float w = __shfl_sync(0xffffffffu, e[g], i);
#pragma unroll
                    for (int j = 0; j < PER_LANE; j++) acc[g][j] += w * v[j];
                }
            }
        }
    }

#pragma unroll
    for (int g = 0; g < ATTN_GROUP_MAX; g++)
    {
        if (g < group)
        {
            if (lane == 0)
            {
                s_max[warp][g] = m[g];
                s_sum[warp][g] = l[g];
            }
#pragma unroll
            for (int j = 0; j < PER_LANE; j++) s_acc[warp][g][lane + 32 * j] = acc[g][j];
        }
    }
    __syncthreads();
    attention_merge_warps<ATTN_WARPS, ATTN_GROUP_MAX, DIM>(s_max, s_sum, s_acc, group, head_dim, t, heads, kvh, split, splits, out, partial_out, partial_stats);
}

#define PAGED_ATTENTION_GROUP(NAME, KV, STORAGE, DIM)                                                                 \
    extern "C" __global__ void __launch_bounds__(ATTN_WARPS * 32) NAME(DECODE_ATTENTION_PARAMS(STORAGE))               \
    {                                                                                                                  \
        launch_gate();                                                                                                 \
        paged_attention_group_impl<KV, DIM / 32>(DECODE_ATTENTION_ARGS);                                               \
    }

DECODE_ATTENTION_VARIANTS(PAGED_ATTENTION_GROUP, paged_attention_group)

// Merges the context splits of paged_attention: rescales each split's sum and output to the common max. Empty splits
// (sum 0, max -inf: they started past the context) add nothing; every row has at least one non-empty split. One block
// per (head, token): the threads take the splits' stats in parallel and keep their weights in shared memory, then each
// thread sums its output elements over the splits with the loads unrolled (a split at a time was a chain of dependent
// loads, 11 us at 17 splits). At most ATTN_COMBINE_MAX_SPLITS splits (CudaBackend.AttentionMaxSplits).
#define ATTN_COMBINE_MAX_SPLITS 512
extern "C" __global__ void attention_combine(const float* __restrict__ partial_out, const float* __restrict__ partial_stats,
                                             float* __restrict__ out, int heads, int head_dim, int splits)
{
    launch_gate();
    __shared__ float s_weight[ATTN_COMBINE_MAX_SPLITS];
    const long row = (long)blockIdx.y * heads + blockIdx.x;
    const float* stats = partial_stats + row * splits * 2;
    float local_max = NEG_INF;
    for (int i = threadIdx.x; i < splits; i += blockDim.x) local_max = fmaxf(local_max, stats[2 * i]);
    const float total_max = block_max(local_max);
    float local_sum = 0.f;
    for (int i = threadIdx.x; i < splits; i += blockDim.x)
    {
        const float sum = stats[2 * i + 1];
        const float weight = sum > 0.f ? expf(stats[2 * i] - total_max) : 0.f;
        s_weight[i] = weight;
        local_sum += sum * weight;
    }
    const float inv = 1.f / block_sum(local_sum); // block_sum's barriers also publish s_weight
    const float* partial = partial_out + row * splits * head_dim;
    for (int d = threadIdx.x; d < head_dim; d += blockDim.x)
    {
        float o = 0.f;
#pragma unroll 8
        for (int i = 0; i < splits; i++) o += partial[(long)i * head_dim + d] * s_weight[i];
        out[row * head_dim + d] = o * inv;
    }
}
