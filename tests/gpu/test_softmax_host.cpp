/* test_softmax_host: the softmax kernels of the CUDA backend's unfused
 * attention (lib/nn/cuda/attention.cuh, launched by attention.cu)
 * compiled for the host with tests/gpu/host_cuda.h's stand-ins (a block's
 * threads as fibers, warps run in ascending and descending order, the
 * shuffles through the warp barrier) and run there: the register versions
 * k_softmax_fwd_reg / k_softmax_bwd_reg for each N attention.cu
 * instantiates (T from 1 to 1024) and the looping k_softmax_fwd /
 * k_softmax_bwd (the device runs them for T > 1024; here at small T, for
 * time), launched as attention.cu does (a warp a row, 8 rows a block of
 * 256). Compared by norm with the CPU backend's attention (cpu.c): the
 * forward on the CPU's scaled scores with the masked (future) entries
 * replaced by garbage (att must be the CPU's within 1e-5, preatt exactly
 * the CPU's, masked entries 0), the backward adding to a random dpreatt
 * (backend.h's +=) from the datt the CPU accumulated, within 1e-5; causal
 * and full, T not a multiple of 32, rows of several images and heads.
 * What it cannot check: the device's expf (here the host's libm: the
 * tolerance covers a few ulps), timing. */
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
#include "nn/cuda/attention.cuh"
}
using namespace dev;

/* ------------------------------------------------------------ launching, as attention.cu */

static int force_loop; /* run the looping kernels whatever T is */

static void softmax_fwd(float *att, float *preatt, int rows, int T, int causal)
{
    const dim3 g((unsigned)((rows + 7) / 8)), b(256);
    const int n = (T + 31) / 32;
    if (force_loop || n > 32)
        launch(g, b, 0, [&] { k_softmax_fwd(att, preatt, rows, T, causal); });
    else if (n <= 1)
        launch(g, b, 0, [&] { k_softmax_fwd_reg<1>(att, preatt, rows, T, causal); });
    else if (n <= 2)
        launch(g, b, 0, [&] { k_softmax_fwd_reg<2>(att, preatt, rows, T, causal); });
    else if (n <= 4)
        launch(g, b, 0, [&] { k_softmax_fwd_reg<4>(att, preatt, rows, T, causal); });
    else if (n <= 8)
        launch(g, b, 0, [&] { k_softmax_fwd_reg<8>(att, preatt, rows, T, causal); });
    else if (n <= 16)
        launch(g, b, 0, [&] { k_softmax_fwd_reg<16>(att, preatt, rows, T, causal); });
    else
        launch(g, b, 0, [&] { k_softmax_fwd_reg<32>(att, preatt, rows, T, causal); });
}

static void softmax_bwd(float *dpreatt, const float *datt, const float *att, int rows, int T,
                        int causal)
{
    const dim3 g((unsigned)((rows + 7) / 8)), b(256);
    const int n = (T + 31) / 32;
    if (force_loop || n > 32)
        launch(g, b, 0, [&] { k_softmax_bwd(dpreatt, datt, att, rows, T, causal); });
    else if (n <= 1)
        launch(g, b, 0, [&] { k_softmax_bwd_reg<1>(dpreatt, datt, att, rows, T, causal); });
    else if (n <= 2)
        launch(g, b, 0, [&] { k_softmax_bwd_reg<2>(dpreatt, datt, att, rows, T, causal); });
    else if (n <= 4)
        launch(g, b, 0, [&] { k_softmax_bwd_reg<4>(dpreatt, datt, att, rows, T, causal); });
    else if (n <= 8)
        launch(g, b, 0, [&] { k_softmax_bwd_reg<8>(dpreatt, datt, att, rows, T, causal); });
    else if (n <= 16)
        launch(g, b, 0, [&] { k_softmax_bwd_reg<16>(dpreatt, datt, att, rows, T, causal); });
    else
        launch(g, b, 0, [&] { k_softmax_bwd_reg<32>(dpreatt, datt, att, rows, T, causal); });
}

/* ------------------------------------------------------------ the check */

#include "host_check.h"

static void run(int B, int T, int NH, int causal)
{
    const int hs = 8, C = NH * hs, C3 = 3 * C, rows = B * NH * T;
    const size_t nqkv = (size_t)B * T * C3, no = (size_t)B * T * C, natt = (size_t)rows * T;
    std::vector<float> qkv(nqkv), dout(no);
    for (auto &f : qkv)
        f = 2.0f * frand(); /* scores of a few units: a peaked softmax */
    for (auto &f : dout)
        f = frand();
    char shape[64];
    snprintf(shape, sizeof shape, "B%d T%d NH%d %s%s%s", B, T, NH, causal ? "causal" : "full",
             force_loop || T > 1024 ? " loop" : "", reverse_order ? " rev" : "");

    /* the CPU's forward and backward */
    const kn_backend *cpu = kn_backend_cpu();
    std::vector<float> out(no), pre(natt), att(natt), dq(nqkv, 0.0f), datt(natt), dpre0(natt);
    for (auto &f : datt)
        f = frand();
    for (auto &f : dpre0)
        f = frand();
    std::vector<float> dpre(dpre0);
    cpu->attention_fwd(out.data(), pre.data(), att.data(), qkv.data(), B, T, C, NH, causal);
    cpu->attention_bwd(dq.data(), dpre.data(), datt.data(), dout.data(), qkv.data(), att.data(), B,
                       T, C, NH, causal); /* datt: the random start plus the CPU's sums */

    /* the kernels' forward from the CPU's scores, garbage where masked */
    std::vector<float> kpre(pre), katt(natt, NAN);
    for (int r = 0; r < rows; r++)
        for (int j = causal ? r % T + 1 : T; j < T; j++)
            kpre[(size_t)r * T + j] = 100.0f * frand();
    softmax_fwd(katt.data(), kpre.data(), rows, T, causal);
    check_norm("att", shape, katt.data(), att.data(), natt, 1e-5);
    check_norm("preatt", shape, kpre.data(), pre.data(), natt, 0.0);

    /* the backward adds to dpre0; compared by the increment */
    std::vector<float> kdpre(dpre0);
    softmax_bwd(kdpre.data(), datt.data(), att.data(), rows, T, causal);
    for (size_t i = 0; i < natt; i++)
        kdpre[i] -= dpre0[i], dpre[i] -= dpre0[i];
    check_norm("dpreatt", shape, kdpre.data(), dpre.data(), natt, 1e-5);
}

/* A row costs ~1 ms (32 fibers, ~30 switches each): ~1300 rows in all. */
int main(void)
{
    reverse_order = 0;
    run(2, 1, 1, 1);   /* N 1, a single key */
    run(1, 37, 2, 1);  /* N 2, a partial second slot */
    run(1, 64, 1, 0);  /* N 2, exact */
    run(1, 100, 1, 1); /* N 4 */
    run(1, 520, 1, 1); /* N 32 */
    force_loop = 1;
    run(1, 70, 1, 1);
    force_loop = 0;
    reverse_order = 1;
    run(1, 37, 1, 0);  /* N 2 */
    run(1, 100, 1, 0); /* N 4 */
    run(1, 200, 1, 1); /* N 8 */
    run(1, 300, 1, 0); /* N 16 */
    force_loop = 1;
    run(1, 70, 1, 0);
    force_loop = 0;
    return check_summary("test_softmax_host");
}
