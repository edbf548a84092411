/* test_pool_host: the CUDA backend's pooling kernels (lib/nn/cuda/pool.cuh,
 * launched by pool.cu) compiled for the host with tests/gpu/host_cuda.h's
 * stand-ins and run there against the CPU backend (cpu.c):
 *
 * - 2-D max and avg pooling on plane_grid's grid as pool.cu launches them,
 *   and on a 2 x 3 grid (both loops wrap): the forward into NaN (out, and
 *   the max's position) bit for bit the CPU's (the same window order),
 *   ties included (inputs rounded to a few values, so windows hold equal
 *   maxima: the first wins on both); the backward adding to a random dinp
 *   (the CPU scatters, the kernel gathers: within 1e-6 of the increment
 *   by norm; max bit for bit where windows do not overlap, an input then
 *   taking at most one addition); windows 2 and 3, strides 1 to 3
 *   (overlapping, touching, with gaps), sizes that leave a remainder;
 * - mean and CLS pooling over a sequence, forward into NaN and backward
 *   added, against the CPU within 1e-6 by norm (mean) or bit for bit (CLS).
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
#include "nn/cuda/pool.cuh"
} // namespace dev
using namespace dev;

#include "host_check.h"

static std::vector<float> rand_vec(size_t n, int coarse)
{
    std::vector<float> v(n);
    for (auto &f : v)
        f = coarse ? roundf(frand() * 2.0f) : frand(); /* coarse: -2..2, ties in most windows */
    return v;
}

static void run_pool(int kind, int B, int C, int H, int W, int K, int S, int coarse)
{
    const kn_pool_shape s = {B, C, H, W, K, S, (H - K) / S + 1, (W - K) / S + 1};
    const pool_dims d = {H, W, K, S, s.OH, s.OW};
    const int planes = B * C, P = s.OH * s.OW;
    const size_t nin = (size_t)planes * H * W, nout = (size_t)planes * P;
    const kn_backend *cpu = kn_backend_cpu();
    const std::vector<float> x = rand_vec(nin, coarse), dout = rand_vec(nout, 0),
                             dx0 = rand_vec(nin, 0);
    const int max = kind == KN_POOL_MAX;
    std::vector<float> out(nout, NAN), dx(dx0);
    std::vector<int> idx(nout, -1);
    cpu->pool2d_fwd(kind, out.data(), max ? idx.data() : NULL, x.data(), &s);
    cpu->pool2d_bwd(kind, dx.data(), dout.data(), max ? idx.data() : NULL, &s);
    for (int small = 0; small < 2; small++) {
        char shape[80];
        snprintf(shape, sizeof shape, "%s B%d C%d %dx%d K%d S%d%s%s", max ? "max" : "avg", B, C, H,
                 W, K, S, coarse ? " ties" : "", small ? " 2x3" : "");
        std::vector<float> kout(nout, NAN), kdx(dx0);
        std::vector<int> kidx(nout, -7);
        float *po = kout.data(), *pdx = kdx.data();
        int *pi = max ? kidx.data() : NULL;
        const float *px = x.data(), *pg = dout.data();
        launch(small ? dim3(2, 3) : plane_grid(P, planes), 256, 0,
               [&] { k_pool_fwd(kind, po, pi, px, planes, d); });
        check_bits("fwd out", shape, po, out.data(), nout);
        if (max)
            verdict(memcmp(pi, idx.data(), nout * sizeof(int)) == 0, "fwd idx", shape,
                    "n=%-7zu the CPU's positions", nout);
        launch(small ? dim3(2, 3) : plane_grid(H * W, planes), 256, 0,
               [&] { k_pool_bwd(kind, pdx, pg, pi, planes, d); });
        if (max && S >= K) /* one window per input at most: the same single addition */
            check_bits("bwd dinp", shape, pdx, dx.data(), nin);
        else
            check_norm("bwd dinp", shape, increments(kdx, dx0).data(), increments(dx, dx0).data(),
                       nin, 1e-6);
    }
}

static void run_seqpool(int kind, int B, int T, int C, int small)
{
    const kn_backend *cpu = kn_backend_cpu();
    const size_t nin = (size_t)B * T * C, nout = (size_t)B * C;
    const std::vector<float> x = rand_vec(nin, 0), dout = rand_vec(nout, 0), dx0 = rand_vec(nin, 0);
    std::vector<float> out(nout, NAN), dx(dx0), kout(nout, NAN), kdx(dx0);
    cpu->seqpool_fwd(kind, out.data(), x.data(), B, T, C);
    cpu->seqpool_bwd(kind, dx.data(), dout.data(), B, T, C);
    char shape[80];
    snprintf(shape, sizeof shape, "%s B%d T%d C%d%s", kind == KN_SEQPOOL_CLS ? "cls" : "mean", B, T,
             C, small ? " small grid" : "");
    float *po = kout.data(), *pdx = kdx.data();
    const float *px = x.data(), *pg = dout.data();
    /* as pool.cu launches them, or on 2 x 2 blocks of 32 threads (both loops wrap) */
    const dim3 blk(small ? 32 : 256);
    launch(small ? dim3(2, 2) : plane_grid(C, B), blk, 0,
           [&] { k_seqpool_fwd(kind, po, px, B, T, C); });
    launch(small ? dim3(2, 2) : plane_grid(C, B * T), blk, 0,
           [&] { k_seqpool_bwd(kind, pdx, pg, B, T, C); });
    if (kind == KN_SEQPOOL_CLS) {
        check_bits("seq fwd", shape, po, out.data(), nout);
        check_bits("seq bwd", shape, pdx, dx.data(), nin);
    } else {
        check_norm("seq fwd", shape, po, out.data(), nout, 1e-6);
        check_norm("seq bwd", shape, increments(kdx, dx0).data(), increments(dx, dx0).data(), nin,
                   1e-6);
    }
}

int main(void)
{
    for (int kind = KN_POOL_MAX; kind <= KN_POOL_AVG; kind++) {
        run_pool(kind, 4, 3, 28, 28, 2, 2, 0); /* the CNNs' 2x2 pooling */
        run_pool(kind, 2, 3, 9, 9, 3, 2, 0);   /* overlapping windows */
        run_pool(kind, 2, 2, 10, 7, 2, 3, 0);  /* gaps between windows, a remainder */
        run_pool(kind, 3, 2, 8, 8, 3, 1, 1);   /* stride 1, ties */
        run_pool(kind, 2, 3, 14, 14, 2, 2, 1);
    }
    for (int small = 0; small <= 1; small++) {
        run_seqpool(KN_SEQPOOL_MEAN, 3, 17, 40, small);
        run_seqpool(KN_SEQPOOL_CLS, 3, 17, 40, small);
        run_seqpool(KN_SEQPOOL_MEAN, 2, 1, 300, small); /* T 1; rows past a block */
        run_seqpool(KN_SEQPOOL_CLS, 5, 3, 100, small);
    }
    return check_summary("test_pool_host");
}
