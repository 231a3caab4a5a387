// Q8_0 weights × int8 activations on AMX tiles, the prefill product of CpuAmxQ8_0.cs. Compiled by generate.sh into
// position-independent machine code that the C# side copies into executable memory (.NET has no AMX intrinsics).
// A leaf function: no calls, no globals, no constants in memory, so the bytes run wherever they are copied.
//
// One call computes y[t, r] for the 16 weight rows starting at w and every token tile:
//   w:      [16 rows] Q8_0 rows of row_bytes bytes; block b of row r = f16 scale + 32 int8 at w + r·row_bytes + 34b.
//   xq:     [token_tiles][blocks][8][16 tokens][4] int8: the activations of 16 tokens in AMX's VNNI layout (four
//           consecutive values of a token side by side), padding tokens zero.
//   xs:     [token_tiles][blocks][16 tokens] fp32 activation scales.
//   y:      [tokens, y_stride] fp32, written for t < tokens (bias added when not null).
//   config: the 64-byte tile configuration (palette 1; tmm0-1 16×64 B, tmm2-3 16×32 B, tmm4-5 8×64 B).
//   scratch: 64-byte aligned, 2 KiB (two int32 tiles of 16 × 16) + 1 KiB (the 16 × 16 fp32 result before transpose).
#include <immintrin.h>
#include <stdint.h>

__attribute__((target("amx-tile,amx-int8,avx512f,f16c")))
void enclave_q8_0_amx(const uint8_t* w, long row_bytes, int blocks, const int8_t* xq, const float* xs, int token_tiles,
                      int tokens, float* y, long y_stride, const float* bias, int32_t* scratch, const void* config)
{
    _tile_loadconfig(config);
    float* result = (float*)(scratch + 512);
    for (int tile = 0; tile < token_tiles; tile++)
    {
        const int8_t* xt = xq + (long)tile * blocks * 512;
        const float* st = xs + (long)tile * blocks * 16;
        __m512 acc[16];
#pragma GCC unroll 16
        for (int r = 0; r < 16; r++)
        {
            acc[r] = _mm512_setzero_ps();
        }

        // Two blocks a step, each in its own accumulator tile, so one product runs while the other is read out.
        int b = 0;
        for (; b + 1 < blocks; b += 2)
        {
            _tile_zero(0);
            _tile_zero(1);
            _tile_loadd(2, w + (long)b * 34 + 2, row_bytes);
            _tile_loadd(4, xt + (long)b * 512, 64);
            _tile_loadd(3, w + (long)(b + 1) * 34 + 2, row_bytes);
            _tile_loadd(5, xt + (long)(b + 1) * 512, 64);
            _tile_dpbssd(0, 2, 4);
            _tile_dpbssd(1, 3, 5);
            _tile_stored(0, scratch, 64);
            _tile_stored(1, scratch + 256, 64);
            __m512 s0 = _mm512_loadu_ps(st + b * 16), s1 = _mm512_loadu_ps(st + (b + 1) * 16);
#pragma GCC unroll 16
            for (int r = 0; r < 16; r++)
            {
                const uint8_t* wr = w + r * row_bytes + (long)b * 34;
                float d0 = _cvtsh_ss(*(const uint16_t*)wr), d1 = _cvtsh_ss(*(const uint16_t*)(wr + 34));
                acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_load_si512(scratch + r * 16)), _mm512_mul_ps(s0, _mm512_set1_ps(d0)), acc[r]);
                acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_load_si512(scratch + 256 + r * 16)), _mm512_mul_ps(s1, _mm512_set1_ps(d1)), acc[r]);
            }
        }

        if (b < blocks)
        {
            _tile_zero(0);
            _tile_loadd(2, w + (long)b * 34 + 2, row_bytes);
            _tile_loadd(4, xt + (long)b * 512, 64);
            _tile_dpbssd(0, 2, 4);
            _tile_stored(0, scratch, 64);
            __m512 s0 = _mm512_loadu_ps(st + b * 16);
#pragma GCC unroll 16
            for (int r = 0; r < 16; r++)
            {
                float d0 = _cvtsh_ss(*(const uint16_t*)(w + r * row_bytes + (long)b * 34));
                acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_load_si512(scratch + r * 16)), _mm512_mul_ps(s0, _mm512_set1_ps(d0)), acc[r]);
            }
        }

        // acc[r] holds row r for the 16 tokens; y wants token-major rows.
#pragma GCC unroll 16
        for (int r = 0; r < 16; r++)
        {
            _mm512_store_ps(result + r * 16, acc[r]);
        }

        int count = tokens - tile * 16 < 16 ? tokens - tile * 16 : 16;
        for (int t = 0; t < count; t++)
        {
            float* yt = y + (long)(tile * 16 + t) * y_stride;
            for (int r = 0; r < 16; r++)
            {
                yt[r] = result[r * 16 + t] + (bias ? bias[r] : 0.0f);
            }
        }
    }

    _tile_release();
}
