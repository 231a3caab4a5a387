// out[rows[i], c] += weights[i] * x[i, c], for i in order: one thread per column walks the picks in order, so rows
// picked several times accumulate in the same order on every run (and as the reference does).
#include "common.cuh"
extern "C" __global__ void scatter_add_rows(const float* x, const int* rows, const float* weights, float* out, int picks, int n)
{
    launch_gate();
    for (int c = blockIdx.x * blockDim.x + threadIdx.x; c < n; c += gridDim.x * blockDim.x)
    {
        for (int i = 0; i < picks; i++) out[(long)rows[i] * n + c] += weights[i] * x[(long)i * n + c];
    }
}
