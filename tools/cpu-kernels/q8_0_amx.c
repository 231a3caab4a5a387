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
#define Q8_0_READ_OUT(tile, b) AMX_READ_OUT(tile, _mm512_loadu_ps(st + (b) * 16), wscale + (long)(b) * 16)

#define Q8_0_DRAIN(C0, C1, b) AMX_DRAIN(C0, C1, b, Q8_0_READ_OUT)
#define Q8_0_SINGLE(b) AMX_SINGLE(b, Q8_0_WEIGHTS, row_bytes, 512, _tile_dpbssd, Q8_0_READ_OUT)

// xsum is not read (Q8_0 levels have no offset); it is there so that every kernel is called the same way.
AMX_TARGET void enclave_q8_0_amx(const uint8_t* w, long row_bytes, int blocks, const int8_t* xq, const float* xs, const float* xsum,
                                 int token_tiles, int tokens, float* y, long y_stride, const float* bias, int32_t* scratch,
                                 const void* config)
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

    AMX_TOKEN_TILES(blocks, 512, blocks, Q8_0_ISSUE, Q8_0_DRAIN, Q8_0_SINGLE);
}
