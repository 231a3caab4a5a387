// out = a + b, element-wise over n values (out may alias a or b).
#include "common.cuh"
extern "C" __global__ void add(const float* a, const float* b, float* out, long n)
{
    launch_gate();
    for (long i = (long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x)
        out[i] = a[i] + b[i];
}
