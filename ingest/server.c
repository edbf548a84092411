/* server.c: POST /v1/records. The body is the record (raw, with its
 * Content-Type) or a multipart/form-data upload with one file part (fields
 * "dataset", "label", "split" may ride along); query parameters dataset,
 * label, split and kind (auto|text|image). The answer waits for Kafka's
 * delivery report: 202 {"key":..} once acknowledged; 422 with the refusal
 * reason (the input is then in the DLQ); 413 for a body over the request
 * limit (refused unread: the DLQ gets its size and request id, no bytes);
 * 503 when Kafka failed; 504 when no
 * report came within ingest.ack_timeout_ms. */
#include "net/http.h"
#include "ingest.h"
#include "core/kn.h"
#include "core/log.h"
#include "net/multipart.h"
#include "core/shutdown.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

struct ing_server {
    ing_ctx *c;
    kn_http_server *http;
    long ack_timeout_ms;
    size_t max_body;
};

/* Shared by the handler and the delivery callback; the last one frees it. */
typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int refs, done, ok, dlq;
} waiter;

static void waiter_unref(waiter *w)
{
    pthread_mutex_lock(&w->mu);
    int last = --w->refs == 0;
    pthread_mutex_unlock(&w->mu);
    if (last) {
        pthread_mutex_destroy(&w->mu);
        pthread_cond_destroy(&w->cv);
        free(w);
    }
}

static void waiter_done(void *opaque, int ok, int dlq)
{
    waiter *w = opaque;
    pthread_mutex_lock(&w->mu);
    w->done = 1;
    w->ok = ok;
    w->dlq = dlq;
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
    waiter_unref(w);
}

static void submit_and_answer(ing_server *s, kn_http_req *req, const ing_item *it,
                              int refused_status);

static void handle_post(kn_http_req *req, void *ctx)
{
    ing_server *s = ctx;
    size_t len = 0;
    const char *body = kn_http_req_body(req, &len);
    const char *ctype = kn_http_req_header(req, "Content-Type");
    const char *kind = kn_http_req_query(req, "kind");
    char dataset[128] = "", label[128] = "", split[32] = "", file_ct[128] = "";
    const char *q;
    if ((q = kn_http_req_query(req, "dataset"))) snprintf(dataset, sizeof(dataset), "%s", q);
    if ((q = kn_http_req_query(req, "label"))) snprintf(label, sizeof(label), "%s", q);
    if ((q = kn_http_req_query(req, "split"))) snprintf(split, sizeof(split), "%s", q);
    ing_item it = {.data = body ? body : "",
                   .len = len,
                   .source = "http",
                   .origin = kn_http_req_id(req),
                   .content_type = ctype};
    if (kind && strcmp(kind, "text") == 0)
        it.kind = ING_KIND_TEXT;
    else if (kind && strcmp(kind, "image") == 0)
        it.kind = ING_KIND_IMAGE;
    else if (kind && strcmp(kind, "auto") != 0) {
        kn_http_respond_error(req, 400, "bad_request", "kind must be auto, text or image");
        return;
    }
    if (kn_shutdown_requested()) {
        kn_http_respond_error(req, 503, "shutting_down", "the service is shutting down");
        return;
    }
    uint64_t over = kn_http_req_oversize(req);
    if (over) { /* not read: the refusal, with no bytes, goes to the DLQ */
        char detail[160];
        snprintf(detail, sizeof(detail), "body of %llu bytes is over the %zu byte request limit",
                 (unsigned long long)over, s->max_body);
        it.data = NULL;
        it.len = 0;
        it.full_len = over;
        it.refuse_reason = KN_REASON_TOO_LARGE;
        it.refuse_detail = detail;
        if (dataset[0]) it.dataset = dataset;
        if (label[0]) it.label = label;
        if (split[0]) it.split = split;
        submit_and_answer(s, req, &it, 413);
        return;
    }
    if (ctype && strncasecmp(ctype, "multipart/form-data", 19) == 0) {
        char boundary[100];
        kn_multipart_part parts[16];
        kn_multipart_param(ctype, strlen(ctype), "boundary", boundary, sizeof(boundary));
        int n = boundary[0] ? kn_multipart_parse(body ? body : "", len, boundary, parts, 16) : -1;
        if (n < 0) {
            kn_http_respond_error(req, 400, "bad_multipart",
                                  "the body is not well-formed multipart/form-data");
            return;
        }
        const kn_multipart_part *file = NULL;
        for (int i = 0; i < n && i < 16; i++) {
            char *dst = NULL;
            size_t dsz = 0;
            if (strcmp(parts[i].name, "dataset") == 0)
                dst = dataset, dsz = sizeof(dataset);
            else if (strcmp(parts[i].name, "label") == 0)
                dst = label, dsz = sizeof(label);
            else if (strcmp(parts[i].name, "split") == 0)
                dst = split, dsz = sizeof(split);
            if (dst && !parts[i].filename[0]) {
                snprintf(dst, dsz, "%.*s", (int)parts[i].len, parts[i].data);
                continue;
            }
            if (file) {
                kn_http_respond_error(req, 400, "one_file",
                                      "send one file per request (found a second part '%s')",
                                      parts[i].name);
                return;
            }
            file = &parts[i];
        }
        if (!file) {
            kn_http_respond_error(req, 400, "no_file",
                                  "the multipart body has no file part (e.g. name=\"file\")");
            return;
        }
        snprintf(file_ct, sizeof(file_ct), "%s", file->ctype);
        it.data = file->data;
        it.len = file->len;
        it.content_type = file_ct[0] ? file_ct : NULL;
    }
    if (dataset[0]) it.dataset = dataset;
    if (label[0]) it.label = label;
    if (split[0]) it.split = split;
    submit_and_answer(s, req, &it, 422);
}

/* Sends the item (a record or its refusal) and answers once Kafka has
 * acknowledged it: 202 with the key, or refused_status with the reason and
 * the DLQ record's key. */
static void submit_and_answer(ing_server *s, kn_http_req *req, const ing_item *it,
                              int refused_status)
{
    waiter *w = calloc(1, sizeof(*w));
    if (!w) {
        kn_http_respond_error(req, 500, "internal", "out of memory");
        return;
    }
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv, NULL);
    w->refs = 2;
    ing_result res;
    int rc = ing_submit(s->c, NULL, it, waiter_done, w, &res);
    if (rc != KN_OK) {
        waiter_unref(w); /* the callback will not run */
        waiter_unref(w);
        kn_http_respond_error(req, 503, "kafka_unavailable", "could not queue the record: %s",
                              kn_strerror(rc));
        return;
    }
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_sec += s->ack_timeout_ms / 1000;
    dl.tv_nsec += (s->ack_timeout_ms % 1000) * 1000000L;
    if (dl.tv_nsec >= 1000000000L) {
        dl.tv_sec++;
        dl.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&w->mu);
    while (!w->done)
        if (pthread_cond_timedwait(&w->cv, &w->mu, &dl) == ETIMEDOUT) break;
    int done = w->done, ok = w->ok;
    pthread_mutex_unlock(&w->mu);
    waiter_unref(w);

    if (!done) {
        kn_http_respond_error(req, 504, "not_acknowledged",
                              "Kafka did not acknowledge record %s within %ld ms; it may still "
                              "arrive (same key on retry)",
                              res.key, s->ack_timeout_ms);
    } else if (!ok) {
        kn_http_respond_error(req, 503, "kafka_unavailable", "Kafka did not accept record %s",
                              res.key);
    } else if (res.reason) {
        kn_http_respond_json(req, refused_status,
                             json_pack("{s:{s:s,s:s,s:s},s:s,s:s}", "error", "code", res.reason,
                                       "message", res.detail, "request_id", kn_http_req_id(req),
                                       "dlq_key", res.key, "topic", res.topic));
    } else {
        kn_http_respond_json(req, 202, json_pack("{s:s,s:s}", "key", res.key, "topic", res.topic));
    }
}

static int ready(void *ctx, char *why, size_t whysz)
{
    ing_server *s = ctx;
    if (kn_shutdown_requested()) {
        snprintf(why, whysz, "shutting down");
        return 1;
    }
    if (kn_kafka_partition_count(kn_kafka_producer_handle(s->c->prod), s->c->topic_text, 2000) <=
        0) {
        snprintf(why, whysz, "Kafka does not answer for %s", s->c->topic_text);
        return 1;
    }
    return 0;
}

ing_server *ing_server_start(ing_ctx *c, const char *bind, int port, char *errbuf, size_t errsz)
{
    ing_server *s = calloc(1, sizeof(*s));
    if (!s) {
        kn_seterr(errbuf, errsz, KN_ENOMEM, "out of memory");
        return NULL;
    }
    s->c = c;
    s->ack_timeout_ms = (long)kn_config_get_int(c->cfg, "ingest.ack_timeout_ms", 30000, NULL);
    /* room for the largest record plus multipart framing */
    s->max_body =
        (c->opt.max_text > c->opt.max_image ? c->opt.max_text : c->opt.max_image) + (64 << 10);
    kn_http_options ho = {
        .bind_addr = bind,
        .port = (uint16_t)port,
        .service = ING_SERVICE,
        .max_body = s->max_body,
        .oversize_to_handler = 1,
        .metrics = c->metrics,
        .ready = ready,
        .ready_ctx = s,
    };
    s->http = kn_http_server_new(&ho);
    if (!s->http ||
        kn_http_server_route(s->http, "POST", "/v1/records", handle_post, NULL, s) != KN_OK ||
        kn_http_server_start(s->http, errbuf, errsz) != KN_OK) {
        ing_server_stop(s);
        return NULL;
    }
    kn_log_info("listening on %s:%u", bind, kn_http_server_port(s->http));
    return s;
}

uint16_t ing_server_port(const ing_server *s)
{
    return kn_http_server_port(s->http);
}

void ing_server_stop(ing_server *s)
{
    if (!s) return;
    kn_http_server_destroy(s->http);
    free(s);
}
