/* optim.c: optimizer configuration, schedules and the update driver; the
 * per-element rules live in the backend (optim_update). */
#include "nn/optim.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/kn.h"

void kn_optim_config_default(kn_optim_config *c, int kind)
{
    memset(c, 0, sizeof(*c));
    c->kind = kind;
    c->lr = 1e-3f;
    c->beta1 = 0.9f;
    c->beta2 = kind == KN_OPT_RMSPROP ? 0.99f : 0.999f;
    c->eps = 1e-8f;
    c->weight_decay = kind == KN_OPT_ADAMW ? 0.01f : 0.0f;
    c->schedule = KN_LR_CONSTANT;
    c->min_lr_frac = 0.0f;
    c->gamma = 0.1f;
    c->step_size = 1;
}

static const char *kind_name(int kind)
{
    switch (kind) {
    case KN_OPT_SGD:
        return "sgd";
    case KN_OPT_ADAM:
        return "adam";
    case KN_OPT_ADAMW:
        return "adamw";
    case KN_OPT_RMSPROP:
        return "rmsprop";
    }
    return "?";
}

static int get_num(const json_t *v, float *out)
{
    if (!json_is_number(v)) return -1;
    *out = (float)json_number_value(v);
    return 0;
}

static int get_int(const json_t *v, int *out)
{
    if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > 1000000000)
        return -1;
    *out = (int)json_integer_value(v);
    return 0;
}

int kn_optim_config_from_json(kn_optim_config *c, const json_t *j, char *err, size_t errsz)
{
    if (!json_is_object(j)) return kn_seterr(err, errsz, KN_EINVAL, "optimizer: not an object");
    const char *type = json_string_value(json_object_get(j, "type"));
    int kind = !type                          ? 0
               : strcmp(type, "sgd") == 0     ? KN_OPT_SGD
               : strcmp(type, "adam") == 0    ? KN_OPT_ADAM
               : strcmp(type, "adamw") == 0   ? KN_OPT_ADAMW
               : strcmp(type, "rmsprop") == 0 ? KN_OPT_RMSPROP
                                              : 0;
    if (!kind)
        return kn_seterr(err, errsz, KN_EINVAL,
                         "optimizer: \"type\" must be sgd, adam, adamw or rmsprop");
    kn_optim_config_default(c, kind);
    const char *key;
    const json_t *v;
    json_object_foreach((json_t *)j, key, v)
    {
        int bad = 0;
        if (strcmp(key, "type") == 0)
            continue;
        else if (strcmp(key, "lr") == 0)
            bad = get_num(v, &c->lr) || c->lr < 0;
        else if (strcmp(key, "betas") == 0)
            bad = !json_is_array(v) || json_array_size(v) != 2 ||
                  get_num(json_array_get(v, 0), &c->beta1) ||
                  get_num(json_array_get(v, 1), &c->beta2);
        else if (strcmp(key, "alpha") == 0)
            bad = get_num(v, &c->beta2);
        else if (strcmp(key, "momentum") == 0)
            bad = get_num(v, &c->momentum);
        else if (strcmp(key, "eps") == 0)
            bad = get_num(v, &c->eps) || c->eps < 0;
        else if (strcmp(key, "weight_decay") == 0)
            bad = get_num(v, &c->weight_decay);
        else if (strcmp(key, "grad_clip") == 0)
            bad = get_num(v, &c->grad_clip) || c->grad_clip < 0;
        else if (strcmp(key, "schedule") == 0) {
            const char *st = json_string_value(json_object_get(v, "type"));
            if (!st)
                bad = 1;
            else if (strcmp(st, "constant") == 0)
                c->schedule = KN_LR_CONSTANT;
            else if (strcmp(st, "cosine") == 0)
                c->schedule = KN_LR_COSINE;
            else if (strcmp(st, "step") == 0)
                c->schedule = KN_LR_STEP;
            else
                bad = 1;
            const char *sk;
            const json_t *sv;
            json_object_foreach((json_t *)v, sk, sv)
            {
                if (bad) break;
                if (strcmp(sk, "type") == 0)
                    continue;
                else if (strcmp(sk, "warmup") == 0)
                    bad = get_int(sv, &c->warmup);
                else if (strcmp(sk, "total") == 0)
                    bad = get_int(sv, &c->total);
                else if (strcmp(sk, "min_lr_frac") == 0)
                    bad = get_num(sv, &c->min_lr_frac);
                else if (strcmp(sk, "step_size") == 0)
                    bad = get_int(sv, &c->step_size) || c->step_size < 1;
                else if (strcmp(sk, "gamma") == 0)
                    bad = get_num(sv, &c->gamma);
                else
                    return kn_seterr(err, errsz, KN_EINVAL,
                                     "optimizer: unknown schedule key \"%s\"", sk);
            }
        } else
            return kn_seterr(err, errsz, KN_EINVAL, "optimizer: unknown key \"%s\"", key);
        if (bad) return kn_seterr(err, errsz, KN_EINVAL, "optimizer: bad value for \"%s\"", key);
    }
    /* "momentum" is the SGD/RMSprop knob; Adam-family use betas */
    return KN_OK;
}

json_t *kn_optim_config_to_json(const kn_optim_config *c)
{
    const char *sched = c->schedule == KN_LR_COSINE ? "cosine"
                        : c->schedule == KN_LR_STEP ? "step"
                                                    : "constant";
    json_t *j = json_pack("{s:s, s:f, s:[f,f], s:f, s:f, s:f, s:f}", "type", kind_name(c->kind),
                          "lr", (double)c->lr, "betas", (double)c->beta1, (double)c->beta2,
                          "momentum", (double)c->momentum, "eps", (double)c->eps, "weight_decay",
                          (double)c->weight_decay, "grad_clip", (double)c->grad_clip);
    if (!j) return NULL;
    json_t *s = json_pack("{s:s, s:i, s:i, s:f, s:i, s:f}", "type", sched, "warmup", c->warmup,
                          "total", c->total, "min_lr_frac", (double)c->min_lr_frac, "step_size",
                          c->step_size, "gamma", (double)c->gamma);
    if (!s || json_object_set_new(j, "schedule", s)) {
        json_decref(j);
        return NULL;
    }
    return j;
}

float kn_optim_lr(const kn_optim_config *c, int64_t step)
{
    if (c->schedule == KN_LR_CONSTANT) return c->lr;
    if (step < c->warmup) return c->lr * (float)(step + 1) / (float)c->warmup;
    if (c->schedule == KN_LR_STEP)
        return c->lr * powf(c->gamma, (float)((step - c->warmup) / c->step_size));
    /* cosine from lr down to min_lr_frac * lr over [warmup, total) */
    const float min_lr = c->min_lr_frac * c->lr;
    if (c->total <= c->warmup || step >= c->total) return min_lr;
    double ratio = (double)(step - c->warmup) / (double)(c->total - c->warmup);
    double coeff = 0.5 * (1.0 + cos(3.14159265358979323846 * ratio));
    return min_lr + (float)coeff * (c->lr - min_lr);
}

/* The multi-tensor update's table: every tensor cut into chunks of at most
 * KN_OPTIM_CHUNK floats, uploaded once. Nothing where the backend has no
 * optim_update_all. Returns nonzero when out of memory. */
static int make_chunks(kn_optim *o, const kn_tensor_set *params, const kn_backend *be)
{
    o->be = be;
    if (!be->optim_update_all) return 0;
    int n = 0;
    for (int i = 0; i < params->n; i++)
        n += (int)((params->t[i].numel + KN_OPTIM_CHUNK - 1) / KN_OPTIM_CHUNK);
    if (!n) return 0;
    kn_optim_chunk *h = malloc((size_t)n * sizeof(*h));
    if (!h) return 1;
    int k = 0;
    for (int i = 0; i < params->n; i++) {
        const kn_tensor *t = &params->t[i];
        for (size_t at = 0; at < t->numel; at += KN_OPTIM_CHUNK) {
            size_t left = t->numel - at;
            h[k].off = (int64_t)(t->offset + at);
            h[k].n = (int32_t)(left < KN_OPTIM_CHUNK ? left : KN_OPTIM_CHUNK);
            h[k].decay = t->decay ? 1 : 0;
            k++;
        }
    }
    o->chunks = be->alloc((size_t)n * sizeof(*h));
    if (o->chunks) be->to_device(o->chunks, h, (size_t)n * sizeof(*h));
    free(h);
    o->nchunks = o->chunks ? n : 0;
    return !o->chunks;
}

kn_optim *kn_optim_new(const kn_optim_config *c, const kn_tensor_set *params, const kn_backend *be)
{
    kn_optim *o = calloc(1, sizeof(*o));
    if (!o) return NULL;
    o->cfg = *c;
    if (kn_tensor_set_clone_layout(&o->m, params) || kn_tensor_set_clone_layout(&o->v, params) ||
        kn_tensor_set_alloc(&o->m, be) || kn_tensor_set_alloc(&o->v, be) ||
        make_chunks(o, params, be)) {
        kn_optim_destroy(o);
        return NULL;
    }
    return o;
}

void kn_optim_destroy(kn_optim *o)
{
    if (!o) return;
    kn_tensor_set_free(&o->m);
    kn_tensor_set_free(&o->v);
    if (o->chunks) o->be->free(o->chunks);
    free(o);
}

void kn_optim_next_args(kn_optim *o, kn_optim_args *a, float *lr_out)
{
    const kn_optim_config *c = &o->cfg;
    float lr = kn_optim_lr(c, o->step);
    o->step++;
    *a = (kn_optim_args){
        .kind = c->kind,
        .lr = lr,
        .beta1 = c->kind == KN_OPT_SGD || c->kind == KN_OPT_RMSPROP ? c->momentum : c->beta1,
        .beta2 = c->beta2,
        .eps = c->eps,
        .weight_decay = c->weight_decay,
        .bc1 = 1.0f,
        .bc2 = 1.0f,
        .grad_scale = 1.0f,
    };
    if (c->kind == KN_OPT_ADAM || c->kind == KN_OPT_ADAMW) {
        a->bc1 = (float)(1.0 - pow((double)c->beta1, (double)o->step));
        a->bc2 = (float)(1.0 - pow((double)c->beta2, (double)o->step));
    }
    if (lr_out) *lr_out = lr;
}

void kn_optim_apply_all(kn_optim *o, kn_tensor_set *params, const kn_tensor_set *grads,
                        const kn_optim_args *a, float *grad_norm)
{
    params->be->optim_update_all(a, o->cfg.grad_clip, params->data, grads->data, o->m.data,
                                 o->v.data, grads->numel, o->chunks, o->nchunks, grad_norm);
}

int kn_optim_has_all(const kn_optim *o, const kn_tensor_set *params)
{
    return o->chunks && params->be->optim_update_all == o->be->optim_update_all;
}

void kn_optim_update(kn_optim *o, kn_tensor_set *params, const kn_tensor_set *grads,
                     float *grad_norm, float *lr_out)
{
    const kn_backend *be = params->be;
    const kn_optim_config *c = &o->cfg;
    /* one launch for everything where the backend has it: the norm, when
     * clipping or asked, stays on the device and feeds the update */
    const int all = kn_optim_has_all(o, params);
    /* the norm costs a pass over all gradients: only when clipping or asked */
    float norm = 0.0f;
    if (!all && (c->grad_clip > 0.0f || grad_norm))
        norm = (float)sqrt(be->sumsq(grads->data, grads->numel));
    float scale = 1.0f;
    if (c->grad_clip > 0.0f && norm > c->grad_clip) scale = c->grad_clip / (norm + 1e-6f);
    kn_optim_args a;
    kn_optim_next_args(o, &a, lr_out);
    if (all) {
        kn_optim_apply_all(o, params, grads, &a, grad_norm ? &norm : NULL);
    } else {
        a.grad_scale = scale;
        for (int i = 0; i < params->n; i++) {
            const kn_tensor *t = &params->t[i];
            a.weight_decay = t->decay ? c->weight_decay : 0.0f;
            be->optim_update(&a, params->data + t->offset, grads->data + t->offset,
                             o->m.data + t->offset, o->v.data + t->offset, t->numel);
        }
    }
    if (grad_norm) *grad_norm = norm;
}
