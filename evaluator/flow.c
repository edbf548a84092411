/* flow.c: what the evaluator does with one checkpoint.created event, against
 * the registry (the source of truth) and Kafka. Idempotent by construction:
 *  1. A version whose status is promoted, rejected or archived was decided
 *     before: nothing to do.
 *  2. Metrics are recorded with dataset = the eval set's label
 *     ("<dataset>@g<generation>:<sha16>"); a version that already has metrics
 *     under that label is not scored again. Tags (eval_set, confusion_matrix,
 *     sample.N) are written before the metrics, and the status becomes
 *     `evaluated` after them, so "metrics present" implies "all recorded".
 *  3. The production alias is read, the policy decides, and the alias moves by
 *     compare-and-set on the version read; on 409 the loop starts again at 1
 *     (re-read, re-decide). A rejection is a state change the registry refuses
 *     twice (409 invalid_state), so at most one promotion or rejection per
 *     version; the version.promoted / version.rejected event is published
 *     by the call that made the change.
 *  5. The outbox: the registry's event log is the source of truth. Every
 *     announcement carries the id of the registry event it announces
 *     (`event_id`, header `event-id`); once the broker acknowledged it, the
 *     id is marked in the state topic ("announced/<id>"). A version found
 *     decided in 1 whose decision is not marked (a crash between the registry
 *     change and the publish; a publish the broker never acknowledged, which
 *     keeps the event held) is announced from the registry's record. So
 *     each decision reaches <prefix>.events at least once; a crash between
 *     the acknowledgement and the mark can repeat it, with the same
 *     event_id, by which consumers de-duplicate.
 *  4. Production's figures are its metrics under the same label; when it has
 *     none (scored on an older generation, or promoted by hand) it is scored
 *     on this eval set first, and those metrics are recorded on it.
 * SIGTERM while scoring abandons the work before anything is recorded. */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "evaluator.h"
#include "core/kn.h"
#include "core/log.h"
#include "nn/safetensors.h"
#include "policy.h"
#include "core/shutdown.h"

#define EV_TAG_MAX        1024
#define EV_DOWNLOAD_TRIES 3

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static void count(kn_metric *m)
{
    if (m) kn_metrics_add(m, 1);
}

ev_errclass ev_classify(int rc, int http_status)
{
    if (rc == KN_OK) return EV_ERR_NONE;
    if (http_status == 409 || rc == KN_ECONFLICT) return EV_ERR_CONFLICT;
    /* 401: our token is unknown or revoked: nothing is wrong with the version, an
     * operator fixes the token; the events wait for it */
    if (http_status == 401 || http_status == 408 || http_status == 429 || http_status >= 500)
        return EV_ERR_TRANSIENT;
    if (http_status >= 400) return EV_ERR_PERMANENT;
    switch (rc) {  /* no HTTP answer: what failed on this side */
    case KN_EHTTP: /* connection refused, reset, timed out */
    case KN_ETIMEDOUT:
    case KN_EKAFKA:
    case KN_EIO:
    case KN_EDB:
    case KN_ERR:
        return EV_ERR_TRANSIENT;
    default: /* KN_EINVAL, KN_ECORRUPT, KN_ENOMEM (a checkpoint too big to load), ... */
        return EV_ERR_PERMANENT;
    }
}

static int transient(int rc)
{
    return ev_classify(rc, 0) == EV_ERR_TRANSIENT;
}

void ev_ctx_free(ev_ctx *ctx)
{
    for (size_t i = 0; i < ctx->ncache; i++) {
        ev_evalset_free(ctx->cache[i]);
        free(ctx->cache[i]);
    }
    free(ctx->cache);
    for (size_t i = 0; i < ctx->nbpe; i++) {
        kn_bpe_destroy(ctx->bpes[i]);
        free(ctx->bpe_names[i]);
    }
    free(ctx->bpes);
    free(ctx->bpe_names);
    ctx->cache = NULL;
    ctx->bpes = NULL;
    ctx->bpe_names = NULL;
    ctx->ncache = ctx->nbpe = 0;
}

/* --- policies from the config file --- */

static char *trim(char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    char *e = s + strlen(s);
    while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r' || e[-1] == '\n'))
        *--e = 0;
    return s;
}

int ev_policy_sections(const char *path, const kn_config *cfg, json_t **out, char *errbuf,
                       size_t errsz)
{
    *out = json_object();
    if (!*out) return kn_seterr(errbuf, errsz, KN_ENOMEM, "out of memory");
    if (!path) return KN_OK;
    FILE *f = fopen(path, "r");
    if (!f) return kn_seterr(errbuf, errsz, KN_EIO, "%s: %s", path, strerror(errno));
    char line[4096], model[256] = "";
    int lineno = 0, rc = KN_OK;
    while (fgets(line, sizeof(line), f)) {
        lineno++;
        char *s = trim(line);
        if (!*s || *s == '#' || *s == ';') continue;
        if (*s == '[') {
            char *end = strchr(s, ']');
            model[0] = '\0';
            if (end && strncmp(s + 1, "policy.", 7) == 0) {
                *end = '\0';
                snprintf(model, sizeof(model), "%s", s + 8);
            }
            continue;
        }
        char *eq = strchr(s, '=');
        if (!model[0] || !eq) continue;
        *eq = '\0';
        char *key = trim(s), full[512];
        snprintf(full, sizeof(full), "policy.%s.%s", model, key);
        const char *value = kn_config_get(cfg, full, trim(eq + 1));
        ev_policy scratch;
        ev_policy_init(&scratch);
        char why[256];
        rc = ev_policy_set(&scratch, key, value, why, sizeof(why));
        ev_policy_free(&scratch);
        if (rc != KN_OK) {
            kn_seterr(errbuf, errsz, rc, "%s:%d [policy.%s]: %s", path, lineno, model, why);
            break;
        }
        json_t *sec = json_object_get(*out, model);
        if (!sec) json_object_set_new(*out, model, sec = json_object());
        json_object_set_new(sec, key, json_string(value));
    }
    fclose(f);
    return rc;
}

/* [policy.default] then [policy.MODEL] (the model's keys win), then the
 * default rule for primary when neither has rules (policy.c, rule 7). */
static void build_policy(const ev_ctx *ctx, const char *model, const char *primary, ev_policy *p)
{
    ev_policy_init(p);
    const char *secs[2] = {"default", model};
    for (int i = 0; i < 2; i++) {
        const char *k;
        json_t *v;
        json_object_foreach(json_object_get(ctx->policies, secs[i]), k, v)
            ev_policy_set(p, k, json_string_value(v), NULL, 0); /* checked at start */
    }
    ev_policy_default(p, primary);
}

/* --- eval sets --- */

static ev_evalset *cached(ev_ctx *ctx, const char *dataset)
{
    for (size_t i = 0; i < ctx->ncache; i++)
        if (strcmp(ctx->cache[i]->id.dataset, dataset) == 0) return ctx->cache[i];
    return NULL;
}

/* Keeps es (1: now owned by ctx) unless that would exceed the cache budget
 * (0: the caller keeps it and frees it after use). */
static int cache_put(ev_ctx *ctx, ev_evalset *es)
{
    size_t total = es->bytes, slot = ctx->ncache;
    for (size_t i = 0; i < ctx->ncache; i++) {
        if (strcmp(ctx->cache[i]->id.dataset, es->id.dataset) == 0)
            slot = i;
        else
            total += ctx->cache[i]->bytes;
    }
    if (total > ctx->cache_bytes) return 0;
    if (slot < ctx->ncache) {
        ev_evalset_free(ctx->cache[slot]);
        free(ctx->cache[slot]);
        ctx->cache[slot] = es;
        return 1;
    }
    ev_evalset **nc = realloc(ctx->cache, (ctx->ncache + 1) * sizeof(*nc));
    if (!nc) return 0;
    ctx->cache = nc;
    nc[ctx->ncache++] = es;
    return 1;
}

/* The stored eval set of a dataset cannot be used any more: promotion of its
 * models stops here until an operator re-freezes it (kiln-evalset refreeze),
 * which is recorded in the registry's event log. The evaluator never freezes
 * a new generation by itself: the new one would be whatever the eval topic
 * holds now, and anyone able to write that topic would choose the set that
 * decides promotions (issue 18, finding 2). The state is read again so the
 * next try sees an operator's re-freeze. */
static int evalset_stopped(ev_ctx *ctx, const char *dataset, int generation, const char *why,
                           char *errbuf, size_t errsz)
{
    char topic[300], err[256];
    count(ctx->m_evalset_stopped);
    snprintf(topic, sizeof(topic), "%s.state.evaluator", ctx->prefix);
    ev_state *fresh = ev_state_open(ctx->brokers, topic, err, sizeof(err));
    if (fresh) {
        ev_state_destroy(ctx->state);
        ctx->state = fresh;
    } else {
        kn_log_warn("re-reading %s: %s", topic, err);
    }
    return kn_seterr(errbuf, errsz, KN_ECORRUPT,
                     "eval set %s generation %d can no longer be used (%s): promotion of models "
                     "on %s is stopped until an operator re-freezes it: kiln-evalset refreeze %s "
                     "--model MODEL --reason TEXT",
                     dataset, generation, why, dataset, dataset);
}

/* The frozen eval set of dataset, freezing generation 1 on first use. On
 * success *out is either cached (owned by ctx) or *owned (caller frees). */
static int get_evalset(ev_ctx *ctx, const char *dataset, ev_evalset **out, ev_evalset **owned,
                       char *errbuf, size_t errsz)
{
    char key[300], topic[300], why[512];
    snprintf(key, sizeof(key), "evalset/%s", dataset);
    snprintf(topic, sizeof(topic), "%s.eval.%s", ctx->prefix, dataset);
    *owned = NULL;
    json_t *stored = ev_state_get(ctx->state, key);
    ev_evalset_id want;
    int rc;
    ev_evalset *es = calloc(1, sizeof(*es));
    if (!es) return kn_seterr(errbuf, errsz, KN_ENOMEM, "out of memory");
    if (stored) {
        if ((rc = ev_evalset_id_parse(stored, &want, why, sizeof(why))) != KN_OK) {
            free(es);
            kn_log_error("%s: %s", key, why);
            return evalset_stopped(ctx, dataset, 0, why, errbuf, errsz);
        }
        ev_evalset *c = cached(ctx, dataset);
        if (c && c->id.generation == want.generation && strcmp(c->id.sha256, want.sha256) == 0) {
            ev_evalset_id_free(&want);
            free(es);
            *out = c;
            return KN_OK;
        }
        rc = ev_evalset_read(ctx->brokers, &want, es, why, sizeof(why));
        int generation = want.generation;
        ev_evalset_id_free(&want);
        if (rc == KN_OK) goto have;
        free(es);
        if (rc != KN_ECORRUPT) return kn_seterr(errbuf, errsz, rc, "%s", why);
        kn_log_error("eval set %s generation %d: %s; promotion stopped until an operator "
                     "re-freezes it",
                     dataset, generation, why);
        return evalset_stopped(ctx, dataset, generation, why, errbuf, errsz);
    }
    if ((rc = ev_evalset_freeze(ctx->brokers, topic, dataset, 1, ctx->min_eval_examples, es, errbuf,
                                errsz)) != KN_OK) {
        free(es);
        return rc;
    }
    json_t *j = ev_evalset_id_json(&es->id);
    rc = j ? ev_state_put(ctx->state, key, j, errbuf, errsz) : KN_ENOMEM;
    json_decref(j);
    if (rc != KN_OK) {
        ev_evalset_free(es);
        free(es);
        return rc;
    }
    kn_log_fields(KN_LOG_INFO,
                  json_pack("{s:s,s:s,s:i,s:I,s:I,s:s}", "dataset", dataset, "topic", topic,
                            "generation", 1, "examples", (json_int_t)es->id.examples, "shards",
                            (json_int_t)es->id.shards, "sha256", es->id.sha256),
                  "eval set frozen");
have:
    *out = es;
    if (!cache_put(ctx, es)) *owned = es; /* over the budget: read again next time */
    return KN_OK;
}

/* --- tokenizers --- */

static const kn_bpe *tokenizer_for(ev_ctx *ctx, const char *dataset)
{
    for (size_t i = 0; i < ctx->nbpe; i++)
        if (strcmp(ctx->bpe_names[i], dataset) == 0) return ctx->bpes[i];
    char k[300], err[256];
    snprintf(k, sizeof(k), "dataset.%s.tokenizer", dataset);
    const char *path = kn_config_get(ctx->cfg, k, NULL);
    snprintf(k, sizeof(k), "dataset.%s.pattern", dataset);
    const char *pat = kn_config_get(ctx->cfg, k, "r50k");
    kn_bpe *b = NULL;
    if (path && path[0]) {
        b = kn_bpe_load(path, strcmp(pat, "cl100k") == 0 ? KN_BPE_CL100K : KN_BPE_R50K, err,
                        sizeof(err));
        if (!b) kn_log_warn("dataset %s: tokenizer %s: %s (no samples)", dataset, path, err);
    }
    kn_bpe **nb = realloc(ctx->bpes, (ctx->nbpe + 1) * sizeof(*nb));
    if (!nb) {
        kn_bpe_destroy(b);
        return NULL;
    }
    ctx->bpes = nb;
    char **nn = realloc(ctx->bpe_names, (ctx->nbpe + 1) * sizeof(*nn));
    if (!nn) {
        kn_bpe_destroy(b);
        return NULL;
    }
    ctx->bpe_names = nn;
    nn[ctx->nbpe] = strdup(dataset);
    nb[ctx->nbpe++] = b; /* NULL is remembered too: warned once */
    return b;
}

/* --- registry helpers --- */

/* Latest value per name among the version's metrics recorded under label;
 * *out is a new object (empty when none). */
static int metrics_under(ev_ctx *ctx, const char *model, int version, const char *label,
                         json_t **out, char *errbuf, size_t errsz)
{
    char path[600];
    json_t *res = NULL;
    *out = NULL;
    /* model names are [A-Za-z0-9._-] (a registry rule): no escaping needed */
    snprintf(path, sizeof(path), "/v1/models/%s/versions/%d/metrics", model, version);
    int rc = kn_regclient_call(ctx->reg, "GET", path, NULL, NULL, &res, errbuf, errsz);
    if (rc != KN_OK) return rc;
    *out = json_object();
    size_t i;
    json_t *m;
    json_array_foreach(json_object_get(res, "metrics"), i, m)
    {
        const char *ds = json_string_value(json_object_get(m, "dataset"));
        const char *name = json_string_value(json_object_get(m, "name"));
        json_t *v = json_object_get(m, "value");
        if (ds && name && json_is_number(v) && strcmp(ds, label) == 0)
            json_object_set(*out, name, v); /* oldest first: the last one wins */
    }
    json_decref(res);
    return KN_OK;
}

static int set_tags(ev_ctx *ctx, const char *model, int version, json_t *tags, char *errbuf,
                    size_t errsz)
{
    if (json_object_size(tags) == 0) return KN_OK;
    char path[600];
    snprintf(path, sizeof(path), "/v1/models/%s/versions/%d/tags", model, version);
    json_t *body = json_pack("{s:O}", "tags", tags);
    int rc = kn_regclient_call(ctx->reg, "POST", path, body, NULL, NULL, errbuf, errsz);
    json_decref(body);
    return rc;
}

/* Cuts s to at most max bytes on a UTF-8 boundary. */
static json_t *tag_text(const char *s, size_t max)
{
    size_t n = strlen(s);
    if (n > max) {
        n = max;
        while (n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80)
            n--;
    }
    return json_stringn(s, n);
}

/* Records a score under label: tags first, then metrics (rule 2). */
static int record_score(ev_ctx *ctx, const char *model, int version, const ev_evalset_id *id,
                        const char *label, const ev_score *sc, json_int_t step, char *errbuf,
                        size_t errsz)
{
    json_t *tags = json_object(), *list = json_array();
    int rc = KN_ENOMEM;
    if (!tags || !list) goto out;
    json_t *brief = ev_evalset_id_brief(id);
    json_object_set_new(brief, "label", json_string(label));
    char *t = json_dumps(brief, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(brief);
    if (t && strlen(t) <= EV_TAG_MAX) json_object_set_new(tags, "eval_set", json_string(t));
    free(t);
    if (sc->confusion) {
        t = json_dumps(sc->confusion, JSON_COMPACT);
        if (t && strlen(t) <= EV_TAG_MAX)
            json_object_set_new(tags, "confusion_matrix", json_string(t));
        free(t);
    }
    size_t i;
    json_t *s;
    json_array_foreach(sc->samples, i, s)
    {
        char k[32];
        snprintf(k, sizeof(k), "sample.%zu", i);
        json_object_set_new(tags, k,
                            tag_text(json_string_value(json_object_get(s, "text")), EV_TAG_MAX));
    }
    if ((rc = set_tags(ctx, model, version, tags, errbuf, errsz)) != KN_OK) goto out;
    const char *name;
    json_t *v;
    json_object_foreach(sc->metrics, name, v)
        json_array_append_new(list, json_pack("{s:s,s:O,s:s,s:I}", "name", name, "value", v,
                                              "dataset", label, "step", step));
    rc = kn_regclient_record_metrics(ctx->reg, model, version, list, errbuf, errsz);
out:
    json_decref(tags);
    json_decref(list);
    return rc;
}

/* Downloads, loads and scores one version. KN_OK with *sc filled;
 * EV_ABANDONED on shutdown; other codes with errbuf. */
static int score_version(ev_ctx *ctx, const char *model, int version, const char *dataset,
                         const ev_evalset *es, ev_score *sc, char *errbuf, size_t errsz)
{
    char path[1024], sha[KN_SHA256_HEX_LEN], err[512];
    unsigned char *buf = NULL;
    size_t len = 0;
    kn_model *m = NULL;
    kn_safetensors_file f = {0};
    json_t *spec = NULL;
    int rc;
    memset(sc, 0, sizeof(*sc));
    snprintf(path, sizeof(path), "%s/kiln-evaluator-%d-%s-v%d.safetensors", ctx->work_dir,
             (int)getpid(), model, version);
    for (int attempt = 1;; attempt++) {
        rc = kn_regclient_download_artifact(ctx->reg, model, version, path, sha, errbuf, errsz);
        if (rc != KN_ECORRUPT || attempt == EV_DOWNLOAD_TRIES) break;
        kn_log_warn("version %d: %s (attempt %d)", version, errbuf, attempt);
    }
    if (rc != KN_OK) goto out;
    rc = kn_safetensors_read_file(path, (size_t)16 << 30, &buf, &len, err, sizeof(err));
    unlink(path);
    if (rc != KN_OK) {
        kn_seterr(errbuf, errsz, rc, "reading the artifact: %s", err);
        goto out;
    }
    if ((rc = kn_safetensors_parse(buf, len, &f, err, sizeof(err))) != KN_OK) {
        kn_seterr(errbuf, errsz, KN_ECORRUPT, "the artifact is not a safetensors checkpoint: %s",
                  err);
        rc = KN_ECORRUPT;
        goto out;
    }
    const char *spec_txt = json_string_value(json_object_get(f.metadata, "kiln.spec"));
    spec = spec_txt ? json_loads(spec_txt, 0, NULL) : NULL;
    if (!spec) {
        rc = kn_seterr(errbuf, errsz, KN_ECORRUPT, "the checkpoint has no kiln.spec metadata");
        goto out;
    }
    ev_score_options so = ctx->score;
    so.bpe = tokenizer_for(ctx, dataset);
    rc = kn_model_load_buffer(buf, len, ev_score_batch_for(spec, &so), ctx->backend, &m, NULL, err,
                              sizeof(err));
    if (rc != KN_OK) {
        kn_seterr(errbuf, errsz, rc == KN_ENOMEM ? KN_ENOMEM : KN_ECORRUPT,
                  "loading the checkpoint: %s", err);
        rc = rc == KN_ENOMEM ? KN_ENOMEM : KN_ECORRUPT;
        goto out;
    }
    free(buf); /* the model holds its own copy */
    buf = NULL;
    double t0 = now_s();
    rc = ev_score_model(m, es, &so, sc, errbuf, errsz);
    if (ctx->m_eval_seconds && rc == KN_OK) kn_metrics_observe(ctx->m_eval_seconds, now_s() - t0);
    if (rc == KN_OK)
        kn_log_fields(KN_LOG_INFO,
                      json_pack("{s:s,s:i,s:I,s:I,s:f,s:O}", "model", model, "version", version,
                                "examples", (json_int_t)sc->examples, "skipped",
                                (json_int_t)sc->skipped, "seconds", now_s() - t0, "metrics",
                                sc->metrics),
                      "scored");
out:
    kn_model_destroy(m);
    kn_safetensors_file_free(&f);
    json_decref(spec);
    free(buf);
    return rc;
}

/* --- announcing decisions --- */

void ev_publish_dr(void *opaque, void *msg_opaque, rd_kafka_resp_err_t err, int32_t partition,
                   int64_t offset)
{
    (void)opaque;
    (void)partition;
    (void)offset;
    int *status = msg_opaque;
    if (status)
        __atomic_store_n(status, err == RD_KAFKA_RESP_ERR_NO_ERROR ? 1 : -1, __ATOMIC_RELEASE);
}

/* Publishes ev (borrowed) on the events topic, keyed by model, and waits for
 * the broker's acknowledgement. */
static int publish(ev_ctx *ctx, const char *model, json_t *ev)
{
    char *txt = json_dumps(ev, JSON_COMPACT);
    if (!txt) return KN_ENOMEM;
    const char *type = json_string_value(json_object_get(ev, "type"));
    char id[24];
    snprintf(id, sizeof(id), "%" JSON_INTEGER_FORMAT,
             json_integer_value(json_object_get(ev, "event_id")));
    kn_kafka_header h[2] = {{"type", type, strlen(type)}, {"event-id", id, strlen(id)}};
    int rc = KN_EKAFKA;
    for (int attempt = 0; attempt < 3 && rc != KN_OK; attempt++) {
        int status = 0;
        if (kn_kafka_produce(ctx->producer, ctx->events_topic, -1, model, strlen(model), txt,
                             strlen(txt), h, 2, &status) != KN_OK)
            continue;
        /* status lives on this stack: wait for the report, however long */
        while (__atomic_load_n(&status, __ATOMIC_ACQUIRE) == 0)
            kn_kafka_producer_flush(ctx->producer, 1000);
        if (status == 1) rc = KN_OK;
    }
    free(txt);
    if (rc != KN_OK)
        kn_log_error("%s for %s: not acknowledged by Kafka (the registry holds the decision)", type,
                     model);
    return rc;
}

static json_t *decision_event(const char *type, const char *model, int version, const char *alias,
                              int previous, const char *reason, json_t *metrics, json_t *compared,
                              const ev_evalset_id *id, const char *label, json_t *samples)
{
    char ts[40];
    kn_log_timestamp(ts, sizeof(ts));
    json_t *es = ev_evalset_id_json(id);
    json_object_set_new(es, "label", json_string(label));
    json_t *ev = json_pack("{s:s,s:s,s:i,s:s,s:s,s:O,s:O,s:o,s:s}", "type", type, "model", model,
                           "version", version, "alias", alias, "reason", reason, "metrics", metrics,
                           "compared", compared, "eval_set", es, "ts", ts);
    if (!ev) return NULL;
    json_object_set_new(ev, "previous_version",
                        previous > 0 ? json_integer(previous) : json_null());
    if (samples && json_array_size(samples)) json_object_set(ev, "samples", samples);
    return ev;
}

/* --- the outbox (5. above) --- */

/* The last registry event of `kind` for model's version (new reference in
 * *rec); KN_ENOTFOUND when there is none. */
static int decision_record(ev_ctx *ctx, const char *model, int version, const char *kind,
                           json_t **rec, char *err, size_t errsz)
{
    *rec = NULL;
    long long since = 0;
    for (;;) {
        char path[600];
        json_t *out = NULL;
        snprintf(path, sizeof(path), "/v1/models/%s/events?kind=%s&since=%lld&limit=1000", model,
                 kind, since);
        int rc = kn_regclient_call(ctx->reg, "GET", path, NULL, NULL, &out, err, errsz);
        if (rc != KN_OK) {
            json_decref(*rec);
            *rec = NULL;
            return rc;
        }
        json_t *evs = json_object_get(out, "events"), *e;
        size_t i, n = json_array_size(evs);
        json_array_foreach(evs, i, e)
        {
            if (json_integer_value(json_object_get(e, "version")) != version) continue;
            json_decref(*rec);
            *rec = json_incref(e);
        }
        long long next = (long long)json_integer_value(json_object_get(out, "next_since"));
        json_decref(out);
        if (n < 1000 || next <= since) break;
        since = next;
    }
    if (!*rec)
        return kn_seterr(err, errsz, KN_ENOTFOUND, "no %s event for %s v%d in the registry", kind,
                         model, version);
    return KN_OK;
}

static int announced(ev_ctx *ctx, json_int_t id)
{
    char key[48];
    snprintf(key, sizeof(key), "announced/%" JSON_INTEGER_FORMAT, id);
    return ev_state_get(ctx->state, key) != NULL;
}

/* Publishes ev (borrowed; gets event_id = id) and marks id announced. */
static int announce_id(ev_ctx *ctx, const char *model, int version, json_int_t id, json_t *ev,
                       char *err, size_t errsz)
{
    const char *type = json_string_value(json_object_get(ev, "type"));
    json_object_set_new(ev, "event_id", json_integer(id));
    if (publish(ctx, model, ev) != KN_OK)
        return kn_seterr(err, errsz, KN_EKAFKA,
                         "%s of %s v%d (event %" JSON_INTEGER_FORMAT
                         ") not acknowledged by Kafka: held, announced from the registry on retry",
                         type, model, version, id);
    char key[48];
    snprintf(key, sizeof(key), "announced/%" JSON_INTEGER_FORMAT, id);
    json_t *mark = json_pack("{s:s,s:i,s:s}", "model", model, "version", version, "type", type);
    char e[512];
    if (ev_state_put(ctx->state, key, mark, e, sizeof(e)) != KN_OK)
        kn_log_warn("%s of %s v%d announced but not marked (%s): a restart may announce it again "
                    "with the same event_id",
                    type, model, version, e);
    json_decref(mark);
    return KN_OK;
}

/* Test-only fault hook (tests/integration/test_evaluator_outbox.c): with
 * KILN_EVALUATOR_TEST_CRASH=after_decision the process kills itself (-9)
 * right after the registry recorded a decision and before it is announced,
 * the window the outbox closes. */
static void test_crash_point(const char *point)
{
    const char *want = getenv("KILN_EVALUATOR_TEST_CRASH");
    if (!want || strcmp(want, point) != 0) return;
    kn_log_warn("test fault: kill -9 at %s", point);
    raise(SIGKILL);
}

/* Announces the decision the call just recorded in the registry. */
static int announce(ev_ctx *ctx, const char *model, int version, json_t *ev, char *err,
                    size_t errsz)
{
    test_crash_point("after_decision");
    const char *type = json_string_value(json_object_get(ev, "type"));
    json_t *rec = NULL;
    int rc = decision_record(ctx, model, version, type, &rec, err, errsz);
    if (rc != KN_OK) return rc;
    json_int_t id = json_integer_value(json_object_get(rec, "id"));
    json_decref(rec);
    return announce_id(ctx, model, version, id, ev, err, errsz);
}

/* A version found decided: announces its decision from the registry's record
 * unless the state says it was announced. KN_OK when nothing is left to do. */
static int announce_recorded(ev_ctx *ctx, const char *model, int version, const char *status,
                             char *err, size_t errsz)
{
    int promoted = strcmp(status, "promoted") == 0;
    if (!promoted && strcmp(status, "rejected") != 0) return KN_OK; /* archived */
    json_t *rec = NULL;
    int rc = decision_record(ctx, model, version,
                             promoted ? "version.promoted" : "version.rejected", &rec, err, errsz);
    if (rc == KN_ENOTFOUND) return KN_OK; /* decided before the log knew such events */
    if (rc != KN_OK) return rc;
    json_int_t id = json_integer_value(json_object_get(rec, "id"));
    if (announced(ctx, id)) {
        json_decref(rec);
        return KN_OK;
    }
    json_t *data = json_object_get(rec, "data"), *from = json_object_get(data, "from");
    const char *alias = json_string_value(json_object_get(data, "alias"));
    const char *reason = json_string_value(json_object_get(rec, "reason"));
    const char *actor = json_string_value(json_object_get(rec, "actor"));
    const char *at = json_string_value(json_object_get(rec, "at"));
    json_t *metrics = json_object_get(data, "metrics");
    /* the registry's record: no eval set or compared figures (those lived in
     * the lost message); "replayed" says so */
    json_t *ev =
        json_pack("{s:s,s:s,s:i,s:s,s:s,s:o,s:b,s:s,s:s}", "type",
                  promoted ? "version.promoted" : "version.rejected", "model", model, "version",
                  version, "alias", alias ? alias : ctx->alias, "reason", reason ? reason : "",
                  "metrics", json_is_object(metrics) ? json_deep_copy(metrics) : json_object(),
                  "replayed", 1, "actor", actor ? actor : "", "ts", at ? at : "");
    if (!ev) {
        json_decref(rec);
        return kn_seterr(err, errsz, KN_ENOMEM, "announcing %s v%d: out of memory", model, version);
    }
    json_object_set_new(ev, "previous_version",
                        json_is_integer(from) && json_integer_value(from) > 0 ? json_copy(from)
                                                                              : json_null());
    json_decref(rec);
    kn_log_info("%s version %d is %s: its decision (event %" JSON_INTEGER_FORMAT
                ") was not announced: announcing it from the registry",
                model, version, status, id);
    rc = announce_id(ctx, model, version, id, ev, err, errsz);
    json_decref(ev);
    return rc;
}

/* --- the relay: what operators do in the registry reaches <prefix>.events ---
 * A rollback (`kilnctl rollback`, POST .../rollback), an alias moved or
 * deleted by hand, a promotion by hand: the registry's event log has them,
 * and no evaluator decision announces them. Every second the relay reads the
 * log after its cursor (state "relay/cursor") and announces each event of
 * these kinds not marked announced, with its event_id, exactly as decisions
 * are (announce_id: marked once the broker acknowledged it). Decisions of
 * this evaluator are marked by the time the relay runs (same thread), so it
 * announces only what nobody did, or what a crash left unannounced. The
 * cursor moves only up to the registry's settled_id (events old enough that
 * no transaction still open can hold a lower id), so the last two minutes
 * are read again each time and skipped by their marks. On first start the
 * cursor begins at the log's end: older events are not announced. */
#define RELAY_KINDS "version.promoted,version.rejected,version.rolled_back,alias.moved,alias.deleted"

static json_t *relay_message(const json_t *e)
{
    const char *kind = json_string_value(json_object_get(e, "kind"));
    const char *model = json_string_value(json_object_get(e, "model"));
    json_t *data = json_object_get(e, "data"), *from = json_object_get(data, "from");
    json_t *metrics = json_object_get(data, "metrics");
    const char *alias = json_string_value(json_object_get(data, "alias"));
    const char *reason = json_string_value(json_object_get(e, "reason"));
    const char *actor = json_string_value(json_object_get(e, "actor"));
    const char *at = json_string_value(json_object_get(e, "at"));
    int decision = strcmp(kind, "version.promoted") == 0 || strcmp(kind, "version.rejected") == 0;
    json_t *ev = json_pack("{s:s,s:s,s:I,s:s?,s:s,s:o,s:b,s:s,s:s}", "type", kind, "model", model,
                           "version", json_integer_value(json_object_get(e, "version")), "alias",
                           alias, "reason", reason ? reason : "", "metrics",
                           json_is_object(metrics) ? json_deep_copy(metrics) : json_object(),
                           decision ? "replayed" : "relayed", 1, "actor", actor ? actor : "", "ts",
                           at ? at : "");
    if (ev)
        json_object_set_new(ev, "previous_version",
                            json_is_integer(from) && json_integer_value(from) > 0 ? json_copy(from)
                                                                                  : json_null());
    return ev;
}

int ev_relay(ev_ctx *ctx, char *err, size_t errsz)
{
    json_t *cur = json_object_get(ev_state_get(ctx->state, "relay/cursor"), "since");
    long long cursor = json_is_integer(cur) ? (long long)json_integer_value(cur) : -1;
    long long since = cursor < 0 ? 0 : cursor, settled = 0, last = 0, done = since;
    int first = cursor < 0, rc = KN_OK, announced_n = 0;
    for (;;) {
        char path[300];
        json_t *out = NULL;
        snprintf(path, sizeof(path), "/v1/events?since=%lld&limit=1000&kinds=%s",
                 first ? LLONG_MAX : since, RELAY_KINDS);
        rc = kn_regclient_call(ctx->reg, "GET", path, NULL, NULL, &out, err, errsz);
        if (rc != KN_OK) return rc;
        settled = (long long)json_integer_value(json_object_get(out, "settled_id"));
        last = (long long)json_integer_value(json_object_get(out, "last_id"));
        json_t *evs = json_object_get(out, "events"), *e;
        size_t i, n = json_array_size(evs);
        json_array_foreach(evs, i, e)
        {
            json_int_t id = json_integer_value(json_object_get(e, "id"));
            const char *model = json_string_value(json_object_get(e, "model"));
            if (model && !announced(ctx, id)) {
                json_t *msg = relay_message(e);
                int version = (int)json_integer_value(json_object_get(e, "version"));
                rc = msg ? announce_id(ctx, model, version, id, msg, err, errsz) : KN_ENOMEM;
                if (rc == KN_OK) {
                    announced_n++;
                    kn_log_info("relayed %s of %s v%d (event %" JSON_INTEGER_FORMAT ", by %s)",
                                json_string_value(json_object_get(msg, "type")), model, version,
                                id, json_string_value(json_object_get(msg, "actor")));
                }
                json_decref(msg);
                if (rc != KN_OK) break;
            }
            done = id;
        }
        long long next = (long long)json_integer_value(json_object_get(out, "next_since"));
        json_decref(out);
        if (rc != KN_OK || first || n < 1000 || next <= since) break;
        since = next;
    }
    /* the new cursor: what was read through, but never past settled */
    long long to = first ? last : (done < settled ? done : settled);
    if (rc == KN_OK && (first || to > cursor)) {
        if (first) kn_log_info("relay: starting at the registry's event %lld", to);
        json_t *v = json_pack("{s:I}", "since", (json_int_t)to);
        char e2[256];
        if (ev_state_put(ctx->state, "relay/cursor", v, e2, sizeof(e2)) != KN_OK)
            kn_log_warn("relay: cursor not stored (%s): events are read again", e2);
        json_decref(v);
    }
    (void)announced_n;
    return rc;
}

/* The registry's rejection snapshot takes numbers only (it is merged into
 * the version's metrics in the event log): the compared figures flattened as
 * "production_version", "<rule>.threshold", "<rule>.production",
 * "<rule>.change" and "<rule>.pass" (1/0). The full structure goes in the
 * Kafka event. New reference. */
static json_t *compared_snapshot(const json_t *compared)
{
    json_t *snap = json_object();
    json_t *pv = json_object_get(compared, "production_version");
    if (json_is_integer(pv)) json_object_set(snap, "production_version", pv);
    size_t i;
    json_t *r;
    json_array_foreach(json_object_get(compared, "rules"), i, r)
    {
        const char *rule = json_string_value(json_object_get(r, "rule"));
        const char *res = json_string_value(json_object_get(r, "result"));
        static const char *const fields[] = {"threshold", "production", "change"};
        char k[200];
        if (!rule) continue;
        for (size_t f = 0; f < KN_ARRAY_LEN(fields); f++) {
            json_t *v = json_object_get(r, fields[f]);
            snprintf(k, sizeof(k), "%s.%s", rule, fields[f]);
            if (json_is_number(v)) json_object_set(snap, k, v);
        }
        snprintf(k, sizeof(k), "%s.pass", rule);
        if (res && strcmp(res, "skipped") != 0)
            json_object_set_new(snap, k, json_integer(strcmp(res, "pass") == 0));
    }
    return snap;
}

/* --- the flow --- */

/* A registry call failed with a permanent error (400, 403, 404, 422, ...):
 * retrying cannot help, so the version is rejected with the reason (when the
 * registry lets us) and the event is done; the next event of the model is
 * not held up by this one. */
static ev_outcome give_up(ev_ctx *ctx, const char *model, int version, const ev_evalset *es,
                          const char *why)
{
    char reason[1400], err[1024];
    int status = kn_regclient_last_status(ctx->reg);
    snprintf(reason, sizeof(reason), "rejected: a permanent registry error (HTTP %d): %s", status,
             why);
    count(ctx->m_failures);
    int rc = kn_regclient_reject(ctx->reg, model, version, reason, NULL, err, sizeof(err));
    if (rc == KN_OK) {
        count(ctx->m_rejections);
        kn_log_warn("%s version %d %s", model, version, reason);
        if (es) {
            char label[256];
            ev_evalset_label(&es->id, label, sizeof(label));
            json_t *empty = json_object(), *cmp = json_object();
            json_t *ev = decision_event("version.rejected", model, version, ctx->alias, 0, reason,
                                        empty, cmp, &es->id, label, NULL);
            json_decref(empty);
            json_decref(cmp);
            rc = ev ? announce(ctx, model, version, ev, err, sizeof(err)) : KN_ENOMEM;
            json_decref(ev);
        } else {
            rc = announce_recorded(ctx, model, version, "rejected", err, sizeof(err));
        }
        if (rc != KN_OK) { /* held: the retry finds it rejected and announces it */
            kn_log_error("%s version %d: %s", model, version, err);
            return EV_RETRY;
        }
    } else {
        kn_log_error("%s version %d: %s; it cannot be rejected either (%s): event skipped", model,
                     version, why, err);
    }
    return EV_DONE;
}

static ev_outcome evaluate(ev_ctx *ctx, const char *model, int version, const char *dataset,
                           json_int_t step, char *errbuf, size_t errsz)
{
    ev_outcome res = EV_RETRY;
    json_t *doc = NULL, *cand = NULL, *base = NULL, *alias = NULL, *samples = NULL;
    ev_evalset *es = NULL, *owned = NULL;
    ev_score sc = {0};
    ev_decision d = {0};
    ev_policy pol = {0};
    char label[256], err[1024];
    const char *primary = NULL;
    int rc = KN_OK, reg_rc = KN_OK; /* reg_rc: a registry call failed (classified at out) */

    for (int round = 0; round < 8; round++) {
        /* 1. decided before? */
        json_decref(doc);
        doc = NULL;
        rc = kn_regclient_get_version(ctx->reg, model, version, &doc, err, sizeof(err));
        if (rc == KN_ENOTFOUND) {
            kn_log_warn("%s version %d: not in the registry (%s): event skipped", model, version,
                        err);
            res = EV_DONE;
            goto out;
        }
        if (rc != KN_OK) {
            reg_rc = kn_seterr(errbuf, errsz, rc, "reading %s v%d: %s", model, version, err);
            goto out;
        }
        const char *status = json_string_value(json_object_get(doc, "status"));
        if (!status || strcmp(status, "promoted") == 0 || strcmp(status, "rejected") == 0 ||
            strcmp(status, "archived") == 0) {
            kn_log_info("%s version %d is %s already: nothing to do", model, version,
                        status ? status : "?");
            /* 5. its decision may not have reached Kafka (a crash after the change) */
            if (status &&
                (rc = announce_recorded(ctx, model, version, status, errbuf, errsz)) != KN_OK)
                goto out;
            res = EV_DONE;
            goto out;
        }
        /* 2. the eval set and the candidate's metrics under its label */
        if (!es) {
            if ((rc = get_evalset(ctx, dataset, &es, &owned, err, sizeof(err))) != KN_OK) {
                kn_seterr(errbuf, errsz, rc, "eval set of %s: %s", dataset, err);
                goto out;
            }
            ev_evalset_label(&es->id, label, sizeof(label));
        }
        if (!cand) {
            if ((rc = metrics_under(ctx, model, version, label, &cand, err, sizeof(err))) !=
                KN_OK) {
                reg_rc = kn_seterr(errbuf, errsz, rc, "metrics of %s v%d: %s", model, version, err);
                goto out;
            }
            if (json_object_size(cand) == 0) {
                json_decref(cand);
                cand = NULL;
                rc = score_version(ctx, model, version, dataset, es, &sc, err, sizeof(err));
                if (rc == EV_ABANDONED) {
                    kn_log_info("%s version %d: shutdown: evaluation abandoned, nothing recorded",
                                model, version);
                    res = EV_STOP;
                    goto out;
                }
                if (rc != KN_OK && transient(rc)) {
                    count(ctx->m_failures);
                    kn_seterr(errbuf, errsz, rc, "scoring %s v%d: %s", model, version, err);
                    goto out;
                }
                if (rc != KN_OK) { /* the version itself is unusable: reject it */
                    char why[1400];
                    snprintf(why, sizeof(why), "rejected: cannot be evaluated: %s", err);
                    count(ctx->m_failures);
                    rc = kn_regclient_reject(ctx->reg, model, version, why, NULL, err, sizeof(err));
                    if (rc == KN_OK) {
                        count(ctx->m_rejections);
                        kn_log_warn("%s version %d %s", model, version, why);
                        json_t *empty = json_object(), *cmp = json_object();
                        json_t *ev = decision_event("version.rejected", model, version, ctx->alias,
                                                    0, why, empty, cmp, &es->id, label, NULL);
                        json_decref(empty);
                        json_decref(cmp);
                        rc = ev ? announce(ctx, model, version, ev, errbuf, errsz) : KN_ENOMEM;
                        json_decref(ev);
                        if (rc == KN_OK) res = EV_DONE;
                    } else if (rc == KN_ECONFLICT) {
                        continue; /* decided meanwhile: round 1 sees it */
                    } else {
                        reg_rc = kn_seterr(errbuf, errsz, rc, "rejecting %s v%d: %s", model,
                                           version, err);
                    }
                    goto out;
                }
                count(ctx->m_evaluations);
                rc = record_score(ctx, model, version, &es->id, label, &sc, step, err, sizeof(err));
                if (rc == KN_ECONFLICT) continue; /* archived meanwhile */
                if (rc != KN_OK) {
                    reg_rc = kn_seterr(errbuf, errsz, rc, "recording the metrics of %s v%d: %s",
                                       model, version, err);
                    goto out;
                }
                cand = json_deep_copy(sc.metrics);
                primary = sc.primary;
                samples = sc.samples ? json_incref(sc.samples) : NULL;
            } else {
                kn_log_info("%s version %d already has metrics on %s: not scored again", model,
                            version, label);
            }
        }
        if (!primary)
            primary = json_object_get(cand, "accuracy") ? "accuracy"
                      : json_object_get(cand, "loss")   ? "loss"
                                                        : "mse";
        if (strcmp(status, "registered") == 0) {
            char path[600];
            snprintf(path, sizeof(path), "/v1/models/%s/versions/%d/status", model, version);
            json_t *body = json_pack("{s:s,s:s}", "status", "evaluated", "reason", label);
            rc = kn_regclient_call(ctx->reg, "POST", path, body, NULL, NULL, err, sizeof(err));
            json_decref(body);
            if (rc == KN_ECONFLICT) continue;
            if (rc != KN_OK) {
                reg_rc = kn_seterr(errbuf, errsz, rc, "marking %s v%d evaluated: %s", model,
                                   version, err);
                goto out;
            }
        }
        /* 3. production and the decision */
        json_decref(alias);
        alias = NULL;
        int prod = 0;
        rc = kn_regclient_get_alias(ctx->reg, model, ctx->alias, &alias, err, sizeof(err));
        if (rc == KN_OK)
            prod = (int)json_integer_value(json_object_get(alias, "version"));
        else if (rc != KN_ENOTFOUND) {
            reg_rc =
                kn_seterr(errbuf, errsz, rc, "reading %s's %s alias: %s", model, ctx->alias, err);
            goto out;
        }
        if (prod == version) {
            kn_log_info("%s version %d is %s already", model, version, ctx->alias);
            res = EV_DONE;
            goto out;
        }
        json_decref(base);
        base = NULL;
        if (prod > 0) { /* 4. production's figures on the same eval set */
            if ((rc = metrics_under(ctx, model, prod, label, &base, err, sizeof(err))) != KN_OK) {
                reg_rc = kn_seterr(errbuf, errsz, rc, "metrics of %s v%d: %s", model, prod, err);
                goto out;
            }
            if (json_object_size(base) == 0) {
                ev_score psc;
                kn_log_info("%s: production v%d has no metrics on %s: scoring it", model, prod,
                            label);
                rc = score_version(ctx, model, prod, dataset, es, &psc, err, sizeof(err));
                if (rc == EV_ABANDONED) {
                    res = EV_STOP;
                    goto out;
                }
                if (rc == KN_OK) {
                    int r2 =
                        record_score(ctx, model, prod, &es->id, label, &psc, -1, err, sizeof(err));
                    if (r2 != KN_OK) kn_log_warn("recording production's metrics: %s", err);
                    json_decref(base);
                    base = json_deep_copy(psc.metrics);
                    ev_score_free(&psc);
                } else if (transient(rc)) {
                    kn_seterr(errbuf, errsz, rc, "scoring production %s v%d: %s", model, prod, err);
                    goto out;
                } else { /* decide without it: change rules then fail, naming it */
                    kn_log_warn("production %s v%d cannot be scored: %s", model, prod, err);
                }
            }
        }
        ev_policy_free(&pol);
        build_policy(ctx, model, primary, &pol);
        ev_decision_free(&d);
        if (ev_policy_decide(&pol, cand, prod, base, &d) != KN_OK) {
            kn_seterr(errbuf, errsz, KN_ENOMEM, "deciding: out of memory");
            goto out;
        }
        if (d.promote) {
            json_t *moved = NULL;
            rc = kn_regclient_set_alias(ctx->reg, model, ctx->alias, version, prod, d.reason,
                                        &moved, err, sizeof(err));
            int changed = rc == KN_OK && json_is_true(json_object_get(moved, "changed"));
            json_decref(moved);
            if (rc == KN_ECONFLICT) {
                kn_log_info("%s: %s moved meanwhile (%s): deciding again", model, ctx->alias, err);
                continue;
            }
            if (rc != KN_OK) {
                reg_rc = kn_seterr(errbuf, errsz, rc, "moving %s of %s to v%d: %s", ctx->alias,
                                   model, version, err);
                goto out;
            }
            if (changed) {
                count(ctx->m_promotions);
                kn_log_fields(KN_LOG_INFO,
                              json_pack("{s:s,s:i,s:i,s:s}", "model", model, "version", version,
                                        "previous_version", prod, "reason", d.reason),
                              "promoted");
                json_t *ev = decision_event("version.promoted", model, version, ctx->alias, prod,
                                            d.reason, cand, d.compared, &es->id, label, samples);
                rc = ev ? announce(ctx, model, version, ev, errbuf, errsz) : KN_ENOMEM;
                json_decref(ev);
                if (rc != KN_OK) goto out; /* held: the retry announces it from the registry */
            }
        } else {
            json_t *snap = compared_snapshot(d.compared);
            rc = kn_regclient_reject(ctx->reg, model, version, d.reason, snap, err, sizeof(err));
            json_decref(snap);
            if (rc == KN_ECONFLICT) continue; /* decided meanwhile: round 1 sees it */
            if (rc != KN_OK) {
                reg_rc = kn_seterr(errbuf, errsz, rc, "rejecting %s v%d: %s", model, version, err);
                goto out;
            }
            count(ctx->m_rejections);
            kn_log_fields(KN_LOG_INFO,
                          json_pack("{s:s,s:i,s:i,s:s}", "model", model, "version", version,
                                    "production_version", prod, "reason", d.reason),
                          "rejected");
            json_t *ev = decision_event("version.rejected", model, version, ctx->alias, prod,
                                        d.reason, cand, d.compared, &es->id, label, samples);
            rc = ev ? announce(ctx, model, version, ev, errbuf, errsz) : KN_ENOMEM;
            json_decref(ev);
            if (rc != KN_OK) goto out; /* held: the retry announces it from the registry */
        }
        res = EV_DONE;
        goto out;
    }
    kn_seterr(errbuf, errsz, KN_ECONFLICT, "%s v%d: the registry kept changing under us", model,
              version);
out:
    if (res == EV_RETRY && reg_rc != KN_OK &&
        ev_classify(reg_rc, kn_regclient_last_status(ctx->reg)) == EV_ERR_PERMANENT)
        res = give_up(ctx, model, version, es, errbuf);
    ev_policy_free(&pol);
    ev_decision_free(&d);
    ev_score_free(&sc);
    json_decref(doc);
    json_decref(cand);
    json_decref(base);
    json_decref(alias);
    json_decref(samples);
    if (owned) {
        ev_evalset_free(owned);
        free(owned);
    }
    return res;
}

ev_outcome ev_handle_event(ev_ctx *ctx, const void *value, size_t len, char *errbuf, size_t errsz)
{
    json_error_t je;
    json_t *ev = value ? json_loadb(value, len, 0, &je) : NULL;
    const char *type = json_string_value(json_object_get(ev, "type"));
    if (!ev || !type) {
        kn_log_warn("events: skipping a record that is not a JSON event (%s)",
                    ev ? "no \"type\"" : (value ? je.text : "empty"));
        json_decref(ev);
        return EV_DONE;
    }
    if (strcmp(type, "checkpoint.created") != 0) {
        json_decref(ev);
        return EV_DONE;
    }
    const char *model = NULL, *dataset = NULL;
    int version = 0;
    json_int_t step = -1;
    if (json_unpack_ex(ev, &je, 0, "{s:s,s:i,s:s,s?I}", "model", &model, "version", &version,
                       "dataset", &dataset, "step", &step) != 0 ||
        version < 1 || !model[0] || !dataset[0] || strchr(model, '/') || strchr(dataset, '/')) {
        kn_log_warn("events: skipping a malformed checkpoint.created (%s): it needs model, "
                    "version >= 1 and dataset",
                    je.text[0] ? je.text : "bad values");
        json_decref(ev);
        return EV_DONE;
    }
    ev_outcome o = evaluate(ctx, model, version, dataset, step, errbuf, errsz);
    json_decref(ev);
    return o;
}
