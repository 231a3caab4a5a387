// Standalone check and timing of the bf16 tensor-core prefill attention kernel (flash_prefill_bf16.cu), built by
// go.sh with nvcc against a copy of the engine's kernel sources. Builds a paged bf16 KV cache (block size 16, the
// physical blocks shuffled), launches the kernel with the grid the engine uses (CudaBackend.FlashPrefill), compares
// with a naive fp32 GPU reference of causal GQA attention (splits > 1: the partials merged here as
// attention_combine merges them) and times it with CUDA events.
#include <cuda_runtime.h>
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "flash_prefill_bf16.cu"

#ifdef FB_ROWS
#define HB_ROWS FB_ROWS // query rows per block
#else
#define HB_ROWS 64
#endif
#ifdef FB_SMEM_BYTES
#define HB_SMEM(D) FB_SMEM_BYTES(D) // dynamic shared memory per block
#else
#define HB_SMEM(D) 0
#endif

#define CK(x)                                                                                  \
    do                                                                                         \
    {                                                                                          \
        cudaError_t e_ = (x);                                                                  \
        if (e_ != cudaSuccess)                                                                 \
        {                                                                                      \
            fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e_)); \
            exit(1);                                                                           \
        }                                                                                      \
    } while (0)

// One block per (query token of the sequence, head): scores in shared memory, then the softmax and the output.
__global__ void reference_attention(const float* q, const u16* kc, const u16* vc, float* out, int q_start, int q_len, int context,
                                    const int* table, int heads, int kv_heads, int head_dim, int block_size, float scale)
{
    extern __shared__ float s[]; // [context] scores, then [head_dim] q
    float* sq = s + context;
    const int i = blockIdx.x, h = blockIdx.y, kvh = h / (heads / kv_heads);
    const int position = context - q_len + i;
    const float* qr = q + ((long)(q_start + i) * heads + h) * head_dim;
    for (int d = threadIdx.x; d < head_dim; d += blockDim.x) sq[d] = qr[d];
    __syncthreads();
    const long row_width = (long)kv_heads * head_dim;
    for (int p = threadIdx.x; p <= position; p += blockDim.x)
    {
        const u16* kr = kc + ((long)table[p / block_size] * block_size + p % block_size) * row_width + (long)kvh * head_dim;
        float acc = 0.f;
        for (int d = 0; d < head_dim; d++) acc += sq[d] * bf16_to_f32(kr[d]);
        s[p] = acc * scale;
    }
    __syncthreads();
    float mx = NEG_INF;
    for (int p = threadIdx.x; p <= position; p += blockDim.x) mx = fmaxf(mx, s[p]);
    mx = block_max(mx);
    float sum = 0.f;
    for (int p = threadIdx.x; p <= position; p += blockDim.x)
    {
        s[p] = expf(s[p] - mx);
        sum += s[p];
    }
    sum = block_sum(sum);
    for (int d = threadIdx.x; d < head_dim; d += blockDim.x)
    {
        float acc = 0.f;
        for (int p = 0; p <= position; p++)
            acc += s[p] * bf16_to_f32(vc[((long)table[p / block_size] * block_size + p % block_size) * row_width + (long)kvh * head_dim + d]);
        out[((long)(q_start + i) * heads + h) * head_dim + d] = acc / sum;
    }
}

static u16 to_bf16(float f)
{
    unsigned int u;
    memcpy(&u, &f, 4);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (u16)(u >> 16);
}

struct Case
{
    std::string name;
    int heads, kv_heads, head_dim, splits;
    std::vector<std::pair<int, int>> seqs; // (query length, context length)
    bool square;                            // one sequence, query length = context: report TFLOP/s
};

static bool run_case(const Case& c, int reps)
{
    std::mt19937 rng(1234);
    std::uniform_real_distribution<float> uq(-2.f, 2.f), ukv(-1.f, 1.f);
    const int S = (int)c.seqs.size(), bs = 16, hd = c.head_dim, group = c.heads / c.kv_heads;
    std::vector<int> q_start(S), q_len(S), ctx(S), toff(S), tables;
    int tokens = 0, blocks = 0, max_q = 0;
    for (int s = 0; s < S; s++)
    {
        q_start[s] = tokens;
        q_len[s] = c.seqs[s].first;
        ctx[s] = c.seqs[s].second;
        tokens += q_len[s];
        max_q = std::max(max_q, q_len[s]);
        toff[s] = (int)tables.size();
        const int nb = (ctx[s] + bs - 1) / bs;
        for (int b = 0; b < nb; b++) tables.push_back(blocks++);
    }
    blocks += 3; // unused blocks mixed in
    std::vector<int> perm(blocks);
    for (int i = 0; i < blocks; i++) perm[i] = i;
    std::shuffle(perm.begin(), perm.end(), rng);
    for (auto& b : tables) b = perm[b];

    const long qn = (long)tokens * c.heads * hd, kvn = (long)blocks * bs * c.kv_heads * hd;
    std::vector<float> hq(qn);
    for (auto& x : hq) x = uq(rng);
    std::vector<u16> hk(kvn), hv(kvn);
    for (auto& x : hk) x = to_bf16(ukv(rng));
    for (auto& x : hv) x = to_bf16(ukv(rng));

    float *dq, *dout, *dref, *dpo = nullptr, *dps = nullptr;
    u16 *dk, *dv;
    int *dqs, *dql, *dctx, *dtoff, *dtab;
    CK(cudaMalloc(&dq, qn * 4));
    CK(cudaMalloc(&dout, qn * 4));
    CK(cudaMalloc(&dref, qn * 4));
    CK(cudaMalloc(&dk, kvn * 2));
    CK(cudaMalloc(&dv, kvn * 2));
    CK(cudaMalloc(&dqs, S * 4));
    CK(cudaMalloc(&dql, S * 4));
    CK(cudaMalloc(&dctx, S * 4));
    CK(cudaMalloc(&dtoff, S * 4));
    CK(cudaMalloc(&dtab, tables.size() * 4));
    const long pn = qn * c.splits;
    if (c.splits > 1)
    {
        CK(cudaMalloc(&dpo, pn * 4));
        CK(cudaMalloc(&dps, (long)tokens * c.heads * c.splits * 2 * 4));
        CK(cudaMemset(dpo, 0xff, pn * 4));
        CK(cudaMemset(dps, 0xff, (long)tokens * c.heads * c.splits * 2 * 4));
    }
    CK(cudaMemcpy(dq, hq.data(), qn * 4, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(dk, hk.data(), kvn * 2, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(dv, hv.data(), kvn * 2, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(dqs, q_start.data(), S * 4, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(dql, q_len.data(), S * 4, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(dctx, ctx.data(), S * 4, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(dtoff, toff.data(), S * 4, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(dtab, tables.data(), tables.size() * 4, cudaMemcpyHostToDevice));
    CK(cudaMemset(dout, 0xff, qn * 4)); // NaN: rows the kernel fails to write show up

    const float scale = 1.f / sqrtf((float)hd);
    int max_ctx = 0;
    for (int s = 0; s < S; s++) max_ctx = std::max(max_ctx, ctx[s]);
    CK(cudaFuncSetAttribute(reference_attention, cudaFuncAttributeMaxDynamicSharedMemorySize, (max_ctx + hd) * 4));
    for (int s = 0; s < S; s++)
        reference_attention<<<dim3(q_len[s], c.heads), 128, (ctx[s] + hd) * 4>>>(dq, dk, dv, dref, q_start[s], q_len[s], ctx[s],
                                                                                  dtab + toff[s], c.heads, c.kv_heads, hd, bs, scale);
    CK(cudaGetLastError());

    void (*kernel)(const float*, const u16*, const u16*, float*, const int*, const int*, const int*, const int*, const int*, int, int,
                   int, int, float, float*, float*, int) = hd <= 64 ? flash_prefill_bf16_d64_kvbf16 : flash_prefill_bf16_d128_kvbf16;
    const int smem = hd <= 64 ? HB_SMEM(64) : HB_SMEM(128);
    if (smem > 0) CK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
    const int row_tiles = (int)(((long)max_q * group + HB_ROWS - 1) / HB_ROWS);
    const dim3 grid(row_tiles * c.splits, S, c.kv_heads);
    auto launch = [&]() {
        kernel<<<grid, FB_THREADS, smem>>>(dq, dk, dv, dout, dqs, dql, dctx, dtoff, dtab, c.heads, c.kv_heads, hd, bs, scale, dpo, dps,
                                           c.splits);
    };
    launch();
    CK(cudaGetLastError());
    CK(cudaDeviceSynchronize());

    std::vector<float> ref(qn), got(qn);
    CK(cudaMemcpy(ref.data(), dref, qn * 4, cudaMemcpyDeviceToHost));
    if (c.splits == 1)
        CK(cudaMemcpy(got.data(), dout, qn * 4, cudaMemcpyDeviceToHost));
    else
    {
        // attention_combine: rows (token * heads + head), partial [row * splits + split], stats (max in natural-log units, sum).
        std::vector<float> po(pn), ps((long)tokens * c.heads * c.splits * 2);
        CK(cudaMemcpy(po.data(), dpo, pn * 4, cudaMemcpyDeviceToHost));
        CK(cudaMemcpy(ps.data(), dps, ps.size() * 4, cudaMemcpyDeviceToHost));
        for (long r = 0; r < (long)tokens * c.heads; r++)
        {
            double mx = -INFINITY;
            for (int sp = 0; sp < c.splits; sp++) mx = std::max(mx, (double)ps[2 * (r * c.splits + sp)]);
            double den = 0;
            std::vector<double> acc(hd, 0.0);
            for (int sp = 0; sp < c.splits; sp++)
            {
                const long part = r * c.splits + sp;
                const double sum = ps[2 * part + 1];
                const double w = sum > 0 ? exp(ps[2 * part] - mx) : 0.0;
                den += w * sum;
                for (int d = 0; d < hd; d++) acc[d] += w * po[part * hd + d];
            }
            for (int d = 0; d < hd; d++) got[r * hd + d] = (float)(acc[d] / den);
        }
    }
    double max_err = 0, max_ref = 0, sq_err = 0, sq_ref = 0;
    long bad = 0;
    for (long i = 0; i < qn; i++)
    {
        const double e = fabs((double)got[i] - ref[i]);
        if (!(e == e)) bad++;
        else max_err = std::max(max_err, e);
        max_ref = std::max(max_ref, (double)fabs(ref[i]));
        sq_err += e * e;
        sq_ref += (double)ref[i] * ref[i];
    }
    const double rel = max_err / max_ref, rel2 = sqrt(sq_err / sq_ref);
    const bool ok = bad == 0 && rel < 2e-2;

    cudaEvent_t e0, e1;
    CK(cudaEventCreate(&e0));
    CK(cudaEventCreate(&e1));
    for (int i = 0; i < 3; i++) launch();
    CK(cudaEventRecord(e0));
    for (int i = 0; i < reps; i++) launch();
    CK(cudaEventRecord(e1));
    CK(cudaEventSynchronize(e1));
    float ms;
    CK(cudaEventElapsedTime(&ms, e0, e1));
    const double us = ms * 1000.0 / reps;
    double flops = 0; // causal: 4 * head_dim per visible (query row, key) pair
    for (int s = 0; s < S; s++)
        for (int i = 0; i < q_len[s]; i++) flops += 4.0 * hd * c.heads * (ctx[s] - q_len[s] + i + 1);
    if (c.square) flops = 4.0 * q_len[0] * (double)q_len[0] / 2 * hd * c.heads; // the usual S^2/2 count
    printf("%-22s grid %5dx%dx%d  %9.1f us  %7.1f TFLOP/s  max|err|/max|ref| %.2e  rms rel %.2e  nan %ld  %s\n", c.name.c_str(),
           grid.x, grid.y, grid.z, us, flops / us * 1e-6, rel, rel2, bad, ok ? "ok" : "FAIL");
    fflush(stdout);
    cudaFree(dq); cudaFree(dout); cudaFree(dref); cudaFree(dk); cudaFree(dv); cudaFree(dqs); cudaFree(dql); cudaFree(dctx);
    cudaFree(dtoff); cudaFree(dtab);
    if (dpo) cudaFree(dpo);
    if (dps) cudaFree(dps);
    return ok;
}

int main(int argc, char** argv)
{
    const int reps = argc > 1 ? atoi(argv[1]) : 20;
    std::vector<Case> cases = {
        {"7B T512", 28, 4, 128, 1, {{512, 512}}, true},
        {"7B T2048", 28, 4, 128, 1, {{2048, 2048}}, true},
        {"7B T8192", 28, 4, 128, 1, {{8192, 8192}}, true},
        {"d64 14/2 T2048", 14, 2, 64, 1, {{2048, 2048}}, true},
        {"7B chunk 1000@1500", 28, 4, 128, 1, {{1000, 1500}}, false},
        {"7B seqs 300+700@900", 28, 4, 128, 1, {{300, 300}, {700, 900}}, false},
        {"7B dec q4@1024 s4", 28, 4, 128, 4, {{4, 1024}}, false},
        {"7B dec q4@1024 s1", 28, 4, 128, 1, {{4, 1024}}, false},
        {"7B dec 8x1 s4", 28, 4, 128, 4, {{1, 700}, {1, 750}, {1, 800}, {1, 850}, {1, 900}, {1, 1000}, {1, 1100}, {1, 64}}, false},
        {"7B dec 8x1 s16", 28, 4, 128, 16, {{1, 700}, {1, 750}, {1, 800}, {1, 850}, {1, 900}, {1, 1000}, {1, 1100}, {1, 64}}, false},
        {"d64 dec q2@1000 s4", 14, 2, 64, 4, {{2, 1000}}, false},
        {"d96in128 T700", 12, 4, 96, 1, {{700, 700}}, false},
    };
    int failures = 0;
    for (const auto& c : cases) failures += run_case(c, reps) ? 0 : 1;
    printf("%d failures\n", failures);
    return failures ? 1 : 0;
}
