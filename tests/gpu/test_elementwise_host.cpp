/* test_elementwise_host: the CUDA backend's dropout, residual and
 * accumulation kernels (lib/nn/cuda/elementwise.cuh, launched by
 * elementwise.cu; the activations have test_act_host) compiled for the
 * host with tests/gpu/host_cuda.h's stand-ins and run there against the
 * CPU backend (cpu.c), launched as elementwise.cu does and on 2 blocks
 * (the grid-stride loops wrap), every output bit for bit: the dropout
 * mask and output into NaN (the device's copy of the counter hash,
 * uniform_dev, draws kn_backend_uniform's numbers, so both backends drop
 * the same elements; p 0.1 and 0.5, a second seed, the fraction kept
 * within 5 sigma of 1 - p), its backward added to a random dinp, the
 * residual forward into NaN and its backward into both inputs, one of
 * them, or none.
 *
 * What it cannot check: timing. */
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
#include "nn/cuda/grid.cuh" /* blocks_for, plane_grid */

/* in a namespace: kiln_nn (linked for the CPU backend) has the device
 * build's host stubs of the same kernels */
namespace dev
{
#include "nn/cuda/elementwise.cuh"
}
using namespace dev;

#include "host_check.h"

static void run(size_t n, float p, uint64_t seed, int wrap)
{
    char shape[80];
    snprintf(shape, sizeof shape, "n%zu p%g seed%llu%s", n, p, (unsigned long long)seed,
             wrap ? " 2 blocks" : "");
    const kn_backend *cpu = kn_backend_cpu();
    const dim3 g(wrap ? 2 : blocks_for(n, 256));
    const std::vector<float> x = rand_floats(n), y = rand_floats(n), dout = rand_floats(n),
                             d0 = rand_floats(n), e0 = rand_floats(n);
    const float *px = x.data(), *py = y.data(), *pg = dout.data();

    /* dropout */
    std::vector<float> out(n, NAN), mask(n, NAN), kout(n, NAN), kmask(n, NAN);
    cpu->dropout_fwd(out.data(), mask.data(), px, n, p, seed);
    float *po = kout.data(), *pm = kmask.data();
    launch(g, 256, 0, [&] { k_dropout_fwd(po, pm, px, n, p, seed); });
    check_bits("dropout mask", shape, pm, mask.data(), n);
    check_bits("dropout out", shape, po, out.data(), n);
    size_t kept = 0;
    for (size_t i = 0; i < n; i++)
        kept += kmask[i] != 0.0f;
    const double sigma = sqrt(n * p * (1.0 - p)), dev_kept = fabs((double)kept - n * (1.0 - p));
    verdict(dev_kept <= 5 * sigma, "dropout kept", shape, "%zu of %zu (expected %.0f +- %.0f)",
            kept, n, n * (1.0 - p), sigma);
    std::vector<float> dx(d0), kdx(d0);
    cpu->dropout_bwd(dx.data(), pg, mask.data(), n);
    float *pdx = kdx.data();
    launch(g, 256, 0, [&] { k_mul_add(pdx, pg, pm, n); });
    check_bits("dropout bwd", shape, pdx, dx.data(), n);

    /* residual */
    std::vector<float> r(n, NAN), kr(n, NAN);
    cpu->residual_fwd(r.data(), px, py, n);
    float *pr = kr.data();
    launch(g, 256, 0, [&] { k_add(pr, px, py, n); });
    check_bits("residual fwd", shape, pr, r.data(), n);
    for (int which = 0; which < 4; which++) { /* both, da only, db only, neither */
        std::vector<float> da(d0), db(e0), kda(d0), kdb(e0);
        float *cda = which & 2 ? NULL : da.data(), *cdb = which & 1 ? NULL : db.data();
        cpu->residual_bwd(cda, cdb, pg, n);
        float *pa = kda.data(), *pb = kdb.data();
        if (!(which & 2)) launch(g, 256, 0, [&] { k_acc(pa, pg, n); }); /* as elementwise.cu */
        if (!(which & 1)) launch(g, 256, 0, [&] { k_acc(pb, pg, n); });
        char w[32];
        snprintf(w, sizeof w, "residual bwd %d", which);
        verdict(memcmp(pa, da.data(), n * sizeof(float)) == 0 &&
                    memcmp(pb, db.data(), n * sizeof(float)) == 0,
                w, shape, "da%s db%s",
                which & 2 ? " untouched" : " +=", which & 1 ? " untouched" : " +=");
    }
}

int main(void)
{
    run(1000, 0.1f, 42, 0);
    run(4099, 0.5f, 42, 0);
    run(4099, 0.5f, 7, 1); /* another mask; the loops wrap 8 times */
    return check_summary("test_elementwise_host");
}
