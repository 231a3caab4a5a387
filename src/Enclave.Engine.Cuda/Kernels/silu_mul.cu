// out = silu(gate) * up, element-wise over n values (out may alias gate or up: every element is read before it is
// written, by the same thread). Four elements a thread at a time when the pointers allow, SILU_BATCH of those loaded
// before any is stored, so that a thread's loads overlap instead of each waiting behind the previous store.
#include "common.cuh"

#define SILU_BATCH 4

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

// out[t, j] = silu(g + bg[j]) * (u + bu[j]) rounded to the 16-bit type, from 16-bit products: g = p[t * row_stride + j],
// u = p[t * row_stride + up_offset + j] (stacked gate/up products: row_stride 2n, up_offset n; two separate products:
// row_stride n, up_offset tokens * n). bg, bu may be null. CudaBackend.SiluGatedMlp keeps a gated MLP's intermediate in
// the weights' type this way, for the down product to read as its operand without a rounding pass. Eight elements a
// thread (16-byte loads and store) when n % 8 == 0.
template <bool Bf16>
__device__ __forceinline__ void silu_mul_rounded(const u16* __restrict__ p, long row_stride, long up_offset, const float* __restrict__ bg,
                                                 const float* __restrict__ bu, u16* __restrict__ out, int tokens, int n)
{
    launch_gate();
    const long stride = (long)gridDim.x * blockDim.x, first = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (n % 8 == 0)
    {
        const long groups = (long)tokens * (n / 8);
        for (long i = first; i < groups; i += stride)
        {
            const long e = i * 8;
            const long t = e / n;
            const int j = (int)(e - t * n);
            float g[8], u[8];
            T16<Bf16>::convert8(*reinterpret_cast<const uint4*>(p + t * row_stride + j), g);
            T16<Bf16>::convert8(*reinterpret_cast<const uint4*>(p + t * row_stride + up_offset + j), u);
            unsigned int packed[4];
#pragma unroll
            for (int k = 0; k < 4; k++)
            {
                const float a = silu_times(g[2 * k] + (bg != nullptr ? bg[j + 2 * k] : 0.f), u[2 * k] + (bu != nullptr ? bu[j + 2 * k] : 0.f));
                const float b = silu_times(g[2 * k + 1] + (bg != nullptr ? bg[j + 2 * k + 1] : 0.f), u[2 * k + 1] + (bu != nullptr ? bu[j + 2 * k + 1] : 0.f));
                packed[k] = Bf16 ? pack_bf16_pair(a, b) : pack_f16_pair(a, b);
            }
            uint4 v;
            v.x = packed[0]; v.y = packed[1]; v.z = packed[2]; v.w = packed[3];
            *reinterpret_cast<uint4*>(out + e) = v;
        }
        return;
    }

    for (long e = first; e < (long)tokens * n; e += stride)
    {
        const long t = e / n;
        const int j = (int)(e - t * n);
        const float g = T16<Bf16>::cvt(p[t * row_stride + j]) + (bg != nullptr ? bg[j] : 0.f);
        const float u = T16<Bf16>::cvt(p[t * row_stride + up_offset + j]) + (bu != nullptr ? bu[j] : 0.f);
        const float y = silu_times(g, u);
        out[e] = Bf16 ? f32_to_bf16(y) : f32_to_f16(y);
    }
}

extern "C" __global__ void silu_mul_rounded_bf16(const u16* p, long row_stride, long up_offset, const float* bg, const float* bu, u16* out, int tokens, int n)
{ silu_mul_rounded<true>(p, row_stride, up_offset, bg, bu, out, tokens, n); }

extern "C" __global__ void silu_mul_rounded_f16(const u16* p, long row_stride, long up_offset, const float* bg, const float* bu, u16* out, int tokens, int n)
{ silu_mul_rounded<false>(p, row_stride, up_offset, bg, bu, out, tokens, n); }
