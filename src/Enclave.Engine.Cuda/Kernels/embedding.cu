// Embedding gather: out[t, :] = table[ids[t], :] as float. grid (x: column chunks, y: tokens).
#include "common.cuh"

template <class W>
__device__ void embedding(const typename W::storage* __restrict__ table, const int* __restrict__ ids, float* __restrict__ out, int n)
{
    const int t = blockIdx.y;
    const long row = (long)ids[t] * n;
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x)
        out[(long)t * n + i] = W::load(table, row + i);
}

#define EMBEDDING(S, W) \
    extern "C" __global__ void embedding_##S(const W::storage* table, const int* ids, float* out, int n) { launch_gate(); embedding<W>(table, ids, out, n); }
ENCLAVE_FOR_WEIGHT_TYPES(EMBEDDING)
