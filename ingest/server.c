/* server.c: POST /v1/records. The body is the record (raw, with its
 * Content-Type) or a multipart/form-data upload with one file part (fields
 * "dataset", "label", "split" may ride along); query parameters dataset,
 * label, split and kind (auto|text|image). The answer waits for Kafka's
 * delivery report: 202 {"key":..} once acknowledged; 422 with the refusal
 * reason (the input is then in the DLQ); 413 for a body over the request
 * limit (refused unread: the DLQ gets its size and request id, no bytes);
 * 503 when Kafka failed; 504 when no
 * report came within ingest.ack_timeout_ms.
 *
 * Writes need a bearer token from ingest.tokens_file (lines "NAME ROLES
 * SHA256-of-the-token"; roles write, split, admin): 401 without a known
 * token, 403 without the role. Choosing the split needs split or admin; the
 * record then says who chose it (split-by: token:NAME). Only the hashes are
 * kept, compared in constant time; a token is never logged. */
#include "net/http.h"
#include "ingest.h"
#include "core/kn.h"
#include "core/log.h"
#include "core/sha256.h"
#include "net/multipart.h"
#include "core/shutdown.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

enum { ING_ROLE_WRITE = 1, ING_ROLE_SPLIT = 2, ING_ROLE_ADMIN = 4 };

typedef struct {
    char name[64];
    unsigned roles;              /* ING_ROLE_* */
    uint8_t hash[KN_SHA256_LEN]; /* SHA-256 of the token */
} ing_token;

struct ing_server {
    ing_ctx *c;
    kn_http_server *http;
    long ack_timeout_ms;
    size_t max_body;
    ing_token *tokens; /* from ingest.tokens_file */
    size_t ntokens;
    int anonymous; /* ingest.anonymous_writes: no token needed to write (not to split) */
};

static int hexval(char ch)
{
    if (ch >= '0' && ch <= '9') return ch - '0';
    if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
    return -1;
}

/* Reads the token file: "NAME ROLES SHA256" lines, '#' comments. On error
 * errbuf names the file and line (never its content). */
static int load_tokens(ing_server *s, const char *path, char *errbuf, size_t errsz)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return kn_seterr(errbuf, errsz, KN_EIO, "ingest.tokens_file %s: %s", path, strerror(errno));
    char line[512];
    int rc = KN_OK, lineno = 0;
    while (fgets(line, sizeof(line), f)) {
        lineno++;
        char name[64], roles[128], hex[80], extra[8];
        char *hash = strchr(line, '#');
        if (hash) *hash = '\0';
        int n = sscanf(line, "%63s %127s %79s %7s", name, roles, hex, extra);
        if (n <= 0) continue;
        ing_token t = {0};
        int ok = n == 3 && strlen(hex) == 64;
        for (int i = 0; ok && i < 32; i++) {
            int hi = hexval(hex[2 * i]), lo = hexval(hex[2 * i + 1]);
            if (hi < 0 || lo < 0)
                ok = 0;
            else
                t.hash[i] = (uint8_t)(hi << 4 | lo);
        }
        for (char *r = strtok(roles, ","); ok && r; r = strtok(NULL, ","))
            if (strcmp(r, "write") == 0)
                t.roles |= ING_ROLE_WRITE;
            else if (strcmp(r, "split") == 0)
                t.roles |= ING_ROLE_SPLIT | ING_ROLE_WRITE;
            else if (strcmp(r, "admin") == 0)
                t.roles |= ING_ROLE_ADMIN | ING_ROLE_SPLIT | ING_ROLE_WRITE;
            else
                ok = 0;
        if (!ok) {
            rc = kn_seterr(errbuf, errsz, KN_EINVAL,
                           "ingest.tokens_file %s line %d: want NAME ROLES SHA256 (roles: write, "
                           "split, admin; SHA256: 64 hex digits of the token's hash)",
                           path, lineno);
            break;
        }
        snprintf(t.name, sizeof(t.name), "%s", name);
        ing_token *nt = realloc(s->tokens, (s->ntokens + 1) * sizeof(*nt));
        if (!nt) {
            rc = kn_seterr(errbuf, errsz, KN_ENOMEM, "out of memory");
            break;
        }
        s->tokens = nt;
        s->tokens[s->ntokens++] = t;
    }
    fclose(f);
    return rc;
}

/* The caller's roles, or -1 after answering 401. name gets the token's name
 * ("anonymous" without one). Every configured hash is compared, in constant
 * time, so the answer's timing says nothing about which bytes matched. */
static int authenticate(ing_server *s, kn_http_req *req, char *name, size_t namesz)
{
    const char *auth = kn_http_req_header(req, "Authorization");
    snprintf(name, namesz, "anonymous");
    if (!auth) {
        if (s->anonymous) return ING_ROLE_WRITE;
        kn_http_respond_error(req, 401, "unauthorized",
                              s->ntokens ? "writing needs 'Authorization: Bearer <token>' with "
                                           "the write role"
                                         : "writing needs a token and this ingest has none "
                                           "configured (ingest.tokens_file)");
        return -1;
    }
    if (strncasecmp(auth, "Bearer ", 7) != 0 || !auth[7]) {
        kn_http_respond_error(req, 401, "unauthorized",
                              "the Authorization header must be 'Bearer <token>'");
        return -1;
    }
    uint8_t h[KN_SHA256_LEN];
    kn_sha256_digest(auth + 7, strlen(auth + 7), h);
    long found = -1;
    for (size_t i = 0; i < s->ntokens; i++) {
        unsigned diff = 0;
        for (int k = 0; k < KN_SHA256_LEN; k++)
            diff |= (unsigned)(h[k] ^ s->tokens[i].hash[k]);
        if (diff == 0) found = (long)i;
    }
    if (found < 0) {
        kn_http_respond_error(req, 401, "unauthorized", "unknown token");
        return -1;
    }
    snprintf(name, namesz, "%s", s->tokens[found].name);
    return (int)s->tokens[found].roles;
}

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
    char who[64], split_by[80];
    int roles = authenticate(s, req, who, sizeof(who));
    if (roles < 0) return;
    if (!(roles & ING_ROLE_WRITE)) {
        kn_http_respond_error(req, 403, "forbidden", "token '%s' lacks the write role", who);
        return;
    }
    snprintf(split_by, sizeof(split_by), "token:%s", who);
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
        if (split[0] && !(roles & ING_ROLE_SPLIT)) goto split_forbidden;
        if (split[0]) it.split = split, it.split_by = split_by;
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
    if (split[0] && !(roles & ING_ROLE_SPLIT)) goto split_forbidden;
    if (split[0]) it.split = split, it.split_by = split_by;
    submit_and_answer(s, req, &it, 422);
    return;
split_forbidden:
    /* Refused, not silently dropped: the caller learns its split was not taken. */
    kn_http_respond_error(req, 403, "forbidden",
                          "choosing the split needs a token with the split role (%s has not); "
                          "leave it out and preprocess splits by content hash",
                          who);
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
    int ok = 1;
    s->anonymous = kn_config_get_bool(c->cfg, "ingest.anonymous_writes", 0, &ok);
    const char *tf = kn_config_get(c->cfg, "ingest.tokens_file", NULL);
    if (!ok) {
        kn_seterr(errbuf, errsz, KN_EINVAL, "ingest.anonymous_writes: want true or false");
        ing_server_stop(s);
        return NULL;
    }
    if (tf && tf[0] && load_tokens(s, tf, errbuf, errsz) != KN_OK) {
        ing_server_stop(s);
        return NULL;
    }
    if (s->anonymous)
        kn_log_warn(
            "ingest.anonymous_writes is on: anyone who reaches this port can write records");
    else if (!s->ntokens)
        kn_log_warn("no ingest tokens (ingest.tokens_file): POST /v1/records answers 401");
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
    free(s->tokens);
    free(s);
}
