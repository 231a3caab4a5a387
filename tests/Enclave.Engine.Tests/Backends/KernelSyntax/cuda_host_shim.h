// Host-compiler stand-ins for the CUDA builtins the kernels use, so that g++ -fsyntax-only can parse every kernel source
// on a machine without the CUDA toolkit: undefined names, type errors and bad template code fail here instead of at the
// first NVRTC compile on a GPU host. Inline PTX (asm statements) is blanked by the test before parsing; NVRTC alone checks it.
#pragma once
#define __device__
#define __global__
#define __forceinline__ inline
#define __shared__ static
#define ENCLAVE_DYNAMIC_SHARED(type, name) static type name[1]
#define __restrict__
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))
#define enclave_blanked_asm(...) ((void)0)
struct enclave_dim3 { unsigned int x, y, z; };
extern enclave_dim3 threadIdx, blockIdx, blockDim, gridDim;
struct float4 { float x, y, z, w; };
struct float2 { float x, y; };
struct uint4 { unsigned int x, y, z, w; };
struct uint2 { unsigned int x, y; };
float4 make_float4(float, float, float, float);
uint2 make_uint2(unsigned int, unsigned int);
float __shfl_sync(unsigned int, float, int);
int __shfl_sync(unsigned int, int, int);
float __shfl_xor_sync(unsigned int, float, int);
int __shfl_xor_sync(unsigned int, int, int);
float __shfl_down_sync(unsigned int, float, int);
int __shfl_down_sync(unsigned int, int, int);
void __syncthreads();
int __any_sync(unsigned int, int);
void __syncwarp();
float __uint_as_float(unsigned int);
unsigned int __float_as_uint(float);
float __int_as_float(int);
float fmaxf(float, float);
float fmaf(float, float, float);
float fminf(float, float);
float fabsf(float);
float expf(float);
float exp2f(float);
float logf(float);
float sqrtf(float);
float rsqrtf(float);
float cosf(float);
float sinf(float);
float tanhf(float);
float erff(float);
int max(int, int);
int min(int, int);
long max(long, long);
long min(long, long);
float atomicAdd(float*, float);
unsigned int __shfl_up_sync(unsigned int, unsigned int, int);
unsigned int __shfl_xor_sync(unsigned int, unsigned int, int);
unsigned long long atomicAdd(unsigned long long*, unsigned long long);
int atomicMin(int*, int);
unsigned long long __float2ull_rz(float);
long long __double_as_longlong(double);
double __longlong_as_double(long long);
double ceil(double);
