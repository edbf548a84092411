/* model_seq.c: MLP, linear regression and CNN as one sequence of layers
 * (linear, conv2d, batchnorm, pooling, activation, dropout; flatten is
 * implicit because NCHW rows are contiguous). Parameters are named like a
 * PyTorch nn.Sequential: "layers.<i>.weight" (out, in) or (OC, C, K, K),
 * "layers.<i>.bias"; a batchnorm's weight and bias are (C) and its running
 * statistics "layers.<i>.running_mean" / "layers.<i>.running_var" (C), the
 * names of PyTorch's BatchNorm buffers. */
#include "nn/model_int.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/kn.h"
#include "nn/rng.h"

static int parse_act(const json_t *spec, json_t *norm, int *act, char *err, size_t errsz)
{
    const json_t *v = json_object_get(spec, "activation");
    const char *s = v ? json_string_value(v) : "relu";
    if (!s) s = "";
    *act = strcmp(s, "relu") == 0      ? KN_ACT_RELU
           : strcmp(s, "tanh") == 0    ? KN_ACT_TANH
           : strcmp(s, "sigmoid") == 0 ? KN_ACT_SIGMOID
           : strcmp(s, "gelu") == 0    ? KN_ACT_GELU
                                       : 0;
    if (!*act)
        return kn_seterr(err, errsz, KN_EINVAL,
                         "model spec: \"activation\" must be relu, tanh, sigmoid or gelu");
    json_object_set_new(norm, "activation", json_string(s));
    return KN_OK;
}

static int parse_dropout(const json_t *spec, json_t *norm, float *p, char *err, size_t errsz)
{
    const json_t *v = json_object_get(spec, "dropout");
    *p = 0.0f;
    if (v) {
        if (!json_is_number(v) || json_number_value(v) < 0.0 || json_number_value(v) >= 1.0)
            return kn_seterr(err, errsz, KN_EINVAL, "model spec: \"dropout\" must be in [0, 1)");
        *p = (float)json_number_value(v);
    }
    json_object_set_new(norm, "dropout", json_real(*p));
    return KN_OK;
}

/* Reads an optional boolean key; recorded in norm only when spec has it, so
 * the normalised spec of a model without it is what it was before the key. */
static int parse_bool(const json_t *spec, json_t *norm, const char *key, int def, int *out,
                      char *err, size_t errsz)
{
    const json_t *v = json_object_get(spec, key);
    *out = def;
    if (!v) return KN_OK;
    if (!json_is_boolean(v))
        return kn_seterr(err, errsz, KN_EINVAL, "model spec: \"%s\" must be true or false", key);
    *out = json_is_true(v);
    json_object_set_new(norm, key, json_boolean(*out));
    return KN_OK;
}

/* "label_smoothing": s in [0, 1) of the cross-entropy loss; recorded only when given. */
static int parse_smoothing(kn_model *m, const json_t *spec, json_t *norm, char *err, size_t errsz)
{
    const json_t *v = json_object_get(spec, "label_smoothing");
    m->seq.smoothing = 0.0f;
    if (!v) return KN_OK;
    if (!json_is_number(v) || json_number_value(v) < 0.0 || json_number_value(v) >= 1.0)
        return kn_seterr(err, errsz, KN_EINVAL,
                         "model spec: \"label_smoothing\" must be in [0, 1)");
    if (m->seq.mse && json_number_value(v) > 0.0)
        return kn_seterr(err, errsz, KN_EINVAL,
                         "model spec: \"label_smoothing\" needs the xent loss");
    m->seq.smoothing = (float)json_number_value(v);
    json_object_set_new(norm, "label_smoothing", json_real(m->seq.smoothing));
    return KN_OK;
}

/* Appends one layer: declares its output activation and parameters. */
static int add_layer(kn_model *m, seq_layer *proto, int *cap)
{
    seq_model *s = &m->seq;
    if (s->n == *cap) {
        int nc = *cap ? 2 * *cap : 16;
        seq_layer *l = realloc(s->l, (size_t)nc * sizeof(*l));
        if (!l) return KN_ENOMEM;
        s->l = l;
        *cap = nc;
    }
    int i = s->n;
    seq_layer *L = &s->l[i];
    *L = *proto;
    L->w = L->b = L->mask = -1;
    char name[KN_TENSOR_NAME_MAX];
    int sh[4];
    if (L->kind == SEQ_LINEAR) {
        snprintf(name, sizeof(name), "layers.%d.weight", i);
        sh[0] = L->out_numel;
        sh[1] = L->in_numel;
        if ((L->w = kn_tensor_add(&m->params, name, 2, sh, 1)) < 0) return L->w;
        snprintf(name, sizeof(name), "layers.%d.bias", i);
        if ((L->b = kn_tensor_add(&m->params, name, 1, sh, 0)) < 0) return L->b;
    } else if (L->kind == SEQ_CONV) {
        snprintf(name, sizeof(name), "layers.%d.weight", i);
        int ws[4] = {L->conv.OC, L->conv.C, L->conv.K, L->conv.K};
        if ((L->w = kn_tensor_add(&m->params, name, 4, ws, 1)) < 0) return L->w;
        snprintf(name, sizeof(name), "layers.%d.bias", i);
        if ((L->b = kn_tensor_add(&m->params, name, 1, ws, 0)) < 0) return L->b;
        kn_conv_shape cs = L->conv;
        cs.B = m->max_B;
        size_t need = m->be->conv2d_scratch(&cs);
        if (need > s->scratch_n) s->scratch_n = need;
    } else if (L->kind == SEQ_BN) {
        const int cs1[1] = {L->bn_C};
        const char *pn[6] = {"weight", "bias", "running_mean", "running_var", "mean", "rstd"};
        kn_tensor_set *set[6] = {&m->params, &m->params, &m->bufs, &m->bufs, &m->acts, &m->acts};
        int *idx[6] = {&L->w, &L->b, &L->run_mean, &L->run_var, &L->bn_mean, &L->bn_rstd};
        for (int j = 0; j < 6; j++) {
            snprintf(name, sizeof(name), "layers.%d.%s", i, pn[j]);
            if ((*idx[j] = kn_tensor_add(set[j], name, 1, cs1, 0)) < 0) return *idx[j];
        }
    }
    sh[0] = m->max_B;
    sh[1] = L->out_numel;
    snprintf(name, sizeof(name), "layers.%d.out", i);
    if ((L->out = kn_tensor_add(&m->acts, name, 2, sh, 0)) < 0) return L->out;
    if (L->kind == SEQ_DROPOUT) {
        snprintf(name, sizeof(name), "layers.%d.mask", i);
        if ((L->mask = kn_tensor_add(&m->acts, name, 2, sh, 0)) < 0) return L->mask;
    }
    if (L->kind == SEQ_POOL && L->sub == KN_POOL_MAX) {
        L->idx_off = m->ibuf_n;
        m->ibuf_n += (size_t)m->max_B * L->out_numel;
    }
    s->n++;
    return KN_OK;
}

static int build_mlp(kn_model *m, const json_t *spec, json_t *norm, int *cap, char *err,
                     size_t errsz)
{
    const char *type = json_string_value(json_object_get(spec, "type"));
    int sizes[64], nsz = 0, act = KN_ACT_RELU, rc, bn = 0;
    float p = 0.0f;
    if (strcmp(type, "linreg") == 0) {
        if ((rc = kn_model_spec_int(spec, NULL, "in", 1, 1, 1 << 24, &sizes[0], err, errsz)) ||
            (rc = kn_model_spec_int(spec, NULL, "out", 1, 1, 1 << 24, &sizes[1], err, errsz)))
            return rc;
        nsz = 2;
        m->seq.mse = 1;
    } else {
        const json_t *a = json_object_get(spec, "sizes");
        if (!json_is_array(a) || json_array_size(a) < 2 || json_array_size(a) > 64)
            return kn_seterr(err, errsz, KN_EINVAL,
                             "model spec: \"sizes\" must list 2..64 layer widths");
        for (size_t i = 0; i < json_array_size(a); i++) {
            const json_t *v = json_array_get(a, i);
            if (!json_is_integer(v) || json_integer_value(v) < 1 ||
                json_integer_value(v) > (1 << 24))
                return kn_seterr(err, errsz, KN_EINVAL, "model spec: \"sizes\"[%zu] is not a width",
                                 i);
            sizes[nsz++] = (int)json_integer_value(v);
        }
        if ((rc = parse_act(spec, norm, &act, err, errsz)) ||
            (rc = parse_dropout(spec, norm, &p, err, errsz)) ||
            (rc = parse_bool(spec, norm, "bn", 0, &bn, err, errsz)))
            return rc;
        const char *loss = json_string_value(json_object_get(spec, "loss"));
        if (loss && strcmp(loss, "mse") != 0 && strcmp(loss, "xent") != 0)
            return kn_seterr(err, errsz, KN_EINVAL, "model spec: \"loss\" must be xent or mse");
        m->seq.mse = loss && strcmp(loss, "mse") == 0;
        if ((rc = parse_smoothing(m, spec, norm, err, errsz))) return rc;
    }
    if (strcmp(type, "linreg") == 0) { /* the keys it is built from, so a checkpoint reloads */
        json_object_set_new(norm, "in", json_integer(sizes[0]));
        json_object_set_new(norm, "out", json_integer(sizes[1]));
    } else {
        json_t *arr = json_array();
        for (int i = 0; i < nsz; i++)
            json_array_append_new(arr, json_integer(sizes[i]));
        json_object_set_new(norm, "sizes", arr);
    }
    json_object_set_new(norm, "loss", json_string(m->seq.mse ? "mse" : "xent"));
    m->seq.in_numel = sizes[0];
    for (int i = 0; i + 1 < nsz; i++) {
        seq_layer L = {.kind = SEQ_LINEAR, .in_numel = sizes[i], .out_numel = sizes[i + 1]};
        if ((rc = add_layer(m, &L, cap))) return rc;
        if (i + 2 < nsz && bn) {
            seq_layer N = {.kind = SEQ_BN,
                           .bn_C = sizes[i + 1],
                           .bn_HW = 1,
                           .in_numel = sizes[i + 1],
                           .out_numel = sizes[i + 1]};
            if ((rc = add_layer(m, &N, cap))) return rc;
        }
        if (i + 2 < nsz) {
            seq_layer A = {
                .kind = SEQ_ACT, .sub = act, .in_numel = sizes[i + 1], .out_numel = sizes[i + 1]};
            if ((rc = add_layer(m, &A, cap))) return rc;
            if (p > 0.0f) {
                seq_layer D = {.kind = SEQ_DROPOUT,
                               .p = p,
                               .in_numel = sizes[i + 1],
                               .out_numel = sizes[i + 1]};
                if ((rc = add_layer(m, &D, cap))) return rc;
            }
        }
    }
    m->seq.out_numel = sizes[nsz - 1];
    return KN_OK;
}

static int build_cnn(kn_model *m, const json_t *spec, json_t *norm, int *cap, char *err,
                     size_t errsz)
{
    int rc, act, classes, bn_all;
    float p;
    const json_t *in = json_object_get(spec, "input");
    int C, H, W;
    if (!json_is_array(in) || json_array_size(in) != 3 ||
        (C = (int)json_integer_value(json_array_get(in, 0))) < 1 ||
        (H = (int)json_integer_value(json_array_get(in, 1))) < 1 ||
        (W = (int)json_integer_value(json_array_get(in, 2))) < 1 || C > 4096 || H > 8192 ||
        W > 8192)
        return kn_seterr(err, errsz, KN_EINVAL, "model spec: \"input\" must be [C, H, W]");
    json_object_set_new(norm, "input", json_pack("[i,i,i]", C, H, W));
    if ((rc = parse_act(spec, norm, &act, err, errsz)) ||
        (rc = parse_dropout(spec, norm, &p, err, errsz)) ||
        (rc = kn_model_spec_int(spec, norm, "classes", 10, 1, 1 << 20, &classes, err, errsz)) ||
        (rc = parse_bool(spec, norm, "bn", 0, &bn_all, err, errsz)) ||
        (rc = parse_smoothing(m, spec, norm, err, errsz)))
        return rc;
    const char *pool = json_string_value(json_object_get(spec, "pool"));
    if (pool && strcmp(pool, "max") != 0 && strcmp(pool, "avg") != 0)
        return kn_seterr(err, errsz, KN_EINVAL, "model spec: \"pool\" must be max or avg");
    int pkind = pool && strcmp(pool, "avg") == 0 ? KN_POOL_AVG : KN_POOL_MAX;
    json_object_set_new(norm, "pool", json_string(pkind == KN_POOL_AVG ? "avg" : "max"));
    m->seq.in_numel = C * H * W;
    const json_t *convs = json_object_get(spec, "convs");
    if (!json_is_array(convs) || json_array_size(convs) > 32)
        return kn_seterr(err, errsz, KN_EINVAL, "model spec: \"convs\" must be an array");
    json_t *nconvs = json_array();
    json_object_set_new(norm, "convs", nconvs);
    for (size_t i = 0; i < json_array_size(convs); i++) {
        const json_t *c = json_array_get(convs, i);
        int oc, k, pad, stride, pk, bn;
        json_t *nc = json_object();
        json_array_append_new(nconvs, nc);
        if (!json_is_object(c))
            return kn_seterr(err, errsz, KN_EINVAL, "model spec: \"convs\"[%zu] is not an object",
                             i);
        if ((rc = kn_model_spec_int(c, nc, "out", 0, 1, 1 << 16, &oc, err, errsz)) ||
            (rc = kn_model_spec_int(c, nc, "k", 3, 1, 64, &k, err, errsz)) ||
            (rc = kn_model_spec_int(c, nc, "pad", 0, 0, 64, &pad, err, errsz)) ||
            (rc = kn_model_spec_int(c, nc, "stride", 1, 1, 64, &stride, err, errsz)) ||
            (rc = kn_model_spec_int(c, nc, "pool", 2, 0, 64, &pk, err, errsz)) ||
            (rc = parse_bool(c, nc, "bn", bn_all, &bn, err, errsz)))
            return rc;
        kn_conv_shape cs = {.C = C, .H = H, .W = W, .OC = oc, .K = k, .stride = stride, .pad = pad};
        cs.OH = (H + 2 * pad - k) / stride + 1;
        cs.OW = (W + 2 * pad - k) / stride + 1;
        if (H + 2 * pad < k || W + 2 * pad < k)
            return kn_seterr(err, errsz, KN_EINVAL, "model spec: conv %zu kernel exceeds input", i);
        seq_layer L = {
            .kind = SEQ_CONV, .conv = cs, .in_numel = C * H * W, .out_numel = oc * cs.OH * cs.OW};
        if ((rc = add_layer(m, &L, cap))) return rc;
        C = oc;
        H = cs.OH;
        W = cs.OW;
        if (bn) {
            seq_layer N = {.kind = SEQ_BN,
                           .bn_C = C,
                           .bn_HW = H * W,
                           .in_numel = C * H * W,
                           .out_numel = C * H * W};
            if ((rc = add_layer(m, &N, cap))) return rc;
        }
        seq_layer A = {.kind = SEQ_ACT, .sub = act, .in_numel = C * H * W, .out_numel = C * H * W};
        if ((rc = add_layer(m, &A, cap))) return rc;
        if (pk > 1) {
            if (H < pk || W < pk)
                return kn_seterr(err, errsz, KN_EINVAL, "model spec: pool %zu exceeds its input",
                                 i);
            kn_pool_shape ps = {.C = C, .H = H, .W = W, .K = pk, .S = pk};
            ps.OH = (H - pk) / pk + 1;
            ps.OW = (W - pk) / pk + 1;
            seq_layer P = {.kind = SEQ_POOL,
                           .sub = pkind,
                           .pool = ps,
                           .in_numel = C * H * W,
                           .out_numel = C * ps.OH * ps.OW};
            if ((rc = add_layer(m, &P, cap))) return rc;
            H = ps.OH;
            W = ps.OW;
        }
    }
    const json_t *fc = json_object_get(spec, "fc");
    if (fc && !json_is_array(fc))
        return kn_seterr(err, errsz, KN_EINVAL, "model spec: \"fc\" must be an array of widths");
    json_t *nfc = json_array();
    json_object_set_new(norm, "fc", nfc);
    int width = C * H * W;
    for (size_t i = 0; i <= json_array_size(fc); i++) {
        int last = i == json_array_size(fc);
        int out = last ? classes : (int)json_integer_value(json_array_get(fc, i));
        if (out < 1 || out > (1 << 24))
            return kn_seterr(err, errsz, KN_EINVAL, "model spec: \"fc\"[%zu] is not a width", i);
        if (!last) json_array_append_new(nfc, json_integer(out));
        seq_layer L = {.kind = SEQ_LINEAR, .in_numel = width, .out_numel = out};
        if ((rc = add_layer(m, &L, cap))) return rc;
        width = out;
        if (!last && bn_all) {
            seq_layer N = {
                .kind = SEQ_BN, .bn_C = out, .bn_HW = 1, .in_numel = out, .out_numel = out};
            if ((rc = add_layer(m, &N, cap))) return rc;
        }
        if (!last) {
            seq_layer A = {.kind = SEQ_ACT, .sub = act, .in_numel = out, .out_numel = out};
            if ((rc = add_layer(m, &A, cap))) return rc;
            if (p > 0.0f) {
                seq_layer D = {.kind = SEQ_DROPOUT, .p = p, .in_numel = out, .out_numel = out};
                if ((rc = add_layer(m, &D, cap))) return rc;
            }
        }
    }
    m->seq.out_numel = classes;
    m->seq.mse = 0;
    return KN_OK;
}

int kn_model_seq_build(kn_model *m, const json_t *spec, json_t *norm, char *err, size_t errsz)
{
    int cap = 0, rc;
    seq_model *s = &m->seq;
    rc = m->type == KN_MODEL_CNN ? build_cnn(m, spec, norm, &cap, err, errsz)
                                 : build_mlp(m, spec, norm, &cap, err, errsz);
    if (rc) return rc == KN_ENOMEM ? kn_seterr(err, errsz, rc, "model: out of memory") : rc;
    int sh[2] = {m->max_B, s->in_numel};
    if ((s->a_in = kn_tensor_add(&m->acts, "input", 2, sh, 0)) < 0) return s->a_in;
    sh[1] = s->out_numel;
    if ((s->a_y = kn_tensor_add(&m->acts, "targets", 2, sh, 0)) < 0) return s->a_y;
    if ((s->a_losses = kn_tensor_add(&m->acts, "losses", 1, sh, 0)) < 0) return s->a_losses;
    if ((s->a_lse = kn_tensor_add(&m->acts, "lse", 1, sh, 0)) < 0) return s->a_lse;
    s->i_labels = m->ibuf_n;
    m->ibuf_n += (size_t)m->max_B;
    return KN_OK;
}

int kn_model_seq_init(kn_model *m)
{
    /* PyTorch's default for Linear and Conv2d: U(-1/sqrt(fan_in), 1/sqrt(fan_in))
     * for weights and biases. */
    float *h = malloc(m->params.numel * sizeof(float));
    if (!h) return KN_ENOMEM;
    memset(h, 0, m->params.numel * sizeof(float));
    kn_rng rng;
    kn_rng_init(&rng, m->seed);
    for (int i = 0; i < m->seq.n; i++) {
        const seq_layer *L = &m->seq.l[i];
        if (L->w < 0) continue;
        if (L->kind == SEQ_BN) { /* PyTorch: weight 1, bias 0; running mean 0, var 1 */
            const kn_tensor *t = &m->params.t[L->w];
            for (size_t e = 0; e < t->numel; e++)
                h[t->offset + e] = 1.0f;
            continue;
        }
        int fan_in = L->kind == SEQ_CONV ? L->conv.C * L->conv.K * L->conv.K : L->in_numel;
        float bound = 1.0f / sqrtf((float)fan_in);
        const int idx[2] = {L->w, L->b};
        for (int j = 0; j < 2; j++) {
            const kn_tensor *t = &m->params.t[idx[j]];
            for (size_t e = 0; e < t->numel; e++)
                h[t->offset + e] = (2.0f * kn_rng_uniform(&rng) - 1.0f) * bound;
        }
    }
    m->be->to_device(m->params.data, h, m->params.numel * sizeof(float));
    free(h);
    if (m->bufs.numel) {
        if (!(h = calloc(m->bufs.numel, sizeof(float)))) return KN_ENOMEM;
        for (int i = 0; i < m->seq.n; i++) {
            const seq_layer *L = &m->seq.l[i];
            if (L->kind != SEQ_BN) continue;
            const kn_tensor *t = &m->bufs.t[L->run_var];
            for (size_t e = 0; e < t->numel; e++)
                h[t->offset + e] = 1.0f;
        }
        m->be->to_device(m->bufs.data, h, m->bufs.numel * sizeof(float));
        free(h);
    }
    return KN_OK;
}

int kn_model_seq_forward(kn_model *m, const kn_batch *b, char *err, size_t errsz)
{
    const kn_backend *be = m->be;
    seq_model *s = &m->seq;
    const int B = b->B;
    if (!b->x) return kn_seterr(err, errsz, KN_EINVAL, "model: batch has no inputs x");
    be->to_device(ACT(m, s->a_in), b->x, (size_t)B * s->in_numel * sizeof(float));
    const float *cur = ACT(m, s->a_in);
    for (int i = 0; i < s->n; i++) {
        seq_layer *L = &s->l[i];
        float *out = ACT(m, L->out);
        switch (L->kind) {
        case SEQ_LINEAR:
            be->matmul_fwd(out, cur, PAR(m, L->w), PAR(m, L->b), B, L->in_numel, L->out_numel);
            break;
        case SEQ_CONV: {
            kn_conv_shape cs = L->conv;
            cs.B = B;
            be->conv2d_fwd(out, cur, PAR(m, L->w), PAR(m, L->b), s->scratch, &cs);
            break;
        }
        case SEQ_POOL: {
            kn_pool_shape ps = L->pool;
            ps.B = B;
            be->pool2d_fwd(L->sub, out, m->ibuf + L->idx_off, cur, &ps);
            break;
        }
        case SEQ_ACT:
            be->act_fwd(L->sub, out, cur, (size_t)B * L->out_numel);
            break;
        case SEQ_BN:
            be->batchnorm_fwd(out, ACT(m, L->bn_mean), ACT(m, L->bn_rstd), BUF(m, L->run_mean),
                              BUF(m, L->run_var), cur, PAR(m, L->w), PAR(m, L->b), B, L->bn_C,
                              L->bn_HW, KN_BN_MOMENTUM, KN_BN_EPS, m->training);
            break;
        case SEQ_DROPOUT: {
            uint64_t seed = m->seed * 0x100000001B3ull + m->fwd_count * 1000003ull + (uint64_t)i;
            be->dropout_fwd(out, ACT(m, L->mask), cur, (size_t)B * L->out_numel,
                            m->training ? L->p : 0.0f, seed);
            break;
        }
        }
        cur = out;
    }
    m->B = B;
    m->T = 0;
    s->fwd_training = m->training;
    m->out_act = s->l[s->n - 1].out;
    m->out_dact = m->out_act;
    m->out = ACT(m, m->out_act);
    m->out_rows = B;
    m->out_stride = m->out_valid = s->out_numel;
    if (s->mse ? !b->y : !b->labels) return KN_OK;
    if (s->mse) {
        be->to_device(ACT(m, s->a_y), b->y, (size_t)B * s->out_numel * sizeof(float));
        be->mse_fwd(ACT(m, s->a_losses), cur, ACT(m, s->a_y), B, s->out_numel);
        m->n_valid = B;
    } else {
        int valid = 0;
        for (int r = 0; r < B; r++) {
            if (b->labels[r] >= s->out_numel || b->labels[r] < -1)
                return kn_seterr(err, errsz, KN_EINVAL, "model: label %d of row %d not in [0, %d)",
                                 b->labels[r], r, s->out_numel);
            valid += b->labels[r] >= 0;
        }
        be->to_device(m->ibuf + s->i_labels, b->labels, (size_t)B * sizeof(int));
        kn_model_xent(m, s->l[s->n - 1].out, s->a_lse, s->a_losses, m->ibuf + s->i_labels, B,
                      s->out_numel, s->out_numel, valid);
        if (s->smoothing > 0.0f)
            be->xent_smooth_fwd(ACT(m, s->a_losses), cur, ACT(m, s->a_lse), m->ibuf + s->i_labels,
                                s->smoothing, B, s->out_numel, s->out_numel);
        m->n_valid = valid;
    }
    m->have_targets = 1;
    return KN_OK;
}

void kn_model_seq_backward(kn_model *m)
{
    const kn_backend *be = m->be;
    seq_model *s = &m->seq;
    const int B = m->B;
    const int last = s->l[s->n - 1].out;
    if (s->mse)
        be->mse_bwd(DACT(m, last), ACT(m, last), ACT(m, s->a_y), 1.0f / (float)B, B, s->out_numel);
    else if (m->n_valid) {
        if (!m->dlogits_set)
            be->xent_bwd(DACT(m, last), ACT(m, last), ACT(m, s->a_lse), m->ibuf + s->i_labels,
                         1.0f / (float)m->n_valid, B, s->out_numel, s->out_numel);
        if (s->smoothing > 0.0f)
            be->xent_smooth_bwd(DACT(m, last), m->ibuf + s->i_labels,
                                s->smoothing / (float)m->n_valid, B, s->out_numel, s->out_numel);
    }
    for (int i = s->n - 1; i >= 0; i--) {
        seq_layer *L = &s->l[i];
        const float *in = i ? ACT(m, s->l[i - 1].out) : ACT(m, s->a_in);
        float *din = i ? DACT(m, s->l[i - 1].out) : NULL; /* the input needs no gradient */
        const float *out = ACT(m, L->out), *dout = DACT(m, L->out);
        switch (L->kind) {
        case SEQ_LINEAR:
            be->matmul_bwd(din, GRAD(m, L->w), GRAD(m, L->b), dout, in, PAR(m, L->w), B,
                           L->in_numel, L->out_numel);
            break;
        case SEQ_CONV: {
            kn_conv_shape cs = L->conv;
            cs.B = B;
            be->conv2d_bwd(din, GRAD(m, L->w), GRAD(m, L->b), dout, in, PAR(m, L->w), s->scratch,
                           &cs);
            break;
        }
        case SEQ_POOL: {
            kn_pool_shape ps = L->pool;
            ps.B = B;
            if (din) be->pool2d_bwd(L->sub, din, dout, m->ibuf + L->idx_off, &ps);
            break;
        }
        case SEQ_ACT:
            if (din) be->act_bwd(L->sub, din, in, out, dout, (size_t)B * L->out_numel);
            break;
        case SEQ_BN:
            be->batchnorm_bwd(din, GRAD(m, L->w), GRAD(m, L->b), dout, in, PAR(m, L->w),
                              ACT(m, L->bn_mean), ACT(m, L->bn_rstd), B, L->bn_C, L->bn_HW,
                              s->fwd_training);
            break;
        case SEQ_DROPOUT:
            if (din) be->dropout_bwd(din, dout, ACT(m, L->mask), (size_t)B * L->out_numel);
            break;
        }
    }
}
