// Q4_K weights × int8 activations on AMX tiles, the prefill product of CpuQuantMatMul (the kernel is q45_k_amx.h).
#define Q45_K_NAME enclave_q4_k_amx
#define Q45_K_BLOCK_BYTES 144
#define Q45_K_FIFTH_BIT 0
#include "q45_k_amx.h"
