/* test_embed_sorted_host: the sorted embedding backward of the CUDA
 * backend (lib/nn/cuda/embed_sorted.cuh: the key layout, k_embed_keys,
 * k_embed_bwd_sorted) compiled for the host and run there, so that its key
 * packing, the bit range handed to CUB's radix sort and the chunked walk
 * over a token's rows are checked on machines without a GPU (CI's). The
 * same source as on the device; only the CUDA built-ins are stand-ins
 * (tests/gpu/host_cuda.h): each block's threads (128, 256) are fibers
 * (ucontext) of one thread, one block at a time, every thread runs to the
 * barrier before any passes it, __syncthreads_count adds the block's
 * predicates between two barriers. CUB's sort is std::sort of the
 * keys (they are unique, so every correct sort gives the same order); the
 * test checks that every key lies below bit rbits + 31, the end_bit
 * embedding.cu hands to CUB, so sorting on those bits is sorting the keys.
 *
 * Each case (hot tokens whose rows fill 1, 2 or 3 chunks of 128, exactly
 * 128 and 256 rows, one row, channels not a multiple of 128, fewer blocks
 * than rows) compares dwte with cpu.c's embed_bwd, which adds the rows in
 * row order: the same bits. What it cannot check: CUB itself, timing,
 * memory faults; tests/gpu/test_cuda_parity does on a GPU. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <ucontext.h>

#include <algorithm>
#include <functional>
#include <vector>

/* ------------------------------------------------------------ CUDA stand-ins */

#include "host_cuda.h"

#include "nn/cuda/embed_sorted.cuh"

/* ------------------------------------------------------------ checks */

#include "host_check.h"

static void check(int ok, const char *what)
{
    verdict(ok, "embed", what, "%s", "");
}

static unsigned long long rng_state = 0x9E3779B97F4A7C15ull;
static unsigned next_u32(void)
{
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return (unsigned)(rng_state >> 33);
}
static float next_float(void)
{
    return (float)((int)(next_u32() % 2001) - 1000) / 997.0f;
}

/* keys of ids through k_embed_keys on a grid of `blocks` x 256 threads */
static std::vector<unsigned long long> make_keys(const std::vector<int> &ids, int rbits,
                                                 unsigned blocks)
{
    const int N = (int)ids.size();
    std::vector<unsigned long long> keys((size_t)N, ~0ull);
    launch(dim3(blocks), 256, 0, [&] { k_embed_keys(keys.data(), ids.data(), N, rbits); });
    return keys;
}

static void test_key_bits(void)
{
    /* 2^rbits >= N (every row fits), and the least such (>= 1) */
    const int Ns[] = {1, 2, 3, 4, 5, 127, 128, 129, 32768, 32769, 1 << 30, (1 << 30) + 1, INT_MAX};
    for (int N : Ns) {
        const int r = kn_embed_rbits(N);
        char what[96];
        snprintf(what, sizeof(what), "rbits(%d) = %d: rows fit, least, <= 31", N, r);
        check(r >= 1 && r <= 31 && (1ll << r) >= N && (r == 1 || (1ll << (r - 1)) < N), what);
    }
    /* the largest ids and rows: the key keeps both and stays below end_bit */
    const int rbits = kn_embed_rbits(INT_MAX), end_bit = rbits + 31;
    std::vector<int> ids = {INT_MAX, 0, INT_MAX - 1, 1};
    std::vector<unsigned long long> keys = make_keys(ids, rbits, 1);
    for (size_t n = 0; n < ids.size(); n++) {
        check(keys[n] >> end_bit == 0, "key below end_bit (largest id)");
        check((keys[n] >> rbits) == (unsigned long long)ids[n], "token decoded");
        check((keys[n] & ((1ull << rbits) - 1)) == n, "row decoded");
    }
}

struct embed_case {
    const char *name;
    int N, C, V;
    unsigned gx;       /* blocks along the rows (embedding.cu: min(N, 4096)) */
    int hot, hot_rows; /* token `hot` gets hot_rows of the rows (spread), -1: none */
};

static void run_case(const embed_case &k)
{
    const int N = k.N, C = k.C, V = k.V;
    std::vector<int> ids((size_t)N);
    for (int n = 0; n < N; n++)
        ids[n] = (int)(next_u32() % (unsigned)V);
    if (k.hot >= 0) { /* hot_rows rows spread over the batch, the others not that token */
        for (int n = 0; n < N; n++)
            if (ids[n] == k.hot) ids[n] = (k.hot + 1) % V;
        for (int h = 0; h < k.hot_rows; h++)
            ids[(size_t)h * N / k.hot_rows] = k.hot;
    }
    std::vector<float> dout((size_t)N * C), dwte((size_t)V * C);
    for (float &x : dout)
        x = next_float();
    for (float &x : dwte)
        x = next_float();
    std::vector<float> ref = dwte; /* cpu.c's embed_bwd: rows in row order */
    for (int n = 0; n < N; n++)
        for (int c = 0; c < C; c++)
            ref[(size_t)ids[n] * C + c] += dout[(size_t)n * C + c];

    const int rbits = kn_embed_rbits(N), end_bit = rbits + 31;
    std::vector<unsigned long long> keys = make_keys(ids, rbits, 3);
    int below = 1;
    for (unsigned long long key : keys)
        below &= key >> end_bit == 0;
    char what[160];
    snprintf(what, sizeof(what), "%s: every key below end_bit %d", k.name, end_bit);
    check(below, what);
    std::sort(keys.begin(), keys.end()); /* CUB's SortKeys over bits [0, end_bit) */
    snprintf(what, sizeof(what), "%s: keys unique", k.name);
    check(std::adjacent_find(keys.begin(), keys.end()) == keys.end(), what);

    const dim3 grid(k.gx, (unsigned)((C + EMB_THREADS - 1) / EMB_THREADS));
    launch(grid, EMB_THREADS, 0,
           [&] { k_embed_bwd_sorted(dwte.data(), dout.data(), keys.data(), N, C, rbits); });
    snprintf(what, sizeof(what), "%s (N %d, C %d, V %d, %u x %u blocks): dwte bit for bit", k.name,
             N, C, V, grid.x, grid.y);
    check(memcmp(dwte.data(), ref.data(), dwte.size() * sizeof(float)) == 0, what);
}

int main(void)
{
    test_key_bits();
    const embed_case cases[] = {
        {"one row", 1, 5, 3, 1, -1, 0},
        {"random tokens", 700, 130, 50, 700, -1, 0},
        {"hot token, 3 chunks", 700, 130, 50, 64, 7, 300},
        {"hot token, exactly 128 rows", 400, 64, 20, 400, 3, 128},
        {"hot token, exactly 256 rows", 400, 129, 20, 17, 0, 256},
        {"one token only", 300, 33, 1, 5, 0, 300},
        {"fewer blocks than rows", 1000, 256, 900, 7, -1, 0},
    };
    for (const embed_case &k : cases)
        run_case(k);
    return check_summary("test_embed_sorted_host");
}
