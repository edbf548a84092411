/* test_batchnorm_host: the batch-normalisation kernels of the CUDA backend
 * (lib/nn/cuda/batchnorm.cuh) compiled for the host with
 * tests/gpu/host_cuda.h's stand-ins (a block's threads as fibers, warps in
 * ascending and descending order, the shuffles through the warp barrier,
 * the shared memory NaN-poisoned before each block), launched as
 * batchnorm.cu does (grids of S x C blocks, S from bn_segments, the
 * partials NaN-poisoned), and run against the CPU backend (cpu.c, which
 * sums in double), with test_cuda_parity's per-element tolerance for sums
 * (1e-4 |cpu| + 1e-6 max(1, max |cpu|)):
 *
 * - the forward in both modes: out (NaN-poisoned), the saved mean and rstd,
 *   and the running statistics (moved in training, untouched in eval);
 * - the backward in the mode of its forward, adding to random dinp, dw, db,
 *   and with dinp NULL (a first layer) or dw, db NULL;
 * - a thread summing one value (n <= 256, test_cuda_parity's smallest GPU
 *   shape) to 49 (B * HW = 16 x 784 in one block); S 1, 4, 7 (segments
 *   of 128-129 values, threads idle) and 13; HW = 1 (after a linear
 *   layer); n not a multiple of the block; activations centred and with a
 *   mean far from 0 against their spread (the fp32 sums' hard case).
 *
 * What it cannot check: the device's rsqrtf (here 1/sqrtf), timing. */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
#include "nn/cuda/batchnorm.cuh"
}
using namespace dev;

#include "host_check.h"

/* ------------------------------------------------------------ launching, as batchnorm.cu */

static int force_S; /* segments a channel; 0: bn_segments, as batchnorm.cu */

static int segments(int C, int n)
{
    return force_S ? force_S : bn_segments(C, n);
}

static void bn_fwd(float *out, float *mean, float *rstd, float *run_mean, float *run_var,
                   const float *inp, const float *w, const float *b, int B, int C, int HW,
                   int training)
{
    const int S = segments(C, B * HW);
    const dim3 grid((unsigned)S, (unsigned)C);
    std::vector<float> part((size_t)2 * C * S, NAN); /* kn_cu_scratch */
    float *p1 = training ? part.data() : NULL, *p2 = training ? p1 + (size_t)C * S : NULL;
    if (training) {
        launch(grid, BN_THREADS, 0, [&] { k_bn_sum(p1, inp, NULL, B, C, HW, S); });
        launch(grid, BN_THREADS, 0, [&] { k_bn_sum(p2, inp, p1, B, C, HW, S); });
    }
    launch(grid, BN_THREADS, 0, [&] {
        k_bn_norm(out, mean, rstd, run_mean, run_var, inp, w, b, p1, p2, B, C, HW, S, 0.1f, 1e-5f,
                  training);
    });
}

static void bn_bwd(float *dinp, float *dw, float *db, const float *dout, const float *inp,
                   const float *w, const float *mean, const float *rstd, int B, int C, int HW,
                   int training)
{
    const int S = segments(C, B * HW);
    std::vector<float> part((size_t)2 * C * S, NAN);
    float *pp = part.data();
    launch(dim3((unsigned)S, (unsigned)C), BN_THREADS, 0,
           [&] { k_bn_bwd_sum(pp, dout, inp, mean, rstd, B, C, HW, S); });
    launch(dim3(dinp ? (unsigned)S : 1u, (unsigned)C), BN_THREADS, 0, [&] {
        k_bn_bwd_apply(dinp, dw, db, pp, dout, inp, w, mean, rstd, B, C, HW, S, training);
    });
}

/* ------------------------------------------------------------ the checks */

static const double TOL = 1e-4; /* test_cuda_parity's R_SUM */

static std::vector<float> rand_vec(size_t n, float scale, float offset)
{
    std::vector<float> v(n);
    for (auto &f : v)
        f = offset + scale * frand();
    return v;
}

/* The forward's output against the CPU's: test_cuda_parity's tolerance
 * plus what its form allows. out = x scale + shift (scale = rstd w, shift =
 * b - mean scale) cancels where the mean is far from 0 against the spread
 * (x = 100 +- 1: |x scale| ~ 100 |out|): there one ulp of rstd on either
 * side moves out by |x scale| 2^-24, which no bound relative to |out|
 * covers; so each element also gets 8 eps (|x scale| + |shift|), from the
 * CPU's statistics (about 1e-6 |out| where x is centred). */
static void check_out(const char *shape, const float *d, const float *r, const float *x,
                      const float *w, const float *b, const float *mean, const float *rstd, int B,
                      int C, int HW)
{
    double scale_max = 0, worst = 0;
    const size_t n = (size_t)B * C * HW;
    size_t bad = 0, first = 0;
    for (size_t i = 0; i < n; i++)
        scale_max = fmax(scale_max, fabs((double)r[i]));
    const double atol = 1e-6 * (scale_max > 1 ? scale_max : 1);
    for (size_t i = 0; i < n; i++) {
        const int c = (int)(i / HW % C);
        const double sc = (double)rstd[c] * w[c], sh = b[c] - mean[c] * sc;
        const double tol = atol + TOL * fabs((double)r[i]) +
                           8 * FLT_EPSILON * (fabs((double)x[i] * sc) + fabs(sh));
        const double e = fabs((double)d[i] - r[i]);
        if (!(e <= tol) && !bad++) first = i;
        if (e / tol > worst) worst = e / tol;
    }
    verdict(bad == 0, "fwd out", shape,
            "n=%-7zu %zu beyond the bound (first at %zu, worst %.2g of it)", n, bad, first, worst);
}

/* d within k ulps of r, element by element (floats of one sign) */
static void check_ulps(const char *what, const char *shape, const float *d, const float *r,
                       size_t n, int k)
{
    size_t bad = 0;
    long worst = 0;
    for (size_t i = 0; i < n; i++) {
        int32_t a, c;
        memcpy(&a, &d[i], 4), memcpy(&c, &r[i], 4);
        const long u = labs((long)a - c);
        if (u > k) bad++;
        if (u > worst) worst = u;
    }
    verdict(bad == 0, what, shape, "n=%-7zu %zu beyond %d ulp (worst %ld)", n, bad, k, worst);
}

static void run(int B, int C, int HW, float offset, float spread)
{
    const size_t n = (size_t)B * C * HW;
    const kn_backend *cpu = kn_backend_cpu();
    const std::vector<float> x = rand_vec(n, spread, offset), w = rand_vec((size_t)C, 1.0f, 0.0f),
                             b = rand_vec((size_t)C, 1.0f, 0.0f);
    std::vector<float> rm0 = rand_vec((size_t)C, 0.5f, offset), rv0((size_t)C);
    for (auto &f : rv0)
        f = spread * spread * (1.0f + 0.5f * fabsf(frand()));
    for (int training = 1; training >= 0; training--) {
        char shape[80];
        snprintf(shape, sizeof shape, "B%d C%d HW%d S%d x%g+-%g %s%s", B, C, HW,
                 segments(C, B * HW), offset, spread, training ? "train" : "eval",
                 reverse_order ? " rev" : "");

        /* forward */
        std::vector<float> out(n, NAN), mean((size_t)C, NAN), rstd((size_t)C, NAN), rm(rm0),
            rv(rv0);
        std::vector<float> kout(n, NAN), kmean((size_t)C, NAN), krstd((size_t)C, NAN), krm(rm0),
            krv(rv0);
        cpu->batchnorm_fwd(out.data(), mean.data(), rstd.data(), rm.data(), rv.data(), x.data(),
                           w.data(), b.data(), B, C, HW, 0.1f, 1e-5f, training);
        float *po = kout.data(), *pm = kmean.data(), *pr = krstd.data(), *prm = krm.data(),
              *prv = krv.data();
        const float *px = x.data(), *pw = w.data(), *pb = b.data();
        bn_fwd(po, pm, pr, prm, prv, px, pw, pb, B, C, HW, training);
        check_out(shape, po, out.data(), x.data(), w.data(), b.data(), mean.data(), rstd.data(), B,
                  C, HW);
        check_elem("fwd mean", shape, pm, mean.data(), (size_t)C, TOL);
        if (training && fabsf(offset) >= 10 * spread) /* the shifted sums' point */
            check_ulps("fwd mean ulps", shape, pm, mean.data(), (size_t)C, 1);
        check_elem("fwd rstd", shape, pr, rstd.data(), (size_t)C, TOL);
        check_elem("fwd run_mean", shape, prm, rm.data(), (size_t)C, TOL);
        check_elem("fwd run_var", shape, prv, rv.data(), (size_t)C, TOL);
        if (!training) /* eval leaves them as they were, bit for bit */
            verdict(memcmp(prm, rm0.data(), (size_t)C * sizeof(float)) == 0 &&
                        memcmp(prv, rv0.data(), (size_t)C * sizeof(float)) == 0,
                    "eval keeps run", shape, "C=%d", C);

        /* backward from the CPU's saved statistics (the kernel's own
         * differ by rounding), adding to random gradients */
        const std::vector<float> dout = rand_vec(n, 1.0f, 0.0f), dx0 = rand_vec(n, 1.0f, 0.0f),
                                 dw0 = rand_vec((size_t)C, 1.0f, 0.0f),
                                 db0 = rand_vec((size_t)C, 1.0f, 0.0f);
        std::vector<float> dx(dx0), dw(dw0), db(db0), kdx(dx0), kdw(dw0), kdb(db0);
        cpu->batchnorm_bwd(dx.data(), dw.data(), db.data(), dout.data(), x.data(), w.data(),
                           mean.data(), rstd.data(), B, C, HW, training);
        float *pdx = kdx.data(), *pdw = kdw.data(), *pdb = kdb.data();
        const float *pg = dout.data(), *pcm = mean.data(), *pcr = rstd.data();
        bn_bwd(pdx, pdw, pdb, pg, px, pw, pcm, pcr, B, C, HW, training);
        check_elem("bwd dinp", shape, increments(kdx, dx0).data(), increments(dx, dx0).data(), n,
                   TOL);
        check_elem("bwd dw", shape, increments(kdw, dw0).data(), increments(dw, dw0).data(),
                   (size_t)C, TOL);
        check_elem("bwd db", shape, increments(kdb, db0).data(), increments(db, db0).data(),
                   (size_t)C, TOL);

        /* without dinp (the first layer), then without dw and db */
        std::vector<float> ndw(dw0), ndb(db0);
        float *pndw = ndw.data(), *pndb = ndb.data();
        bn_bwd(NULL, pndw, pndb, pg, px, pw, pcm, pcr, B, C, HW, training);
        verdict(memcmp(pndw, pdw, (size_t)C * sizeof(float)) == 0 &&
                    memcmp(pndb, pdb, (size_t)C * sizeof(float)) == 0,
                "bwd no dinp", shape, "dw, db bit for bit as with dinp");
        std::vector<float> odx(dx0);
        float *podx = odx.data();
        bn_bwd(podx, NULL, NULL, pg, px, pw, pcm, pcr, B, C, HW, training);
        verdict(memcmp(podx, pdx, n * sizeof(float)) == 0, "bwd no dw db", shape,
                "dinp bit for bit as with them");
    }
}

int main(void)
{
    for (int rev = 0; rev < 2; rev++) {
        reverse_order = rev;
        run(4, 3, 25, 1.5f, 2.0f);   /* test_cuda_parity's shape: one value a thread */
        run(64, 5, 1, 0.0f, 1.0f);   /* after a linear layer, n = B */
        run(3, 2, 300, 0.0f, 1.0f);  /* n = 900: the block's loops wrap */
        run(16, 2, 784, 0.5f, 1.0f); /* a CNN's first layer: S 4, 13 values a thread */
    }
    reverse_order = 0;
    force_S = 1; /* the whole channel in one block: 49 values a thread */
    run(16, 2, 784, 0.5f, 1.0f);
    force_S = 7; /* segments of 128 or 129 values, some threads idle */
    run(3, 2, 300, 0.0f, 1.0f);
    force_S = 0;
    /* means far from 0 against the spread, the fp32 sums' hard case: a
     * cancelling output (100 +- 1, S 13), and values so alike that sums
     * of x round alike add after add (1000.1 +- 0.001: summing x instead
     * of x - x0 puts the mean 2-3 ulps off and rstd 8-17 times the
     * tolerance) */
    run(64, 1, 784, 100.0f, 1.0f);
    run(64, 2, 784, 1000.1f, 0.001f);
    force_S = 1; /* and in one block: 49 values a thread */
    run(16, 2, 784, 1000.1f, 0.001f);
    force_S = 0;
    return check_summary("test_batchnorm_host");
}
