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
//   config: the 64-byte tile configuration of amx_common.h.
//   scratch: 64-byte aligned: four int32 tiles (4 KiB), the 16 × 16 fp32 result before transpose (1 KiB), then
//           blocks × 16 floats for the weight scales.
#include "amx_common.h"

#define Q8_0_WEIGHTS(b) (w + (long)(b) * 34 + 2)
#define Q8_0_ISSUE(C0, C1, b) AMX_ISSUE(C0, C1, b, Q8_0_WEIGHTS, row_bytes, 512, _tile_dpbssd)
#define Q8_0_DRAIN(C0, C1, b)                                                                                          \
    do                                                                                                                 \
    {                                                                                                                  \
        _tile_stored(C0, scratch, 64);                                                                                 \
        _tile_stored(C1, scratch + 256, 64);                                                                           \
        __m512 s0 = _mm512_loadu_ps(st + (b) * 16), s1 = _mm512_loadu_ps(st + ((b) + 1) * 16);                        \
        AMX_READ_OUT(scratch, s0, wscale + (long)(b) * 16);                                                            \
        AMX_READ_OUT(scratch + 256, s1, wscale + (long)((b) + 1) * 16);                                                \
    } while (0)
#define Q8_0_SINGLE(b)                                                                                                 \
    do                                                                                                                 \
    {                                                                                                                  \
        _tile_zero(0);                                                                                                 \
        _tile_loadd(4, Q8_0_WEIGHTS(b), row_bytes);                                                                    \
        _tile_loadd(6, xt + (long)(b) * 512, 64);                                                                      \
        _tile_dpbssd(0, 4, 6);                                                                                         \
        _tile_stored(0, scratch, 64);                                                                                  \
        __m512 s0 = _mm512_loadu_ps(st + (b) * 16);                                                                    \
        AMX_READ_OUT(scratch, s0, wscale + (long)(b) * 16);                                                            \
    } while (0)

AMX_TARGET void enclave_q8_0_amx(const uint8_t* w, long row_bytes, int blocks, const int8_t* xq, const float* xs, int token_tiles,
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

        AMX_BLOCK_PAIRS(blocks, Q8_0_ISSUE, Q8_0_DRAIN, Q8_0_SINGLE);
        amx_write_tile(acc, result, tile, tokens, y, y_stride, bias);
    }

    _tile_release();
}
