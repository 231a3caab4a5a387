// Shared helpers for the Enclave CUDA kernels: element types, 16-byte loads and warp reductions.
// Compiled by NVRTC with no CUDA headers, so half and bfloat16 are handled as raw 16-bit patterns.
#pragma once

typedef unsigned short u16;

// Programmatic dependent launch (compute capability 9.0+, CudaContext.ProgrammaticLaunch): each kernel is launched so
// that the next kernel on the stream may start before it ends. So every kernel calls launch_gate() before it reads
// anything an earlier kernel wrote and before it writes anything; only weights, which no kernel writes, may be read
// before it. launch_gate() waits until the previous kernel has finished and its writes are visible, then lets the next
// kernel start: its blocks take the multiprocessor slots this kernel leaves free, so the next launch's latency, and the
// first weight loads it issues before its own gate, overlap this kernel's tail. Waiting first keeps the look-ahead to
// one kernel, so a kernel is never waited on by one that started before it. Without the launch attribute, or before
// sm_90, both instructions are no-ops.
__device__ __forceinline__ void launch_gate()
{
#if __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
    asm volatile("griddepcontrol.launch_dependents;" :::);
#endif
}

__device__ __forceinline__ float bf16_to_f32(u16 v) { return __uint_as_float(((unsigned int)v) << 16); }

__device__ __forceinline__ float f16_to_f32(u16 v)
{
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(v));
    return f;
}

__device__ __forceinline__ u16 f32_to_bf16(float f)
{
    unsigned int u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return 0x7fc0;  // NaN stays NaN
    u += 0x7fffu + ((u >> 16) & 1u);                        // round to nearest even
    return (u16)(u >> 16);
}

__device__ __forceinline__ u16 f32_to_f16(float f)
{
    u16 h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
    return h;
}

// Two floats as one 32-bit word of 16-bit values, the first in the low half (memory order).
__device__ __forceinline__ unsigned int pack_bf16_pair(float lo, float hi) { return (unsigned int)f32_to_bf16(lo) | ((unsigned int)f32_to_bf16(hi) << 16); }
__device__ __forceinline__ unsigned int pack_f16_pair(float lo, float hi) { return (unsigned int)f32_to_f16(lo) | ((unsigned int)f32_to_f16(hi) << 16); }

// 16 bytes of a weight, which is read once a step and never written by a kernel: through the read-only path and
// without allocating in L1 (ld.global.nc.L1::no_allocate), so the weight stream does not evict the activations that
// every warp of a GEMV re-reads from L1. Measured on the 7B decode products: 2.79 -> 2.89 TB/s with two rows a warp.
__device__ __forceinline__ uint4 load_stream16(const void* p)
{
    uint4 r;
    asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];" : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w) : "l"(p));
    return r;
}

// Each weight type: its storage, a scalar load, and an 8-element load from a 16-byte aligned address
// split into a raw fetch (issued early, so several are in flight) and a conversion to float.
struct TF32
{
    typedef float storage;
    struct raw { float4 a, b; };
    static __device__ __forceinline__ float load(const float* p, long i) { return p[i]; }
    static constexpr int warp_rows = 1; // GEMV rows a warp streams together (8 registers a chunk: one row)
    static __device__ __forceinline__ raw fetch8(const float* p)
    {
        raw r;
        const uint4 a = load_stream16(p), b = load_stream16(p + 4);
        r.a = make_float4(__uint_as_float(a.x), __uint_as_float(a.y), __uint_as_float(a.z), __uint_as_float(a.w));
        r.b = make_float4(__uint_as_float(b.x), __uint_as_float(b.y), __uint_as_float(b.z), __uint_as_float(b.w));
        return r;
    }
    static __device__ __forceinline__ void convert8(const raw& r, float o[8])
    {
        o[0] = r.a.x; o[1] = r.a.y; o[2] = r.a.z; o[3] = r.a.w;
        o[4] = r.b.x; o[5] = r.b.y; o[6] = r.b.z; o[7] = r.b.w;
    }
};

template <bool Bf16>
struct T16
{
    typedef u16 storage;
    typedef uint4 raw;
    static __device__ __forceinline__ float cvt(u16 v) { return Bf16 ? bf16_to_f32(v) : f16_to_f32(v); }
    static __device__ __forceinline__ float load(const u16* p, long i) { return cvt(p[i]); }
    static constexpr int warp_rows = 2; // GEMV rows a warp streams together: each activation load serves both
    static __device__ __forceinline__ raw fetch8(const u16* p) { return load_stream16(p); }
    static __device__ __forceinline__ void convert8(const raw& r, float o[8])
    {
        const unsigned int w[4] = {r.x, r.y, r.z, r.w};
#pragma unroll
        for (int i = 0; i < 4; i++)
        {
            o[2 * i] = cvt((u16)(w[i] & 0xffffu));
            o[2 * i + 1] = cvt((u16)(w[i] >> 16));
        }
    }
};

typedef T16<false> TF16;
typedef T16<true> TBF16;

__device__ __forceinline__ float warp_sum(float v)
{
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ float warp_max(float v)
{
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

#define NEG_INF __int_as_float(0xff800000)

// silu(g) * u, the gated MLP's activation (silu_mul, the fused gate/up GEMV, the expert products).
__device__ __forceinline__ float silu_times(float g, float u) { return g / (1.0f + expf(-g)) * u; }

// Sum (or max) over the block; every thread gets the result. blockDim.x must be a multiple of 32, at most 1024.
template <bool Max>
__device__ __forceinline__ float block_reduce(float v)
{
    __shared__ float partial[32];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    v = Max ? warp_max(v) : warp_sum(v);
    __syncthreads(); // an earlier reduction's readers are done with partial
    if (lane == 0) partial[warp] = v;
    __syncthreads();
    float total = Max ? NEG_INF : 0.f;
    for (int i = 0; i < warps; i++) total = Max ? fmaxf(total, partial[i]) : total + partial[i];
    return total;
}

__device__ __forceinline__ float block_sum(float v) { return block_reduce<false>(v); }
__device__ __forceinline__ float block_max(float v) { return block_reduce<true>(v); }

// Context splits of the decode attention kernels cover multiples of this many positions (CudaBackend.AttentionSpanGranule).
#define ATTN_SPAN_GRANULE 64

// Instantiates an extern "C" kernel per weight type: NAME_f32, NAME_f16, NAME_bf16.
#define ENCLAVE_FOR_WEIGHT_TYPES(MACRO) MACRO(f32, TF32) MACRO(f16, TF16) MACRO(bf16, TBF16)

// KV cache element types: fp32, or bf16 (half the bytes an attention step reads), converted to fp32 on load. load4
// reads four consecutive elements (16-byte aligned for fp32, 8-byte for bf16).
struct KvF32
{
    typedef float storage;
    static __device__ __forceinline__ float4 load4(const float* p) { return *reinterpret_cast<const float4*>(p); }
    static __device__ __forceinline__ float load(const float* p) { return *p; }
    static __device__ __forceinline__ float store(float v) { return v; }
};

struct KvBf16
{
    typedef u16 storage;
    static __device__ __forceinline__ float4 load4(const u16* p)
    {
        const uint2 r = *reinterpret_cast<const uint2*>(p); // little endian: the first element is the low half
        return float4{__uint_as_float(r.x << 16), __uint_as_float(r.x & 0xffff0000u), __uint_as_float(r.y << 16), __uint_as_float(r.y & 0xffff0000u)};
    }
    static __device__ __forceinline__ float load(const u16* p) { return bf16_to_f32(*p); }
    static __device__ __forceinline__ u16 store(float v) { return f32_to_bf16(v); }
};

// A kernel's dynamic shared memory (sized at launch; past 48 KB the function's limit must be raised first). The host
// syntax check's shim, which turns __shared__ into static, defines its own.
#ifndef ENCLAVE_DYNAMIC_SHARED
#define ENCLAVE_DYNAMIC_SHARED(type, name) extern __shared__ type name[]
#endif
