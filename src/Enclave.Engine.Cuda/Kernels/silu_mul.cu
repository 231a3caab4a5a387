// out = silu(gate) * up, element-wise over n values (out may alias gate or up: every element is read before it is
// written, by the same thread). Four elements a thread at a time when the pointers allow, SILU_BATCH of those loaded
// before any is stored, so that a thread's loads overlap instead of each waiting behind the previous store.
#include "common.cuh"

#define SILU_BATCH 4

__device__ __forceinline__ float silu_times(float g, float u) { return g / (1.0f + expf(-g)) * u; }

extern "C" __global__ void silu_mul(const float* gate, const float* up, float* out, long n)
{
    launch_gate();
    const long stride = (long)gridDim.x * blockDim.x, first = (long)blockIdx.x * blockDim.x + threadIdx.x;
    const bool vector = (((unsigned long)gate | (unsigned long)up | (unsigned long)out) & 15) == 0;
    const long n4 = vector ? n / 4 : 0;
    for (long base = first; base < n4; base += stride * SILU_BATCH)
    {
        float4 g[SILU_BATCH], u[SILU_BATCH];
#pragma unroll
        for (int k = 0; k < SILU_BATCH; k++)
        {
            const long i = base + k * stride;
            if (i < n4)
            {
                g[k] = reinterpret_cast<const float4*>(gate)[i];
                u[k] = reinterpret_cast<const float4*>(up)[i];
            }
        }
#pragma unroll
        for (int k = 0; k < SILU_BATCH; k++)
        {
            const long i = base + k * stride;
            if (i < n4)
                reinterpret_cast<float4*>(out)[i] = make_float4(silu_times(g[k].x, u[k].x), silu_times(g[k].y, u[k].y),
                                                                silu_times(g[k].z, u[k].z), silu_times(g[k].w, u[k].w));
        }
    }
    for (long i = 4 * n4 + first; i < n; i += stride) out[i] = silu_times(gate[i], up[i]);
}
