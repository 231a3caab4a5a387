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
template <class W, int T, int R>
__device__ __forceinline__ void gemv_dot(const float* __restrict__ x, const typename W::storage* const (&wr)[R], int in, int vec, float (&acc)[R][T])
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
        typename W::raw buf[R][U];
        // The first chunks are weights, which no kernel writes: fetched before the gate, so they stream in while the
        // kernel that produced x finishes.
#pragma unroll
        for (int u = 0; u < U; u++)
            if (u < chunks && u * 256 + lane_k < in)
#pragma unroll
                for (int r = 0; r < R; r++) buf[r][u] = W::fetch8(wr[r] + u * 256 + lane_k);
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
                const int k = (c + u) * 256 + lane_k, next = k + U * 256;
                if (next < in)
#pragma unroll
                    for (int r = 0; r < R; r++) buf[r][u] = W::fetch8(wr[r] + next);
                if (k < in) gemv_chunk<W, T, R>(x, in, k, cur, acc);
            }
        }
#pragma unroll
        for (int u = 0; u < U; u++)
        {
            const int k = (c + u) * 256 + lane_k;
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
