// out[r, outOffset + c] = x[r, xOffset + c] for c in [0, count): splits and joins per-head parts (MLA's nope/rope).
#include "common.cuh"
extern "C" __global__ void copy_columns(const float* x, int xWidth, int xOffset, float* out, int outWidth, int outOffset, int count, long total)
{
    launch_gate();
    for (long i = (long)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (long)gridDim.x * blockDim.x)
    {
        const long r = i / count;
        const int c = (int)(i - r * count);
        out[r * outWidth + outOffset + c] = x[r * xWidth + xOffset + c];
    }
}
