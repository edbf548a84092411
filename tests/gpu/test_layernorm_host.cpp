/* test_layernorm_host: the layer-normalisation kernels of the CUDA backend
 * (lib/nn/cuda/layernorm.cuh, launched by layernorm.cu) compiled for the
 * host with tests/gpu/host_cuda.h's stand-ins and run there: each block's
 * threads are fibers, run warp by warp in ascending and then descending
 * order, shared memory NaN-poisoned, shuffles through the warp barrier.
 * The launches mirror layernorm.cu's: KN_LN_DISPATCH's choice between the
 * register kernels (C <= 1024) and the looping ones, 8 rows (warps) a
 * block of 256, and dw/db's two passes: k_layernorm_wb_partial over a grid
 * of (column tiles, G chunks) with blocks of (32, 8), G from
 * kn_cu_col_chunks, straight into dw/db when G = 1, else into a
 * NaN-poisoned partials buffer added by a mirror of matmul.cu's
 * k_col_partials_add (one column a thread, the G partials in order).
 *
 * Checked against the CPU backend (cpu.c) by norm, as test_cuda_parity's
 * norm mode with fp32's tolerance for reordered sums (R_SUM 1e-4):
 * ||d - c|| <= 1e-4 ||c|| + 1e-6 sqrt(n). Gradients are checked as the
 * increment over random starting values (backend.h: they accumulate), so a
 * write that should add fails. Shapes: C = 1, 31, 33, 100, 200, 500, 768,
 * 1024 (each register kernel), 1025 and 2000 (the looping ones), and the
 * looping kernels forced on small C too; N not a multiple of 8 rows a block
 * and past 64 rows (G > 1 chunks, partial last chunk); rows offset by 100
 * and constant rows (variance 0). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <vector>

extern "C" {
#include "nn/backend.h"
}

#include "host_cuda.h"

/* in a namespace of their own: kiln_nn (linked for the CPU backend) has
 * the device build's host stubs of the same kernels */
namespace dev {
#include "nn/cuda/reduce.cuh"
#include "nn/cuda/layernorm.cuh"
} // namespace dev
using namespace dev;

/* ------------------------------------------------------------ launching, as layernorm.cu */

static int force_loop; /* the looping kernels whatever C */

/* KN_LN_DISPATCH with host launches */
#define LN_DISPATCH(kernel, fallback, C, grid, ...)                                                \
    do {                                                                                           \
        const int n_ = ((C) + 31) / 32;                                                            \
        if (force_loop)                                                                            \
            launch(grid, 256, 0, [&] { fallback(__VA_ARGS__); });                                  \
        else if (n_ <= 1)                                                                          \
            launch(grid, 256, 0, [&] { kernel<1>(__VA_ARGS__); });                                 \
        else if (n_ <= 2)                                                                          \
            launch(grid, 256, 0, [&] { kernel<2>(__VA_ARGS__); });                                 \
        else if (n_ <= 4)                                                                          \
            launch(grid, 256, 0, [&] { kernel<4>(__VA_ARGS__); });                                 \
        else if (n_ <= 8)                                                                          \
            launch(grid, 256, 0, [&] { kernel<8>(__VA_ARGS__); });                                 \
        else if (n_ <= 16)                                                                         \
            launch(grid, 256, 0, [&] { kernel<16>(__VA_ARGS__); });                                \
        else if (n_ <= 32)                                                                         \
            launch(grid, 256, 0, [&] { kernel<32>(__VA_ARGS__); });                                \
        else                                                                                       \
            launch(grid, 256, 0, [&] { fallback(__VA_ARGS__); });                                  \
    } while (0)

static void ln_fwd(float *out, float *mean, float *rstd, const float *inp, const float *w,
                   const float *b, int N, int C)
{
    LN_DISPATCH(k_layernorm_fwd_reg, k_layernorm_fwd, C, dim3((unsigned)(N + 7) / 8), out, mean,
                rstd, inp, w, b, N, C);
}

/* matmul.cu's k_col_partials_add (pass 2), one column a thread */
static void col_partials_add(float *dst, const float *partial, int G, int C)
{
    for (int c = 0; c < C; c++) {
        float s = 0.0f;
        for (int g = 0; g < G; g++)
            s += partial[(size_t)g * C + c];
        dst[c] += s;
    }
}

static int last_G; /* the chunks the last ln_bwd used */

static void ln_bwd(float *dinp, float *dw, float *db, const float *dout, const float *inp,
                   const float *w, const float *mean, const float *rstd, int N, int C)
{
    if (dinp)
        LN_DISPATCH(k_layernorm_bwd_inp_reg, k_layernorm_bwd_inp, C, dim3((unsigned)(N + 7) / 8),
                    dinp, dout, inp, w, mean, rstd, N, C);
    if (dw || db) {
        const int G = kn_cu_col_chunks(N, C);
        last_G = G;
        const dim3 block(KN_CU_COL_TILE, KN_CU_COL_WARPS);
        const dim3 grid((C + KN_CU_COL_TILE - 1) / KN_CU_COL_TILE, G);
        if (G == 1) {
            launch(grid, block, 0,
                   [&] { k_layernorm_wb_partial(dw, db, dout, inp, mean, rstd, N, C, 1, 1); });
            return;
        }
        std::vector<float> scratch((size_t)2 * G * C, NAN); /* kn_cu_scratch, never cleared */
        float *pw = scratch.data(), *pb = pw + (size_t)G * C;
        launch(grid, block, 0, [&] {
            k_layernorm_wb_partial(dw ? pw : NULL, db ? pb : NULL, dout, inp, mean, rstd, N, C, G,
                                   0);
        });
        if (dw) col_partials_add(dw, pw, G, C);
        if (db) col_partials_add(db, pb, G, C);
    }
}

/* ------------------------------------------------------------ the check */

#include "host_check.h"

#define R_SUM 1e-4

static void run(int N, int C, int alone = 0)
{
    const size_t n = (size_t)N * C;
    std::vector<float> x(n), w(C), b(C), dout(n), dx0(n), dw0(C), db0(C);
    for (int r = 0; r < N; r++)
        for (int c = 0; c < C; c++) {
            float v = frand();
            if (r % 5 == 3) v = 100.0f + 0.5f * v; /* an offset row (see out/double) */
            if (r % 7 == 5) v = 0.25f;             /* a constant row: variance 0 */
            x[(size_t)r * C + c] = v;
        }
    for (int c = 0; c < C; c++)
        w[c] = 1.0f + 0.5f * frand(), b[c] = 0.1f * frand(), dw0[c] = frand(), db0[c] = frand();
    for (size_t i = 0; i < n; i++)
        dout[i] = frand(), dx0[i] = frand();
    char shape[64];
    snprintf(shape, sizeof(shape), "N%d C%d%s%s", N, C, force_loop ? " loop" : "",
             reverse_order ? " rev" : "");

    /* the kernels */
    std::vector<float> out(n, NAN), mean(N, NAN), rstd(N, NAN), dx(dx0), dw(dw0), db(db0);
    ln_fwd(out.data(), mean.data(), rstd.data(), x.data(), w.data(), b.data(), N, C);
    ln_bwd(dx.data(), dw.data(), db.data(), dout.data(), x.data(), w.data(), mean.data(),
           rstd.data(), N, C);
    snprintf(shape + strlen(shape), sizeof(shape) - strlen(shape), " G%d", last_G);

    /* the CPU backend */
    const kn_backend *cpu = kn_backend_cpu();
    std::vector<float> rout(n), rmean(N), rrstd(N), rdx(dx0), rdw(dw0), rdb(db0);
    cpu->layernorm_fwd(rout.data(), rmean.data(), rrstd.data(), x.data(), w.data(), b.data(), N,
                       C);
    cpu->layernorm_bwd(rdx.data(), rdw.data(), rdb.data(), dout.data(), x.data(), w.data(),
                       rmean.data(), rrstd.data(), N, C);
    check_parity("out", shape, out.data(), rout.data(), n, R_SUM);
    /* out in double (two passes, as both), the kernel's and the CPU's: at
     * offset 100 the CPU's sequential fp32 sums were off by 1.5e-4 where
     * the kernel's were within 5e-6 (2026-12-01); cpu.c sums in double
     * since */
    std::vector<float> dout_d(n);
    for (int r = 0; r < N; r++) {
        const float *xr = &x[(size_t)r * C];
        double m = 0, v = 0;
        for (int c = 0; c < C; c++)
            m += xr[c];
        m /= C;
        for (int c = 0; c < C; c++)
            v += (xr[c] - m) * (xr[c] - m);
        const double rs = 1.0 / sqrt(v / C + 1e-5);
        for (int c = 0; c < C; c++)
            dout_d[(size_t)r * C + c] = (float)((xr[c] - m) * rs * w[c] + b[c]);
    }
    check_parity("out/double", shape, out.data(), dout_d.data(), n, R_SUM);
    check_parity("cpu out/double", shape, rout.data(), dout_d.data(), n, R_SUM);
    check_parity("mean", shape, mean.data(), rmean.data(), N, R_SUM);
    check_parity("rstd", shape, rstd.data(), rrstd.data(), N, R_SUM);
    check_parity("dinp (+=)", shape, increments(dx, dx0).data(), increments(rdx, dx0).data(), n,
                 R_SUM);
    check_parity("dw (+=)", shape, increments(dw, dw0).data(), increments(rdw, dw0).data(), C,
                 R_SUM);
    check_parity("db (+=)", shape, increments(db, db0).data(), increments(rdb, db0).data(), C,
                 R_SUM);

    /* one output at a time: NULL dinp, dw, db skipped; the others untouched */
    if (!alone) return;
    std::vector<float> dw2(dw0), db2(db0), dx2(dx0);
    ln_bwd(NULL, dw2.data(), NULL, dout.data(), x.data(), w.data(), mean.data(), rstd.data(), N,
           C);
    ln_bwd(NULL, NULL, db2.data(), dout.data(), x.data(), w.data(), mean.data(), rstd.data(), N,
           C);
    ln_bwd(dx2.data(), NULL, NULL, dout.data(), x.data(), w.data(), mean.data(), rstd.data(), N,
           C);
    check_parity("dw alone", shape, increments(dw2, dw0).data(), increments(rdw, dw0).data(), C,
                 R_SUM);
    check_parity("db alone", shape, increments(db2, db0).data(), increments(rdb, db0).data(), C,
                 R_SUM);
    check_parity("dinp alone", shape, increments(dx2, dx0).data(), increments(rdx, dx0).data(), n,
                 R_SUM);
}

int main(void)
{
    static const int shapes[][3] = {
        /* N, C, and whether to run each output alone too */
        {1, 1, 1},    {7, 31, 0},   {9, 33, 1},  {13, 100, 0}, {10, 200, 0},
        {11, 500, 0}, {5, 768, 1},  {3, 1024, 0}, {9, 1025, 1}, {4, 2000, 0},
        {65, 1, 1},   {200, 33, 1}, {130, 768, 0}, {300, 3, 0},  {77, 64, 0},
    };
    for (reverse_order = 0; reverse_order < 2; reverse_order++) {
        for (const auto &s : shapes)
            run(s[0], s[1], s[2]);
        force_loop = 1;
        run(7, 31), run(9, 33, 1), run(13, 768);
        force_loop = 0;
    }
    if (launch_faults) {
        printf("FAIL %d launches refused\n", launch_faults);
        failures++;
    }
    return check_summary("test_layernorm_host");
}
