// Greedy token choice per logits row, so only the chosen ids cross to the host instead of [rows, vocab] logits.
//
// argmax_rows: one block per row. Each thread scans a strided slice (16-byte loads where the row allows) keeping its
// best (value, index) pair, then the pairs are reduced with warp shuffles and once more across the warps through
// shared memory. A pair beats another when its value is larger, or equal at a lower index, so ties go to the lowest
// index whatever the scan or reduction order; NaN compares false both ways and never wins. A row with nothing above
// -inf gives 0. This is exactly the host sampler's greedy rule (the first strictly larger value wins, starting from
// -inf at index 0).
#include "common.cuh"

__device__ __forceinline__ void take_better(float& best_value, int& best_index, float value, int index)
{
    if (value > best_value || (value == best_value && index < best_index))
    {
        best_value = value;
        best_index = index;
    }
}

// The four values of v, at indices k .. k + 3, in order.
__device__ __forceinline__ void take_better4(float& best_value, int& best_index, float4 v, int k)
{
    take_better(best_value, best_index, v.x, k);
    take_better(best_value, best_index, v.y, k + 1);
    take_better(best_value, best_index, v.z, k + 2);
    take_better(best_value, best_index, v.w, k + 3);
}

__device__ __forceinline__ void warp_argmax(float& value, int& index)
{
#pragma unroll
    for (int o = 16; o > 0; o >>= 1)
    {
        const float other_value = __shfl_down_sync(0xffffffffu, value, o);
        const int other_index = __shfl_down_sync(0xffffffffu, index, o);
        take_better(value, index, other_value, other_index);
    }
}

// logits: [rows, vocab]; ids: [rows]. grid (rows), blockDim.x a multiple of 32, at most 1024.
extern "C" __global__ void argmax_rows(const float* __restrict__ logits, int* __restrict__ ids, int vocab)
{
    launch_gate();
    __shared__ float s_value[32];
    __shared__ int s_index[32];
    const float* row = logits + (long)blockIdx.x * vocab;
    float best_value = NEG_INF;
    int best_index = 0x7fffffff;
    if ((vocab & 3) == 0 && ((unsigned long)row & 15) == 0)
    {
        // 16-byte loads, eight in flight a thread: a lone row (single-stream decode) is one block's walk over the
        // vocabulary, and one dependent load at a time made that 66 us of a 5.8 ms 7B step.
        constexpr int U = 8;
        const float4* row4 = reinterpret_cast<const float4*>(row);
        const int n4 = vocab >> 2, stride = blockDim.x;
        int i = threadIdx.x;
        for (; i + (U - 1) * stride < n4; i += U * stride)
        {
            float4 v[U];
#pragma unroll
            for (int u = 0; u < U; u++) v[u] = row4[i + u * stride];
#pragma unroll
            for (int u = 0; u < U; u++) take_better4(best_value, best_index, v[u], 4 * (i + u * stride));
        }
        for (; i < n4; i += stride) take_better4(best_value, best_index, row4[i], 4 * i);
    }
    else
    {
        for (int i = threadIdx.x; i < vocab; i += blockDim.x) take_better(best_value, best_index, row[i], i);
    }

    warp_argmax(best_value, best_index);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    if (lane == 0)
    {
        s_value[warp] = best_value;
        s_index[warp] = best_index;
    }
    __syncthreads();
    if (warp != 0) return;

    best_value = lane < warps ? s_value[lane] : NEG_INF;
    best_index = lane < warps ? s_index[lane] : 0x7fffffff;
    warp_argmax(best_value, best_index);
    if (lane == 0) ids[blockIdx.x] = best_value > NEG_INF ? best_index : 0;
}
