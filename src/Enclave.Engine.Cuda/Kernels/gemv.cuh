// The decode GEMV's inner loop, shared by the products in matmul.cu and the grouped expert products in moe_experts.cu:
// R weight rows streamed in 16-byte chunks with several in flight, each dotted with T activation rows.
#pragma once
#include "common.cuh"

// acc[r][t] += x[t, k .. k + 7] · the 8 weights of row r in raw[r].
template <class W, int T, int R>
__device__ __forceinline__ void gemv_chunk(const float* __restrict__ x, int in, int k, const typename W::raw (&raw)[R], float (&acc)[R][T])
{
    float wv[R][8];
#pragma unroll
    for (int r = 0; r < R; r++) W::convert8(raw[r], wv[r]);
#pragma unroll
    for (int t = 0; t < T; t++)
    {
        const float4 a = *reinterpret_cast<const float4*>(x + (long)t * in + k);
        const float4 b = *reinterpret_cast<const float4*>(x + (long)t * in + k + 4);
#pragma unroll
        for (int r = 0; r < R; r++)
            acc[r][t] += wv[r][0] * a.x + wv[r][1] * a.y + wv[r][2] * a.z + wv[r][3] * a.w + wv[r][4] * b.x + wv[r][5] * b.y + wv[r][6] * b.z + wv[r][7] * b.w;
    }
}

// acc[r][t] = x[t, :] · wr[r] for R weight rows, summed over the warp: every lane gets the totals.
// Vector path: chunk c of a row is elements 256c .. 256c + 255, lane l taking the 8 from 256c + 8l (one 16-byte load a
// row). The chunks are software-pipelined: U chunks of every row are always in flight, a slot being refilled with chunk
// c + U as soon as chunk c is used, so a warp never waits on a whole round of loads (fetching U, then using them, left
// each warp idle for a memory round trip every U chunks). The R rows share every activation load. Each lane adds its
// chunks in row order, then the warp sums, so the result does not depend on R or U.
//
// GEMV_STAGGER = s (0 turns it off): the warp of row group g walks its chunks starting at chunk (g * s) mod chunks and
// wraps around, so the warps of a launch, which all start together, do not all read the same offset of their rows at
// once. The order depends on the row group only, so the result still does not depend on the launch. Measured on an
// H100 at batch 1 (docs/benchmarks.md): 7B 181.5-181.7 tok/s against 181.2-181.3 off, 1.5B 533.5-534.8 against
// 495.4-530.7 off. The expert products (moe_experts.cu) pass no row group and stay unstaggered: staggered too, a
// DeepSeek-V2-Lite batch-8 step was not faster (688.9 tok/s against 701.4).
#ifndef GEMV_STAGGER
#define GEMV_STAGGER 5
#endif
template <class W, int T, int R>
__device__ __forceinline__ void gemv_dot(const float* __restrict__ x, const typename W::storage* const (&wr)[R], int in, int vec, float (&acc)[R][T],
                                         int row_group = 0)
{
    const int lane = threadIdx.x & 31;
#pragma unroll
    for (int r = 0; r < R; r++)
#pragma unroll
        for (int t = 0; t < T; t++) acc[r][t] = 0.f;

    if (vec)
    {
        constexpr int U = 4;
        const int chunks = (in + 255) / 256;
        const int lane_k = lane * 8;
        // The element offset of this lane in the j-th chunk the warp walks (j < chunks).
        const int first_chunk = GEMV_STAGGER != 0 ? (int)(((unsigned)row_group * (unsigned)GEMV_STAGGER) % (unsigned)chunks) : 0;
        auto offset = [&](int j) { j += first_chunk; return (j >= chunks ? j - chunks : j) * 256 + lane_k; };
        typename W::raw buf[R][U];
        // The first chunks are weights, which no kernel writes: fetched before the gate, so they stream in while the
        // kernel that produced x finishes.
#pragma unroll
        for (int u = 0; u < U; u++)
            if (u < chunks && offset(u) < in)
#pragma unroll
                for (int r = 0; r < R; r++) buf[r][u] = W::fetch8(wr[r] + offset(u));
        launch_gate();
        int c = 0;
        for (; c + U <= chunks; c += U)
        {
#pragma unroll
            for (int u = 0; u < U; u++)
            {
                typename W::raw cur[R];
#pragma unroll
                for (int r = 0; r < R; r++) cur[r] = buf[r][u];
                const int k = offset(c + u);
                if (c + u + U < chunks)
                {
                    const int next = offset(c + u + U);
                    if (next < in)
#pragma unroll
                        for (int r = 0; r < R; r++) buf[r][u] = W::fetch8(wr[r] + next);
                }
                if (k < in) gemv_chunk<W, T, R>(x, in, k, cur, acc);
            }
        }
#pragma unroll
        for (int u = 0; u < U; u++)
        {
            const int k = offset(c + u);
            if (c + u < chunks && k < in)
            {
                typename W::raw cur[R];
#pragma unroll
                for (int r = 0; r < R; r++) cur[r] = buf[r][u];
                gemv_chunk<W, T, R>(x, in, k, cur, acc);
            }
        }
    }
    else
    {
        launch_gate();
        for (int k = lane; k < in; k += 32)
        {
#pragma unroll
            for (int r = 0; r < R; r++)
            {
                const float wv = W::load(wr[r], k);
#pragma unroll
                for (int t = 0; t < T; t++) acc[r][t] += wv * x[(long)t * in + k];
            }
        }
    }

#pragma unroll
    for (int r = 0; r < R; r++)
#pragma unroll
        for (int t = 0; t < T; t++) acc[r][t] = warp_sum(acc[r][t]);
}
