// RMSNorm over each row (one block per row), and the fused residual add + RMSNorm:
//   rmsnorm:     out = w * (x / sqrt(mean(x^2) + eps))
//   add_rmsnorm: residual += x; out = rmsnorm(residual)
// Each thread reads its elements before the reduction and writes the same elements after it, so out may alias x.
//
// Rows whose width is a multiple of 4 and at most RMSNORM_HELD * 4 * blockDim.x keep their elements in registers
// between the two halves: every load of the row is issued before the first store, where the general loop (out and
// residual may alias x) would wait on one load per iteration and read the row a second time. Their norm weights, which
// no kernel writes, are read before launch_gate(), so that round trip overlaps the kernel before (on an H100 a decode
// step's norm is a chain of a few such round trips, about 4 us).
#include "common.cuh"

#define RMSNORM_HELD 4

template <class W, bool Add>
__device__ __forceinline__ void rmsnorm_held(float* __restrict__ residual, const float* x, const typename W::storage* __restrict__ w, float* out, int n, float eps)
{
    const long base = (long)blockIdx.x * n;
    const int n4 = n / 4;
    const float4* x4 = reinterpret_cast<const float4*>(x + base);
    float4* r4 = Add ? reinterpret_cast<float4*>(residual + base) : nullptr;
#ifdef RMSNORM_GATE_FIRST
    launch_gate(); // for comparisons: the weights read after the kernel before has finished
#endif
    float4 g[RMSNORM_HELD];
#pragma unroll
    for (int k = 0; k < RMSNORM_HELD; k++)
    {
        const int e = 4 * (threadIdx.x + k * blockDim.x);
        g[k] = e < n ? make_float4(W::load(w, e), W::load(w, e + 1), W::load(w, e + 2), W::load(w, e + 3)) : make_float4(0.f, 0.f, 0.f, 0.f);
    }

    launch_gate();
    float4 v[RMSNORM_HELD];
#pragma unroll
    for (int k = 0; k < RMSNORM_HELD; k++)
    {
        const int i = threadIdx.x + k * blockDim.x;
        v[k] = make_float4(0.f, 0.f, 0.f, 0.f);
        if (i < n4)
        {
            v[k] = x4[i];
            if (Add)
            {
                const float4 r = r4[i];
                v[k].x += r.x;
                v[k].y += r.y;
                v[k].z += r.z;
                v[k].w += r.w;
            }
        }
    }

    float sum = 0.f;
#pragma unroll
    for (int k = 0; k < RMSNORM_HELD; k++)
    {
        const int i = threadIdx.x + k * blockDim.x;
        if (Add && i < n4) r4[i] = v[k];
        sum += v[k].x * v[k].x + v[k].y * v[k].y + v[k].z * v[k].z + v[k].w * v[k].w;
    }
    sum = block_sum(sum);
    const float inv = 1.0f / sqrtf(sum / (float)n + eps);
    float4* o4 = reinterpret_cast<float4*>(out + base);
#pragma unroll
    for (int k = 0; k < RMSNORM_HELD; k++)
    {
        const int i = threadIdx.x + k * blockDim.x;
        if (i < n4) o4[i] = make_float4(g[k].x * (v[k].x * inv), g[k].y * (v[k].y * inv), g[k].z * (v[k].z * inv), g[k].w * (v[k].w * inv));
    }
}

template <class W, bool Add>
__device__ __forceinline__ void rmsnorm(float* __restrict__ residual, const float* x, const typename W::storage* __restrict__ w, float* out, int n, float eps)
{
    if ((n & 3) == 0 && n <= RMSNORM_HELD * 4 * (int)blockDim.x)
    {
        rmsnorm_held<W, Add>(residual, x, w, out, n, eps);
        return;
    }

    launch_gate();

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
