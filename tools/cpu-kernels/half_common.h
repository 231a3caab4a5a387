// Shared by the 16-bit float kernels of this folder (half_amx.h, half_pack_amx.c): the target, always-inlined
// helpers (the C# side calls the first byte of the code, so there must be one function only) and a 16 × 16 transpose.
#include <immintrin.h>
#include <stdint.h>

#define HALF_TARGET __attribute__((target("amx-tile,amx-bf16,avx512f,avx512bw,avx512bf16,f16c")))

#define HALF_INLINE static inline __attribute__((always_inline))

// A value the compiler cannot see through, so constants are built in registers instead of read from memory.
HALF_INLINE int half_opaque32(int v)
{
    __asm__("" : "+r"(v));
    return v;
}

// 16 fp32 rows of 16 in place to 16 columns (four rounds of in-lane and cross-lane shuffles, immediates only).
HALF_INLINE HALF_TARGET void half_transpose(__m512* v)
{
    __m512 t[16], u[16];
    for (int i = 0; i < 8; i++)
    {
        t[2 * i] = _mm512_unpacklo_ps(v[2 * i], v[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(v[2 * i], v[2 * i + 1]);
    }
    // u[4i + j], lane L: column 4L + j of rows 4i..4i+3.
    for (int i = 0; i < 4; i++)
    {
        __m512d a = _mm512_castps_pd(t[4 * i]), b = _mm512_castps_pd(t[4 * i + 1]);
        __m512d c = _mm512_castps_pd(t[4 * i + 2]), d = _mm512_castps_pd(t[4 * i + 3]);
        u[4 * i] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, c));
        u[4 * i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, c));
        u[4 * i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(b, d));
        u[4 * i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(b, d));
    }
    for (int j = 0; j < 4; j++)
    {
        t[j] = _mm512_shuffle_f32x4(u[j], u[4 + j], 0x88);
        t[4 + j] = _mm512_shuffle_f32x4(u[j], u[4 + j], 0xDD);
        t[8 + j] = _mm512_shuffle_f32x4(u[8 + j], u[12 + j], 0x88);
        t[12 + j] = _mm512_shuffle_f32x4(u[8 + j], u[12 + j], 0xDD);
    }
    for (int j = 0; j < 4; j++)
    {
        v[j] = _mm512_shuffle_f32x4(t[j], t[8 + j], 0x88);
        v[8 + j] = _mm512_shuffle_f32x4(t[j], t[8 + j], 0xDD);
        v[4 + j] = _mm512_shuffle_f32x4(t[4 + j], t[12 + j], 0x88);
        v[12 + j] = _mm512_shuffle_f32x4(t[4 + j], t[12 + j], 0xDD);
    }
}
