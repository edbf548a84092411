/* cpu.c: the CPU backend, the numeric reference of kiln. Plain C11 loops
 * written so gcc vectorizes them at -O2, and every large product through
 * CBLAS (OpenBLAS). Single-threaded apart from what OpenBLAS does itself.
 * Device pointers are host pointers here. */
#include "nn/backend.h"

#include <cblas.h>
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Bound on the im2col scratch per convolution (floats): images are processed
 * in chunks so that the column matrix of one chunk fits this budget. */
#define CPU_CONV_SCRATCH_FLOATS (4u << 20)

/* ---------------------------------------------------------------- memory */

static void *cpu_alloc(size_t bytes)
{
    void *p = calloc(1, bytes ? bytes : 1);
    kn_mem_note_alloc(KN_MEM_CPU, 0, p, bytes);
    return p;
}

static void cpu_free(void *p)
{
    kn_mem_note_free(KN_MEM_CPU, p);
    free(p);
}

static void cpu_copy(void *dst, const void *src, size_t bytes)
{
    if (bytes) memcpy(dst, src, bytes);
}

static void cpu_zero(void *p, size_t bytes)
{
    if (bytes) memset(p, 0, bytes);
}

/* ---------------------------------------------------------------- linear */

static void cpu_matmul_fwd(float *restrict out, const float *restrict inp, const float *restrict w,
                           const float *restrict bias, int N, int C, int OC)
{
    float beta = 0.0f;
    if (bias) {
        for (int n = 0; n < N; n++)
            memcpy(out + (size_t)n * OC, bias, (size_t)OC * sizeof(float));
        beta = 1.0f;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, OC, C, 1.0f, inp, C, w, C, beta, out,
                OC);
}

static void cpu_matmul_bwd(float *restrict dinp, float *restrict dw, float *restrict dbias,
                           const float *restrict dout, const float *restrict inp,
                           const float *restrict w, int N, int C, int OC)
{
    if (dinp) /* dinp (N, C) += dout (N, OC) . w (OC, C) */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, C, OC, 1.0f, dout, OC, w, C, 1.0f,
                    dinp, C);
    if (dw) /* dw (OC, C) += dout^T (OC, N) . inp (N, C) */
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, OC, C, N, 1.0f, dout, OC, inp, C, 1.0f,
                    dw, C);
    if (dbias) {
        for (int n = 0; n < N; n++) {
            const float *d = dout + (size_t)n * OC;
            for (int o = 0; o < OC; o++)
                dbias[o] += d[o];
        }
    }
}

/* ---------------------------------------------------------------- conv2d */

/* Images per im2col chunk; depends only on the shape so fwd and bwd agree. */
static int conv_chunk(const kn_conv_shape *s)
{
    size_t P = (size_t)s->OH * s->OW, CKK = (size_t)s->C * s->K * s->K;
    size_t per_image = P * (2 * CKK + (size_t)s->OC);
    size_t nb = CPU_CONV_SCRATCH_FLOATS / (per_image ? per_image : 1);
    if (nb < 1) nb = 1;
    if (nb > (size_t)s->B) nb = (size_t)s->B;
    return (int)nb;
}

static size_t cpu_conv2d_scratch(const kn_conv_shape *s)
{
    size_t P = (size_t)s->OH * s->OW, CKK = (size_t)s->C * s->K * s->K;
    return (size_t)conv_chunk(s) * P * (2 * CKK + (size_t)s->OC);
}

/* Valid output columns [lo, hi) for kernel column kw: 0 <= ow*S - pad + kw < W. */
static void conv_valid_range(int kw, int S, int pad, int W, int OW, int *restrict lo,
                             int *restrict hi)
{
    int a = pad - kw; /* need ow*S >= a */
    int l = a <= 0 ? 0 : (a + S - 1) / S;
    int b = W - 1 + pad - kw; /* need ow*S <= b */
    int h = b < 0 ? 0 : b / S + 1;
    if (h > OW) h = OW;
    if (l > h) l = h;
    *lo = l;
    *hi = h;
}

/* col (C*K*K, nb*P) from images [b0, b0 + nb) of inp (B, C, H, W). */
static void im2col(float *restrict col, const float *restrict inp, int b0, int nb,
                   const kn_conv_shape *s)
{
    const int K = s->K, S = s->stride, pad = s->pad, H = s->H, W = s->W, OH = s->OH, OW = s->OW;
    const size_t P = (size_t)OH * OW, ld = (size_t)nb * P;
    for (int c = 0; c < s->C; c++) {
        for (int kh = 0; kh < K; kh++) {
            for (int kw = 0; kw < K; kw++) {
                float *row = col + ((size_t)(c * K + kh) * K + kw) * ld;
                int lo, hi;
                conv_valid_range(kw, S, pad, W, OW, &lo, &hi);
                for (int b = 0; b < nb; b++) {
                    const float *x = inp + ((size_t)(b0 + b) * s->C + c) * H * W;
                    float *r = row + (size_t)b * P;
                    for (int oh = 0; oh < OH; oh++) {
                        float *ro = r + (size_t)oh * OW;
                        int ih = oh * S - pad + kh;
                        if (ih < 0 || ih >= H) {
                            memset(ro, 0, (size_t)OW * sizeof(float));
                            continue;
                        }
                        const float *xi = x + (size_t)ih * W - pad + kw;
                        for (int ow = 0; ow < lo; ow++)
                            ro[ow] = 0.0f;
                        if (S == 1) {
                            for (int ow = lo; ow < hi; ow++)
                                ro[ow] = xi[ow];
                        } else {
                            for (int ow = lo; ow < hi; ow++)
                                ro[ow] = xi[ow * S];
                        }
                        for (int ow = hi; ow < OW; ow++)
                            ro[ow] = 0.0f;
                    }
                }
            }
        }
    }
}

/* dinp (B, C, H, W) += col2im(dcol) for images [b0, b0 + nb). */
static void col2im(float *restrict dinp, const float *restrict dcol, int b0, int nb,
                   const kn_conv_shape *s)
{
    const int K = s->K, S = s->stride, pad = s->pad, H = s->H, W = s->W, OH = s->OH, OW = s->OW;
    const size_t P = (size_t)OH * OW, ld = (size_t)nb * P;
    for (int c = 0; c < s->C; c++) {
        for (int kh = 0; kh < K; kh++) {
            for (int kw = 0; kw < K; kw++) {
                const float *row = dcol + ((size_t)(c * K + kh) * K + kw) * ld;
                int lo, hi;
                conv_valid_range(kw, S, pad, W, OW, &lo, &hi);
                for (int b = 0; b < nb; b++) {
                    float *x = dinp + ((size_t)(b0 + b) * s->C + c) * H * W;
                    const float *r = row + (size_t)b * P;
                    for (int oh = 0; oh < OH; oh++) {
                        int ih = oh * S - pad + kh;
                        if (ih < 0 || ih >= H) continue;
                        const float *ro = r + (size_t)oh * OW;
                        float *xi = x + (size_t)ih * W - pad + kw;
                        if (S == 1) {
                            for (int ow = lo; ow < hi; ow++)
                                xi[ow] += ro[ow];
                        } else {
                            for (int ow = lo; ow < hi; ow++)
                                xi[ow * S] += ro[ow];
                        }
                    }
                }
            }
        }
    }
}

static void cpu_conv2d_fwd(float *restrict out, const float *restrict inp, const float *restrict w,
                           const float *restrict bias, float *restrict scratch,
                           const kn_conv_shape *s)
{
    const int nbmax = conv_chunk(s), OC = s->OC;
    const int CKK = s->C * s->K * s->K;
    const size_t P = (size_t)s->OH * s->OW;
    float *col = scratch;
    float *tmp = scratch + (size_t)nbmax * P * CKK; /* (OC, nb*P) */
    for (int b0 = 0; b0 < s->B; b0 += nbmax) {
        int nb = s->B - b0 < nbmax ? s->B - b0 : nbmax;
        int NP = (int)(nb * P);
        im2col(col, inp, b0, nb, s);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, OC, NP, CKK, 1.0f, w, CKK, col, NP,
                    0.0f, tmp, NP);
        for (int b = 0; b < nb; b++) {
            for (int o = 0; o < OC; o++) {
                float *dst = out + ((size_t)(b0 + b) * OC + o) * P;
                const float *src = tmp + (size_t)o * NP + (size_t)b * P;
                float bo = bias ? bias[o] : 0.0f;
                for (size_t p = 0; p < P; p++)
                    dst[p] = src[p] + bo;
            }
        }
    }
}

static void cpu_conv2d_bwd(float *restrict dinp, float *restrict dw, float *restrict dbias,
                           const float *restrict dout, const float *restrict inp,
                           const float *restrict w, float *restrict scratch, const kn_conv_shape *s)
{
    const int nbmax = conv_chunk(s), OC = s->OC;
    const int CKK = s->C * s->K * s->K;
    const size_t P = (size_t)s->OH * s->OW;
    float *col = scratch;
    float *dcol = scratch + (size_t)nbmax * P * CKK;
    float *dt = dcol + (size_t)nbmax * P * CKK; /* dout transposed, (OC, nb*P) */
    for (int b0 = 0; b0 < s->B; b0 += nbmax) {
        int nb = s->B - b0 < nbmax ? s->B - b0 : nbmax;
        int NP = (int)(nb * P);
        for (int b = 0; b < nb; b++) {
            for (int o = 0; o < OC; o++) {
                const float *src = dout + ((size_t)(b0 + b) * OC + o) * P;
                float *dst = dt + (size_t)o * NP + (size_t)b * P;
                float acc = 0.0f;
                for (size_t p = 0; p < P; p++) {
                    dst[p] = src[p];
                    acc += src[p];
                }
                if (dbias) dbias[o] += acc;
            }
        }
        if (dw) {
            im2col(col, inp, b0, nb, s);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, OC, CKK, NP, 1.0f, dt, NP, col, NP,
                        1.0f, dw, CKK);
        }
        if (dinp) {
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, CKK, NP, OC, 1.0f, w, CKK, dt, NP,
                        0.0f, dcol, NP);
            col2im(dinp, dcol, b0, nb, s);
        }
    }
}

/* ---------------------------------------------------------------- pooling */

static void cpu_pool2d_fwd(int kind, float *restrict out, int *restrict idx,
                           const float *restrict inp, const kn_pool_shape *s)
{
    const int K = s->K, S = s->S, H = s->H, W = s->W, OH = s->OH, OW = s->OW;
    const float inv = 1.0f / (float)(K * K);
    for (size_t pl = 0; pl < (size_t)s->B * s->C; pl++) {
        const float *x = inp + pl * H * W;
        float *o = out + pl * OH * OW;
        int *ix = idx ? idx + pl * OH * OW : NULL;
        for (int oh = 0; oh < OH; oh++) {
            for (int ow = 0; ow < OW; ow++) {
                int h0 = oh * S, w0 = ow * S;
                if (kind == KN_POOL_MAX) {
                    int best = h0 * W + w0;
                    float m = x[best];
                    for (int kh = 0; kh < K; kh++)
                        for (int kw = 0; kw < K; kw++) {
                            int j = (h0 + kh) * W + w0 + kw;
                            if (x[j] > m) {
                                m = x[j];
                                best = j;
                            }
                        }
                    o[oh * OW + ow] = m;
                    if (ix) ix[oh * OW + ow] = best;
                } else {
                    float acc = 0.0f;
                    for (int kh = 0; kh < K; kh++)
                        for (int kw = 0; kw < K; kw++)
                            acc += x[(h0 + kh) * W + w0 + kw];
                    o[oh * OW + ow] = acc * inv;
                }
            }
        }
    }
}

static void cpu_pool2d_bwd(int kind, float *restrict dinp, const float *restrict dout,
                           const int *restrict idx, const kn_pool_shape *s)
{
    const int K = s->K, S = s->S, H = s->H, W = s->W, OH = s->OH, OW = s->OW;
    const float inv = 1.0f / (float)(K * K);
    for (size_t pl = 0; pl < (size_t)s->B * s->C; pl++) {
        float *dx = dinp + pl * H * W;
        const float *d = dout + pl * OH * OW;
        if (kind == KN_POOL_MAX) {
            const int *ix = idx + pl * OH * OW;
            for (int j = 0; j < OH * OW; j++)
                dx[ix[j]] += d[j];
        } else {
            for (int oh = 0; oh < OH; oh++)
                for (int ow = 0; ow < OW; ow++) {
                    float g = d[oh * OW + ow] * inv;
                    for (int kh = 0; kh < K; kh++)
                        for (int kw = 0; kw < K; kw++)
                            dx[(oh * S + kh) * W + ow * S + kw] += g;
                }
        }
    }
}

/* ---------------------------------------------------------------- embeddings */

static void cpu_embed_fwd(float *restrict out, const int *restrict ids, const float *restrict wte,
                          int N, int C)
{
    for (int n = 0; n < N; n++)
        memcpy(out + (size_t)n * C, wte + (size_t)ids[n] * C, (size_t)C * sizeof(float));
}

static void cpu_embed_bwd(float *restrict dwte, const float *restrict dout, const int *restrict ids,
                          int N, int C)
{
    for (int n = 0; n < N; n++) {
        float *d = dwte + (size_t)ids[n] * C;
        const float *g = dout + (size_t)n * C;
        for (int c = 0; c < C; c++)
            d[c] += g[c];
    }
}

static void cpu_posemb_fwd(float *restrict out, const float *restrict wpe, int B, int T, int C)
{
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            float *o = out + ((size_t)b * T + t) * C;
            const float *p = wpe + (size_t)t * C;
            for (int c = 0; c < C; c++)
                o[c] += p[c];
        }
}

static void cpu_posemb_bwd(float *restrict dwpe, const float *restrict dout, int B, int T, int C)
{
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            const float *g = dout + ((size_t)b * T + t) * C;
            float *p = dwpe + (size_t)t * C;
            for (int c = 0; c < C; c++)
                p[c] += g[c];
        }
}

/* ---------------------------------------------------------------- layernorm */

#define KN_LN_EPS 1e-5f

static void cpu_layernorm_fwd(float *restrict out, float *restrict mean, float *restrict rstd,
                              const float *restrict inp, const float *restrict w,
                              const float *restrict b, int N, int C)
{
    for (int n = 0; n < N; n++) {
        const float *x = inp + (size_t)n * C;
        float *o = out + (size_t)n * C;
        /* the two sums in double: a sequential fp32 sum of C values near
         * an offset loses ~sqrt(C) ulps of the total (rows at 100 +- 0.5,
         * C = 2000: the output 1.5e-4 off a double reference, where the
         * GPU's tree sums are 5e-6); the cost is nothing beside a GEMM */
        double sum = 0.0;
        for (int c = 0; c < C; c++)
            sum += x[c];
        const float m = (float)(sum / C);
        double sq = 0.0;
        for (int c = 0; c < C; c++) {
            const double d = x[c] - m;
            sq += d * d;
        }
        const float r = (float)(1.0 / sqrt(sq / C + KN_LN_EPS));
        for (int c = 0; c < C; c++)
            o[c] = (x[c] - m) * r * w[c] + b[c];
        mean[n] = m;
        rstd[n] = r;
    }
}

static void cpu_layernorm_bwd(float *restrict dinp, float *restrict dw, float *restrict db,
                              const float *restrict dout, const float *restrict inp,
                              const float *restrict w, const float *restrict mean,
                              const float *restrict rstd, int N, int C)
{
    for (int n = 0; n < N; n++) {
        const float *x = inp + (size_t)n * C, *g = dout + (size_t)n * C;
        const float m = mean[n], r = rstd[n];
        float dnorm_mean = 0.0f, dnorm_norm_mean = 0.0f;
        for (int c = 0; c < C; c++) {
            float norm = (x[c] - m) * r;
            float dnorm = w[c] * g[c];
            dnorm_mean += dnorm;
            dnorm_norm_mean += dnorm * norm;
        }
        dnorm_mean /= (float)C;
        dnorm_norm_mean /= (float)C;
        for (int c = 0; c < C; c++) {
            float norm = (x[c] - m) * r;
            if (dw) dw[c] += norm * g[c];
            if (db) db[c] += g[c];
            if (dinp)
                dinp[(size_t)n * C + c] += (w[c] * g[c] - dnorm_mean - norm * dnorm_norm_mean) * r;
        }
    }
}

/* ---------------------------------------------------------------- attention */

/* One query's attention weights over n keys, what the full attention and
 * the KV-cache path share (so that they give the same bits): pre[t2] =
 * scale (q . k_t2) with k_t2 = k + t2 * ldk (hs floats), then a[t2] =
 * softmax(pre)[t2], max-subtracted. pre may be a (the KV path keeps no
 * scores): each pre[t2] is read before a[t2] is written. */
static void softmax_row(float *pre, float *a, const float *restrict q, const float *restrict k,
                        size_t ldk, int n, int hs, float scale)
{
    float mx = -FLT_MAX;
    for (int t2 = 0; t2 < n; t2++) {
        const float *kt = k + (size_t)t2 * ldk;
        float dot = 0.0f;
        for (int i = 0; i < hs; i++)
            dot += q[i] * kt[i];
        dot *= scale;
        pre[t2] = dot;
        if (dot > mx) mx = dot;
    }
    float sum = 0.0f;
    for (int t2 = 0; t2 < n; t2++) {
        float e = expf(pre[t2] - mx);
        a[t2] = e;
        sum += e;
    }
    const float inv = 1.0f / sum;
    for (int t2 = 0; t2 < n; t2++)
        a[t2] *= inv;
}

static void cpu_attention_fwd(float *restrict out, float *restrict preatt, float *restrict att,
                              const float *restrict qkv, int B, int T, int C, int NH, int causal)
{
    const int hs = C / NH, C3 = 3 * C;
    const float scale = 1.0f / sqrtf((float)hs);
    for (int b = 0; b < B; b++)
        for (int h = 0; h < NH; h++)
            for (int t = 0; t < T; t++) {
                const float *q = qkv + ((size_t)b * T + t) * C3 + h * hs;
                float *pre = preatt + (((size_t)b * NH + h) * T + t) * T;
                float *a = att + (((size_t)b * NH + h) * T + t) * T;
                const int tn = causal ? t + 1 : T;
                softmax_row(pre, a, q, qkv + (size_t)b * T * C3 + C + h * hs, C3, tn, hs, scale);
                for (int t2 = tn; t2 < T; t2++)
                    a[t2] = pre[t2] = 0.0f;
                float *o = out + ((size_t)b * T + t) * C + h * hs;
                for (int i = 0; i < hs; i++)
                    o[i] = 0.0f;
                for (int t2 = 0; t2 < tn; t2++) {
                    const float *v = qkv + ((size_t)b * T + t2) * C3 + 2 * C + h * hs;
                    const float w = a[t2];
                    for (int i = 0; i < hs; i++)
                        o[i] += w * v[i];
                }
            }
}

static void cpu_kv_store(float *restrict K, float *restrict V, const float *restrict qkv, int n,
                         int C)
{
    for (int t = 0; t < n; t++) {
        memcpy(K + (size_t)t * C, qkv + (size_t)t * 3 * C + C, (size_t)C * sizeof(float));
        memcpy(V + (size_t)t * C, qkv + (size_t)t * 3 * C + 2 * C, (size_t)C * sizeof(float));
    }
}

/* cpu_attention_fwd's arithmetic for the last row of a causal block: the
 * KV-cache path gives the same tokens as the full forward pass. */
static void cpu_kv_attention(float *restrict out, float *restrict att, const float *restrict q,
                             const float *restrict K, const float *restrict V, int p, int C, int NH)
{
    const int hs = C / NH;
    const float scale = 1.0f / sqrtf((float)hs);
    for (int h = 0; h < NH; h++) {
        const float *qh = q + h * hs;
        float *a = att + (size_t)h * (p + 1);
        softmax_row(a, a, qh, K + h * hs, C, p + 1, hs, scale);
        float *o = out + h * hs;
        for (int i = 0; i < hs; i++)
            o[i] = 0.0f;
        for (int t2 = 0; t2 <= p; t2++) {
            const float *v = V + (size_t)t2 * C + h * hs;
            const float w = a[t2];
            for (int i = 0; i < hs; i++)
                o[i] += w * v[i];
        }
    }
}

static void cpu_attention_bwd(float *restrict dqkv, float *restrict dpreatt, float *restrict datt,
                              const float *restrict dout, const float *restrict qkv,
                              const float *restrict att, int B, int T, int C, int NH, int causal)
{
    const int hs = C / NH, C3 = 3 * C;
    const float scale = 1.0f / sqrtf((float)hs);
    for (int b = 0; b < B; b++)
        for (int h = 0; h < NH; h++)
            for (int t = 0; t < T; t++) {
                const float *a = att + (((size_t)b * NH + h) * T + t) * T;
                float *da = datt + (((size_t)b * NH + h) * T + t) * T;
                float *dpre = dpreatt + (((size_t)b * NH + h) * T + t) * T;
                const float *g = dout + ((size_t)b * T + t) * C + h * hs;
                const int tn = causal ? t + 1 : T;
                /* out = att . v */
                for (int t2 = 0; t2 < tn; t2++) {
                    const float *v = qkv + ((size_t)b * T + t2) * C3 + 2 * C + h * hs;
                    float *dv = dqkv + ((size_t)b * T + t2) * C3 + 2 * C + h * hs;
                    float dot = 0.0f;
                    for (int i = 0; i < hs; i++) {
                        dot += v[i] * g[i];
                        dv[i] += a[t2] * g[i];
                    }
                    da[t2] += dot;
                }
                /* softmax: dpre = a * (da - sum(a * da)) */
                float s = 0.0f;
                for (int t2 = 0; t2 < tn; t2++)
                    s += a[t2] * da[t2];
                for (int t2 = 0; t2 < tn; t2++)
                    dpre[t2] += a[t2] * (da[t2] - s);
                /* pre = scale * q . k */
                const float *q = qkv + ((size_t)b * T + t) * C3 + h * hs;
                float *dq = dqkv + ((size_t)b * T + t) * C3 + h * hs;
                for (int t2 = 0; t2 < tn; t2++) {
                    const float *k = qkv + ((size_t)b * T + t2) * C3 + C + h * hs;
                    float *dk = dqkv + ((size_t)b * T + t2) * C3 + C + h * hs;
                    const float d = dpre[t2] * scale;
                    for (int i = 0; i < hs; i++) {
                        dq[i] += k[i] * d;
                        dk[i] += q[i] * d;
                    }
                }
            }
}

/* ---------------------------------------------------------------- activations */

#define KN_GELU_SCALE 0.7978845608028654f /* sqrt(2 / pi) */

static void cpu_act_fwd(int kind, float *restrict out, const float *restrict inp, size_t n)
{
    switch (kind) {
    case KN_ACT_RELU:
        for (size_t i = 0; i < n; i++)
            out[i] = inp[i] > 0.0f ? inp[i] : 0.0f;
        break;
    case KN_ACT_TANH:
        for (size_t i = 0; i < n; i++)
            out[i] = tanhf(inp[i]);
        break;
    case KN_ACT_SIGMOID:
        for (size_t i = 0; i < n; i++)
            out[i] = 1.0f / (1.0f + expf(-inp[i]));
        break;
    case KN_ACT_GELU:
        for (size_t i = 0; i < n; i++) {
            float x = inp[i];
            float u = KN_GELU_SCALE * (x + 0.044715f * x * x * x);
            out[i] = 0.5f * x * (1.0f + tanhf(u));
        }
        break;
    }
}

static void cpu_act_bwd(int kind, float *restrict dinp, const float *restrict inp,
                        const float *restrict out, const float *restrict dout, size_t n)
{
    switch (kind) {
    case KN_ACT_RELU:
        for (size_t i = 0; i < n; i++)
            dinp[i] += out[i] > 0.0f ? dout[i] : 0.0f;
        break;
    case KN_ACT_TANH:
        for (size_t i = 0; i < n; i++)
            dinp[i] += (1.0f - out[i] * out[i]) * dout[i];
        break;
    case KN_ACT_SIGMOID:
        for (size_t i = 0; i < n; i++)
            dinp[i] += out[i] * (1.0f - out[i]) * dout[i];
        break;
    case KN_ACT_GELU:
        for (size_t i = 0; i < n; i++) {
            float x = inp[i];
            float u = KN_GELU_SCALE * (x + 0.044715f * x * x * x);
            float th = tanhf(u);
            float sech2 = 1.0f - th * th;
            float local = 0.5f * (1.0f + th) +
                          x * 0.5f * sech2 * KN_GELU_SCALE * (1.0f + 3.0f * 0.044715f * x * x);
            dinp[i] += local * dout[i];
        }
        break;
    }
}

/* ---------------------------------------------------------------- dropout, residual */

static void cpu_dropout_fwd(float *restrict out, float *restrict mask, const float *restrict inp,
                            size_t n, float p, uint64_t seed)
{
    const float keep = 1.0f / (1.0f - p);
    for (size_t i = 0; i < n; i++) {
        mask[i] = kn_backend_uniform(seed, i) >= p ? keep : 0.0f;
        out[i] = inp[i] * mask[i];
    }
}

static void cpu_dropout_bwd(float *restrict dinp, const float *restrict dout,
                            const float *restrict mask, size_t n)
{
    for (size_t i = 0; i < n; i++)
        dinp[i] += dout[i] * mask[i];
}

static void cpu_residual_fwd(float *restrict out, const float *restrict a, const float *restrict b,
                             size_t n)
{
    for (size_t i = 0; i < n; i++)
        out[i] = a[i] + b[i];
}

static void cpu_residual_bwd(float *restrict da, float *restrict db, const float *restrict dout,
                             size_t n)
{
    if (da)
        for (size_t i = 0; i < n; i++)
            da[i] += dout[i];
    if (db)
        for (size_t i = 0; i < n; i++)
            db[i] += dout[i];
}

/* ---------------------------------------------------------------- sequence pooling */

static void cpu_seqpool_fwd(int kind, float *restrict out, const float *restrict inp, int B, int T,
                            int C)
{
    for (int b = 0; b < B; b++) {
        float *o = out + (size_t)b * C;
        const float *x = inp + (size_t)b * T * C;
        if (kind == KN_SEQPOOL_CLS) {
            memcpy(o, x, (size_t)C * sizeof(float));
            continue;
        }
        for (int c = 0; c < C; c++)
            o[c] = 0.0f;
        for (int t = 0; t < T; t++)
            for (int c = 0; c < C; c++)
                o[c] += x[(size_t)t * C + c];
        const float inv = 1.0f / (float)T;
        for (int c = 0; c < C; c++)
            o[c] *= inv;
    }
}

static void cpu_seqpool_bwd(int kind, float *restrict dinp, const float *restrict dout, int B,
                            int T, int C)
{
    for (int b = 0; b < B; b++) {
        const float *g = dout + (size_t)b * C;
        float *dx = dinp + (size_t)b * T * C;
        int tn = kind == KN_SEQPOOL_CLS ? 1 : T;
        float s = kind == KN_SEQPOOL_CLS ? 1.0f : 1.0f / (float)T;
        for (int t = 0; t < tn; t++)
            for (int c = 0; c < C; c++)
                dx[(size_t)t * C + c] += g[c] * s;
    }
}

/* ---------------------------------------------------------------- losses */

static void cpu_xent_fwd(float *restrict losses, float *restrict lse, const float *restrict logits,
                         const int *restrict targets, int N, int V, int Vp)
{
    for (int n = 0; n < N; n++) {
        const float *l = logits + (size_t)n * Vp;
        float mx = -FLT_MAX;
        for (int i = 0; i < V; i++)
            mx = l[i] > mx ? l[i] : mx;
        float sum = 0.0f;
        for (int i = 0; i < V; i++)
            sum += expf(l[i] - mx);
        lse[n] = mx + logf(sum);
        int t = targets[n];
        /* log-sum-exp form: exact for tiny probabilities where -log(p) would overflow */
        losses[n] = t < 0 ? 0.0f : logf(sum) + (mx - l[t]);
    }
}

static void cpu_xent_bwd(float *restrict dlogits, const float *restrict logits,
                         const float *restrict lse, const int *restrict targets, float dloss, int N,
                         int V, int Vp)
{
    for (int n = 0; n < N; n++) {
        int t = targets[n];
        if (t < 0) continue;
        float *d = dlogits + (size_t)n * Vp;
        const float *l = logits + (size_t)n * Vp, z = lse[n];
        for (int i = 0; i < V; i++)
            d[i] += expf(l[i] - z) * dloss;
        d[t] -= dloss;
    }
}

/* xent_fwd, then each row's gradient set in place of zero + xent_bwd (the
 * same arithmetic: 0 + x is x, so the same bits as the two). dlogits may be
 * logits (backend.h): every element is read before it is written, the
 * target's last. */
static void cpu_xent_fused(float *restrict losses, float *restrict lse, float *dlogits,
                           const float *logits, const int *restrict targets, float dloss, int N,
                           int V, int Vp)
{
    cpu_xent_fwd(losses, lse, logits, targets, N, V, Vp);
    for (int n = 0; n < N; n++) {
        const int t = targets[n];
        float *d = dlogits + (size_t)n * Vp;
        const float *l = logits + (size_t)n * Vp, z = lse[n];
        for (int i = 0; i < Vp; i++)
            d[i] = t < 0 || i >= V ? 0.0f : expf(l[i] - z) * dloss;
        if (t >= 0) d[t] -= dloss;
    }
}

static void cpu_mse_fwd(float *restrict losses, const float *restrict pred, const float *restrict y,
                        int N, int D)
{
    for (int n = 0; n < N; n++) {
        float acc = 0.0f;
        for (int d = 0; d < D; d++) {
            float e = pred[(size_t)n * D + d] - y[(size_t)n * D + d];
            acc += e * e;
        }
        losses[n] = acc / (float)D;
    }
}

static void cpu_mse_bwd(float *restrict dpred, const float *restrict pred, const float *restrict y,
                        float dloss, int N, int D)
{
    const float s = 2.0f * dloss / (float)D;
    for (size_t i = 0; i < (size_t)N * D; i++)
        dpred[i] += s * (pred[i] - y[i]);
}

static void cpu_xent_smooth_fwd(float *restrict losses, const float *restrict logits,
                                const float *restrict lse, const int *restrict targets, float s,
                                int N, int V, int Vp)
{
    for (int n = 0; n < N; n++) {
        if (targets[n] < 0) continue;
        const float *l = logits + (size_t)n * Vp;
        double mean = 0.0;
        for (int i = 0; i < V; i++)
            mean += l[i];
        mean /= (double)V;
        losses[n] = (1.0f - s) * losses[n] + s * (lse[n] - (float)mean);
    }
}

static void cpu_xent_smooth_bwd(float *restrict dlogits, const int *restrict targets, float sdloss,
                                int N, int V, int Vp)
{
    const float u = sdloss / (float)V;
    for (int n = 0; n < N; n++) {
        int t = targets[n];
        if (t < 0) continue;
        float *d = dlogits + (size_t)n * Vp;
        for (int i = 0; i < V; i++)
            d[i] -= u;
        d[t] += sdloss;
    }
}

/* ---------------------------------------------------------------- batchnorm */

static void cpu_batchnorm_fwd(float *restrict out, float *restrict mean, float *restrict rstd,
                              float *restrict run_mean, float *restrict run_var,
                              const float *restrict inp, const float *restrict w,
                              const float *restrict b, int B, int C, int HW, float momentum,
                              float eps, int training)
{
    const size_t n = (size_t)B * HW;
    for (int c = 0; c < C; c++) {
        float m, r;
        if (training) {
            /* two passes in double: the mean first, then the centred squares */
            double acc = 0.0;
            for (int bi = 0; bi < B; bi++) {
                const float *x = inp + ((size_t)bi * C + c) * HW;
                for (int i = 0; i < HW; i++)
                    acc += x[i];
            }
            const double md = acc / (double)n;
            double sq = 0.0;
            for (int bi = 0; bi < B; bi++) {
                const float *x = inp + ((size_t)bi * C + c) * HW;
                for (int i = 0; i < HW; i++) {
                    double d = x[i] - md;
                    sq += d * d;
                }
            }
            const double var = sq / (double)n;
            m = (float)md;
            r = (float)(1.0 / sqrt(var + (double)eps));
            const double unbiased = n > 1 ? sq / (double)(n - 1) : var;
            run_mean[c] = (1.0f - momentum) * run_mean[c] + momentum * m;
            run_var[c] = (1.0f - momentum) * run_var[c] + momentum * (float)unbiased;
        } else {
            m = run_mean[c];
            r = 1.0f / sqrtf(run_var[c] + eps);
        }
        mean[c] = m;
        rstd[c] = r;
        const float scale = r * w[c], shift = b[c] - m * r * w[c];
        for (int bi = 0; bi < B; bi++) {
            const float *x = inp + ((size_t)bi * C + c) * HW;
            float *o = out + ((size_t)bi * C + c) * HW;
            for (int i = 0; i < HW; i++)
                o[i] = x[i] * scale + shift;
        }
    }
}

static void cpu_batchnorm_bwd(float *restrict dinp, float *restrict dw, float *restrict db,
                              const float *restrict dout, const float *restrict inp,
                              const float *restrict w, const float *restrict mean,
                              const float *restrict rstd, int B, int C, int HW, int training)
{
    const double n = (double)B * HW;
    for (int c = 0; c < C; c++) {
        const float m = mean[c], r = rstd[c];
        double sg = 0.0, sgx = 0.0; /* sum of dout, sum of dout * xhat */
        for (int bi = 0; bi < B; bi++) {
            const float *x = inp + ((size_t)bi * C + c) * HW;
            const float *g = dout + ((size_t)bi * C + c) * HW;
            for (int i = 0; i < HW; i++) {
                sg += g[i];
                sgx += (double)g[i] * ((x[i] - m) * r);
            }
        }
        if (dw) dw[c] += (float)sgx;
        if (db) db[c] += (float)sg;
        if (!dinp) continue;
        const float k = r * w[c];
        /* training: the batch statistics depend on inp too */
        const float mg = training ? (float)(sg / n) : 0.0f,
                    mgx = training ? (float)(sgx / n) : 0.0f;
        for (int bi = 0; bi < B; bi++) {
            const float *x = inp + ((size_t)bi * C + c) * HW;
            const float *g = dout + ((size_t)bi * C + c) * HW;
            float *d = dinp + ((size_t)bi * C + c) * HW;
            for (int i = 0; i < HW; i++)
                d[i] += k * (g[i] - mg - (x[i] - m) * r * mgx);
        }
    }
}

/* ---------------------------------------------------------------- reductions */

static double cpu_sum(const float *restrict x, size_t n)
{
    double acc = 0.0;
    for (size_t i = 0; i < n; i++)
        acc += x[i];
    return acc;
}

static double cpu_sumsq(const float *restrict x, size_t n)
{
    double acc = 0.0;
    for (size_t i = 0; i < n; i++)
        acc += (double)x[i] * x[i];
    return acc;
}

/* ---------------------------------------------------------------- optimizers */

/* PyTorch's update rules (torch.optim, default flags), so fixtures agree. */
static void cpu_optim_update(const kn_optim_args *a, float *restrict p, const float *restrict grad,
                             float *restrict m, float *restrict v, size_t n)
{
    const float lr = a->lr, b1 = a->beta1, b2 = a->beta2, eps = a->eps, wd = a->weight_decay;
    const float gs = a->grad_scale;
    switch (a->kind) {
    case KN_OPT_SGD:
        for (size_t i = 0; i < n; i++) {
            float g = grad[i] * gs + wd * p[i];
            if (b1 != 0.0f) {
                m[i] = b1 * m[i] + g;
                g = m[i];
            }
            p[i] -= lr * g;
        }
        break;
    case KN_OPT_ADAM:
    case KN_OPT_ADAMW: {
        const int decoupled = a->kind == KN_OPT_ADAMW;
        const float step = lr / a->bc1, sbc2 = sqrtf(a->bc2);
        const float shrink = decoupled ? 1.0f - lr * wd : 1.0f;
        const float l2 = decoupled ? 0.0f : wd;
        for (size_t i = 0; i < n; i++) {
            float g = grad[i] * gs + l2 * p[i];
            m[i] = b1 * m[i] + (1.0f - b1) * g;
            v[i] = b2 * v[i] + (1.0f - b2) * g * g;
            float denom = sqrtf(v[i]) / sbc2 + eps;
            p[i] = p[i] * shrink - step * m[i] / denom;
        }
        break;
    }
    case KN_OPT_RMSPROP:
        for (size_t i = 0; i < n; i++) {
            float g = grad[i] * gs + wd * p[i];
            v[i] = b2 * v[i] + (1.0f - b2) * g * g;
            float u = g / (sqrtf(v[i]) + eps);
            if (b1 != 0.0f) {
                m[i] = b1 * m[i] + u;
                u = m[i];
            }
            p[i] -= lr * u;
        }
        break;
    }
}

/* ---------------------------------------------------------------- table */

/* The multi-tensor update as the per-tensor path computes it (the same
 * per-element arithmetic, so the same bits): the host's norm and scale,
 * then each chunk. */
static void cpu_optim_update_all(const kn_optim_args *a, float clip, float *p, const float *grad,
                                 float *m, float *v, size_t numel, const kn_optim_chunk *chunks,
                                 int nchunks, float *norm)
{
    kn_optim_args c = *a;
    float nrm = 0.0f;
    if (clip > 0.0f || norm) nrm = (float)sqrt(cpu_sumsq(grad, numel));
    c.grad_scale = clip > 0.0f && nrm > clip ? clip / (nrm + 1e-6f) : 1.0f;
    for (int i = 0; i < nchunks; i++) {
        const kn_optim_chunk *k = &chunks[i];
        c.weight_decay = k->decay ? a->weight_decay : 0.0f;
        cpu_optim_update(&c, p + k->off, grad + k->off, m + k->off, v + k->off, (size_t)k->n);
    }
    if (norm) *norm = nrm;
}

/* A training step as one unit: the CPU runs it as it comes. */
static void *cpu_host_alloc(size_t bytes)
{
    return calloc(1, bytes ? bytes : 1);
}

static int cpu_graph_run(void **slot, uint64_t key, void (*fn)(void *ctx), void *ctx)
{
    (void)slot, (void)key;
    fn(ctx);
    return 0;
}

static void cpu_graph_free(void *slot)
{
    (void)slot;
}

static const kn_backend cpu_backend = {
    .name = "cpu",
    .alloc = cpu_alloc,
    .free = cpu_free,
    .to_device = cpu_copy,
    .to_host = cpu_copy,
    .zero = cpu_zero,
    .matmul_fwd = cpu_matmul_fwd,
    .matmul_bwd = cpu_matmul_bwd,
    .conv2d_scratch = cpu_conv2d_scratch,
    .conv2d_fwd = cpu_conv2d_fwd,
    .conv2d_bwd = cpu_conv2d_bwd,
    .pool2d_fwd = cpu_pool2d_fwd,
    .pool2d_bwd = cpu_pool2d_bwd,
    .embed_fwd = cpu_embed_fwd,
    .embed_bwd = cpu_embed_bwd,
    .posemb_fwd = cpu_posemb_fwd,
    .posemb_bwd = cpu_posemb_bwd,
    .layernorm_fwd = cpu_layernorm_fwd,
    .layernorm_bwd = cpu_layernorm_bwd,
    .attention_fwd = cpu_attention_fwd,
    .attention_bwd = cpu_attention_bwd,
    .kv_store = cpu_kv_store,
    .kv_attention = cpu_kv_attention,
    .act_fwd = cpu_act_fwd,
    .act_bwd = cpu_act_bwd,
    .dropout_fwd = cpu_dropout_fwd,
    .dropout_bwd = cpu_dropout_bwd,
    .residual_fwd = cpu_residual_fwd,
    .residual_bwd = cpu_residual_bwd,
    .seqpool_fwd = cpu_seqpool_fwd,
    .seqpool_bwd = cpu_seqpool_bwd,
    .xent_fwd = cpu_xent_fwd,
    .xent_bwd = cpu_xent_bwd,
    .xent_fused = cpu_xent_fused,
    .mse_fwd = cpu_mse_fwd,
    .mse_bwd = cpu_mse_bwd,
    .batchnorm_fwd = cpu_batchnorm_fwd,
    .batchnorm_bwd = cpu_batchnorm_bwd,
    .xent_smooth_fwd = cpu_xent_smooth_fwd,
    .xent_smooth_bwd = cpu_xent_smooth_bwd,
    .sum = cpu_sum,
    .sumsq = cpu_sumsq,
    .optim_update = cpu_optim_update,
    .optim_update_all = cpu_optim_update_all,
    .host_alloc = cpu_host_alloc,
    .host_free = free,
    .graph_run = cpu_graph_run,
    .graph_free = cpu_graph_free,
};

const kn_backend *kn_backend_cpu(void)
{
    return &cpu_backend;
}
