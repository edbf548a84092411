/* model_tfm.c: the GPT-2-style decoder LM (pre-LN blocks, GELU MLP of 4C,
 * tied input/output embeddings, padded vocabulary) and the Transformer text
 * classifier (same trunk, bidirectional by default, mean or CLS pooling and a
 * linear head). Parameter names and shapes are those of nanoGPT's state_dict
 * without the "transformer." prefix, so PyTorch maps 1:1:
 *   wte.weight (Vp, C)  wpe.weight (maxT, C)
 *   h.<l>.ln_1.{weight,bias} (C)      h.<l>.attn.c_attn.{weight (3C, C), bias (3C)}
 *   h.<l>.attn.c_proj.{weight (C, C), bias (C)}   h.<l>.ln_2.{weight,bias} (C)
 *   h.<l>.mlp.c_fc.{weight (4C, C), bias (4C)}    h.<l>.mlp.c_proj.{weight (C, 4C), bias (C)}
 *   ln_f.{weight,bias} (C)            txtcls only: head.{weight (classes, C), bias}
 * Dropout is not part of these models (spec "dropout" must be 0). */
#include "nn/model_int.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/kn.h"
#include "nn/rng.h"

size_t kn_tfm_gelu_keep_bytes = (size_t)64 << 20;

static int addp(kn_model *m, const char *name, int d0, int d1, int decay)
{
    int sh[2] = {d0, d1};
    return kn_tensor_add(&m->params, name, d1 ? 2 : 1, sh, decay);
}

static int adda(kn_model *m, const char *name, int d0, int d1)
{
    int sh[2] = {d0, d1};
    return kn_tensor_add(&m->acts, name, 2, sh, 0);
}

static int addg(kn_model *m, const char *name, int d0, int d1)
{
    int sh[2] = {d0, d1};
    return kn_tensor_add(&m->dacts, name, 2, sh, 0);
}

int kn_model_tfm_build(kn_model *m, const json_t *spec, json_t *norm, char *err, size_t errsz)
{
    tfm_model *t = &m->tfm;
    int rc, gpt = m->type == KN_MODEL_GPT;
    if ((rc = kn_model_spec_int(spec, norm, "n_layer", 2, 1, 1024, &t->L, err, errsz)) ||
        (rc = kn_model_spec_int(spec, norm, "n_head", 2, 1, 1024, &t->NH, err, errsz)) ||
        (rc = kn_model_spec_int(spec, norm, "n_embd", 64, 1, 65536, &t->C, err, errsz)) ||
        (rc = kn_model_spec_int(spec, norm, "block_size", 64, 1, 1 << 20, &t->maxT, err, errsz)) ||
        (rc = kn_model_spec_int(spec, norm, "vocab_size", 256, 1, 1 << 24, &t->V, err, errsz)))
        return rc;
    if (t->C % t->NH)
        return kn_seterr(err, errsz, KN_EINVAL,
                         "model spec: n_embd %d is not a multiple of n_head %d", t->C, t->NH);
    const json_t *dp = json_object_get(spec, "dropout");
    if (dp && (!json_is_number(dp) || json_number_value(dp) != 0.0))
        return kn_seterr(err, errsz, KN_EINVAL,
                         "model spec: transformer dropout is not supported; use 0");
    if (gpt) {
        int def = (t->V + 63) / 64 * 64;
        if ((rc = kn_model_spec_int(spec, norm, "padded_vocab_size", def, t->V, 1 << 24, &t->Vp,
                                    err, errsz)))
            return rc;
        t->causal = 1;
        t->classes = 0;
    } else {
        t->Vp = t->V;
        if ((rc = kn_model_spec_int(spec, norm, "classes", 2, 1, 1 << 20, &t->classes, err, errsz)))
            return rc;
        const char *pool = json_string_value(json_object_get(spec, "pool"));
        if (pool && strcmp(pool, "mean") != 0 && strcmp(pool, "cls") != 0)
            return kn_seterr(err, errsz, KN_EINVAL, "model spec: \"pool\" must be mean or cls");
        t->pool = pool && strcmp(pool, "cls") == 0 ? KN_SEQPOOL_CLS : KN_SEQPOOL_MEAN;
        json_object_set_new(norm, "pool", json_string(t->pool == KN_SEQPOOL_CLS ? "cls" : "mean"));
        const json_t *c = json_object_get(spec, "causal");
        if (c && !json_is_boolean(c))
            return kn_seterr(err, errsz, KN_EINVAL, "model spec: \"causal\" must be a boolean");
        t->causal = c && json_is_true(c);
        json_object_set_new(norm, "causal", json_boolean(t->causal));
    }
    const int L = t->L, C = t->C, NH = t->NH, B = m->max_B, T = t->maxT;
    const int BT = B * T;
    t->fused_attn = m->be->attention_fused_fwd && m->be->attention_fused_bwd &&
                    C / NH <= KN_ATTN_FUSED_MAX_HS;
    /* the T x T matrices only where attention is not fused; the logits
     * below 2^31 floats, which int sizes and indices can still hold
     * (GPT-2 at B = 32, T = 1024: 1.65e9) */
    if ((!t->fused_attn && (double)B * T * NH * T > 1.5e9) || (double)B * T * t->Vp > 2.1e9)
        return kn_seterr(err, errsz, KN_ETOOBIG, "model: activations for batch %d are too large",
                         B);
    t->blk = calloc((size_t)L, sizeof(*t->blk));
    if (!t->blk) return kn_seterr(err, errsz, KN_ENOMEM, "model: out of memory");
    char n[KN_TENSOR_NAME_MAX];
#define P(field, fmt, d0, d1, decay)                                                               \
    do {                                                                                           \
        snprintf(n, sizeof(n), fmt, l);                                                            \
        if ((b->field = addp(m, n, d0, d1, decay)) < 0) goto nomem;                                \
    } while (0)
#define A(field, fmt, d0, d1)                                                                      \
    do {                                                                                           \
        snprintf(n, sizeof(n), fmt, l);                                                            \
        if ((b->field = adda(m, n, d0, d1)) < 0) goto nomem;                                       \
    } while (0)
    if ((t->wte = addp(m, "wte.weight", t->Vp, C, 1)) < 0 ||
        (t->wpe = addp(m, "wpe.weight", T, C, 1)) < 0)
        goto nomem;
    for (int l = 0; l < L; l++) {
        tfm_block *b = &t->blk[l];
        P(ln1w, "h.%d.ln_1.weight", C, 0, 0);
        P(ln1b, "h.%d.ln_1.bias", C, 0, 0);
        P(qkvw, "h.%d.attn.c_attn.weight", 3 * C, C, 1);
        P(qkvb, "h.%d.attn.c_attn.bias", 3 * C, 0, 0);
        P(projw, "h.%d.attn.c_proj.weight", C, C, 1);
        P(projb, "h.%d.attn.c_proj.bias", C, 0, 0);
        P(ln2w, "h.%d.ln_2.weight", C, 0, 0);
        P(ln2b, "h.%d.ln_2.bias", C, 0, 0);
        P(fcw, "h.%d.mlp.c_fc.weight", 4 * C, C, 1);
        P(fcb, "h.%d.mlp.c_fc.bias", 4 * C, 0, 0);
        P(fcprojw, "h.%d.mlp.c_proj.weight", C, 4 * C, 1);
        P(fcprojb, "h.%d.mlp.c_proj.bias", C, 0, 0);
    }
    if ((t->lnfw = addp(m, "ln_f.weight", C, 0, 0)) < 0 ||
        (t->lnfb = addp(m, "ln_f.bias", C, 0, 0)) < 0)
        goto nomem;
    t->headw = t->headb = -1;
    if (!gpt && ((t->headw = addp(m, "head.weight", t->classes, C, 1)) < 0 ||
                 (t->headb = addp(m, "head.bias", t->classes, 0, 0)) < 0))
        goto nomem;
    /* activations, sized for (max_B, block_size): per layer only what its
     * backward reads, 10 C floats a token (and a few; 14 C where GELU's
     * output is kept, kn_tfm_gelu_keep_bytes) where every output was kept
     * before (18 C): 377 MB instead of 680 MB a sequence of GPT-2 124M at
     * T = 1024 */
    t->gelu_kept = (double)BT * 4 * C * L * sizeof(float) <= (double)kn_tfm_gelu_keep_bytes;
    /* the bf16 table's GEMMs read qkv, atty and fch rounded to bf16
     * anyway, and its fused attention stages q, k, v as bf16: kept as bf16
     * they take 4 C floats a token a layer instead of 8 (GPT-2: 72 of 144
     * MiB a sequence less), for one fp32 working buffer of 4 C shared by
     * all layers. Only with fused attention: the unfused backward would
     * read rounded q, k, v against probabilities from unrounded ones. */
    t->bf16_store = m->be->to_bf16 && m->be->from_bf16 && t->fused_attn;
    /* and where the backend's ops read them as stored, no widening for
     * GELU and the attention projection's GEMMs (backend.h's *_bf16) */
    t->bf16_direct = t->bf16_store && m->be->matmul_fwd_bf16 && m->be->matmul_bwd_bf16 &&
                     m->be->act_fwd_bf16 && m->be->act_bwd_bf16;
    /* and the fused attention (backend.h's attention_fused_*_bf16) */
    t->bf16_attn =
        t->bf16_store && m->be->attention_fused_fwd_bf16 && m->be->attention_fused_bwd_bf16;
    /* and the qkv and fc GEMMs writing bf16 (backend.h's
     * matmul_fwd_to_bf16): with the two above nothing reads qkv or fch in
     * fp32, so the working buffer keeps only atty until it is stored, C
     * floats a token instead of 4 C (GPT-2 124M at T = 1024: 9 of 12 MiB
     * a sequence less) */
    t->bf16_gemm = t->bf16_direct && t->bf16_attn && m->be->matmul_fwd_to_bf16;
    /* and the fused attention writing atty as bf16 (backend.h's
     * attention_fused_fwd_to_bf16): no working buffer at all */
    t->bf16_attn_out = t->bf16_gemm && m->be->attention_fused_fwd_to_bf16;
    const int wq = t->bf16_store ? (3 * C + 1) / 2 : 3 * C, wa = t->bf16_store ? (C + 1) / 2 : C,
              wf = t->bf16_store ? 2 * C : 4 * C;
    t->work = -1;
    if (t->bf16_store && !t->bf16_attn_out &&
        (t->work = adda(m, "work", BT, t->bf16_gemm ? C : 4 * C)) < 0)
        goto nomem;
    if ((t->encoded = adda(m, "encoded", BT, C)) < 0) goto nomem;
    for (int l = 0; l < L; l++) {
        tfm_block *b = &t->blk[l];
        A(ln1_mean, "h.%d.ln1_mean", BT, 1);
        A(ln1_rstd, "h.%d.ln1_rstd", BT, 1);
        A(qkv, "h.%d.qkv", BT, wq);
        A(atty, "h.%d.atty", BT, wa);
        if (t->fused_attn) /* no T x T matrices: each query's log-sum-exp */
            A(att, "h.%d.lse", B * NH, T);
        else
            A(att, "h.%d.att", B * NH, T * T);
        A(res2, "h.%d.res2", BT, C);
        A(ln2_mean, "h.%d.ln2_mean", BT, 1);
        A(ln2_rstd, "h.%d.ln2_rstd", BT, 1);
        A(fch, "h.%d.fch", BT, wf);
        A(res3, "h.%d.res3", BT, C);
        b->gelu = -1;
        if (t->gelu_kept) A(gelu, "h.%d.gelu", BT, 4 * C);
    }
#undef P
#undef A
    if ((t->ln = adda(m, "ln", BT, C)) < 0 || (t->ln_mean = adda(m, "ln_mean", BT, 1)) < 0 ||
        (t->ln_rstd = adda(m, "ln_rstd", BT, 1)) < 0 || (t->proj = adda(m, "proj", BT, C)) < 0)
        goto nomem;
    t->gelu = -1;
    if (!t->gelu_kept && (t->gelu = adda(m, "gelu", BT, 4 * C)) < 0) goto nomem;
    t->preatt = -1;
    if (!t->fused_attn && (t->preatt = adda(m, "preatt", B * NH, T * T)) < 0) goto nomem;
    if ((t->lnf = adda(m, "lnf", BT, C)) < 0 || (t->lnf_mean = adda(m, "lnf_mean", BT, 1)) < 0 ||
        (t->lnf_rstd = adda(m, "lnf_rstd", BT, 1)) < 0)
        goto nomem;
    t->logit_rows = BT;
    if (gpt && m->be->xent_fused && BT > KN_TFM_LOGIT_ROWS) t->logit_rows = KN_TFM_LOGIT_ROWS;
    if (gpt) {
        if ((t->logits = adda(m, "logits", t->logit_rows, t->Vp)) < 0 ||
            (t->lse = adda(m, "lse", BT, 1)) < 0 || (t->losses = adda(m, "losses", BT, 1)) < 0)
            goto nomem;
        t->pooled = -1;
    } else {
        if ((t->pooled = adda(m, "pooled", B, C)) < 0 ||
            (t->logits = adda(m, "logits", B, t->classes)) < 0 ||
            (t->lse = adda(m, "lse", B, 1)) < 0 || (t->losses = adda(m, "losses", B, 1)) < 0)
            goto nomem;
    }
    /* the gradients: one set of buffers for all layers (the backward zeroes
     * each before it accumulates into it again) */
    t->dpreatt = t->datt = t->dpooled = -1;
    if ((t->dx = addg(m, "dx", BT, C)) < 0 || (t->dres2 = addg(m, "dres2", BT, C)) < 0 ||
        (t->dc1 = addg(m, "dc1", BT, C)) < 0 || (t->dc2 = addg(m, "dc2", BT, C)) < 0 ||
        (t->dh1 = addg(m, "dh1", BT, 4 * C)) < 0 || (t->dh2 = addg(m, "dh2", BT, 4 * C)) < 0 ||
        (t->dlnf = addg(m, "dlnf", BT, C)) < 0)
        goto nomem;
    if (!t->fused_attn && ((t->dpreatt = addg(m, "dpreatt", B * NH, T * T)) < 0 ||
                           (t->datt = addg(m, "datt", B * NH, T * T)) < 0))
        goto nomem;
    if (!gpt && (t->dpooled = addg(m, "dpooled", B, C)) < 0) goto nomem;
    /* GPT's logits' gradient replaces the logits (xent_fused in place: no
     * second buffer of logits); a backend without xent_fused, and the
     * classifier's few logits, have their own */
    t->dlogits = -1;
    if ((!gpt || !m->be->xent_fused) &&
        (t->dlogits = addg(m, "dlogits", gpt ? BT : B, gpt ? t->Vp : t->classes)) < 0)
        goto nomem;
    t->i_tokens = m->ibuf_n;
    t->i_targets = m->ibuf_n + (size_t)BT;
    m->ibuf_n += 2 * (size_t)BT;
    return KN_OK;
nomem:
    return kn_seterr(err, errsz, KN_ENOMEM, "model: out of memory declaring tensors");
}

int kn_model_tfm_init(kn_model *m)
{
    /* GPT-2 / nanoGPT init: N(0, 0.02) for embeddings and linear weights,
     * N(0, 0.02 / sqrt(2 L)) for the residual projections (c_proj), zero
     * biases, unit layernorm gains; padded vocabulary rows are zero. */
    const tfm_model *t = &m->tfm;
    float *h = calloc(m->params.numel ? m->params.numel : 1, sizeof(float));
    if (!h) return KN_ENOMEM;
    kn_rng rng;
    kn_rng_init(&rng, m->seed);
    const float proj_std = 0.02f / sqrtf(2.0f * (float)t->L);
    for (int i = 0; i < m->params.n; i++) {
        const kn_tensor *p = &m->params.t[i];
        float *d = h + p->offset;
        const char *nm = p->name;
        size_t len = strlen(nm);
        if (p->ndim == 1) {
            int gain = len > 7 && strcmp(nm + len - 7, ".weight") == 0; /* ln_*.weight */
            for (size_t e = 0; e < p->numel; e++)
                d[e] = gain ? 1.0f : 0.0f;
            continue;
        }
        float std = strstr(nm, "c_proj.weight") ? proj_std : 0.02f;
        size_t n = p->numel;
        if (i == t->wte) n = (size_t)t->V * t->C;
        for (size_t e = 0; e < n; e++)
            d[e] = std * kn_rng_normal(&rng);
    }
    m->be->to_device(m->params.data, h, m->params.numel * sizeof(float));
    free(h);
    return KN_OK;
}

int kn_model_tfm_forward(kn_model *m, const kn_batch *bt, char *err, size_t errsz)
{
    const kn_backend *be = m->be;
    tfm_model *t = &m->tfm;
    const int B = bt->B, T = bt->T, C = t->C, NH = t->NH, N = B * T;
    const int gpt = m->type == KN_MODEL_GPT;
    if (!bt->tokens) return kn_seterr(err, errsz, KN_EINVAL, "model: batch has no tokens");
    if (T < 1 || T > t->maxT)
        return kn_seterr(err, errsz, KN_EINVAL, "model: T = %d, allocated for 1..%d", T, t->maxT);
    for (int i = 0; i < N; i++)
        if (bt->tokens[i] < 0 || bt->tokens[i] >= t->V)
            return kn_seterr(err, errsz, KN_EINVAL, "model: token %d at %d not in [0, %d)",
                             bt->tokens[i], i, t->V);
    int nlab = gpt ? N : B, lim = gpt ? t->V : t->classes, valid = 0;
    if (bt->labels) {
        for (int i = 0; i < nlab; i++) {
            if (bt->labels[i] < -1 || bt->labels[i] >= lim)
                return kn_seterr(err, errsz, KN_EINVAL, "model: target %d at %d not in [0, %d)",
                                 bt->labels[i], i, lim);
            valid += bt->labels[i] >= 0;
        }
    }
    int *tokens = m->ibuf + t->i_tokens, *targets = m->ibuf + t->i_targets;
    be->to_device(tokens, bt->tokens, (size_t)N * sizeof(int));

    float *x = ACT(m, t->encoded);
    be->embed_fwd(x, tokens, PAR(m, t->wte), N, C);
    be->posemb_fwd(x, PAR(m, t->wpe), B, T, C);
    float *ln = ACT(m, t->ln), *proj = ACT(m, t->proj);
    const size_t NC = (size_t)N * C;
    for (int l = 0; l < t->L; l++) {
        const tfm_block *b = &t->blk[l];
        float *gelu = ACT(m, t->gelu_kept ? b->gelu : t->gelu);
        /* bf16_store: computed in work, kept as bf16 once read (model_int.h);
         * bf16_gemm: qkv and fch written as bf16 by their GEMMs, atty alone
         * in work; bf16_attn_out: atty too, and there is no work */
        float *wk = t->work >= 0 ? ACT(m, t->work) : NULL;
        float *qkv = t->bf16_store ? wk : ACT(m, b->qkv);
        float *atty = !t->bf16_store ? ACT(m, b->atty) : t->bf16_gemm ? wk : wk + 3 * NC;
        float *fch = t->bf16_store ? wk : ACT(m, b->fch);
        be->layernorm_fwd(ln, ACT(m, b->ln1_mean), ACT(m, b->ln1_rstd), x, PAR(m, b->ln1w),
                          PAR(m, b->ln1b), N, C);
        if (t->bf16_gemm)
            be->matmul_fwd_to_bf16((uint16_t *)ACT(m, b->qkv), ln, PAR(m, b->qkvw), PAR(m, b->qkvb),
                                   N, C, 3 * C);
        else
            be->matmul_fwd(qkv, ln, PAR(m, b->qkvw), PAR(m, b->qkvb), N, C, 3 * C);
        /* the fused attention reads q, k, v rounded to bf16 and the GEMM
         * below reads atty so: keeping them rounded changes nothing here */
        if (t->bf16_attn) { /* stored first, the attention reads the copy */
            const uint16_t *qkv16 = (const uint16_t *)ACT(m, b->qkv);
            if (!t->bf16_gemm) be->to_bf16((uint16_t *)ACT(m, b->qkv), qkv, 3 * NC);
            if (t->bf16_attn_out)
                be->attention_fused_fwd_to_bf16((uint16_t *)ACT(m, b->atty), ACT(m, b->att), qkv16,
                                                B, T, C, NH, t->causal);
            else
                be->attention_fused_fwd_bf16(atty, ACT(m, b->att), qkv16, B, T, C, NH, t->causal);
        } else {
            if (t->fused_attn)
                be->attention_fused_fwd(atty, ACT(m, b->att), qkv, B, T, C, NH, t->causal);
            else
                be->attention_fwd(atty, ACT(m, t->preatt), ACT(m, b->att), qkv, B, T, C, NH,
                                  t->causal);
            if (t->bf16_store) be->to_bf16((uint16_t *)ACT(m, b->qkv), qkv, 3 * NC);
        }
        if (t->bf16_direct) { /* stored first, the GEMM reads the copy */
            if (!t->bf16_attn_out) be->to_bf16((uint16_t *)ACT(m, b->atty), atty, NC);
            be->matmul_fwd_bf16(proj, (const uint16_t *)ACT(m, b->atty), PAR(m, b->projw),
                                PAR(m, b->projb), N, C, C);
        } else {
            be->matmul_fwd(proj, atty, PAR(m, b->projw), PAR(m, b->projb), N, C, C);
            if (t->bf16_store) be->to_bf16((uint16_t *)ACT(m, b->atty), atty, NC);
        }
        be->residual_fwd(ACT(m, b->res2), x, proj, NC);
        be->layernorm_fwd(ln, ACT(m, b->ln2_mean), ACT(m, b->ln2_rstd), ACT(m, b->res2),
                          PAR(m, b->ln2w), PAR(m, b->ln2b), N, C);
        /* bf16_store: GELU reads the rounded fch its backward will read */
        if (t->bf16_gemm) {
            be->matmul_fwd_to_bf16((uint16_t *)ACT(m, b->fch), ln, PAR(m, b->fcw), PAR(m, b->fcb),
                                   N, C, 4 * C);
        } else {
            be->matmul_fwd(fch, ln, PAR(m, b->fcw), PAR(m, b->fcb), N, C, 4 * C);
            if (t->bf16_store) be->to_bf16((uint16_t *)ACT(m, b->fch), fch, 4 * NC);
        }
        if (t->bf16_direct) {
            be->act_fwd_bf16(KN_ACT_GELU, gelu, (const uint16_t *)ACT(m, b->fch), 4 * NC);
        } else {
            if (t->bf16_store) be->from_bf16(fch, (const uint16_t *)ACT(m, b->fch), 4 * NC);
            be->act_fwd(KN_ACT_GELU, gelu, fch, 4 * NC);
        }
        be->matmul_fwd(proj, gelu, PAR(m, b->fcprojw), PAR(m, b->fcprojb), N, 4 * C, C);
        be->residual_fwd(ACT(m, b->res3), ACT(m, b->res2), proj, NC);
        x = ACT(m, b->res3);
    }
    be->layernorm_fwd(ACT(m, t->lnf), ACT(m, t->lnf_mean), ACT(m, t->lnf_rstd), x, PAR(m, t->lnfw),
                      PAR(m, t->lnfb), N, C);
    m->B = B;
    m->T = T;
    m->out_act = t->logits;
    m->out = ACT(m, t->logits);
    m->out_dact = t->dlogits;
    if (!gpt) {
        be->seqpool_fwd(t->pool, ACT(m, t->pooled), ACT(m, t->lnf), B, T, C);
        be->matmul_fwd(ACT(m, t->logits), ACT(m, t->pooled), PAR(m, t->headw), PAR(m, t->headb), B,
                       C, t->classes);
        m->out_rows = B;
        m->out_stride = m->out_valid = t->classes;
        if (!bt->labels) return KN_OK;
        be->to_device(targets, bt->labels, (size_t)nlab * sizeof(int));
        kn_model_xent(m, t->logits, t->lse, t->losses, targets, B, t->classes, t->classes, valid);
        m->n_valid = valid;
        m->have_targets = 1;
        return KN_OK;
    }
    m->out_rows = N;
    m->out_stride = t->Vp;
    m->out_valid = t->V;
    if (bt->labels) be->to_device(targets, bt->labels, (size_t)nlab * sizeof(int));
    if (bt->labels && valid && m->training && be->xent_fused) {
        /* training: the classifier in chunks of logit_rows rows, each
         * chunk's logits replaced by their gradient (the fused
         * cross-entropy in place) and taken back through the classifier at
         * once: ln_f's gradient is set here, wte's gets its share (model.h:
         * zero the gradients before the forward); no logits are kept */
        float *lg = ACT(m, t->logits), *lnf = ACT(m, t->lnf), *dlnf = DACT(m, t->dlnf);
        be->zero(dlnf, (size_t)N * C * sizeof(float));
        for (int r0 = 0; r0 < N; r0 += t->logit_rows) {
            const int R = N - r0 < t->logit_rows ? N - r0 : t->logit_rows;
            be->matmul_fwd(lg, lnf + (size_t)r0 * C, PAR(m, t->wte), NULL, R, C, t->Vp);
            be->xent_fused(ACT(m, t->losses) + r0, ACT(m, t->lse) + r0, lg, lg, targets + r0,
                           1.0f / (float)valid, R, t->V, t->Vp);
            be->matmul_bwd(dlnf + (size_t)r0 * C, GRAD(m, t->wte), NULL, lg,
                           lnf + (size_t)r0 * C, PAR(m, t->wte), R, C, t->Vp);
        }
        m->dlogits_set = 1;
        m->out_dact = t->dlnf;
        m->out = NULL; /* no logits kept: kn_model_logits says so */
    } else {
        if (N > t->logit_rows) { /* more rows than a chunk kept: the whole batch's buffer */
            if (!t->logits_all &&
                !(t->logits_all = be->alloc((size_t)m->max_B * t->maxT * t->Vp * sizeof(float)))) {
                m->out = NULL;
                return kn_seterr(err, errsz, KN_ENOMEM,
                                 "model: out of memory for the logits of %d rows", N);
            }
            m->out = t->logits_all;
        }
        be->matmul_fwd(m->out, ACT(m, t->lnf), PAR(m, t->wte), NULL, N, C, t->Vp);
        if (bt->labels)
            be->xent_fwd(ACT(m, t->losses), ACT(m, t->lse), m->out, targets, N, t->V, t->Vp);
    }
    if (!bt->labels) return KN_OK;
    m->n_valid = valid;
    m->have_targets = 1;
    return KN_OK;
}

/* The first n floats of gradient buffer g set to zero: a reused buffer
 * starts again before an op accumulates into it (backend.h: backward ops
 * add). */
static void gzero(kn_model *m, int g, size_t n)
{
    m->be->zero(DACT(m, g), n * sizeof(float));
}

void kn_model_tfm_backward(kn_model *m)
{
    const kn_backend *be = m->be;
    tfm_model *t = &m->tfm;
    const int B = m->B, T = m->T, C = t->C, NH = t->NH, N = B * T;
    const size_t NC = (size_t)N * C;
    const int *tokens = m->ibuf + t->i_tokens, *targets = m->ibuf + t->i_targets;
    /* kn_model_backward zeroed every gradient buffer but the one the
     * forward set. GPT: a training forward with targets already took the
     * loss back to ln_f (chunked, above); otherwise the logits are there
     * (m->out) and, in place, the fused classifier replaces them by their
     * gradient now (writing the losses and lse again, the same bits), or
     * zeroes them (no target); a backend without it has a separate dlogits */
    if (m->type == KN_MODEL_GPT && !m->dlogits_set) {
        float *dlogits = t->dlogits >= 0 ? DACT(m, t->dlogits) : m->out;
        if (t->dlogits >= 0 && m->n_valid)
            be->xent_bwd(dlogits, m->out, ACT(m, t->lse), targets, 1.0f / (float)m->n_valid, N,
                         t->V, t->Vp);
        else if (t->dlogits < 0 && m->n_valid)
            be->xent_fused(ACT(m, t->losses), ACT(m, t->lse), dlogits, dlogits, targets,
                           1.0f / (float)m->n_valid, N, t->V, t->Vp);
        else if (t->dlogits < 0)
            be->zero(dlogits, (size_t)N * t->Vp * sizeof(float));
        be->matmul_bwd(DACT(m, t->dlnf), GRAD(m, t->wte), NULL, dlogits, ACT(m, t->lnf),
                       PAR(m, t->wte), N, C, t->Vp);
    } else if (m->type != KN_MODEL_GPT) {
        if (m->n_valid && !m->dlogits_set)
            be->xent_bwd(DACT(m, t->dlogits), ACT(m, t->logits), ACT(m, t->lse), targets,
                         1.0f / (float)m->n_valid, B, t->classes, t->classes);
        be->matmul_bwd(DACT(m, t->dpooled), GRAD(m, t->headw), GRAD(m, t->headb),
                       DACT(m, t->dlogits), ACT(m, t->pooled), PAR(m, t->headw), B, C, t->classes);
        be->seqpool_bwd(t->pool, DACT(m, t->dlnf), DACT(m, t->dpooled), B, T, C);
    }
    float *dx = DACT(m, t->dx), *dres2 = DACT(m, t->dres2), *dc1 = DACT(m, t->dc1),
          *dc2 = DACT(m, t->dc2), *dh1 = DACT(m, t->dh1), *dh2 = DACT(m, t->dh2);
    float *ln = ACT(m, t->ln), *ln_mean = ACT(m, t->ln_mean), *ln_rstd = ACT(m, t->ln_rstd);
    be->layernorm_bwd(dx, GRAD(m, t->lnfw), GRAD(m, t->lnfb), DACT(m, t->dlnf),
                      ACT(m, t->blk[t->L - 1].res3), PAR(m, t->lnfw), ACT(m, t->lnf_mean),
                      ACT(m, t->lnf_rstd), N, C);
    /* dx holds the gradient of the block's output on entry, of its input on
     * exit; what the forward did not keep is recomputed with the forward's
     * ops on the same inputs (the same bits) */
    for (int l = t->L - 1; l >= 0; l--) {
        const tfm_block *b = &t->blk[l];
        const float *in = ACT(m, l ? t->blk[l - 1].res3 : t->encoded);
        /* res3 = res2 + fcproj */
        gzero(m, t->dres2, NC), gzero(m, t->dc1, NC);
        be->residual_bwd(dres2, dc1, dx, NC);
        float *gelu = ACT(m, t->gelu_kept ? b->gelu : t->gelu);
        float *fch = ACT(m, b->fch), *qkv = ACT(m, b->qkv), *atty = ACT(m, b->atty);
        /* bf16_store: widened into work, fch now (unless GELU reads it as
         * stored), qkv and atty below (unless the fused attention does);
         * bf16_gemm implies both readers, so its smaller work is not used */
        const uint16_t *fch16 = (const uint16_t *)ACT(m, b->fch);
        if (t->bf16_store && !t->bf16_gemm)
            fch = qkv = ACT(m, t->work), atty = ACT(m, t->work) + 3 * NC;
        if (t->bf16_store && !t->bf16_direct) be->from_bf16(fch, fch16, 4 * NC);
        if (!t->gelu_kept && t->bf16_direct)
            be->act_fwd_bf16(KN_ACT_GELU, gelu, fch16, 4 * NC);
        else if (!t->gelu_kept)
            be->act_fwd(KN_ACT_GELU, gelu, fch, 4 * NC);
        gzero(m, t->dh1, 4 * NC);
        be->matmul_bwd(dh1, GRAD(m, b->fcprojw), GRAD(m, b->fcprojb), dc1, gelu,
                       PAR(m, b->fcprojw), N, 4 * C, C);
        gzero(m, t->dh2, 4 * NC);
        if (t->bf16_direct)
            be->act_bwd_bf16(KN_ACT_GELU, dh2, fch16, gelu, dh1, 4 * NC);
        else
            be->act_bwd(KN_ACT_GELU, dh2, fch, gelu, dh1, 4 * NC);
        be->layernorm_fwd(ln, ln_mean, ln_rstd, ACT(m, b->res2), PAR(m, b->ln2w), PAR(m, b->ln2b),
                          N, C);
        gzero(m, t->dc2, NC);
        be->matmul_bwd(dc2, GRAD(m, b->fcw), GRAD(m, b->fcb), dh2, ln, PAR(m, b->fcw), N, C,
                       4 * C);
        be->layernorm_bwd(dres2, GRAD(m, b->ln2w), GRAD(m, b->ln2b), dc2, ACT(m, b->res2),
                          PAR(m, b->ln2w), ACT(m, b->ln2_mean), ACT(m, b->ln2_rstd), N, C);
        /* res2 = in + attproj: dx now becomes the input's gradient */
        gzero(m, t->dx, NC), gzero(m, t->dc1, NC);
        be->residual_bwd(dx, dc1, dres2, NC);
        /* the fused attention's backward reads qkv and its output as
         * stored (bf16_attn) or in fp32, the projection's GEMM atty as
         * stored (bf16_direct) or in fp32 */
        if (t->bf16_store && !t->bf16_attn) {
            be->from_bf16(qkv, (const uint16_t *)ACT(m, b->qkv), 3 * NC);
            be->from_bf16(atty, (const uint16_t *)ACT(m, b->atty), NC);
        }
        gzero(m, t->dc2, NC);
        if (t->bf16_direct)
            be->matmul_bwd_bf16(dc2, GRAD(m, b->projw), GRAD(m, b->projb), dc1,
                                (const uint16_t *)ACT(m, b->atty), PAR(m, b->projw), N, C, C);
        else
            be->matmul_bwd(dc2, GRAD(m, b->projw), GRAD(m, b->projb), dc1, atty, PAR(m, b->projw),
                           N, C, C);
        gzero(m, t->dh1, 3 * NC); /* dqkv */
        if (t->bf16_attn) {
            be->attention_fused_bwd_bf16(dh1, dc2, (const uint16_t *)ACT(m, b->qkv),
                                         (const uint16_t *)ACT(m, b->atty), ACT(m, b->att), B, T,
                                         C, NH, t->causal);
        } else if (t->fused_attn) {
            be->attention_fused_bwd(dh1, dc2, qkv, atty, ACT(m, b->att), B, T, C, NH, t->causal);
        } else {
            const size_t tt = (size_t)B * NH * T * T;
            gzero(m, t->dpreatt, tt), gzero(m, t->datt, tt);
            be->attention_bwd(dh1, DACT(m, t->dpreatt), DACT(m, t->datt), dc2, qkv,
                              ACT(m, b->att), B, T, C, NH, t->causal);
        }
        be->layernorm_fwd(ln, ln_mean, ln_rstd, in, PAR(m, b->ln1w), PAR(m, b->ln1b), N, C);
        gzero(m, t->dc1, NC);
        be->matmul_bwd(dc1, GRAD(m, b->qkvw), GRAD(m, b->qkvb), dh1, ln, PAR(m, b->qkvw), N, C,
                       3 * C);
        be->layernorm_bwd(dx, GRAD(m, b->ln1w), GRAD(m, b->ln1b), dc1, in, PAR(m, b->ln1w),
                          ACT(m, b->ln1_mean), ACT(m, b->ln1_rstd), N, C);
    }
    be->posemb_bwd(GRAD(m, t->wpe), dx, B, T, C);
    be->embed_bwd(GRAD(m, t->wte), dx, tokens, N, C);
}

const float *kn_model_tfm_qkv(kn_model *m, int l)
{
    const tfm_model *t = &m->tfm;
    if (!t->bf16_store) return ACT(m, t->blk[l].qkv);
    /* widened into dh1 (4 C floats a token), not work (only C where
     * bf16_gemm): nothing reads a gradient buffer between a forward and
     * its backward, which zeroes them all first (kn_model_backward) */
    float *w = DACT(m, t->dh1);
    m->be->from_bf16(w, (const uint16_t *)ACT(m, t->blk[l].qkv), (size_t)m->B * m->T * 3 * t->C);
    return w;
}
