/* stream.c: transactions, rebalances, state changelogs and the DLQ for
 * kiln-preprocess (lifecycle in stream.h). Follows librdkafka's
 * examples/transactions.c: abort on abortable errors and rewind the consumer
 * to the committed offsets; commit on revoke. */
#include "stream.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/kn.h"
#include "core/suggest.h"
#include "core/log.h"
#include "core/shutdown.h"
#include "stream/record.h"
#include "core/sha256.h"

typedef struct {
    char topic[256];
    int32_t partition;
    int done;           /* caught up during the current catch-up */
    int at_end;         /* partition EOF seen and nothing consumed since */
    int soft;           /* this catch-up: below the watermark after an EOF (bounded wait) */
    int64_t eof_offset; /* where the last EOF was seen (read_committed: the LSO then) */
} state_part;

/* How long a catch-up waits on a partition that had reached its end and
 * shows nothing new: a fetch round trip and then some. */
#define PP_CATCH_UP_SOFT_MS 1000

/* pp_stream.assigned when no partition is held: before the first
 * assignment, between a revoke and the next assignment, after a failed
 * rebalance. 0 means an assignment without partitions (idle). */
enum { PP_UNASSIGNED_START = -1, PP_UNASSIGNED_REVOKED = -2, PP_UNASSIGNED_ERROR = -3 };

struct pp_stream {
    pp_stream_options o;
    pp_env *env;
    pp_dataset **ds;
    size_t nds;
    char topic_text[256], topic_image[256], topic_dlq[256];
    kn_kafka_consumer *c;  /* the group consumer on the raw topics */
    kn_kafka_consumer *sc; /* the changelog reader (assigned, no group offsets) */
    state_part *sp;
    size_t nsp;
    int txn_open;
    struct timespec txn_start;
    int txn_records;
    rd_kafka_topic_partition_list_t *offsets; /* next offset per input partition, this txn */
    int fatal; /* a fatal Kafka error happened (even inside a callback) */
    /* The record whose processing failed last and how often (step 4's retry
     * bound); another record's failure starts a new count. */
    struct {
        char topic[256];
        int32_t partition;
        int64_t offset;
        int count;
        int rc;
    } failed;
    int commit_failures; /* consecutive flush failures at commit */
    double last_recreate; /* now_s() of the producer's last re-creation; 0: none */
    /* What /readyz reports, written by the rebalance callback, read by the
     * HTTP thread (atomics): the partitions assigned now, or one of the
     * PP_UNASSIGNED_* states. */
    int assigned;
    struct timespec last_stats;
    double last_tokens, last_images;
};

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static double since_ms(const struct timespec *t0)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)(t.tv_sec - t0->tv_sec) * 1e3 + (double)(t.tv_nsec - t0->tv_nsec) / 1e6;
}

/* --- state changelogs --- */

static pp_dataset *dataset_by_state_topic(pp_stream *st, const char *topic)
{
    for (size_t i = 0; i < st->nds; i++)
        if (strcmp(pp_dataset_state_topic(st->ds[i]), topic) == 0) return st->ds[i];
    return NULL;
}

static void apply_state(pp_stream *st, const rd_kafka_message_t *m, int at_start)
{
    pp_dataset *ds = dataset_by_state_topic(st, rd_kafka_topic_name(m->rkt));
    if (!ds || !m->key) return;
    int rc = pp_dataset_apply_state(ds, m->key, m->key_len, m->payload, m->len, at_start);
    if (rc != KN_OK)
        kn_log_warn("state %s [%d] offset %lld: entry ignored: %s", rd_kafka_topic_name(m->rkt),
                    (int)m->partition, (long long)m->offset, kn_strerror(rc));
    else
        kn_metrics_add(st->env->m->state_entries, 1);
}

static state_part *find_sp(pp_stream *st, const char *topic, int32_t partition)
{
    for (size_t i = 0; i < st->nsp; i++)
        if (st->sp[i].partition == partition && strcmp(st->sp[i].topic, topic) == 0)
            return &st->sp[i];
    return NULL;
}

/* Reads every changelog partition to its end (partition EOF, which
 * read_committed reports at the last stable offset). */
static int catch_up(pp_stream *st, int at_start, int timeout_ms, char *errbuf, size_t errsz)
{
    rd_kafka_t *rk = kn_kafka_consumer_handle(st->sc);
    size_t left = 0, soft = 0;
    for (size_t i = 0; i < st->nsp; i++) {
        state_part *p = &st->sp[i];
        p->done = 0;
        p->soft = 0;
        if (!at_start) {
            /* At the high watermark: nothing to read. An EOF seen earlier
             * (at_end) is not enough: entries another instance committed
             * since (on its revoke, just before this assignment) may not be
             * fetched yet, and a moved partition's records must meet them.
             * An EOF at the watermark (commit marker included) with
             * nothing read since also means done. Otherwise the wait ends at
             * the next EOF; behind a transaction left open by a killed
             * instance no EOF comes until the broker aborts it, so a
             * partition that had reached an EOF is waited on for at most
             * PP_CATCH_UP_SOFT_MS unless something new arrives. */
            int64_t lo = 0, hi = 0;
            rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
            rd_kafka_topic_partition_list_add(l, p->topic, p->partition);
            rd_kafka_position(rk, l);
            int64_t pos = l->elems[0].offset;
            rd_kafka_topic_partition_list_destroy(l);
            int wm = kn_kafka_watermarks(rk, p->topic, p->partition, &lo, &hi, 5000) == KN_OK;
            if (wm && ((pos >= 0 && pos >= hi) || (p->at_end && p->eof_offset >= hi)))
                p->done = 1; /* nothing written since what was read */
            else if (p->at_end)
                p->soft = 1;
        }
        left += !p->done;
        soft += !p->done && p->soft;
    }
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    size_t n = 0;
    while (left > 0) {
        if (left == soft && since_ms(&t0) > PP_CATCH_UP_SOFT_MS) break;
        if (since_ms(&t0) > timeout_ms)
            return kn_seterr(errbuf, errsz, KN_ETIMEDOUT,
                             "state changelog: %zu partition(s) not read to the end in %d ms", left,
                             timeout_ms);
        rd_kafka_message_t *m = kn_kafka_consumer_poll(st->sc, 100);
        if (!m) continue;
        state_part *p = find_sp(st, rd_kafka_topic_name(m->rkt), m->partition);
        if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            if (p) {
                p->at_end = 1;
                p->eof_offset = m->offset;
            }
            if (p && !p->done) {
                p->done = 1;
                left--;
                soft -= p->soft;
            }
        } else if (m->err) {
            kn_log_warn("state changelog: %s", rd_kafka_message_errstr(m));
        } else {
            if (p) p->at_end = 0;
            if (p && p->soft && !p->done) { /* something new: read on to the EOF */
                p->soft = 0;
                soft--;
            }
            apply_state(st, m, at_start);
            n++;
        }
        rd_kafka_message_destroy(m);
    }
    kn_log_info("state changelog: %zu entries applied (%s) in %.0f ms", n,
                at_start ? "rebuild at start" : "catch-up on assignment", since_ms(&t0));
    return KN_OK;
}

static void tail_state(pp_stream *st)
{
    for (int i = 0; i < 1000; i++) {
        rd_kafka_message_t *m = kn_kafka_consumer_poll(st->sc, 0);
        if (!m) return;
        state_part *p = find_sp(st, rd_kafka_topic_name(m->rkt), m->partition);
        if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            if (p) {
                p->at_end = 1;
                p->eof_offset = m->offset;
            }
        } else if (!m->err) {
            if (p) p->at_end = 0;
            apply_state(st, m, 0);
        }
        rd_kafka_message_destroy(m);
    }
}

/* --- transactions --- */

static void rewind_consumer(pp_stream *st)
{
    rd_kafka_t *rk = kn_kafka_consumer_handle(st->c);
    rd_kafka_topic_partition_list_t *a = NULL;
    if (rd_kafka_fatal_error(rk, NULL, 0)) {
        /* A fenced member: the next poll re-creates the consumer, whose new
         * assignment starts from the committed offsets: the rewind itself. */
        kn_log_info("rewind: left to the consumer's re-creation (fatal consumer error)");
        return;
    }
    if (rd_kafka_assignment(rk, &a) != RD_KAFKA_RESP_ERR_NO_ERROR || !a) return;
    if (a->cnt > 0) {
        rd_kafka_resp_err_t err = rd_kafka_committed(rk, a, 30000);
        if (err) {
            kn_log_error("rewind: cannot read committed offsets: %s; ending so a restart resumes "
                         "from them",
                         rd_kafka_err2str(err));
            st->fatal = 1;
        } else {
            for (int i = 0; i < a->cnt; i++)
                if (a->elems[i].offset < 0) a->elems[i].offset = RD_KAFKA_OFFSET_BEGINNING;
            rd_kafka_error_t *e = rd_kafka_seek_partitions(rk, a, -1);
            if (e) {
                kn_log_error("rewind: seek failed: %s", rd_kafka_error_string(e));
                rd_kafka_error_destroy(e);
                st->fatal = 1;
            }
        }
    }
    rd_kafka_topic_partition_list_destroy(a);
}

/* What an aborted transaction held: its datasets' rows, its offsets. */
static void drop_txn(pp_stream *st)
{
    st->txn_open = 0;
    for (size_t i = 0; i < st->nds; i++)
        pp_dataset_abort(st->ds[i]);
    rd_kafka_topic_partition_list_destroy(st->offsets);
    st->offsets = rd_kafka_topic_partition_list_new(8);
    kn_metrics_add(st->env->m->aborts, 1);
}

/* Step 4: abort, drop what the transaction held, optionally rewind. */
static int abort_txn(pp_stream *st, int rewind)
{
    char e[512];
    if (!st->txn_open) return KN_OK;
    int rc;
    while ((rc = kn_kafka_txn_abort(st->env->producer, 30000, e, sizeof(e))) == KN_ETIMEDOUT)
        kn_log_warn("%s (retrying)", e);
    drop_txn(st);
    if (rc != KN_OK) {
        kn_log_error("%s", e);
        st->fatal = 1;
        return KN_EKAFKA;
    }
    kn_log_warn("transaction aborted after %d record(s)%s", st->txn_records,
                rewind ? "; consumer rewound to the committed offsets" : "");
    if (rewind) rewind_consumer(st);
    return st->fatal ? KN_EKAFKA : KN_OK;
}

/* Step 3: flush, send offsets, commit. On an abortable error, step 4. */
static int commit_txn(pp_stream *st)
{
    char e[512];
    if (!st->txn_open) return KN_OK;
    double t0 = now_s();
    int rc = KN_OK;
    for (size_t i = 0; i < st->nds && rc == KN_OK; i++)
        rc = pp_dataset_flush(st->ds[i]);
    if (rc != KN_OK && kn_kafka_producer_txn_refused(st->env->producer)) {
        /* The transaction had already failed (an abortable error after a
         * broker outage, or the producer fenced): the broker's doing, not
         * the shards'. Not counted below: abort (or re-create) and go on. */
        kn_log_warn("flushing shards: the transaction had failed (%s): aborting", kn_strerror(rc));
        return abort_txn(st, 1);
    }
    if (rc != KN_OK) {
        /* Not one record's fault: retried a few times, then the process
         * ends with the reason rather than looping (a restart resumes). */
        if (++st->commit_failures >= st->o.record_attempts) {
            kn_log_error("flushing shards failed %d times in a row (%s): ending",
                         st->commit_failures, kn_strerror(rc));
            abort_txn(st, 0);
            st->fatal = 1;
            return KN_EKAFKA;
        }
        kn_log_error("flushing shards: %s", kn_strerror(rc));
        return abort_txn(st, 1);
    }
    st->commit_failures = 0;
    if (st->offsets->cnt > 0) {
        while ((rc = kn_kafka_txn_send_offsets(st->env->producer, st->c, st->offsets, e,
                                               sizeof(e))) == KN_ETIMEDOUT)
            kn_log_warn("%s (retrying)", e);
        if (rc == KN_ECONFLICT) {
            kn_log_warn("%s", e);
            return abort_txn(st, 1);
        }
        if (rc != KN_OK) {
            kn_log_error("%s", e);
            st->fatal = 1;
            return KN_EKAFKA;
        }
    }
    while ((rc = kn_kafka_txn_commit(st->env->producer, 60000, e, sizeof(e))) == KN_ETIMEDOUT)
        kn_log_warn("%s (retrying)", e);
    if (rc == KN_ECONFLICT) {
        kn_log_warn("%s", e);
        return abort_txn(st, 1);
    }
    if (rc != KN_OK) {
        kn_log_error("%s", e);
        st->fatal = 1;
        return KN_EKAFKA;
    }
    st->txn_open = 0;
    for (size_t i = 0; i < st->nds; i++)
        pp_dataset_commit(st->ds[i]);
    rd_kafka_topic_partition_list_destroy(st->offsets);
    st->offsets = rd_kafka_topic_partition_list_new(8);
    kn_metrics_add(st->env->m->commits, 1);
    kn_metrics_observe(st->env->m->txn_seconds, now_s() - t0);
    kn_log_debug("transaction committed: %d record(s)", st->txn_records);
    return KN_OK;
}

/* Step 1. */
static int begin_txn(pp_stream *st)
{
    char e[512];
    if (st->txn_open) return KN_OK;
    int rc = kn_kafka_txn_begin(st->env->producer, e, sizeof(e));
    if (rc != KN_OK) {
        kn_log_error("%s", e);
        st->fatal = 1;
        return KN_EKAFKA;
    }
    st->txn_open = 1;
    st->txn_records = 0;
    clock_gettime(CLOCK_MONOTONIC, &st->txn_start);
    return KN_OK;
}

/* Step 5. Runs inside kn_kafka_consumer_poll. */
static void on_rebalance(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                         rd_kafka_topic_partition_list_t *parts, void *opaque)
{
    pp_stream *st = opaque;
    char e[512];
    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
        kn_log_info("rebalance: %d partition(s) assigned", parts->cnt);
        /* Another instance may have committed state for what we now own. */
        if (catch_up(st, 0, 60000, e, sizeof(e)) != KN_OK) kn_log_warn("%s", e);
        rd_kafka_assign(rk, parts);
        if (parts->cnt == 0)
            kn_log_info("rebalance: idle: the group gave this instance no partition (more "
                        "instances than partitions); not ready until it gets one");
        __atomic_store_n(&st->assigned, parts->cnt, __ATOMIC_RELAXED);
    } else if (err == RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS) {
        kn_log_info("rebalance: %d partition(s) revoked", parts->cnt);
        __atomic_store_n(&st->assigned, PP_UNASSIGNED_REVOKED, __ATOMIC_RELAXED);
        if (st->txn_open) {
            if (rd_kafka_assignment_lost(rk))
                abort_txn(st, 0);
            else
                commit_txn(st);
        }
        rd_kafka_assign(rk, NULL);
    } else {
        kn_log_error("rebalance: %s", rd_kafka_err2str(err));
        rd_kafka_assign(rk, NULL);
        __atomic_store_n(&st->assigned, PP_UNASSIGNED_ERROR, __ATOMIC_RELAXED);
    }
}

/* --- records --- */

static pp_dataset *dataset_by_name(pp_stream *st, const char *name)
{
    for (size_t i = 0; i < st->nds; i++)
        if (strcmp(pp_dataset_recipe(st->ds[i])->name, name) == 0) return st->ds[i];
    return NULL;
}

static int send_dlq(pp_stream *st, const rd_kafka_message_t *m, const kn_record_info *info,
                    const char *key_hex, const char *reason, const char *detail)
{
    kn_record_meta meta = {.kind = info->kind,
                           .content_type = info->content_type,
                           .source = info->source,
                           .origin = info->origin,
                           .dataset = info->dataset,
                           .label = info->label,
                           .split = info->split,
                           .repaired = info->repaired,
                           .ingest_time_ms =
                               info->ingest_time_ms ? info->ingest_time_ms : kn_record_now_ms()};
    int omit = m->len > st->o.dlq_max_bytes;
    kn_record_dlq d = {.reason = reason,
                       .detail = detail,
                       .service = PP_SERVICE,
                       .original_size = m->len,
                       .original_sha256 = key_hex,
                       .omitted = omit};
    kn_record_headers h;
    kn_record_dlq_headers_build(&h, &meta, &d);
    pp_metrics_refused(st->env->m, reason, info->dataset, info->origin, detail); /* logs too */
    kn_metrics_add(st->env->m->dlq, 1);
    return kn_kafka_produce(st->env->producer, st->topic_dlq, -1, key_hex, 64,
                            omit ? NULL : m->payload, omit ? 0 : m->len, h.h, h.n, NULL);
}

static int unhex(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static int is_failed_record(const pp_stream *st, const rd_kafka_message_t *m)
{
    return st->failed.count > 0 && st->failed.partition == m->partition &&
           st->failed.offset == m->offset &&
           strcmp(st->failed.topic, rd_kafka_topic_name(m->rkt)) == 0;
}

/* Step 2 for one record. */
static int handle(pp_stream *st, const rd_kafka_message_t *m)
{
    uint8_t key[32];
    char key_hex[65];
    int key_ok = m->key && m->key_len == 64;
    for (int i = 0; key_ok && i < 32; i++) {
        int hi = unhex(((const char *)m->key)[2 * i]),
            lo = unhex(((const char *)m->key)[2 * i + 1]);
        if (hi < 0 || lo < 0)
            key_ok = 0;
        else
            key[i] = (uint8_t)(hi << 4 | lo);
    }
    if (!key_ok) kn_sha256_digest(m->payload, m->len, key); /* not a kiln key: content hash */
    kn_sha256_to_hex(key, key_hex);

    const char *topic = rd_kafka_topic_name(m->rkt);
    int is_image = strcmp(topic, st->topic_image) == 0;
    kn_metrics_add(is_image ? st->env->m->in_image : st->env->m->in_text, 1);
    kn_record_info info;
    if (kn_record_info_read(m, &info) != KN_OK) {
        memset(&info, 0, sizeof(info));
        return send_dlq(st, m, &info, key_hex, KN_REASON_BAD_HEADER,
                        "not a kiln raw record (no record-version header)");
    }
    const char *name = info.dataset[0] ? info.dataset : st->o.default_dataset;
    pp_dataset *ds = name && *name ? dataset_by_name(st, name) : NULL;
    char detail[512];
    if (!ds) {
        kn_suggest sg; /* a typo in --dataset is the usual cause: name the close one */
        kn_suggest_init(&sg, name && *name ? name : "");
        for (size_t i = 0; i < st->nds; i++)
            kn_suggest_offer(&sg, pp_dataset_recipe(st->ds[i])->name);
        snprintf(detail, sizeof(detail),
                 "no [dataset.%s] recipe in this preprocess's config%s%s%s (add the section and "
                 "replay: kiln-ingest dlq --replay)",
                 name && *name ? name : "(none)", kn_suggest_result(&sg) ? "; did you mean '" : "",
                 kn_suggest_result(&sg) ? kn_suggest_result(&sg) : "",
                 kn_suggest_result(&sg) ? "'?" : "");
        return send_dlq(st, m, &info, key_hex, "unknown_dataset", detail);
    }
    if (is_failed_record(st, m) && st->failed.count >= st->o.record_attempts) {
        snprintf(detail, sizeof(detail),
                 "processing failed %d times in a row (%s); set aside so the stream moves on",
                 st->failed.count, kn_strerror(st->failed.rc));
        kn_log_error("%s [%d] offset %lld (%s): %s", rd_kafka_topic_name(m->rkt), (int)m->partition,
                     (long long)m->offset, info.origin, detail);
        return send_dlq(st, m, &info, key_hex, KN_REASON_PROCESSING_FAILED, detail);
    }
    int ds_image = pp_dataset_recipe(ds)->kind == KN_RECIPE_IMAGE;
    if (ds_image != is_image) {
        snprintf(detail, sizeof(detail), "%s record for %s dataset %s",
                 is_image ? "an image" : "a text", kn_recipe_kind_name(pp_dataset_recipe(ds)->kind), name);
        return send_dlq(st, m, &info, key_hex, "kind_mismatch", detail);
    }
    pp_outcome out;
    int rc = pp_dataset_process(ds, key, &info, m->payload, m->len, &out);
    if (rc != KN_OK) return rc;
    if (!out.reason) {
        kn_metrics_add(st->env->m->used, 1);
        return KN_OK;
    }
    if (out.duplicate) {
        kn_metrics_add(st->env->m->duplicates, 1);
        pp_metrics_reject(st->env->m, out.reason);
        if (!st->o.dlq_duplicates) return KN_OK;
    }
    return send_dlq(st, m, &info, key_hex, out.reason, out.detail);
}

static void remember_offset(pp_stream *st, const rd_kafka_message_t *m)
{
    const char *topic = rd_kafka_topic_name(m->rkt);
    rd_kafka_topic_partition_t *p =
        rd_kafka_topic_partition_list_find(st->offsets, topic, m->partition);
    if (!p) p = rd_kafka_topic_partition_list_add(st->offsets, topic, m->partition);
    p->offset = m->offset + 1;
}

static void update_stats(pp_stream *st)
{
    if (since_ms(&st->last_stats) < 5000) return;
    double dt = since_ms(&st->last_stats) / 1e3;
    clock_gettime(CLOCK_MONOTONIC, &st->last_stats);
    pp_metrics *m = st->env->m;
    double tok = kn_metrics_value(m->tokens), img = kn_metrics_value(m->images);
    kn_metrics_set(m->tokens_rate, (tok - st->last_tokens) / dt);
    kn_metrics_set(m->images_rate, (img - st->last_images) / dt);
    st->last_tokens = tok;
    st->last_images = img;
    rd_kafka_t *rk = kn_kafka_consumer_handle(st->c);
    rd_kafka_topic_partition_list_t *a = NULL;
    if (rd_kafka_assignment(rk, &a) != RD_KAFKA_RESP_ERR_NO_ERROR || !a) return;
    rd_kafka_position(rk, a);
    double lag = 0;
    for (int i = 0; i < a->cnt; i++) {
        int64_t lo, hi;
        if (rd_kafka_get_watermark_offsets(rk, a->elems[i].topic, a->elems[i].partition, &lo,
                                           &hi) != RD_KAFKA_RESP_ERR_NO_ERROR ||
            hi < 0)
            continue;
        int64_t pos = a->elems[i].offset >= 0 ? a->elems[i].offset : lo;
        if (hi > pos) lag += (double)(hi - pos);
    }
    kn_metrics_set(m->lag, lag);
    rd_kafka_topic_partition_list_destroy(a);
}

/* A fenced producer (kn_kafka_producer_fatal) re-created in place at most
 * once per this many seconds; a second fence sooner ends the process. */
#define PP_REFENCE_S 60

/* Step 4 when the producer itself is dead: a fatal (fenced) transactional
 * producer. The broker aborted the open transaction (it outlived
 * transaction.timeout.ms while the broker was paused or restarting, so the
 * coordinator bumped the epoch) or another producer took the
 * transactional.id. The first is an outage to ride out, not a reason to
 * exit: the producer is re-created under the same transactional.id (the
 * next epoch), what the transaction held is dropped and the consumer is
 * rewound to the committed offsets, as after an abort. A fence again within
 * PP_REFENCE_S of the last re-creation is the second case (a live instance
 * with the same id): the process ends, as before, and says so. */
static int recover_fenced_producer(pp_stream *st)
{
    char why[512], e[512];
    if (!kn_kafka_producer_fatal(st->env->producer, why, sizeof(why))) return KN_EKAFKA;
    double now = now_s();
    if (st->last_recreate > 0 && now - st->last_recreate < PP_REFENCE_S) {
        kn_log_error("producer fenced again %.0f s after it was re-created (%s): another live "
                     "instance with transactional.id %s-%s? ending",
                     now - st->last_recreate, why, PP_SERVICE, st->env->instance);
        return KN_EKAFKA;
    }
    kn_log_warn("producer fenced (%s): the broker aborted the transaction (open longer than "
                "transaction.timeout.ms while the broker was away) or another producer took "
                "the transactional.id; re-creating the producer and reprocessing from the "
                "committed offsets",
                why);
    int rc = kn_kafka_producer_recreate(st->env->producer, 30000, e, sizeof(e));
    while (rc == KN_ETIMEDOUT && !kn_shutdown_requested()) {
        kn_log_warn("%s (retrying)", e);
        rc = kn_kafka_producer_init_txn(st->env->producer, 30000, e, sizeof(e));
    }
    if (rc != KN_OK) {
        kn_log_error("%s", e);
        return KN_EKAFKA;
    }
    st->last_recreate = now_s();
    if (st->txn_open) { /* else abort_txn already dropped it */
        kn_log_warn("transaction of %d record(s) aborted by the fence", st->txn_records);
        drop_txn(st);
    }
    st->failed.count = 0; /* the producer failed, not the record */
    st->commit_failures = 0;
    st->fatal = 0;
    rewind_consumer(st);
    if (st->fatal) return KN_EKAFKA;
    kn_log_info("producer re-created (epoch bumped); consumer rewound to the committed offsets");
    return KN_OK;
}

static int step(pp_stream *st);

int pp_stream_step(pp_stream *st)
{
    int rc = step(st);
    if (rc != KN_OK && kn_kafka_producer_fatal(st->env->producer, NULL, 0))
        rc = recover_fenced_producer(st);
    return rc;
}

static int step(pp_stream *st)
{
    if (st->fatal) return KN_EKAFKA;
    rd_kafka_message_t *m = kn_kafka_consumer_poll(st->c, 100);
    if (st->fatal) {
        if (m) rd_kafka_message_destroy(m);
        return KN_EKAFKA;
    }
    if (m && m->err) {
        if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
            kn_log_warn("consumer: %s", rd_kafka_message_errstr(m));
        rd_kafka_message_destroy(m);
        m = NULL;
    }
    int got = m != NULL;
    if (m) {
        int rc = begin_txn(st);
        if (rc == KN_OK) rc = handle(st, m);
        if (rc == KN_OK) {
            remember_offset(st, m);
            st->txn_records++;
        }
        if (rc != KN_OK && !st->fatal && kn_kafka_producer_txn_refused(st->env->producer)) {
            /* the transaction had failed (broker outage, fence), not the
             * record: not counted against it (step 4's bound) */
            kn_log_warn("processing %s [%d] offset %lld: the transaction had failed (%s): "
                        "aborting it",
                        rd_kafka_topic_name(m->rkt), (int)m->partition, (long long)m->offset,
                        kn_strerror(rc));
        } else if (rc != KN_OK && !st->fatal) {
            if (!is_failed_record(st, m)) {
                snprintf(st->failed.topic, sizeof(st->failed.topic), "%s",
                         rd_kafka_topic_name(m->rkt));
                st->failed.partition = m->partition;
                st->failed.offset = m->offset;
                st->failed.count = 0;
            }
            st->failed.count++;
            st->failed.rc = rc;
            kn_log_error("processing %s [%d] offset %lld failed (%s, try %d of %d): aborting "
                         "the transaction",
                         rd_kafka_topic_name(m->rkt), (int)m->partition, (long long)m->offset,
                         kn_strerror(rc), st->failed.count, st->o.record_attempts);
        }
        rd_kafka_message_destroy(m);
        if (rc != KN_OK && !st->fatal) rc = abort_txn(st, 1);
        if (rc != KN_OK) return rc;
    }
    tail_state(st);
    /* Step 3's triggers: the interval, the record bound, or the input ran
     * dry (a poll returned nothing) once the transaction is a tenth of the
     * interval old: the last records of a burst are not held for flush_ms,
     * and the transaction rate stays bounded. */
    if (st->txn_open &&
        (st->txn_records >= st->o.txn_max_records || since_ms(&st->txn_start) >= st->o.flush_ms ||
         (!got && since_ms(&st->txn_start) >= st->o.flush_ms / 10.0))) {
        int rc = commit_txn(st);
        if (rc != KN_OK) return rc;
    }
    update_stats(st);
    return st->fatal ? KN_EKAFKA : KN_OK;
}

int pp_stream_drain(pp_stream *st)
{
    return commit_txn(st);
}

int pp_stream_ready(const pp_stream *st, char *why, size_t whysz)
{
    int a = __atomic_load_n(&st->assigned, __ATOMIC_RELAXED);
    if (a > 0) return 1;
    const char *w = a == 0 ? "idle: the consumer group gave this instance no partition of the raw "
                             "topics (more instances than partitions); it takes some over when "
                             "another instance leaves"
                    : a == PP_UNASSIGNED_REVOKED
                        ? "rebalancing: partitions revoked, waiting for the group's assignment"
                    : a == PP_UNASSIGNED_ERROR
                        ? "rebalance failed (logged): waiting for the group's assignment"
                        : "rebuilding state or joining the consumer group";
    if (why && whysz) snprintf(why, whysz, "%s", w);
    return 0;
}

/* --- setup --- */

pp_stream *pp_stream_new(const pp_stream_options *o, pp_env *env, pp_dataset **ds, size_t nds,
                         char *errbuf, size_t errsz)
{
    pp_stream *st = calloc(1, sizeof(*st));
    if (!st) {
        kn_seterr(errbuf, errsz, KN_ENOMEM, "out of memory");
        return NULL;
    }
    st->o = *o;
    st->assigned = PP_UNASSIGNED_START;
    if (st->o.record_attempts < 1) st->o.record_attempts = 3;
    st->env = env;
    st->ds = ds;
    st->nds = nds;
    st->offsets = rd_kafka_topic_partition_list_new(8);
    clock_gettime(CLOCK_MONOTONIC, &st->last_stats);
    kn_record_topic(st->topic_text, sizeof(st->topic_text), env->prefix, KN_RECORD_TOPIC_TEXT);
    kn_record_topic(st->topic_image, sizeof(st->topic_image), env->prefix, KN_RECORD_TOPIC_IMAGE);
    kn_record_topic(st->topic_dlq, sizeof(st->topic_dlq), env->prefix, KN_RECORD_TOPIC_DLQ);

    char client[300], sgroup[300];
    snprintf(client, sizeof(client), "%s-%s", PP_SERVICE, env->instance);
    snprintf(sgroup, sizeof(sgroup), "%s-state-%s", o->group, env->instance);
    const char *extra[] = {"partition.assignment.strategy", "range,roundrobin", NULL};
    kn_kafka_consumer_options co = {.brokers = o->brokers,
                                    .group_id = o->group,
                                    .client_id = client,
                                    .read_committed = 1,
                                    .auto_offset_reset = "earliest",
                                    /* static membership: a restart under the same
                                     * instance id resumes at once (not after the
                                     * dead member's session); the id is already
                                     * unique per instance (transactional.id) */
                                    .instance_id = client,
                                    .extra = extra,
                                    .rebalance_cb = on_rebalance,
                                    .opaque = st};
    st->c = kn_kafka_consumer_new(&co, errbuf, errsz);
    if (!st->c) goto fail;
    const char *sextra[] = {"enable.partition.eof", "true", NULL};
    kn_kafka_consumer_options so = {.brokers = o->brokers,
                                    .group_id = sgroup,
                                    .client_id = client,
                                    .read_committed = 1,
                                    .auto_offset_reset = "earliest",
                                    .extra = sextra};
    st->sc = kn_kafka_consumer_new(&so, errbuf, errsz);
    if (!st->sc) goto fail;
    return st;
fail:
    pp_stream_destroy(st);
    return NULL;
}

int pp_stream_start(pp_stream *st, char *errbuf, size_t errsz)
{
    rd_kafka_t *srk = kn_kafka_consumer_handle(st->sc);
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(8);
    for (size_t i = 0; i < st->nds; i++) {
        const char *t = pp_dataset_state_topic(st->ds[i]);
        int np = kn_kafka_partition_count(srk, t, 10000);
        if (np < 1) {
            rd_kafka_topic_partition_list_destroy(l);
            return kn_seterr(errbuf, errsz, KN_EKAFKA,
                             "state topic %s: cannot read its "
                             "partitions (%s)",
                             t, kn_strerror(np));
        }
        state_part *nsp = realloc(st->sp, (st->nsp + (size_t)np) * sizeof(state_part));
        if (!nsp) {
            rd_kafka_topic_partition_list_destroy(l);
            return kn_seterr(errbuf, errsz, KN_ENOMEM, "out of memory");
        }
        st->sp = nsp;
        for (int p = 0; p < np; p++) {
            state_part *s = &st->sp[st->nsp++];
            snprintf(s->topic, sizeof(s->topic), "%s", t);
            s->partition = p;
            rd_kafka_topic_partition_list_add(l, t, p)->offset = RD_KAFKA_OFFSET_BEGINNING;
        }
    }
    int rc = kn_kafka_consumer_assign(st->sc, l, errbuf, errsz);
    rd_kafka_topic_partition_list_destroy(l);
    if (rc != KN_OK) return rc;
    if ((rc = catch_up(st, 1, 300000, errbuf, errsz)) != KN_OK) return rc;
    const char *topics[] = {st->topic_text, st->topic_image};
    return kn_kafka_consumer_subscribe(st->c, topics, 2, errbuf, errsz);
}

void pp_stream_destroy(pp_stream *st)
{
    if (!st) return;
    /* Closing the group consumer revokes (→ commit) while the producer lives. */
    kn_kafka_consumer_destroy(st->c);
    st->c = NULL;
    kn_kafka_consumer_destroy(st->sc);
    if (st->offsets) rd_kafka_topic_partition_list_destroy(st->offsets);
    free(st->sp);
    free(st);
}
