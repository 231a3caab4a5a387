// Token choice per logits row on the device (temperature, top-k, min-p, top-p and a draw), so only the chosen ids
// cross to the host instead of [rows, vocab] logits. The semantics are the host sampler's (Sampler.SampleRow) given the
// same uniform draw u:
//   p = softmax(logits / temperature) (float exp of (l - max) * invT, the normaliser in double, p rounded to float);
//   greedy rows (invT == 0) are the argmax of argmax.cu;
//   without a filter (top_k <= 0, top_p >= 1, min_p <= 0) the draw walks the tokens in index order;
//   with one, the tokens are ordered by descending p (ties by ascending index), top-k keeps the first k, min-p those
//   with p >= p_max * min_p, top-p the shortest prefix whose mass (p over the whole vocabulary) reaches top_p, and
//   the draw takes the first kept token whose cumulative mass reaches u * (mass kept).
//
// sample_rows: one block of 1024 threads per row, no sort. The row is read a dozen times (it stays in L2 for moderate
// batches) and p is recomputed from the logit each time. Every kept set above is a prefix of the descending order, so
// each filter and the draw is a select over that order: the first element whose cumulative count (top-k) or mass
// (top-p, draw) reaches a target. A select is a radix select over the bit patterns of p (non-negative floats order
// like their bits): three passes of 11/11/10 bits, each a histogram of the next digit among the elements still
// matching, then the digit where the cumulative amount from the top crosses the target. Equal p (a tie) is resolved
// by index, the j-th tie taken in index order with j from the remaining amount, so ties are never biased.
// Mass is fixed point (units of 2^-56, from the float p) summed with integer atomics: the sums do not depend on the
// order the threads add them, so a row gives the same token on every run.
#include "common.cuh"

typedef unsigned long long u64;

#define SAMPLE_THREADS 1024
#define SAMPLE_BINS 2048
#define MASS_SCALE 72057594037927936.0f  // 2^56: p = 1 is 2^56 units, so a whole row's mass fits 64 bits with room
#define NO_INDEX 0x7fffffff

// Per row, 32 bytes (CudaBackend.SampleRowParams): inv_temperature 0 means greedy.
struct SampleParams
{
    float inv_temperature;
    int top_k;
    double top_p;
    double min_p;
    double u;
};

// A prefix of the order "descending p, then ascending index": element i belongs when key_i > key, or key_i == key and
// i <= last (last NO_INDEX: every element of that key).
struct Prefix
{
    unsigned int key;
    int last;
};

__device__ __forceinline__ bool in_prefix(unsigned int key, int i, Prefix p) { return key > p.key || (key == p.key && i <= p.last); }

// What one pass needs to turn a logit into p: the row maximum, 1/temperature and 1/sum of the exponentials.
struct Softmax
{
    float max;
    float inv_temperature;
    double inv_sum;
};

__device__ __forceinline__ float exp_term(float logit, const Softmax& s)
{
    const float e = expf((logit - s.max) * s.inv_temperature);
    return e == e ? e : 0.f;  // a NaN logit has probability 0
}

// The bit pattern of p, the host's (float)(e / sum) up to the last bit of the double product.
__device__ __forceinline__ unsigned int key_of(float logit, const Softmax& s) { return __float_as_uint((float)((double)exp_term(logit, s) * s.inv_sum)); }

__device__ __forceinline__ u64 mass_of(unsigned int key) { return __float2ull_rz(__uint_as_float(key) * MASS_SCALE); }

__device__ __forceinline__ u64 shfl_up_u64(u64 v, int o)
{
    const unsigned int lo = __shfl_up_sync(0xffffffffu, (unsigned int)v, o);
    const unsigned int hi = __shfl_up_sync(0xffffffffu, (unsigned int)(v >> 32), o);
    return ((u64)hi << 32) | lo;
}

__device__ __forceinline__ u64 shfl_xor_u64(u64 v, int o)
{
    const unsigned int lo = __shfl_xor_sync(0xffffffffu, (unsigned int)v, o);
    const unsigned int hi = __shfl_xor_sync(0xffffffffu, (unsigned int)(v >> 32), o);
    return ((u64)hi << 32) | lo;
}

// Exclusive prefix sum over the block in thread order; total gets the block's sum. All threads must call it.
__device__ u64 block_exclusive_scan(u64 v, u64& total)
{
    __shared__ u64 s_warp[32];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    u64 inclusive = v;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1)
    {
        const u64 other = shfl_up_u64(inclusive, o);
        if (lane >= o) inclusive += other;
    }
    __syncthreads();  // an earlier scan's readers are done with s_warp
    if (lane == 31) s_warp[warp] = inclusive;
    __syncthreads();
    u64 before = 0, sum = 0;
    for (int w = 0; w < warps; w++)
    {
        if (w < warp) before += s_warp[w];
        sum += s_warp[w];
    }
    total = sum;
    return before + inclusive - v;
}

// Double sum over the block in a fixed order (the same on every run); every thread gets it.
__device__ double block_sum_double(double v)
{
    __shared__ double s_partial[32];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __longlong_as_double((long long)shfl_xor_u64((u64)__double_as_longlong(v), o));
    __syncthreads();
    if (lane == 0) s_partial[warp] = v;
    __syncthreads();
    double total = 0;
    for (int w = 0; w < warps; w++) total += s_partial[w];
    return total;
}

__device__ __forceinline__ void take_better(float& best_value, int& best_index, float value, int index)
{
    if (value > best_value || (value == best_value && index < best_index))
    {
        best_value = value;
        best_index = index;
    }
}

// The row's largest value and its lowest index (argmax.cu's rule: NaN never wins); every thread gets both.
__device__ void block_argmax(const float* row, int vocab, float& max_value, int& max_index)
{
    __shared__ float s_value[32];
    __shared__ int s_index[32];
    float best_value = NEG_INF;
    int best_index = NO_INDEX;
    for (int i = threadIdx.x; i < vocab; i += blockDim.x) take_better(best_value, best_index, row[i], i);
#pragma unroll
    for (int o = 16; o > 0; o >>= 1)
    {
        const float other_value = __shfl_xor_sync(0xffffffffu, best_value, o);
        const int other_index = __shfl_xor_sync(0xffffffffu, best_index, o);
        take_better(best_value, best_index, other_value, other_index);
    }
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    __syncthreads();
    if (lane == 0)
    {
        s_value[warp] = best_value;
        s_index[warp] = best_index;
    }
    __syncthreads();
    best_value = NEG_INF;
    best_index = NO_INDEX;
    for (int w = 0; w < warps; w++) take_better(best_value, best_index, s_value[w], s_index[w]);
    max_value = best_value;
    max_index = best_index;
}

// Sum of the mass of the elements of a prefix; every thread gets it.
__device__ u64 prefix_mass(const float* row, int vocab, const Softmax& s, Prefix prefix)
{
    u64 mass = 0;
    for (int i = threadIdx.x; i < vocab; i += blockDim.x)
    {
        const unsigned int key = key_of(row[i], s);
        if (in_prefix(key, i, prefix)) mass += mass_of(key);
    }
    u64 total;
    block_exclusive_scan(mass, total);
    return total;
}

// The index of the j-th (1-based) element in index order whose key is `key` and that belongs to `prefix`: each
// thread counts its own contiguous chunk, a scan finds the chunk holding the j-th, and that thread walks it.
__device__ int nth_tie(const float* row, int vocab, const Softmax& s, Prefix prefix, unsigned int key, u64 j)
{
    __shared__ int s_found;
    const int chunk = (vocab + blockDim.x - 1) / blockDim.x;
    const int start = min((int)threadIdx.x * chunk, vocab), end = min(start + chunk, vocab);
    u64 count = 0;
    for (int i = start; i < end; i++)
    {
        const unsigned int k = key_of(row[i], s);
        count += k == key && in_prefix(k, i, prefix);
    }
    if (threadIdx.x == 0) s_found = NO_INDEX;
    u64 total;
    u64 before = block_exclusive_scan(count, total);  // its barriers also order s_found's reset before the writes
    if (before < j && j <= before + count)
    {
        for (int i = start; i < end; i++)
        {
            const unsigned int k = key_of(row[i], s);
            if (k == key && in_prefix(k, i, prefix) && ++before == j)
            {
                s_found = i;
                break;
            }
        }
    }
    __syncthreads();
    const int found = s_found;
    __syncthreads();
    return found;
}

// Result of a select: the chosen element (key, index), the prefix that ends at it, and the amount (count or mass) up
// to and including it.
struct Selection
{
    unsigned int key;
    int index;
    Prefix through;
    u64 cumulative;
};

// The first element of `prefix`, in the order descending key then ascending index, whose cumulative count (by_mass
// false) or mass (by_mass true) reaches target, 1 <= target <= the prefix's total. need_index: also find the element's
// index (else only `through`, which ends at the same place, is needed).
__device__ Selection radix_select(const float* row, int vocab, const Softmax& s, Prefix prefix, bool by_mass, u64 target, bool need_index)
{
    __shared__ u64 s_hist[SAMPLE_BINS];
    __shared__ int s_first[SAMPLE_BINS / 2];
    __shared__ int s_digit;
    __shared__ u64 s_above;
    unsigned int high = 0, high_mask = 0;
    u64 above = 0;  // amount of the prefix's elements with keys above every key still in play
    for (int level = 0; level < 3; level++)
    {
        const int shift = level == 0 ? 21 : level == 1 ? 10 : 0;
        const int bins = level == 2 ? SAMPLE_BINS / 2 : SAMPLE_BINS;
        const bool last = level == 2;
        for (int b = threadIdx.x; b < bins; b += blockDim.x)
        {
            s_hist[b] = 0;
            if (last) s_first[b] = NO_INDEX;
        }
        if (threadIdx.x == 0) s_digit = -1;
        __syncthreads();
        for (int i = threadIdx.x; i < vocab; i += blockDim.x)
        {
            const unsigned int key = key_of(row[i], s);
            if ((key & high_mask) != high || !in_prefix(key, i, prefix)) continue;
            const int digit = (key >> shift) & (bins - 1);
            atomicAdd(&s_hist[digit], by_mass ? mass_of(key) : 1ull);
            if (last) atomicMin(&s_first[digit], i);
        }
        __syncthreads();

        // Bins from the highest digit down, each thread a run of consecutive ones: a scan gives the amount above each
        // run, and the thread whose run crosses the target finds the digit in it.
        const int per_thread = bins / blockDim.x;
        const int top = bins - 1 - (int)threadIdx.x * per_thread;  // this thread's highest digit
        u64 run = 0;
        for (int q = 0; q < per_thread; q++) run += s_hist[top - q];
        u64 total;
        u64 before = above + block_exclusive_scan(run, total);
        if (before < target && target <= before + run)
        {
            for (int q = 0; q < per_thread; q++)
            {
                const u64 h = s_hist[top - q];
                if (target <= before + h)
                {
                    s_digit = top - q;
                    s_above = before;
                    break;
                }
                before += h;
            }
        }
        __syncthreads();
        int digit = s_digit;
        if (digit < 0)
        {
            // Only when target exceeds the prefix's total, which callers rule out; take the lowest digit present.
            digit = 0;
            while (digit < bins - 1 && s_hist[digit] == 0) digit++;
            u64 higher = 0;
            for (int b = digit + 1; b < bins; b++) higher += s_hist[b];
            s_above = above + higher;  // every thread writes the same value
        }
        __syncthreads();
        above = s_above;
        high |= (unsigned int)digit << shift;
        high_mask |= (unsigned int)(bins - 1) << shift;
        __syncthreads();
    }

    // high is now the chosen key; the ties are the prefix's elements with that key, all of equal mass.
    Selection result;
    result.key = high;
    const int digit = high & (SAMPLE_BINS / 2 - 1);
    const u64 unit = by_mass ? mass_of(high) : 1;
    const u64 tie_amount = s_hist[digit];
    const u64 ties = unit != 0 ? tie_amount / unit : 0;
    u64 j = unit != 0 ? (target - above + unit - 1) / unit : 1;
    if (j < 1) j = 1;
    if (ties != 0 && j > ties) j = ties;
    const int first = s_first[digit];
    __syncthreads();  // everyone has read the histogram before a later select clears it
    result.cumulative = above + j * unit;
    if (j == 1)
    {
        // The first tie in index order is the lowest index with the key, which the last pass kept.
        result.index = first;
        result.through = Prefix{high, first};
    }
    else if (j == ties && !need_index)
    {
        // Every tie of the prefix is in; which index the last one has does not matter.
        result.index = NO_INDEX;
        result.through = Prefix{high, high == prefix.key ? prefix.last : NO_INDEX};
    }
    else
    {
        result.index = nth_tie(row, vocab, s, prefix, high, j);
        result.through = Prefix{high, result.index};
    }
    return result;
}

// logits: [rows, vocab]; params: [rows]; ids: [rows]. grid (rows), blockDim.x SAMPLE_THREADS.
extern "C" __global__ void __launch_bounds__(SAMPLE_THREADS) sample_rows(const float* __restrict__ logits, const SampleParams* __restrict__ params, int* __restrict__ ids, int vocab)
{
    launch_gate();
    const float* row = logits + (long)blockIdx.x * vocab;
    const SampleParams p = params[blockIdx.x];
    float max_value;
    int max_index;
    block_argmax(row, vocab, max_value, max_index);
    if (!(max_value > NEG_INF) || p.inv_temperature == 0.f)
    {
        // Greedy, or nothing above -inf (the host gives 0 then, as the argmax does).
        if (threadIdx.x == 0) ids[blockIdx.x] = max_value > NEG_INF ? max_index : 0;
        return;
    }

    Softmax s;
    s.max = max_value;
    s.inv_temperature = p.inv_temperature;
    s.inv_sum = 1.0;
    double sum = 0;
    for (int i = threadIdx.x; i < vocab; i += blockDim.x) sum += exp_term(row[i], s);
    sum = block_sum_double(sum);
    if (!(sum > 0))
    {
        // Only a +inf logit gets here ((inf - inf) is NaN, every other term 0): the host takes the argmax then too.
        if (threadIdx.x == 0) ids[blockIdx.x] = max_index;
        return;
    }
    s.inv_sum = 1.0 / sum;

    const bool filtered = p.top_k > 0 || p.top_p < 1.0 || p.min_p > 0;
    if (!filtered)
    {
        // The host walks the whole vocabulary in index order: each thread sums its contiguous chunk, a scan places the
        // chunks, and the thread whose chunk reaches r = u * total walks it.
        __shared__ int s_chosen;
        const int chunk = (vocab + blockDim.x - 1) / blockDim.x;
        const int start = min((int)threadIdx.x * chunk, vocab), end = min(start + chunk, vocab);
        u64 mass = 0;
        for (int i = start; i < end; i++) mass += mass_of(key_of(row[i], s));
        if (threadIdx.x == 0) s_chosen = max_index;
        u64 total;
        u64 before = block_exclusive_scan(mass, total);
        u64 r = (u64)ceil(p.u * (double)total);
        r = r < 1 ? 1 : r > total ? total : r;  // a token of probability 0 is never drawn
        if (before < r && r <= before + mass)
        {
            for (int i = start; i < end; i++)
            {
                before += mass_of(key_of(row[i], s));
                if (before >= r)
                {
                    s_chosen = i;
                    break;
                }
            }
        }
        __syncthreads();
        if (threadIdx.x == 0) ids[blockIdx.x] = s_chosen;
        return;
    }

    Prefix kept{0u, NO_INDEX};  // every element (keys are >= +0)
    if (p.top_k > 0 && p.top_k < vocab) kept = radix_select(row, vocab, s, kept, false, (u64)p.top_k, false).through;

    if (p.min_p > 0)
    {
        // p >= p_max * min_p (compared in double) is p >= the smallest float at or above the threshold.
        const float p_max = (float)s.inv_sum;  // the maximum's exponential is exactly 1
        const double threshold = (double)p_max * p.min_p;
        float floor = (float)threshold;
        if ((double)floor < threshold) floor = __uint_as_float(__float_as_uint(floor) + 1);
        const unsigned int floor_key = __float_as_uint(floor);
        if (floor_key > __float_as_uint(p_max))
        {
            kept = radix_select(row, vocab, s, kept, false, 1, false).through;  // min_p above 1: the first alone
        }
        else if (floor_key > kept.key)
        {
            kept = Prefix{floor_key, NO_INDEX};
        }
    }

    u64 total = prefix_mass(row, vocab, s, kept);
    if (p.top_p < 1.0)
    {
        const u64 needed = (u64)ceil(p.top_p * (double)MASS_SCALE);
        if (needed >= 1 && needed <= total)
        {
            const Selection top = radix_select(row, vocab, s, kept, true, needed, false);
            kept = top.through;
            total = top.cumulative;
        }
    }

    u64 r = (u64)ceil(p.u * (double)total);
    r = r < 1 ? 1 : r > total ? total : r;  // a token of probability 0 is never drawn
    const Selection drawn = radix_select(row, vocab, s, kept, true, r, true);
    if (threadIdx.x == 0) ids[blockIdx.x] = drawn.index != NO_INDEX ? drawn.index : max_index;
}
