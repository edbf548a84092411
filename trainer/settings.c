/* settings.c: the [model.NAME] section (plus the [kafka], [registry] and
 * [trainer] keys the trainer reads) into trn_settings, with every problem
 * reported by key. Every key can be overridden from the environment
 * (config.h: model.cnn.batch -> KILN_MODEL_CNN_BATCH). */
#include "trainer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/kn.h"
#include "core/suggest.h"
#include "nn/precision.h"
#include "service/service.h"

static int copy_str(char *dst, size_t dsz, const char *v, const char *key, char *err, size_t errsz)
{
    if (!v) v = "";
    if (strlen(v) >= dsz)
        return kn_seterr(err, errsz, KN_EINVAL, "%s: value longer than %zu bytes", key, dsz - 1);
    snprintf(dst, dsz, "%s", v);
    return KN_OK;
}

static int get_json(const kn_config *cfg, const char *key, const char *def, json_t **out, char *err,
                    size_t errsz)
{
    const char *v = kn_config_get(cfg, key, def);
    if (!v || !*v) return kn_seterr(err, errsz, KN_EINVAL, "%s is required (a JSON object)", key);
    json_error_t je;
    *out = json_loads(v, JSON_REJECT_DUPLICATES, &je);
    if (!*out || !json_is_object(*out)) {
        json_decref(*out);
        *out = NULL;
        return kn_seterr(err, errsz, KN_EINVAL, "%s: not a JSON object (%s, column %d)", key,
                         je.text[0] ? je.text : "not an object", je.column);
    }
    return KN_OK;
}

static int get_int(const kn_config *cfg, const char *key, int64_t def, int64_t lo, int64_t hi,
                   int64_t *out, char *err, size_t errsz)
{
    int ok = 1;
    *out = kn_config_get_int(cfg, key, def, &ok);
    if (!ok || *out < lo || *out > hi)
        return kn_seterr(err, errsz, KN_EINVAL, "%s: expected an integer in [%lld, %lld]", key,
                         (long long)lo, (long long)hi);
    return KN_OK;
}

static int get_seconds(const kn_config *cfg, const char *key, double def, double *out, char *err,
                       size_t errsz)
{
    int ok = 1;
    *out = kn_config_get_double(cfg, key, def, &ok);
    if (!ok || *out < 0 || *out > 1e9)
        return kn_seterr(err, errsz, KN_EINVAL, "%s: expected seconds >= 0", key);
    return KN_OK;
}

/* The [model.NAME] sections, for "did you mean" when --model names none. */
typedef struct {
    const char *name;
    kn_suggest s;
    char names[32][128]; /* kept: s.best points into it */
    char list[1024];
    size_t n;
    int has;
} model_names;

static void offer_model(const char *section, void *ctx)
{
    model_names *mn = ctx;
    const char *m = section + strlen("model.");
    if (strcmp(m, mn->name) == 0) mn->has = 1;
    if (mn->n >= 32) return;
    snprintf(mn->names[mn->n], sizeof(mn->names[0]), "%s", m);
    kn_suggest_offer(&mn->s, mn->names[mn->n]);
    size_t l = strlen(mn->list);
    snprintf(mn->list + l, sizeof(mn->list) - l, " %s", m);
    mn->n++;
}

int trn_settings_load(const kn_config *cfg, const char *name, trn_settings *s, char *err,
                      size_t errsz)
{
    char k[300];
    int64_t v;
    int rc;
    memset(s, 0, sizeof(*s));
#define KEY(suffix) (snprintf(k, sizeof(k), "model.%s." suffix, name), k)
    if ((rc = copy_str(s->model, sizeof(s->model), name, "--model", err, errsz))) goto fail;
    for (const char *p = name; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '-' || *p == '_' || *p == '.')) {
            rc = kn_seterr(err, errsz, KN_EINVAL, "--model '%s': use [A-Za-z0-9._-]", name);
            goto fail;
        }
    if ((rc = copy_str(s->dataset, sizeof(s->dataset), kn_config_get(cfg, KEY("dataset"), ""), k,
                       err, errsz)))
        goto fail;
    if (!s->dataset[0]) {
        model_names mn = {.name = name};
        kn_suggest_init(&mn.s, name);
        kn_config_foreach_section(cfg, "model.", offer_model, &mn);
        if (mn.n == 0)
            rc = kn_seterr(err, errsz, KN_EINVAL,
                           "--model %s: the configuration has no [model.NAME] section", name);
        else if (!mn.has)
            rc = kn_seterr(err, errsz, KN_EINVAL,
                           "--model %s: no [model.%s] section%s%s%s (there are:%s)", name, name,
                           kn_suggest_result(&mn.s) ? "; did you mean '" : "",
                           kn_suggest_result(&mn.s) ? kn_suggest_result(&mn.s) : "",
                           kn_suggest_result(&mn.s) ? "'?" : "", mn.list);
        else
            rc = kn_seterr(err, errsz, KN_EINVAL, "%s is required: the [dataset.NAME] it trains on",
                           k);
        goto fail;
    }
    const char *prefix = kn_config_get(cfg, "kafka.topic_prefix", "kiln");
    snprintf(s->topic, sizeof(s->topic), "%s.train.%s", prefix, s->dataset);
    snprintf(s->events_topic, sizeof(s->events_topic), "%s.events", prefix);
    if ((rc = copy_str(s->brokers, sizeof(s->brokers),
                       kn_config_get(cfg, "kafka.brokers", KN_SERVICE_DEFAULT_BROKERS),
                       "kafka.brokers", err, errsz)) ||
        (rc = copy_str(s->registry_url, sizeof(s->registry_url),
                       kn_config_get(cfg, "registry.url", "http://127.0.0.1:8080"), "registry.url",
                       err, errsz)) ||
        (rc =
             copy_str(s->registry_token, sizeof(s->registry_token),
                      kn_config_get(cfg, "trainer.token", kn_config_get(cfg, "registry.token", "")),
                      "trainer.token", err, errsz)) ||
        (rc =
             copy_str(s->backend, sizeof(s->backend), kn_config_get(cfg, "trainer.backend", "auto"),
                      "trainer.backend", err, errsz)) ||
        (rc = copy_str(
             s->work_dir, sizeof(s->work_dir),
             kn_config_get(cfg, "trainer.work_dir", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp"),
             "trainer.work_dir", err, errsz)))
        goto fail;
    {
        const char *p = kn_config_get(cfg, "trainer.precision", "fp32");
        kn_precision prec;
        if (kn_precision_parse(p, &prec)) {
            rc = kn_seterr(err, errsz, KN_EINVAL,
                           "trainer.precision: '%s' (use fp32, tf32 or bf16)", p);
            goto fail;
        }
        s->precision = (int)prec;
    }
    if (strcmp(s->backend, "auto") && strcmp(s->backend, "cpu") && strcmp(s->backend, "cuda")) {
        rc = kn_seterr(err, errsz, KN_EINVAL, "trainer.backend: '%s' (use auto, cpu or cuda)",
                       s->backend);
        goto fail;
    }
    if ((rc = copy_str(s->warm_start, sizeof(s->warm_start),
                       kn_config_get(cfg, KEY("warm_start"), ""), k, err, errsz)) ||
        (rc = copy_str(s->tokenizer_hash, sizeof(s->tokenizer_hash),
                       kn_config_get(cfg, KEY("tokenizer_sha256"), ""), k, err, errsz)) ||
        (rc = copy_str(s->recipe, sizeof(s->recipe), kn_config_get(cfg, KEY("recipe_sha256"), ""),
                       k, err, errsz)))
        goto fail;
    if ((rc = get_json(cfg, KEY("spec"), NULL, &s->spec, err, errsz)) ||
        (rc = get_json(cfg, KEY("optim"), "{\"type\":\"adam\",\"lr\":0.001}", &s->optim, err,
                       errsz)))
        goto fail;
    kn_optim_config oc;
    char e[512];
    /* The whole spec now, before the registry sees the model: a typo such as
     * "n_layers" stops the start instead of training a default shape. */
    if ((rc = kn_model_spec_check(s->spec, e, sizeof(e))) != KN_OK) {
        kn_seterr(err, errsz, rc, "%s: %s", KEY("spec"), e);
        goto fail;
    }
    if ((rc = kn_optim_config_from_json(&oc, s->optim, e, sizeof(e))) != KN_OK) {
        kn_seterr(err, errsz, rc, "%s: %s", KEY("optim"), e);
        goto fail;
    }
    if ((rc = get_int(cfg, KEY("batch"), 64, 1, 1 << 20, &v, err, errsz))) goto fail;
    s->batch = (int)v;
    if ((rc = get_int(cfg, KEY("checkpoint_steps"), 1000, 0, INT64_MAX / 2, &s->checkpoint_steps,
                      err, errsz)) ||
        (rc = get_seconds(cfg, KEY("checkpoint_seconds"), 600, &s->checkpoint_seconds, err,
                          errsz)) ||
        (rc = get_int(cfg, KEY("target_steps"), 0, 0, INT64_MAX / 2, &s->target_steps, err,
                      errsz)) ||
        (rc = get_int(cfg, KEY("seed"), 1, 0, INT64_MAX, &v, err, errsz)))
        goto fail;
    s->seed = (uint64_t)v;
    int ok = 1;
    s->shuffle = kn_config_get_bool(cfg, KEY("shuffle"), 1, &ok);
    if (!ok) {
        rc = kn_seterr(err, errsz, KN_EINVAL, "%s: expected true or false", k);
        goto fail;
    }
    /* epochs over a window, replay cycles (window.c) */
    if ((rc = get_int(cfg, KEY("epochs"), 0, 0, 100000, &v, err, errsz))) goto fail;
    s->epochs = (int)v;
    if ((rc = copy_str(s->window, sizeof(s->window), kn_config_get(cfg, KEY("window"), "all"), k,
                       err, errsz)))
        goto fail;
    if (strcmp(s->window, "all") == 0) {
        s->window_kind = TRN_WIN_ALL;
    } else if (strncmp(s->window, "last:", 5) == 0) {
        char *end;
        long long kk = strtoll(s->window + 5, &end, 10);
        if (*end || kk < 1) {
            rc = kn_seterr(err, errsz, KN_EINVAL, "%s: last:K needs K >= 1 offsets", k);
            goto fail;
        }
        s->window_kind = TRN_WIN_LAST;
        s->window_last = kk;
    } else {
        int64_t lo, hi;
        int np;
        s->window_kind = TRN_WIN_FIXED;
        if (trn_window_fixed(s->window, 0, &lo, &hi, &np) != 0) {
            rc = kn_seterr(err, errsz, KN_EINVAL,
                           "%s: '%s' (use all, last:K, or fixed ranges P:START-END,...)", k,
                           s->window);
            goto fail;
        }
    }
    {
        int ok2 = 1;
        s->replay_ratio = kn_config_get_double(cfg, KEY("replay_ratio"), 1.0, &ok2);
        if (!ok2 || s->replay_ratio < 0 || s->replay_ratio > 1000) {
            rc = kn_seterr(err, errsz, KN_EINVAL, "%s: expected a ratio >= 0", k);
            goto fail;
        }
    }
    if ((rc = get_int(cfg, KEY("replay_passes"), 1, 1, 100000, &v, err, errsz))) goto fail;
    s->replay_passes = (int)v;
    if ((rc = get_int(cfg, KEY("replay_min_records"), 1, 1, INT64_MAX / 2, &s->replay_min_records,
                      err, errsz)))
        goto fail;
    if ((rc = copy_str(s->replay_from, sizeof(s->replay_from),
                       kn_config_get(cfg, KEY("replay_from"), "production"), k, err, errsz)))
        goto fail;
    if (strcmp(s->replay_from, "production") && strcmp(s->replay_from, "latest")) {
        rc = kn_seterr(err, errsz, KN_EINVAL, "%s: '%s' (use production or latest)", k,
                       s->replay_from);
        goto fail;
    }
    {
        const char *aug = kn_config_get(cfg, KEY("augment"), "none");
        if ((rc = trn_parse_augment(aug, &s->aug_hflip, &s->aug_crop)) != 0) {
            rc = kn_seterr(err, errsz, KN_EINVAL,
                           "%s: '%s' (use none, or hflip and/or crop:N, comma-separated)", k, aug);
            goto fail;
        }
    }
    if ((rc = get_seconds(cfg, "trainer.window_max_mb", 2048, &s->window_max_mb, err, errsz)))
        goto fail;
    if ((rc = get_seconds(cfg, "trainer.log_seconds", 5, &s->log_seconds, err, errsz)) ||
        (rc = get_seconds(cfg, "trainer.flush_seconds", 2, &s->flush_seconds, err, errsz)) ||
        (rc = get_seconds(cfg, "trainer.lease_ttl_s", 60, &s->lease_ttl, err, errsz)) ||
        (rc = get_seconds(cfg, "trainer.lease_wait_s", 120, &s->lease_wait, err, errsz)))
        goto fail;
    if (s->lease_ttl < 1 || s->lease_ttl > 86400) {
        rc = kn_seterr(err, errsz, KN_EINVAL, "trainer.lease_ttl_s: expected 1..86400 seconds");
        goto fail;
    }
#undef KEY
    return KN_OK;
fail:
    trn_settings_free(s);
    return rc;
}

int trn_parse_augment(const char *aug, int *hflip, int *crop)
{
    *hflip = *crop = 0;
    if (!aug || !*aug || strcmp(aug, "none") == 0) return 0;
    char buf[128];
    snprintf(buf, sizeof(buf), "%s", aug);
    for (char *save = NULL, *t = strtok_r(buf, ", ", &save); t; t = strtok_r(NULL, ", ", &save)) {
        if (strcmp(t, "hflip") == 0) {
            *hflip = 1;
        } else if (strncmp(t, "crop:", 5) == 0) {
            char *end;
            long n = strtol(t + 5, &end, 10);
            if (*end || n < 1 || n > 64) return -1;
            *crop = (int)n;
        } else {
            return -1;
        }
    }
    return 0;
}

int trn_window_fixed(const char *spec, int32_t partition, int64_t *lo, int64_t *hi, int *nranges)
{
    /* "P:START-END,P:START-END": 0 and the range of `partition` (lo = hi = 0
     * when it has none); -1 when malformed */
    *lo = *hi = 0;
    *nranges = 0;
    const char *p = spec;
    while (*p) {
        char *end;
        long part = strtol(p, &end, 10);
        if (end == p || *end != ':' || part < 0) return -1;
        p = end + 1;
        long long a = strtoll(p, &end, 10);
        if (end == p || *end != '-' || a < 0) return -1;
        p = end + 1;
        long long bb = strtoll(p, &end, 10);
        if (end == p || bb < a) return -1;
        p = end;
        if (part == partition) {
            *lo = a;
            *hi = bb;
        }
        (*nranges)++;
        while (*p == ' ') p++;
        if (*p == ',') p++;
        else if (*p) return -1;
        while (*p == ' ') p++;
    }
    return *nranges > 0 ? 0 : -1;
}

void trn_settings_free(trn_settings *s)
{
    if (!s) return;
    json_decref(s->spec);
    json_decref(s->optim);
    s->spec = s->optim = NULL;
}
