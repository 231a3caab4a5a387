#include "common.cuh"

// out[t, h, :] = w[h] · x[t, h, :] — one small matrix per head (MLA's absorbed kv_b_proj halves).
// x: [T, heads, in]; w: [heads, out, in]; out: [T, heads, out], rows (t, h) of x and out being x_stride and out_stride
// floats apart (in and out when packed; MLA's query reads q_nope inside q and writes into the latent query's first
// columns). One warp an output row, its lanes striding the input
// dimension, then a warp reduction; blocks of W warps take W consecutive rows of one head: grid (heads * ceil(out / W),
// T). With a block a head (16 blocks for a decode token of DeepSeek-V2-Lite) each warp walked 128 rows one after
// another, a chain of dependent round trips that took longer than the layer's products.
extern "C" __global__ void head_matmul(const float* x, const float* w, float* out, int heads, int in, int outDim, int x_stride, int out_stride)
{
    launch_gate();
    const int warps = blockDim.x >> 5, lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int chunks = (outDim + warps - 1) / warps;
    const int h = blockIdx.x / chunks, j = (blockIdx.x % chunks) * warps + warp, t = blockIdx.y;
    if (h >= heads || j >= outDim) return;
    const float* xv = x + ((long)t * heads + h) * x_stride;
    const float* row = w + ((long)h * outDim + j) * in;
    float acc = 0.f;
#pragma unroll 4
    for (int k = lane; k < in; k += 32) acc = fmaf(xv[k], row[k], acc);
    acc = warp_sum(acc);
    if (lane == 0) out[((long)t * heads + h) * out_stride + j] = acc;
}
