/* conv.cu: 2-D convolution, NCHW, on two paths chosen at run time by
 * KILN_CUDA_CONV (read at every call, so a test can flip it):
 *
 * im2col (the default): im2col + one SGEMM per chunk of images, backward as
 * col2im of a GEMM; chunks keep the column matrices under
 * CU_CONV_SCRATCH_FLOATS, as cpu.c does. Cost: the GEMMs' 2 OC CKK P flops
 * per image, plus im2col/col2im, which read and write CKK P floats per image
 * each (memory-bound; a quarter of the CNN step on the H200 before their
 * index arithmetic went 32-bit, see plane_grid), and the bias
 * gradient, each channel's row of the chunk summed in segments by blocks of
 * 256 and the segments added in order (two passes, no atomics). col2im gathers (one
 * thread per input pixel), so there are no atomics and results are
 * deterministic.
 *
 * implicit (KILN_CUDA_CONV=implicit): the three GEMMs (forward, input
 * gradient, weight gradient) read their operands straight from the NCHW
 * tensors, so no column matrix is written or read; the forward adds the
 * bias in its epilogue and the weight-gradient GEMM sums the bias gradient
 * from the fp32 output gradient it stages. See "implicit GEMM" below. */
#include "nn/cuda/cuda_int.cuh"

#include <mma.h>

using namespace nvcuda;

/* ------------------------------------------------------------ conv2d */

/* Same chunking as cpu.c, with a larger budget: the column matrices of one
 * chunk fit CU_CONV_SCRATCH_FLOATS. */
#define CU_CONV_SCRATCH_FLOATS (64u << 20)

static int conv_chunk(const kn_conv_shape *s)
{
    size_t P = (size_t)s->OH * s->OW, CKK = (size_t)s->C * s->K * s->K;
    size_t per_image = P * (2 * CKK + (size_t)s->OC);
    size_t nb = CU_CONV_SCRATCH_FLOATS / (per_image ? per_image : 1);
    if (nb < 1) nb = 1;
    if (nb > (size_t)s->B) nb = (size_t)s->B;
    return (int)nb;
}

static size_t ig_scratch(const kn_conv_shape *s);

/* Enough for either path (KILN_CUDA_CONV may change between calls). */
size_t kn_cu_conv2d_scratch(const kn_conv_shape *s)
{
    size_t P = (size_t)s->OH * s->OW, CKK = (size_t)s->C * s->K * s->K;
    size_t cols = (size_t)conv_chunk(s) * P * (2 * CKK + (size_t)s->OC), ig = ig_scratch(s);
    return cols > ig ? cols : ig;
}

#include "nn/cuda/conv_im2col.cuh" /* conv_dims, plane_grid, k_im2col, k_col2im */

static conv_dims dims_of(const kn_conv_shape *s)
{
    conv_dims d = {s->C, s->H, s->W, s->K, s->stride, s->pad, s->OH, s->OW};
    return d;
}

#include "nn/cuda/conv_bias.cuh" /* k_conv_out, k_conv_dt, k_rowsum_partial */

/* dbias[o] += sum of dt[o, :] (OC, NP): S segments per row for ~2000
 * blocks of 256, at least 4096 floats each, then the partials in order. */
static void rowsum_add(float *dbias, const float *dt, int OC, size_t NP)
{
    size_t S = (NP + 4095) / 4096, want = 2048 / (size_t)OC;
    if (S > want) S = want;
    if (S < 1) S = 1;
    const dim3 grid((unsigned)S, (unsigned)OC);
    if (S == 1) {
        k_rowsum_partial<<<grid, 256, 0, kn_cu_stream>>>(dbias, dt, OC, NP, 1, 1);
        LAUNCHED();
        return;
    }
    float *partial = kn_cu_scratch(S * OC);
    k_rowsum_partial<<<grid, 256, 0, kn_cu_stream>>>(partial, dt, OC, NP, (int)S, 0);
    LAUNCHED();
    kn_cu_col_partials_add(dbias, partial, (int)S, OC);
}

#include "nn/cuda/conv_ig.cuh" /* the implicit-GEMM kernels */

/* KILN_CUDA_CONV=implicit and the shape's indices fit an int */
static int ig_use(const kn_conv_shape *s)
{
    const char *e = getenv("KILN_CUDA_CONV");
    return e && strcmp(e, "implicit") == 0 && ig_fits(s);
}

static dim3 ig_grid(int M, int N, int G)
{
    return dim3((unsigned)((N + IG_BN - 1) / IG_BN), (unsigned)((M + IG_BM - 1) / IG_BM),
                (unsigned)G);
}

template <int PREC>
static void ig_fwd(float *out, const float *inp, const float *w, const float *bias,
                   const kn_conv_shape *s)
{
    const ig_geo g = geo_of(s);
    k_conv_fwd_ig<PREC><<<ig_grid(g.OC, g.B * g.KP, 1), IG_THREADS, 0, kn_cu_stream>>>(out, inp, w, bias, g);
    LAUNCHED();
}

template <int PREC>
static void ig_bwd(float *dinp, float *dw, float *dbias, const float *dout, const float *inp,
                   const float *w, float *scratch, const kn_conv_shape *s)
{
    const ig_geo g = geo_of(s);
    if (dinp) {
        k_conv_dinp_ig<PREC><<<ig_grid(g.C, g.B * g.HW, 1), IG_THREADS, 0, kn_cu_stream>>>(dinp, dout, w, g);
        LAUNCHED();
    }
    if (!dw && !dbias) return;
    int kchunk, G = ig_groups(s, &kchunk);
    const size_t MN = (size_t)g.OC * g.CKK;
    float *dwp = dw, *dbp = dbias;
    if (G > 1) dwp = dw ? scratch : NULL, dbp = dbias ? scratch + (size_t)G * MN : NULL;
    dim3 grid = ig_grid(g.OC, dw ? g.CKK : 1, G);
    k_conv_dw_ig<PREC><<<grid, IG_THREADS, 0, kn_cu_stream>>>(dwp, dbp, dout, inp, g, G, kchunk);
    LAUNCHED();
    if (G == 1) return;
    if (dw) kn_cu_col_partials_add(dw, dwp, G, (int)MN);
    if (dbias) kn_cu_col_partials_add(dbias, dbp, G, g.OC);
}

void kn_cu_conv2d_fwd(float *out, const float *inp, const float *w, const float *bias,
                      float *scratch, const kn_conv_shape *s)
{
    const int nbmax = conv_chunk(s), OC = s->OC, CKK = s->C * s->K * s->K;
    const size_t P = (size_t)s->OH * s->OW;
    float *col = scratch, *tmp = scratch + (size_t)nbmax * P * CKK;
    if (ig_use(s)) {
        if (kn_cu_precision == 1)
            ig_fwd<1>(out, inp, w, bias, s);
        else if (kn_cu_precision == 2)
            ig_fwd<2>(out, inp, w, bias, s);
        else
            ig_fwd<0>(out, inp, w, bias, s);
        return;
    }
    for (int b0 = 0; b0 < s->B; b0 += nbmax) {
        int nb = s->B - b0 < nbmax ? s->B - b0 : nbmax;
        int NP = (int)(nb * P);
        k_im2col<<<plane_grid(NP, CKK), 256, 0, kn_cu_stream>>>(col, inp, b0, nb, dims_of(s));
        LAUNCHED();
        kn_cu_gemm_rm(0, 0, OC, NP, CKK, 1.0f, w, CKK, col, NP, 0.0f, tmp, NP);
        k_conv_out<<<plane_grid((int)P, nb * OC), 256, 0, kn_cu_stream>>>(out, tmp, bias, b0, nb,
                                                                          OC, (int)P);
        LAUNCHED();
    }
}

void kn_cu_conv2d_bwd(float *dinp, float *dw, float *dbias, const float *dout, const float *inp,
                      const float *w, float *scratch, const kn_conv_shape *s)
{
    const int nbmax = conv_chunk(s), OC = s->OC, CKK = s->C * s->K * s->K;
    const size_t P = (size_t)s->OH * s->OW;
    float *col = scratch, *dcol = scratch + (size_t)nbmax * P * CKK;
    float *dt = dcol + (size_t)nbmax * P * CKK;
    if (ig_use(s)) {
        if (kn_cu_precision == 1)
            ig_bwd<1>(dinp, dw, dbias, dout, inp, w, scratch, s);
        else if (kn_cu_precision == 2)
            ig_bwd<2>(dinp, dw, dbias, dout, inp, w, scratch, s);
        else
            ig_bwd<0>(dinp, dw, dbias, dout, inp, w, scratch, s);
        return;
    }
    for (int b0 = 0; b0 < s->B; b0 += nbmax) {
        int nb = s->B - b0 < nbmax ? s->B - b0 : nbmax;
        int NP = (int)(nb * P);
        k_conv_dt<<<plane_grid((int)P, nb * OC), 256, 0, kn_cu_stream>>>(dt, dout, b0, nb, OC,
                                                                         (int)P);
        LAUNCHED();
        int bias_done = 0;
        if (dw) {
            k_im2col<<<plane_grid(NP, CKK), 256, 0, kn_cu_stream>>>(col, inp, b0, nb, dims_of(s));
            LAUNCHED();
            /* the bias gradient as the GEMM's epilogue where cuBLASLt has it */
            bias_done = kn_cu_gemm_rm_dbias(0, 1, OC, CKK, NP, dt, NP, col, NP, dw, CKK, dbias);
            if (!bias_done) kn_cu_gemm_rm(0, 1, OC, CKK, NP, 1.0f, dt, NP, col, NP, 1.0f, dw, CKK);
        }
        if (dbias && !bias_done) rowsum_add(dbias, dt, OC, (size_t)NP);
        if (dinp) {
            kn_cu_gemm_rm(1, 0, CKK, NP, OC, 1.0f, w, CKK, dt, NP, 0.0f, dcol, NP);
            k_col2im<<<plane_grid(s->H * s->W, nb * s->C), 256, 0, kn_cu_stream>>>(dinp, dcol, b0,
                                                                                   nb, dims_of(s));
            LAUNCHED();
        }
    }
}
