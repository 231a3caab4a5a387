// BF16 weights × fp32 activations on AMX-BF16 tiles (weights exact, activations split into two bf16 parts, two tile
// products a block), the prefill product of CpuMatMul; the kernel is half_amx.h.
#define HALF_NAME enclave_bf16_amx
#define HALF_F16 0
#include "half_amx.h"
