// Paged attention for any mix of prefill chunks and decode tokens, reading K/V through each sequence's block table.
//
// kv_write: copies this step's k/v rows into the cache at their slots (one thread per element).
// paged_attention: one block of 4 warps per (query head, token). The warps take every 4th cached position up to the
// token's own (causal), keep a running max, sum and weighted V (online softmax), and are merged at the end.
// Grouped-query: head h reads kv head h / (heads / kv_heads). head_dim is at most 256 (8 values per lane).
//
// Step metadata (uploaded once per step): token_seq[t] = sequence of token t; per sequence its query start, query
// length, context length and the offset of its block table in `tables`.
#include "common.cuh"

#define ATTN_WARPS 4
#define ATTN_MAX_PER_LANE 8

extern "C" __global__ void kv_write(const float* k, const float* v, float* key_cache, float* value_cache,
                                    const int* slots, int tokens, int row_width)
{
    const long idx = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (long)tokens * row_width) return;
    const int t = (int)(idx / row_width), j = (int)(idx % row_width);
    const long dst = (long)slots[t] * row_width + j;
    key_cache[dst] = k[idx];
    value_cache[dst] = v[idx];
}

extern "C" __global__ void __launch_bounds__(ATTN_WARPS * 32)
paged_attention(const float* __restrict__ q, const float* __restrict__ key_cache, const float* __restrict__ value_cache,
                float* __restrict__ out, const int* __restrict__ token_seq, const int* __restrict__ seq_query_start,
                const int* __restrict__ seq_query_len, const int* __restrict__ seq_context, const int* __restrict__ seq_table_offset,
                const int* __restrict__ tables, int heads, int kv_heads, int head_dim, int block_size, float scale)
{
    __shared__ float s_max[ATTN_WARPS], s_sum[ATTN_WARPS];
    __shared__ float s_acc[ATTN_WARPS][ATTN_MAX_PER_LANE * 32];
    const int h = blockIdx.x, t = blockIdx.y;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int s = token_seq[t];
    const int position = seq_context[s] - seq_query_len[s] + (t - seq_query_start[s]);
    const int kvh = h / (heads / kv_heads);
    const int* table = tables + seq_table_offset[s];
    const long row_width = (long)kv_heads * head_dim;

    float qv[ATTN_MAX_PER_LANE], acc[ATTN_MAX_PER_LANE];
    const float* qh = q + ((long)t * heads + h) * head_dim;
#pragma unroll
    for (int j = 0; j < ATTN_MAX_PER_LANE; j++)
    {
        const int d = lane + 32 * j;
        qv[j] = d < head_dim ? qh[d] : 0.f;
        acc[j] = 0.f;
    }

    float m = NEG_INF, l = 0.f;
    for (int p = warp; p <= position; p += ATTN_WARPS)
    {
        const long slot = (long)table[p / block_size] * block_size + p % block_size;
        const float* kr = key_cache + slot * row_width + (long)kvh * head_dim;
        const float* vr = value_cache + slot * row_width + (long)kvh * head_dim;
        float dot = 0.f;
#pragma unroll
        for (int j = 0; j < ATTN_MAX_PER_LANE; j++)
        {
            const int d = lane + 32 * j;
            if (d < head_dim) dot += qv[j] * kr[d];
        }
        const float score = warp_sum(dot) * scale;
        const float m_new = fmaxf(m, score);
        const float correction = expf(m - m_new);
        const float weight = expf(score - m_new);
        l = l * correction + weight;
#pragma unroll
        for (int j = 0; j < ATTN_MAX_PER_LANE; j++)
        {
            const int d = lane + 32 * j;
            acc[j] = acc[j] * correction + (d < head_dim ? weight * vr[d] : 0.f);
        }
        m = m_new;
    }

    if (lane == 0)
    {
        s_max[warp] = m;
        s_sum[warp] = l;
    }
#pragma unroll
    for (int j = 0; j < ATTN_MAX_PER_LANE; j++) s_acc[warp][lane + 32 * j] = acc[j];
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
    float* oh = out + ((long)t * heads + h) * head_dim;
    for (int d = threadIdx.x; d < head_dim; d += blockDim.x)
    {
        float o = 0.f;
#pragma unroll
        for (int w = 0; w < ATTN_WARPS; w++) o += s_acc[w][d] * factors[w];
        oh[d] = o / total_sum;
    }
}
