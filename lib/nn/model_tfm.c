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
    /* activations, sized for (max_B, block_size) */
    if ((t->encoded = adda(m, "encoded", BT, C)) < 0) goto nomem;
    for (int l = 0; l < L; l++) {
        tfm_block *b = &t->blk[l];
        A(ln1, "h.%d.ln1", BT, C);
        A(ln1_mean, "h.%d.ln1_mean", BT, 1);
        A(ln1_rstd, "h.%d.ln1_rstd", BT, 1);
        A(qkv, "h.%d.qkv", BT, 3 * C);
        A(atty, "h.%d.atty", BT, C);
        if (t->fused_attn) { /* no T x T matrices: each query's log-sum-exp */
            A(preatt, "h.%d.lse", B * NH, T);
            A(att, "h.%d.att_unused", 1, 1);
        } else {
            A(preatt, "h.%d.preatt", B * NH, T * T);
            A(att, "h.%d.att", B * NH, T * T);
        }
        A(attproj, "h.%d.attproj", BT, C);
        A(res2, "h.%d.res2", BT, C);
        A(ln2, "h.%d.ln2", BT, C);
        A(ln2_mean, "h.%d.ln2_mean", BT, 1);
        A(ln2_rstd, "h.%d.ln2_rstd", BT, 1);
        A(fch, "h.%d.fch", BT, 4 * C);
        A(fch_gelu, "h.%d.fch_gelu", BT, 4 * C);
        A(fcproj, "h.%d.fcproj", BT, C);
        A(res3, "h.%d.res3", BT, C);
    }
#undef P
#undef A
    if ((t->lnf = adda(m, "lnf", BT, C)) < 0 || (t->lnf_mean = adda(m, "lnf_mean", BT, 1)) < 0 ||
        (t->lnf_rstd = adda(m, "lnf_rstd", BT, 1)) < 0)
        goto nomem;
    if (gpt) {
        if ((t->logits = adda(m, "logits", BT, t->Vp)) < 0 ||
            (t->lse = adda(m, "lse", BT, 1)) < 0 || (t->losses = adda(m, "losses", BT, 1)) < 0)
            goto nomem;
        t->pooled = -1;
    } else {
        if ((t->pooled = adda(m, "pooled", B, C)) < 0 ||
            (t->logits = adda(m, "logits", B, t->classes)) < 0 ||
            (t->lse = adda(m, "lse", B, 1)) < 0 || (t->losses = adda(m, "losses", B, 1)) < 0)
            goto nomem;
    }
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
    for (int l = 0; l < t->L; l++) {
        const tfm_block *b = &t->blk[l];
        be->layernorm_fwd(ACT(m, b->ln1), ACT(m, b->ln1_mean), ACT(m, b->ln1_rstd), x,
                          PAR(m, b->ln1w), PAR(m, b->ln1b), N, C);
        be->matmul_fwd(ACT(m, b->qkv), ACT(m, b->ln1), PAR(m, b->qkvw), PAR(m, b->qkvb), N, C,
                       3 * C);
        if (t->fused_attn)
            be->attention_fused_fwd(ACT(m, b->atty), ACT(m, b->preatt), ACT(m, b->qkv), B, T, C, NH,
                                    t->causal);
        else
            be->attention_fwd(ACT(m, b->atty), ACT(m, b->preatt), ACT(m, b->att), ACT(m, b->qkv),
                              B, T, C, NH, t->causal);
        be->matmul_fwd(ACT(m, b->attproj), ACT(m, b->atty), PAR(m, b->projw), PAR(m, b->projb), N,
                       C, C);
        be->residual_fwd(ACT(m, b->res2), x, ACT(m, b->attproj), (size_t)N * C);
        be->layernorm_fwd(ACT(m, b->ln2), ACT(m, b->ln2_mean), ACT(m, b->ln2_rstd), ACT(m, b->res2),
                          PAR(m, b->ln2w), PAR(m, b->ln2b), N, C);
        be->matmul_fwd(ACT(m, b->fch), ACT(m, b->ln2), PAR(m, b->fcw), PAR(m, b->fcb), N, C, 4 * C);
        be->act_fwd(KN_ACT_GELU, ACT(m, b->fch_gelu), ACT(m, b->fch), (size_t)N * 4 * C);
        be->matmul_fwd(ACT(m, b->fcproj), ACT(m, b->fch_gelu), PAR(m, b->fcprojw),
                       PAR(m, b->fcprojb), N, 4 * C, C);
        be->residual_fwd(ACT(m, b->res3), ACT(m, b->res2), ACT(m, b->fcproj), (size_t)N * C);
        x = ACT(m, b->res3);
    }
    be->layernorm_fwd(ACT(m, t->lnf), ACT(m, t->lnf_mean), ACT(m, t->lnf_rstd), x, PAR(m, t->lnfw),
                      PAR(m, t->lnfb), N, C);
    m->B = B;
    m->T = T;
    m->out_act = t->logits;
    if (gpt) {
        be->matmul_fwd(ACT(m, t->logits), ACT(m, t->lnf), PAR(m, t->wte), NULL, N, C, t->Vp);
        m->out_rows = N;
        m->out_stride = t->Vp;
        m->out_valid = t->V;
    } else {
        be->seqpool_fwd(t->pool, ACT(m, t->pooled), ACT(m, t->lnf), B, T, C);
        be->matmul_fwd(ACT(m, t->logits), ACT(m, t->pooled), PAR(m, t->headw), PAR(m, t->headb), B,
                       C, t->classes);
        m->out_rows = B;
        m->out_stride = m->out_valid = t->classes;
    }
    if (!bt->labels) return KN_OK;
    be->to_device(targets, bt->labels, (size_t)nlab * sizeof(int));
    kn_model_xent(m, t->logits, t->lse, t->losses, targets, m->out_rows, m->out_valid,
                  m->out_stride, valid);
    m->n_valid = valid;
    m->have_targets = 1;
    return KN_OK;
}

void kn_model_tfm_backward(kn_model *m)
{
    const kn_backend *be = m->be;
    tfm_model *t = &m->tfm;
    const int B = m->B, T = m->T, C = t->C, NH = t->NH, N = B * T;
    const int *tokens = m->ibuf + t->i_tokens, *targets = m->ibuf + t->i_targets;
    if (m->n_valid && !m->dlogits_set)
        be->xent_bwd(DACT(m, t->logits), ACT(m, t->logits), ACT(m, t->lse), targets,
                     1.0f / (float)m->n_valid, m->out_rows, m->out_valid, m->out_stride);
    if (m->type == KN_MODEL_GPT) {
        be->matmul_bwd(DACT(m, t->lnf), GRAD(m, t->wte), NULL, DACT(m, t->logits), ACT(m, t->lnf),
                       PAR(m, t->wte), N, C, t->Vp);
    } else {
        be->matmul_bwd(DACT(m, t->pooled), GRAD(m, t->headw), GRAD(m, t->headb), DACT(m, t->logits),
                       ACT(m, t->pooled), PAR(m, t->headw), B, C, t->classes);
        be->seqpool_bwd(t->pool, DACT(m, t->lnf), DACT(m, t->pooled), B, T, C);
    }
    const int last = t->blk[t->L - 1].res3;
    be->layernorm_bwd(DACT(m, last), GRAD(m, t->lnfw), GRAD(m, t->lnfb), DACT(m, t->lnf),
                      ACT(m, last), PAR(m, t->lnfw), ACT(m, t->lnf_mean), ACT(m, t->lnf_rstd), N,
                      C);
    for (int l = t->L - 1; l >= 0; l--) {
        const tfm_block *b = &t->blk[l];
        const int in = l ? t->blk[l - 1].res3 : t->encoded;
        /* res3 = res2 + fcproj */
        be->residual_bwd(DACT(m, b->res2), DACT(m, b->fcproj), DACT(m, b->res3), (size_t)N * C);
        be->matmul_bwd(DACT(m, b->fch_gelu), GRAD(m, b->fcprojw), GRAD(m, b->fcprojb),
                       DACT(m, b->fcproj), ACT(m, b->fch_gelu), PAR(m, b->fcprojw), N, 4 * C, C);
        be->act_bwd(KN_ACT_GELU, DACT(m, b->fch), ACT(m, b->fch), ACT(m, b->fch_gelu),
                    DACT(m, b->fch_gelu), (size_t)N * 4 * C);
        be->matmul_bwd(DACT(m, b->ln2), GRAD(m, b->fcw), GRAD(m, b->fcb), DACT(m, b->fch),
                       ACT(m, b->ln2), PAR(m, b->fcw), N, C, 4 * C);
        be->layernorm_bwd(DACT(m, b->res2), GRAD(m, b->ln2w), GRAD(m, b->ln2b), DACT(m, b->ln2),
                          ACT(m, b->res2), PAR(m, b->ln2w), ACT(m, b->ln2_mean),
                          ACT(m, b->ln2_rstd), N, C);
        /* res2 = in + attproj */
        be->residual_bwd(DACT(m, in), DACT(m, b->attproj), DACT(m, b->res2), (size_t)N * C);
        be->matmul_bwd(DACT(m, b->atty), GRAD(m, b->projw), GRAD(m, b->projb), DACT(m, b->attproj),
                       ACT(m, b->atty), PAR(m, b->projw), N, C, C);
        if (t->fused_attn)
            be->attention_fused_bwd(DACT(m, b->qkv), DACT(m, b->atty), ACT(m, b->qkv),
                                    ACT(m, b->atty), ACT(m, b->preatt), B, T, C, NH, t->causal);
        else
            be->attention_bwd(DACT(m, b->qkv), DACT(m, b->preatt), DACT(m, b->att),
                              DACT(m, b->atty), ACT(m, b->qkv), ACT(m, b->att), B, T, C, NH,
                              t->causal);
        be->matmul_bwd(DACT(m, b->ln1), GRAD(m, b->qkvw), GRAD(m, b->qkvb), DACT(m, b->qkv),
                       ACT(m, b->ln1), PAR(m, b->qkvw), N, C, 3 * C);
        be->layernorm_bwd(DACT(m, in), GRAD(m, b->ln1w), GRAD(m, b->ln1b), DACT(m, b->ln1),
                          ACT(m, in), PAR(m, b->ln1w), ACT(m, b->ln1_mean), ACT(m, b->ln1_rstd), N,
                          C);
    }
    be->posemb_bwd(GRAD(m, t->wpe), DACT(m, t->encoded), B, T, C);
    be->embed_bwd(GRAD(m, t->wte), DACT(m, t->encoded), tokens, N, C);
}
