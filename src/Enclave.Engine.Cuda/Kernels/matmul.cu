// y[T, out] = x[T, in] (float) . w[out, in]^T (+ bias), fp32 accumulation, weights read in their stored type.
//
// gemv_<type>_<T> (T = 1..8 tokens, the decode case): one warp per W::warp_rows output rows (two for 16-bit weights,
// which share each activation load); each lane streams 16-byte chunks of the rows, four chunks a row always in flight,
// and multiplies each by all T activation rows, so the weights are read once. Needs in % 8 == 0 and 16-byte aligned
// rows for the vector path; otherwise a scalar loop does the same. Measured alone on the 7B decode shapes (28 layers of
// distinct weights, H100): 2.79 TB/s with one row a warp and four chunks fetched then used, 2.89 with two rows a warp,
// the pipeline and the L1-bypassing weight loads.
//
// gemv_shared_<type>_<T>: the same for up to three weights that share x (q/k/v, gate/up), in one launch.
//
// gemv_silu_gated_<type>_<T>: a gated MLP's gate and up products with silu(gate) * up applied before the store.
//
// gemm_<type> (larger T): a 64x64 output tile per block of 256 threads, 16-deep k slices staged in shared memory as
// float, 4x4 outputs per thread. Plain FMA, no tensor cores: exact fp32 arithmetic for the default path.
//
// convert_to_bf16 / convert_to_f16, bias_add, split_columns and sum_partials (split-K) serve the cuBLAS tensor-core path.
#include "gemv.cuh"

// Rows first .. first + W::warp_rows - 1 of w (those below out) for one warp.
template <class W, int T>
__device__ __forceinline__ void gemv_rows(const float* __restrict__ x, const typename W::storage* __restrict__ w, const float* __restrict__ bias,
                                          float* __restrict__ y, int in, int out, int first, int vec)
{
    constexpr int R = W::warp_rows;
    const typename W::storage* wr[R];
#pragma unroll
    for (int r = 0; r < R; r++) wr[r] = w + (long)min(first + r, out - 1) * in; // a missing last row re-reads the one before
    float acc[R][T];
    gemv_dot<W, T, R>(x, wr, in, vec, acc, first / R);
    if ((threadIdx.x & 31) != 0) return;
#pragma unroll
    for (int r = 0; r < R; r++)
    {
        const int row = first + r;
        if (row >= out) break;
#pragma unroll
        for (int t = 0; t < T; t++) y[(long)t * out + row] = acc[r][t] + (bias != nullptr ? bias[row] : 0.f);
    }
}

__device__ __forceinline__ int gemv_warp() { return (int)(((long)blockIdx.x * blockDim.x + threadIdx.x) >> 5); }

// The gate and up products of a gated MLP with silu(gate) * up as the epilogue: warp j streams row j of both weights
// (as its two rows) and writes y[t, j] = silu(x·gate_j + bg_j) * (x·up_j + bu_j), so neither product is stored and no
// silu_mul runs.
template <class W, int T>
__device__ void gemv_silu_gated(const float* __restrict__ x, const typename W::storage* __restrict__ wg, const float* __restrict__ bg,
                                const typename W::storage* __restrict__ wu, const float* __restrict__ bu, float* __restrict__ y,
                                int in, int out, int vec)
{
    const int row = gemv_warp();
    if (row >= out) return;
    const typename W::storage* wr[2] = {wg + (long)row * in, wu + (long)row * in};
    float acc[2][T];
    gemv_dot<W, T, 2>(x, wr, in, vec, acc, row);
    if ((threadIdx.x & 31) != 0) return;
#pragma unroll
    for (int t = 0; t < T; t++)
    {
        const float gv = acc[0][t] + (bg != nullptr ? bg[row] : 0.f);
        y[(long)t * out + row] = silu_times(gv, acc[1][t] + (bu != nullptr ? bu[row] : 0.f));
    }
}

// One warp a W::warp_rows rows; the grid has CudaBackend.GemvBlocks(out) blocks of 256 threads.
template <class W, int T>
__device__ void gemv(const float* __restrict__ x, const typename W::storage* __restrict__ w, const float* __restrict__ bias,
                     float* __restrict__ y, int in, int out, int vec)
{
    const int first = gemv_warp() * W::warp_rows;
    if (first >= out) return;
    gemv_rows<W, T>(x, w, bias, y, in, out, first, vec);
}

// Up to three products of the same x (q/k/v, or gate/up with out2 = 0) in one launch: the first ceil(out0 / R) warps
// belong to w0, the next ceil(out1 / R) to w1, the rest to w2 (R = W::warp_rows, so no warp straddles two weights).
template <class W, int T>
__device__ void gemv_shared(const float* __restrict__ x, int in, int vec,
                            const typename W::storage* __restrict__ w0, const float* __restrict__ b0, float* __restrict__ y0, int out0,
                            const typename W::storage* __restrict__ w1, const float* __restrict__ b1, float* __restrict__ y1, int out1,
                            const typename W::storage* __restrict__ w2, const float* __restrict__ b2, float* __restrict__ y2, int out2)
{
    constexpr int R = W::warp_rows;
    int warp = gemv_warp();
    const int warps0 = (out0 + R - 1) / R, warps1 = (out1 + R - 1) / R, warps2 = (out2 + R - 1) / R;
    if (warp < warps0)
    {
        gemv_rows<W, T>(x, w0, b0, y0, in, out0, warp * R, vec);
        return;
    }
    warp -= warps0;
    if (warp < warps1)
    {
        gemv_rows<W, T>(x, w1, b1, y1, in, out1, warp * R, vec);
        return;
    }
    warp -= warps1;
    if (warp < warps2) gemv_rows<W, T>(x, w2, b2, y2, in, out2, warp * R, vec);
}

#define GEMV_T(S, W, T) \
    extern "C" __global__ void __launch_bounds__(256) gemv_##S##_##T(const float* x, const W::storage* w, const float* bias, float* y, int in, int out, int vec) \
    { gemv<W, T>(x, w, bias, y, in, out, vec); } \
    extern "C" __global__ void __launch_bounds__(256) gemv_shared_##S##_##T(const float* x, int in, int vec, \
        const W::storage* w0, const float* b0, float* y0, int out0, const W::storage* w1, const float* b1, float* y1, int out1, \
        const W::storage* w2, const float* b2, float* y2, int out2) \
    { gemv_shared<W, T>(x, in, vec, w0, b0, y0, out0, w1, b1, y1, out1, w2, b2, y2, out2); } \
    extern "C" __global__ void __launch_bounds__(256) gemv_silu_gated_##S##_##T(const float* x, const W::storage* wg, const float* bg, \
        const W::storage* wu, const float* bu, float* y, int in, int out, int vec) \
    { gemv_silu_gated<W, T>(x, wg, bg, wu, bu, y, in, out, vec); }
#define GEMV(S, W) GEMV_T(S, W, 1) GEMV_T(S, W, 2) GEMV_T(S, W, 3) GEMV_T(S, W, 4) GEMV_T(S, W, 5) GEMV_T(S, W, 6) GEMV_T(S, W, 7) GEMV_T(S, W, 8)
ENCLAVE_FOR_WEIGHT_TYPES(GEMV)

#define TILE 64
#define TILE_K 16

template <class W>
__device__ void gemm(const float* __restrict__ x, const typename W::storage* __restrict__ w, const float* __restrict__ bias,
                     float* __restrict__ y, int tokens, int in, int out)
{
    __shared__ float xs[TILE_K][TILE + 4];
    __shared__ float ws[TILE_K][TILE + 4];
    const int tid = threadIdx.x;
    const int ty = tid / 16, tx = tid % 16;
    const int m0 = blockIdx.y * TILE, n0 = blockIdx.x * TILE;
    float acc[4][4];
#pragma unroll
    for (int i = 0; i < 4; i++)
#pragma unroll
        for (int j = 0; j < 4; j++) acc[i][j] = 0.f;

    for (int k0 = 0; k0 < in; k0 += TILE_K)
    {
#pragma unroll
        for (int i = 0; i < 4; i++)
        {
            const int idx = tid + i * 256;
            const int r = idx / TILE_K, c = idx % TILE_K;
            const int k = k0 + c;
            xs[c][r] = (m0 + r < tokens && k < in) ? x[(long)(m0 + r) * in + k] : 0.f;
            ws[c][r] = (n0 + r < out && k < in) ? W::load(w, (long)(n0 + r) * in + k) : 0.f;
        }
        __syncthreads();
#pragma unroll
        for (int kk = 0; kk < TILE_K; kk++)
        {
            float a[4], b[4];
#pragma unroll
            for (int i = 0; i < 4; i++) a[i] = xs[kk][ty * 4 + i];
#pragma unroll
            for (int j = 0; j < 4; j++) b[j] = ws[kk][tx * 4 + j];
#pragma unroll
            for (int i = 0; i < 4; i++)
#pragma unroll
                for (int j = 0; j < 4; j++) acc[i][j] += a[i] * b[j];
        }
        __syncthreads();
    }

#pragma unroll
    for (int i = 0; i < 4; i++)
    {
        const int m = m0 + ty * 4 + i;
        if (m >= tokens) continue;
#pragma unroll
        for (int j = 0; j < 4; j++)
        {
            const int n = n0 + tx * 4 + j;
            if (n < out) y[(long)m * out + n] = acc[i][j] + (bias != nullptr ? bias[n] : 0.f);
        }
    }
}

#define GEMM(S, W) \
    extern "C" __global__ void __launch_bounds__(256) gemm_##S(const float* x, const W::storage* w, const float* bias, float* y, int tokens, int in, int out) \
    { launch_gate(); gemm<W>(x, w, bias, y, tokens, in, out); }
ENCLAVE_FOR_WEIGHT_TYPES(GEMM)

// x rounded to a 16-bit type for the tensor-core products. Four elements a thread at a time (16-byte loads, 8-byte
// stores) when both pointers allow, CONVERT_BATCH of those loaded before any is stored: a scalar grid-stride loop
// reached a third of the memory bandwidth (each iteration waited on its load).
#define CONVERT_BATCH 4
template <bool Bf16>
__device__ __forceinline__ void convert_to_16(const float* __restrict__ x, u16* __restrict__ y, long n)
{
    const long stride = (long)gridDim.x * blockDim.x, first = (long)blockIdx.x * blockDim.x + threadIdx.x;
    const bool vector = (((unsigned long)x & 15) | ((unsigned long)y & 7)) == 0;
    const long n4 = vector ? n / 4 : 0;
    const float4* x4 = reinterpret_cast<const float4*>(x);
    uint2* y4 = reinterpret_cast<uint2*>(y);
    for (long base = first; base < n4; base += stride * CONVERT_BATCH)
    {
        float4 v[CONVERT_BATCH];
#pragma unroll
        for (int u = 0; u < CONVERT_BATCH; u++)
            if (base + u * stride < n4) v[u] = x4[base + u * stride];
#pragma unroll
        for (int u = 0; u < CONVERT_BATCH; u++)
        {
            if (base + u * stride < n4)
            {
                const unsigned int lo = Bf16 ? pack_bf16_pair(v[u].x, v[u].y) : pack_f16_pair(v[u].x, v[u].y);
                const unsigned int hi = Bf16 ? pack_bf16_pair(v[u].z, v[u].w) : pack_f16_pair(v[u].z, v[u].w);
                y4[base + u * stride] = make_uint2(lo, hi);
            }
        }
    }
    for (long i = 4 * n4 + first; i < n; i += stride) y[i] = Bf16 ? f32_to_bf16(x[i]) : f32_to_f16(x[i]);
}

extern "C" __global__ void convert_to_bf16(const float* __restrict__ x, u16* __restrict__ y, long n) { launch_gate(); convert_to_16<true>(x, y, n); }

extern "C" __global__ void convert_to_f16(const float* __restrict__ x, u16* __restrict__ y, long n) { launch_gate(); convert_to_16<false>(x, y, n); }

extern "C" __global__ void bias_add(float* y, const float* bias, int tokens, int out)
{
    launch_gate();
    const long idx = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx < (long)tokens * out) y[idx] += bias[idx % out];
}

// Splits the [T, total] output of one product over stacked weights into up to three outputs [T, n_i] (+ bias_i):
// columns 0..n0-1 go to y0, the next n1 to y1, the rest to y2.
extern "C" __global__ void split_columns(const float* __restrict__ src, int total, int tokens,
                                         float* __restrict__ y0, const float* __restrict__ b0, int n0,
                                         float* __restrict__ y1, const float* __restrict__ b1, int n1,
                                         float* __restrict__ y2, const float* __restrict__ b2, int n2)
{
    launch_gate();
    for (long idx = (long)blockIdx.x * blockDim.x + threadIdx.x; idx < (long)tokens * total; idx += (long)gridDim.x * blockDim.x)
    {
        const long t = idx / total;
        int c = (int)(idx % total);
        const float v = src[idx];
        if (c < n0)
        {
            y0[t * n0 + c] = v + (b0 != nullptr ? b0[c] : 0.f);
            continue;
        }
        c -= n0;
        if (c < n1)
        {
            y1[t * n1 + c] = v + (b1 != nullptr ? b1[c] : 0.f);
            continue;
        }
        c -= n1;
        y2[t * n2 + c] = v + (b2 != nullptr ? b2[c] : 0.f);
    }
}

// Sums the split-K partials [splits, T, out] of one product into y [T, out] (+ bias [out]).
extern "C" __global__ void sum_partials(const float* __restrict__ partial, const float* __restrict__ bias, float* __restrict__ y,
                                        long count, int out, int splits)
{
    launch_gate();
    for (long i = (long)blockIdx.x * blockDim.x + threadIdx.x; i < count; i += (long)gridDim.x * blockDim.x)
    {
        float v = bias != nullptr ? bias[i % out] : 0.f;
        for (int s = 0; s < splits; s++) v += partial[s * count + i];
        y[i] = v;
    }
}
