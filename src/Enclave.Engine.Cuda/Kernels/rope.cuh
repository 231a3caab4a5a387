// The rotation of one RoPE pair, shared by rope.cu and latent_norm_rope.cu.
#pragma once
#include "common.cuh"

// Rotates pair `pair` (numbered token-major, then head, then i < half) of the rows of src into the same pair of the
// rows of dst, row (t, h) of each being src_stride or dst_stride floats on from the one before:
// a = x_a cos - x_b sin, b = x_b cos + x_a sin, both scaled. src == dst with equal strides rotates in place.
// interleaved = 0: GPT-NeoX pairs (i, i + half); 1: GPT-J pairs (2i, 2i+1).
__device__ __forceinline__ void rope_pair_to(const float* src, int src_stride, float* dst, int dst_stride, long pair, const int* positions,
                                             const float* inv_freq, int heads, int half, int interleaved, float scaling)
{
    const int i = (int)(pair % half);
    const long th = pair / half;
    const int t = (int)(th / heads);
    const float angle = (float)positions[t] * inv_freq[i];
    const float c = cosf(angle) * scaling, s = sinf(angle) * scaling;
    const int a = interleaved ? 2 * i : i, b = interleaved ? 2 * i + 1 : i + half;
    const float x0 = src[th * src_stride + a], x1 = src[th * src_stride + b];
    dst[th * dst_stride + a] = x0 * c - x1 * s;
    dst[th * dst_stride + b] = x1 * c + x0 * s;
}

// Rotates pair `pair` of x [tokens, heads, head_dim] in place.
__device__ __forceinline__ void rope_pair(float* x, long pair, const int* positions, const float* inv_freq, int heads, int head_dim,
                                          int half, int interleaved, float scaling)
{
    rope_pair_to(x, head_dim, x, head_dim, pair, positions, inv_freq, heads, half, interleaved, scaling);
}
