/* pipeline.c: validation and routing shared by every ingest source, the
 * delivery-report bookkeeping (metrics, completion callbacks) and progress. */
#include "ingest.h"
#include "core/kn.h"
#include "core/log.h"
#include "core/sha256.h"
#include "core/shutdown.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

/* What the delivery callback needs; one per produced record. */
typedef struct {
    ing_ctx *c;
    double t0;
    int kind; /* 0 text, 1 image, -1 DLQ */
    size_t bytes;
    const char *reason; /* static, DLQ only */
    ing_done_fn done;
    void *opaque;
} ing_pending;

static const char *const all_reasons[] = {
    KN_REASON_EMPTY,
    KN_REASON_TOO_LARGE,
    KN_REASON_BAD_UTF8,
    KN_REASON_UNKNOWN_FORMAT,
    KN_REASON_TRUNCATED,
    KN_REASON_BAD_HEADER,
    KN_REASON_TOO_MANY_PIXELS,
    KN_REASON_SIZE_MISMATCH,
    KN_REASON_UNSUPPORTED,
    KN_REASON_BAD_JSON,
    KN_REASON_BAD_BASE64,
    KN_REASON_BAD_LABEL,
    KN_REASON_READ_ERROR,
    KN_REASON_FETCH_FAILED,
    KN_REASON_FETCH_TIMEOUT,
    KN_REASON_TOO_MANY_REDIRECTS,
    KN_REASON_BAD_CONTENT_TYPE,
    KN_REASON_HTTP_STATUS,
};

double ing_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static kn_metric *reject_counter(ing_ctx *c, const char *reason)
{
    char labels[128];
    snprintf(labels, sizeof(labels), "reason=\"%s\"", reason);
    return kn_metrics_counter(c->metrics, "kiln_ingest_rejects_total",
                              "Inputs refused and written to the DLQ, by reason", labels);
}

static void on_delivery(void *opaque, void *msg_opaque, rd_kafka_resp_err_t err, int32_t partition,
                        int64_t offset)
{
    (void)opaque;
    (void)partition;
    (void)offset;
    ing_pending *pd = msg_opaque;
    if (!pd) { /* a record of ours that is not an input (the progress marker) */
        if (err) kn_log_error("delivery failed: %s", rd_kafka_err2str(err));
        return;
    }
    ing_ctx *c = pd->c;
    int ok = err == RD_KAFKA_RESP_ERR_NO_ERROR;
    kn_metrics_add(c->m_inflight, -1);
    atomic_fetch_sub(&c->inflight, 1);
    if (ok) {
        kn_metrics_observe(c->m_latency, ing_now() - pd->t0);
        if (pd->kind >= 0) {
            kn_metrics_add(c->m_records[pd->kind], 1);
            kn_metrics_add(c->m_bytes[pd->kind], (double)pd->bytes);
            atomic_fetch_add(&c->delivered, 1);
        } else {
            kn_metrics_add(reject_counter(c, pd->reason), 1);
            kn_metrics_add(c->m_refused_total, 1);
            atomic_fetch_add(&c->refused, 1);
        }
    } else {
        kn_metrics_add(c->m_failed, 1);
        atomic_fetch_add(&c->failed, 1);
        kn_log_error("delivery failed: %s", rd_kafka_err2str(err));
    }
    if (pd->done) pd->done(pd->opaque, ok, pd->kind < 0);
    free(pd);
}

kn_kafka_producer *ing_producer_new(ing_ctx *c, const char *txn_id, char *errbuf, size_t errsz)
{
    static const char *const extra[] = {"queue.buffering.max.kbytes", "262144", "batch.size",
                                        "1000000", NULL};
    kn_kafka_producer_options po = {
        .brokers = c->opt.brokers,
        .client_id = ING_SERVICE,
        .transactional_id = txn_id,
        .dr_cb = on_delivery,
        .dr_opaque = c,
        .linger_ms = 5,
        .extra = extra,
        .poll_on_produce = c->opt.bulk && !txn_id,
    };
    return kn_kafka_producer_new(&po, errbuf, errsz);
}

int ing_ctx_init(ing_ctx *c, kn_config *cfg, const ing_options *opt, char *errbuf, size_t errsz)
{
    memset(c, 0, sizeof(*c));
    c->cfg = cfg;
    c->opt = *opt;
    if (kn_record_topic(c->topic_text, sizeof(c->topic_text), opt->prefix, KN_RECORD_TOPIC_TEXT) ||
        kn_record_topic(c->topic_image, sizeof(c->topic_image), opt->prefix,
                        KN_RECORD_TOPIC_IMAGE) ||
        kn_record_topic(c->topic_dlq, sizeof(c->topic_dlq), opt->prefix, KN_RECORD_TOPIC_DLQ) ||
        kn_record_topic(c->topic_progress, sizeof(c->topic_progress), opt->prefix,
                        "ingest.progress"))
        return kn_seterr(errbuf, errsz, KN_EINVAL, "topic prefix too long: %s", opt->prefix);
    c->metrics = kn_metrics_new();
    if (!c->metrics) return kn_seterr(errbuf, errsz, KN_ENOMEM, "out of memory");
    static const char *const kinds[2] = {"kind=\"text\"", "kind=\"image\""};
    for (int k = 0; k < 2; k++) {
        c->m_records[k] = kn_metrics_counter(c->metrics, "kiln_ingest_records_total",
                                             "Records acknowledged by Kafka", kinds[k]);
        c->m_bytes[k] = kn_metrics_counter(c->metrics, "kiln_ingest_bytes_total",
                                           "Value bytes acknowledged by Kafka", kinds[k]);
    }
    for (size_t i = 0; i < KN_ARRAY_LEN(all_reasons); i++)
        reject_counter(c, all_reasons[i]);
    c->m_refused_total = kn_metrics_counter(c->metrics, "kiln_ingest_dlq_records_total",
                                            "DLQ records acknowledged by Kafka", NULL);
    c->m_latency = kn_metrics_histogram(c->metrics, "kiln_ingest_delivery_latency_seconds",
                                        "From produce to delivery report", NULL);
    c->m_failed = kn_metrics_counter(c->metrics, "kiln_ingest_delivery_failures_total",
                                     "Records Kafka did not acknowledge", NULL);
    c->m_inflight = kn_metrics_gauge(c->metrics, "kiln_ingest_records_in_flight",
                                     "Records queued, not yet reported", NULL);

    kn_kafka_topic_spec specs[] = {
        {c->topic_text, opt->partitions, 0, 0},
        {c->topic_image, opt->partitions, 0, 0},
        {c->topic_dlq, opt->partitions, 0, 0},
        {c->topic_progress, 1, 1, 0},
    };
    int rc = kn_kafka_create_topics(opt->brokers, specs, KN_ARRAY_LEN(specs), 15000, errbuf, errsz);
    if (rc != KN_OK) return rc;
    c->prod = ing_producer_new(c, NULL, errbuf, errsz);
    return c->prod ? KN_OK : KN_EKAFKA;
}

void ing_ctx_free(ing_ctx *c)
{
    if (c->prod) {
        ing_drain(c, c->prod, 30000);
        kn_kafka_producer_destroy(c->prod, 10000);
        c->prod = NULL;
    }
    kn_metrics_destroy(c->metrics);
    c->metrics = NULL;
}

int ing_drain(ing_ctx *c, kn_kafka_producer *p, int timeout_ms)
{
    if (!p) p = c->prod;
    double end = ing_now() + timeout_ms / 1000.0;
    int left;
    while ((left = kn_kafka_producer_flush(p, 100)) > 0 && ing_now() < end) {
    }
    return left;
}

int ing_drain_timeout_ms(const ing_ctx *c)
{
    int64_t ms = kn_config_get_int(c->cfg, "ingest.drain_timeout_ms", 60000, NULL);
    return ms < 0 ? 0 : ms > INT32_MAX ? INT32_MAX : (int)ms;
}

ing_tally *ing_tally_new(void)
{
    ing_tally *t = calloc(1, sizeof(*t));
    if (t) atomic_store(&t->refs, 1);
    return t;
}

void ing_tally_unref(ing_tally *t)
{
    if (t && atomic_fetch_sub(&t->refs, 1) == 1) free(t);
}

static void tally_done(void *tally, int ok, int dlq)
{
    ing_tally *t = tally;
    if (!ok)
        atomic_fetch_add(&t->failed, 1);
    else if (dlq)
        atomic_fetch_add(&t->refused, 1);
    else
        atomic_fetch_add(&t->ok, 1);
    ing_tally_unref(t);
}

int ing_submit_tally(ing_ctx *c, kn_kafka_producer *p, const ing_item *it, ing_tally *t,
                     ing_result *res)
{
    atomic_fetch_add(&t->refs, 1);
    int rc = ing_submit(c, p, it, tally_done, t, res);
    if (rc != KN_OK) ing_tally_unref(t); /* no report will come */
    return rc;
}

/* --- validation --- */

typedef struct {
    const void *value; /* what to produce */
    size_t len;
    char *owned; /* value, when validation made a new buffer (repair) */
    int kind;    /* 0 text, 1 image */
    const char *content_type;
    const char *repaired;
    const char *reason; /* refused when set */
    char detail[512];
} verdict;

static int declared_image(const char *ct)
{
    return ct &&
           (strncasecmp(ct, "image/", 6) == 0 || strncasecmp(ct, "application/x-idx", 17) == 0);
}

static int declared_text(const char *ct)
{
    return ct && (strncasecmp(ct, "text/", 5) == 0 || strncasecmp(ct, "application/json", 16) == 0);
}

static void judge(ing_ctx *c, const ing_item *it, verdict *v)
{
    memset(v, 0, sizeof(*v));
    if (it->refuse_reason) {
        v->reason = it->refuse_reason;
        snprintf(v->detail, sizeof(v->detail), "%s", it->refuse_detail ? it->refuse_detail : "");
        return;
    }
    if (it->full_len) {
        v->reason = KN_REASON_TOO_LARGE;
        snprintf(v->detail, sizeof(v->detail), "%llu bytes, over every record size limit",
                 (unsigned long long)it->full_len);
        return;
    }
    if (it->len == 0) {
        v->reason = KN_REASON_EMPTY;
        snprintf(v->detail, sizeof(v->detail), "no bytes");
        return;
    }
    ing_kind kind = it->kind != ING_KIND_AUTO ? it->kind : c->opt.kind;
    if (kind == ING_KIND_AUTO) {
        if (declared_image(it->content_type))
            kind = ING_KIND_IMAGE;
        else if (declared_text(it->content_type))
            kind = ING_KIND_TEXT;
        else
            kind = kn_media_sniff(it->data, it->len) != KN_MEDIA_UNKNOWN ? ING_KIND_IMAGE
                                                                         : ING_KIND_TEXT;
    }
    if (kind == ING_KIND_IMAGE) {
        v->kind = 1;
        if (it->len > c->opt.max_image) {
            v->reason = KN_REASON_TOO_LARGE;
            snprintf(v->detail, sizeof(v->detail), "image of %zu bytes, limit %zu", it->len,
                     c->opt.max_image);
            return;
        }
        kn_media_info info;
        const char *why = NULL;
        if (kn_media_probe(it->data, it->len, &c->opt.limits, &info, &why, v->detail,
                           sizeof(v->detail)) != KN_OK) {
            v->reason = why ? why : KN_REASON_BAD_HEADER;
            return;
        }
        v->value = it->data;
        v->len = it->len;
        v->content_type = kn_media_content_type(info.type);
        return;
    }
    v->kind = 0;
    if (it->len > c->opt.max_text) {
        v->reason = KN_REASON_TOO_LARGE;
        snprintf(v->detail, sizeof(v->detail), "text of %zu bytes, limit %zu", it->len,
                 c->opt.max_text);
        return;
    }
    size_t bad = 0;
    v->value = it->data;
    v->len = it->len;
    v->content_type = "text/plain; charset=utf-8";
    if (!kn_record_utf8_valid(it->data, it->len, &bad)) {
        if (!c->opt.utf8_repair) {
            v->reason = KN_REASON_BAD_UTF8;
            snprintf(v->detail, sizeof(v->detail),
                     "invalid UTF-8 at byte %zu: re-encode the file (iconv -f latin1 -t utf-8) or "
                     "set ingest.utf8_policy = repair to replace bad bytes with U+FFFD",
                     bad);
            return;
        }
        v->owned = kn_record_utf8_repair(it->data, it->len, &v->len);
        if (!v->owned) {
            v->reason = KN_REASON_TOO_LARGE;
            snprintf(v->detail, sizeof(v->detail), "out of memory repairing UTF-8");
            return;
        }
        v->value = v->owned;
        v->repaired = "utf8";
        if (v->len > c->opt.max_text) {
            v->reason = KN_REASON_TOO_LARGE;
            snprintf(v->detail, sizeof(v->detail), "repaired text of %zu bytes, limit %zu", v->len,
                     c->opt.max_text);
        }
    }
}

int ing_submit(ing_ctx *c, kn_kafka_producer *p, const ing_item *it, ing_done_fn done, void *opaque,
               ing_result *res)
{
    verdict v;
    ing_result local;
    if (!res) res = &local;
    if (!p) p = c->prod;
    judge(c, it, &v);

    kn_record_meta meta = {
        .kind = v.kind ? KN_RECORD_KIND_IMAGE : KN_RECORD_KIND_TEXT,
        .content_type = v.content_type ? v.content_type : it->content_type,
        .source = it->source,
        .origin = it->origin,
        .dataset = it->dataset ? it->dataset : c->opt.dataset,
        .label = it->label ? it->label : c->opt.label,
        .split = it->split ? it->split : c->opt.split,
        .split_by = it->split_by ? it->split_by : "operator",
        .repaired = v.repaired,
    };
    kn_record_headers hdrs;
    const char *topic;
    const void *value;
    size_t vlen;
    char sha[65] = "";
    ing_pending *pd = calloc(1, sizeof(*pd));
    if (!pd) {
        free(v.owned);
        return KN_ENOMEM;
    }
    if (v.reason) {
        /* DLQ: key = SHA-256 of the original bytes (of the origin when there
         * are none); the value is the original bytes unless they are over
         * dlq_max, then the headers point at the origin. */
        kn_record_dlq dlq = {
            .reason = v.reason,
            .detail = v.detail,
            .service = ING_SERVICE,
            .original_size = it->full_len ? it->full_len : it->len,
        };
        if (it->full_sha256)
            snprintf(sha, sizeof(sha), "%s", it->full_sha256);
        else if (it->data)
            kn_record_key(it->data, it->len, sha);
        dlq.original_sha256 = sha[0] ? sha : NULL;
        if (it->full_len || it->len > c->opt.dlq_max) dlq.omitted = 1;
        if (!it->data && !it->full_len) dlq.original_size = 0;
        value = dlq.omitted ? NULL : it->data;
        vlen = dlq.omitted ? 0 : it->len;
        if (sha[0])
            snprintf(res->key, sizeof(res->key), "%s", sha);
        else
            kn_record_key(it->origin ? it->origin : "", it->origin ? strlen(it->origin) : 0,
                          res->key);
        if (!meta.content_type) meta.content_type = "application/octet-stream";
        kn_record_dlq_headers_build(&hdrs, &meta, &dlq);
        topic = c->topic_dlq;
        pd->kind = -1;
        pd->reason = v.reason;
        res->reason = v.reason;
        snprintf(res->detail, sizeof(res->detail), "%s", v.detail);
        kn_log_fields(KN_LOG_WARN,
                      json_pack("{s:s,s:s?,s:s}", "reason", v.reason, "origin", it->origin,
                                "detail", v.detail),
                      "refused input → DLQ");
    } else {
        kn_record_key(v.value, v.len, res->key);
        kn_record_headers_build(&hdrs, &meta);
        topic = v.kind ? c->topic_image : c->topic_text;
        value = v.value;
        vlen = v.len;
        pd->kind = v.kind;
        res->reason = NULL;
        res->detail[0] = '\0';
    }
    res->topic = topic;
    pd->c = c;
    pd->t0 = ing_now();
    pd->bytes = vlen;
    pd->done = done;
    pd->opaque = opaque;
    atomic_fetch_add(&c->inflight, 1);
    kn_metrics_add(c->m_inflight, 1);
    int rc = kn_kafka_produce(p, topic, -1, res->key, 64, value, vlen, hdrs.h, hdrs.n, pd);
    free(v.owned);
    if (rc != KN_OK) {
        atomic_fetch_sub(&c->inflight, 1);
        kn_metrics_add(c->m_inflight, -1);
        free(pd);
    }
    return rc;
}

/* --- progress --- */

void ing_progress_start(ing_progress *pr, const ing_options *opt, const char *what, uint64_t total)
{
    pr->what = what;
    pr->total = total;
    pr->tty = opt->progress < 0 ? isatty(STDERR_FILENO) : opt->progress;
    pr->t0 = pr->last = ing_now();
}

void ing_progress_update(ing_progress *pr, uint64_t done, int final)
{
    double now = ing_now();
    double every = pr->tty ? 0.2 : 5.0;
    if (!final && now - pr->last < every) return;
    pr->last = now;
    double rate = now > pr->t0 ? (double)done / (now - pr->t0) : 0;
    if (pr->tty) {
        if (pr->total)
            fprintf(stderr, "\r%s: %llu/%llu (%.1f%%) %.0f rec/s%s", pr->what,
                    (unsigned long long)done, (unsigned long long)pr->total,
                    100.0 * (double)done / (double)pr->total, rate, final ? "\n" : "   ");
        else
            fprintf(stderr, "\r%s: %llu %.0f rec/s%s", pr->what, (unsigned long long)done, rate,
                    final ? "\n" : "   ");
        fflush(stderr);
    } else {
        kn_log_fields(KN_LOG_INFO,
                      json_pack("{s:s,s:I,s:I,s:f}", "what", pr->what, "done", (json_int_t)done,
                                "total", (json_int_t)pr->total, "rate", rate),
                      "%s: %s", pr->what, final ? "done" : "progress");
    }
}
