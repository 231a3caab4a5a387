// Shared by the AMX kernels of this folder (see q8_0_amx.c for the calling convention and generate.sh for the build).
//
// Tiles (the configurations CpuAmx loads): tmm0-3 int32 results, 16 weight rows × 16 tokens; tmm4-5 weights, 16 rows
// × 32 bytes (one block of 32 values; Q6_K: 16 bytes, its blocks are 16 values); tmm6-7 activations, 8 rows × 64
// bytes (the block's 32 values of 16 tokens, four of a token side by side; Q6_K: 4 rows). Each product covers one
// block with scales of its own, so its int32 results
// are scaled and summed in fp32 by the vector units; two blocks make a step, and the step after is issued to the
// tile unit before this one is read out, alternating between two pairs of result tiles.
#include <immintrin.h>
#include <stdint.h>

#define AMX_TARGET __attribute__((target("amx-tile,amx-int8,avx512f,avx2,bmi2,f16c")))

// Block pair (b, b + 1) into result tiles C0, C1: weights from WEIGHTS(b) at stride STRIDE, activations from xt
// (ACT_BYTES a block); DP is the tile product (_tile_dpbssd for signed levels, _tile_dpbusd for unsigned ones).
#define AMX_ISSUE(C0, C1, b, WEIGHTS, STRIDE, ACT_BYTES, DP)                                                           \
    do                                                                                                                 \
    {                                                                                                                  \
        _tile_zero(C0);                                                                                                \
        _tile_zero(C1);                                                                                                \
        _tile_loadd(4, WEIGHTS(b), STRIDE);                                                                            \
        _tile_loadd(6, xt + (long)(b) * (ACT_BYTES), 64);                                                              \
        DP(C0, 4, 6);                                                                                                  \
        _tile_loadd(5, WEIGHTS((b) + 1), STRIDE);                                                                      \
        _tile_loadd(7, xt + (long)((b) + 1) * (ACT_BYTES), 64);                                                        \
        DP(C1, 5, 7);                                                                                                  \
    } while (0)

// The pipelined walk over `blocks` blocks of one token tile: ISSUE(C0, C1, b) starts pair b, DRAIN(C0, C1, b) stores
// and reads it out, SINGLE(b) does an odd last block alone.
#define AMX_BLOCK_PAIRS(blocks, ISSUE, DRAIN, SINGLE)                                                                  \
    do                                                                                                                 \
    {                                                                                                                  \
        int pairs = (blocks) / 2;                                                                                      \
        if (pairs > 0)                                                                                                 \
        {                                                                                                              \
            ISSUE(0, 1, 0);                                                                                            \
        }                                                                                                              \
        for (int p = 0; p < pairs; p += 2)                                                                             \
        {                                                                                                              \
            if (p + 1 < pairs)                                                                                         \
            {                                                                                                          \
                ISSUE(2, 3, 2 * (p + 1));                                                                              \
            }                                                                                                          \
            DRAIN(0, 1, 2 * p);                                                                                        \
            if (p + 1 >= pairs)                                                                                        \
            {                                                                                                          \
                break;                                                                                                 \
            }                                                                                                          \
            if (p + 2 < pairs)                                                                                         \
            {                                                                                                          \
                ISSUE(0, 1, 2 * (p + 2));                                                                              \
            }                                                                                                          \
            DRAIN(2, 3, 2 * (p + 1));                                                                                  \
        }                                                                                                              \
        if ((blocks) % 2 != 0)                                                                                         \
        {                                                                                                              \
            SINGLE((blocks) - 1);                                                                                      \
        }                                                                                                              \
    } while (0)

// Stores result tiles C0, C1 (block pair b) and reads them out with READ_OUT(tile, block).
#define AMX_DRAIN(C0, C1, b, READ_OUT)                                                                                 \
    do                                                                                                                 \
    {                                                                                                                  \
        _tile_stored(C0, scratch, 64);                                                                                 \
        _tile_stored(C1, scratch + 256, 64);                                                                           \
        READ_OUT(scratch, b);                                                                                          \
        READ_OUT(scratch + 256, (b) + 1);                                                                              \
    } while (0)

// Block b alone (an odd last block), in result tile 0.
#define AMX_SINGLE(b, WEIGHTS, STRIDE, ACT_BYTES, DP, READ_OUT)                                                        \
    do                                                                                                                 \
    {                                                                                                                  \
        _tile_zero(0);                                                                                                 \
        _tile_loadd(4, WEIGHTS(b), STRIDE);                                                                            \
        _tile_loadd(6, xt + (long)(b) * (ACT_BYTES), 64);                                                              \
        DP(0, 4, 6);                                                                                                   \
        _tile_stored(0, scratch, 64);                                                                                  \
        READ_OUT(scratch, b);                                                                                          \
    } while (0)

// Every token tile of a call: acc[16] (row r = 16 tokens) summed over `blocks` blocks through the pipelined walk, then
// written to y; xt, st and sums point at the tile's activations (ACT_BYTES a block), its scales (SCALE_BLOCKS a
// token) and block sums (xsum may be null). Ends the call's use of the tiles.
#define AMX_TOKEN_TILES(blocks, ACT_BYTES, SCALE_BLOCKS, ISSUE, DRAIN, SINGLE)                                         \
    do                                                                                                                 \
    {                                                                                                                  \
        for (int tile = 0; tile < token_tiles; tile++)                                                                 \
        {                                                                                                              \
            const int8_t* xt = xq + (long)tile * (blocks) * (ACT_BYTES);                                               \
            const float* st = xs + (long)tile * (SCALE_BLOCKS) * 16;                                                   \
            const float* sums = xsum ? xsum + (long)tile * (blocks) * 16 : 0;                                          \
            (void)sums;                                                                                                \
            __m512 acc[16];                                                                                            \
            _Pragma("GCC unroll 16") for (int r = 0; r < 16; r++)                                                      \
            {                                                                                                          \
                acc[r] = _mm512_setzero_ps();                                                                          \
            }                                                                                                          \
            AMX_BLOCK_PAIRS(blocks, ISSUE, DRAIN, SINGLE);                                                             \
            amx_write_tile(acc, result, tile, tokens, y, y_stride, bias);                                              \
        }                                                                                                              \
        _tile_release();                                                                                               \
    } while (0)

// acc[r] (16 tokens) = fma(C[r], scales · row_scales[r], acc[r]) for the 16 rows of one int32 result tile.
#define AMX_READ_OUT(tile, scales, row_scales)                                                                         \
    _Pragma("GCC unroll 16") for (int r = 0; r < 16; r++)                                                              \
    {                                                                                                                  \
        acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_load_si512((tile) + r * 16)),                               \
                                 _mm512_mul_ps((scales), _mm512_set1_ps((row_scales)[r])), acc[r]);                    \
    }

// Block b of a format with per-block minimums or offsets (K-quants): acc[r] += C[r] · dx·scale[r] − dx·Σxq · minimum[r],
// with dx the 16 tokens' activation scales of the block's super-block and sums the tokens' activation sums of the block.
#define AMX_READ_OUT_OFFSET(tile, b, dx_vector, sums_vector, row_scales, row_minimums)                                 \
    do                                                                                                                 \
    {                                                                                                                  \
        __m512 dx = (dx_vector);                                                                                       \
        __m512 dsum = _mm512_mul_ps(dx, (sums_vector));                                                                \
        const float* sc = (row_scales);                                                                                \
        const float* mn = (row_minimums);                                                                              \
        _Pragma("GCC unroll 16") for (int r = 0; r < 16; r++)                                                          \
        {                                                                                                              \
            acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_load_si512((tile) + r * 16)),                           \
                                     _mm512_mul_ps(dx, _mm512_set1_ps(sc[r])), acc[r]);                                \
            acc[r] = _mm512_fnmadd_ps(dsum, _mm512_set1_ps(mn[r]), acc[r]);                                            \
        }                                                                                                              \
    } while (0)

// Writes acc (row r = 16 tokens) to y (token-major, y_stride floats a token) for the tile's real tokens, plus bias.
static inline AMX_TARGET void amx_write_tile(__m512* acc, float* result, int tile, int tokens, float* y, long y_stride, const float* bias)
{
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
