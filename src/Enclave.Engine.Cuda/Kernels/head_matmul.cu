#include "common.cuh"

// out[t, h, :] = w[h] · x[t, h, :] — one small matrix per head (MLA's absorbed kv_b_proj halves).
// x: [T, heads, in]; w: [heads, out, in]; out: [T, heads, out]. grid (heads, T); each warp computes output rows with
// its lanes striding the input dimension, then a warp reduction.
extern "C" __global__ void head_matmul(const float* x, const float* w, float* out, int heads, int in, int outDim)
{
    launch_gate();
    const int h = blockIdx.x, t = blockIdx.y;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    const float* xv = x + ((long)t * heads + h) * in;
    const float* wh = w + (long)h * outDim * in;
    float* o = out + ((long)t * heads + h) * outDim;
    for (int j = warp; j < outDim; j += warps)
    {
        const float* row = wh + (long)j * in;
        float acc = 0.f;
        for (int k = lane; k < in; k += 32) acc = fmaf(xv[k], row[k], acc);
        acc = warp_sum(acc);
        if (lane == 0) o[j] = acc;
    }
}
