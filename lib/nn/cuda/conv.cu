/* conv.cu: 2-D convolution as im2col + one SGEMM per chunk of images,
 * backward as col2im of a GEMM; chunks keep the column matrices under
 * CU_CONV_SCRATCH_FLOATS, as cpu.c does. Cost: the GEMMs' 2 OC CKK P flops
 * per image, plus im2col/col2im, which read and write CKK P floats per image
 * each (memory-bound; a quarter of the CNN step on the H200), and the bias
 * gradient, each channel's row of the chunk summed in segments by blocks of
 * 256 and the segments added in order (two passes, no atomics). col2im gathers (one
 * thread per input pixel), so there are no atomics and results are
 * deterministic. */
#include "nn/cuda/cuda_int.cuh"

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

size_t kn_cu_conv2d_scratch(const kn_conv_shape *s)
{
    size_t P = (size_t)s->OH * s->OW, CKK = (size_t)s->C * s->K * s->K;
    return (size_t)conv_chunk(s) * P * (2 * CKK + (size_t)s->OC);
}

struct conv_dims {
    int C, H, W, K, S, pad, OH, OW;
};

static conv_dims dims_of(const kn_conv_shape *s)
{
    conv_dims d = {s->C, s->H, s->W, s->K, s->stride, s->pad, s->OH, s->OW};
    return d;
}

/* col (C*K*K, nb*P) from images [b0, b0 + nb): one thread per column element */
__global__ void k_im2col(float *col, const float *inp, int b0, int nb, conv_dims d)
{
    const size_t P = (size_t)d.OH * d.OW, ld = (size_t)nb * P;
    const size_t n = (size_t)d.C * d.K * d.K * ld;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        size_t row = i / ld, j = i % ld;
        int b = (int)(j / P), p = (int)(j % P);
        int oh = p / d.OW, ow = p % d.OW;
        int kw = (int)(row % d.K), kh = (int)(row / d.K % d.K), c = (int)(row / d.K / d.K);
        int ih = oh * d.S - d.pad + kh, iw = ow * d.S - d.pad + kw;
        float v = 0.0f;
        if (ih >= 0 && ih < d.H && iw >= 0 && iw < d.W)
            v = inp[(((size_t)(b0 + b) * d.C + c) * d.H + ih) * d.W + iw];
        col[i] = v;
    }
}

/* dinp += col2im(dcol) for images [b0, b0 + nb): one thread per input pixel
 * gathers every column entry that read it (no atomics, fixed order). */
__global__ void k_col2im(float *dinp, const float *dcol, int b0, int nb, conv_dims d)
{
    const size_t P = (size_t)d.OH * d.OW, ld = (size_t)nb * P;
    const size_t n = (size_t)nb * d.C * d.H * d.W;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        int iw = (int)(i % d.W), ih = (int)(i / d.W % d.H), c = (int)(i / d.W / d.H % d.C);
        int b = (int)(i / d.W / d.H / d.C);
        float acc = 0.0f;
        for (int kh = 0; kh < d.K; kh++) {
            int th = ih + d.pad - kh; /* = oh * S */
            if (th < 0 || th % d.S) continue;
            int oh = th / d.S;
            if (oh >= d.OH) continue;
            for (int kw = 0; kw < d.K; kw++) {
                int tw = iw + d.pad - kw;
                if (tw < 0 || tw % d.S) continue;
                int ow = tw / d.S;
                if (ow >= d.OW) continue;
                size_t row = ((size_t)c * d.K + kh) * d.K + kw;
                acc += dcol[row * ld + (size_t)b * P + (size_t)oh * d.OW + ow];
            }
        }
        dinp[((size_t)(b0 + b) * d.C + c) * d.H * d.W + (size_t)ih * d.W + iw] += acc;
    }
}

/* out[b0+b, o, p] = tmp[o, b*P + p] + bias[o] */
__global__ void k_conv_out(float *out, const float *tmp, const float *bias, int b0, int nb, int OC,
                           size_t P)
{
    const size_t n = (size_t)nb * OC * P, NP = (size_t)nb * P;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        size_t p = i % P;
        int o = (int)(i / P % OC), b = (int)(i / P / OC);
        out[((size_t)(b0 + b) * OC + o) * P + p] =
            tmp[(size_t)o * NP + (size_t)b * P + p] + (bias ? bias[o] : 0.0f);
    }
}

/* dt[o, b*P + p] = dout[b0+b, o, p] */
__global__ void k_conv_dt(float *dt, const float *dout, int b0, int nb, int OC, size_t P)
{
    const size_t n = (size_t)nb * OC * P, NP = (size_t)nb * P;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        size_t p = i % P;
        int o = (int)(i / P % OC), b = (int)(i / P / OC);
        dt[(size_t)o * NP + (size_t)b * P + p] = dout[((size_t)(b0 + b) * OC + o) * P + p];
    }
}

/* Pass 1 of the bias gradient: partial[s OC + o] = sum of segment s (of S)
 * of row o of dt (OC, NP); with add (S = 1) partial is dbias and the sum is
 * added. 256 threads stride over the segment, then warp sums (fixed xor
 * tree) and the 8 warps' sums in order: deterministic. */
__global__ void k_rowsum_partial(float *partial, const float *dt, int OC, size_t NP, int S, int add)
{
    __shared__ float ws[8];
    const int o = blockIdx.y, seg = blockIdx.x;
    const size_t L = (NP + S - 1) / S, j0 = (size_t)seg * L, j1 = j0 + L < NP ? j0 + L : NP;
    const float *row = dt + (size_t)o * NP;
    float acc = 0.0f;
    for (size_t j = j0 + threadIdx.x; j < j1; j += blockDim.x)
        acc += row[j];
    acc = warp_sum(acc);
    if (threadIdx.x % 32 == 0) ws[threadIdx.x / 32] = acc;
    __syncthreads();
    if (threadIdx.x) return;
    acc = ws[0];
    for (int w = 1; w < 8; w++)
        acc += ws[w];
    if (add)
        partial[o] += acc;
    else
        partial[(size_t)seg * OC + o] = acc;
}

/* dbias[o] += sum of dt[o, :] (OC, NP): S segments per row for ~2000
 * blocks of 256, at least 4096 floats each, then the partials in order. */
static void rowsum_add(float *dbias, const float *dt, int OC, size_t NP)
{
    size_t S = (NP + 4095) / 4096, want = 2048 / (size_t)OC;
    if (S > want) S = want;
    if (S < 1) S = 1;
    const dim3 grid((unsigned)S, (unsigned)OC);
    if (S == 1) {
        k_rowsum_partial<<<grid, 256>>>(dbias, dt, OC, NP, 1, 1);
        LAUNCHED();
        return;
    }
    float *partial = kn_cu_scratch(S * OC);
    k_rowsum_partial<<<grid, 256>>>(partial, dt, OC, NP, (int)S, 0);
    LAUNCHED();
    kn_cu_col_partials_add(dbias, partial, (int)S, OC);
}

void kn_cu_conv2d_fwd(float *out, const float *inp, const float *w, const float *bias,
                      float *scratch, const kn_conv_shape *s)
{
    const int nbmax = conv_chunk(s), OC = s->OC, CKK = s->C * s->K * s->K;
    const size_t P = (size_t)s->OH * s->OW;
    float *col = scratch, *tmp = scratch + (size_t)nbmax * P * CKK;
    for (int b0 = 0; b0 < s->B; b0 += nbmax) {
        int nb = s->B - b0 < nbmax ? s->B - b0 : nbmax;
        int NP = (int)(nb * P);
        k_im2col<<<blocks_for((size_t)CKK * NP, 256), 256>>>(col, inp, b0, nb, dims_of(s));
        LAUNCHED();
        kn_cu_gemm_rm(0, 0, OC, NP, CKK, 1.0f, w, CKK, col, NP, 0.0f, tmp, NP);
        k_conv_out<<<blocks_for((size_t)OC * NP, 256), 256>>>(out, tmp, bias, b0, nb, OC, P);
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
    for (int b0 = 0; b0 < s->B; b0 += nbmax) {
        int nb = s->B - b0 < nbmax ? s->B - b0 : nbmax;
        int NP = (int)(nb * P);
        k_conv_dt<<<blocks_for((size_t)OC * NP, 256), 256>>>(dt, dout, b0, nb, OC, P);
        LAUNCHED();
        int bias_done = 0;
        if (dw) {
            k_im2col<<<blocks_for((size_t)CKK * NP, 256), 256>>>(col, inp, b0, nb, dims_of(s));
            LAUNCHED();
            /* the bias gradient as the GEMM's epilogue where cuBLASLt has it */
            bias_done = kn_cu_gemm_rm_dbias(0, 1, OC, CKK, NP, dt, NP, col, NP, dw, CKK, dbias);
            if (!bias_done) kn_cu_gemm_rm(0, 1, OC, CKK, NP, 1.0f, dt, NP, col, NP, 1.0f, dw, CKK);
        }
        if (dbias && !bias_done) rowsum_add(dbias, dt, OC, (size_t)NP);
        if (dinp) {
            kn_cu_gemm_rm(1, 0, CKK, NP, OC, 1.0f, w, CKK, dt, NP, 0.0f, dcol, NP);
            k_col2im<<<blocks_for((size_t)nb * s->C * s->H * s->W, 256), 256>>>(dinp, dcol, b0, nb,
                                                                                dims_of(s));
            LAUNCHED();
        }
    }
}
