// Q8_0 weights × int8 activations on AMX tiles, the prefill product of CpuQuantMatMul. Compiled by generate.sh into
// position-independent machine code that the C# side copies into executable memory (.NET has no AMX intrinsics).
// A leaf function: no calls, no globals, no constants in memory, so the bytes run wherever they are copied.
//
// The weights are in the 16-row grouped layout of CpuQ8_0Groups, which is the B operand of tdpbsud as it lies in
// memory, so here the activations are the A tiles and the results come out token by token:
//   w:      one group of 16 weight rows: [blocks][8 quads][16 rows][4] levels + 128 as unsigned bytes, then
//           [blocks][16 rows] fp16 scales. row_bytes is not read (the grouped layout has no row stride).
//   xq:     [token_tiles][blocks][16 tokens][32] int8 activations as quantised (an A tile is 512 contiguous bytes),
//           padding tokens zero.
//   xs:     [token_tiles][blocks][16 tokens] fp32 activation scales.
//   xsum:   [token_tiles][blocks][16 tokens] 128 × the sum of the block's int8 activations, as fp32 (exact).
//   y:      [tokens, y_stride] fp32, the group's 16 outputs written for t < tokens (bias added when not null).
//   config: the 64-byte tile configuration of amx_common.h (tmm4-5 16 tokens × 32 bytes, tmm6-7 8 × 64 bytes).
//   scratch: 64-byte aligned, two int32 tiles (2 KiB).
// Tile C[t][r] = Σ x[t]·(w[r] + 128) over a block; y[t][r] = Σ_b (C[t][r] − 128·Σx[t]) · scale_w[r] · scale_x[t].
// Both sides of the subtraction are integers below 2^24, so it is exact in fp32.
#include "amx_common.h"

// Block pair (b, b + 1) into result tiles C0, C1: activations and weights both 512 bytes a block.
#define Q8_0_ISSUE(C0, C1, b)                                                                                          \
    do                                                                                                                 \
    {                                                                                                                  \
        _tile_zero(C0);                                                                                                \
        _tile_zero(C1);                                                                                                \
        _tile_loadd(4, xt + (long)(b) * 512, 32);                                                                      \
        _tile_loadd(6, w + (long)(b) * 512, 64);                                                                       \
        _tile_dpbsud(C0, 4, 6);                                                                                        \
        _tile_loadd(5, xt + (long)((b) + 1) * 512, 32);                                                                \
        _tile_loadd(7, w + (long)((b) + 1) * 512, 64);                                                                 \
        _tile_dpbsud(C1, 5, 7);                                                                                        \
    } while (0)

// acc[t] (16 weight rows) += (C[t] − xsum[t]) · scales_w · xs[t] for the 16 token rows of one int32 result tile.
#define Q8_0_READ_OUT(tile, b)                                                                                         \
    do                                                                                                                 \
    {                                                                                                                  \
        __m512 ws = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i*)(wscales + (long)(b) * 16)));                   \
        const float* sb = st + (long)(b) * 16;                                                                         \
        const float* ob = sums + (long)(b) * 16;                                                                       \
        _Pragma("GCC unroll 16") for (int t = 0; t < 16; t++)                                                          \
        {                                                                                                              \
            __m512 c = _mm512_sub_ps(_mm512_cvtepi32_ps(_mm512_load_si512((tile) + t * 16)), _mm512_set1_ps(ob[t]));   \
            acc[t] = _mm512_fmadd_ps(c, _mm512_mul_ps(ws, _mm512_set1_ps(sb[t])), acc[t]);                             \
        }                                                                                                              \
    } while (0)

#define Q8_0_DRAIN(C0, C1, b) AMX_DRAIN(C0, C1, b, Q8_0_READ_OUT)

#define Q8_0_SINGLE(b)                                                                                                 \
    do                                                                                                                 \
    {                                                                                                                  \
        _tile_zero(0);                                                                                                 \
        _tile_loadd(4, xt + (long)(b) * 512, 32);                                                                      \
        _tile_loadd(6, w + (long)(b) * 512, 64);                                                                       \
        _tile_dpbsud(0, 4, 6);                                                                                         \
        _tile_stored(0, scratch, 64);                                                                                  \
        Q8_0_READ_OUT(scratch, b);                                                                                     \
    } while (0)

AMX_TARGET void enclave_q8_0_amx(const uint8_t* w, long row_bytes, int blocks, const int8_t* xq, const float* xs, const float* xsum,
                                 int token_tiles, int tokens, float* y, long y_stride, const float* bias, int32_t* scratch,
                                 const void* config)
{
    (void)row_bytes;
    _tile_loadconfig(config);
    const uint16_t* wscales = (const uint16_t*)(w + (long)blocks * 512);
    __m512 biases = bias ? _mm512_loadu_ps(bias) : _mm512_setzero_ps();
    for (int tile = 0; tile < token_tiles; tile++)
    {
        const int8_t* xt = xq + (long)tile * blocks * 512;
        const float* st = xs + (long)tile * blocks * 16;
        const float* sums = xsum + (long)tile * blocks * 16;
        __m512 acc[16];
#pragma GCC unroll 16
        for (int t = 0; t < 16; t++)
        {
            acc[t] = _mm512_setzero_ps();
        }

        AMX_BLOCK_PAIRS(blocks, Q8_0_ISSUE, Q8_0_DRAIN, Q8_0_SINGLE);

        // Row t of the results is token t's 16 outputs, in place in y.
        int count = tokens - tile * 16 < 16 ? tokens - tile * 16 : 16;
        for (int t = 0; t < count; t++)
        {
            _mm512_storeu_ps(y + (long)(tile * 16 + t) * y_stride, _mm512_add_ps(acc[t], biases));
        }
    }

    _tile_release();
}
