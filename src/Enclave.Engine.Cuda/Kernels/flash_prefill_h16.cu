// Tiled causal prefill attention on half-precision tensor cores (the backend's tensor-core mode); the exact fp32
// kernels, and the tiling and GQA row packing this one shares with them, are described in flash_prefill.cu.
#include "flash_mma.cuh"

#define FLASH_THREADS 128

// The same tiling, GQA row packing and causal online softmax as the fp32 kernels, with q·k and p·v on mma.sync
// m16n8k16 with f16 operands and fp32 accumulation. It replaced a TF32 m16n8k8 kernel: f16 keeps TF32's 10-bit
// mantissa at twice the K depth per instruction and half the shared memory and Q registers, so a block holds 64 keys
// per tile and more blocks fit on a multiprocessor (7B shape on an H200: 2k-token prefill 22.0k → 25.8k tokens/s,
// 8k 10.4k → 13.5k). Q (scaled by scale * log2(e)) is rounded to f16 once into
// registers; K tiles are stored row-major as f16, V tiles transposed (dims x keys), both padded so that the fragment
// loads of a warp hit 32 banks. The probabilities go from the score accumulators straight into the A fragments of
// p·v (the C layout of one 16 x 8 score tile pair is the A layout of a 16 x 16 step), with no trip through shared
// memory (fragment layouts in flash_mma.cuh).
// head_dim must be a multiple of 8 and at most D (64 or 128); K, V, Q and P values must stay within f16 range.

#define H_BN 64

template <class KV, int D>
__device__ __forceinline__ void flash_prefill_h16(
    const float* __restrict__ q, const typename KV::storage* __restrict__ key_cache, const typename KV::storage* __restrict__ value_cache,
    float* __restrict__ out, const int* __restrict__ seq_query_start, const int* __restrict__ seq_query_len,
    const int* __restrict__ seq_context, const int* __restrict__ seq_table_offset, const int* __restrict__ tables,
    int heads, int kv_heads, int head_dim, int block_size, float scale, u16* s_k, u16* s_vt)
{
    constexpr int KS = D + 8;                           // K row stride in halves
    constexpr int VS = H_BN + 8;                        // transposed V row stride in halves
    constexpr int DK = D / 16;                          // k-steps of q·k over the head dim
    constexpr int NT = H_BN / 8;                        // n-tiles of a score tile
    constexpr int KK = H_BN / 16;                       // k-steps of p·v over the keys
    constexpr int DN = D / 8;                           // n-tiles of the output
    constexpr int L4 = H_BN * D / 4 / FLASH_THREADS;    // 4-element loads per thread for a full K or V tile

    int group, rows, row0, first_position, q_start, key_end;
    const int* table;
    if (!flash_block(seq_query_start, seq_query_len, seq_context, seq_table_offset, tables, heads, kv_heads, blockIdx.y, blockIdx.x, gridDim.x, 64,
                     group, rows, row0, first_position, q_start, key_end, table))
        return;

    const int kvh = blockIdx.z;
    const long row_width = (long)kv_heads * head_dim;
    const long head_offset = (long)kvh * head_dim;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int g = lane >> 2, t = lane & 3;
    const int d4 = head_dim >> 2;
    const int warp_row0 = row0 + warp * 16;
    const bool warp_active = warp_row0 < rows;

    // Head dims past head_dim are never loaded: zero them once, so that a partly used k-step multiplies zeros.
    for (int i = threadIdx.x; i < H_BN * KS; i += FLASH_THREADS) s_k[i] = 0;
    for (int i = threadIdx.x; i < D * VS; i += FLASH_THREADS) s_vt[i] = 0;

    const float* q_row[2];
    float* out_row[2];
    int position[2];
    flash_rows(q, out, warp_row0, g, rows, group, first_position, q_start, heads, kvh, head_dim, position, q_row, out_row);

    const float scale2 = scale * FLASH_LOG2E;
    unsigned int qf[DK][4];
    flash_load_q<DK, MmaF16>(qf, q_row, head_dim, scale2, t);

    float o[DN][4];
#pragma unroll
    for (int n = 0; n < DN; n++) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.f;
    float m[2] = {NEG_INF, NEG_INF}, l[2] = {0.f, 0.f};

    for (int key0 = 0; key0 < key_end; key0 += H_BN)
    {
        __syncthreads(); // the previous tile (or the zeroing) is done with before it is overwritten
        // K tile: a warp reads one key row (coalesced), stored row-major as f16; keys past key_end are zero.
#pragma unroll
        for (int i = 0; i < L4; i++)
        {
            const int idx = threadIdx.x + i * FLASH_THREADS;
            const int kk = idx / d4, d = (idx - kk * d4) * 4;
            const int p = key0 + kk;
            if (kk < H_BN)
            {
                float4 kv = float4{0.f, 0.f, 0.f, 0.f};
                if (p < key_end)
                {
                    const long slot = (long)table[p / block_size] * block_size + p % block_size;
                    kv = KV::load4(key_cache + slot * row_width + head_offset + d);
                }
                *reinterpret_cast<uint2*>(s_k + kk * KS + d) = make_uint2(MmaF16::pack(kv.x, kv.y), MmaF16::pack(kv.z, kv.w));
            }
        }
        // V tile, transposed: consecutive lanes take consecutive keys of the same four dims, so the 16-bit stores
        // of a warp land in consecutive shared words.
#pragma unroll
        for (int i = 0; i < L4; i++)
        {
            const int idx = threadIdx.x + i * FLASH_THREADS;
            const int kk = idx % H_BN, d = (idx / H_BN) * 4;
            if (d < head_dim)
            {
                const int p = key0 + kk;
                float4 vv = float4{0.f, 0.f, 0.f, 0.f};
                if (p < key_end)
                {
                    const long slot = (long)table[p / block_size] * block_size + p % block_size;
                    vv = KV::load4(value_cache + slot * row_width + head_offset + d);
                }
                s_vt[(d + 0) * VS + kk] = f32_to_f16(vv.x);
                s_vt[(d + 1) * VS + kk] = f32_to_f16(vv.y);
                s_vt[(d + 2) * VS + kk] = f32_to_f16(vv.z);
                s_vt[(d + 3) * VS + kk] = f32_to_f16(vv.w);
            }
        }
        __syncthreads();

        if (warp_active)
        {
            // Scores S[16 x H_BN] = (Q scaled) · Kᵀ.
            float sc[NT][4];
#pragma unroll
            for (int j = 0; j < NT; j++)
            {
                sc[j][0] = sc[j][1] = sc[j][2] = sc[j][3] = 0.f;
                const u16* kr = s_k + (8 * j + g) * KS + 2 * t;
#pragma unroll
                for (int k = 0; k < DK; k++)
                {
                    if (16 * k < head_dim)
                    {
                        const unsigned int b0 = *reinterpret_cast<const unsigned int*>(kr + 16 * k);
                        const unsigned int b1 = *reinterpret_cast<const unsigned int*>(kr + 16 * k + 8);
                        MmaF16::mma(sc[j], qf[k][0], qf[k][1], qf[k][2], qf[k][3], b0, b1);
                    }
                }
            }

            flash_softmax_tile<NT, DN>(sc, m, l, o, position, key0, t);

            // O[16 x D] += P[16 x H_BN] · V[H_BN x D], P straight from the score registers.
#pragma unroll
            for (int kk = 0; kk < KK; kk++)
            {
                unsigned int a0, a1, a2, a3;
                flash_p_fragment<MmaF16>(sc[2 * kk], sc[2 * kk + 1], a0, a1, a2, a3);
#pragma unroll
                for (int n = 0; n < DN; n++)
                {
                    if (8 * n < head_dim)
                    {
                        const u16* vr = s_vt + (8 * n + g) * VS + 16 * kk + 2 * t;
                        const unsigned int b0 = *reinterpret_cast<const unsigned int*>(vr);
                        const unsigned int b1 = *reinterpret_cast<const unsigned int*>(vr + 8);
                        MmaF16::mma(o[n], a0, a1, a2, a3, b0, b1);
                    }
                }
            }
        }
    }

    flash_store_output<DN>(out_row, o, l, head_dim, t);
}

#define FLASH_H16_KERNEL_KV(NAME, KV, STORAGE, D)                                                                     \
    extern "C" __global__ void __launch_bounds__(FLASH_THREADS) NAME(                                                  \
        const float* __restrict__ q, const STORAGE* __restrict__ key_cache, const STORAGE* __restrict__ value_cache,   \
        float* __restrict__ out, const int* __restrict__ seq_query_start, const int* __restrict__ seq_query_len,       \
        const int* __restrict__ seq_context, const int* __restrict__ seq_table_offset, const int* __restrict__ tables, \
        int heads, int kv_heads, int head_dim, int block_size, float scale)                                            \
    {                                                                                                                  \
        __shared__ uint4 s_k[H_BN * (D + 8) / 8]; /* uint4: 16-byte aligned */                                        \
        __shared__ uint4 s_vt[D * (H_BN + 8) / 8];                                                                     \
        launch_gate();                                                                                                 \
        flash_prefill_h16<KV, D>(q, key_cache, value_cache, out, seq_query_start, seq_query_len, seq_context,          \
                                 seq_table_offset, tables, heads, kv_heads, head_dim, block_size, scale,               \
                                 reinterpret_cast<u16*>(s_k), reinterpret_cast<u16*>(s_vt));                           \
    }
// An fp32 cache only: a bf16 cache takes flash_prefill_bf16.cu, which copies its tiles without converting them.
#define FLASH_H16_KERNEL(D) FLASH_H16_KERNEL_KV(flash_prefill_h16_d##D, KvF32, float, D)

FLASH_H16_KERNEL(64)   // 9 + 9 KB of shared memory
FLASH_H16_KERNEL(128)  // 17 + 18 KB
