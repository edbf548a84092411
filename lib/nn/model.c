/* model.c: the model API common to every model type: creation from a spec,
 * forward/backward dispatch, optimizer, inference, sampling. The layer
 * wiring of each family lives in model_seq.c and model_tfm.c. */
#include "nn/model_int.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/kn.h"
#include "core/suggest.h"
#include "nn/rng.h"

int kn_model_spec_int(const json_t *spec, json_t *norm, const char *key, int def, int lo, int hi,
                      int *out, char *err, size_t errsz)
{
    const json_t *v = json_object_get(spec, key);
    long long x = def;
    if (v) {
        if (!json_is_integer(v))
            return kn_seterr(err, errsz, KN_EINVAL, "model spec: \"%s\" must be an integer", key);
        x = json_integer_value(v);
    }
    if (x < lo || x > hi)
        return kn_seterr(err, errsz, KN_EINVAL, "model spec: \"%s\" = %lld is outside [%d, %d]",
                         key, x, lo, hi);
    *out = (int)x;
    if (norm) json_object_set_new(norm, key, json_integer(x));
    return KN_OK;
}

/* The builders record every key they read in the normalised spec, so a key
 * of spec missing there was never read: a typo, refused with the closest
 * key read. Arrays of objects ("convs") are compared item by item. */
static int unknown_keys(const json_t *spec, const json_t *norm, const char *where, char *err,
                        size_t errsz)
{
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)spec, k, v)
    {
        if (strcmp(k, "dropout") == 0) continue; /* read; transformers accept only 0, unrecorded */
        const json_t *nv = json_object_get(norm, k);
        if (!nv) {
            kn_suggest s;
            kn_suggest_init(&s, k);
            const char *nk;
            json_t *unused;
            char known[512] = "";
            size_t kl = 0;
            json_object_foreach((json_t *)norm, nk, unused)
            {
                kn_suggest_offer(&s, nk);
                int n = snprintf(known + kl, sizeof(known) - kl, "%s%s", kl ? ", " : "", nk);
                if (n > 0 && (size_t)n < sizeof(known) - kl) kl += (size_t)n;
            }
            (void)unused;
            if (kn_suggest_result(&s))
                return kn_seterr(
                    err, errsz, KN_EINVAL,
                    "model spec%s: unknown key \"%s\"; did you mean \"%s\"? (keys: %s)", where, k,
                    kn_suggest_result(&s), known);
            return kn_seterr(err, errsz, KN_EINVAL, "model spec%s: unknown key \"%s\" (keys: %s)",
                             where, k, known);
        }
        if (json_is_array(v) && json_is_array(nv))
            for (size_t i = 0; i < json_array_size(v) && i < json_array_size(nv); i++) {
                const json_t *a = json_array_get(v, i), *b = json_array_get(nv, i);
                if (!json_is_object(a) || !json_is_object(b)) continue;
                char w[128];
                snprintf(w, sizeof(w), "%s \"%s\"[%zu]", where, k, i);
                int rc = unknown_keys(a, b, w, err, errsz);
                if (rc != KN_OK) return rc;
            }
    }
    return KN_OK;
}

/* Builds m's layout from spec into norm: the layers and tensor shapes, no
 * weights yet. */
static int build(kn_model *m, const json_t *spec, json_t *norm, char *err, size_t errsz)
{
    const char *type = json_string_value(json_object_get(spec, "type"));
    int rc;
    if (strcmp(type, "mlp") == 0 || strcmp(type, "linreg") == 0 || strcmp(type, "cnn") == 0) {
        m->type = strcmp(type, "cnn") == 0 ? KN_MODEL_CNN : KN_MODEL_MLP;
        rc = kn_model_seq_build(m, spec, norm, err, errsz);
    } else if (strcmp(type, "gpt") == 0 || strcmp(type, "txtcls") == 0) {
        m->type = strcmp(type, "gpt") == 0 ? KN_MODEL_GPT : KN_MODEL_TXTCLS;
        rc = kn_model_tfm_build(m, spec, norm, err, errsz);
    } else {
        rc = kn_seterr(err, errsz, KN_EINVAL,
                       "model spec: unknown type \"%s\" (mlp, linreg, cnn, gpt, txtcls)", type);
    }
    return rc ? rc : unknown_keys(spec, norm, "", err, errsz);
}

int kn_model_spec_check(const json_t *spec, char *err, size_t errsz)
{
    if (!json_is_object(spec) || !json_string_value(json_object_get(spec, "type")))
        return kn_seterr(err, errsz, KN_EINVAL, "model spec: needs an object with \"type\"");
    kn_model *m = calloc(1, sizeof(*m));
    json_t *norm = json_pack("{s:s}", "type", json_string_value(json_object_get(spec, "type")));
    int rc = KN_ENOMEM;
    if (m && norm) {
        m->be = kn_backend_cpu(); /* sizes scratch space only; no weights are allocated */
        m->max_B = 1;
        kn_tensor_set_init(&m->params);
        kn_tensor_set_init(&m->grads);
        kn_tensor_set_init(&m->acts);
        kn_tensor_set_init(&m->dacts);
        kn_tensor_set_init(&m->bufs);
        rc = build(m, spec, norm, err, errsz);
    } else {
        kn_seterr(err, errsz, rc, "model: out of memory");
    }
    json_decref(norm);
    kn_model_destroy(m);
    return rc;
}

int kn_model_new(const json_t *spec, uint64_t seed, int max_batch, const kn_backend *be,
                 kn_model **out, char *err, size_t errsz)
{
    int rc;
    kn_model *m = NULL;
    json_t *norm = NULL;
    *out = NULL;
    if (!be) be = kn_backend_cpu();
    const char *type = json_string_value(json_object_get(spec, "type"));
    if (!json_is_object(spec) || !type)
        return kn_seterr(err, errsz, KN_EINVAL, "model spec: needs an object with \"type\"");
    if (max_batch < 1 || max_batch > (1 << 20))
        return kn_seterr(err, errsz, KN_EINVAL, "model: max_batch %d is out of range", max_batch);
    m = calloc(1, sizeof(*m));
    norm = json_pack("{s:s}", "type", type);
    if (!m || !norm) {
        rc = kn_seterr(err, errsz, KN_ENOMEM, "model: out of memory");
        goto fail;
    }
    m->be = be;
    m->max_B = max_batch;
    m->seed = seed;
    kn_tensor_set_init(&m->params);
    kn_tensor_set_init(&m->grads);
    kn_tensor_set_init(&m->acts);
    kn_tensor_set_init(&m->dacts);
    kn_tensor_set_init(&m->bufs);
    if ((rc = build(m, spec, norm, err, errsz))) goto fail;
    if (kn_tensor_set_alloc(&m->params, be) || kn_tensor_set_clone_layout(&m->grads, &m->params) ||
        kn_tensor_set_alloc(&m->grads, be) || (!m->dacts.n && kn_tensor_set_clone_layout(&m->dacts, &m->acts)) ||
        kn_tensor_set_alloc(&m->acts, be) || kn_tensor_set_alloc(&m->dacts, be) ||
        (m->bufs.n && kn_tensor_set_alloc(&m->bufs, be)) ||
        !(m->ibuf = be->alloc((m->ibuf_n ? m->ibuf_n : 1) * sizeof(int))) ||
        (m->seq.scratch_n && !(m->seq.scratch = be->alloc(m->seq.scratch_n * sizeof(float))))) {
        rc = kn_seterr(err, errsz, KN_ENOMEM, "model: out of memory for %zu parameters",
                       m->params.numel);
        goto fail;
    }
    rc = m->type == KN_MODEL_GPT || m->type == KN_MODEL_TXTCLS ? kn_model_tfm_init(m)
                                                               : kn_model_seq_init(m);
    if (rc) {
        kn_seterr(err, errsz, rc, "model: weight init failed");
        goto fail;
    }
    m->spec = norm;
    *out = m;
    return KN_OK;
fail:
    json_decref(norm);
    kn_model_destroy(m);
    return rc;
}

void kn_model_destroy(kn_model *m)
{
    if (!m) return;
    kn_optim_destroy(m->opt);
    if (m->be && m->graph) m->be->graph_free(m->graph);
    if (m->be && m->stage) m->be->host_free(m->stage);
    kn_tensor_set_free(&m->params);
    kn_tensor_set_free(&m->grads);
    kn_tensor_set_free(&m->acts);
    kn_tensor_set_free(&m->dacts);
    kn_tensor_set_free(&m->bufs);
    if (m->be) {
        m->be->free(m->tfm.logits_all);
        m->be->free(m->ibuf);
        m->be->free(m->seq.scratch);
    }
    free(m->seq.l);
    free(m->tfm.blk);
    json_decref(m->spec);
    free(m);
}

int kn_model_type(const kn_model *m)
{
    return m->type;
}

const json_t *kn_model_spec(const kn_model *m)
{
    return m->spec;
}

size_t kn_model_num_params(const kn_model *m)
{
    size_t n = 0;
    for (int i = 0; i < m->params.n; i++)
        n += m->params.t[i].numel;
    return n;
}

int kn_model_max_batch(const kn_model *m)
{
    return m->max_B;
}

int kn_model_block_size(const kn_model *m)
{
    return m->type == KN_MODEL_GPT || m->type == KN_MODEL_TXTCLS ? m->tfm.maxT : 0;
}

int kn_model_num_outputs(const kn_model *m)
{
    switch (m->type) {
    case KN_MODEL_GPT:
        return m->tfm.V;
    case KN_MODEL_TXTCLS:
        return m->tfm.classes;
    default:
        return m->seq.out_numel;
    }
}

const kn_tensor_set *kn_model_params(const kn_model *m)
{
    return &m->params;
}

const kn_tensor_set *kn_model_grads(const kn_model *m)
{
    return &m->grads;
}

void kn_model_set_training(kn_model *m, int on)
{
    m->training = on ? 1 : 0;
}

void kn_model_xent(kn_model *m, int logits, int lse, int losses, const int *targets, int rows,
                   int cols, int stride, int valid)
{
    const kn_backend *be = m->be;
    if (m->training && valid && be->xent_fused) {
        be->xent_fused(ACT(m, losses), ACT(m, lse), DACT(m, m->out_dact), ACT(m, logits), targets,
                       1.0f / (float)valid, rows, cols, stride);
        m->dlogits_set = 1;
    } else {
        be->xent_fwd(ACT(m, losses), ACT(m, lse), ACT(m, logits), targets, rows, cols, stride);
    }
}

int kn_model_forward(kn_model *m, const kn_batch *b, float *loss, char *err, size_t errsz)
{
    m->have_targets = 0;
    m->dlogits_set = 0;
    if (!b || b->B < 1 || b->B > m->max_B)
        return kn_seterr(err, errsz, KN_EINVAL, "model: batch of %d rows, allocated for 1..%d",
                         b ? b->B : 0, m->max_B);
    int rc = m->type == KN_MODEL_GPT || m->type == KN_MODEL_TXTCLS
                 ? kn_model_tfm_forward(m, b, err, errsz)
                 : kn_model_seq_forward(m, b, err, errsz);
    if (rc) return rc;
    if (m->training) m->fwd_count++;
    if (loss) *loss = 0.0f;
    if (m->have_targets && loss) {
        int la =
            m->type == KN_MODEL_GPT || m->type == KN_MODEL_TXTCLS ? m->tfm.losses : m->seq.a_losses;
        double s = m->be->sum(ACT(m, la), (size_t)m->out_rows);
        *loss = m->n_valid ? (float)(s / m->n_valid) : 0.0f;
    }
    return KN_OK;
}

int kn_model_backward(kn_model *m)
{
    if (!m->have_targets) return KN_EINVAL;
    if (m->dlogits_set) {
        /* all but the gradient the forward set (the logits', or GPT's ln_f's) */
        const kn_tensor *g = &m->dacts.t[m->out_dact];
        m->be->zero(m->dacts.data, g->offset * sizeof(float));
        m->be->zero(m->dacts.data + g->offset + g->numel,
                    (m->dacts.numel - g->offset - g->numel) * sizeof(float));
    } else {
        m->be->zero(m->dacts.data, m->dacts.numel * sizeof(float));
    }
    if (m->type == KN_MODEL_GPT || m->type == KN_MODEL_TXTCLS)
        kn_model_tfm_backward(m);
    else
        kn_model_seq_backward(m);
    return KN_OK;
}

void kn_model_zero_grad(kn_model *m)
{
    m->be->zero(m->grads.data, m->grads.numel * sizeof(float));
}

int kn_model_set_optim(kn_model *m, const kn_optim_config *cfg)
{
    kn_optim *o = kn_optim_new(cfg, &m->params, m->be);
    if (!o) return KN_ENOMEM;
    kn_optim_destroy(m->opt);
    m->opt = o;
    if (m->graph) { /* a captured step holds the old optimizer's buffers */
        m->be->graph_free(m->graph);
        m->graph = NULL;
    }
    return KN_OK;
}

const kn_optim *kn_model_optim(const kn_model *m)
{
    return m->opt;
}

int kn_model_step(kn_model *m, float *grad_norm, float *lr)
{
    if (!m->opt) return KN_EINVAL;
    kn_optim_update(m->opt, &m->params, &m->grads, grad_norm, lr);
    return KN_OK;
}

/* ------------------------------------------------------------ one training step
 *
 * kn_model_train_step on a backend with graph_run: the step's device work
 * is issued by train_step_fn, which the backend runs or replays (a CUDA
 * graph, lib/nn/cuda/graph.cu). What changes from step to step lives in
 * the stage, host_alloc memory at fixed addresses: the batch (copied in by
 * the host before each step), the optimizer's arguments (the schedule and
 * bias corrections of this step), and what comes back (the rows' losses,
 * the gradient norm). What the graph bakes in goes into the key: the batch
 * rows, the labelled rows (the loss gradient's 1 / valid), training mode
 * and whether the norm is copied back; dropout's seed changes every step,
 * so a model with dropout trains op by op in training mode. */

/* What a forward leaves in the model for the backward and the readers
 * (kn_model_logits...): restored after a replay, which runs no host code. */
typedef struct {
    int B, T, have_targets, n_valid, dlogits_set, out_act, out_rows, out_stride, out_valid;
    int fwd_training;
} fwd_state;

typedef struct step_stage {
    kn_optim_args args; /* this step's optimizer arguments */
    float norm;         /* the gradient norm, when asked */
    float *x, *y, *losses;
    int *labels;
    fwd_state fwd; /* the forward's state after the step's last run of fn */
} step_stage;

static void fwd_state_get(const kn_model *m, fwd_state *f)
{
    *f = (fwd_state){m->B,       m->T,        m->have_targets, m->n_valid,   m->dlogits_set,
                     m->out_act, m->out_rows, m->out_stride,   m->out_valid, m->seq.fwd_training};
}

static void fwd_state_set(kn_model *m, const fwd_state *f)
{
    m->B = f->B, m->T = f->T, m->have_targets = f->have_targets, m->n_valid = f->n_valid;
    m->dlogits_set = f->dlogits_set, m->out_act = f->out_act, m->out_rows = f->out_rows;
    m->out_stride = f->out_stride, m->out_valid = f->out_valid;
    m->seq.fwd_training = f->fwd_training;
}

typedef struct {
    kn_model *m;
    kn_batch b; /* its x, labels, y point into the stage */
    int want_norm;
    int ran;
    fwd_state after; /* the forward's state, when fn ran */
} step_ctx;

/* One step's device work, nothing read back on the host inside. */
static void train_step_fn(void *p)
{
    step_ctx *c = p;
    kn_model *m = c->m;
    step_stage *st = m->stage;
    kn_model_zero_grad(m);
    m->have_targets = 0;
    m->dlogits_set = 0;
    kn_model_seq_forward(m, &c->b, NULL, 0); /* checked by the caller: cannot fail */
    m->be->to_host(st->losses, ACT(m, m->seq.a_losses), (size_t)c->b.B * sizeof(float));
    kn_model_backward(m);
    kn_optim_apply_all(m->opt, &m->params, &m->grads, &st->args, c->want_norm ? &st->norm : NULL);
    c->ran = 1;
    fwd_state_get(m, &c->after);
}

/* The stage for max_B rows, once. */
static step_stage *stage_of(kn_model *m)
{
    if (m->stage) return m->stage;
    const size_t B = (size_t)m->max_B, in = (size_t)m->seq.in_numel, out = (size_t)m->seq.out_numel;
    const size_t head = (sizeof(step_stage) + 63) / 64 * 64;
    unsigned char *p =
        m->be->host_alloc(head + (B * in + B * out + B) * sizeof(float) + B * sizeof(int));
    if (!p) return NULL;
    step_stage *st = (step_stage *)p;
    st->x = (float *)(p + head);
    st->y = st->x + B * in;
    st->losses = st->y + B * out;
    st->labels = (int *)(st->losses + B);
    return m->stage = st;
}

static int has_dropout(const kn_model *m)
{
    for (int i = 0; i < m->seq.n; i++)
        if (m->seq.l[i].kind == SEQ_DROPOUT) return 1;
    return 0;
}

int kn_model_train_step(kn_model *m, const kn_batch *b, float *loss, float *grad_norm, float *lr,
                        char *err, size_t errsz)
{
    const kn_backend *be = m->be;
    const seq_model *s = &m->seq;
    m->last_graph = 0;
    if (!m->opt) return kn_seterr(err, errsz, KN_EINVAL, "model: no optimizer attached");
    const int graph = be->graph_run && be->host_alloc &&
                      (m->type == KN_MODEL_MLP || m->type == KN_MODEL_CNN) &&
                      kn_optim_has_all(m->opt, &m->params) && !(m->training && has_dropout(m)) &&
                      b && b->B >= 1 && b->B <= m->max_B && b->x && (s->mse ? !!b->y : !!b->labels);
    step_stage *st = graph ? stage_of(m) : NULL;
    if (!st) { /* op by op */
        int rc;
        kn_model_zero_grad(m);
        if ((rc = kn_model_forward(m, b, loss, err, errsz))) return rc;
        if (kn_model_backward(m))
            return kn_seterr(err, errsz, KN_EINVAL, "model: the batch has no targets");
        return kn_model_step(m, grad_norm, lr);
    }
    const int B = b->B;
    int valid = B;
    if (!s->mse) {
        valid = 0;
        for (int r = 0; r < B; r++) {
            if (b->labels[r] >= s->out_numel || b->labels[r] < -1)
                return kn_seterr(err, errsz, KN_EINVAL, "model: label %d of row %d not in [0, %d)",
                                 b->labels[r], r, s->out_numel);
            valid += b->labels[r] >= 0;
        }
        memcpy(st->labels, b->labels, (size_t)B * sizeof(int));
    } else {
        memcpy(st->y, b->y, (size_t)B * s->out_numel * sizeof(float));
    }
    memcpy(st->x, b->x, (size_t)B * s->in_numel * sizeof(float));
    kn_optim_next_args(m->opt, &st->args, lr);
    step_ctx c = {
        .m = m,
        .b = {.B = B, .x = st->x, .labels = s->mse ? NULL : st->labels, .y = s->mse ? st->y : NULL},
        .want_norm = grad_norm != NULL};
    const uint64_t key = (uint64_t)B | (uint64_t)valid << 21 | (uint64_t)m->training << 42 |
                         (uint64_t)c.want_norm << 43;
    m->last_graph = be->graph_run(&m->graph, key, train_step_fn, &c);
    if (c.ran)
        st->fwd = c.after;
    else
        fwd_state_set(m, &st->fwd);
    if (m->training) m->fwd_count++;
    if (loss) {
        double sum = 0.0;
        for (int r = 0; r < B; r++)
            sum += st->losses[r];
        *loss = valid ? (float)(sum / valid) : 0.0f;
    }
    if (grad_norm) *grad_norm = st->norm;
    return KN_OK;
}

int kn_model_last_step_graph(const kn_model *m)
{
    return m->last_graph;
}

int kn_model_logits(const kn_model *m, float *out, size_t cap)
{
    if (!m->out_rows || !m->out) return KN_EINVAL;
    if ((size_t)m->out_rows * m->out_valid > cap) return KN_ETOOBIG;
    const float *src = m->out;
    if (m->out_stride == m->out_valid) {
        m->be->to_host(out, src, (size_t)m->out_rows * m->out_valid * sizeof(float));
        return KN_OK;
    }
    for (int r = 0; r < m->out_rows; r++)
        m->be->to_host(out + (size_t)r * m->out_valid, src + (size_t)r * m->out_stride,
                       (size_t)m->out_valid * sizeof(float));
    return KN_OK;
}

int kn_model_predict(const kn_model *m, int *out, size_t cap)
{
    if (!m->out_rows || !m->out) return KN_EINVAL;
    if ((size_t)m->out_rows > cap) return KN_ETOOBIG;
    float *row = malloc((size_t)m->out_stride * sizeof(float));
    if (!row) return KN_ENOMEM;
    const float *src = m->out;
    for (int r = 0; r < m->out_rows; r++) {
        m->be->to_host(row, src + (size_t)r * m->out_stride, (size_t)m->out_valid * sizeof(float));
        int best = 0;
        for (int i = 1; i < m->out_valid; i++)
            if (row[i] > row[best]) best = i;
        out[r] = best;
    }
    free(row);
    return KN_OK;
}

typedef struct {
    float v;
    int i;
} scored;

static int cmp_scored_desc(const void *a, const void *b)
{
    const scored *x = a, *y = b;
    if (x->v != y->v) return x->v > y->v ? -1 : 1;
    return x->i - y->i; /* ties: lower id first, deterministic */
}

/* Draws one token from logits (V) following sc; work holds V entries. */
static int sample_token(const float *logits, int V, const kn_sample_config *sc, kn_rng *rng,
                        scored *work)
{
    if (sc->temperature <= 0.0f) {
        int best = 0;
        for (int i = 1; i < V; i++)
            if (logits[i] > logits[best]) best = i;
        return best;
    }
    for (int i = 0; i < V; i++) {
        work[i].v = logits[i] / sc->temperature;
        work[i].i = i;
    }
    int k = sc->top_k > 0 && sc->top_k < V ? sc->top_k : V;
    qsort(work, (size_t)V, sizeof(*work), cmp_scored_desc);
    double sum = 0.0;
    const float mx = work[0].v;
    for (int i = 0; i < k; i++)
        sum += exp((double)(work[i].v - mx));
    double u = (double)kn_rng_uniform(rng) * sum, c = 0.0;
    for (int i = 0; i < k; i++) {
        c += exp((double)(work[i].v - mx));
        if (u < c) return work[i].i;
    }
    return work[k - 1].i;
}

/* One position of the KV-cache path: token tok at position p, whose keys
 * and values join the cache (K, Vc: (L, maxT, C)); the logits of the next
 * token go to logits (Vp). Every buffer is the backend's (device memory on
 * CUDA); per row, the same ops as a full forward pass, the attention being
 * the backend's kv_attention (one query against the cached rows). */
typedef struct {
    float *K, *Vc;                            /* (L, maxT, C) */
    float *x, *ln, *qkv, *atty, *proj, *res2; /* (C) or (3C) */
    float *fch, *gel;                         /* (4C) */
    float *logits, *att;                      /* (Vp), (NH, maxT) */
    float *stats;                             /* layernorm's mean and rstd (2) */
    int *tok;                                 /* (1) */
} kv_state;

/* x (n floats) rounded to bf16 in place through tmp (at least n / 2
 * floats): where the model keeps qkv and fch as bf16 (tfm.bf16_store), the
 * cached row computes with what a full forward computes with (the prompt's
 * keys and values come from the kept bf16 qkv; its GELU reads the rounded
 * fch; its fused attention reads q, k, v rounded). */
static void bf16_round(const kn_backend *be, float *x, float *tmp, size_t n)
{
    be->to_bf16((uint16_t *)tmp, x, n);
    be->from_bf16(x, (const uint16_t *)tmp, n);
}

static void kv_step(kn_model *m, kv_state *s, int tok, int p)
{
    const kn_backend *be = m->be;
    const tfm_model *t = &m->tfm;
    const int C = t->C, NH = t->NH, maxT = t->maxT;
    const float *wte = PAR(m, t->wte), *wpe = PAR(m, t->wpe);
    float *mean = s->stats, *rstd = s->stats + 1;
    be->to_device(s->tok, &tok, sizeof(int));
    be->embed_fwd(s->x, s->tok, wte, 1, C);
    be->posemb_fwd(s->x, wpe + (size_t)p * C, 1, 1, C); /* row p of wpe */
    for (int l = 0; l < t->L; l++) {
        const tfm_block *b = &t->blk[l];
        float *K = s->K + (size_t)l * maxT * C, *Vc = s->Vc + (size_t)l * maxT * C;
        be->layernorm_fwd(s->ln, mean, rstd, s->x, PAR(m, b->ln1w), PAR(m, b->ln1b), 1, C);
        be->matmul_fwd(s->qkv, s->ln, PAR(m, b->qkvw), PAR(m, b->qkvb), 1, C, 3 * C);
        if (t->bf16_store) bf16_round(be, s->qkv, s->gel, (size_t)3 * C);
        be->kv_store(K + (size_t)p * C, Vc + (size_t)p * C, s->qkv, 1, C);
        be->kv_attention(s->atty, s->att, s->qkv, K, Vc, p, C, NH);
        be->matmul_fwd(s->proj, s->atty, PAR(m, b->projw), PAR(m, b->projb), 1, C, C);
        be->residual_fwd(s->res2, s->x, s->proj, (size_t)C);
        be->layernorm_fwd(s->ln, mean, rstd, s->res2, PAR(m, b->ln2w), PAR(m, b->ln2b), 1, C);
        be->matmul_fwd(s->fch, s->ln, PAR(m, b->fcw), PAR(m, b->fcb), 1, C, 4 * C);
        if (t->bf16_store) bf16_round(be, s->fch, s->gel, (size_t)4 * C);
        be->act_fwd(KN_ACT_GELU, s->gel, s->fch, (size_t)4 * C);
        be->matmul_fwd(s->proj, s->gel, PAR(m, b->fcprojw), PAR(m, b->fcprojb), 1, 4 * C, C);
        be->residual_fwd(s->x, s->res2, s->proj, (size_t)C);
    }
    be->layernorm_fwd(s->ln, mean, rstd, s->x, PAR(m, t->lnfw), PAR(m, t->lnfb), 1, C);
    be->matmul_fwd(s->logits, s->ln, PAR(m, t->wte), NULL, 1, C, t->Vp);
}

int kn_model_generate(kn_model *m, const int *prompt, int n_prompt, int n_new,
                      const kn_sample_config *sc, int *out, char *err, size_t errsz)
{
    if (m->type != KN_MODEL_GPT)
        return kn_seterr(err, errsz, KN_EINVAL, "generate: only gpt models generate text");
    if (n_prompt < 1 || n_new < 0)
        return kn_seterr(err, errsz, KN_EINVAL, "generate: needs a prompt of at least one token");
    const int V = m->tfm.V, maxT = m->tfm.maxT, C = m->tfm.C;
    float *row = malloc((size_t)V * sizeof(float));
    scored *work = malloc((size_t)V * sizeof(*work));
    int rc = KN_OK, was_training = m->training;
    /* the KV cache needs the backend's kv ops and room for one position */
    int kv = !sc->no_kv_cache && m->be->kv_attention && m->be->kv_store && n_prompt < maxT;
    kv_state s = {0};
    float *kvbuf = NULL;
    if (kv) {
        size_t cache = (size_t)m->tfm.L * maxT * C,
               n = 2 * cache + 17 * (size_t)C + (size_t)m->tfm.Vp + (size_t)m->tfm.NH * maxT + 3;
        if ((kvbuf = m->be->alloc(n * sizeof(float)))) {
            float *q = kvbuf;
            s.K = q, q += cache;
            s.Vc = q, q += cache;
            s.x = q, q += C;
            s.ln = q, q += C;
            s.qkv = q, q += 3 * C;
            s.atty = q, q += C;
            s.proj = q, q += C;
            s.res2 = q, q += C;
            s.fch = q, q += 4 * C;
            s.gel = q, q += 4 * C;
            s.logits = q, q += m->tfm.Vp;
            s.att = q, q += (size_t)m->tfm.NH * maxT;
            s.stats = q, q += 2;
            s.tok = (int *)q; /* sizeof(int) == sizeof(float) */
        }
    }
    if (!row || !work || (kv && !kvbuf)) {
        rc = kn_seterr(err, errsz, KN_ENOMEM, "generate: out of memory");
        goto out;
    }
    memcpy(out, prompt, (size_t)n_prompt * sizeof(int));
    kn_rng rng;
    kn_rng_init(&rng, sc->seed);
    m->training = 0;
    int cached = 0; /* positions whose keys/values are in the cache */
    for (int n = n_prompt; n < n_prompt + n_new; n++) {
        if (kv && cached == n - 1 && n <= maxT) {
            /* one new position: the previous token's */
            kv_step(m, &s, out[n - 1], n - 1);
            cached = n;
            m->be->to_host(row, s.logits, (size_t)V * sizeof(float));
        } else {
            /* the reference path: the whole context (the last maxT tokens) */
            int T = n < maxT ? n : maxT;
            kn_batch b = {.B = 1, .T = T, .tokens = out + n - T};
            rc = kn_model_tfm_forward(m, &b, err, errsz);
            if (rc) goto out;
            m->be->to_host(row, m->out + (size_t)(T - 1) * m->tfm.Vp,
                           (size_t)V * sizeof(float));
            if (kv && n == n_prompt) { /* the prompt's keys and values seed the cache */
                for (int l = 0; l < m->tfm.L; l++)
                    m->be->kv_store(s.K + (size_t)l * maxT * C, s.Vc + (size_t)l * maxT * C,
                                    kn_model_tfm_qkv(m, l), T, C);
                cached = T;
            }
        }
        out[n] = sample_token(row, V, sc, &rng, work);
        if (sc->on_token && (rc = sc->on_token(sc->on_token_ctx, out[n])) != 0) goto out;
    }
out:
    m->training = was_training;
    if (kvbuf) m->be->free(kvbuf);
    free(row);
    free(work);
    return rc;
}

/* The parameter or buffer called name, or NULL. */
static const kn_tensor_set *find_named(const kn_model *m, const char *name, int *i)
{
    if ((*i = kn_tensor_find(&m->params, name)) >= 0) return &m->params;
    if ((*i = kn_tensor_find(&m->bufs, name)) >= 0) return &m->bufs;
    return NULL;
}

int kn_model_get_tensor(const kn_model *m, const char *name, float *out, size_t numel)
{
    int i;
    const kn_tensor_set *s = find_named(m, name, &i);
    if (!s) return KN_ENOTFOUND;
    if (s->t[i].numel != numel) return KN_EINVAL;
    m->be->to_host(out, kn_tensor_ptr(s, i), numel * sizeof(float));
    return KN_OK;
}

int kn_model_set_tensor(kn_model *m, const char *name, const float *in, size_t numel)
{
    int i;
    const kn_tensor_set *s = find_named(m, name, &i);
    if (!s) return KN_ENOTFOUND;
    if (s->t[i].numel != numel) return KN_EINVAL;
    m->be->to_device(kn_tensor_ptr(s, i), in, numel * sizeof(float));
    return KN_OK;
}

const kn_tensor_set *kn_model_buffers(const kn_model *m)
{
    return &m->bufs;
}
