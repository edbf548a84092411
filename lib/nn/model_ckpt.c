/* model_ckpt.c: model checkpoints as ONE safetensors file: the weights under
 * their PyTorch-style names, then (with an optimizer) "optim.m.<name>" and
 * "optim.v.<name>" for every parameter, in parameter order. __metadata__
 * carries the spec and optimizer config as JSON strings and the counters
 * needed to resume exactly (see model.h). Loading is strict: a tensor that is
 * missing, unknown, of another dtype or shape is an error naming it. */
#include "nn/model_int.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/kn.h"
#include "nn/safetensors.h"

#define CKPT_FORMAT "kiln-ckpt-1"

static json_t *u64_string(uint64_t v)
{
    char s[32];
    snprintf(s, sizeof(s), "%" PRIu64, v);
    return json_string(s);
}

static int parse_u64(const char *s, uint64_t *out)
{
    if (!s || !*s) return -1;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end || s[0] == '-') return -1;
    *out = v;
    return 0;
}

int kn_model_save_buffer(const kn_model *m, const json_t *extra, unsigned char **buf, size_t *len,
                         char *err, size_t errsz)
{
    int rc = KN_ENOMEM;
    const int np = m->params.n, nsets = m->opt ? 3 : 1, nb = m->bufs.n;
    kn_safetensors_entry *e = calloc((size_t)np * nsets + nb, sizeof(*e));
    int64_t *shapes = calloc((size_t)(np + nb) * KN_TENSOR_MAX_DIMS, sizeof(*shapes));
    char *names = calloc((size_t)np * nsets, KN_TENSOR_NAME_MAX + 16);
    float *host = malloc((m->params.numel * nsets + m->bufs.numel) * sizeof(float) + 1);
    json_t *meta = json_object();
    char *spec = NULL, *optim = NULL;
    *buf = NULL;
    *len = 0;
    if (!e || !shapes || !names || !host || !meta) goto out;
    const kn_tensor_set *sets[3] = {&m->params, m->opt ? &m->opt->m : NULL,
                                    m->opt ? &m->opt->v : NULL};
    const char *prefix[3] = {"", "optim.m.", "optim.v."};
    for (int s = 0; s < nsets; s++) {
        float *h = host + (size_t)s * m->params.numel;
        m->be->to_host(h, sets[s]->data, m->params.numel * sizeof(float));
        for (int i = 0; i < np; i++) {
            const kn_tensor *t = &m->params.t[i];
            char *nm = names + ((size_t)s * np + i) * (KN_TENSOR_NAME_MAX + 16);
            snprintf(nm, KN_TENSOR_NAME_MAX + 16, "%s%s", prefix[s], t->name);
            for (int d = 0; d < t->ndim; d++)
                shapes[i * KN_TENSOR_MAX_DIMS + d] = t->shape[d];
            e[s * np + i] = (kn_safetensors_entry){.name = nm,
                                                   .ndim = t->ndim,
                                                   .shape = shapes + i * KN_TENSOR_MAX_DIMS,
                                                   .data = h + t->offset};
        }
    }
    /* the buffers (batchnorm running statistics) under their own names */
    float *hb = host + (size_t)nsets * m->params.numel;
    if (nb) m->be->to_host(hb, m->bufs.data, m->bufs.numel * sizeof(float));
    for (int i = 0; i < nb; i++) {
        const kn_tensor *t = &m->bufs.t[i];
        int64_t *sh = shapes + (size_t)(np + i) * KN_TENSOR_MAX_DIMS;
        for (int d = 0; d < t->ndim; d++)
            sh[d] = t->shape[d];
        e[np * nsets + i] = (kn_safetensors_entry){
            .name = t->name, .ndim = t->ndim, .shape = sh, .data = hb + t->offset};
    }
    if (extra) {
        if (!json_is_object(extra)) {
            rc = kn_seterr(err, errsz, KN_EINVAL, "checkpoint: extra metadata is not an object");
            goto out;
        }
        if (json_object_update(meta, (json_t *)extra)) goto out;
    }
    spec = json_dumps(m->spec, JSON_COMPACT | JSON_SORT_KEYS);
    if (!spec) goto out;
    json_object_set_new(meta, "format", json_string("pt"));
    json_object_set_new(meta, "kiln.format", json_string(CKPT_FORMAT));
    json_object_set_new(meta, "kiln.spec", json_string(spec));
    json_object_set_new(meta, "kiln.seed", u64_string(m->seed));
    json_object_set_new(meta, "kiln.fwd_count", u64_string(m->fwd_count));
    if (m->opt) {
        json_t *oj = kn_optim_config_to_json(&m->opt->cfg);
        optim = oj ? json_dumps(oj, JSON_COMPACT) : NULL;
        json_decref(oj);
        if (!optim) goto out;
        json_object_set_new(meta, "kiln.optim", json_string(optim));
        json_object_set_new(meta, "kiln.step", u64_string((uint64_t)m->opt->step));
    }
    rc = kn_safetensors_write(e, np * nsets + nb, meta, buf, len, err, errsz);
out:
    if (rc == KN_ENOMEM) kn_seterr(err, errsz, rc, "checkpoint: out of memory");
    free(e);
    free(shapes);
    free(names);
    free(host);
    free(spec);
    free(optim);
    json_decref(meta);
    return rc;
}

int kn_model_save_file(const kn_model *m, const json_t *extra, const char *path, char *err,
                       size_t errsz)
{
    unsigned char *buf;
    size_t len;
    int rc = kn_model_save_buffer(m, extra, &buf, &len, err, errsz);
    if (rc) return rc;
    rc = kn_safetensors_write_file(path, buf, len, err, errsz);
    free(buf);
    return rc;
}

/* Copies tensor st into slot i of set (host staging h), checking it matches. */
static int load_tensor(const kn_safetensors_tensor *st, const kn_tensor *t, float *h, char *err,
                       size_t errsz)
{
    if (strcmp(st->dtype, "F32") != 0)
        return kn_seterr(err, errsz, KN_ECORRUPT, "checkpoint: tensor \"%s\" is %s, not F32",
                         st->name, st->dtype);
    int same = st->ndim == t->ndim;
    for (int d = 0; same && d < t->ndim; d++)
        same = st->shape[d] == t->shape[d];
    if (!same)
        return kn_seterr(err, errsz, KN_ECORRUPT,
                         "checkpoint: tensor \"%s\" has a shape other than the spec's", st->name);
    memcpy(h + t->offset, st->data, st->nbytes);
    return KN_OK;
}

int kn_model_load_buffer(const unsigned char *buf, size_t len, int max_batch, const kn_backend *be,
                         kn_model **out, json_t **meta, char *err, size_t errsz)
{
    kn_safetensors_file f;
    kn_model *m = NULL;
    json_t *spec = NULL;
    float *host = NULL;
    unsigned char *seen = NULL;
    int rc;
    *out = NULL;
    if (meta) *meta = NULL;
    if ((rc = kn_safetensors_parse(buf, len, &f, err, errsz))) return rc;
    rc = KN_ECORRUPT;
    const char *spec_s = json_string_value(json_object_get(f.metadata, "kiln.spec"));
    const char *fmt = json_string_value(json_object_get(f.metadata, "kiln.format"));
    if (!spec_s || !fmt || strcmp(fmt, CKPT_FORMAT) != 0) {
        kn_seterr(err, errsz, rc, "checkpoint: no kiln.spec / kiln.format %s metadata",
                  CKPT_FORMAT);
        goto out;
    }
    json_error_t jerr;
    spec = json_loads(spec_s, 0, &jerr);
    uint64_t seed = 0, fwd = 0, step = 0;
    if (!spec || parse_u64(json_string_value(json_object_get(f.metadata, "kiln.seed")), &seed) ||
        parse_u64(json_string_value(json_object_get(f.metadata, "kiln.fwd_count")), &fwd)) {
        kn_seterr(err, errsz, rc, "checkpoint: bad kiln.spec, kiln.seed or kiln.fwd_count");
        goto out;
    }
    char merr[256];
    if ((rc = kn_model_new(spec, seed, max_batch, be, &m, merr, sizeof(merr)))) {
        kn_seterr(err, errsz, rc == KN_EINVAL ? KN_ECORRUPT : rc, "checkpoint: %s", merr);
        rc = rc == KN_EINVAL ? KN_ECORRUPT : rc;
        goto out;
    }
    m->fwd_count = fwd;
    const char *optim_s = json_string_value(json_object_get(f.metadata, "kiln.optim"));
    if (optim_s) {
        kn_optim_config oc;
        json_t *oj = json_loads(optim_s, 0, &jerr);
        int orc = oj ? kn_optim_config_from_json(&oc, oj, merr, sizeof(merr)) : KN_EINVAL;
        json_decref(oj);
        if (orc || parse_u64(json_string_value(json_object_get(f.metadata, "kiln.step")), &step)) {
            rc = kn_seterr(err, errsz, KN_ECORRUPT, "checkpoint: bad kiln.optim or kiln.step");
            goto out;
        }
        if ((rc = kn_model_set_optim(m, &oc))) goto out;
        m->opt->step = (int64_t)step;
    }
    const int np = m->params.n, nsets = m->opt ? 3 : 1, nb = m->bufs.n;
    host = calloc(m->params.numel * nsets + m->bufs.numel + 1, sizeof(float));
    seen = calloc((size_t)np * nsets + nb + 1, 1);
    float *hb = host + (size_t)nsets * m->params.numel;
    if (!host || !seen) {
        rc = kn_seterr(err, errsz, KN_ENOMEM, "checkpoint: out of memory");
        goto out;
    }
    rc = KN_ECORRUPT;
    for (int k = 0; k < f.n; k++) {
        const kn_safetensors_tensor *st = &f.tensors[k];
        const char *nm = st->name;
        int s = 0;
        if (strncmp(nm, "optim.m.", 8) == 0)
            s = 1, nm += 8;
        else if (strncmp(nm, "optim.v.", 8) == 0)
            s = 2, nm += 8;
        int i = kn_tensor_find(&m->params, nm);
        if (i < 0 && s == 0 && (i = kn_tensor_find(&m->bufs, nm)) >= 0) {
            if (load_tensor(st, &m->bufs.t[i], hb, err, errsz)) goto out;
            seen[np * nsets + i] = 1;
            continue;
        }
        if (i < 0 || s >= nsets) {
            kn_seterr(err, errsz, rc, "checkpoint: unexpected tensor \"%s\"", st->name);
            goto out;
        }
        if (load_tensor(st, &m->params.t[i], host + (size_t)s * m->params.numel, err, errsz))
            goto out;
        seen[s * np + i] = 1;
    }
    for (int j = 0; j < np * nsets; j++)
        if (!seen[j]) {
            kn_seterr(err, errsz, rc, "checkpoint: tensor %s%s is missing",
                      j / np == 0   ? ""
                      : j / np == 1 ? "optim.m."
                                    : "optim.v.",
                      m->params.t[j % np].name);
            goto out;
        }
    for (int j = 0; j < nb; j++)
        if (!seen[np * nsets + j]) {
            kn_seterr(err, errsz, rc, "checkpoint: tensor %s is missing", m->bufs.t[j].name);
            goto out;
        }
    m->be->to_device(m->params.data, host, m->params.numel * sizeof(float));
    if (nb) m->be->to_device(m->bufs.data, hb, m->bufs.numel * sizeof(float));
    if (m->opt) {
        m->be->to_device(m->opt->m.data, host + m->params.numel, m->params.numel * sizeof(float));
        m->be->to_device(m->opt->v.data, host + 2 * m->params.numel,
                         m->params.numel * sizeof(float));
    }
    if (meta) *meta = json_incref(f.metadata);
    *out = m;
    m = NULL;
    rc = KN_OK;
out:
    kn_model_destroy(m);
    json_decref(spec);
    free(host);
    free(seen);
    kn_safetensors_file_free(&f);
    return rc;
}

int kn_model_load_file(const char *path, int max_batch, const kn_backend *be, kn_model **out,
                       json_t **meta, char *err, size_t errsz)
{
    unsigned char *buf;
    size_t len;
    *out = NULL;
    int rc = kn_safetensors_read_file(path, (size_t)1 << 40, &buf, &len, err, errsz);
    if (rc) return rc;
    rc = kn_model_load_buffer(buf, len, max_batch, be, out, meta, err, errsz);
    free(buf);
    return rc;
}
