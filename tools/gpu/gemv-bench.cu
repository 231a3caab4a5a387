// Decode GEMV variants at the 7B shape, timed alone: which way of streaming a bf16 weight row reaches the copy
// bandwidth. Each shape runs over 28 distinct weight sets (as the layers do), so nothing is served from L2.
// Build and run on a GPU host: nvcc -O3 -arch=sm_90 -o gemv-bench gemv-bench.cu && ./gemv-bench
#include <cstdio>
#include <cstdint>
#include <cuda_runtime.h>

#define CHECK(x) do { cudaError_t e = (x); if (e != cudaSuccess) { printf("%s: %s\n", #x, cudaGetErrorString(e)); return 1; } } while (0)

typedef unsigned short u16;

__device__ __forceinline__ float bf(unsigned int w, int hi) { return __uint_as_float(hi ? (w & 0xffff0000u) : (w << 16)); }

__device__ __forceinline__ float warp_sum(float v)
{
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

template <int NoL1>
__device__ __forceinline__ uint4 ldw(const u16* p)
{
    if (NoL1)
    {
        uint4 r;
        asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];" : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w) : "l"(p));
        return r;
    }
    return *reinterpret_cast<const uint4*>(p);
}

// x: fp32 (XB = 0) or bf16 (XB = 1)
template <int XB>
__device__ __forceinline__ float dot8(uint4 w, const void* xv, int k)
{
    float a[8];
    if (XB)
    {
        const uint4 r = *reinterpret_cast<const uint4*>((const u16*)xv + k);
        a[0] = bf(r.x, 0); a[1] = bf(r.x, 1); a[2] = bf(r.y, 0); a[3] = bf(r.y, 1);
        a[4] = bf(r.z, 0); a[5] = bf(r.z, 1); a[6] = bf(r.w, 0); a[7] = bf(r.w, 1);
    }
    else
    {
        const float4 p = *reinterpret_cast<const float4*>((const float*)xv + k);
        const float4 q = *reinterpret_cast<const float4*>((const float*)xv + k + 4);
        a[0] = p.x; a[1] = p.y; a[2] = p.z; a[3] = p.w; a[4] = q.x; a[5] = q.y; a[6] = q.z; a[7] = q.w;
    }
    return bf(w.x, 0) * a[0] + bf(w.x, 1) * a[1] + bf(w.y, 0) * a[2] + bf(w.y, 1) * a[3]
         + bf(w.z, 0) * a[4] + bf(w.z, 1) * a[5] + bf(w.w, 0) * a[6] + bf(w.w, 1) * a[7];
}

// Baseline: the engine's gemv_dot (fetch U chunks, wait, compute them, fetch the next U).
__global__ void __launch_bounds__(256) gemv_base(const float* __restrict__ x, const u16* __restrict__ w, float* __restrict__ y, int in, int out)
{
    const int row = (int)(((long)blockIdx.x * blockDim.x + threadIdx.x) >> 5);
    if (row >= out) return;
    const int lane = threadIdx.x & 31;
    const u16* wr = w + (long)row * in;
    float acc = 0.f;
    constexpr int U = 4;
    int k = lane * 8;
    uint4 raw[U];
    for (; k + (U - 1) * 256 < in; k += U * 256)
    {
#pragma unroll
        for (int u = 0; u < U; u++) raw[u] = ldw<0>(wr + k + u * 256);
#pragma unroll
        for (int u = 0; u < U; u++) acc += dot8<0>(raw[u], x, k + u * 256);
    }
    for (; k < in; k += 256) acc += dot8<0>(ldw<0>(wr + k), x, k);
    acc = warp_sum(acc);
    if (lane == 0) y[row] = acc;
}

// Software pipeline: U chunks always in flight; chunk c's slot is refilled with chunk c + U as soon as it is used.
// R rows a warp share each x load. Needs in % 256 == 0.
template <int U, int R, int NoL1, int XB>
__global__ void __launch_bounds__(256) gemv_pipe(const void* __restrict__ x, const u16* __restrict__ w, float* __restrict__ y, int in, int out)
{
    const int warp = (int)(((long)blockIdx.x * blockDim.x + threadIdx.x) >> 5);
    const int row0 = warp * R;
    if (row0 >= out) return;
    const int lane = threadIdx.x & 31;
    const int C = in / 256;
    const u16* wr[R];
#pragma unroll
    for (int r = 0; r < R; r++) wr[r] = w + (long)min(row0 + r, out - 1) * in + lane * 8;
    uint4 buf[R][U];
#pragma unroll
    for (int u = 0; u < U; u++)
#pragma unroll
        for (int r = 0; r < R; r++)
            if (u < C) buf[r][u] = ldw<NoL1>(wr[r] + u * 256);
    float acc[R];
#pragma unroll
    for (int r = 0; r < R; r++) acc[r] = 0.f;
    int c = 0;
    for (; c + U <= C; c += U)
    {
#pragma unroll
        for (int u = 0; u < U; u++)
        {
            uint4 cur[R];
#pragma unroll
            for (int r = 0; r < R; r++) cur[r] = buf[r][u];
            const int next = c + u + U;
            if (next < C)
#pragma unroll
                for (int r = 0; r < R; r++) buf[r][u] = ldw<NoL1>(wr[r] + next * 256);
            const int k = (c + u) * 256 + lane * 8;
#pragma unroll
            for (int r = 0; r < R; r++) acc[r] += dot8<XB>(cur[r], x, k);
        }
    }
#pragma unroll
    for (int u = 0; u < U; u++)
        if (c + u < C)
#pragma unroll
            for (int r = 0; r < R; r++) acc[r] += dot8<XB>(buf[r][u], x, (c + u) * 256 + lane * 8);
#pragma unroll
    for (int r = 0; r < R; r++)
    {
        const float s = warp_sum(acc[r]);
        if (lane == 0 && row0 + r < out) y[row0 + r] = s;
    }
}

__global__ void fill(u16* p, long n, unsigned seed)
{
    for (long i = (long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x)
    {
        unsigned h = (unsigned)i * 2654435761u ^ seed;
        h ^= h >> 13; h *= 0x5bd1e995u; h ^= h >> 15;
        const float f = ((h & 0xffff) / 65536.f - 0.5f) * 0.05f;
        p[i] = (u16)(__float_as_uint(f) >> 16);
    }
}

__global__ void fillf(float* p, long n)
{
    for (long i = (long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x) p[i] = ((i * 37) % 101) / 101.f - 0.5f;
}

__global__ void tobf(const float* x, u16* o, long n)
{
    for (long i = (long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x) o[i] = (u16)(__float_as_uint(x[i]) >> 16);
}

struct Shape { const char* name; int out, in; };

typedef void (*Kernel)(const void*, const u16*, float*, int, int);

int main()
{
    const int layers = 28;
    const Shape shapes[] = {{"qkv", 4608, 3584}, {"o", 3584, 3584}, {"gate/up", 37888, 3584}, {"down", 3584, 18944}};
    u16* w[4][layers];
    for (int s = 0; s < 4; s++)
        for (int l = 0; l < layers; l++)
        {
            const long n = (long)shapes[s].out * shapes[s].in;
            CHECK(cudaMalloc(&w[s][l], n * 2));
            fill<<<1024, 256>>>(w[s][l], n, s * 977 + l);
        }
    float *x, *y, *ref;
    u16* xb;
    CHECK(cudaMalloc(&x, 18944 * 4));
    CHECK(cudaMalloc(&xb, 18944 * 2));
    CHECK(cudaMalloc(&y, 37888 * 4));
    CHECK(cudaMalloc(&ref, 37888 * 4));
    fillf<<<64, 256>>>(x, 18944);
    tobf<<<64, 256>>>(x, xb, 18944);
    CHECK(cudaDeviceSynchronize());

    // copy bandwidth for reference
    {
        void *a, *b;
        const size_t bytes = 2ul << 30;
        CHECK(cudaMalloc(&a, bytes));
        CHECK(cudaMalloc(&b, bytes));
        cudaEvent_t e0, e1;
        cudaEventCreate(&e0); cudaEventCreate(&e1);
        cudaMemcpy(b, a, bytes, cudaMemcpyDeviceToDevice);
        cudaEventRecord(e0);
        for (int i = 0; i < 10; i++) cudaMemcpy(b, a, bytes, cudaMemcpyDeviceToDevice);
        cudaEventRecord(e1);
        cudaEventSynchronize(e1);
        float ms; cudaEventElapsedTime(&ms, e0, e1);
        printf("copy bandwidth: %.0f GB/s\n", 2.0 * bytes * 10 / (ms * 1e-3) / 1e9);
        cudaFree(a); cudaFree(b);
    }

    struct Variant { const char* name; Kernel k; int rows; int block; int xbf; };
    const Variant variants[] = {
        {"base U4", (Kernel)gemv_base, 1, 256, 0},
        {"pipe U4", (Kernel)gemv_pipe<4, 1, 0, 0>, 1, 256, 0},
        {"pipe U6", (Kernel)gemv_pipe<6, 1, 0, 0>, 1, 256, 0},
        {"pipe U8", (Kernel)gemv_pipe<8, 1, 0, 0>, 1, 256, 0},
        {"pipe U4 noL1", (Kernel)gemv_pipe<4, 1, 1, 0>, 1, 256, 0},
        {"pipe U8 noL1", (Kernel)gemv_pipe<8, 1, 1, 0>, 1, 256, 0},
        {"pipe U4 xbf16", (Kernel)gemv_pipe<4, 1, 0, 1>, 1, 256, 1},
        {"pipe U8 noL1 xbf16", (Kernel)gemv_pipe<8, 1, 1, 1>, 1, 256, 1},
        {"pipe U4 R2", (Kernel)gemv_pipe<4, 2, 0, 0>, 2, 256, 0},
        {"pipe U4 R2 noL1", (Kernel)gemv_pipe<4, 2, 1, 0>, 2, 256, 0},
        {"pipe U4 R2 noL1 xbf16", (Kernel)gemv_pipe<4, 2, 1, 1>, 2, 256, 1},
        {"pipe U4 b128", (Kernel)gemv_pipe<4, 1, 0, 0>, 1, 128, 0},
        {"pipe U8 noL1 b128", (Kernel)gemv_pipe<8, 1, 1, 0>, 1, 128, 0},
        {"pipe U8 noL1 b64", (Kernel)gemv_pipe<8, 1, 1, 0>, 1, 64, 0},
    };

    cudaEvent_t e0, e1;
    cudaEventCreate(&e0); cudaEventCreate(&e1);
    printf("%-24s %10s %10s %10s %10s %12s %8s\n", "variant", "qkv", "o", "gate/up", "down", "all (28 l)", "maxerr");
    for (int pass = 0; pass < 2; pass++)
        for (const Variant& v : variants)
        {
            printf("%-24s", v.name);
            double totalBytes = 0, totalMs = 0;
            float err = 0;
            for (int s = 0; s < 4; s++)
            {
                const Shape& sh = shapes[s];
                const int warps = (sh.out + v.rows - 1) / v.rows;
                const int grid = (warps * 32 + v.block - 1) / v.block;
                const void* xin = v.xbf ? (const void*)xb : (const void*)x;
                // correctness against the baseline on layer 0
                gemv_base<<<(sh.out * 32 + 255) / 256, 256>>>(x, w[s][0], ref, sh.in, sh.out);
                v.k<<<grid, v.block>>>(xin, w[s][0], y, sh.in, sh.out);
                CHECK(cudaDeviceSynchronize());
                static float hr[37888], hy[37888];
                cudaMemcpy(hr, ref, sh.out * 4, cudaMemcpyDeviceToHost);
                cudaMemcpy(hy, y, sh.out * 4, cudaMemcpyDeviceToHost);
                for (int i = 0; i < sh.out; i++) err = fmaxf(err, fabsf(hr[i] - hy[i]));
                const int reps = 10;
                cudaEventRecord(e0);
                for (int r = 0; r < reps; r++)
                    for (int l = 0; l < layers; l++) v.k<<<grid, v.block>>>(xin, w[s][l], y, sh.in, sh.out);
                cudaEventRecord(e1);
                cudaEventSynchronize(e1);
                float ms; cudaEventElapsedTime(&ms, e0, e1);
                const double bytes = 2.0 * sh.out * sh.in * layers * reps;
                totalBytes += bytes; totalMs += ms;
                printf(" %5.0f GB/s", bytes / (ms * 1e-3) / 1e9);
            }
            // the four shapes back to back, layer by layer, as a decode step runs them
            const int reps = 10;
            cudaEventRecord(e0);
            for (int r = 0; r < reps; r++)
                for (int l = 0; l < layers; l++)
                    for (int s = 0; s < 4; s++)
                    {
                        const Shape& sh = shapes[s];
                        const int warps = (sh.out + v.rows - 1) / v.rows;
                        v.k<<<(warps * 32 + v.block - 1) / v.block, v.block>>>(v.xbf ? (const void*)xb : (const void*)x, w[s][l], y, sh.in, sh.out);
                    }
            cudaEventRecord(e1);
            cudaEventSynchronize(e1);
            float ms; cudaEventElapsedTime(&ms, e0, e1);
            printf("  %5.0f GB/s %.3f ms %8.2e\n", totalBytes / (ms * 1e-3) / 1e9, ms / reps, err);
        }
    return 0;
}
