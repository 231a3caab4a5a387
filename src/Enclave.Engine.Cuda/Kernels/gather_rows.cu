// out[i, :] = x[rows[i], :]. grid (x: column chunks, y: output rows).
#include "common.cuh"
extern "C" __global__ void gather_rows(const float* x, const int* rows, float* out, int n)
{
    launch_gate();
    const int r = blockIdx.y;
    const long src = (long)rows[r] * n;
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x)
        out[(long)r * n + i] = x[src + i];
}
