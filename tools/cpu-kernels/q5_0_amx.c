// Q5_0 weights × int8 activations on AMX tiles, the prefill product of CpuQuantMatMul (see amx_common.h and
// q8_0_amx.c for the build and the tile layout). Q4_K_M files keep tensors whose rows are not a multiple of 256
// values (Qwen2-0.5B's 896) in Q5_0.
//
// A Q5_0 block (22 bytes) holds 32 values: an f16 d, 32 fifth bits (qh) and 16 bytes of low four bits (values 0-15 in
// the low nibbles, 16-31 in the high ones); value = d·(L − 16), L the 5-bit level. Per block and token,
//   Σ w·x = dx · (d · Σ L·xq − 16·d · Σ xq),
// so the offset comes off with the block's activation sums, as Q6_K's does.
//
// One call computes y[t, r] for the 16 weight rows starting at w and every token tile:
//   w:      [16 rows] Q5_0 rows of row_bytes bytes, blocks blocks each.
//   xq:     [token_tiles][blocks][8][16 tokens][4] int8, as for Q8_0.
//   xs:     [token_tiles][blocks][16 tokens] fp32 activation scales (one per 32 values).
//   xsum:   [token_tiles][blocks][16 tokens] fp32: the sum of each block's int8 activations.
//   scratch: 64-byte aligned: 5 KiB (the two int32 read-out tiles, then from 4 KiB one tile of fp32 results), then blocks × 16 floats of d, as many of 16·d, then the levels
//           unpacked to one byte each, [16 rows][32·blocks].
#include "amx_common.h"

#define Q5_0_WEIGHTS(b) (levels + (long)(b) * 32)
#define Q5_0_ISSUE(C0, C1, b) AMX_ISSUE(C0, C1, b, Q5_0_WEIGHTS, row_values, 512, _tile_dpbusd)
#define Q5_0_READ_OUT(tile, b)                                                                                         \
    AMX_READ_OUT_OFFSET(tile, b, _mm512_loadu_ps(st + (b) * 16), _mm512_loadu_ps(sums + (b) * 16),                    \
                        scales + (long)(b) * 16, offsets + (long)(b) * 16)

#define Q5_0_DRAIN(C0, C1, b) AMX_DRAIN(C0, C1, b, Q5_0_READ_OUT)
#define Q5_0_SINGLE(b) AMX_SINGLE(b, Q5_0_WEIGHTS, row_values, 512, _tile_dpbusd, Q5_0_READ_OUT)

AMX_TARGET void enclave_q5_0_amx(const uint8_t* w, long row_bytes, int blocks, const int8_t* xq, const float* xs, const float* xsum,
                                 int token_tiles, int tokens, float* y, long y_stride, const float* bias, int32_t* scratch,
                                 const void* config)
{
    _tile_loadconfig(config);
    float* result = (float*)(scratch + 1024);
    long row_values = (long)blocks * 32;
    float* scales = result + 256;
    float* offsets = scales + (long)blocks * 16;
    uint8_t* levels = (uint8_t*)(offsets + (long)blocks * 16);

    // Scales and levels of the 16 rows once per call: every token tile uses them. The fifth bits land on bit 4 of
    // each level byte through pdep (eight bits to eight bytes), all in general registers: no vector constants.
    const uint64_t nibbles = 0x0F0F0F0F0F0F0F0Full, fifth = 0x1010101010101010ull;
    for (int r = 0; r < 16; r++)
    {
        for (int b = 0; b < blocks; b++)
        {
            const uint8_t* block = w + r * row_bytes + (long)b * 22;
            float d = _cvtsh_ss(*(const uint16_t*)block);
            scales[b * 16 + r] = d;
            // 16·d by doubling (exact): a literal 16 would become a float constant in memory.
            float d2 = d + d, d4 = d2 + d2, d8 = d4 + d4;
            offsets[b * 16 + r] = d8 + d8;
            uint32_t qh = *(const uint32_t*)(block + 2);
            uint64_t q0 = *(const uint64_t*)(block + 6), q1 = *(const uint64_t*)(block + 14);
            uint64_t* out = (uint64_t*)(levels + r * row_values + (long)b * 32);
            out[0] = (q0 & nibbles) | _pdep_u64(qh & 0xFF, fifth);
            out[1] = (q1 & nibbles) | _pdep_u64((qh >> 8) & 0xFF, fifth);
            out[2] = ((q0 >> 4) & nibbles) | _pdep_u64((qh >> 16) & 0xFF, fifth);
            out[3] = ((q1 >> 4) & nibbles) | _pdep_u64(qh >> 24, fifth);
        }
    }

    AMX_TOKEN_TILES(blocks, 512, blocks, Q5_0_ISSUE, Q5_0_DRAIN, Q5_0_SINGLE);
}
