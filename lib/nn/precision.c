/* precision.c: precision names, rounding of arrays, and the backend
 * variants of precision.h: the CPU's emulation tables (built here, by
 * wrapping the CPU backend's linear and conv2d ops) and the CUDA backend's
 * own (lib/nn/cuda/cuda.cu). Not thread-safe on first use of a variant:
 * pick the backend at start-up, as with kn_backend_get. */
#include "nn/precision.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#ifdef KILN_HAVE_CUDA
const kn_backend *kn_backend_cuda(void);
const kn_backend *kn_backend_cuda_with_precision(int precision);
#endif

int kn_precision_parse(const char *s, kn_precision *out)
{
    static const char *const names[] = {"fp32", "tf32", "bf16"};
    for (int i = 0; s && i < 3; i++)
        if (strcmp(s, names[i]) == 0) {
            *out = (kn_precision)i;
            return 0;
        }
    return -1;
}

const char *kn_precision_name(kn_precision p)
{
    return p == KN_PREC_TF32 ? "tf32" : p == KN_PREC_BF16 ? "bf16" : "fp32";
}

void kn_precision_round(kn_precision p, float *dst, const float *src, size_t n)
{
    if (p == KN_PREC_BF16)
        for (size_t i = 0; i < n; i++)
            dst[i] = kn_round_bf16(src[i]);
    else if (p == KN_PREC_TF32)
        for (size_t i = 0; i < n; i++)
            dst[i] = kn_round_tf32(src[i]);
    else if (n)
        memcpy(dst, src, n * sizeof(float));
}

/* ------------------------------------------------------------ CPU emulation
 * Each wrapper rounds copies of its GEMM inputs (malloc per call: this is a
 * test path) and calls the CPU backend's fp32 op on them. Bias gradients
 * come from a second call on the unrounded output gradient, as on CUDA. */

/* A host copy of n floats for the wrappers, zeroed (GCC, inlining,
 * cannot see emu_from_bf16 fill all of one); ops cannot fail (backend.h),
 * so running out of memory aborts. */
static float *host_floats(size_t n)
{
    float *d = calloc(n ? n : 1, sizeof(float));
    if (!d) {
        fprintf(stderr, "kiln precision emulation: out of memory (%zu floats)\n", n);
        abort();
    }
    return d;
}

static float *rounded(kn_precision p, const float *src, size_t n)
{
    float *d = host_floats(n);
    kn_precision_round(p, d, src, n);
    return d;
}

static void emu_matmul_fwd(kn_precision p, float *out, const float *inp, const float *w,
                           const float *bias, int N, int C, int OC)
{
    float *ri = rounded(p, inp, (size_t)N * C), *rw = rounded(p, w, (size_t)OC * C);
    kn_backend_cpu()->matmul_fwd(out, ri, rw, bias, N, C, OC);
    free(ri), free(rw);
}

static void emu_matmul_bwd(kn_precision p, float *dinp, float *dw, float *dbias, const float *dout,
                           const float *inp, const float *w, int N, int C, int OC)
{
    const kn_backend *cpu = kn_backend_cpu();
    if (dinp || dw) {
        float *rd = rounded(p, dout, (size_t)N * OC);
        float *ri = dw ? rounded(p, inp, (size_t)N * C) : NULL;
        float *rw = dinp ? rounded(p, w, (size_t)OC * C) : NULL;
        cpu->matmul_bwd(dinp, dw, NULL, rd, ri, rw, N, C, OC);
        free(rd), free(ri), free(rw);
    }
    if (dbias) cpu->matmul_bwd(NULL, NULL, dbias, dout, inp, w, N, C, OC);
}

static size_t conv_in(const kn_conv_shape *s)
{
    return (size_t)s->B * s->C * s->H * s->W;
}

static void emu_conv2d_fwd(kn_precision p, float *out, const float *inp, const float *w,
                           const float *bias, float *scratch, const kn_conv_shape *s)
{
    float *ri = rounded(p, inp, conv_in(s)),
          *rw = rounded(p, w, (size_t)s->OC * s->C * s->K * s->K);
    kn_backend_cpu()->conv2d_fwd(out, ri, rw, bias, scratch, s);
    free(ri), free(rw);
}

static void emu_conv2d_bwd(kn_precision p, float *dinp, float *dw, float *dbias, const float *dout,
                           const float *inp, const float *w, float *scratch, const kn_conv_shape *s)
{
    const kn_backend *cpu = kn_backend_cpu();
    if (dinp || dw) {
        float *rd = rounded(p, dout, (size_t)s->B * s->OC * s->OH * s->OW);
        float *ri = rounded(p, inp, conv_in(s));
        float *rw = rounded(p, w, (size_t)s->OC * s->C * s->K * s->K);
        cpu->conv2d_bwd(dinp, dw, NULL, rd, ri, rw, scratch, s);
        free(rd), free(ri), free(rw);
    }
    if (dbias) cpu->conv2d_bwd(NULL, NULL, dbias, dout, inp, w, scratch, s);
}

#define EMU_VARIANT(P, sfx)                                                                        \
    static void mf_##sfx(float *o, const float *i, const float *w, const float *b, int N, int C,   \
                         int OC)                                                                   \
    {                                                                                              \
        emu_matmul_fwd(P, o, i, w, b, N, C, OC);                                                   \
    }                                                                                              \
    static void mb_##sfx(float *di, float *dw, float *db, const float *d, const float *i,          \
                         const float *w, int N, int C, int OC)                                     \
    {                                                                                              \
        emu_matmul_bwd(P, di, dw, db, d, i, w, N, C, OC);                                          \
    }                                                                                              \
    static void cf_##sfx(float *o, const float *i, const float *w, const float *b, float *sc,      \
                         const kn_conv_shape *s)                                                   \
    {                                                                                              \
        emu_conv2d_fwd(P, o, i, w, b, sc, s);                                                      \
    }                                                                                              \
    static void cb_##sfx(float *di, float *dw, float *db, const float *d, const float *i,          \
                         const float *w, float *sc, const kn_conv_shape *s)                        \
    {                                                                                              \
        emu_conv2d_bwd(P, di, dw, db, d, i, w, sc, s);                                             \
    }

EMU_VARIANT(KN_PREC_TF32, tf32)
EMU_VARIANT(KN_PREC_BF16, bf16)

/* ------------------------------------------------------------ bf16 storage
 * (backend.h's to_bf16 / from_bf16 and the ops reading what to_bf16
 * stored, in the bf16 table only: the fp32 and tf32 models keep their
 * activations in fp32) */

static void emu_to_bf16(uint16_t *dst, const float *src, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        const float r = kn_round_bf16(src[i]);
        uint32_t u;
        memcpy(&u, &r, sizeof u);
        dst[i] = (uint16_t)(u >> 16);
    }
}

static void emu_from_bf16(float *dst, const uint16_t *src, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        const uint32_t u = (uint32_t)src[i] << 16;
        memcpy(&dst[i], &u, sizeof u);
    }
}

/* The ops reading a stored bf16 input (backend.h's *_bf16): the input
 * widened into a host copy (as emu_from_bf16), then the bf16 table's own
 * op on it, so each is that op on from_bf16(inp) by construction. */

static float *widened(const uint16_t *src, size_t n)
{
    float *d = host_floats(n);
    emu_from_bf16(d, src, n);
    return d;
}

static void emu_matmul_fwd_bf16(float *out, const uint16_t *inp, const float *w, const float *bias,
                                int N, int C, int OC)
{
    float *x = widened(inp, (size_t)N * C);
    mf_bf16(out, x, w, bias, N, C, OC);
    free(x);
}

static void emu_matmul_bwd_bf16(float *dinp, float *dw, float *dbias, const float *dout,
                                const uint16_t *inp, const float *w, int N, int C, int OC)
{
    float *x = widened(inp, (size_t)N * C);
    mb_bf16(dinp, dw, dbias, dout, x, w, N, C, OC);
    free(x);
}

/* backend.h's matmul_fwd_to_bf16: the table's matmul_fwd into a host
 * copy, rounded as to_bf16 rounds: the model's path before it had the op
 * (matmul_fwd into its working buffer, then to_bf16), by construction */
static void emu_matmul_fwd_to_bf16(uint16_t *out, const float *inp, const float *w,
                                   const float *bias, int N, int C, int OC)
{
    const size_t n = (size_t)N * OC;
    float *y = host_floats(n);
    mf_bf16(y, inp, w, bias, N, C, OC);
    emu_to_bf16(out, y, n);
    free(y);
}

static void emu_act_fwd_bf16(int kind, float *out, const uint16_t *inp, size_t n)
{
    float *x = widened(inp, n);
    kn_backend_cpu()->act_fwd(kind, out, x, n);
    free(x);
}

static void emu_act_bwd_bf16(int kind, float *dinp, const uint16_t *inp, const float *out,
                             const float *dout, size_t n)
{
    float *x = widened(inp, n);
    kn_backend_cpu()->act_bwd(kind, dinp, x, out, dout, n);
    free(x);
}

/* ------------------------------------------------------------ fused attention
 *
 * The CUDA bf16 table's flash attention (lib/nn/cuda/flash.cu) computed
 * the same way on the CPU: the staged q, k, v, dout rounded to bf16, the
 * scores and every product accumulated in fp32, the forward's online
 * softmax over the same tiles of 64 keys (the rescale by exp(m_old -
 * m_new) between tiles included), P = exp(s - m) rounded to bf16 for P V
 * while the row sum l adds the unrounded p, and in the backward P from
 * lse, dV += bf16(P) dO, dS = bf16(p (dP - Delta) scale), dK += dS q,
 * dQ += dS k. Only the order of the sums inside a tile differs from the
 * tensor cores'. */

#define EMU_TILE 64

static int emu_visible(int i, int j, int T, int causal)
{
    return i < T && j < T && (!causal || j <= i);
}

/* x (hs floats) rounded to bf16 into dst */
static void emu_bf16_row(float *dst, const float *x, int hs)
{
    for (int d = 0; d < hs; d++)
        dst[d] = kn_round_bf16(x[d]);
}

static float emu_dot(const float *a, const float *b, int hs)
{
    float s = 0.0f;
    for (int d = 0; d < hs; d++)
        s += a[d] * b[d];
    return s;
}

static void emu_flash_fwd(float *out, float *lse, const float *qkv, int B, int T, int C, int NH,
                          int causal)
{
    const int hs = C / NH, C3 = 3 * C;
    const float scale = 1.0f / sqrtf((float)hs);
    float *q = malloc((size_t)hs * sizeof(float)), *kv = malloc((size_t)hs * sizeof(float));
    float *o = malloc((size_t)hs * sizeof(float)), s[EMU_TILE];
    if (!q || !kv || !o) {
        fprintf(stderr, "kiln precision emulation: out of memory\n");
        abort();
    }
    for (int b = 0; b < B; b++)
        for (int h = 0; h < NH; h++)
            for (int i = 0; i < T; i++) {
                const float *row = qkv + ((size_t)b * T) * C3 + h * hs;
                emu_bf16_row(q, row + (size_t)i * C3, hs);
                float m = -FLT_MAX, l = 0.0f;
                for (int d = 0; d < hs; d++)
                    o[d] = 0.0f;
                const int q0 = i / EMU_TILE * EMU_TILE;
                const int kend = causal ? (q0 + EMU_TILE < T ? q0 + EMU_TILE : T) : T;
                for (int k0 = 0; k0 < kend; k0 += EMU_TILE) {
                    float tmax = -FLT_MAX;
                    for (int c = 0; c < EMU_TILE; c++) {
                        const int j = k0 + c;
                        if (!emu_visible(i, j, T, causal)) continue;
                        emu_bf16_row(kv, row + (size_t)j * C3 + C, hs);
                        s[c] = emu_dot(q, kv, hs) * scale;
                        tmax = fmaxf(tmax, s[c]);
                    }
                    const float mn = fmaxf(m, tmax), alpha = expf(m - mn);
                    float sum = 0.0f;
                    for (int d = 0; d < hs; d++)
                        o[d] *= alpha;
                    for (int c = 0; c < EMU_TILE; c++) {
                        const int j = k0 + c;
                        if (!emu_visible(i, j, T, causal)) continue;
                        const float p = expf(s[c] - mn), pb = kn_round_bf16(p);
                        sum += p;
                        emu_bf16_row(kv, row + (size_t)j * C3 + 2 * C, hs);
                        for (int d = 0; d < hs; d++)
                            o[d] += pb * kv[d];
                    }
                    l = l * alpha + sum;
                    m = mn;
                }
                float *dst = out + ((size_t)b * T + i) * C + h * hs;
                for (int d = 0; d < hs; d++)
                    dst[d] = o[d] / l;
                lse[((size_t)b * NH + h) * T + i] = m + logf(l);
            }
    free(q), free(kv), free(o);
}

static void emu_flash_bwd(float *dqkv, const float *dout, const float *qkv, const float *out,
                          const float *lse, int B, int T, int C, int NH, int causal)
{
    const int hs = C / NH, C3 = 3 * C;
    const float scale = 1.0f / sqrtf((float)hs);
    const size_t head = (size_t)T * hs;
    /* one head's bf16 q, k, v, dout and fp32 dq, dk, dv accumulators */
    float *buf = malloc(7 * head * sizeof(float)), *delta = malloc((size_t)T * sizeof(float));
    if (!buf || !delta) {
        fprintf(stderr, "kiln precision emulation: out of memory\n");
        abort();
    }
    float *q = buf, *k = q + head, *v = k + head, *go = v + head;
    float *dq = go + head, *dk = dq + head, *dv = dk + head;
    for (int b = 0; b < B; b++)
        for (int h = 0; h < NH; h++) {
            for (int t = 0; t < T; t++) {
                const float *row = qkv + ((size_t)b * T + t) * C3 + h * hs;
                const float *g = dout + ((size_t)b * T + t) * C + h * hs;
                const float *y = out + ((size_t)b * T + t) * C + h * hs;
                emu_bf16_row(q + (size_t)t * hs, row, hs);
                emu_bf16_row(k + (size_t)t * hs, row + C, hs);
                emu_bf16_row(v + (size_t)t * hs, row + 2 * C, hs);
                emu_bf16_row(go + (size_t)t * hs, g, hs);
                delta[t] = emu_dot(g, y, hs); /* fp32 dout . out */
            }
            memset(dq, 0, 3 * head * sizeof(float));
            const float *z = lse + ((size_t)b * NH + h) * T;
            for (int i = 0; i < T; i++)
                for (int j = 0; j < T; j++) {
                    if (!emu_visible(i, j, T, causal)) continue;
                    const float *qi = q + (size_t)i * hs, *kj = k + (size_t)j * hs;
                    const float *vj = v + (size_t)j * hs, *gi = go + (size_t)i * hs;
                    const float p = expf(emu_dot(qi, kj, hs) * scale - z[i]);
                    const float pb = kn_round_bf16(p);
                    const float ds = kn_round_bf16(p * (emu_dot(vj, gi, hs) - delta[i]) * scale);
                    for (int d = 0; d < hs; d++) {
                        dv[(size_t)j * hs + d] += pb * gi[d];
                        dk[(size_t)j * hs + d] += ds * qi[d];
                        dq[(size_t)i * hs + d] += ds * kj[d];
                    }
                }
            for (int t = 0; t < T; t++) {
                float *g = dqkv + ((size_t)b * T + t) * C3 + h * hs;
                for (int d = 0; d < hs; d++) {
                    g[d] += dq[(size_t)t * hs + d];
                    g[C + d] += dk[(size_t)t * hs + d];
                    g[2 * C + d] += dv[(size_t)t * hs + d];
                }
            }
        }
    free(buf), free(delta);
}

/* backend.h's attention_fused_*_bf16: qkv and out widened into host
 * copies, then the ops above on them */
static void emu_flash_fwd_bf16(float *out, float *lse, const uint16_t *qkv, int B, int T, int C,
                               int NH, int causal)
{
    float *x = widened(qkv, (size_t)B * T * 3 * C);
    emu_flash_fwd(out, lse, x, B, T, C, NH, causal);
    free(x);
}

/* backend.h's attention_fused_fwd_to_bf16: the op above into a host copy,
 * rounded as to_bf16 rounds */
static void emu_flash_fwd_to_bf16(uint16_t *out, float *lse, const uint16_t *qkv, int B, int T,
                                  int C, int NH, int causal)
{
    const size_t n = (size_t)B * T * C;
    float *y = host_floats(n);
    emu_flash_fwd_bf16(y, lse, qkv, B, T, C, NH, causal);
    emu_to_bf16(out, y, n);
    free(y);
}

static void emu_flash_bwd_bf16(float *dqkv, const float *dout, const uint16_t *qkv,
                               const uint16_t *out, const float *lse, int B, int T, int C, int NH,
                               int causal)
{
    float *x = widened(qkv, (size_t)B * T * 3 * C), *o = widened(out, (size_t)B * T * C);
    emu_flash_bwd(dqkv, dout, x, o, lse, B, T, C, NH, causal);
    free(x), free(o);
}

/* ------------------------------------------------------------ variants */

static kn_backend cpu_tables[3];
static struct {
    const kn_backend *be;
    kn_precision p;
} known[8];
static int nknown;

static void remember(const kn_backend *be, kn_precision p)
{
    for (int i = 0; i < nknown; i++)
        if (known[i].be == be) return;
    if (nknown < (int)(sizeof(known) / sizeof(known[0])))
        known[nknown].be = be, known[nknown++].p = p;
}

const kn_backend *kn_backend_with_precision(const kn_backend *be, kn_precision p, char *err,
                                            size_t errsz)
{
    if (!be) return NULL;
    if (p == KN_PREC_FP32 && kn_backend_precision(be) == KN_PREC_FP32) return be;
    if (strcmp(be->name, "cpu") == 0) {
        if (p == KN_PREC_FP32) return kn_backend_cpu();
        kn_backend *t = &cpu_tables[p];
        if (!t->name) {
            *t = *kn_backend_cpu();
            t->matmul_fwd = p == KN_PREC_TF32 ? mf_tf32 : mf_bf16;
            t->matmul_bwd = p == KN_PREC_TF32 ? mb_tf32 : mb_bf16;
            t->conv2d_fwd = p == KN_PREC_TF32 ? cf_tf32 : cf_bf16;
            t->conv2d_bwd = p == KN_PREC_TF32 ? cb_tf32 : cb_bf16;
            if (p == KN_PREC_BF16) { /* as the CUDA bf16 table, switch included */
                t->to_bf16 = emu_to_bf16;
                t->from_bf16 = emu_from_bf16;
                t->matmul_fwd_bf16 = emu_matmul_fwd_bf16;
                t->matmul_bwd_bf16 = emu_matmul_bwd_bf16;
                t->act_fwd_bf16 = emu_act_fwd_bf16;
                t->act_bwd_bf16 = emu_act_bwd_bf16;
                t->matmul_fwd_to_bf16 = emu_matmul_fwd_to_bf16;
                const char *att = getenv("KILN_CUDA_ATTENTION");
                if (!att || strcmp(att, "gemm")) {
                    t->attention_fused_fwd = emu_flash_fwd;
                    t->attention_fused_bwd = emu_flash_bwd;
                    t->attention_fused_fwd_bf16 = emu_flash_fwd_bf16;
                    t->attention_fused_bwd_bf16 = emu_flash_bwd_bf16;
                    t->attention_fused_fwd_to_bf16 = emu_flash_fwd_to_bf16;
                }
            }
        }
        remember(t, p);
        return t;
    }
#ifdef KILN_HAVE_CUDA
    if (strcmp(be->name, "cuda") == 0) {
        const kn_backend *t = kn_backend_cuda_with_precision((int)p);
        if (t) {
            remember(t, p);
            return t;
        }
    }
#endif
    if (err && errsz)
        snprintf(err, errsz, "backend '%s' has no %s variant", be->name, kn_precision_name(p));
    return NULL;
}

kn_precision kn_backend_precision(const kn_backend *be)
{
    for (int i = 0; i < nknown; i++)
        if (known[i].be == be) return known[i].p;
    return KN_PREC_FP32;
}
