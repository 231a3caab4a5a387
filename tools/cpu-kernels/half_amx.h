// F16 or BF16 weights × fp32 activations on AMX-BF16 tiles, the prefill product of CpuMatMul, kept close to fp32
// (the kernels are f16_amx.c and bf16_amx.c, which set HALF_NAME and HALF_F16 and include this body).
//
// Precision. Every value is split into a high and a low bf16 part, and tdpbf16ps (bf16 × bf16 products, exact in
// fp32, summed in fp32) adds the products of the parts that matter:
//   F16 weight w: whi = w rounded to 8 significant bits (nearest, ties away from zero: add half an ulp to the fp32
//     bits, clear the low 16), wlo = w − whi. f16 has 11 significant bits and |wlo| ≤ 2^-8·|w|, so wlo is a multiple
//     of w's f16 ulp below 2^3 of them: at most 3 significant bits, exact in bf16, and never below 2^-24 (the
//     smallest f16 subnormal), far above bf16's smallest normal. So whi + wlo = w exactly, for every finite f16.
//     BF16 weights are exact as they are (whi = w, wlo = 0).
//   fp32 activation a (packed by the caller the same way): ahi = a to 8 bits, |a − ahi| ≤ 2^-8·|a|, exact in fp32;
//     alo = that rounded to 8 bits, so a = ahi + alo + r with |r| ≤ 2^-16·|a|.
//   a·w = ahi·whi + ahi·wlo + alo·whi + alo·wlo + r·w. The kernel sums the first three (F16) or ahi·w + alo·w (BF16);
//     the dropped terms are at most (2^-8 + 2^-16)·2^-8·|a·w| + 2^-16·|a·w|, about 2^-15·|a·w| (BF16: 2^-16).
// So each product is off by about 2^-15 of its size, against 2^-24 for an fp32 FMA, and the fp32 sum adds what any
// fp32 sum of 3·in (BF16: 2·in) terms adds: at most one rounding of 2^-24 of the running sum per term. The tile unit
// treats bf16 subnormals as zero, which only touches activations below about 2^-118 (an error below 2^-126·|w|).
// Activations within 2^-9 of the fp32 maximum round their high part to infinity; nothing a model computes is there.
//
// Layout. The weights are the A tiles (16 weight rows × 32 values, rows as they lie in memory once converted) and
// the activations the B tiles, so a result tile is 16 weight rows × 16 tokens and goes out through a transpose:
//   w:          the call's first weight row, rows w_stride values apart; `rows` of them (any count, the last group
//               of 16 may be partial), `in` values each (any count, the last block of 32 may be partial).
//   xb:         [token_tiles][blocks][2][16][16][2] bf16, blocks = ⌈in/32⌉: per block the B tile of the high parts,
//               then of the low parts; tile row k holds values 2k and 2k + 1 of each of the 16 tokens side by side.
//               Zero past the last token and past `in`.
//   y:          [tokens, y_stride] fp32; row r of token t at y + t·y_stride + r (bias[r] added when not null).
//   chunk:      blocks a pass over the activations covers (≤ blocks): the call walks the row in chunks, each
//               chunk over all its groups, so that one chunk of every token tile stays in L2 while every group of
//               the call reads it; with more than one chunk the running sums wait in scratch between chunks.
//   scratch:    64-byte aligned, 4·chunk·(1 KiB, F16 2 KiB) + 1 KiB (+ groups·token_tiles KiB with more than one
//               chunk; CpuAmx.HalfKernel.ScratchBytes): two buffers of a pair of groups × chunk blocks of converted
//               weights (the pair on the tiles and the next one, converted between the tile products so that the
//               vector units and the tile unit work at once), one fp32 tile, then the running sums [groups][token
//               tiles][16 rows][16 tokens] where there is more than one chunk.
//   config:     palette 1, tmm0-7 all 16 rows × 64 bytes (CpuAmx).
// A group's converted block is its high tile (16 rows × 32 bf16, 1 KiB), then for F16 its low tile.
#include "half_common.h"

// bf16 words of a converted block of one group: the high tile, then (F16) the low one.
#define HALF_BLOCK_WORDS (HALF_F16 ? 1024 : 512)

// Values col..col+31 of rows r0..r1-1 of one group at wg (w_stride apart; zero past `in` and for the rows past
// `valid`) into the group's A tiles of that block at dst. F16: high parts (fp32 bits + half an ulp of bf16, low 16
// bits cleared: nearest, ties away) and the exact rest; cvtne2ps2bf16 of values that fit bf16 is exact, and puts its
// second operand's 16 words first, so the 32 values stay in order.
HALF_INLINE HALF_TARGET void half_convert(const uint16_t* wg, long w_stride, int valid, int in, int col, uint16_t* dst,
                                            int r0, int r1, __m512i round, __m512i top)
{
    int left = in - col;
    __mmask32 mask = left >= 32 ? (__mmask32)-1 : _cvtu32_mask32((1u << left) - 1);
    for (int r = r0; r < r1; r++)
    {
        // Four blocks ahead: sixteen rows (32 a pair) are too many streams for the hardware prefetcher alone.
        _mm_prefetch((const char*)(wg + r * w_stride + col + 128), _MM_HINT_T0);
        __m512i h = r < valid ? _mm512_maskz_loadu_epi16(mask, wg + r * w_stride + col) : _mm512_setzero_si512();
#if HALF_F16
        __m512 f0 = _mm512_cvtph_ps(_mm512_castsi512_si256(h));
        __m512 f1 = _mm512_cvtph_ps(_mm512_extracti64x4_epi64(h, 1));
        __m512 h0 = _mm512_castsi512_ps(_mm512_and_si512(_mm512_add_epi32(_mm512_castps_si512(f0), round), top));
        __m512 h1 = _mm512_castsi512_ps(_mm512_and_si512(_mm512_add_epi32(_mm512_castps_si512(f1), round), top));
        _mm512_store_si512(dst + r * 32, (__m512i)_mm512_cvtne2ps_pbh(h1, h0));
        _mm512_store_si512(dst + 512 + r * 32, (__m512i)_mm512_cvtne2ps_pbh(_mm512_sub_ps(f1, h1), _mm512_sub_ps(f0, h0)));
#else
        (void)round;
        (void)top;
        _mm512_store_si512(dst + r * 32, h);
#endif
    }
}

// The fp32 tile at `result` (16 weight rows of group g × 16 tokens of token tile tt) to y, token by token: the
// tokens that exist, the rows that exist, plus the bias.
HALF_INLINE HALF_TARGET void half_write(const float* result, float* y, long y_stride, const float* bias, int tt, int tokens, int g,
                                          int rows)
{
    __m512 v[16];
    for (int r = 0; r < 16; r++)
    {
        v[r] = _mm512_load_ps(result + r * 16);
    }
    half_transpose(v);
    int valid = rows - g * 16 < 16 ? rows - g * 16 : 16;
    __mmask16 mask = _cvtu32_mask16((1u << valid) - 1);
    __m512 add = bias ? _mm512_maskz_loadu_ps(mask, bias + g * 16) : _mm512_setzero_ps();
    int count = tokens - tt * 16 < 16 ? tokens - tt * 16 : 16;
    for (int t = 0; t < count; t++)
    {
        _mm512_mask_storeu_ps(y + (long)(tt * 16 + t) * y_stride + g * 16, mask, _mm512_add_ps(v[t], add));
    }
}

// The running sums of the result tiles of this pass: zero at the first chunk, else back from scratch.
#define HALF_START(C, gg, tt)                                                                                          \
    do                                                                                                                 \
    {                                                                                                                  \
        if (c == 0)                                                                                                    \
        {                                                                                                              \
            _tile_zero(C);                                                                                             \
        }                                                                                                              \
        else                                                                                                           \
        {                                                                                                              \
            _tile_loadd(C, sums + ((long)(gg) * token_tiles + (tt)) * 256, 64);                                        \
        }                                                                                                              \
    } while (0)

// ... and to y after the last chunk, else back to scratch.
#define HALF_FINISH(C, gg, tt)                                                                                         \
    do                                                                                                                 \
    {                                                                                                                  \
        if (c == chunks - 1)                                                                                           \
        {                                                                                                              \
            _tile_stored(C, result, 64);                                                                               \
            half_write(result, y, y_stride, bias, (tt), tokens, (gg), rows);                                           \
        }                                                                                                              \
        else                                                                                                           \
        {                                                                                                              \
            _tile_stored(C, sums + ((long)(gg) * token_tiles + (tt)) * 256, 64);                                       \
        }                                                                                                              \
    } while (0)

// The next `n` rows of the next pass's conversion (cursor: row cv_r of block cv_b of group cv_gi of cv_groups, cv_len
// blocks a group) into the other buffer.
#define HALF_CONVERT_ROWS(n)                                                                                           \
    do                                                                                                                 \
    {                                                                                                                  \
        int todo = (n);                                                                                                \
        while (todo > 0 && cv_gi < cv_groups)                                                                          \
        {                                                                                                              \
            int gg = cv_g + cv_gi;                                                                                     \
            int r1 = cv_r + todo < 16 ? cv_r + todo : 16;                                                              \
            half_convert(w + (long)gg * 16 * w_stride, w_stride, rows - gg * 16, in, (cv_c * chunk + cv_b) * 32,       \
                         next + ((long)cv_gi * chunk + cv_b) * HALF_BLOCK_WORDS, cv_r, r1, round, top);                \
            todo -= r1 - cv_r;                                                                                         \
            cv_r = r1;                                                                                                 \
            if (cv_r == 16)                                                                                            \
            {                                                                                                          \
                cv_r = 0;                                                                                              \
                if (++cv_b == cv_len)                                                                                  \
                {                                                                                                      \
                    cv_b = 0;                                                                                          \
                    cv_gi++;                                                                                           \
                }                                                                                                      \
            }                                                                                                          \
        }                                                                                                              \
    } while (0)

// One tile product of each result tile for the operands on tmm4/5 (groups) and tmm6/7 (token tiles).
#define HALF_DP(G2, T2)                                                                                                \
    do                                                                                                                 \
    {                                                                                                                  \
        _tile_dpbf16ps(0, 4, 6);                                                                                       \
        if (G2) _tile_dpbf16ps(1, 5, 6);                                                                               \
        if (T2) _tile_dpbf16ps(2, 4, 7);                                                                               \
        if ((G2) && (T2)) _tile_dpbf16ps(3, 5, 7);                                                                     \
    } while (0)

// One pass's products over the chunk for two groups (G2) and/or two token tiles (T2), both literal 0 or 1 (tile
// numbers must be immediates, so each case is its own loop): C0 = (g, tt), C1 = (g + 1, tt), C2 = (g, tt + 1),
// C3 = (g + 1, tt + 1). Per block: high weights × low activations, high × high (only the activation tiles
// reloaded), then for F16 low weights × high activations (only the weight tiles reloaded): eight tile loads for
// twelve products, each result tile at most every third product. The next pass's conversion runs in between, a
// third after each round of products: the tile unit takes few products in flight, so conversion placed after a
// block's twelve waits for them to be issued, and in smaller pieces more of it runs while they execute (about a
// tenth faster than a whole block step's conversion at once, at 64 tokens).
#define HALF_PRODUCTS(G2, T2)                                                                                          \
    do                                                                                                                 \
    {                                                                                                                  \
        HALF_START(0, g, tt);                                                                                          \
        if (G2) HALF_START(1, g + 1, tt);                                                                              \
        if (T2) HALF_START(2, g, tt + 1);                                                                              \
        if ((G2) && (T2)) HALF_START(3, g + 1, tt + 1);                                                                \
        for (int b = 0; b < len; b++)                                                                                  \
        {                                                                                                              \
            const uint16_t* a0 = wa + (long)b * HALF_BLOCK_WORDS;                                                      \
            const uint16_t* a1 = a0 + (long)chunk * HALF_BLOCK_WORDS;                                                  \
            const uint16_t* x0b = x0 + (long)b * 1024;                                                                 \
            const uint16_t* x1b = x1 + (long)b * 1024;                                                                 \
            _tile_loadd(4, a0, 64);                                                                                    \
            _tile_loadd(6, x0b + 512, 64);                                                                             \
            if (G2) _tile_loadd(5, a1, 64);                                                                            \
            if (T2) _tile_loadd(7, x1b + 512, 64);                                                                     \
            HALF_DP(G2, T2);                                                                                           \
            HALF_CONVERT_ROWS(piece);                                                                                  \
            _tile_loadd(6, x0b, 64);                                                                                   \
            if (T2) _tile_loadd(7, x1b, 64);                                                                           \
            HALF_DP(G2, T2);                                                                                           \
            HALF_CONVERT_ROWS(piece);                                                                                  \
            if (HALF_F16)                                                                                              \
            {                                                                                                          \
                _tile_loadd(4, a0 + 512, 64);                                                                          \
                if (G2) _tile_loadd(5, a1 + 512, 64);                                                                  \
                HALF_DP(G2, T2);                                                                                       \
            }                                                                                                          \
            HALF_CONVERT_ROWS(rest);                                                                                   \
        }                                                                                                              \
        HALF_FINISH(0, g, tt);                                                                                         \
        if (G2) HALF_FINISH(1, g + 1, tt);                                                                             \
        if (T2) HALF_FINISH(2, g, tt + 1);                                                                             \
        if ((G2) && (T2)) HALF_FINISH(3, g + 1, tt + 1);                                                               \
    } while (0)

HALF_TARGET void HALF_NAME(const uint16_t* w, long w_stride, int rows, int in, const uint16_t* xb, int token_tiles, int tokens, float* y,
                           long y_stride, const float* bias, int chunk, uint8_t* scratch, const void* config)
{
    _tile_loadconfig(config);
    int blocks = (in + 31) / 32;
    int groups = (rows + 15) / 16;
    int chunks = (blocks + chunk - 1) / chunk;
    long pair_words = 2L * chunk * HALF_BLOCK_WORDS;
    uint16_t* current = (uint16_t*)scratch;
    uint16_t* next = current + pair_words;
    float* result = (float*)(next + pair_words);
    float* sums = result + 256;
    __m512i round = _mm512_set1_epi32(half_opaque32(0x8000));
    __m512i top = _mm512_set1_epi32(half_opaque32((int)0xFFFF0000));
    long tile_step = (long)blocks * 1024;

    // The first pass's pair before any tile work (the cursor starts on it, into `next`, then the buffers swap).
    int cv_c = 0, cv_g = 0, cv_gi = 0, cv_b = 0, cv_r = 0;
    int cv_groups = groups < 2 ? groups : 2;
    int cv_len = chunk < blocks ? chunk : blocks;
    HALF_CONVERT_ROWS(32 * chunk);

    for (int c = 0; c < chunks; c++)
    {
        int len = blocks - c * chunk < chunk ? blocks - c * chunk : chunk;
        for (int g = 0; g < groups; g += 2)
        {
            uint16_t* swap = current;
            current = next;
            next = swap;
            const uint16_t* wa = current;
            int two_groups = groups - g >= 2;

            // The next pass: the next pair of this chunk, else the first of the next chunk, else none.
            cv_g = g + 2 < groups ? g + 2 : 0;
            cv_c = g + 2 < groups ? c : c + 1;
            cv_gi = 0;
            cv_b = 0;
            cv_r = 0;
            cv_groups = cv_c < chunks ? (groups - cv_g < 2 ? groups - cv_g : 2) : 0;
            cv_len = blocks - cv_c * chunk < chunk ? blocks - cv_c * chunk : chunk;
            // Rows to convert a block step, in three pieces (the last one what is left).
            int steps = ((token_tiles + 1) / 2) * len;
            int per = steps > 0 ? (cv_groups * cv_len * 16 + steps - 1) / steps : 0;
            int piece = (per + 2) / 3;
            int rest = per - 2 * piece > 0 ? per - 2 * piece : 0;

            for (int tt = 0; tt < token_tiles; tt += 2)
            {
                const uint16_t* x0 = xb + (long)tt * tile_step + (long)c * chunk * 1024;
                const uint16_t* x1 = x0 + tile_step;
                int two_tiles = token_tiles - tt >= 2;
                if (two_groups && two_tiles)
                {
                    HALF_PRODUCTS(1, 1);
                }
                else if (two_groups)
                {
                    HALF_PRODUCTS(1, 0);
                }
                else if (two_tiles)
                {
                    HALF_PRODUCTS(0, 1);
                }
                else
                {
                    HALF_PRODUCTS(0, 0);
                }
            }

            // Whatever of the next pass is left (no token tiles).
            HALF_CONVERT_ROWS(32 * chunk);
        }
    }

    _tile_release();
}
