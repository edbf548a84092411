/* test_im2col_host: the CUDA backend's im2col-path convolution kernels
 * (lib/nn/cuda/conv_im2col.cuh: k_im2col, k_col2im on plane_grid's 2-D
 * grid; conv.cu's default path) compiled for the host with
 * tests/gpu/host_cuda.h's stand-ins and run there:
 *
 * - k_im2col into a NaN-poisoned column matrix, bit for bit a direct
 *   im2col (zeros in the padding), and k_col2im adding to a random input
 *   gradient, bit for bit a scatter of the column matrix in row order (the
 *   same additions in the same order: kh, then kw), each for a chunk of
 *   images that starts past image 0 (b0 > 0, as conv.cu's chunks do) on
 *   plane_grid's grid and on a 2 x 3 grid (both loops wrap);
 * - the whole im2col path as conv.cu runs it for one chunk: k_im2col, a
 *   GEMM on the host, k_conv_out (conv_bias.cuh) for the forward;
 *   k_conv_dt, the transposed GEMM, k_col2im for the input gradient;
 *   against the CPU backend's conv2d_fwd / conv2d_bwd by test_cuda_parity's
 *   per-element tolerance for sums (1e-4 |cpu| + 1e-6 max(1, max |cpu|));
 * - strides 1 and 2, padding 0, 1 and 2, kernels 1, 3 and 5, odd sizes.
 *
 * What it cannot check: cuBLAS's GEMMs (test_cuda_parity does, on a GPU),
 * timing. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <vector>

extern "C" {
#include "nn/backend.h"
}

#include "host_cuda.h"
#include "nn/cuda/grid.cuh"   /* blocks_for, plane_grid */
#include "nn/cuda/reduce.cuh" /* conv_bias.cuh's k_rowsum_partial sums by warp */

/* in a namespace: kiln_nn (linked for the CPU backend) has the device
 * build's host stubs of the same kernels */
namespace dev
{
#include "nn/cuda/conv_bias.cuh"
#include "nn/cuda/conv_im2col.cuh"
} // namespace dev
using namespace dev;

#include "host_check.h"

static const double TOL = 1e-4; /* test_cuda_parity's R_SUM */

/* f(j, i) for each entry j of the column matrix of images [b0, b0 + nb)
 * in row order ((c, kh, kw), then image, output pixel): i the input element
 * it reads, -1 in the padding */
template <class F> static void for_each_col(const kn_conv_shape &s, int b0, int nb, F f)
{
    const int P = s.OH * s.OW, K = s.K;
    const size_t NP = (size_t)nb * P, HW = (size_t)s.H * s.W;
    for (int c = 0; c < s.C; c++)
        for (int kh = 0; kh < K; kh++)
            for (int kw = 0; kw < K; kw++)
                for (int b = 0; b < nb; b++)
                    for (int oh = 0; oh < s.OH; oh++)
                        for (int ow = 0; ow < s.OW; ow++) {
                            const int ih = oh * s.stride - s.pad + kh,
                                      iw = ow * s.stride - s.pad + kw;
                            const size_t j = ((size_t)(c * K + kh) * K + kw) * NP + (size_t)b * P +
                                             oh * s.OW + ow;
                            const int in = ih >= 0 && ih < s.H && iw >= 0 && iw < s.W;
                            f(j,
                              in ? (long)(((size_t)(b0 + b) * s.C + c) * HW + ih * s.W + iw) : -1L);
                        }
}

/* out (M, N) = op(A) op(B), row-major, float accumulation in k order */
static void gemm(int ta, int M, int N, int K, const float *A, const float *B, float *out)
{
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            float acc = 0.0f;
            for (int k = 0; k < K; k++)
                acc += (ta ? A[(size_t)k * M + i] : A[(size_t)i * K + k]) * B[(size_t)k * N + j];
            out[(size_t)i * N + j] = acc;
        }
}

static void run(int B, int C, int H, int W, int OC, int K, int S, int pad, int b0, int nb)
{
    kn_conv_shape s = {
        B, C, H, W, OC, K, S, pad, (H + 2 * pad - K) / S + 1, (W + 2 * pad - K) / S + 1};
    const conv_dims d = {C, H, W, K, S, pad, s.OH, s.OW};
    const int P = s.OH * s.OW, NP = nb * P, CKK = C * K * K, HW = H * W;
    const size_t nin = (size_t)B * C * HW, ncol = (size_t)CKK * NP;
    char shape[80];
    snprintf(shape, sizeof shape, "B%d C%d %dx%d OC%d K%d S%d p%d [%d,+%d)", B, C, H, W, OC, K, S,
             pad, b0, nb);
    std::vector<float> x(nin);
    for (auto &f : x)
        f = frand();

    /* the direct im2col of images [b0, b0 + nb) */
    std::vector<float> ref(ncol);
    for_each_col(s, b0, nb, [&](size_t j, long i) { ref[j] = i < 0 ? 0.0f : x[(size_t)i]; });
    const float *px = x.data();
    for (int small = 0; small < 2; small++) {
        std::vector<float> col(ncol, NAN);
        float *pc = col.data();
        launch(small ? dim3(2, 3) : plane_grid(NP, CKK), 256, 0,
               [&] { k_im2col(pc, px, b0, nb, d); });
        check_bits(small ? "im2col 2x3" : "im2col", shape, pc, ref.data(), ncol);
    }

    /* col2im: a random column gradient scattered in row order onto a
     * random input gradient (only images [b0, b0 + nb) change) */
    std::vector<float> dcol(ncol), dx0(nin);
    for (auto &f : dcol)
        f = frand();
    for (auto &f : dx0)
        f = frand();
    std::vector<float> acc(nin, 0.0f), want(dx0);
    for_each_col(s, b0, nb, [&](size_t j, long i) {
        if (i >= 0) acc[(size_t)i] += dcol[j];
    });
    for (size_t i = (size_t)b0 * C * HW; i < (size_t)(b0 + nb) * C * HW; i++)
        want[i] += acc[i];
    const float *pdc = dcol.data();
    for (int small = 0; small < 2; small++) {
        std::vector<float> dx(dx0);
        float *pdx = dx.data();
        launch(small ? dim3(2, 3) : plane_grid(HW, nb * C), 256, 0,
               [&] { k_col2im(pdx, pdc, b0, nb, d); });
        check_bits(small ? "col2im 2x3" : "col2im", shape, pdx, want.data(), nin);
    }

    /* the path of conv.cu with the whole batch as one chunk, against the CPU */
    if (b0 != 0 || nb != B) return;
    const kn_backend *cpu = kn_backend_cpu();
    std::vector<float> w((size_t)OC * CKK), bias((size_t)OC), dout((size_t)B * OC * P);
    for (auto &f : w)
        f = frand();
    for (auto &f : bias)
        f = frand();
    for (auto &f : dout)
        f = frand();
    std::vector<float> scratch(cpu->conv2d_scratch(&s)), out((size_t)B * OC * P, NAN);
    cpu->conv2d_fwd(out.data(), px, w.data(), bias.data(), scratch.data(), &s);
    std::vector<float> col(ncol, NAN), tmp((size_t)OC * NP, NAN), kout(out.size(), NAN);
    float *pc = col.data(), *pt = tmp.data(), *pko = kout.data();
    const float *pb = bias.data();
    launch(plane_grid(NP, CKK), 256, 0, [&] { k_im2col(pc, px, 0, nb, d); });
    gemm(0, OC, NP, CKK, w.data(), pc, pt);
    launch(plane_grid(P, nb * OC), 256, 0, [&] { k_conv_out(pko, pt, pb, 0, nb, OC, P); });
    check_elem("fwd vs cpu", shape, pko, out.data(), out.size(), TOL);

    std::vector<float> dx(dx0), kdx(dx0), dw((size_t)OC * CKK, 0.0f), dt((size_t)OC * NP, NAN);
    cpu->conv2d_bwd(dx.data(), dw.data(), NULL, dout.data(), px, w.data(), scratch.data(), &s);
    float *pdt = dt.data(), *pkdx = kdx.data();
    const float *pg = dout.data();
    launch(plane_grid(P, nb * OC), 256, 0, [&] { k_conv_dt(pdt, pg, 0, nb, OC, P); });
    gemm(1, CKK, NP, OC, w.data(), pdt, pc); /* dcol = w^T dt, into col */
    launch(plane_grid(HW, nb * C), 256, 0, [&] { k_col2im(pkdx, pc, 0, nb, d); });
    for (size_t i = 0; i < nin; i++)
        kdx[i] -= dx0[i], dx[i] -= dx0[i];
    check_elem("dinp vs cpu", shape, pkdx, dx.data(), nin, TOL);
}

int main(void)
{
    run(3, 1, 28, 28, 4, 3, 1, 1, 1, 2); /* a CNN's first layer, chunk of images 1-2 */
    run(2, 1, 28, 28, 4, 3, 1, 1, 0, 2);
    run(2, 3, 9, 7, 5, 3, 2, 1, 0, 2); /* stride 2, odd sizes */
    run(3, 3, 9, 7, 5, 3, 2, 1, 2, 1);
    run(2, 2, 8, 8, 3, 5, 1, 0, 0, 2);    /* K 5, no padding */
    run(2, 2, 8, 8, 3, 5, 2, 2, 1, 1);    /* K 5, stride 2, padding 2 */
    run(2, 4, 5, 6, 3, 1, 1, 0, 0, 2);    /* K 1 */
    run(2, 8, 14, 14, 16, 3, 1, 1, 0, 2); /* a second layer */
    return check_summary("test_im2col_host");
}
