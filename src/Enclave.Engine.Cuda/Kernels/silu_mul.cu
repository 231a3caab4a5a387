// out = silu(gate) * up, element-wise over n values (out may alias gate or up).
extern "C" __global__ void silu_mul(const float* gate, const float* up, float* out, long n)
{
    for (long i = (long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x)
    {
        const float g = gate[i];
        out[i] = g / (1.0f + expf(-g)) * up[i];
    }
}
