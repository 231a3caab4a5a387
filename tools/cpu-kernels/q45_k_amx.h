// The Q4_K and Q5_K AMX kernel, included by q4_k_amx.c and q5_k_amx.c with Q45_K_NAME (the function),
// Q45_K_BLOCK_BYTES (144 or 176) and Q45_K_FIFTH_BIT (0 or 1) defined. See amx_common.h and q8_0_amx.c for the build and
// the tile layout.
//
// A super-block holds 256 values in eight blocks of 32: f16 d and dmin, twelve bytes of 6-bit block scales and
// minimums, for Q5_K 32 bytes of fifth bits (bit 2l of byte i for value 64l + i, bit 2l + 1 for value 64l + 32 + i),
// and 128 bytes of low four bits (value = d·scale_j·q − dmin·min_j). Per block and token,
//   Σ w·x = dx · (d·scale_j · Σ q·xq − dmin·min_j · Σ xq),
// with xq the int8 activations and dx their scale (one per 256 values). The tile product gives Σ q·xq (unsigned
// levels × signed activations, tdpbusd); the minimum term comes off with the block's activation sums.
//
// One call computes y[t, r] for the 16 weight rows starting at w and every token tile:
//   w:      [16 rows] rows of row_bytes bytes, supers super-blocks each.
//   xq:     [token_tiles][8·supers][8][16 tokens][4] int8, as for Q8_0.
//   xs:     [token_tiles][supers][16 tokens] fp32 activation scales (one per 256 values).
//   xsum:   [token_tiles][8·supers][16 tokens] fp32: the sum of each block's int8 activations.
//   scratch: 64-byte aligned: 5 KiB (the two int32 read-out tiles, then from 4 KiB one tile of fp32 results), then 8·supers × 16 floats of d·scale, as many of dmin·min, then the
//           levels unpacked to one byte each, [16 rows][256·supers].
#include "amx_common.h"

#define Q45_K_WEIGHTS(b) (levels + (long)(b) * 32)
#define Q45_K_ISSUE(C0, C1, b) AMX_ISSUE(C0, C1, b, Q45_K_WEIGHTS, row_values, 512, _tile_dpbusd)

// Block b: acc[r] += C[r] · dx·d·scale − dx·Σxq · dmin·min.
#define Q45_K_READ_OUT(tile, b)                                                                                         \
    AMX_READ_OUT_OFFSET(tile, b, _mm512_loadu_ps(st + ((b) / 8) * 16), _mm512_loadu_ps(sums + (b) * 16),              \
                        scales + (long)(b) * 16, minimums + (long)(b) * 16)

#define Q45_K_DRAIN(C0, C1, b) AMX_DRAIN(C0, C1, b, Q45_K_READ_OUT)
#define Q45_K_SINGLE(b) AMX_SINGLE(b, Q45_K_WEIGHTS, row_values, 512, _tile_dpbusd, Q45_K_READ_OUT)

AMX_TARGET void Q45_K_NAME(const uint8_t* w, long row_bytes, int supers, const int8_t* xq, const float* xs, const float* xsum,
                                 int token_tiles, int tokens, float* y, long y_stride, const float* bias, int32_t* scratch,
                                 const void* config)
{
    _tile_loadconfig(config);
    float* result = (float*)(scratch + 1024);
    int blocks = supers * 8;
    long row_values = (long)supers * 256;
    float* scales = result + 256;
    float* minimums = scales + (long)blocks * 16;
    uint8_t* levels = (uint8_t*)(minimums + (long)blocks * 16);

    // Scales, minimums and levels of the 16 rows once per call: every token tile uses them.
    const __m256i nibble = _mm256_set1_epi8(0x0F);
#if Q45_K_FIFTH_BIT
    const __m256i fifth = _mm256_set1_epi8(0x10);
#endif
    for (int r = 0; r < 16; r++)
    {
        for (int s = 0; s < supers; s++)
        {
            const uint8_t* block = w + r * row_bytes + (long)s * Q45_K_BLOCK_BYTES;
            float d = _cvtsh_ss(*(const uint16_t*)block), dmin = _cvtsh_ss(*(const uint16_t*)(block + 2));
            const uint8_t* q = block + 4;
            for (int j = 0; j < 8; j++)
            {
                int scale = j < 4 ? q[j] & 63 : (q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4);
                int minimum = j < 4 ? q[j + 4] & 63 : (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
                scales[(s * 8 + j) * 16 + r] = d * scale;
                minimums[(s * 8 + j) * 16 + r] = dmin * minimum;
            }

            // 64 values per 32 bytes: low nibbles are block 2l, high nibbles block 2l + 1 (Q5_K: plus fifth bits from qh).
            uint8_t* out = levels + r * row_values + (long)s * 256;
#if Q45_K_FIFTH_BIT
            __m256i qh = _mm256_loadu_si256((const __m256i*)(block + 16));
#endif
            for (int l = 0; l < 4; l++)
            {
                __m256i packed = _mm256_loadu_si256((const __m256i*)(block + Q45_K_BLOCK_BYTES - 128 + 32 * l));
                __m256i low = _mm256_and_si256(packed, nibble), high = _mm256_and_si256(_mm256_srli_epi16(packed, 4), nibble);
#if Q45_K_FIFTH_BIT
                low = _mm256_or_si256(low, _mm256_and_si256(_mm256_slli_epi16(_mm256_srli_epi16(qh, 2 * l), 4), fifth));
                high = _mm256_or_si256(high, _mm256_and_si256(_mm256_slli_epi16(_mm256_srli_epi16(qh, 2 * l + 1), 4), fifth));
#endif
                _mm256_storeu_si256((__m256i*)(out + 64 * l), low);
                _mm256_storeu_si256((__m256i*)(out + 64 * l + 32), high);
            }
        }
    }

    AMX_TOKEN_TILES(blocks, 512, supers, Q45_K_ISSUE, Q45_K_DRAIN, Q45_K_SINGLE);
}
