// Runs a CUDA kernel's blocks on host threads, one block at a time: one std::thread per CUDA thread, a barrier over the
// block for __syncthreads and one per warp for the shuffles (each lane posts its value, the warp meets, each reads its
// source lane, the warp meets again). __shared__ becomes static, which one block at a time makes per block. Slow, but
// it runs a kernel's logic (its barriers, scans, histograms and atomics) on a machine without a GPU. Math is the host
// C library's (expf within an ulp of the device's), so results are the kernel's up to that rounding.
#pragma once
#include <barrier>
#include <thread>
#include <vector>
#include <atomic>
#include <cmath>
#include <cstring>
#include <cstdint>
#include <algorithm>
#define __device__
#define __global__
#define __forceinline__ inline
#define __shared__ static
#define __restrict__
#define __launch_bounds__(...)
#define enclave_blanked_asm(...) ((void)0)
struct edim3 { unsigned int x, y, z; };
inline thread_local edim3 threadIdx;
inline edim3 blockIdx, blockDim, gridDim;
struct float4 { float x, y, z, w; };
struct uint4 { unsigned int x, y, z, w; };
struct uint2 { unsigned int x, y; };
inline float4 make_float4(float x, float y, float z, float w) { return float4{x, y, z, w}; }
inline std::barrier<>* g_block;
inline std::barrier<>* g_warp[32];
inline unsigned int g_xch[32][32];
inline void __syncthreads() { g_block->arrive_and_wait(); }
inline unsigned int ex(unsigned int v, int src)
{
    int w = threadIdx.x >> 5, lane = threadIdx.x & 31;
    g_xch[w][lane] = v;
    g_warp[w]->arrive_and_wait();
    unsigned int r = g_xch[w][src];
    g_warp[w]->arrive_and_wait();
    return r;
}
inline float __uint_as_float(unsigned int u) { float f; memcpy(&f, &u, 4); return f; }
inline unsigned int __float_as_uint(float f) { unsigned int u; memcpy(&u, &f, 4); return u; }
inline float __int_as_float(int i) { float f; memcpy(&f, &i, 4); return f; }
inline long long __double_as_longlong(double d) { long long l; memcpy(&l, &d, 8); return l; }
inline double __longlong_as_double(long long l) { double d; memcpy(&d, &l, 8); return d; }
inline unsigned int __shfl_xor_sync(unsigned int, unsigned int v, int o) { return ex(v, (threadIdx.x & 31) ^ o); }
inline int __shfl_xor_sync(unsigned int, int v, int o) { return (int)ex((unsigned)v, (threadIdx.x & 31) ^ o); }
inline float __shfl_xor_sync(unsigned int, float v, int o) { return __uint_as_float(ex(__float_as_uint(v), (threadIdx.x & 31) ^ o)); }
inline unsigned int __shfl_up_sync(unsigned int, unsigned int v, int o) { int l = threadIdx.x & 31; return ex(v, l >= o ? l - o : l); }
inline float __shfl_down_sync(unsigned int, float v, int o) { int l = threadIdx.x & 31; return __uint_as_float(ex(__float_as_uint(v), l + o < 32 ? l + o : l)); }
inline int __shfl_down_sync(unsigned int, int v, int o) { int l = threadIdx.x & 31; return (int)ex((unsigned)v, l + o < 32 ? l + o : l); }
inline unsigned long long atomicAdd(unsigned long long* p, unsigned long long v) { return __atomic_fetch_add(p, v, __ATOMIC_RELAXED); }
inline int atomicMin(int* p, int v) { int old = __atomic_load_n(p, __ATOMIC_RELAXED); while (v < old && !__atomic_compare_exchange_n(p, &old, v, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {} return old; }
inline unsigned long long __float2ull_rz(float f) { return (unsigned long long)f; }
inline float fmaxf(float a, float b) { return std::fmax(a, b); }
inline float fminf(float a, float b) { return std::fmin(a, b); }
using std::min; using std::max;
