// A DeepSeekMoE layer's routed experts for one step, routing included, with no host decision in between (so a decode
// step that runs it can be recorded as a CUDA graph). T tokens, E experts, K picks a token, P = T * K picks, H hidden,
// I the experts' intermediate size. Kernels in launch order:
//
//   moe_route       logits [T, E] (+ bias [E]) -> ids [P], weights [P]: MoeRouter's choice, one warp a token
//   moe_sort        ids -> the picks grouped by expert: offsets [E + 1], active experts [E] and their count,
//                   sorted [P] (pick indices, ascending within an expert), position [P] (a pick's sorted slot)
//   moe_gather      x [T, H] -> xs [P, H], row i = x[sorted[i] / K]
//   moe_gate_up_*   xs -> hs [P, I] = silu(xs · gate_eᵀ) * (xs · up_eᵀ), the expert e of each row's pick
//   moe_down_*      hs -> ys [P, H] = hs · down_eᵀ
//   moe_combine     output[t] += Σ_k weights[t, k] · ys[position[t * K + k]], in order of k
//
// The products are grouped per expert: a block of moe_gate_up / moe_down owns a slice of one active expert's weight
// rows (grid y: the active experts, in expert order) and streams those rows once for up to 8 of the expert's picks at
// a time (gemv_dot, the decode GEMV's inner loop), so a decode batch whose tokens share an expert reads its weights
// once, not once a token. Blocks whose slot has no active expert leave at once. Weights are stacked per layer:
// gate_up [E * 2I, H] (expert e's I gate rows, then its I up rows), down [E * H, I].
#include "gemv.cuh"

#define MOE_MAX_PER_LANE 16 // experts a lane holds in moe_route: up to 512 experts
#define MOE_MAX_TOKENS_A_PASS 8

// The better of two (choice, expert) candidates: the larger choice, the lower expert on ties; expert < 0 is none.
__device__ __forceinline__ bool moe_better(float v, int e, float best_v, int best_e)
{
    return e >= 0 && (best_e < 0 || v > best_v || (v == best_v && e < best_e));
}

// The warp's best candidate (every lane gets it), carrying the candidate's score along.
__device__ __forceinline__ void moe_warp_best(float& v, int& e, float& s)
{
#pragma unroll
    for (int o = 16; o > 0; o >>= 1)
    {
        const float ov = __shfl_xor_sync(0xffffffffu, v, o);
        const int oe = __shfl_xor_sync(0xffffffffu, e, o);
        const float os = __shfl_xor_sync(0xffffffffu, s, o);
        if (moe_better(ov, oe, v, e))
        {
            v = ov;
            e = oe;
            s = os;
        }
    }
}

// One warp a token (blockDim.x = 128: four tokens a block). Lane l holds experts l * per .. l * per + per - 1, so a
// group of consecutive experts spans consecutive lanes. As MoeRouter.Route: scores (sigmoid, or softmax over the
// row), choice = score + bias; with groups, each group's score is its best choice (or the sum of its best two), the
// top_k_groups best groups are kept and the other groups' experts can never be chosen; then top_k experts by choice,
// ties to the lower index; weight = score (/ the picks' score sum + 1e-20 when normalising) * scaling.
extern "C" __global__ void __launch_bounds__(128) moe_route(const float* __restrict__ logits, const float* __restrict__ bias, int tokens, int experts,
                                                            int top_k, int groups, int top_k_groups, int softmax, int top_two_sum, int normalize,
                                                            float scaling, int* __restrict__ ids, float* __restrict__ weights)
{
    launch_gate();
    const int lane = threadIdx.x & 31;
    const int t = (int)(((long)blockIdx.x * blockDim.x + threadIdx.x) >> 5);
    if (t >= tokens) return;
    const int per = (experts + 31) / 32;
    const float* row = logits + (long)t * experts;

    float score[MOE_MAX_PER_LANE], choice[MOE_MAX_PER_LANE];
    float local_max = NEG_INF;
#pragma unroll
    for (int i = 0; i < MOE_MAX_PER_LANE; i++)
    {
        const int e = lane * per + i;
        score[i] = i < per && e < experts ? row[e] : NEG_INF;
        local_max = fmaxf(local_max, score[i]);
    }

    if (softmax)
    {
        const float m = warp_max(local_max);
        float sum = 0.f;
#pragma unroll
        for (int i = 0; i < MOE_MAX_PER_LANE; i++)
        {
            score[i] = i < per && lane * per + i < experts ? expf(score[i] - m) : 0.f;
            sum += score[i];
        }
        const float inv = 1.0f / warp_sum(sum);
#pragma unroll
        for (int i = 0; i < MOE_MAX_PER_LANE; i++) score[i] *= inv;
    }
    else
    {
#pragma unroll
        for (int i = 0; i < MOE_MAX_PER_LANE; i++) score[i] = 1.0f / (1.0f + expf(-score[i]));
    }

#pragma unroll
    for (int i = 0; i < MOE_MAX_PER_LANE; i++)
    {
        const int e = lane * per + i;
        choice[i] = i < per && e < experts ? score[i] + (bias != nullptr ? bias[e] : 0.f) : NEG_INF;
    }

    if (groups > 1)
    {
        // Lane g ends holding group g's score (groups <= 32).
        const int per_group = experts / groups;
        float group_score = NEG_INF;
        for (int g = 0; g < groups; g++)
        {
            float best = NEG_INF, second = NEG_INF;
#pragma unroll
            for (int i = 0; i < MOE_MAX_PER_LANE; i++)
            {
                const int e = lane * per + i;
                if (i < per && e < experts && e / per_group == g)
                {
                    const float v = choice[i];
                    second = fmaxf(second, fminf(best, v));
                    best = fmaxf(best, v);
                }
            }
#pragma unroll
            for (int o = 16; o > 0; o >>= 1)
            {
                const float ob = __shfl_xor_sync(0xffffffffu, best, o);
                const float os = __shfl_xor_sync(0xffffffffu, second, o);
                second = fmaxf(fmaxf(second, os), fminf(best, ob));
                best = fmaxf(best, ob);
            }
            if (lane == g) group_score = top_two_sum && per_group >= 2 ? best + second : best;
        }

        // The top_k_groups best groups, ties to the lower group.
        bool kept = false;
        for (int k = 0; k < top_k_groups; k++)
        {
            float v = kept || lane >= groups ? NEG_INF : group_score;
            int g = kept || lane >= groups ? -1 : lane;
            float unused = 0.f;
            moe_warp_best(v, g, unused);
            if (lane == g) kept = true;
        }

#pragma unroll
        for (int i = 0; i < MOE_MAX_PER_LANE; i++)
        {
            const int e = min(lane * per + i, experts - 1);
            const bool keep = __shfl_sync(0xffffffffu, kept ? 1 : 0, e / per_group) != 0;
            if (!keep) choice[i] = NEG_INF;
        }
    }

    // top_k rounds of the warp's best untaken expert; lane k keeps pick k.
    unsigned int taken = 0;
    int my_id = 0;
    float my_score = 0.f, total = 0.f;
    for (int k = 0; k < top_k; k++)
    {
        float v = NEG_INF, s = 0.f;
        int e = -1;
#pragma unroll
        for (int i = 0; i < MOE_MAX_PER_LANE; i++)
        {
            const int ei = lane * per + i;
            if (i < per && ei < experts && !(taken & (1u << i)) && moe_better(choice[i], ei, v, e))
            {
                v = choice[i];
                e = ei;
                s = score[i];
            }
        }
        moe_warp_best(v, e, s);
        if (e >= 0 && e / per == lane) taken |= 1u << (e - lane * per);
        if (lane == k)
        {
            my_id = e;
            my_score = s;
        }
        total += s;
    }

    if (lane < top_k)
    {
        const float w = normalize ? my_score / (total + 1e-20f) : my_score;
        ids[(long)t * top_k + lane] = my_id;
        weights[(long)t * top_k + lane] = w * scaling;
    }
}

// One block of 256 threads: the picks grouped by expert, stable (ascending pick index within an expert). Shared
// memory: the picks' expert ids [picks] and a count per expert [experts].
extern "C" __global__ void __launch_bounds__(256) moe_sort(const int* __restrict__ ids, int picks, int experts, int* __restrict__ offsets,
                                                           int* __restrict__ active, int* __restrict__ active_count, int* __restrict__ sorted,
                                                           int* __restrict__ position)
{
    launch_gate();
    ENCLAVE_DYNAMIC_SHARED(int, moe_shared);
    int* pick_expert = moe_shared;       // [picks]
    int* count = moe_shared + picks;     // [experts], then the exclusive offsets
    int* nonempty = count + experts;     // [experts], then the exclusive ranks among active experts
    for (int p = threadIdx.x; p < picks; p += blockDim.x) pick_expert[p] = ids[p];
    __syncthreads();
    for (int e = threadIdx.x; e < experts; e += blockDim.x)
    {
        int c = 0;
        for (int p = 0; p < picks; p++) c += pick_expert[p] == e;
        count[e] = c;
        nonempty[e] = c > 0;
    }
    __syncthreads();

    // Exclusive scans of count and nonempty over the experts by the first warp, each lane owning a run of experts.
    if (threadIdx.x < 32)
    {
        const int lane = threadIdx.x, per = (experts + 31) / 32, first = min(lane * per, experts), last = min(first + per, experts);
        int c = 0, n = 0;
        for (int e = first; e < last; e++)
        {
            c += count[e];
            n += nonempty[e];
        }
        int c_incl = c, n_incl = n;
#pragma unroll
        for (int o = 1; o < 32; o <<= 1)
        {
            const int oc = __shfl_up_sync(0xffffffffu, c_incl, o), on = __shfl_up_sync(0xffffffffu, n_incl, o);
            if (lane >= o)
            {
                c_incl += oc;
                n_incl += on;
            }
        }
        int c_run = c_incl - c, n_run = n_incl - n;
        for (int e = first; e < last; e++)
        {
            const int ce = count[e], ne = nonempty[e];
            count[e] = c_run;
            offsets[e] = c_run;
            if (ne) active[n_run] = e;
            c_run += ce;
            n_run += ne;
        }
        if (lane == 31)
        {
            offsets[experts] = c_incl;
            *active_count = n_incl;
        }
    }
    __syncthreads();

    for (int e = threadIdx.x; e < experts; e += blockDim.x)
    {
        int slot = count[e];
        for (int p = 0; p < picks; p++)
        {
            if (pick_expert[p] == e)
            {
                sorted[slot] = p;
                position[p] = slot;
                slot++;
            }
        }
    }
}

// xs[i, :] = x[sorted[i] / top_k, :]. grid (x: column chunks, y: picks).
extern "C" __global__ void moe_gather(const float* __restrict__ x, const int* __restrict__ sorted, int top_k, int n, float* __restrict__ xs)
{
    launch_gate();
    const long i = blockIdx.y;
    const long src = (long)(sorted[i] / top_k) * n;
    for (int c = blockIdx.x * blockDim.x + threadIdx.x; c < n; c += gridDim.x * blockDim.x) xs[i * n + c] = x[src + c];
}

// The active expert of this block's slot (grid y) and its picks' sorted range; false when the slot has none.
__device__ __forceinline__ bool moe_slot(const int* offsets, const int* active, const int* active_count, int& expert, int& first, int& count)
{
    if ((int)blockIdx.y >= *active_count) return false;
    expert = active[blockIdx.y];
    first = offsets[expert];
    count = offsets[expert + 1] - first;
    return true;
}

// acc[r][t] for the R weight rows wr over rows 0 .. n - 1 (n <= 8) of x, with n a run-time count.
template <class W, int R>
__device__ __forceinline__ void moe_dot(const float* x, const typename W::storage* const (&wr)[R], int in, int vec, int n, float (&acc)[R][MOE_MAX_TOKENS_A_PASS])
{
#define MOE_DOT_CASE(N) \
    case N: \
    { \
        float a[R][N]; \
        gemv_dot<W, N, R>(x, wr, in, vec, a); \
        _Pragma("unroll") for (int r = 0; r < R; r++) _Pragma("unroll") for (int t = 0; t < N; t++) acc[r][t] = a[r][t]; \
        break; \
    }
    switch (n)
    {
        MOE_DOT_CASE(1) MOE_DOT_CASE(2) MOE_DOT_CASE(3) MOE_DOT_CASE(4) MOE_DOT_CASE(5) MOE_DOT_CASE(6) MOE_DOT_CASE(7) MOE_DOT_CASE(8)
    }
#undef MOE_DOT_CASE
}

// hs[i, j] = silu(xs[i] · gate_e[j]) * (xs[i] · up_e[j]) for the picks i of this block's expert e: one warp an
// intermediate row j (its gate row and its up row), blocks of 8 warps. grid (x: ceil(I / 8), y: min(E, P) slots).
template <class W>
__device__ void moe_gate_up(const float* __restrict__ xs, const typename W::storage* __restrict__ gate_up, const int* __restrict__ offsets,
                            const int* __restrict__ active, const int* __restrict__ active_count, int hidden, int inter, int vec, float* __restrict__ hs)
{
    launch_gate();
    int expert, first, count;
    if (!moe_slot(offsets, active, active_count, expert, first, count)) return;
    const int j = (int)(((long)blockIdx.x * blockDim.x + threadIdx.x) >> 5);
    if (j >= inter) return;
    const typename W::storage* wr[2] = {gate_up + ((long)expert * 2 * inter + j) * hidden, gate_up + ((long)expert * 2 * inter + inter + j) * hidden};
    for (int c = 0; c < count; c += MOE_MAX_TOKENS_A_PASS)
    {
        const int n = min(MOE_MAX_TOKENS_A_PASS, count - c);
        float acc[2][MOE_MAX_TOKENS_A_PASS];
        moe_dot<W, 2>(xs + (long)(first + c) * hidden, wr, hidden, vec, n, acc);
        if ((threadIdx.x & 31) == 0)
#pragma unroll
            for (int t = 0; t < MOE_MAX_TOKENS_A_PASS; t++)
                if (t < n) hs[(long)(first + c + t) * inter + j] = silu_times(acc[0][t], acc[1][t]);
    }
}

// ys[i, row] = hs[i] · down_e[row] for the picks i of this block's expert e: one warp W::warp_rows rows, blocks of
// 8 warps. grid (x: ceil(H / (8 * W::warp_rows)), y: min(E, P) slots).
template <class W>
__device__ void moe_down(const float* __restrict__ hs, const typename W::storage* __restrict__ down, const int* __restrict__ offsets,
                         const int* __restrict__ active, const int* __restrict__ active_count, int hidden, int inter, int vec, float* __restrict__ ys)
{
    constexpr int R = W::warp_rows;
    launch_gate();
    int expert, first, count;
    if (!moe_slot(offsets, active, active_count, expert, first, count)) return;
    const int row0 = (int)(((long)blockIdx.x * blockDim.x + threadIdx.x) >> 5) * R;
    if (row0 >= hidden) return;
    const typename W::storage* wr[R];
#pragma unroll
    for (int r = 0; r < R; r++) wr[r] = down + ((long)expert * hidden + min(row0 + r, hidden - 1)) * inter;
    for (int c = 0; c < count; c += MOE_MAX_TOKENS_A_PASS)
    {
        const int n = min(MOE_MAX_TOKENS_A_PASS, count - c);
        float acc[R][MOE_MAX_TOKENS_A_PASS];
        moe_dot<W, R>(hs + (long)(first + c) * inter, wr, inter, vec, n, acc);
        if ((threadIdx.x & 31) == 0)
#pragma unroll
            for (int r = 0; r < R; r++)
                if (row0 + r < hidden)
#pragma unroll
                    for (int t = 0; t < MOE_MAX_TOKENS_A_PASS; t++)
                        if (t < n) ys[(long)(first + c + t) * hidden + row0 + r] = acc[r][t];
    }
}

#define MOE_PRODUCTS(S, W) \
    extern "C" __global__ void __launch_bounds__(256) moe_gate_up_##S(const float* xs, const W::storage* gate_up, const int* offsets, const int* active, \
        const int* active_count, int hidden, int inter, int vec, float* hs) \
    { moe_gate_up<W>(xs, gate_up, offsets, active, active_count, hidden, inter, vec, hs); } \
    extern "C" __global__ void __launch_bounds__(256) moe_down_##S(const float* hs, const W::storage* down, const int* offsets, const int* active, \
        const int* active_count, int hidden, int inter, int vec, float* ys) \
    { moe_down<W>(hs, down, offsets, active, active_count, hidden, inter, vec, ys); }
ENCLAVE_FOR_WEIGHT_TYPES(MOE_PRODUCTS)

// output[t, c] += Σ_k weights[t * K + k] · ys[position[t * K + k], c], k in order. grid (x: column chunks, y: tokens).
extern "C" __global__ void moe_combine(const float* __restrict__ ys, const int* __restrict__ position, const float* __restrict__ weights, int top_k, int n,
                                       float* __restrict__ output)
{
    launch_gate();
    const long t = blockIdx.y;
    for (int c = blockIdx.x * blockDim.x + threadIdx.x; c < n; c += gridDim.x * blockDim.x)
    {
        float acc = output[t * n + c];
        for (int k = 0; k < top_k; k++) acc += weights[t * top_k + k] * ys[(long)position[t * top_k + k] * n + c];
        output[t * n + c] = acc;
    }
}
