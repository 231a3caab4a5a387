// Runs sample.cu's sample_rows on host threads (block_emulation.h).
// Usage: sample_rows_main IN OUT THREADS, IN = int rows, int vocab, float logits[rows * vocab], SampleParams[rows];
// OUT = int ids[rows].
#include "block_emulation.h"
#include <cstdio>
#include <cstdlib>
#include "sample.cu"
int main(int argc, char** argv)
{
    FILE* f = fopen(argv[1], "rb");
    int rows, vocab;
    fread(&rows, 4, 1, f); fread(&vocab, 4, 1, f);
    std::vector<float> logits((size_t)rows * vocab);
    fread(logits.data(), 4, logits.size(), f);
    std::vector<SampleParams> params(rows);
    fread(params.data(), sizeof(SampleParams), rows, f);
    fclose(f);
    std::vector<int> ids(rows, -1);
    const int threads = argc > 3 ? atoi(argv[3]) : 1024;
    blockDim = {(unsigned)threads, 1, 1}; gridDim = {(unsigned)rows, 1, 1};
    std::barrier<> block(threads);
    g_block = &block;
    for (int w = 0; w < 32; w++) g_warp[w] = new std::barrier<>(32);

    for (int r = 0; r < rows; r++)
    {
        blockIdx = {(unsigned)r, 0, 0};
        std::vector<std::thread> ts;
        for (int t = 0; t < threads; t++) ts.emplace_back([&, t] { threadIdx = {(unsigned)t, 0, 0}; sample_rows(logits.data(), params.data(), ids.data(), vocab); });
        for (auto& t : ts) t.join();
    }
    f = fopen(argv[2], "wb");
    fwrite(ids.data(), 4, rows, f);
    fclose(f);
}
