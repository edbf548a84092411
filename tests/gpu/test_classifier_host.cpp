/* test_classifier_host: the loss kernels of the CUDA backend
 * (lib/nn/cuda/classifier.cuh, launched by classifier.cu) compiled for the
 * host with tests/gpu/host_cuda.h's stand-ins and run there: each block's
 * threads are fibers, run warp by warp in ascending and then descending
 * order, shared memory NaN-poisoned, shuffles through the warp barrier.
 * The launches mirror classifier.cu's: k_xent_fwd and k_xent_bwd one block
 * of 256 a row; xent_fused by k_xent_fused_warp ((N + 7) / 8 blocks of 256)
 * for Vp <= 1024, else k_xent_fused_rows, a persistent grid of min(N, SMs)
 * blocks of 1024 (132 SMs as the H200, and 2 so that each block takes
 * several rows and reuses its shared memory); MSE as launched there; and
 * batchnorm.cu's label smoothing (xent_smooth.cuh) on top of xent_fwd,
 * xent_bwd.
 *
 * Checked against the CPU backend (cpu.c) by norm, as test_cuda_parity's
 * norm mode with fp32's tolerance for reordered sums (R_SUM 1e-4):
 * ||d - c|| <= 1e-4 ||c|| + 1e-6 sqrt(n); and exactly where backend.h
 * says what happens: xent_bwd leaves padded columns and ignored rows
 * untouched and adds elsewhere (checked as the increment over random
 * starting values); xent_fused sets every column (from NaN), 0 on padded
 * columns and ignored rows, and may run in place (dlogits == logits).
 * The padded columns of the logits are NaN: a read of one shows. Shapes:
 * V = 1, 31, 33, 768, 1000 and 1024 (warp kernel, Vp up to 1024), 1025,
 * 5000 and GPT-2's 50257 padded to 50304 (rows kernel); N not a multiple
 * of 8; ignored rows (-1); rows shifted by +-1e4 (exp overflows without the
 * max), rows with a target logit 60 above the rest (loss ~ 0) and rows
 * scaled by 100 (peaked). */
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

/* in a namespace of their own: kiln_nn (linked for the CPU backend) has
 * the device build's host stubs of the same kernels */
namespace dev {
#include "nn/cuda/reduce.cuh"
#include "nn/cuda/classifier.cuh"
#include "nn/cuda/xent_smooth.cuh" /* batchnorm.cu's label smoothing */
} // namespace dev
using namespace dev;

/* ------------------------------------------------------------ launching, as classifier.cu */

static int sms = 132; /* kn_cu_sms() on an H200 */

static void xent_fwd(float *losses, float *lse, const float *logits, const int *targets, int N,
                     int V, int Vp)
{
    launch(dim3((unsigned)N), 256, 0, [&] { k_xent_fwd(losses, lse, logits, targets, N, V, Vp); });
}

static void xent_bwd(float *dlogits, const float *logits, const float *lse, const int *targets,
                     float dloss, int N, int V, int Vp)
{
    launch(dim3((unsigned)N), 256, 0,
           [&] { k_xent_bwd(dlogits, logits, lse, targets, dloss, N, V, Vp); });
}

static void xent_fused(float *losses, float *lse, float *dlogits, const float *logits,
                       const int *targets, float dloss, int N, int V, int Vp)
{
    if (Vp <= KN_XENT_WARP_COLS)
        launch(dim3((unsigned)(N + 7) / 8), 256, 0, [&] {
            k_xent_fused_warp(losses, lse, dlogits, logits, targets, dloss, N, V, Vp);
        });
    else
        launch(dim3((unsigned)(N < sms ? N : sms)), 1024, 0, [&] {
            k_xent_fused_rows(losses, lse, dlogits, logits, targets, dloss, N, V, Vp);
        });
}

static void xent_smooth_fwd(float *losses, const float *logits, const float *lse,
                            const int *targets, float sm, int N, int V, int Vp)
{
    launch(dim3((unsigned)(N + 7) / 8), 256, 0,
           [&] { k_xent_smooth_fwd(losses, logits, lse, targets, sm, N, V, Vp); });
}

static void xent_smooth_bwd(float *dlogits, const int *targets, float sdloss, int N, int V, int Vp)
{
    launch(dim3(blocks_for((size_t)N * V, 256)), 256, 0,
           [&] { k_xent_smooth_bwd(dlogits, targets, sdloss, N, V, Vp); });
}

static void mse_fwd(float *losses, const float *pred, const float *y, int N, int D)
{
    launch(dim3(blocks_for((size_t)N, 128)), 128, 0, [&] { k_mse_fwd(losses, pred, y, N, D); });
}

static void mse_bwd(float *dpred, const float *pred, const float *y, float dloss, int N, int D)
{
    const size_t n = (size_t)N * D;
    launch(dim3(blocks_for(n, 256)), 256, 0,
           [&] { k_mse_bwd(dpred, pred, y, 2.0f * dloss / (float)D, n); });
}

/* ------------------------------------------------------------ the check */

#include "host_check.h"

#define R_SUM 1e-4

/* exact: the elements of d outside rows with a target and columns < V
 * equal want (the starting values, or 0) bit for bit */
static void check_untouched(const char *what, const char *shape, const float *d, const float *want,
                            const int *t, int N, int V, int Vp)
{
    size_t bad = 0, n = 0;
    for (int r = 0; r < N; r++)
        for (int c = 0; c < Vp; c++) {
            if (t[r] >= 0 && c < V) continue;
            const size_t i = (size_t)r * Vp + c;
            n++;
            if (memcmp(&d[i], want ? &want[i] : &(const float &)0.0f, 4)) bad++;
        }
    verdict(bad == 0, what, shape, "n=%-8zu %zu differ", n, bad);
}

static void run(int N, int V, int Vp)
{
    const size_t n = (size_t)N * Vp;
    std::vector<float> logits(n, NAN), d0(n);
    std::vector<int> t(N);
    for (int r = 0; r < N; r++) {
        t[r] = r % 3 == 2 ? -1 : (int)((frand() + 1.0f) * 0.5f * V) % V;
        const int kind = r % 5;
        for (int c = 0; c < V; c++) {
            float x = 2.0f * frand();
            if (kind == 1) x += 1e4f;  /* exp overflows without the max */
            if (kind == 3) x -= 1e4f;
            if (kind == 4) x *= 100.0f; /* peaked */
            logits[(size_t)r * Vp + c] = x;
        }
        if (kind == 2 && t[r] >= 0) logits[(size_t)r * Vp + t[r]] += 60.0f; /* loss ~ 0 */
    }
    for (auto &f : d0)
        f = frand();
    char shape[64];
    snprintf(shape, sizeof(shape), "N%d V%d Vp%d%s", N, V, Vp, reverse_order ? " rev" : "");
    const float dloss = 0.25f;
    const kn_backend *cpu = kn_backend_cpu();
    /* lse is checked less each row's max (log of the row's sum, a few
     * units): the rows shifted by 1e4 would otherwise hide the others */
    std::vector<float> mx(N, -INFINITY);
    for (int r = 0; r < N; r++)
        for (int c = 0; c < V; c++)
            mx[r] = fmaxf(mx[r], logits[(size_t)r * Vp + c]);
    auto less_max = [&](const std::vector<float> &z) {
        std::vector<float> o(N);
        for (int r = 0; r < N; r++)
            o[r] = z[r] - mx[r];
        return o;
    };

    /* xent_fwd, xent_bwd (+=) */
    std::vector<float> loss(N, NAN), lse(N, NAN), dl(d0);
    std::vector<float> rloss(N), rlse(N), rdl(d0);
    xent_fwd(loss.data(), lse.data(), logits.data(), t.data(), N, V, Vp);
    xent_bwd(dl.data(), logits.data(), lse.data(), t.data(), dloss, N, V, Vp);
    cpu->xent_fwd(rloss.data(), rlse.data(), logits.data(), t.data(), N, V, Vp);
    cpu->xent_bwd(rdl.data(), logits.data(), rlse.data(), t.data(), dloss, N, V, Vp);
    std::vector<float> g(n), rg(n);
    for (size_t i = 0; i < n; i++)
        g[i] = dl[i] - d0[i], rg[i] = rdl[i] - d0[i];
    check_parity("xent_fwd losses", shape, loss.data(), rloss.data(), N, R_SUM);
    check_parity("xent_fwd lse - max", shape, less_max(lse).data(), less_max(rlse).data(), N,
                 R_SUM);
    check_parity("xent_bwd (+=)", shape, g.data(), rg.data(), n, R_SUM);
    check_untouched("xent_bwd pad/ignored", shape, dl.data(), d0.data(), t.data(), N, V, Vp);

    /* label smoothing (batchnorm.cu) on top: losses turned, dlogits += */
    xent_smooth_fwd(loss.data(), logits.data(), lse.data(), t.data(), 0.1f, N, V, Vp);
    xent_smooth_bwd(dl.data(), t.data(), 0.1f * dloss, N, V, Vp);
    cpu->xent_smooth_fwd(rloss.data(), logits.data(), rlse.data(), t.data(), 0.1f, N, V, Vp);
    cpu->xent_smooth_bwd(rdl.data(), t.data(), 0.1f * dloss, N, V, Vp);
    for (size_t i = 0; i < n; i++)
        g[i] = dl[i] - d0[i], rg[i] = rdl[i] - d0[i];
    check_parity("smooth_fwd losses", shape, loss.data(), rloss.data(), N, R_SUM);
    check_parity("smooth_bwd (+=)", shape, g.data(), rg.data(), n, R_SUM);
    check_untouched("smooth_bwd pad/ignored", shape, dl.data(), d0.data(), t.data(), N, V, Vp);

    /* xent_fused, dlogits set from NaN */
    std::vector<float> fl(N, NAN), fz(N, NAN), fd(n, NAN), rfl(N), rfz(N), rfd(n, NAN);
    xent_fused(fl.data(), fz.data(), fd.data(), logits.data(), t.data(), dloss, N, V, Vp);
    cpu->xent_fused(rfl.data(), rfz.data(), rfd.data(), logits.data(), t.data(), dloss, N, V, Vp);
    check_parity("xent_fused losses", shape, fl.data(), rfl.data(), N, R_SUM);
    check_parity("xent_fused lse - max", shape, less_max(fz).data(), less_max(rfz).data(), N,
                 R_SUM);
    check_parity("xent_fused dlogits", shape, fd.data(), rfd.data(), n, R_SUM);
    check_untouched("xent_fused pad/ign. 0", shape, fd.data(), NULL, t.data(), N, V, Vp);

    /* in place: dlogits == logits */
    std::vector<float> ip(logits), il(N, NAN), iz(N, NAN);
    xent_fused(il.data(), iz.data(), ip.data(), ip.data(), t.data(), dloss, N, V, Vp);
    check_parity("fused in place losses", shape, il.data(), rfl.data(), N, R_SUM);
    check_parity("fused in place lse-max", shape, less_max(iz).data(), less_max(rfz).data(), N,
                 R_SUM);
    check_parity("fused in place dlogits", shape, ip.data(), rfd.data(), n, R_SUM);

    if (Vp > KN_XENT_WARP_COLS) { /* the persistent grid, several rows a block */
        const int keep = sms;
        sms = 2;
        std::vector<float> pl(N, NAN), pz(N, NAN), pd(logits);
        xent_fused(pl.data(), pz.data(), pd.data(), pd.data(), t.data(), dloss, N, V, Vp);
        sms = keep;
        check_parity("fused 2 blocks losses", shape, pl.data(), rfl.data(), N, R_SUM);
        check_parity("fused 2 blocks lse-max", shape, less_max(pz).data(), less_max(rfz).data(), N,
                     R_SUM);
        check_parity("fused 2 blocks dlogits", shape, pd.data(), rfd.data(), n, R_SUM);
    }
}

static void run_mse(int N, int D)
{
    const size_t n = (size_t)N * D;
    std::vector<float> p(n), y(n), d0(n);
    for (size_t i = 0; i < n; i++)
        p[i] = frand(), y[i] = frand(), d0[i] = frand();
    char shape[64];
    snprintf(shape, sizeof(shape), "N%d D%d%s", N, D, reverse_order ? " rev" : "");
    const kn_backend *cpu = kn_backend_cpu();
    std::vector<float> l(N, NAN), rl(N), d(d0), rd(d0);
    mse_fwd(l.data(), p.data(), y.data(), N, D);
    mse_bwd(d.data(), p.data(), y.data(), 0.5f, N, D);
    cpu->mse_fwd(rl.data(), p.data(), y.data(), N, D);
    cpu->mse_bwd(rd.data(), p.data(), y.data(), 0.5f, N, D);
    for (size_t i = 0; i < n; i++)
        d[i] -= d0[i], rd[i] -= d0[i];
    check_parity("mse_fwd", shape, l.data(), rl.data(), N, R_SUM);
    check_parity("mse_bwd (+=)", shape, d.data(), rd.data(), n, R_SUM);
}

int main(void)
{
    for (reverse_order = 0; reverse_order < 2; reverse_order++) {
        run(5, 1, 1);
        run(9, 31, 32);
        run(10, 33, 40);
        run(17, 768, 768);
        run(9, 1000, 1024);
        run(6, 1024, 1024);
        run(7, 1025, 1040);
        run(5, 5000, 5000);
        run(4, 50257, 50304);
        run_mse(300, 3);
        run_mse(7, 100);
    }
    if (launch_faults) {
        printf("FAIL %d launches refused\n", launch_faults);
        failures++;
    }
    return check_summary("test_classifier_host");
}
