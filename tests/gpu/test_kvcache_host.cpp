/* test_kvcache_host: the CUDA backend's KV-cache attention kernel
 * (lib/nn/cuda/kvcache.cuh: k_kv_attention, launched by kvcache.cu as NH
 * blocks of KV_THREADS, a warp per key row, the block's max and sum
 * through shared memory) compiled for the host with tests/gpu/host_cuda.h's
 * stand-ins (a block's threads as fibers, warps in ascending and descending
 * order, shared memory NaN-poisoned before each block) and run there
 * against the CPU backend's kv_attention (cpu.c, the last row of its
 * causal attention): the output and the attention weights (both
 * NaN-poisoned first) by test_cuda_parity's per-element tolerance for sums
 * (1e-4 |cpu| + 1e-6 max(1, max |cpu|)); the query is the first C floats
 * of a qkv row, as kn_model_generate passes it.
 *
 * Positions: the first token (p = 0, one key), fewer keys than warps,
 * more keys than threads (the loops wrap), GPT-2's twelve heads of 64;
 * head sizes under a warp (16) and over it (64, 96).
 *
 * What it cannot check: the device's expf, timing. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include <vector>

extern "C" {
#include "nn/backend.h"
}

#include "host_cuda.h"
#include "nn/cuda/reduce.cuh"

/* in a namespace: kiln_nn (linked for the CPU backend) has the device
 * build's host stubs of the same kernels */
namespace dev
{
#include "nn/cuda/kvcache.cuh"
}
using namespace dev;

#include "host_check.h"

static const double TOL = 1e-4; /* test_cuda_parity's R_SUM */

static void run(int C, int NH, int p, float qscale)
{
    const int hs = C / NH;
    char shape[80];
    snprintf(shape, sizeof shape, "C%d NH%d hs%d p%d q*%g%s", C, NH, hs, p, qscale,
             reverse_order ? " rev" : "");
    std::vector<float> qkv((size_t)3 * C), K((size_t)(p + 1) * C), V((size_t)(p + 1) * C);
    for (auto &f : qkv)
        f = qscale * frand();
    for (auto &f : K)
        f = frand();
    for (auto &f : V)
        f = frand();
    const size_t na = (size_t)NH * (p + 1);
    std::vector<float> out((size_t)C, NAN), att(na, NAN), kout((size_t)C, NAN), katt(na, NAN);
    kn_backend_cpu()->kv_attention(out.data(), att.data(), qkv.data(), K.data(), V.data(), p, C,
                                   NH);
    float *po = kout.data(), *pa = katt.data();
    const float *pq = qkv.data(), *pk = K.data(), *pv = V.data();
    const float scale = 1.0f / sqrtf((float)hs); /* kvcache.cu's */
    launch(dim3((unsigned)NH), dim3(KV_THREADS), 0,
           [&] { k_kv_attention(po, pa, pq, pk, pv, p, C, hs, scale); });
    check_elem("att", shape, pa, att.data(), na, TOL);
    check_elem("out", shape, po, out.data(), (size_t)C, TOL);
}

int main(void)
{
    for (int rev = 0; rev < 2; rev++) {
        reverse_order = rev;
        run(64, 4, 0, 1.0f);   /* the first token: one key, weight 1 */
        run(64, 4, 5, 1.0f);   /* fewer keys than warps */
        run(64, 4, 300, 4.0f); /* more keys than threads; peaked scores */
        run(96, 1, 40, 1.0f);  /* hs 96: three values a lane */
    }
    reverse_order = 0;
    run(768, 12, 400, 2.0f); /* GPT-2's twelve heads of 64 */
    return check_summary("test_kvcache_host");
}
