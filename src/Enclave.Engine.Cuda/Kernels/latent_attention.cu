#include "common.cuh"

// Multi-head latent attention, weight-absorbed form, over the paged latent cache [blocks, blockSize, 1, width].
// Row width (kv_lora_rank + rope dim) and value dim (kv_lora_rank) are at most 32 * LATENT_CHUNKS = 1024.
#define LATENT_CHUNKS 32
#define LATENT_WARPS 4

// cache[slots[t], :] = latent[t, :].
extern "C" __global__ void latent_write(const float* latent, float* cache, const int* slots, int tokens, int width)
{
    launch_gate();
    const long n = (long)tokens * width;
    for (long i = (long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x)
    {
        const int t = (int)(i / width);
        cache[(long)slots[t] * width + (i - (long)t * width)] = latent[i];
    }
}

// One block of LATENT_WARPS warps per (head, token, split). Each warp takes every LATENT_WARPS-th cached position of
// its split's span, scores it against the query (lanes stride the row), and keeps an online softmax: running max, sum
// and the weighted sum of the rows' first valueDim values in registers. The warps then merge through shared memory.
// No scores are stored, so any context length fits. Causal: query token t of its sequence sees positions [0, its own
// position]. With splits > 1 (decode steps with few heads × tokens: a block per head alone left a warp walking a
// quarter of the context one dependent round trip after another), split s takes the s-th of `splits` equal spans of
// those positions (computed here from the context, so a recorded step fits every length) and writes its max, sum and
// unnormalised values to partial [T, heads, splits, valueDim + 2]; latent_combine merges them.
extern "C" __global__ void latent_attention(const float* q, const float* cache, float* out,
    const int* tokenSeq, const int* qStart, const int* qLen, const int* contextLen, const int* tableOffset, const int* tables,
    int heads, int width, int valueDim, int blockSize, float scale, int splits, float* partial)
{
    launch_gate();
    const int h = blockIdx.x, t = blockIdx.y, split = blockIdx.z;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int s = tokenSeq[t];
    const int position = contextLen[s] - qLen[s] + (t - qStart[s]);
    const int* table = tables + tableOffset[s];
    const float* qv = q + ((long)t * heads + h) * width;

    float qr[LATENT_CHUNKS], acc[LATENT_CHUNKS];
#pragma unroll
    for (int i = 0; i < LATENT_CHUNKS; i++)
    {
        const int k = lane + 32 * i;
        qr[i] = k < width ? qv[k] : 0.f;
        acc[i] = 0.f;
    }

    const int span = (position + splits) / splits; // ceil((position + 1) / splits)
    const int begin = split * span, end = min(position + 1, begin + span);
    float m = NEG_INF, l = 0.f;
    for (int p = begin + warp; p < end; p += LATENT_WARPS)
    {
        const float* row = cache + ((long)table[p / blockSize] * blockSize + p % blockSize) * width;
        float d = 0.f;
#pragma unroll
        for (int i = 0; i < LATENT_CHUNKS; i++)
        {
            const int k = lane + 32 * i;
            if (k < width) d = fmaf(qr[i], row[k], d);
        }

        d = warp_sum(d) * scale;
        const float mn = fmaxf(m, d);
        const float correction = expf(m - mn);
        const float e = expf(d - mn);
        l = l * correction + e;
#pragma unroll
        for (int i = 0; i < LATENT_CHUNKS; i++)
        {
            const int k = lane + 32 * i;
            acc[i] = acc[i] * correction + (k < valueDim ? e * row[k] : 0.f);
        }

        m = mn;
    }

    __shared__ float warpMax[LATENT_WARPS], warpSum[LATENT_WARPS];
    __shared__ float warpAcc[LATENT_WARPS][32 * LATENT_CHUNKS];
    if (lane == 0)
    {
        warpMax[warp] = m;
        warpSum[warp] = l;
    }

#pragma unroll
    for (int i = 0; i < LATENT_CHUNKS; i++)
    {
        const int k = lane + 32 * i;
        if (k < valueDim) warpAcc[warp][k] = acc[i];
    }

    __syncthreads();
    float maxAll = NEG_INF;
    for (int w = 0; w < LATENT_WARPS; w++) maxAll = fmaxf(maxAll, warpMax[w]);
    // A warp (or a whole split) with no positions has max -inf and adds nothing.
    float factor[LATENT_WARPS], total = 0.f;
#pragma unroll
    for (int w = 0; w < LATENT_WARPS; w++)
    {
        factor[w] = warpMax[w] == NEG_INF ? 0.f : expf(warpMax[w] - maxAll);
        total += warpSum[w] * factor[w];
    }

    // One span: the output, normalised. Several: this span's max and sum, then its values unnormalised.
    float* dst = out + ((long)t * heads + h) * valueDim;
    float divisor = total;
    if (splits > 1)
    {
        float* part = partial + (((long)t * heads + h) * splits + split) * (valueDim + 2);
        if (threadIdx.x == 0)
        {
            part[0] = maxAll;
            part[1] = total;
        }
        dst = part + 2;
        divisor = 1.f;
    }
    for (int d = threadIdx.x; d < valueDim; d += blockDim.x)
    {
        float v = 0.f;
        for (int w = 0; w < LATENT_WARPS; w++) v += warpAcc[w][d] * factor[w];
        dst[d] = v / divisor;
    }
}

// out[t, h, :] from the splits' partials of latent_attention: each rescaled to the largest max, summed in split order,
// divided by the rescaled sums. grid (heads, T).
extern "C" __global__ void latent_combine(const float* partial, float* out, int heads, int valueDim, int splits)
{
    launch_gate();
    const int h = blockIdx.x, t = blockIdx.y;
    const float* base = partial + ((long)t * heads + h) * splits * (valueDim + 2);
    float maxAll = NEG_INF;
    for (int s = 0; s < splits; s++) maxAll = fmaxf(maxAll, base[(long)s * (valueDim + 2)]);
    float total = 0.f;
    for (int s = 0; s < splits; s++)
    {
        const float m = base[(long)s * (valueDim + 2)];
        total += m == NEG_INF ? 0.f : base[(long)s * (valueDim + 2) + 1] * expf(m - maxAll);
    }
    float* o = out + ((long)t * heads + h) * valueDim;
    for (int d = threadIdx.x; d < valueDim; d += blockDim.x)
    {
        float v = 0.f;
        for (int s = 0; s < splits; s++)
        {
            const float m = base[(long)s * (valueDim + 2)];
            if (m != NEG_INF) v += base[(long)s * (valueDim + 2) + 2 + d] * expf(m - maxAll);
        }
        o[d] = v / total;
    }
}
