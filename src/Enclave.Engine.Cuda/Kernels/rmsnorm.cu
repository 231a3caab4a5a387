// RMSNorm over each row (one block per row), and the fused residual add + RMSNorm:
//   rmsnorm:     out = w * (x / sqrt(mean(x^2) + eps))
//   add_rmsnorm: residual += x; out = rmsnorm(residual)
// Each thread reads its elements before the reduction and writes the same elements after it, so out may alias x.
#include "common.cuh"

template <class W, bool Add>
__device__ void rmsnorm(float* __restrict__ residual, const float* x, const typename W::storage* __restrict__ w, float* out, int n, float eps)
{
    const long base = (long)blockIdx.x * n;
    float sum = 0.f;
    for (int i = threadIdx.x; i < n; i += blockDim.x)
    {
        float v = x[base + i];
        if (Add)
        {
            v += residual[base + i];
            residual[base + i] = v;
        }
        sum += v * v;
    }
    sum = block_sum(sum);
    const float inv = 1.0f / sqrtf(sum / (float)n + eps);
    const float* src = Add ? residual : x;
    for (int i = threadIdx.x; i < n; i += blockDim.x)
        out[base + i] = W::load(w, i) * (src[base + i] * inv);
}

#define RMSNORM(S, W)                                                                                               \
    extern "C" __global__ void rmsnorm_##S(const float* x, const W::storage* w, float* out, int n, float eps)          \
    { rmsnorm<W, false>(nullptr, x, w, out, n, eps); }                                                              \
    extern "C" __global__ void add_rmsnorm_##S(float* residual, const float* x, const W::storage* w, float* out, int n, float eps) \
    { rmsnorm<W, true>(residual, x, w, out, n, eps); }
ENCLAVE_FOR_WEIGHT_TYPES(RMSNORM)
