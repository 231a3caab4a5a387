// Rotary position embedding in place on x [tokens, heads, head_dim]: one thread per rotated pair.
// interleaved = 0: GPT-NeoX pairs (i, i + rotary_dim/2); 1: GPT-J pairs (2i, 2i+1). scaling multiplies cos and sin.
#include "common.cuh"
extern "C" __global__ void rope(float* x, const int* positions, const float* inv_freq, int tokens, int heads, int head_dim,
                                int rotary_dim, int interleaved, float scaling)
{
    launch_gate();
    const int half = rotary_dim / 2;
    const long idx = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (long)tokens * heads * half) return;
    const int i = (int)(idx % half);
    const long th = idx / half;
    const int t = (int)(th / heads);
    const float angle = (float)positions[t] * inv_freq[i];
    const float c = cosf(angle) * scaling, s = sinf(angle) * scaling;
    float* head = x + th * head_dim;
    const int a = interleaved ? 2 * i : i, b = interleaved ? 2 * i + 1 : i + half;
    const float x0 = head[a], x1 = head[b];
    head[a] = x0 * c - x1 * s;
    head[b] = x1 * c + x0 * s;
}
