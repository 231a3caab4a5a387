// F16 weights × fp32 activations on AMX-BF16 tiles (weights and activations each split into two bf16 parts, three
// tile products a block), the prefill product of CpuMatMul; the kernel is half_amx.h.
#define HALF_NAME enclave_f16_amx
#define HALF_F16 1
#include "half_amx.h"
