// rope: rotary position embedding in place on x [tokens, heads, head_dim], one thread per rotated pair.
// interleaved = 0: GPT-NeoX pairs (i, i + rotary_dim/2); 1: GPT-J pairs (2i, 2i+1). scaling multiplies cos and sin.
// rope_kv_write: the same rotation of q and k fused with the cache write of k and v (see below).
#include "rope.cuh"

extern "C" __global__ void rope(float* x, const int* positions, const float* inv_freq, int tokens, int heads, int head_dim,
                                int rotary_dim, int interleaved, float scaling)
{
    launch_gate();
    const int half = rotary_dim / 2;
    const long idx = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (long)tokens * heads * half) return;
    rope_pair(x, idx, positions, inv_freq, heads, head_dim, half, interleaved, scaling);
}

// dst rows (t, h) = src rows (t, h) rotated, the first rotary_dim columns of each: src and dst are [tokens, heads, *]
// with src_stride and dst_stride floats between rows. MLA's query writes rope(q_pe) into the latent query's last
// columns with it, instead of a copy out, a rope and a copy back.
extern "C" __global__ void rope_copy(const float* src, int src_stride, float* dst, int dst_stride, const int* positions, const float* inv_freq,
                                     int tokens, int heads, int rotary_dim, int interleaved, float scaling)
{
    launch_gate();
    const int half = rotary_dim / 2;
    const long idx = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (long)tokens * heads * half) return;
    rope_pair_to(src, src_stride, dst, dst_stride, idx, positions, inv_freq, heads, half, interleaved, scaling);
}

// Rotates q in place and writes k (rotated) and v into the paged cache rows of this step's tokens, in one launch
// instead of rope(q), rope(k) and kv_write. Threads [0, tokens * heads * half) rotate one q pair each, as rope does;
// the rest write one cache element of k and v each (a k element under rotary_dim reads its pair partner, so k is
// never written: another thread may still be reading it). q: [tokens, heads, head_dim]; k, v: [tokens, kv_heads,
// head_dim]; caches: [slots, kv_heads * head_dim].
template <class KV>
__device__ __forceinline__ void rope_kv_write_impl(float* q, const float* k, const float* v, typename KV::storage* key_cache,
    typename KV::storage* value_cache, const int* positions, const int* slots, const float* inv_freq, int tokens, int heads,
    int kv_heads, int head_dim, int rotary_dim, int interleaved, float scaling)
{
    launch_gate();
    const int half = rotary_dim / 2;
    const long idx = (long)blockIdx.x * blockDim.x + threadIdx.x;
    const long q_pairs = (long)tokens * heads * half;
    if (idx < q_pairs)
    {
        rope_pair(q, idx, positions, inv_freq, heads, head_dim, half, interleaved, scaling);
        return;
    }

    const int row_width = kv_heads * head_dim;
    const long e = idx - q_pairs;
    if (e >= (long)tokens * row_width) return;
    const int t = (int)(e / row_width), j = (int)(e % row_width), d = j % head_dim;
    float value = k[e];
    if (d < rotary_dim)
    {
        // d is the first (a) or second (b) element of pair i; rope writes a = x_a c - x_b s and b = x_b c + x_a s.
        const bool first = interleaved ? (d & 1) == 0 : d < half;
        const int i = interleaved ? d >> 1 : (first ? d : d - half);
        const int partner = interleaved ? (d ^ 1) : (first ? d + half : d - half);
        const float angle = (float)positions[t] * inv_freq[i];
        const float c = cosf(angle) * scaling, s = sinf(angle) * scaling;
        const float other = k[e - d + partner];
        value = first ? value * c - other * s : value * c + other * s;
    }
    const long dst = (long)slots[t] * row_width + j;
    key_cache[dst] = KV::store(value);
    value_cache[dst] = KV::store(v[e]);
}

#define ROPE_KV_WRITE(NAME, KV)                                                                                           \
    extern "C" __global__ void NAME(float* q, const float* k, const float* v, KV::storage* key_cache, KV::storage* value_cache, \
        const int* positions, const int* slots, const float* inv_freq, int tokens, int heads, int kv_heads, int head_dim,       \
        int rotary_dim, int interleaved, float scaling)                                                                      \
    {                                                                                                                        \
        rope_kv_write_impl<KV>(q, k, v, key_cache, value_cache, positions, slots, inv_freq, tokens, heads, kv_heads, head_dim, \
                               rotary_dim, interleaved, scaling);                                                            \
    }
ROPE_KV_WRITE(rope_kv_write, KvF32)
ROPE_KV_WRITE(rope_kv_write_kvbf16, KvBf16)
