/* test_batchnorm_host: the batch-normalisation kernels of the CUDA backend
 * (lib/nn/cuda/batchnorm.cuh, launched by batchnorm.cu: one block of
 * BN_THREADS per channel) compiled for the host with tests/gpu/host_cuda.h's
 * stand-ins (a block's threads as fibers, warps in ascending and descending
 * order, the shuffles through the warp barrier, the shared memory
 * NaN-poisoned before each block) and run there against the CPU backend
 * (cpu.c, which sums in double), with test_cuda_parity's per-element
 * tolerance for sums (1e-4 |cpu| + 1e-6 max(1, max |cpu|)):
 *
 * - the forward in both modes: out (NaN-poisoned), the saved mean and rstd,
 *   and the running statistics (moved in training, untouched in eval);
 * - the backward in the mode of its forward, adding to random dinp, dw, db,
 *   and with dinp NULL (a first layer) or dw, db NULL;
 * - shapes where each thread sums one value (n <= 256, test_cuda_parity's
 *   smallest GPU shape) and where it sums up to 196 (B * HW = 64 x 784),
 *   HW = 1 (after a linear layer), n not a multiple of
 *   the block; activations centred and with a mean far from 0 against
 *   their spread (the fp32 sums' hard case).
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

static const double TOL = 1e-4; /* test_cuda_parity's R_SUM */

static std::vector<float> rand_vec(size_t n, float scale, float offset)
{
    std::vector<float> v(n);
    for (auto &f : v)
        f = offset + scale * frand();
    return v;
}

/* a - b, element by element (an accumulated output's increment) */
static std::vector<float> minus(const std::vector<float> &a, const std::vector<float> &b)
{
    std::vector<float> d(a.size());
    for (size_t i = 0; i < a.size(); i++)
        d[i] = a[i] - b[i];
    return d;
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
    const dim3 g((unsigned)C), blk(BN_THREADS);
    for (int training = 1; training >= 0; training--) {
        char shape[80];
        snprintf(shape, sizeof shape, "B%d C%d HW%d x%g+-%g %s%s", B, C, HW, offset, spread,
                 training ? "train" : "eval", reverse_order ? " rev" : "");

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
        launch(g, blk, 0, [&] {
            k_batchnorm_fwd(po, pm, pr, prm, prv, px, pw, pb, B, C, HW, 0.1f, 1e-5f, training);
        });
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
        launch(g, blk, 0,
               [&] { k_batchnorm_bwd(pdx, pdw, pdb, pg, px, pw, pcm, pcr, B, C, HW, training); });
        check_elem("bwd dinp", shape, minus(kdx, dx0).data(), minus(dx, dx0).data(), n, TOL);
        check_elem("bwd dw", shape, minus(kdw, dw0).data(), minus(dw, dw0).data(), (size_t)C, TOL);
        check_elem("bwd db", shape, minus(kdb, db0).data(), minus(db, db0).data(), (size_t)C, TOL);

        /* without dinp (the first layer), then without dw and db */
        std::vector<float> ndw(dw0), ndb(db0);
        float *pndw = ndw.data(), *pndb = ndb.data();
        launch(g, blk, 0, [&] {
            k_batchnorm_bwd(NULL, pndw, pndb, pg, px, pw, pcm, pcr, B, C, HW, training);
        });
        verdict(memcmp(pndw, pdw, (size_t)C * sizeof(float)) == 0 &&
                    memcmp(pndb, pdb, (size_t)C * sizeof(float)) == 0,
                "bwd no dinp", shape, "dw, db bit for bit as with dinp");
        std::vector<float> odx(dx0);
        float *podx = odx.data();
        launch(g, blk, 0, [&] {
            k_batchnorm_bwd(podx, NULL, NULL, pg, px, pw, pcm, pcr, B, C, HW, training);
        });
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
        run(16, 2, 784, 0.5f, 1.0f); /* a CNN's first layer: 49 values a thread */
    }
    reverse_order = 0;
    run(64, 1, 784, 100.0f, 1.0f); /* a mean 100 spreads wide: the fp32 sums' hard case */
    return check_summary("test_batchnorm_host");
}
