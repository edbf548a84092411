/* checkpoint.c: one checkpoint = safetensors buffer (weights + optimizer
 * state + __metadata__) → a new registry version with full lineage → its
 * artifact → a checkpoint.created event. The idempotency key is derived from
 * what the version contains (model, parent, step, end positions), so a
 * retried call, or the same checkpoint redone after a crash, never makes two
 * versions. Limit: the artifact is staged as a file in work_dir (the
 * registry client streams files). */
#include "trainer.h"

#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "core/kn.h"
#include "core/log.h"
#include "core/sha256.h"
#include "core/shutdown.h"

#ifndef KILN_BUILD_ID
#define KILN_BUILD_ID "unknown"
#endif

void trn_iso8601(char out[32])
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    struct tm tm;
    gmtime_r(&tv.tv_sec, &tm);
    char base[24];
    strftime(base, sizeof(base), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out, 32, "%s.%03dZ", base, (int)(tv.tv_usec / 1000));
}

static const char *nonempty(const char *a, const char *b)
{
    if (a && a[0]) return a;
    if (b && b[0]) return b;
    return NULL;
}

/* The full lineage of the version about to be created (new reference). */
static json_t *lineage_json(const trn_ckpt_ctx *ctx, int64_t range_examples)
{
    const trn_settings *s = ctx->s;
    const trn_batcher *b = ctx->batcher;
    char host[128] = "";
    gethostname(host, sizeof(host) - 1);
    json_t *parent = json_null();
    if (ctx->parent_version > 0)
        parent = json_pack("{s:s, s:i, s:s}", "model", ctx->parent_model, "version",
                           ctx->parent_version, "relation", ctx->parent_relation);
    const kn_optim *o = kn_model_optim(ctx->model);
    json_t *optim = o ? kn_optim_config_to_json(&o->cfg) : json_incref(s->optim);
    const char *tok = nonempty(b->tokenizer_hash, s->tokenizer_hash);
    const char *recipe = nonempty(b->recipe, s->recipe);
    json_error_t je;
    json_t *out = json_pack_ex(
        &je, 0,
        "{s:s, s:i, s:s, s:s, s:s, s:o, s:o, s:I, s:I, s:I, s:I, s:o,"
        " s:{s:s?, s:s?}, s:O, s:o, s:i, s:I, s:b, s:{s:s, s:s, s:s, s:s}, s:o?}",
        "kind", "kiln.trainer.checkpoint", "schema", 2, "model", s->model, "dataset", s->dataset,
        "topic", s->topic, "partitions", trn_batcher_ranges_json(b), "skipped_shards",
        json_deep_copy(b->skipped), "examples", (json_int_t)range_examples, "examples_total",
        (json_int_t)ctx->examples_total, "tokens_total", (json_int_t)ctx->tokens_total, "step",
        (json_int_t)ctx->step, "parent", parent, "preprocess", "recipe_sha256", recipe,
        "tokenizer_sha256", tok, "spec", kn_model_spec(ctx->model), "optim", optim, "batch",
        s->batch, "seed", (json_int_t)s->seed, "shuffle", s->shuffle, "trainer", "build",
        KILN_BUILD_ID, "version", KN_VERSION, "backend", ctx->backend_name, "host", host, "loss",
        ctx->loss_n > 0 ? json_real(ctx->loss_sum / (double)ctx->loss_n) : NULL);
    if (!out) {
        kn_log_error("lineage: %s", je.text);
        return NULL;
    }
    /* schema 2: "mode"; in epochs mode the cycle, each epoch's exact part
     * and the cursor (schema 1 readers see the same keys as before) */
    json_object_set_new(out, "mode", json_string(b->win.active ? "epochs" : "stream"));
    if (b->win.active) {
        json_object_set_new(out, "cycle", trn_window_cycle_json(b, s));
        json_object_set_new(out, "epochs", trn_window_epochs_json(b));
        json_object_set_new(out, "cursor", trn_window_cursor_json(b));
        json_object_set_new(out, "augment",
                            json_pack("{s:b, s:i}", "hflip", b->aug_hflip, "crop", b->aug_crop));
    }
    return out;
}

/* Idempotency key: a digest of what identifies this checkpoint. */
static void idempotency_key(const trn_ckpt_ctx *ctx, char out[80])
{
    json_t *id = json_pack("{s:s, s:s, s:i, s:I, s:o}", "model", ctx->s->model, "parent_model",
                           ctx->parent_model, "parent", ctx->parent_version, "step",
                           (json_int_t)ctx->step, "ranges", trn_batcher_ranges_json(ctx->batcher));
    if (ctx->batcher->win.active)
        json_object_set_new(id, "cursor", trn_window_cursor_json(ctx->batcher));
    char *txt = json_dumps(id, JSON_COMPACT | JSON_SORT_KEYS);
    char hex[KN_SHA256_HEX_LEN];
    kn_sha256_hex(txt ? txt : "", txt ? strlen(txt) : 0, hex);
    snprintf(out, 80, "trainer-%.48s", hex);
    free(txt);
    json_decref(id);
}

typedef struct {
    volatile int done;
    volatile rd_kafka_resp_err_t err;
} delivery;

/* msg_opaque is the delivery record of publish_event (or NULL). */
void trn_events_dr(void *opaque, void *msg_opaque, rd_kafka_resp_err_t err, int32_t partition,
                   int64_t offset)
{
    (void)opaque;
    (void)partition;
    (void)offset;
    delivery *d = msg_opaque;
    if (!d) return;
    d->err = err;
    __atomic_store_n(&d->done, 1, __ATOMIC_RELEASE);
}

static int publish_event(trn_ckpt_ctx *ctx, int version, const char *sha, char *err, size_t errsz)
{
    char ts[32];
    trn_iso8601(ts);
    json_t *ev = json_pack("{s:s, s:s, s:i, s:s, s:s, s:I, s:I, s:s}", "type", "checkpoint.created",
                           "model", ctx->s->model, "version", version, "dataset", ctx->s->dataset,
                           "artifact_sha256", sha, "step", (json_int_t)ctx->step, "examples",
                           (json_int_t)ctx->examples_total, "ts", ts);
    char *txt = json_dumps(ev, JSON_COMPACT);
    json_decref(ev);
    if (!txt) return kn_seterr(err, errsz, KN_ENOMEM, "event: out of memory");
    delivery d = {0, RD_KAFKA_RESP_ERR_NO_ERROR};
    kn_kafka_header h[1] = {{"type", "checkpoint.created", strlen("checkpoint.created")}};
    int rc = kn_kafka_produce(ctx->events, ctx->s->events_topic, -1, ctx->s->model,
                              strlen(ctx->s->model), txt, strlen(txt), h, 1, &d);
    free(txt);
    if (rc != KN_OK) return kn_seterr(err, errsz, rc, "event: produce failed");
    /* Bounded wait for the delivery report (the producer retries inside). */
    for (int i = 0; i < 300 && !__atomic_load_n(&d.done, __ATOMIC_ACQUIRE); i++)
        kn_kafka_producer_flush(ctx->events, 100);
    if (!__atomic_load_n(&d.done, __ATOMIC_ACQUIRE)) {
        /* d lives on this stack: do not return while the report can still
         * arrive. Flush until the message is reported, however long. */
        while (!__atomic_load_n(&d.done, __ATOMIC_ACQUIRE))
            kn_kafka_producer_flush(ctx->events, 1000);
    }
    if (d.err != RD_KAFKA_RESP_ERR_NO_ERROR)
        return kn_seterr(err, errsz, KN_EKAFKA, "event not delivered: %s", rd_kafka_err2str(d.err));
    return KN_OK;
}

/* Marks a version whose event was delivered, so a restarted trainer knows
 * whether to publish it again. Failure only costs a duplicate event later. */
static void tag_published(trn_ckpt_ctx *ctx, int version)
{
    char path[512], e[256];
    snprintf(path, sizeof(path), "/v1/models/%s/versions/%d/tags", ctx->s->model, version);
    json_t *body = json_pack("{s:{s:s}}", "tags", "kiln.event", "published");
    if (kn_regclient_call(ctx->reg, "POST", path, body, NULL, NULL, e, sizeof(e)) != KN_OK)
        kn_log_warn("could not tag version %d as published: %s", version, e);
    json_decref(body);
}

int trn_publish_checkpoint_event(trn_ckpt_ctx *ctx, int version, const char *sha, char *err,
                                 size_t errsz)
{
    int rc = publish_event(ctx, version, sha, err, errsz);
    if (rc == KN_OK) tag_published(ctx, version);
    return rc;
}

/* Calls fn until it succeeds, a non-retriable error, or `tries` attempts.
 * Registry outages during a checkpoint are waited out with backoff. */
#define RETRY(rc, tries, call)                                                                     \
    do {                                                                                           \
        for (int try_ = 0;; try_++) {                                                              \
            (rc) = (call);                                                                         \
            if ((rc) == KN_OK || try_ + 1 >= (tries) ||                                            \
                ((rc) != KN_EHTTP && (rc) != KN_EIO && (rc) != KN_ETIMEDOUT))                      \
                break;                                                                             \
            kn_log_warn("registry: %s; retrying", kn_strerror(rc));                                \
            usleep((useconds_t)(200000u << (try_ < 5 ? try_ : 5)));                                \
        }                                                                                          \
    } while (0)

/* Test-only crash points (tests/integration/test_trainer_exactly_once.c):
 * KILN_TRAINER_FAULT=after_version or after_upload kills the process with
 * SIGKILL at that point of a checkpoint, as a crash there would. */
static void fault_point(const char *where)
{
    const char *f = getenv("KILN_TRAINER_FAULT");
    if (f && strcmp(f, where) == 0) {
        kn_log_warn("KILN_TRAINER_FAULT=%s: killing the process here", where);
        raise(SIGKILL);
    }
}

int trn_checkpoint_bytes(trn_ckpt_ctx *ctx, json_t **lineage_out, unsigned char **buf_out,
                         size_t *len_out, char sha[KN_SHA256_HEX_LEN], char *err, size_t errsz)
{
    int rc;
    unsigned char *buf = NULL;
    size_t len = 0;
    json_t *lineage = NULL, *extra = NULL;
    char e[512];
    int64_t range_examples = trn_batcher_range_examples(ctx->batcher);
    *lineage_out = NULL;
    *buf_out = NULL;
    *len_out = 0;

    lineage = lineage_json(ctx, range_examples);
    if (!lineage) return kn_seterr(err, errsz, KN_ENOMEM, "checkpoint: building the lineage failed");
    /* Metadata: strings only (safetensors); a lineage summary, not all of it. */
    char *summary_txt = NULL;
    {
        json_t *summary =
            json_pack("{s:s, s:s, s:O, s:I, s:I, s:O}", "dataset", ctx->s->dataset, "topic",
                      ctx->s->topic, "partitions", json_object_get(lineage, "partitions"), "step",
                      (json_int_t)ctx->step, "examples_total", (json_int_t)ctx->examples_total,
                      "parent", json_object_get(lineage, "parent"));
        if (json_object_get(lineage, "cursor"))
            json_object_set(summary, "cursor", json_object_get(lineage, "cursor"));
        summary_txt = json_dumps(summary, JSON_COMPACT);
        json_decref(summary);
    }
    extra = json_pack("{s:s, s:s, s:s, s:s}", "kiln.model", ctx->s->model, "kiln.dataset",
                      ctx->s->dataset, "kiln.lineage", summary_txt ? summary_txt : "{}",
                      "kiln.build", KILN_BUILD_ID);
    free(summary_txt);
    const char *tok = json_string_value(
        json_object_get(json_object_get(lineage, "preprocess"), "tokenizer_sha256"));
    if (tok) json_object_set_new(extra, "kiln.tokenizer_sha256", json_string(tok));
    const char *rec =
        json_string_value(json_object_get(json_object_get(lineage, "preprocess"), "recipe_sha256"));
    if (rec) json_object_set_new(extra, "kiln.recipe_sha256", json_string(rec));
    rc = kn_model_save_buffer(ctx->model, extra, &buf, &len, e, sizeof(e));
    json_decref(extra);
    if (rc != KN_OK) {
        json_decref(lineage);
        return kn_seterr(err, errsz, rc, "checkpoint: save: %s", e);
    }
    kn_sha256_hex(buf, len, sha);
    *lineage_out = lineage;
    *buf_out = buf;
    *len_out = len;
    return KN_OK;
}

int trn_checkpoint(trn_ckpt_ctx *ctx, char *err, size_t errsz)
{
    int rc;
    unsigned char *buf = NULL;
    size_t len = 0;
    json_t *lineage = NULL, *tags = NULL, *created = NULL;
    char path[700] = "", key[80], sha[KN_SHA256_HEX_LEN], e[512];
    double t0 = trn_now();
    int version = 0;
    int64_t range_examples = trn_batcher_range_examples(ctx->batcher);

    if ((rc = trn_checkpoint_bytes(ctx, &lineage, &buf, &len, sha, err, errsz)) != KN_OK) goto out;
    if (ctx->files) { /* no registry: the version is a file (source_files.c) */
        if ((rc = trn_files_checkpoint(ctx->files, ctx, buf, len, sha, lineage, &version, e,
                                       sizeof(e))) != KN_OK) {
            kn_seterr(err, errsz, rc, "checkpoint: %s", e);
            goto out;
        }
        goto created;
    }
    snprintf(path, sizeof(path), "%s/kiln-trainer-%s-%d.safetensors", ctx->s->work_dir,
             ctx->s->model, (int)getpid());
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(buf, 1, len, f) != len || fclose(f) != 0) {
        if (f) fclose(f);
        rc = kn_seterr(err, errsz, KN_EIO, "checkpoint: cannot write %s", path);
        goto out;
    }

    idempotency_key(ctx, key);
    tags = json_pack("{s:s, s:s}", "kiln.trainer.step", "", "kiln.dataset", ctx->s->dataset);
    char stepbuf[32];
    snprintf(stepbuf, sizeof(stepbuf), "%" PRId64, ctx->step);
    json_object_set_new(tags, "kiln.trainer.step", json_string(stepbuf));
    RETRY(rc, 8,
          kn_regclient_create_version(ctx->reg, ctx->s->model, key, lineage, tags, &version,
                                      &created, e, sizeof(e)));
    if (rc != KN_OK) {
        kn_seterr(err, errsz, rc, "checkpoint: creating the version: %s", e);
        goto out;
    }
    fault_point("after_version");
    /* A replayed key may find the artifact already there (crash after upload). */
    json_t *art = json_object_get(created, "artifact");
    const char *have = json_string_value(json_object_get(art, "sha256"));
    char up_sha[KN_SHA256_HEX_LEN] = "";
    if (have && strcmp(have, sha) != 0) {
        kn_log_warn("version %d (replayed) already holds artifact %s; keeping it", version, have);
        snprintf(sha, sizeof(sha), "%s", have);
    } else if (!have) {
        RETRY(rc, 8,
              kn_regclient_upload_artifact(ctx->reg, ctx->s->model, version, path, up_sha, e,
                                           sizeof(e)));
        if (rc != KN_OK) {
            kn_seterr(err, errsz, rc, "checkpoint: uploading the artifact of version %d: %s",
                      version, e);
            goto out;
        }
    }
    fault_point("after_upload");
    if ((rc = trn_publish_checkpoint_event(ctx, version, sha, e, sizeof(e))) != KN_OK)
        /* The version is complete; the event will be published again by the
         * next start (the version lacks the kiln.event tag). Not fatal. */
        kn_log_error("checkpoint.created for version %d: %s", version, e);

created:
    kn_log_fields(KN_LOG_INFO,
                  json_pack("{s:i, s:I, s:I, s:I, s:s, s:I, s:f}", "version", version, "step",
                            (json_int_t)ctx->step, "examples", (json_int_t)range_examples,
                            "examples_total", (json_int_t)ctx->examples_total, "sha256", sha,
                            "bytes", (json_int_t)len, "seconds", trn_now() - t0),
                  "checkpoint created");
    ctx->last_version = version;
    snprintf(ctx->last_sha, sizeof(ctx->last_sha), "%s", sha);
    ctx->parent_version = version;
    snprintf(ctx->parent_model, sizeof(ctx->parent_model), "%s", ctx->s->model);
    ctx->parent_relation = "resume";
    ctx->steps_at_last_ckpt = ctx->step;
    ctx->loss_sum = 0;
    ctx->loss_n = 0;
    trn_batcher_new_range(ctx->batcher);
    if (ctx->batcher->win.active) trn_window_new_range(ctx->batcher);
    rc = KN_OK;
out:
    if (path[0]) unlink(path);
    free(buf);
    json_decref(lineage);
    json_decref(tags);
    json_decref(created);
    return rc;
}
