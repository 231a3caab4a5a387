// Q6_K weights × int8 activations on AMX tiles, the prefill product of CpuQuantMatMul (see amx_common.h and
// q8_0_amx.c for the build and the tile layout).
//
// A Q6_K super-block (210 bytes) holds 256 values in sixteen blocks of 16: 128 bytes of low four bits, 64 bytes of
// top two bits, sixteen int8 block scales and an f16 d (value = d·scale_g·(L − 32), L the 6-bit level). Per block
// and token,
//   Σ w·x = dx · (d·scale_g · Σ L·xq − 32·d·scale_g · Σ xq),
// so the offset of 32 comes off with the block's activation sums, as Q4_K's minimums do. Blocks of 16 make the tiles
// 16 bytes deep (weights 16 rows × 16 bytes, activations 4 rows × 64 bytes).
//
// One call computes y[t, r] for the 16 weight rows starting at w and every token tile:
//   w:      [16 rows] Q6_K rows of row_bytes bytes, supers super-blocks each.
//   xq:     [token_tiles][8·supers][8][16 tokens][4] int8, as for Q8_0 (a block of 16 is half of one of 32).
//   xs:     [token_tiles][supers][16 tokens] fp32 activation scales (one per 256 values).
//   xsum:   [token_tiles][16·supers][16 tokens] fp32: the sum of each block's int8 activations.
//   scratch: 64-byte aligned: 5 KiB (the two int32 read-out tiles, then from 4 KiB one tile of fp32 results), then 16·supers × 16 floats of d·scale, as many of 32·d·scale, then
//           the levels unpacked to one byte each, [16 rows][256·supers].
#include "amx_common.h"

#define Q6_K_WEIGHTS(b) (levels + (long)(b) * 16)
#define Q6_K_ISSUE(C0, C1, b) AMX_ISSUE(C0, C1, b, Q6_K_WEIGHTS, row_values, 256, _tile_dpbusd)
#define Q6_K_READ_OUT(tile, b)                                                                                         \
    AMX_READ_OUT_OFFSET(tile, b, _mm512_loadu_ps(st + ((b) / 16) * 16), _mm512_loadu_ps(sums + (b) * 16),             \
                        scales + (long)(b) * 16, offsets + (long)(b) * 16)

#define Q6_K_DRAIN(C0, C1, b) AMX_DRAIN(C0, C1, b, Q6_K_READ_OUT)
#define Q6_K_SINGLE(b) AMX_SINGLE(b, Q6_K_WEIGHTS, row_values, 256, _tile_dpbusd, Q6_K_READ_OUT)

AMX_TARGET void enclave_q6_k_amx(const uint8_t* w, long row_bytes, int supers, const int8_t* xq, const float* xs, const float* xsum,
                                 int token_tiles, int tokens, float* y, long y_stride, const float* bias, int32_t* scratch,
                                 const void* config)
{
    _tile_loadconfig(config);
    float* result = (float*)(scratch + 1024);
    int blocks = supers * 16;
    long row_values = (long)supers * 256;
    float* scales = result + 256;
    float* offsets = scales + (long)blocks * 16;
    uint8_t* levels = (uint8_t*)(offsets + (long)blocks * 16);

    // Scales and levels of the 16 rows once per call: every token tile uses them.
    const __m256i low = _mm256_set1_epi8(0x0F), high = _mm256_set1_epi8(0x30);
    for (int r = 0; r < 16; r++)
    {
        for (int s = 0; s < supers; s++)
        {
            const uint8_t* block = w + r * row_bytes + (long)s * 210;
            float d = _cvtsh_ss(*(const uint16_t*)(block + 208));
            const int8_t* sc = (const int8_t*)(block + 192);
            for (int g = 0; g < 16; g++)
            {
                scales[(s * 16 + g) * 16 + r] = d * sc[g];
                offsets[(s * 16 + g) * 16 + r] = d * (sc[g] * 32); // an int product: a float 32 would be a constant in memory
            }

            // Each half of 128 values: ql [64 bytes] holds the low four bits, qh [32 bytes] the top two.
            for (int h = 0; h < 2; h++)
            {
                __m256i qla = _mm256_loadu_si256((const __m256i*)(block + 64 * h));
                __m256i qlb = _mm256_loadu_si256((const __m256i*)(block + 64 * h + 32));
                __m256i qh = _mm256_loadu_si256((const __m256i*)(block + 128 + 32 * h));
                uint8_t* out = levels + r * row_values + (long)s * 256 + 128 * h;
                _mm256_storeu_si256((__m256i*)out, _mm256_or_si256(_mm256_and_si256(qla, low), _mm256_and_si256(_mm256_slli_epi16(qh, 4), high)));
                _mm256_storeu_si256((__m256i*)(out + 32), _mm256_or_si256(_mm256_and_si256(qlb, low), _mm256_and_si256(_mm256_slli_epi16(qh, 2), high)));
                _mm256_storeu_si256((__m256i*)(out + 64), _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(qla, 4), low), _mm256_and_si256(qh, high)));
                _mm256_storeu_si256((__m256i*)(out + 96), _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(qlb, 4), low), _mm256_and_si256(_mm256_srli_epi16(qh, 2), high)));
            }
        }
    }

    AMX_TOKEN_TILES(blocks, 256, supers, Q6_K_ISSUE, Q6_K_DRAIN, Q6_K_SINGLE);
}
