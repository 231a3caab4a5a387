// Q8_0 weights × int8 activations on AMX tiles, the prefill product of CpuQuantMatMul. Compiled by generate.sh into
// position-independent machine code that the C# side copies into executable memory (.NET has no AMX intrinsics).
// A leaf function: no calls, no globals, no constants in memory, so the bytes run wherever they are copied.
//
// One call computes y[t, r] for the 16 weight rows starting at w and every token tile:
//   w:      [16 rows] Q8_0 rows of row_bytes bytes; block b of row r = f16 scale + 32 int8 at w + r·row_bytes + 34b.
//   xq:     [token_tiles][blocks][8][16 tokens][4] int8: the activations of 16 tokens in AMX's VNNI layout (four
//           consecutive values of a token side by side), padding tokens zero.
//   xs:     [token_tiles][blocks][16 tokens] fp32 activation scales.
//   y:      [tokens, y_stride] fp32, written for t < tokens (bias added when not null).
//   config: the 64-byte tile configuration (palette 1; tmm0-3 16×64 B, tmm4-5 16×32 B, tmm6-7 8×64 B).
//   scratch: 64-byte aligned, 5 KiB (four int32 tiles of 16 × 16, then the 16 × 16 fp32 result before transpose),
//           then blocks × 16 floats for the weight scales.
//
// Each tile product covers one block of 32 (a scale each), so its int32 results are scaled and summed in fp32 by the
// vector units. Two blocks are one step; the step after is issued to the tile unit before this one is read out,
// alternating between two pairs of accumulator tiles, so products and read-out overlap.
#include <immintrin.h>
#include <stdint.h>

#define TARGET __attribute__((target("amx-tile,amx-int8,avx512f,f16c")))

// acc[r] (16 tokens) += C[r] · (token scales · weight scale of row r), for the 16 rows of one int32 result tile.
#define READ_OUT(tile, scales, wscales)                                                                              \
    _Pragma("GCC unroll 16") for (int r = 0; r < 16; r++)                                                              \
    {                                                                                                                  \
        acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_load_si512((tile) + r * 16)),                               \
                                 _mm512_mul_ps((scales), _mm512_set1_ps((wscales)[r])), acc[r]);                       \
    }

// Block pair (b, b + 1) into accumulator tiles C0, C1.
#define ISSUE(C0, C1, b)                                                                                               \
    do                                                                                                                 \
    {                                                                                                                  \
        _tile_zero(C0);                                                                                                \
        _tile_zero(C1);                                                                                                \
        _tile_loadd(4, w + (long)(b) * 34 + 2, row_bytes);                                                            \
        _tile_loadd(6, xt + (long)(b) * 512, 64);                                                                      \
        _tile_dpbssd(C0, 4, 6);                                                                                        \
        _tile_loadd(5, w + (long)((b) + 1) * 34 + 2, row_bytes);                                                      \
        _tile_loadd(7, xt + (long)((b) + 1) * 512, 64);                                                                \
        _tile_dpbssd(C1, 5, 7);                                                                                        \
    } while (0)

// Stores accumulator tiles C0, C1 (block pair b) and reads them out.
#define DRAIN(C0, C1, b)                                                                                               \
    do                                                                                                                 \
    {                                                                                                                  \
        _tile_stored(C0, scratch, 64);                                                                                 \
        _tile_stored(C1, scratch + 256, 64);                                                                           \
        __m512 s0 = _mm512_loadu_ps(st + (b) * 16), s1 = _mm512_loadu_ps(st + ((b) + 1) * 16);                        \
        READ_OUT(scratch, s0, wscale + (long)(b) * 16);                                                                \
        READ_OUT(scratch + 256, s1, wscale + (long)((b) + 1) * 16);                                                    \
    } while (0)

TARGET void enclave_q8_0_amx(const uint8_t* w, long row_bytes, int blocks, const int8_t* xq, const float* xs, int token_tiles,
                             int tokens, float* y, long y_stride, const float* bias, int32_t* scratch, const void* config)
{
    _tile_loadconfig(config);
    float* result = (float*)(scratch + 1024);
    float* wscale = result + 256;

    // The weight scales once per call: every token tile uses them.
    for (int b = 0; b < blocks; b++)
    {
        for (int r = 0; r < 16; r++)
        {
            wscale[b * 16 + r] = _cvtsh_ss(*(const uint16_t*)(w + r * row_bytes + (long)b * 34));
        }
    }

    int pairs = blocks / 2;
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

        // Pair p runs in tiles 0-1 when p is even, 2-3 when odd; pair p + 1 is issued before pair p is drained.
        if (pairs > 0)
        {
            ISSUE(0, 1, 0);
        }

        for (int p = 0; p < pairs; p += 2)
        {
            if (p + 1 < pairs)
            {
                ISSUE(2, 3, 2 * (p + 1));
            }

            DRAIN(0, 1, 2 * p);
            if (p + 1 >= pairs)
            {
                break;
            }

            if (p + 2 < pairs)
            {
                ISSUE(0, 1, 2 * (p + 2));
            }

            DRAIN(2, 3, 2 * (p + 1));
        }

        if (blocks % 2 != 0)
        {
            int b = blocks - 1;
            _tile_zero(0);
            _tile_loadd(4, w + (long)b * 34 + 2, row_bytes);
            _tile_loadd(6, xt + (long)b * 512, 64);
            _tile_dpbssd(0, 4, 6);
            _tile_stored(0, scratch, 64);
            __m512 s0 = _mm512_loadu_ps(st + b * 16);
            READ_OUT(scratch, s0, wscale + (long)b * 16);
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
