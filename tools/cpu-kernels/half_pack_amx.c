// fp32 activations split into high and low bf16 parts as the B tiles of the 16-bit float kernels (half_amx.h), one
// token tile a call (CpuMatMul calls it once per token tile, a work item each). AVX-512 only, no tiles.
//   x:      [tokens, x_stride] fp32, `in` values a token.
//   xb:     the kernels' activations, [token_tiles][blocks][2][16][16][2] bf16 with blocks = ⌈in/32⌉; this call
//           writes token tile `tile`: per block the high parts' B tile, then the low parts' (tile row k: values 2k and
//           2k + 1 of each of the 16 tokens side by side), zero past the last token and past `in`.
// Each value a: ahi = a rounded to 8 significant bits (half an ulp of bf16 added to the fp32 bits, the low 16 cleared:
// nearest, ties away from zero), a − ahi exact in fp32, alo = that rounded the same way, so |a − ahi − alo| ≤ 2^-16·|a|.
// vcvtne2ps2bf16 of values that fit bf16 is exact and puts its second operand's 16 words first, so a token's 32
// values of a block are 16 dwords in order, and a 16 × 16 transpose makes them the block's 16 tile rows.
#include "half_common.h"

HALF_TARGET void enclave_half_pack(const float* x, long x_stride, int in, int tokens, int tile, uint16_t* xb)
{
    int blocks = (in + 31) / 32;
    __m512i round = _mm512_set1_epi32(half_opaque32(0x8000));
    __m512i top = _mm512_set1_epi32(half_opaque32((int)0xFFFF0000));
    int count = tokens - tile * 16 < 16 ? tokens - tile * 16 : 16;
    for (int b = 0; b < blocks; b++)
    {
        int left = in - b * 32;
        __mmask16 m0 = left >= 16 ? (__mmask16)0xFFFF : _cvtu32_mask16((1u << left) - 1);
        __mmask16 m1 = left >= 32 ? (__mmask16)0xFFFF : left <= 16 ? (__mmask16)0 : _cvtu32_mask16((1u << (left - 16)) - 1);
        __m512 high[16], low[16];
        for (int t = 0; t < 16; t++)
        {
            __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
            if (t < count)
            {
                const float* source = x + (long)(tile * 16 + t) * x_stride + b * 32;
                a0 = _mm512_maskz_loadu_ps(m0, source);
                a1 = _mm512_maskz_loadu_ps(m1, source + 16);
            }
            __m512 h0 = _mm512_castsi512_ps(_mm512_and_si512(_mm512_add_epi32(_mm512_castps_si512(a0), round), top));
            __m512 h1 = _mm512_castsi512_ps(_mm512_and_si512(_mm512_add_epi32(_mm512_castps_si512(a1), round), top));
            __m512 l0 = _mm512_castsi512_ps(_mm512_and_si512(_mm512_add_epi32(_mm512_castps_si512(_mm512_sub_ps(a0, h0)), round), top));
            __m512 l1 = _mm512_castsi512_ps(_mm512_and_si512(_mm512_add_epi32(_mm512_castps_si512(_mm512_sub_ps(a1, h1)), round), top));
            high[t] = _mm512_castsi512_ps((__m512i)_mm512_cvtne2ps_pbh(h1, h0));
            low[t] = _mm512_castsi512_ps((__m512i)_mm512_cvtne2ps_pbh(l1, l0));
        }
        half_transpose(high);
        half_transpose(low);
        uint16_t* destination = xb + ((long)tile * blocks + b) * 1024;
        for (int k = 0; k < 16; k++)
        {
            _mm512_store_ps(destination + k * 32, high[k]);
            _mm512_store_ps(destination + 512 + k * 32, low[k]);
        }
    }
}
