/* test_act_host: the activation kernels of the CUDA backend
 * (lib/nn/cuda/act.cuh, launched by elementwise.cu) compiled for the host
 * with tests/gpu/host_cuda.h's stand-ins and run there, for both inputs
 * they take: fp32 (act_fwd / act_bwd) and the bf16 bits to_bf16 stored
 * (act_fwd_bf16 / act_bwd_bf16, what a transformer's GELU reads):
 *
 * - every kind, the bf16-input kernel bit for bit the fp32-input kernel on
 *   the widened values (backend.h's promise), forward into a NaN-poisoned
 *   output and backward adding to a random dinp, on bf16 values of every
 *   magnitude, signed zeros, subnormals, Inf and NaN;
 * - on finite values, both against the CPU backend's act_fwd / act_bwd on
 *   the widened input by norm within 1e-6 (the host's tanhf and expf on
 *   both sides: they agree to the bit or nearly);
 * - launched as elementwise.cu does (blocks_for(n, 256) of 256 threads),
 *   and with 2 blocks, so that the grid-stride loop wraps; n not a
 *   multiple of the block.
 *
 * What it cannot check: the device's tanhf and expf (test_cuda_parity
 * compares the device with the CPU, and its kernels with each other, on a
 * GPU). */
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
#include "nn/cuda/act.cuh"
}
using namespace dev;

#include "host_check.h"

static const char *const names[] = {"", "relu", "tanh", "sigmoid", "gelu"};

/* bf16 bits: random magnitudes; with specials, every 7th element one of
 * the edge patterns */
static void inputs(std::vector<uint16_t> &x16, std::vector<float> &xw, int specials)
{
    static const uint16_t edge[] = {0x0000, 0x8000, 0x0001, 0x807F, 0x0080, 0x7F80,
                                    0xFF80, 0x7FC0, 0xFFFF, 0x7F7F, 0xFF7F, 0x3F80};
    for (size_t i = 0; i < x16.size(); i++) {
        const float f = frand() * ldexpf(1.0f, (int)(urand() % 12) - 8); /* GELU's range */
        unsigned u;
        memcpy(&u, &f, sizeof u);
        x16[i] = (uint16_t)(u >> 16);
        if (specials && i % 7 == 3) x16[i] = edge[(i / 7) % (sizeof(edge) / sizeof(edge[0]))];
        const unsigned w = (unsigned)x16[i] << 16;
        memcpy(&xw[i], &w, sizeof w);
    }
}

static void run(size_t n, int kind, int two_blocks, int specials)
{
    char shape[64];
    snprintf(shape, sizeof shape, "%s n%zu%s%s%s", names[kind], n, two_blocks ? " 2 blocks" : "",
             specials ? " specials" : "", reverse_order ? " rev" : "");
    const dim3 g(two_blocks ? 2 : blocks_for(n, 256)), b(256);
    std::vector<uint16_t> x16(n);
    std::vector<float> xw(n), dout(n), d0(n);
    inputs(x16, xw, specials);
    for (size_t i = 0; i < n; i++)
        dout[i] = frand(), d0[i] = frand();
    const uint16_t *px16 = x16.data();
    const float *pxw = xw.data(), *pdout = dout.data();

    /* forward, into NaN */
    std::vector<float> y16(n, NAN), yw(n, NAN);
    float *py16 = y16.data(), *pyw = yw.data();
    launch(g, b, 0, [&] { k_act_fwd(kind, py16, px16, n); });
    launch(g, b, 0, [&] { k_act_fwd(kind, pyw, pxw, n); });
    check_bits("fwd bf16 = fp32", shape, py16, pyw, n);

    /* backward, added to d0; from the fp32 kernel's output */
    std::vector<float> g16(d0), gw(d0);
    float *pg16 = g16.data(), *pgw = gw.data();
    launch(g, b, 0, [&] { k_act_bwd(kind, pg16, px16, pyw, pdout, n); });
    launch(g, b, 0, [&] { k_act_bwd(kind, pgw, pxw, pyw, pdout, n); });
    check_bits("bwd bf16 = fp32", shape, pg16, pgw, n);
    if (specials) return;

    /* the CPU backend on the widened input (finite) */
    const kn_backend *cpu = kn_backend_cpu();
    std::vector<float> yc(n), gc(d0);
    cpu->act_fwd(kind, yc.data(), pxw, n);
    cpu->act_bwd(kind, gc.data(), pxw, yc.data(), pdout, n);
    check_norm("fwd vs cpu", shape, py16, yc.data(), n, 1e-6);
    check_norm("bwd vs cpu", shape, pg16, gc.data(), n, 1e-6);
}

int main(void)
{
    for (int rev = 0; rev < 2; rev++) { /* the elementwise kernels share nothing: either order */
        reverse_order = rev;
        for (int kind = KN_ACT_RELU; kind <= KN_ACT_GELU; kind++) {
            run(1000, kind, 0, 0);
            run(4099, kind, 1, 0); /* the grid-stride loop wraps 8 times */
            run(3001, kind, 0, 1);
        }
    }
    return check_summary("test_act_host");
}
