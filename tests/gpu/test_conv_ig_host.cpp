/* test_conv_ig_host: the implicit-GEMM convolution kernels of the CUDA
 * backend (lib/nn/cuda/conv_ig.cuh) compiled for the host and run there,
 * so that their index arithmetic, masking, tiling, K split and bias sums
 * are checked on machines without a GPU (CI's). The same source as on the
 * device; only the CUDA built-ins are stand-ins (tests/gpu/host_cuda.h):
 * each block's 256 threads are fibers (ucontext) of one thread, one warp
 * at a time up to the next __syncthreads, one block at a time, the static
 * shared memory NaN-poisoned before each; WMMA is emulated warp by warp
 * from its documented layouts (tests/gpu/host_wmma.h: lane 0 of a warp
 * loads, multiplies and stores whole 16 x 16 tiles; the other lanes'
 * copies are never read). What it cannot check: the hardware's own
 * fragment layouts (the WMMA pointers' 32-byte alignment and ldm rules are
 * checked, bf16 is 2 bytes as on the device), timing;
 * tests/gpu/test_cuda_parity and compute-sanitizer do on a GPU.
 *
 * Each shape runs the forward (outputs NaN-poisoned), the input gradient and
 * the weight and bias gradients (added to random values) against a direct
 * convolution in double: fp32 per element within 1e-4 (1 + |ref|); tf32 and
 * bf16 by norm within 1e-3 and 1e-2, and at least 1e-5 / 1e-4 (so the
 * operands were rounded); the bias gradient within 1e-6 by norm in every
 * precision (summed in fp32 from the unrounded output gradient). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>
#include <ucontext.h>

#include <functional>
#include <vector>

/* ------------------------------------------------------------ CUDA stand-ins */

#define FIBER_STACK (256 * 1024)
#include "host_cuda.h" /* static __shared__ arrays: HOST_CUDA_EXTERN_SHARED undefined */
#include "host_wmma.h" /* asserts the WMMA rules */

struct float4 {
    float x, y, z, w;
};
static inline float4 make_float4(float a, float b, float c, float d)
{
    return {a, b, c, d};
}

typedef struct {
    int B, C, H, W;
    int OC, K, stride, pad;
    int OH, OW;
} kn_conv_shape; /* as nn/backend.h */
static int kn_cu_sms(void) { return 132; } /* an H100/H200's: sizes the K split */

#include "nn/cuda/conv_ig.cuh"

/* ------------------------------------------------------------ launching */

/* Runs body over the grid, one block of 256 threads at a time. */
static void launch(dim3 grid, const std::function<void()> &body)
{
    launch(grid, 256, 0, body);
}

static dim3 grid_of(int M, int N, int G)
{
    return dim3((unsigned)((N + IG_BN - 1) / IG_BN), (unsigned)((M + IG_BM - 1) / IG_BM),
                (unsigned)G);
}

/* ------------------------------------------------------------ the check */

#include "host_check.h"

static void check(const char *what, const char *shape, int prec, const float *d, const double *r,
                  size_t n, int is_bias)
{
    double e2 = 0, r2 = 0;
    size_t bad = 0, first = n;
    for (size_t i = 0; i < n; i++) {
        double q = fabs(d[i] - r[i]);
        e2 += q * q, r2 += r[i] * r[i];
        if (prec == 0 && !(q <= 1e-4 * (1 + fabs(r[i])))) { /* NaN fails too */
            if (first == n) first = i;
            bad++;
        }
    }
    double rel = sqrt(e2 / (r2 > 0 ? r2 : 1));
    int ok = prec == 0 ? bad == 0 : rel == rel;
    if (prec) {
        double hi = is_bias ? 1e-6 : prec == 1 ? 1e-3 : 1e-2, lo = is_bias ? 0 : prec == 1 ? 1e-5 : 1e-4;
        ok = rel <= hi && rel >= lo;
    }
    checks++;
    printf("%s %-5s %-30s %-5s n=%-7zu rel-norm %.3g", ok ? "ok  " : "FAIL", what, shape,
           prec == 0 ? "fp32" : prec == 1 ? "tf32" : "bf16", n, rel);
    if (bad) printf("  %zu bad, first [%zu] %.7g vs %.7g", bad, first, d[first], r[first]);
    printf("\n");
    if (!ok) failures++;
}

template <int PREC>
static void run(int B, int C, int H, int OC, int K, int S, int pad, int with_dw, int with_db,
                int with_bias)
{
    const int OH = (H + 2 * pad - K) / S + 1;
    kn_conv_shape s = {B, C, H, H, OC, K, S, pad, OH, OH};
    const ig_geo g = geo_of(&s);
    checks++;
    if (!ig_fits(&s)) failures++, printf("FAIL ig_fits refuses a small shape\n");
    const size_t ni = (size_t)B * C * H * H, no = (size_t)B * OC * OH * OH,
                 nw = (size_t)OC * C * K * K;
    std::vector<float> x(ni), w(nw), b(OC), dout(no), out(no, NAN), dinp(ni), dw(nw), db(OC);
    for (auto *v : {&x, &w, &b, &dout, &dinp, &dw, &db})
        for (auto &f : *v)
            f = frand();
    std::vector<double> rout(no), rdi(dinp.begin(), dinp.end()), rdw(dw.begin(), dw.end()),
        rdb(db.begin(), db.end());
    for (int bb = 0; bb < B; bb++)
        for (int o = 0; o < OC; o++)
            for (int oh = 0; oh < OH; oh++)
                for (int ow = 0; ow < OH; ow++) {
                    const size_t oi = (((size_t)bb * OC + o) * OH + oh) * OH + ow;
                    double a = with_bias ? b[o] : 0;
                    for (int c = 0; c < C; c++)
                        for (int kh = 0; kh < K; kh++)
                            for (int kw = 0; kw < K; kw++) {
                                const int ih = oh * S - pad + kh, iw = ow * S - pad + kw;
                                if (ih < 0 || iw < 0 || ih >= H || iw >= H) continue;
                                const size_t ii = (((size_t)bb * C + c) * H + ih) * H + iw,
                                             wi = (((size_t)o * C + c) * K + kh) * K + kw;
                                a += (double)x[ii] * w[wi];
                                rdi[ii] += (double)dout[oi] * w[wi];
                                if (with_dw) rdw[wi] += (double)dout[oi] * x[ii];
                            }
                    rout[oi] = a;
                    if (with_db) rdb[o] += dout[oi];
                }
    const float *bias = with_bias ? b.data() : NULL;
    launch(grid_of(OC, B * g.KP, 1),
           [&] { k_conv_fwd_ig<PREC>(out.data(), x.data(), w.data(), bias, g); });
    launch(grid_of(C, B * g.HW, 1),
           [&] { k_conv_dinp_ig<PREC>(dinp.data(), dout.data(), w.data(), g); });
    /* as conv.cu's ig_bwd: G > 1 writes partials, added here in group order */
    int kchunk, G = ig_groups(&s, &kchunk);
    std::vector<float> scratch(ig_scratch(&s), NAN);
    float *dwp = with_dw ? dw.data() : NULL, *dbp = with_db ? db.data() : NULL;
    if (G > 1)
        dwp = with_dw ? scratch.data() : NULL,
        dbp = with_db ? scratch.data() + (size_t)G * nw : NULL;
    launch(grid_of(OC, with_dw ? g.CKK : 1, G),
           [&] { k_conv_dw_ig<PREC>(dwp, dbp, dout.data(), x.data(), g, G, kchunk); });
    if (G > 1) {
        for (size_t c = 0; with_dw && c < nw; c++) {
            float sum = 0;
            for (int q = 0; q < G; q++)
                sum += dwp[q * nw + c];
            dw[c] += sum;
        }
        for (int c = 0; with_db && c < OC; c++) {
            float sum = 0;
            for (int q = 0; q < G; q++)
                sum += dbp[q * OC + c];
            db[c] += sum;
        }
    }
    char shape[64];
    snprintf(shape, sizeof(shape), "B%d C%d H%d OC%d K%d S%d P%d G%d%s%s", B, C, H, OC, K, S, pad,
             G, with_dw ? "" : " no-dw", with_db ? "" : " no-db");
    check("out", shape, PREC, out.data(), rout.data(), no, 0);
    check("dinp", shape, PREC, dinp.data(), rdi.data(), ni, 0);
    if (with_dw) check("dw", shape, PREC, dw.data(), rdw.data(), nw, 0);
    if (with_db) check("dbias", shape, PREC, db.data(), rdb.data(), (size_t)OC, 1);
    if (!with_dw) { /* untouched */
        checks++;
        int same = 1;
        for (size_t i = 0; i < nw; i++)
            same = same && dw[i] == (float)rdw[i];
        printf("%s dw untouched when not asked for\n", same ? "ok  " : "FAIL");
        if (!same) failures++;
    }
}

/* fp32 every shape; tf32 and bf16 (the same loaders, other tiles and
 * MMAs) the ones marked 1 */
template <int PREC> static void shapes(void)
{
    if (!PREC) run<PREC>(2, 3, 12, 8, 3, 1, 1, 1, 1, 1);
    if (!PREC) run<PREC>(3, 2, 11, 5, 5, 2, 2, 1, 1, 0); /* stride 2, no bias */
    if (!PREC) run<PREC>(2, 4, 9, 6, 3, 3, 0, 1, 1, 1);  /* stride 3 */
    run<PREC>(3, 3, 13, 17, 3, 2, 1, 1, 1, 1);           /* 1: K split in 2 */
    run<PREC>(2, 5, 10, 70, 1, 1, 0, 1, 1, 1);           /* 1: K 1, two row tiles */
    if (!PREC) run<PREC>(2, 1, 28, 32, 5, 1, 2, 1, 1, 1); /* the bench CNN's conv 1 */
    run<PREC>(1, 32, 14, 64, 5, 1, 2, 1, 1, 1);          /* 1: its conv 2, dw K split in 3 */
    if (!PREC) run<PREC>(1, 64, 7, 128, 3, 1, 1, 1, 1, 1); /* cnn-fmnist's conv 3 */
}

int main(void)
{
    shapes<0>();
    run<0>(1, 32, 14, 64, 5, 1, 2, 0, 1, 1); /* bias gradient only: one column tile */
    run<0>(1, 32, 14, 64, 5, 1, 2, 1, 0, 1); /* weight gradient only */
    shapes<1>();
    shapes<2>();
    const kn_conv_shape empty = {0, 3, 8, 8, 4, 3, 1, 1, 8, 8}; /* B 0: the im2col path's */
    checks++;
    if (ig_fits(&empty)) failures++, printf("FAIL ig_fits takes an empty batch\n");
    checks++;
    if (wmma_faults) failures++;
    printf("%s every WMMA pointer 32-byte aligned, every ldm a multiple of 16 bytes (%d faults)\n",
           wmma_faults ? "FAIL" : "ok  ", wmma_faults);
    return check_summary("test_conv_ig_host");
}
