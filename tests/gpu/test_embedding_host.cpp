/* test_embedding_host: the CUDA backend's plain embedding kernels
 * (lib/nn/cuda/embedding.cuh, launched by embedding.cu: the token gather,
 * the serial token backward of KILN_CUDA_EMBED_BWD=serial, the position
 * embedding's forward and backward; the sorted token backward has
 * test_embed_sorted_host) compiled for the host with
 * tests/gpu/host_cuda.h's stand-ins and run there against the CPU backend
 * (cpu.c), launched as embedding.cu does and on small grids (the
 * grid-stride loops wrap): the gather into NaN and the position forward bit for bit
 * (a copy; one addition an element), the serial token backward bit for bit
 * (the CPU's order of additions: rows in order, repeated tokens
 * included), the position backward within 1e-6 by norm of the increment
 * (the kernel sums the batch first, the CPU adds row by row).
 *
 * What it cannot check: timing. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <vector>

extern "C" {
#include "nn/backend.h"
}

#include "host_cuda.h"
#include "nn/cuda/grid.cuh" /* blocks_for, plane_grid */

/* in a namespace: kiln_nn (linked for the CPU backend) has the device
 * build's host stubs of the same kernels */
namespace dev
{
#include "nn/cuda/embedding.cuh"
}
using namespace dev;

#include "host_check.h"

static void run(int B, int T, int C, int V, int wrap)
{
    const int N = B * T;
    const size_t nout = (size_t)N * C, ntab = (size_t)V * C, npos = (size_t)T * C;
    char shape[80];
    snprintf(shape, sizeof shape, "B%d T%d C%d V%d%s", B, T, C, V, wrap ? " small grid" : "");
    const kn_backend *cpu = kn_backend_cpu();
    std::vector<int> ids((size_t)N);
    for (auto &t : ids)
        t = (int)(urand() % (unsigned)V); /* V < N: tokens repeat */
    const std::vector<float> wte = rand_floats(ntab), wpe = rand_floats(npos),
                             dout = rand_floats(nout), dwte0 = rand_floats(ntab),
                             dwpe0 = rand_floats(npos);
    const int *pid = ids.data();
    const float *pte = wte.data(), *ppe = wpe.data(), *pg = dout.data();

    /* forward: the gather, then the positions added */
    std::vector<float> out(nout, NAN), kout(nout, NAN);
    cpu->embed_fwd(out.data(), pid, pte, N, C);
    cpu->posemb_fwd(out.data(), ppe, B, T, C);
    float *po = kout.data();
    /* wrap: 2 x 3 blocks of 32 threads, so both grid-stride loops (rows, channels) wrap */
    const dim3 g_fwd = wrap ? dim3(2, 3) : plane_grid(C, N), b_fwd(wrap ? 32 : 256);
    launch(g_fwd, b_fwd, 0, [&] { k_embed_fwd(po, pid, pte, N, C); });
    launch(g_fwd, b_fwd, 0, [&] { k_posemb_fwd(po, ppe, B, T, C); });
    check_bits("fwd", shape, po, out.data(), nout);

    /* backward */
    std::vector<float> dwte(dwte0), kdwte(dwte0), dwpe(dwpe0), kdwpe(dwpe0);
    cpu->embed_bwd(dwte.data(), pg, pid, N, C);
    cpu->posemb_bwd(dwpe.data(), pg, B, T, C);
    float *pdt = kdwte.data(), *pdp = kdwpe.data();
    /* the serial kernel is not grid-stride: its grid always covers C */
    launch(blocks_for((size_t)C, wrap ? 32 : 128), wrap ? 32 : 128, 0,
           [&] { k_embed_bwd(pdt, pg, pid, N, C); });
    launch(wrap ? 2 : blocks_for(npos, 256), 256, 0, [&] { k_posemb_bwd(pdp, pg, B, T, C); });
    check_bits("wte bwd serial", shape, pdt, dwte.data(), ntab);
    for (size_t i = 0; i < npos; i++)
        kdwpe[i] -= dwpe0[i], dwpe[i] -= dwpe0[i];
    check_norm("wpe bwd", shape, pdp, dwpe.data(), npos, 1e-6);
}

int main(void)
{
    run(2, 5, 16, 7, 0);
    run(3, 17, 40, 11, 0);  /* C not a multiple of a warp */
    run(4, 33, 300, 50, 0); /* C past a 128-thread block */
    run(3, 17, 40, 11, 1);  /* small grids: the loops wrap; the serial backward in warps */
    run(2, 9, 150, 13, 1);  /* the forwards' channel loop wraps too (150 > 2 x 32) */
    return check_summary("test_embedding_host");
}
