// MLA's compressed KV row in place, one block a token: latent [tokens, width] gets RMSNorm (weight w, rank values)
// over columns [0, rank), kv_a_layernorm, and RoPE (one head of rotary_dim) over columns [rank, rank + rotary_dim),
// the rotation of k_pe. One launch where copying the two parts out, normalising, rotating and copying them back took
// six. The norm is rmsnorm.cu's arithmetic: out = w * (x / sqrt(mean(x^2) + eps)); each thread writes the elements
// it read, so the row is rewritten in place.
#include "rope.cuh"

template <class W>
__device__ __forceinline__ void latent_norm_rope(float* __restrict__ latent, const typename W::storage* __restrict__ w, int rank, int width, float eps,
                                                 const int* __restrict__ positions, const float* __restrict__ inv_freq, int rotary_dim, int interleaved,
                                                 float scaling)
{
    launch_gate();
    float* row = latent + (long)blockIdx.x * width;
    float sum = 0.f;
    for (int i = threadIdx.x; i < rank; i += blockDim.x)
    {
        const float v = row[i];
        sum += v * v;
    }
    sum = block_sum(sum);
    const float inv = 1.0f / sqrtf(sum / (float)rank + eps);
    for (int i = threadIdx.x; i < rank; i += blockDim.x) row[i] = W::load(w, i) * (row[i] * inv);

    const int half = rotary_dim / 2;
    for (int i = threadIdx.x; i < half; i += blockDim.x)
        rope_pair(latent + rank, (long)blockIdx.x * half + i, positions, inv_freq, 1, width, half, interleaved, scaling);
}

#define LATENT_NORM_ROPE(S, W)                                                                                         \
    extern "C" __global__ void latent_norm_rope_##S(float* latent, const W::storage* w, int rank, int width, float eps, \
                                                   const int* positions, const float* inv_freq, int rotary_dim,         \
                                                   int interleaved, float scaling)                                     \
    { latent_norm_rope<W>(latent, w, rank, width, eps, positions, inv_freq, rotary_dim, interleaved, scaling); }
ENCLAVE_FOR_WEIGHT_TYPES(LATENT_NORM_ROPE)
