/* cuda.cu: the CUDA backend, fp32. Every GEMM goes through cuBLAS (loaded at
 * run time, lib/nn/cuda/cublas.h); the rest are kernels of our own that follow
 * cpu.c op for op, so the two backends compute the same thing in the same
 * order where it matters: reductions over a row or a column run in one
 * thread or one warp in a fixed order, never through atomics, so a step is
 * deterministic run to run.
 *
 * Status: written and compiled without a GPU to run it on; tests/gpu/run
 * (test_cuda_parity) is its first real check. First-step choices, to be
 * replaced once measured: attention as strided-batched GEMMs + a fused
 * softmax kernel (full T x T, masked entries zero), column reductions with
 * one thread per column, embedding backward with one thread per channel.
 *
 * Everything runs on the legacy default stream; to_host waits for it. Every
 * CUDA and cuBLAS call and every launch is checked; a failure prints where
 * and exits (ops cannot fail, backend.h). */
#include <cuda_runtime.h>

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nn/cuda/cublas.h"
extern "C" {
#include "nn/backend.h"
}

/* ------------------------------------------------------------ checks */

#define CU(call)                                                                                   \
    do {                                                                                           \
        cudaError_t e_ = (call);                                                                   \
        if (e_ != cudaSuccess) cu_die(__FILE__, __LINE__, #call, cudaGetErrorString(e_));          \
    } while (0)
#define CUBLAS(call)                                                                               \
    do {                                                                                           \
        cublasStatus_t s_ = (call);                                                                \
        if (s_ != 0) {                                                                             \
            char m_[32];                                                                           \
            snprintf(m_, sizeof(m_), "cuBLAS status %d", (int)s_);                                 \
            cu_die(__FILE__, __LINE__, #call, m_);                                                 \
        }                                                                                          \
    } while (0)
#define LAUNCHED() CU(cudaGetLastError())

static void cu_die(const char *file, int line, const char *what, const char *msg)
{
    fprintf(stderr, "kiln cuda backend: %s:%d: %s: %s\n", file, line, what, msg);
    exit(1);
}

static const kn_cublas_api *cb;
static cublasHandle_t handle;

static inline unsigned blocks_for(size_t n, unsigned threads)
{
    size_t b = (n + threads - 1) / threads;
    return (unsigned)(b < 65535u * 32u ? (b ? b : 1) : 65535u * 32u);
}

/* Row-major C (M, N) = alpha op(A) op(B) + beta C, as cblas_sgemm(RowMajor)
 * takes it; cuBLAS is column-major, so this computes C^T = op(B)^T op(A)^T. */
static void gemm_rm(int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda,
                    const float *B, int ldb, float beta, float *C, int ldc)
{
    CUBLAS(cb->sgemm(handle, tb ? KN_CUBLAS_OP_T : KN_CUBLAS_OP_N,
                     ta ? KN_CUBLAS_OP_T : KN_CUBLAS_OP_N, N, M, K, &alpha, B, ldb, A, lda, &beta,
                     C, ldc));
}

static void gemm_rm_batched(int ta, int tb, int M, int N, int K, float alpha, const float *A,
                            int lda, long long sa, const float *B, int ldb, long long sb, float beta,
                            float *C, int ldc, long long sc, int batch)
{
    CUBLAS(cb->sgemm_strided_batched(handle, tb ? KN_CUBLAS_OP_T : KN_CUBLAS_OP_N,
                                     ta ? KN_CUBLAS_OP_T : KN_CUBLAS_OP_N, N, M, K, &alpha, B, ldb,
                                     sb, A, lda, sa, &beta, C, ldc, sc, batch));
}

/* ------------------------------------------------------------ memory */

static void *cu_alloc(size_t bytes)
{
    void *p = NULL;
    if (cudaMalloc(&p, bytes ? bytes : 1) != cudaSuccess) {
        (void)cudaGetLastError(); /* out of memory is an answer, not a sticky error */
        return NULL;
    }
    CU(cudaMemset(p, 0, bytes ? bytes : 1));
    return p;
}

static void cu_free(void *p)
{
    if (p) CU(cudaFree(p));
}

static void cu_to_device(void *dst, const void *src, size_t bytes)
{
    if (bytes) CU(cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice));
}

static void cu_to_host(void *dst, const void *src, size_t bytes)
{
    if (bytes) CU(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToHost));
}

static void cu_zero(void *p, size_t bytes)
{
    if (bytes) CU(cudaMemset(p, 0, bytes));
}

/* ------------------------------------------------------------ small kernels */

/* out (rows, cols) = bias broadcast over rows */
__global__ void k_fill_rows(float *out, const float *bias, size_t rows, int cols)
{
    size_t n = rows * (size_t)cols;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        out[i] = bias[i % cols];
}

/* dcol[c] += sum over rows of x (rows, cols), one thread per column, rows in order */
__global__ void k_colsum_add(float *dcol, const float *x, int rows, int cols)
{
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= cols) return;
    float acc = 0.0f;
    for (int r = 0; r < rows; r++)
        acc += x[(size_t)r * cols + c];
    dcol[c] += acc;
}

/* ------------------------------------------------------------ linear */

static void cu_matmul_fwd(float *out, const float *inp, const float *w, const float *bias, int N,
                          int C, int OC)
{
    float beta = 0.0f;
    if (bias) {
        size_t n = (size_t)N * OC;
        k_fill_rows<<<blocks_for(n, 256), 256>>>(out, bias, (size_t)N, OC);
        LAUNCHED();
        beta = 1.0f;
    }
    gemm_rm(0, 1, N, OC, C, 1.0f, inp, C, w, C, beta, out, OC);
}

static void cu_matmul_bwd(float *dinp, float *dw, float *dbias, const float *dout,
                          const float *inp, const float *w, int N, int C, int OC)
{
    if (dinp) gemm_rm(0, 0, N, C, OC, 1.0f, dout, OC, w, C, 1.0f, dinp, C);
    if (dw) gemm_rm(1, 0, OC, C, N, 1.0f, dout, OC, inp, C, 1.0f, dw, C);
    if (dbias) {
        k_colsum_add<<<blocks_for((size_t)OC, 128), 128>>>(dbias, dout, N, OC);
        LAUNCHED();
    }
}

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

static size_t cu_conv2d_scratch(const kn_conv_shape *s)
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

/* dbias[o] += sum over the chunk of dt[o, :], one warp per channel */
__global__ void k_rowsum_add(float *dbias, const float *dt, int OC, size_t NP)
{
    int o = blockIdx.x;
    if (o >= OC) return;
    float acc = 0.0f;
    for (size_t j = threadIdx.x; j < NP; j += 32)
        acc += dt[(size_t)o * NP + j];
    for (int off = 16; off > 0; off >>= 1)
        acc += __shfl_down_sync(0xffffffffu, acc, off);
    if (threadIdx.x == 0) dbias[o] += acc;
}

static void cu_conv2d_fwd(float *out, const float *inp, const float *w, const float *bias,
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
        gemm_rm(0, 0, OC, NP, CKK, 1.0f, w, CKK, col, NP, 0.0f, tmp, NP);
        k_conv_out<<<blocks_for((size_t)OC * NP, 256), 256>>>(out, tmp, bias, b0, nb, OC, P);
        LAUNCHED();
    }
}

static void cu_conv2d_bwd(float *dinp, float *dw, float *dbias, const float *dout,
                          const float *inp, const float *w, float *scratch, const kn_conv_shape *s)
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
        if (dbias) {
            k_rowsum_add<<<OC, 32>>>(dbias, dt, OC, (size_t)NP);
            LAUNCHED();
        }
        if (dw) {
            k_im2col<<<blocks_for((size_t)CKK * NP, 256), 256>>>(col, inp, b0, nb, dims_of(s));
            LAUNCHED();
            gemm_rm(0, 1, OC, CKK, NP, 1.0f, dt, NP, col, NP, 1.0f, dw, CKK);
        }
        if (dinp) {
            gemm_rm(1, 0, CKK, NP, OC, 1.0f, w, CKK, dt, NP, 0.0f, dcol, NP);
            k_col2im<<<blocks_for((size_t)nb * s->C * s->H * s->W, 256), 256>>>(dinp, dcol, b0, nb,
                                                                                 dims_of(s));
            LAUNCHED();
        }
    }
}

/* ------------------------------------------------------------ pooling */

struct pool_dims {
    int H, W, K, S, OH, OW;
};

__global__ void k_pool_fwd(int kind, float *out, int *idx, const float *inp, size_t planes,
                           pool_dims d)
{
    const size_t n = planes * d.OH * d.OW;
    const float inv = 1.0f / (float)(d.K * d.K);
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        size_t pl = i / ((size_t)d.OH * d.OW);
        int j = (int)(i % ((size_t)d.OH * d.OW)), oh = j / d.OW, ow = j % d.OW;
        const float *x = inp + pl * d.H * d.W;
        int h0 = oh * d.S, w0 = ow * d.S;
        if (kind == KN_POOL_MAX) {
            int best = h0 * d.W + w0;
            float m = x[best];
            for (int kh = 0; kh < d.K; kh++)
                for (int kw = 0; kw < d.K; kw++) {
                    int q = (h0 + kh) * d.W + w0 + kw;
                    if (x[q] > m) {
                        m = x[q];
                        best = q;
                    }
                }
            out[i] = m;
            if (idx) idx[i] = best;
        } else {
            float acc = 0.0f;
            for (int kh = 0; kh < d.K; kh++)
                for (int kw = 0; kw < d.K; kw++)
                    acc += x[(h0 + kh) * d.W + w0 + kw];
            out[i] = acc * inv;
        }
    }
}

/* one thread per input element gathers from every window that covers it */
__global__ void k_pool_bwd(int kind, float *dinp, const float *dout, const int *idx, size_t planes,
                           pool_dims d)
{
    const size_t n = planes * d.H * d.W;
    const float inv = 1.0f / (float)(d.K * d.K);
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        size_t pl = i / ((size_t)d.H * d.W);
        int q = (int)(i % ((size_t)d.H * d.W)), ih = q / d.W, iw = q % d.W;
        int oh_lo = ih - d.K + 1 > 0 ? (ih - d.K + 1 + d.S - 1) / d.S : 0, oh_hi = ih / d.S;
        int ow_lo = iw - d.K + 1 > 0 ? (iw - d.K + 1 + d.S - 1) / d.S : 0, ow_hi = iw / d.S;
        if (oh_hi >= d.OH) oh_hi = d.OH - 1;
        if (ow_hi >= d.OW) ow_hi = d.OW - 1;
        const float *g = dout + pl * d.OH * d.OW;
        const int *ix = idx ? idx + pl * d.OH * d.OW : NULL;
        float acc = 0.0f;
        for (int oh = oh_lo; oh <= oh_hi; oh++)
            for (int ow = ow_lo; ow <= ow_hi; ow++) {
                int j = oh * d.OW + ow;
                if (kind == KN_POOL_MAX)
                    acc += ix[j] == q ? g[j] : 0.0f;
                else
                    acc += g[j] * inv;
            }
        dinp[i] += acc;
    }
}

static void cu_pool2d_fwd(int kind, float *out, int *idx, const float *inp, const kn_pool_shape *s)
{
    size_t planes = (size_t)s->B * s->C;
    pool_dims d = {s->H, s->W, s->K, s->S, s->OH, s->OW};
    k_pool_fwd<<<blocks_for(planes * s->OH * s->OW, 256), 256>>>(kind, out, idx, inp, planes, d);
    LAUNCHED();
}

static void cu_pool2d_bwd(int kind, float *dinp, const float *dout, const int *idx,
                          const kn_pool_shape *s)
{
    size_t planes = (size_t)s->B * s->C;
    pool_dims d = {s->H, s->W, s->K, s->S, s->OH, s->OW};
    k_pool_bwd<<<blocks_for(planes * s->H * s->W, 256), 256>>>(kind, dinp, dout, idx, planes, d);
    LAUNCHED();
}

/* ------------------------------------------------------------ embeddings */

__global__ void k_embed_fwd(float *out, const int *ids, const float *wte, int N, int C)
{
    const size_t n = (size_t)N * C;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        out[i] = wte[(size_t)ids[i / C] * C + i % C];
}

/* one thread per channel walks the rows in order: deterministic, no atomics */
__global__ void k_embed_bwd(float *dwte, const float *dout, const int *ids, int N, int C)
{
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C) return;
    for (int n = 0; n < N; n++)
        dwte[(size_t)ids[n] * C + c] += dout[(size_t)n * C + c];
}

__global__ void k_posemb_fwd(float *out, const float *wpe, int B, int T, int C)
{
    const size_t n = (size_t)B * T * C, TC = (size_t)T * C;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        out[i] += wpe[i % TC];
}

__global__ void k_posemb_bwd(float *dwpe, const float *dout, int B, int T, int C)
{
    const size_t TC = (size_t)T * C;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < TC;
         i += (size_t)gridDim.x * blockDim.x) {
        float acc = 0.0f;
        for (int b = 0; b < B; b++)
            acc += dout[(size_t)b * TC + i];
        dwpe[i] += acc;
    }
}

static void cu_embed_fwd(float *out, const int *ids, const float *wte, int N, int C)
{
    k_embed_fwd<<<blocks_for((size_t)N * C, 256), 256>>>(out, ids, wte, N, C);
    LAUNCHED();
}

static void cu_embed_bwd(float *dwte, const float *dout, const int *ids, int N, int C)
{
    k_embed_bwd<<<blocks_for((size_t)C, 128), 128>>>(dwte, dout, ids, N, C);
    LAUNCHED();
}

static void cu_posemb_fwd(float *out, const float *wpe, int B, int T, int C)
{
    k_posemb_fwd<<<blocks_for((size_t)B * T * C, 256), 256>>>(out, wpe, B, T, C);
    LAUNCHED();
}

static void cu_posemb_bwd(float *dwpe, const float *dout, int B, int T, int C)
{
    k_posemb_bwd<<<blocks_for((size_t)T * C, 256), 256>>>(dwpe, dout, B, T, C);
    LAUNCHED();
}

/* ------------------------------------------------------------ layernorm */

#define KN_LN_EPS 1e-5f

__device__ float warp_sum(float v)
{
    for (int off = 16; off > 0; off >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, off);
    return v;
}

__device__ float warp_max(float v)
{
    for (int off = 16; off > 0; off >>= 1)
        v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, off));
    return v;
}

/* one warp per row */
__global__ void k_layernorm_fwd(float *out, float *mean, float *rstd, const float *inp,
                                const float *w, const float *b, int N, int C)
{
    int n = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (n >= N) return;
    const float *x = inp + (size_t)n * C;
    float s = 0.0f;
    for (int c = lane; c < C; c += 32)
        s += x[c];
    float m = warp_sum(s) / (float)C;
    float v = 0.0f;
    for (int c = lane; c < C; c += 32) {
        float d = x[c] - m;
        v += d * d;
    }
    float r = rsqrtf(warp_sum(v) / (float)C + KN_LN_EPS);
    float *o = out + (size_t)n * C;
    for (int c = lane; c < C; c += 32)
        o[c] = (x[c] - m) * r * w[c] + b[c];
    if (lane == 0) {
        mean[n] = m;
        rstd[n] = r;
    }
}

__global__ void k_layernorm_bwd_inp(float *dinp, const float *dout, const float *inp,
                                    const float *w, const float *mean, const float *rstd, int N,
                                    int C)
{
    int n = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (n >= N) return;
    const float *x = inp + (size_t)n * C, *g = dout + (size_t)n * C;
    const float m = mean[n], r = rstd[n];
    float a = 0.0f, bsum = 0.0f;
    for (int c = lane; c < C; c += 32) {
        float dnorm = w[c] * g[c];
        a += dnorm;
        bsum += dnorm * (x[c] - m) * r;
    }
    float dnorm_mean = warp_sum(a) / (float)C, dnorm_norm_mean = warp_sum(bsum) / (float)C;
    for (int c = lane; c < C; c += 32) {
        float norm = (x[c] - m) * r;
        dinp[(size_t)n * C + c] += (w[c] * g[c] - dnorm_mean - norm * dnorm_norm_mean) * r;
    }
}

/* dw, db: one thread per channel over the rows in order */
__global__ void k_layernorm_bwd_wb(float *dw, float *db, const float *dout, const float *inp,
                                   const float *mean, const float *rstd, int N, int C)
{
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C) return;
    float aw = 0.0f, ab = 0.0f;
    for (int n = 0; n < N; n++) {
        float g = dout[(size_t)n * C + c];
        aw += (inp[(size_t)n * C + c] - mean[n]) * rstd[n] * g;
        ab += g;
    }
    if (dw) dw[c] += aw;
    if (db) db[c] += ab;
}

static void cu_layernorm_fwd(float *out, float *mean, float *rstd, const float *inp,
                             const float *w, const float *b, int N, int C)
{
    k_layernorm_fwd<<<(N + 7) / 8, 256>>>(out, mean, rstd, inp, w, b, N, C);
    LAUNCHED();
}

static void cu_layernorm_bwd(float *dinp, float *dw, float *db, const float *dout,
                             const float *inp, const float *w, const float *mean,
                             const float *rstd, int N, int C)
{
    if (dinp) {
        k_layernorm_bwd_inp<<<(N + 7) / 8, 256>>>(dinp, dout, inp, w, mean, rstd, N, C);
        LAUNCHED();
    }
    if (dw || db) {
        k_layernorm_bwd_wb<<<blocks_for((size_t)C, 128), 128>>>(dw, db, dout, inp, mean, rstd, N,
                                                                 C);
        LAUNCHED();
    }
}

/* ------------------------------------------------------------ attention */

/* att = softmax(preatt) row by row, one warp per (b, h, t) row; masked
 * entries (t2 > t when causal) of preatt and att are set to 0, as cpu.c does */
__global__ void k_softmax_fwd(float *att, float *preatt, int rows, int T, int causal)
{
    int r = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (r >= rows) return;
    int t = r % T, tn = causal ? t + 1 : T;
    float *pre = preatt + (size_t)r * T, *a = att + (size_t)r * T;
    float mx = -FLT_MAX;
    for (int j = lane; j < tn; j += 32)
        mx = fmaxf(mx, pre[j]);
    mx = warp_max(mx);
    float s = 0.0f;
    for (int j = lane; j < tn; j += 32)
        s += expf(pre[j] - mx);
    float inv = 1.0f / warp_sum(s);
    for (int j = lane; j < T; j += 32) {
        if (j < tn) {
            a[j] = expf(pre[j] - mx) * inv;
        } else {
            a[j] = 0.0f;
            pre[j] = 0.0f;
        }
    }
}

/* dpre += a * (da - sum(a * da)) over the unmasked part of each row */
__global__ void k_softmax_bwd(float *dpreatt, const float *datt, const float *att, int rows, int T,
                              int causal)
{
    int r = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (r >= rows) return;
    int t = r % T, tn = causal ? t + 1 : T;
    const float *a = att + (size_t)r * T, *da = datt + (size_t)r * T;
    float s = 0.0f;
    for (int j = lane; j < tn; j += 32)
        s += a[j] * da[j];
    s = warp_sum(s);
    float *dp = dpreatt + (size_t)r * T;
    for (int j = lane; j < tn; j += 32)
        dp[j] += a[j] * (da[j] - s);
}

/* Per image b, the NH heads are one strided batch: head h of q, k, v starts
 * hs floats after head h-1 inside each (3C)-wide row of qkv. */
static void cu_attention_fwd(float *out, float *preatt, float *att, const float *qkv, int B, int T,
                             int C, int NH, int causal)
{
    const int hs = C / NH, C3 = 3 * C;
    const float scale = 1.0f / sqrtf((float)hs);
    const long long TT = (long long)T * T;
    for (int b = 0; b < B; b++) {
        const float *q = qkv + (size_t)b * T * C3, *k = q + C;
        float *pre = preatt + (size_t)b * NH * TT;
        /* pre (T, T) = scale q (T, hs) k^T */
        gemm_rm_batched(0, 1, T, T, hs, scale, q, C3, hs, k, C3, hs, 0.0f, pre, T, TT, NH);
    }
    int rows = B * NH * T;
    k_softmax_fwd<<<(rows + 7) / 8, 256>>>(att, preatt, rows, T, causal);
    LAUNCHED();
    for (int b = 0; b < B; b++) {
        const float *v = qkv + (size_t)b * T * C3 + 2 * C;
        const float *a = att + (size_t)b * NH * TT;
        /* out (T, hs) of head h = att (T, T) v (T, hs) */
        gemm_rm_batched(0, 0, T, hs, T, 1.0f, a, T, TT, v, C3, hs, 0.0f, out + (size_t)b * T * C,
                        C, hs, NH);
    }
}

static void cu_attention_bwd(float *dqkv, float *dpreatt, float *datt, const float *dout,
                             const float *qkv, const float *att, int B, int T, int C, int NH,
                             int causal)
{
    const int hs = C / NH, C3 = 3 * C;
    const float scale = 1.0f / sqrtf((float)hs);
    const long long TT = (long long)T * T;
    for (int b = 0; b < B; b++) {
        const float *v = qkv + (size_t)b * T * C3 + 2 * C;
        const float *g = dout + (size_t)b * T * C;
        const float *a = att + (size_t)b * NH * TT;
        float *da = datt + (size_t)b * NH * TT;
        float *dv = dqkv + (size_t)b * T * C3 + 2 * C;
        /* datt += dout (T, hs) v^T; dv += att^T dout */
        gemm_rm_batched(0, 1, T, T, hs, 1.0f, g, C, hs, v, C3, hs, 1.0f, da, T, TT, NH);
        gemm_rm_batched(1, 0, T, hs, T, 1.0f, a, T, TT, g, C, hs, 1.0f, dv, C3, hs, NH);
    }
    int rows = B * NH * T;
    k_softmax_bwd<<<(rows + 7) / 8, 256>>>(dpreatt, datt, att, rows, T, causal);
    LAUNCHED();
    for (int b = 0; b < B; b++) {
        const float *q = qkv + (size_t)b * T * C3, *k = q + C;
        const float *dp = dpreatt + (size_t)b * NH * TT;
        float *dq = dqkv + (size_t)b * T * C3, *dk = dq + C;
        /* dq += scale dpre k; dk += scale dpre^T q */
        gemm_rm_batched(0, 0, T, hs, T, scale, dp, T, TT, k, C3, hs, 1.0f, dq, C3, hs, NH);
        gemm_rm_batched(1, 0, T, hs, T, scale, dp, T, TT, q, C3, hs, 1.0f, dk, C3, hs, NH);
    }
}

/* ------------------------------------------------------------ elementwise */

#define KN_GELU_SCALE 0.7978845608028654f

__global__ void k_act_fwd(int kind, float *out, const float *inp, size_t n)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        float x = inp[i];
        switch (kind) {
        case KN_ACT_RELU: out[i] = x > 0.0f ? x : 0.0f; break;
        case KN_ACT_TANH: out[i] = tanhf(x); break;
        case KN_ACT_SIGMOID: out[i] = 1.0f / (1.0f + expf(-x)); break;
        case KN_ACT_GELU: {
            float u = KN_GELU_SCALE * (x + 0.044715f * x * x * x);
            out[i] = 0.5f * x * (1.0f + tanhf(u));
            break;
        }
        }
    }
}

__global__ void k_act_bwd(int kind, float *dinp, const float *inp, const float *out,
                          const float *dout, size_t n)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        switch (kind) {
        case KN_ACT_RELU: dinp[i] += out[i] > 0.0f ? dout[i] : 0.0f; break;
        case KN_ACT_TANH: dinp[i] += (1.0f - out[i] * out[i]) * dout[i]; break;
        case KN_ACT_SIGMOID: dinp[i] += out[i] * (1.0f - out[i]) * dout[i]; break;
        case KN_ACT_GELU: {
            float x = inp[i];
            float u = KN_GELU_SCALE * (x + 0.044715f * x * x * x);
            float th = tanhf(u), sech2 = 1.0f - th * th;
            float local = 0.5f * (1.0f + th) +
                          x * 0.5f * sech2 * KN_GELU_SCALE * (1.0f + 3.0f * 0.044715f * x * x);
            dinp[i] += local * dout[i];
            break;
        }
        }
    }
}

/* kn_backend_uniform, on the device: the same hash, so both backends drop
 * the same elements */
__device__ float uniform_dev(uint64_t seed, uint64_t i)
{
    uint64_t z = seed + 0x9E3779B97F4A7C15ull * (i + 1);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return (float)(z >> 40) * (1.0f / 16777216.0f);
}

__global__ void k_dropout_fwd(float *out, float *mask, const float *inp, size_t n, float p,
                              uint64_t seed)
{
    const float keep = 1.0f / (1.0f - p);
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        mask[i] = uniform_dev(seed, i) >= p ? keep : 0.0f;
        out[i] = inp[i] * mask[i];
    }
}

__global__ void k_mul_add(float *dinp, const float *dout, const float *mask, size_t n)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        dinp[i] += dout[i] * mask[i];
}

__global__ void k_add(float *out, const float *a, const float *b, size_t n)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        out[i] = a[i] + b[i];
}

__global__ void k_acc(float *d, const float *g, size_t n)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        d[i] += g[i];
}

static void cu_act_fwd(int kind, float *out, const float *inp, size_t n)
{
    k_act_fwd<<<blocks_for(n, 256), 256>>>(kind, out, inp, n);
    LAUNCHED();
}

static void cu_act_bwd(int kind, float *dinp, const float *inp, const float *out,
                       const float *dout, size_t n)
{
    k_act_bwd<<<blocks_for(n, 256), 256>>>(kind, dinp, inp, out, dout, n);
    LAUNCHED();
}

static void cu_dropout_fwd(float *out, float *mask, const float *inp, size_t n, float p,
                           uint64_t seed)
{
    k_dropout_fwd<<<blocks_for(n, 256), 256>>>(out, mask, inp, n, p, seed);
    LAUNCHED();
}

static void cu_dropout_bwd(float *dinp, const float *dout, const float *mask, size_t n)
{
    k_mul_add<<<blocks_for(n, 256), 256>>>(dinp, dout, mask, n);
    LAUNCHED();
}

static void cu_residual_fwd(float *out, const float *a, const float *b, size_t n)
{
    k_add<<<blocks_for(n, 256), 256>>>(out, a, b, n);
    LAUNCHED();
}

static void cu_residual_bwd(float *da, float *db, const float *dout, size_t n)
{
    if (da) {
        k_acc<<<blocks_for(n, 256), 256>>>(da, dout, n);
        LAUNCHED();
    }
    if (db) {
        k_acc<<<blocks_for(n, 256), 256>>>(db, dout, n);
        LAUNCHED();
    }
}

/* ------------------------------------------------------------ sequence pooling */

__global__ void k_seqpool_fwd(int kind, float *out, const float *inp, int B, int T, int C)
{
    const size_t n = (size_t)B * C;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        size_t b = i / C, c = i % C;
        const float *x = inp + b * T * C + c;
        if (kind == KN_SEQPOOL_CLS) {
            out[i] = x[0];
            continue;
        }
        float acc = 0.0f;
        for (int t = 0; t < T; t++)
            acc += x[(size_t)t * C];
        out[i] = acc * (1.0f / (float)T);
    }
}

__global__ void k_seqpool_bwd(int kind, float *dinp, const float *dout, int B, int T, int C)
{
    const size_t n = (size_t)B * T * C;
    const float s = 1.0f / (float)T;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        size_t c = i % C, t = i / C % T, b = i / C / T;
        float g = dout[b * C + c];
        if (kind == KN_SEQPOOL_CLS) {
            if (t == 0) dinp[i] += g;
        } else {
            dinp[i] += g * s;
        }
    }
}

static void cu_seqpool_fwd(int kind, float *out, const float *inp, int B, int T, int C)
{
    k_seqpool_fwd<<<blocks_for((size_t)B * C, 256), 256>>>(kind, out, inp, B, T, C);
    LAUNCHED();
}

static void cu_seqpool_bwd(int kind, float *dinp, const float *dout, int B, int T, int C)
{
    k_seqpool_bwd<<<blocks_for((size_t)B * T * C, 256), 256>>>(kind, dinp, dout, B, T, C);
    LAUNCHED();
}

/* ------------------------------------------------------------ losses */

/* one block of 256 per row: max, sum of exp, probabilities, loss */
__global__ void k_xent_fwd(float *losses, float *probs, const float *logits, const int *targets,
                           int N, int V, int Vp)
{
    __shared__ float red[8];
    int n = blockIdx.x;
    if (n >= N) return;
    const float *l = logits + (size_t)n * Vp;
    float *p = probs + (size_t)n * Vp;
    int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    float mx = -FLT_MAX;
    for (int i = threadIdx.x; i < V; i += blockDim.x)
        mx = fmaxf(mx, l[i]);
    mx = warp_max(mx);
    if (lane == 0) red[warp] = mx;
    __syncthreads();
    mx = red[0];
    for (int w = 1; w < 8; w++)
        mx = fmaxf(mx, red[w]);
    __syncthreads();
    float s = 0.0f;
    for (int i = threadIdx.x; i < V; i += blockDim.x)
        s += expf(l[i] - mx);
    s = warp_sum(s);
    if (lane == 0) red[warp] = s;
    __syncthreads();
    float sum = 0.0f;
    for (int w = 0; w < 8; w++)
        sum += red[w];
    const float inv = 1.0f / sum;
    for (int i = threadIdx.x; i < Vp; i += blockDim.x)
        p[i] = i < V ? expf(l[i] - mx) * inv : 0.0f;
    if (threadIdx.x == 0) {
        int t = targets[n];
        losses[n] = t < 0 ? 0.0f : logf(sum) + (mx - l[t]);
    }
}

__global__ void k_xent_bwd(float *dlogits, const float *probs, const int *targets, float dloss,
                           int N, int V, int Vp)
{
    const size_t n = (size_t)N * Vp;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        int row = (int)(i / Vp), col = (int)(i % Vp), t = targets[row];
        if (t < 0 || col >= V) continue;
        dlogits[i] += probs[i] * dloss - (col == t ? dloss : 0.0f);
    }
}

__global__ void k_mse_fwd(float *losses, const float *pred, const float *y, int N, int D)
{
    int n = blockIdx.x * blockDim.x + threadIdx.x;
    if (n >= N) return;
    float acc = 0.0f;
    for (int d = 0; d < D; d++) {
        float e = pred[(size_t)n * D + d] - y[(size_t)n * D + d];
        acc += e * e;
    }
    losses[n] = acc / (float)D;
}

__global__ void k_mse_bwd(float *dpred, const float *pred, const float *y, float s, size_t n)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        dpred[i] += s * (pred[i] - y[i]);
}

static void cu_xent_fwd(float *losses, float *probs, const float *logits, const int *targets,
                        int N, int V, int Vp)
{
    k_xent_fwd<<<N, 256>>>(losses, probs, logits, targets, N, V, Vp);
    LAUNCHED();
}

static void cu_xent_bwd(float *dlogits, const float *probs, const int *targets, float dloss, int N,
                        int V, int Vp)
{
    k_xent_bwd<<<blocks_for((size_t)N * Vp, 256), 256>>>(dlogits, probs, targets, dloss, N, V, Vp);
    LAUNCHED();
}

static void cu_mse_fwd(float *losses, const float *pred, const float *y, int N, int D)
{
    k_mse_fwd<<<blocks_for((size_t)N, 128), 128>>>(losses, pred, y, N, D);
    LAUNCHED();
}

static void cu_mse_bwd(float *dpred, const float *pred, const float *y, float dloss, int N, int D)
{
    size_t n = (size_t)N * D;
    k_mse_bwd<<<blocks_for(n, 256), 256>>>(dpred, pred, y, 2.0f * dloss / (float)D, n);
    LAUNCHED();
}

/* ------------------------------------------------------------ reductions */

#define RED_BLOCKS 256

/* partial[b] = sum over a fixed slice pattern, in double, fixed order */
__global__ void k_reduce(double *partial, const float *x, size_t n, int square)
{
    __shared__ double red[256];
    double acc = 0.0;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        double v = x[i];
        acc += square ? v * v : v;
    }
    red[threadIdx.x] = acc;
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s >>= 1) {
        if ((int)threadIdx.x < s) red[threadIdx.x] += red[threadIdx.x + s];
        __syncthreads();
    }
    if (threadIdx.x == 0) partial[blockIdx.x] = red[0];
}

static double *partials;

static double reduce(const float *x, size_t n, int square)
{
    if (!n) return 0.0;
    k_reduce<<<RED_BLOCKS, 256>>>(partials, x, n, square);
    LAUNCHED();
    double host[RED_BLOCKS], acc = 0.0;
    CU(cudaMemcpy(host, partials, sizeof(host), cudaMemcpyDeviceToHost));
    for (int i = 0; i < RED_BLOCKS; i++)
        acc += host[i];
    return acc;
}

static double cu_sum(const float *x, size_t n)
{
    return reduce(x, n, 0);
}

static double cu_sumsq(const float *x, size_t n)
{
    return reduce(x, n, 1);
}

/* ------------------------------------------------------------ optimizers */

__global__ void k_optim(kn_optim_args a, float *p, const float *grad, float *m, float *v, size_t n)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        switch (a.kind) {
        case KN_OPT_SGD: {
            float g = grad[i] * a.grad_scale + a.weight_decay * p[i];
            if (a.beta1 != 0.0f) {
                m[i] = a.beta1 * m[i] + g;
                g = m[i];
            }
            p[i] -= a.lr * g;
            break;
        }
        case KN_OPT_ADAM:
        case KN_OPT_ADAMW: {
            const int decoupled = a.kind == KN_OPT_ADAMW;
            const float step = a.lr / a.bc1, sbc2 = sqrtf(a.bc2);
            const float shrink = decoupled ? 1.0f - a.lr * a.weight_decay : 1.0f;
            float g = grad[i] * a.grad_scale + (decoupled ? 0.0f : a.weight_decay) * p[i];
            m[i] = a.beta1 * m[i] + (1.0f - a.beta1) * g;
            v[i] = a.beta2 * v[i] + (1.0f - a.beta2) * g * g;
            float denom = sqrtf(v[i]) / sbc2 + a.eps;
            p[i] = p[i] * shrink - step * m[i] / denom;
            break;
        }
        case KN_OPT_RMSPROP: {
            float g = grad[i] * a.grad_scale + a.weight_decay * p[i];
            v[i] = a.beta2 * v[i] + (1.0f - a.beta2) * g * g;
            float u = g / (sqrtf(v[i]) + a.eps);
            if (a.beta1 != 0.0f) {
                m[i] = a.beta1 * m[i] + u;
                u = m[i];
            }
            p[i] -= a.lr * u;
            break;
        }
        }
    }
}

static void cu_optim_update(const kn_optim_args *a, float *param, const float *grad, float *m,
                            float *v, size_t n)
{
    k_optim<<<blocks_for(n, 256), 256>>>(*a, param, grad, m, v, n);
    LAUNCHED();
}

/* ------------------------------------------------------------ table */

static kn_backend cuda_backend;
static int probed;      /* 0 not yet, 1 usable, -1 not */
static char why_not[2304];

static void fill_table(kn_backend *t)
{
    memset(t, 0, sizeof(*t));
    t->name = "cuda";
    t->alloc = cu_alloc;
    t->free = cu_free;
    t->to_device = cu_to_device;
    t->to_host = cu_to_host;
    t->zero = cu_zero;
    t->matmul_fwd = cu_matmul_fwd;
    t->matmul_bwd = cu_matmul_bwd;
    t->conv2d_scratch = cu_conv2d_scratch;
    t->conv2d_fwd = cu_conv2d_fwd;
    t->conv2d_bwd = cu_conv2d_bwd;
    t->pool2d_fwd = cu_pool2d_fwd;
    t->pool2d_bwd = cu_pool2d_bwd;
    t->embed_fwd = cu_embed_fwd;
    t->embed_bwd = cu_embed_bwd;
    t->posemb_fwd = cu_posemb_fwd;
    t->posemb_bwd = cu_posemb_bwd;
    t->layernorm_fwd = cu_layernorm_fwd;
    t->layernorm_bwd = cu_layernorm_bwd;
    t->attention_fwd = cu_attention_fwd;
    t->attention_bwd = cu_attention_bwd;
    t->act_fwd = cu_act_fwd;
    t->act_bwd = cu_act_bwd;
    t->dropout_fwd = cu_dropout_fwd;
    t->dropout_bwd = cu_dropout_bwd;
    t->residual_fwd = cu_residual_fwd;
    t->residual_bwd = cu_residual_bwd;
    t->seqpool_fwd = cu_seqpool_fwd;
    t->seqpool_bwd = cu_seqpool_bwd;
    t->xent_fwd = cu_xent_fwd;
    t->xent_bwd = cu_xent_bwd;
    t->mse_fwd = cu_mse_fwd;
    t->mse_bwd = cu_mse_bwd;
    t->sum = cu_sum;
    t->sumsq = cu_sumsq;
    t->optim_update = cu_optim_update;
}

/* The first call probes (a device, cuBLAS, a handle, the reduction buffer);
 * not thread-safe: call it once at start-up before using the backend from
 * several threads. */
extern "C" const kn_backend *kn_backend_cuda(void)
{
    if (probed) return probed > 0 ? &cuda_backend : NULL;
    probed = -1;
    int ndev = 0;
    cudaError_t e = cudaGetDeviceCount(&ndev);
    if (e != cudaSuccess || ndev == 0) {
        (void)cudaGetLastError();
        snprintf(why_not, sizeof(why_not), "no CUDA device (%s)",
                 e != cudaSuccess ? cudaGetErrorString(e) : "none found");
        return NULL;
    }
    char err[2048];
    if (!(cb = kn_cublas_load(err, sizeof(err)))) {
        snprintf(why_not, sizeof(why_not), "%s", err);
        return NULL;
    }
    if (cb->create(&handle) != 0) {
        snprintf(why_not, sizeof(why_not), "cublasCreate failed");
        return NULL;
    }
    /* fp32 numerics: cuBLAS's default math mode does not use TF32 for SGEMM */
    CUBLAS(cb->set_math_mode(handle, KN_CUBLAS_DEFAULT_MATH));
    CU(cudaMalloc(&partials, RED_BLOCKS * sizeof(double)));
    fill_table(&cuda_backend);
    probed = 1;
    return &cuda_backend;
}

extern "C" const char *kn_backend_cuda_why_not(void)
{
    return why_not[0] ? why_not : NULL;
}
