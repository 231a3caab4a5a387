// Pieces shared by the decode attention kernels (attention.cu, decode_attention.cu): the kernel parameter list and the
// merge of a block's warps into one output or one split partial.
#pragma once
#include "common.cuh"

// The parameters of every decode attention kernel and of its templated body (STORAGE: typename KV::storage) over a
// cache of STORAGE elements, and the names to pass them on.
#define DECODE_ATTENTION_PARAMS(STORAGE)                                                                                \
    const float* __restrict__ q, const STORAGE* __restrict__ key_cache, const STORAGE* __restrict__ value_cache,       \
        float* __restrict__ out, float* __restrict__ partial_out, float* __restrict__ partial_stats,                   \
        const int* __restrict__ token_seq, const int* __restrict__ seq_query_start,                                    \
        const int* __restrict__ seq_query_len, const int* __restrict__ seq_context,                                    \
        const int* __restrict__ seq_table_offset, const int* __restrict__ tables, int heads, int kv_heads,             \
        int head_dim, int block_size, float scale, int chunk, int splits
#define DECODE_ATTENTION_ARGS                                                                                          \
    q, key_cache, value_cache, out, partial_out, partial_stats, token_seq, seq_query_start, seq_query_len,             \
        seq_context, seq_table_offset, tables, heads, kv_heads, head_dim, block_size, scale, chunk, splits

// The keys a decode attention block walks for token t: the token's position, its sequence's block table, and the
// positions [begin, end) of context split `split` (end <= begin: an empty split). chunk > 0 gives fixed chunks; chunk 0
// (recorded steps) cuts the sequence's context into `splits` spans of whole ATTN_SPAN_GRANULE multiples.
struct DecodeKeys
{
    int position;
    const int* table;
    int begin;
    int end;
};

__device__ __forceinline__ DecodeKeys decode_keys(const int* __restrict__ token_seq, const int* __restrict__ seq_query_start,
                                                  const int* __restrict__ seq_query_len, const int* __restrict__ seq_context,
                                                  const int* __restrict__ seq_table_offset, const int* __restrict__ tables,
                                                  int t, int split, int chunk, int splits)
{
    const int s = token_seq[t];
    DecodeKeys keys;
    keys.position = seq_context[s] - seq_query_len[s] + (t - seq_query_start[s]);
    keys.table = tables + seq_table_offset[s];
    const int span = chunk > 0 ? chunk : max(ATTN_SPAN_GRANULE, ((seq_context[s] + splits - 1) / splits + ATTN_SPAN_GRANULE - 1) / ATTN_SPAN_GRANULE * ATTN_SPAN_GRANULE);
    keys.begin = split * span;
    keys.end = min(keys.position + 1, keys.begin + span);
    return keys;
}

// Instantiates a decode attention kernel for head dims 64, 128 and 256 over an fp32 cache (NAME_dD) and a bf16 cache
// (NAME_dD_kvbf16), as KERNEL(kernel name, KV type, cache element type, head dim).
#define DECODE_ATTENTION_VARIANTS(KERNEL, NAME)                                                                        \
    KERNEL(NAME##_d64, KvF32, float, 64)                                                                               \
    KERNEL(NAME##_d128, KvF32, float, 128)                                                                             \
    KERNEL(NAME##_d256, KvF32, float, 256)                                                                             \
    KERNEL(NAME##_d64_kvbf16, KvBf16, u16, 64)                                                                         \
    KERNEL(NAME##_d128_kvbf16, KvBf16, u16, 128)                                                                       \
    KERNEL(NAME##_d256_kvbf16, KvBf16, u16, 256)

// Merges WARPS warps' running max, sum and unnormalised output per group head (s_max/s_sum [WARPS][GMAX], s_acc
// [WARPS][GMAX][DIM], written before a barrier) into the output rows of token t (one split) or split `split`'s
// partials, rescaling every warp to the common max; warps that saw no position (sum 0) add nothing.
template <int WARPS, int GMAX, int DIM>
__device__ __forceinline__ void attention_merge_warps(float (*s_max)[GMAX], float (*s_sum)[GMAX], float (*s_acc)[GMAX][DIM],
                                                      int group, int head_dim, int t, int heads, int kvh, int split, int splits,
                                                      float* __restrict__ out, float* __restrict__ partial_out, float* __restrict__ partial_stats)
{
    for (int i = threadIdx.x; i < group * head_dim; i += blockDim.x)
    {
        const int g = i / head_dim, d = i % head_dim;
        float total_max = NEG_INF;
#pragma unroll
        for (int w = 0; w < WARPS; w++) total_max = fmaxf(total_max, s_max[w][g]);
        float total_sum = 0.f, o = 0.f;
#pragma unroll
        for (int w = 0; w < WARPS; w++)
        {
            const float factor = s_sum[w][g] > 0.f ? expf(s_max[w][g] - total_max) : 0.f;
            total_sum += s_sum[w][g] * factor;
            o += s_acc[w][g][d] * factor;
        }

        const long row = (long)t * heads + (long)kvh * group + g;
        if (splits == 1)
        {
            out[row * head_dim + d] = o / total_sum;
            continue;
        }

        const long part = row * splits + split;
        partial_out[part * head_dim + d] = o;
        if (d == 0)
        {
            partial_stats[2 * part] = total_max;
            partial_stats[2 * part + 1] = total_sum;
        }
    }
}
