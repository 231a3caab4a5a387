// Q8_0 weights × bf16 activations on AMX-BF16 tiles, the prefill product of CpuQuantMatMul where the CPU has AMX-BF16.
// Built by generate.sh like the int8 kernels (a leaf function: no calls, no globals, no constants in memory).
//
// The int8 kernel (q8_0_amx.c) multiplies one Q8_0 block of 32 values per tile product, and since every block has a
// scale of its own it must store, convert and scale each int32 result tile before the next block: the vector
// read-out, not the tile unit, sets its pace. Here the scales go into the weights instead: each group of 16 weight
// rows is dequantised once per call (level × fp16 scale, rounded to bf16) into B tiles in scratch, the activations
// are bf16 A tiles (packed once per call by the caller), and tdpbf16ps accumulates fp32 over the whole row with no
// read-out until the end. A tile product covers 32 values, one Q8_0 block, so any row length of whole blocks works.
// Two groups × two token tiles make four accumulators, so each loaded A and B tile feeds two products; the next two
// groups are dequantised in between.
//
//   w:           the first of `groups` consecutive groups of 16 rows in the layout of CpuQ8_0Groups, group_bytes
//                apart: [blocks][8 quads][16 rows][4] levels + 128 as unsigned bytes, then [blocks][16 rows] fp16 scales.
//   xb:          [token_tiles][blocks][16 tokens][32] bf16 activations (an A tile is 1 KiB), padding tokens zero.
//   y:           [tokens, y_stride] fp32; group i's 16 outputs of token t at y + t·y_stride + 16 i (bias added when
//                not null; bias points at the first group's 16).
//   scratch:     64-byte aligned, 4096·blocks + 1024 bytes: two buffers of two groups of dequantised B tiles (the
//                pair on the tiles and the next, dequantised between the tile products so that the vector units
//                and the tile unit work at once), then one fp32 tile.
//   config:      palette 1, tmm0-7 all 16 rows × 64 bytes (CpuAmx).
// B tile of block b, row k: for each of the 16 weight rows n, the bf16 pair (w[n][32b + 2k], w[n][32b + 2k + 1]), so
// quad q of the grouped layout (values 4q..4q+3 of each row) gives tile rows 2q and 2q + 1.
#include <immintrin.h>
#include <stdint.h>

#define BF16_TARGET __attribute__((target("amx-tile,amx-bf16,avx512f,avx512bw,avx512bf16,f16c")))

// A value the compiler cannot see through, so constants are built in registers instead of read from memory.
static inline int opaque32(int v)
{
    __asm__("" : "+r"(v));
    return v;
}

static inline long long opaque64(long long v)
{
    __asm__("" : "+r"(v));
    return v;
}

// Quads q0..q0+3 of block b of one group's 16 rows as bf16 B tile rows 2·q0..2·q0+7 at dst ([blocks][16 tile rows]
// [16 rows][2]): (level − 128) · scale in fp32 (exact: 8 × 11 significant bits), rounded to nearest even bf16.
// pairs interleaves two vectors' bf16 words.
static inline BF16_TARGET void q8_0_bf16_dequantise(const uint8_t* gw, int blocks, uint16_t* dst, int b, int q0, __m512i pairs,
                                                    __m512i low_byte, __m512 c128)
{
    const uint16_t* scales = (const uint16_t*)(gw + (long)blocks * 512);
    __m512 s = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i*)(scales + (long)b * 16)));
    __m512 s128 = _mm512_mul_ps(s, c128);
    const uint8_t* levels = gw + (long)b * 512;
    uint16_t* out = dst + (long)b * 512;
#pragma GCC unroll 4
    for (int q = q0; q < q0 + 4; q++)
    {
        __m512i x = _mm512_loadu_si512(levels + q * 64);
        __m512 f0 = _mm512_fmsub_ps(_mm512_cvtepi32_ps(_mm512_and_si512(x, low_byte)), s, s128);
        __m512 f1 = _mm512_fmsub_ps(_mm512_cvtepi32_ps(_mm512_and_si512(_mm512_srli_epi32(x, 8), low_byte)), s, s128);
        __m512 f2 = _mm512_fmsub_ps(_mm512_cvtepi32_ps(_mm512_and_si512(_mm512_srli_epi32(x, 16), low_byte)), s, s128);
        __m512 f3 = _mm512_fmsub_ps(_mm512_cvtepi32_ps(_mm512_srli_epi32(x, 24)), s, s128);
        // cvtne2ps gives f0's 16 words then f1's; pairs puts row n's two side by side.
        _mm512_store_si512(out + (2 * q) * 32, _mm512_permutexvar_epi16(pairs, (__m512i)_mm512_cvtne2ps_pbh(f1, f0)));
        _mm512_store_si512(out + (2 * q + 1) * 32, _mm512_permutexvar_epi16(pairs, (__m512i)_mm512_cvtne2ps_pbh(f3, f2)));
    }
}

// The next pair of groups is dequantised half a block at a time while the tile unit works on this pair: up to
// `per` steps (dq_g < dq_groups: group, block dq_b, half dq_h) into the other buffer.
#define BF16_DEQUANTISE_STEPS(per)                                                                                     \
    do                                                                                                                 \
    {                                                                                                                  \
        for (int step = 0; step < (per) && dq_g < dq_groups; step++)                                                   \
        {                                                                                                              \
            q8_0_bf16_dequantise(dq_w + (long)dq_g * group_bytes, blocks, next + (long)dq_g * group_values, dq_b,      \
                                 dq_h * 4, pairs, low_byte, c128);                                                     \
            dq_h ^= 1;                                                                                                 \
            if (dq_h == 0 && ++dq_b == blocks)                                                                         \
            {                                                                                                          \
                dq_b = 0;                                                                                              \
                dq_g++;                                                                                                \
            }                                                                                                          \
        }                                                                                                              \
    } while (0)

// Writes fp32 result tile C (token tile `tt`, whose tokens from the first are `left`; group `gi` of the pair at `g`)
// to y: straight from the tile where it is whole and has no bias, else through scratch for the tokens that exist,
// plus the bias.
#define BF16_STORE(C, tt, left, gi)                                                                                    \
    do                                                                                                                 \
    {                                                                                                                  \
        float* dst = y + (long)(tt) * 16 * y_stride + (long)(g + (gi)) * 16;                                          \
        int count = (left) < 16 ? (left) : 16;                                                                         \
        if (count == 16 && !bias)                                                                                      \
        {                                                                                                              \
            _tile_stored(C, dst, y_stride * 4);                                                                        \
        }                                                                                                              \
        else                                                                                                           \
        {                                                                                                              \
            _tile_stored(C, result, 64);                                                                               \
            __m512 add = bias ? _mm512_loadu_ps(bias + (long)(g + (gi)) * 16) : _mm512_setzero_ps();                  \
            for (int t = 0; t < count; t++)                                                                            \
            {                                                                                                          \
                _mm512_storeu_ps(dst + (long)t * y_stride, _mm512_add_ps(_mm512_load_ps(result + t * 16), add));      \
            }                                                                                                          \
        }                                                                                                              \
    } while (0)

// One token-tile pair's products over all blocks, for two groups (G2) and/or two token tiles (T2), both literal 0 or 1
// (tile numbers must be immediates, so each case is its own loop), then their stores: C0 = tiles (tt, g),
// C1 = (tt, g + 1), C2 = (tt + 1, g), C3 = (tt + 1, g + 1). The next pair's dequantisation runs between the products.
#define BF16_PRODUCTS(G2, T2)                                                                                          \
    do                                                                                                                 \
    {                                                                                                                  \
        if (G2) _tile_zero(1);                                                                                         \
        if (T2) _tile_zero(2);                                                                                         \
        if ((G2) && (T2)) _tile_zero(3);                                                                               \
        for (int b = 0; b < blocks; b++)                                                                               \
        {                                                                                                              \
            _tile_loadd(4, x0 + (long)b * 512, 64);                                                                    \
            _tile_loadd(6, wb0 + (long)b * 512, 64);                                                                   \
            _tile_dpbf16ps(0, 4, 6);                                                                                   \
            if (G2)                                                                                                    \
            {                                                                                                          \
                _tile_loadd(7, wb1 + (long)b * 512, 64);                                                               \
                _tile_dpbf16ps(1, 4, 7);                                                                               \
            }                                                                                                          \
            if (T2)                                                                                                    \
            {                                                                                                          \
                _tile_loadd(5, x1 + (long)b * 512, 64);                                                                \
                _tile_dpbf16ps(2, 5, 6);                                                                               \
                if (G2) _tile_dpbf16ps(3, 5, 7);                                                                       \
            }                                                                                                          \
            BF16_DEQUANTISE_STEPS(per);                                                                                \
        }                                                                                                              \
        BF16_STORE(0, tt, left, 0);                                                                                    \
        if (G2) BF16_STORE(1, tt, left, 1);                                                                            \
        if (T2) BF16_STORE(2, tt + 1, left - 16, 0);                                                                   \
        if ((G2) && (T2)) BF16_STORE(3, tt + 1, left - 16, 1);                                                         \
    } while (0)

BF16_TARGET void enclave_q8_0_bf16_amx(const uint8_t* w, long group_bytes, int groups, int blocks, const uint16_t* xb, int token_tiles,
                                      int tokens, float* y, long y_stride, const float* bias, uint8_t* scratch, const void* config)
{
    _tile_loadconfig(config);
    // Two buffers of two groups each: the pair on the tiles and the next one being dequantised.
    long group_values = (long)blocks * 512;
    uint16_t* current = (uint16_t*)scratch;
    uint16_t* next = current + 2 * group_values;
    float* result = (float*)(scratch + (long)blocks * 4096);

    // Word i of pairs is i/2 for even i and 16 + i/2 for odd i: dword n takes word n of each cvtne2ps half.
    __m512i n = _mm512_cvtepu8_epi32(_mm_set_epi64x(opaque64(0x0f0e0d0c0b0a0908LL), opaque64(0x0706050403020100LL)));
    __m512i pairs = _mm512_add_epi32(_mm512_or_si512(n, _mm512_slli_epi32(n, 16)), _mm512_set1_epi32(opaque32(0x00100000)));
    __m512i low_byte = _mm512_set1_epi32(opaque32(0xFF));
    __m512 c128 = _mm512_cvtepi32_ps(_mm512_set1_epi32(opaque32(128)));
    long tile_step = (long)blocks * 512;

    // The first pair before any tile work.
    for (int gi = 0; gi < 2 && gi < groups; gi++)
    {
        for (int b = 0; b < blocks; b++)
        {
            q8_0_bf16_dequantise(w + (long)gi * group_bytes, blocks, current + gi * group_values, b, 0, pairs, low_byte, c128);
            q8_0_bf16_dequantise(w + (long)gi * group_bytes, blocks, current + gi * group_values, b, 4, pairs, low_byte, c128);
        }
    }

    for (int g = 0; g < groups; g += 2)
    {
        int two_groups = groups - g >= 2;
        const uint16_t* wb0 = current;
        const uint16_t* wb1 = current + group_values;

        // The next pair's half blocks, spread evenly over this pair's block steps.
        int dq_groups = groups - g - 2 < 0 ? 0 : groups - g - 2 < 2 ? groups - g - 2 : 2;
        int dq_g = 0, dq_b = 0, dq_h = 0;
        const uint8_t* dq_w = w + (long)(g + 2) * group_bytes;
        int steps = ((token_tiles + 1) / 2) * blocks;
        int per = steps > 0 ? (dq_groups * blocks * 2 + steps - 1) / steps : 0;

        for (int tt = 0; tt < token_tiles; tt += 2)
        {
            const uint16_t* x0 = xb + (long)tt * tile_step;
            const uint16_t* x1 = x0 + tile_step;
            int two_tiles = token_tiles - tt >= 2;
            // Tokens of this pair of tiles; opaque, or the compiler pairs the two tiles' counts into a vector with constants.
            int left = opaque32(tokens - tt * 16);
            _tile_zero(0);
            if (two_groups && two_tiles)
            {
                BF16_PRODUCTS(1, 1);
            }
            else if (two_groups)
            {
                BF16_PRODUCTS(1, 0);
            }
            else if (two_tiles)
            {
                BF16_PRODUCTS(0, 1);
            }
            else
            {
                BF16_PRODUCTS(0, 0);
            }
        }

        // Whatever of the next pair is left (no token tiles), then the buffers swap.
        BF16_DEQUANTISE_STEPS(2 * blocks * 2);
        uint16_t* swap = current;
        current = next;
        next = swap;
    }

    _tile_release();
}
