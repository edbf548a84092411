/* http.c: route table and request lifecycle over libmicrohttpd.
 *
 * MHD calls the access handler several times per request:
 *   1. headers parsed (our state is NULL): match the route, check limits;
 *      an early answer (404, 405, 413) is queued right here;
 *   2. zero or more times with body bytes: buffer them, or pass them to the
 *      route's body callback;
 *   3. once with no bytes: run the handler and queue what it answered.
 * MHD only accepts a queued response in steps 1 and 3, so a failure during
 * step 2 is remembered and answered in step 3. */
#include "net/http.h"
#include "core/kn.h"
#include "core/log.h"

#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>

#define MAX_PARAMS 8
#define MAX_SEGMENTS 16
#define MAX_ROUTES 96

typedef struct {
    char *method;
    char *pattern;
    char *segments[MAX_SEGMENTS]; /* pattern split on '/'; "{x}" captures */
    int nseg;
    kn_http_handler handler;
    kn_http_body_cb body_cb;
    void *ctx;
    kn_metric *latency;
} http_route;

struct kn_http_server {
    kn_http_options opts;
    char *service;
    char *bind_addr;
    struct MHD_Daemon *daemon;
    http_route routes[MAX_ROUTES];
    int nroutes;
    _Atomic uint64_t next_id;
    kn_metric *requests_in_flight;
};

typedef struct {
    char *name;
    char *value;
} http_pair;

struct kn_http_req {
    kn_http_server *srv;
    struct MHD_Connection *conn;
    const http_route *route;
    const char *method;
    char path[1024];
    char id[40];
    http_pair params[MAX_PARAMS];
    int nparams;
    char *body; /* buffered body, NUL-terminated */
    size_t body_len;
    int body_stopped; /* body callback asked to stop, or the body is over max_body */
    int oversize;
    uint64_t oversize_len; /* declared or seen body size when oversize */
    void *state;
    void (*state_free)(void *);
    struct MHD_Response *resp;
    int status;
    char *early;        /* a 408 answer's body, sent before the request body is in */
    http_pair *headers; /* for the coming response */
    int nheaders;
    struct timespec start;
};

/* --- server --- */

kn_http_server *kn_http_server_new(const kn_http_options *opts)
{
    kn_http_server *srv = calloc(1, sizeof(*srv));
    if (!srv) return NULL;
    srv->opts = *opts;
    srv->service = strdup(opts->service ? opts->service : "kiln");
    srv->bind_addr = strdup(opts->bind_addr ? opts->bind_addr : "127.0.0.1");
    if (!srv->opts.max_body) srv->opts.max_body = 8u << 20;
    if (!srv->opts.timeout_s) srv->opts.timeout_s = 30;
    if (!srv->opts.max_connections) srv->opts.max_connections = 256;
    srv->opts.service = srv->service;
    srv->opts.bind_addr = srv->bind_addr;
    if (srv->opts.metrics)
        srv->requests_in_flight = kn_metrics_gauge(srv->opts.metrics, "kiln_http_requests_in_flight",
                                                   "HTTP requests being served", NULL);
    return srv;
}

int kn_http_server_route(kn_http_server *srv, const char *method, const char *pattern,
                         kn_http_handler handler, kn_http_body_cb body_cb, void *ctx)
{
    if (srv->nroutes == MAX_ROUTES || pattern[0] != '/') return KN_EINVAL;
    http_route *r = &srv->routes[srv->nroutes];
    memset(r, 0, sizeof(*r));
    r->method = strdup(method);
    r->pattern = strdup(pattern);
    char *copy = strdup(pattern);
    if (!r->method || !r->pattern || !copy) {
        free(r->method);
        free(r->pattern);
        free(copy);
        return KN_ENOMEM;
    }
    for (char *save = NULL, *seg = strtok_r(copy, "/", &save); seg;
         seg = strtok_r(NULL, "/", &save)) {
        if (r->nseg == MAX_SEGMENTS) {
            free(copy);
            return KN_EINVAL;
        }
        r->segments[r->nseg++] = strdup(seg);
    }
    free(copy);
    r->handler = handler;
    r->body_cb = body_cb;
    r->ctx = ctx;
    if (srv->opts.metrics) {
        char labels[600];
        snprintf(labels, sizeof(labels), "route=\"%s %s\"", method, pattern);
        r->latency = kn_metrics_histogram(srv->opts.metrics, "kiln_http_request_duration_seconds",
                                          "Time to answer an HTTP request", labels);
    }
    srv->nroutes++;
    return KN_OK;
}

/* Matches path against the route; fills the request's captures on success. */
static int route_match(const http_route *r, const char *path, kn_http_req *req)
{
    char copy[1024];
    snprintf(copy, sizeof(copy), "%s", path);
    int nseg = 0, nparams = 0;
    http_pair params[MAX_PARAMS];
    for (char *save = NULL, *seg = strtok_r(copy, "/", &save); seg;
         seg = strtok_r(NULL, "/", &save), nseg++) {
        if (nseg == r->nseg) goto fail;
        const char *want = r->segments[nseg];
        size_t wl = strlen(want);
        if (want[0] == '{' && want[wl - 1] == '}') {
            if (nparams == MAX_PARAMS) goto fail;
            params[nparams].name = strndup(want + 1, wl - 2);
            params[nparams].value = strdup(seg);
            nparams++;
        } else if (strcmp(want, seg) != 0) {
            goto fail;
        }
    }
    if (nseg != r->nseg) goto fail;
    memcpy(req->params, params, sizeof(params[0]) * (size_t)nparams);
    req->nparams = nparams;
    return 1;
fail:
    for (int i = 0; i < nparams; i++) {
        free(params[i].name);
        free(params[i].value);
    }
    return 0;
}

/* Routes the request: 200 with req->route and its captures set; 405 when
 * the path matches only routes of other methods; 404 when it matches none. */
static int route_find(const kn_http_server *srv, const char *method, const char *path,
                      kn_http_req *req)
{
    int path_known = 0;
    for (int i = 0; i < srv->nroutes && !req->route; i++) {
        const http_route *r = &srv->routes[i];
        if (!route_match(r, path, req)) continue;
        path_known = 1;
        if (strcmp(r->method, method) == 0) req->route = r;
        else { /* captures of a route of another method */
            for (int k = 0; k < req->nparams; k++) {
                free(req->params[k].name);
                free(req->params[k].value);
            }
            req->nparams = 0;
        }
    }
    return req->route ? 200 : path_known ? 405 : 404;
}

int kn_http_server_lookup(const kn_http_server *srv, const char *method, const char *path,
                          const char **pattern, kn_http_capture *caps, int maxcaps, int *ncaps)
{
    kn_http_req req = {0};
    int status = 414;
    *pattern = NULL;
    *ncaps = 0;
    if (strlen(path) >= sizeof(req.path)) return status; /* as on_request answers */
    status = route_find(srv, method, path, &req);
    if (req.route) *pattern = req.route->pattern;
    for (int i = 0; i < req.nparams; i++) {
        if (i < maxcaps) {
            snprintf(caps[i].name, sizeof(caps[i].name), "%s", req.params[i].name);
            snprintf(caps[i].value, sizeof(caps[i].value), "%s", req.params[i].value);
            (*ncaps)++;
        }
        free(req.params[i].name);
        free(req.params[i].value);
    }
    return status;
}

/* --- responses --- */

static void req_set_response(kn_http_req *req, int status, struct MHD_Response *resp)
{
    if (!resp) return;
    if (req->resp) { /* answered twice: keep the first */
        MHD_destroy_response(resp);
        kn_log_warn("%s %s: handler answered twice", req->method, req->path);
        return;
    }
    for (int i = 0; i < req->nheaders; i++)
        MHD_add_response_header(resp, req->headers[i].name, req->headers[i].value);
    MHD_add_response_header(resp, "X-Request-Id", req->id);
    req->resp = resp;
    req->status = status;
}

void kn_http_add_header(kn_http_req *req, const char *name, const char *value)
{
    http_pair *grown = realloc(req->headers, sizeof(*grown) * (size_t)(req->nheaders + 1));
    if (!grown) return;
    req->headers = grown;
    req->headers[req->nheaders].name = strdup(name);
    req->headers[req->nheaders].value = strdup(value);
    req->nheaders++;
}

void kn_http_respond(kn_http_req *req, int status, const char *content_type, const void *body,
                     size_t len)
{
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY);
    if (resp && content_type) MHD_add_response_header(resp, "Content-Type", content_type);
    req_set_response(req, status, resp);
}

void kn_http_respond_json(kn_http_req *req, int status, json_t *body)
{
    char *text = body ? json_dumps(body, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    json_decref(body);
    if (!text) {
        kn_http_respond_error(req, 500, "internal", "could not encode the response");
        return;
    }
    size_t n = strlen(text);
    struct MHD_Response *resp = MHD_create_response_from_buffer(n, text, MHD_RESPMEM_MUST_FREE);
    if (!resp) {
        free(text);
        return;
    }
    MHD_add_response_header(resp, "Content-Type", "application/json");
    req_set_response(req, status, resp);
}

void kn_http_respond_error(kn_http_req *req, int status, const char *code, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    json_t *m = json_string(msg);
    if (!m) m = json_string("(message is not valid UTF-8)");
    json_t *doc =
        json_pack("{s:{s:s,s:o,s:s}}", "error", "code", code, "message", m, "request_id", req->id);
    if (status == 408 && doc && !req->resp && !req->early) /* see send_early */
        req->early = json_dumps(doc, JSON_COMPACT | JSON_PRESERVE_ORDER);
    kn_http_respond_json(req, status, doc);
}

typedef struct {
    kn_http_reader_cb reader;
    void *cls;
    void (*free_fn)(void *);
} stream_ctx;

static ssize_t stream_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    stream_ctx *s = cls;
    ssize_t n = s->reader(s->cls, pos, buf, max);
    if (n == KN_HTTP_STREAM_END) return MHD_CONTENT_READER_END_OF_STREAM;
    return n < 0 ? MHD_CONTENT_READER_END_WITH_ERROR : n;
}

static void stream_free(void *cls)
{
    stream_ctx *s = cls;
    if (s->free_fn) s->free_fn(s->cls);
    free(s);
}

void kn_http_respond_stream(kn_http_req *req, int status, const char *content_type,
                            uint64_t size, kn_http_reader_cb reader, void *cls,
                            void (*free_fn)(void *))
{
    stream_ctx *s = malloc(sizeof(*s));
    if (!s) {
        if (free_fn) free_fn(cls);
        kn_http_respond_error(req, 500, "internal", "out of memory");
        return;
    }
    *s = (stream_ctx){reader, cls, free_fn};
    struct MHD_Response *resp =
        MHD_create_response_from_callback(size, 64 * 1024, stream_read, s, stream_free);
    if (!resp) {
        stream_free(s);
        kn_http_respond_error(req, 500, "internal", "out of memory");
        return;
    }
    if (content_type) MHD_add_response_header(resp, "Content-Type", content_type);
    req_set_response(req, status, resp);
}

/* --- request accessors --- */

const char *kn_http_req_method(const kn_http_req *req) { return req->method; }
const char *kn_http_req_path(const kn_http_req *req) { return req->path; }
const char *kn_http_req_id(const kn_http_req *req) { return req->id; }

const char *kn_http_req_param(const kn_http_req *req, const char *name)
{
    for (int i = 0; i < req->nparams; i++)
        if (strcmp(req->params[i].name, name) == 0) return req->params[i].value;
    return NULL;
}

const char *kn_http_req_query(const kn_http_req *req, const char *key)
{
    return MHD_lookup_connection_value(req->conn, MHD_GET_ARGUMENT_KIND, key);
}

const char *kn_http_req_header(const kn_http_req *req, const char *name)
{
    return MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, name);
}

uint64_t kn_http_req_oversize(const kn_http_req *req)
{
    return req->oversize ? (req->oversize_len ? req->oversize_len : 1) : 0;
}

const char *kn_http_req_body(const kn_http_req *req, size_t *len)
{
    if (len) *len = req->body_len;
    return req->body;
}

json_t *kn_http_req_json(kn_http_req *req)
{
    json_error_t jerr;
    if (!req->body || req->body_len == 0) {
        kn_http_respond_error(req, 400, "bad_request", "a JSON object body is required");
        return NULL;
    }
    json_t *j = json_loadb(req->body, req->body_len, JSON_REJECT_DUPLICATES, &jerr);
    if (!j) {
        kn_http_respond_error(req, 400, "bad_json", "malformed JSON at line %d column %d: %s",
                              jerr.line, jerr.column, jerr.text);
        return NULL;
    }
    if (!json_is_object(j)) {
        json_decref(j);
        kn_http_respond_error(req, 400, "bad_request", "the body must be a JSON object");
        return NULL;
    }
    return j;
}

void kn_http_req_set_state(kn_http_req *req, void *state, void (*free_fn)(void *))
{
    req->state = state;
    req->state_free = free_fn;
}

void *kn_http_req_state(const kn_http_req *req) { return req->state; }

/* --- built-in routes --- */

static void handle_healthz(kn_http_req *req, void *ctx)
{
    (void)ctx;
    kn_http_respond_json(req, 200, json_pack("{s:s,s:s}", "status", "ok", "service",
                                             req->srv->service));
}

static void handle_readyz(kn_http_req *req, void *ctx)
{
    (void)ctx;
    char why[512] = "";
    kn_http_server *srv = req->srv;
    if (srv->opts.ready && srv->opts.ready(srv->opts.ready_ctx, why, sizeof(why)) != 0) {
        kn_http_respond_json(req, 503, json_pack("{s:s,s:s}", "status", "not ready", "reason",
                                                 why[0] ? why : "not ready"));
        return;
    }
    kn_http_respond_json(req, 200, json_pack("{s:s}", "status", "ready"));
}

static void handle_metrics(kn_http_req *req, void *ctx)
{
    (void)ctx;
    char *text = req->srv->opts.metrics ? kn_metrics_render(req->srv->opts.metrics) : strdup("");
    if (!text) {
        kn_http_respond_error(req, 500, "internal", "out of memory");
        return;
    }
    kn_http_respond(req, 200, "text/plain; version=0.0.4", text, strlen(text));
    free(text);
}

/* --- MHD callbacks --- */

static void req_free(kn_http_req *req)
{
    if (req->state_free) req->state_free(req->state);
    for (int i = 0; i < req->nparams; i++) {
        free(req->params[i].name);
        free(req->params[i].value);
    }
    for (int i = 0; i < req->nheaders; i++) {
        free(req->headers[i].name);
        free(req->headers[i].value);
    }
    free(req->headers);
    if (req->resp) MHD_destroy_response(req->resp);
    free(req->body);
    free(req->early);
    free(req);
}

/* A 408 decided while the body still arrives: libmicrohttpd 0.9 cannot queue
 * a response before the whole body is in, and waiting for a client that was
 * cut for slowness defeats the cut. The answer is written to the socket
 * directly and the connection closed (MHD_NO). */
static enum MHD_Result send_early(kn_http_req *req)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(req->conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (!ci) return MHD_NO;
    char head[256];
    int hn = snprintf(head, sizeof(head),
                      "HTTP/1.1 %d Request Timeout\r\nContent-Type: application/json\r\n"
                      "Content-Length: %zu\r\nX-Request-Id: %s\r\nConnection: close\r\n\r\n",
                      req->status, strlen(req->early), req->id);
    struct iovec iov[2] = {{head, (size_t)hn}, {req->early, strlen(req->early)}};
    struct msghdr mh = {.msg_iov = iov, .msg_iovlen = 2};
    if (sendmsg(ci->connect_fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT) < 0)
        kn_log_debug("%s %s: early answer not sent: %s", req->method, req->path, strerror(errno));
    shutdown(ci->connect_fd, SHUT_WR);
    return MHD_NO;
}

static enum MHD_Result queue(kn_http_req *req)
{
    if (!req->resp) {
        kn_log_error("%s %s: handler gave no answer", req->method, req->path);
        kn_http_respond_error(req, 500, "internal", "the handler gave no answer");
    }
    if (!req->resp) return MHD_NO;
    return MHD_queue_response(req->conn, (unsigned)req->status, req->resp);
}

static int valid_request_id(const char *s)
{
    size_t n = 0;
    for (; s[n]; n++)
        if (!((s[n] >= 'a' && s[n] <= 'z') || (s[n] >= 'A' && s[n] <= 'Z') ||
              (s[n] >= '0' && s[n] <= '9') || s[n] == '-' || s[n] == '_'))
            return 0;
    return n > 0 && n < 40;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_size, void **con_cls)
{
    (void)version;
    kn_http_server *srv = cls;
    kn_http_req *req = *con_cls;

    if (!req) { /* step 1: headers */
        req = calloc(1, sizeof(*req));
        if (!req) return MHD_NO;
        *con_cls = req;
        req->srv = srv;
        req->conn = conn;
        req->method = method;
        clock_gettime(CLOCK_MONOTONIC, &req->start);
        const char *rid = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "X-Request-Id");
        if (rid && valid_request_id(rid))
            snprintf(req->id, sizeof(req->id), "%s", rid);
        else
            snprintf(req->id, sizeof(req->id), "%s-%llu-%llx", srv->service,
                     (unsigned long long)atomic_fetch_add(&srv->next_id, 1),
                     (unsigned long long)req->start.tv_nsec);
        if (srv->requests_in_flight) kn_metrics_add(srv->requests_in_flight, 1);
        if (strlen(url) >= sizeof(req->path)) {
            kn_http_respond_error(req, 414, "uri_too_long", "the path is longer than %zu bytes",
                                  sizeof(req->path) - 1);
            return queue(req);
        }
        snprintf(req->path, sizeof(req->path), "%s", url);

        int found = route_find(srv, method, url, req);
        if (found != 200) {
            if (found == 405)
                kn_http_respond_error(req, 405, "method_not_allowed",
                                      "%s is not allowed on %s", method, url);
            else
                kn_http_respond_error(req, 404, "not_found", "no such endpoint: %s", url);
            return queue(req);
        }
        const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Content-Length");
        if (cl && !req->route->body_cb && strtoull(cl, NULL, 10) > srv->opts.max_body) {
            req->oversize = 1;
            req->oversize_len = strtoull(cl, NULL, 10);
            if (srv->opts.oversize_to_handler)
                req->route->handler(req, req->route->ctx);
            else
                kn_http_respond_error(req, 413, "too_large",
                                      "the body is over the %zu byte limit", srv->opts.max_body);
            return queue(req);
        }
        return MHD_YES;
    }

    if (*upload_size > 0) { /* step 2: body bytes */
        size_t n = *upload_size;
        *upload_size = 0;
        if (req->oversize && !req->resp) req->oversize_len += n;
        if (req->resp || req->body_stopped) return MHD_YES; /* discard: answer is decided */
        if (req->route->body_cb) {
            if (req->route->body_cb(req, upload_data, n, req->route->ctx) != 0) {
                req->body_stopped = 1;
                if (req->early) return send_early(req);
            }
            return MHD_YES;
        }
        if (req->body_len + n > srv->opts.max_body) {
            req->oversize = 1;
            req->oversize_len = req->body_len + n;
            req->body_stopped = 1;
            free(req->body);
            req->body = NULL;
            req->body_len = 0;
            return MHD_YES;
        }
        char *grown = realloc(req->body, req->body_len + n + 1);
        if (!grown) return MHD_NO;
        memcpy(grown + req->body_len, upload_data, n);
        req->body = grown;
        req->body_len += n;
        req->body[req->body_len] = '\0';
        return MHD_YES;
    }

    /* step 3: the whole request is in */
    if (req->resp) return queue(req);
    if (req->oversize && !srv->opts.oversize_to_handler)
        kn_http_respond_error(req, 413, "too_large", "the body is over the %zu byte limit",
                              srv->opts.max_body);
    else
        req->route->handler(req, req->route->ctx);
    return queue(req);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    (void)conn;
    kn_http_server *srv = cls;
    kn_http_req *req = *con_cls;
    if (!req) return;
    struct timespec end;
    clock_gettime(CLOCK_MONOTONIC, &end);
    double secs = (double)(end.tv_sec - req->start.tv_sec) +
                  (double)(end.tv_nsec - req->start.tv_nsec) / 1e9;
    if (req->route && req->route->latency) kn_metrics_observe(req->route->latency, secs);
    if (srv->opts.metrics) {
        char labels[64];
        snprintf(labels, sizeof(labels), "code=\"%d\"", req->status ? req->status : 0);
        kn_metrics_add(kn_metrics_counter(srv->opts.metrics, "kiln_http_requests_total",
                                          "HTTP requests answered, by status", labels),
                       1);
    }
    if (srv->requests_in_flight) kn_metrics_add(srv->requests_in_flight, -1);
    if (toe != MHD_REQUEST_TERMINATED_COMPLETED_OK && req->status >= 500)
        kn_log_warn("%s %s: request ended early (code %d)", req->method, req->path, (int)toe);
    req_free(req);
    *con_cls = NULL;
}

int kn_http_server_start(kn_http_server *srv, char *errbuf, size_t errsz)
{
    kn_http_server_route(srv, "GET", "/healthz", handle_healthz, NULL, NULL);
    kn_http_server_route(srv, "GET", "/readyz", handle_readyz, NULL, NULL);
    kn_http_server_route(srv, "GET", "/metrics", handle_metrics, NULL, NULL);

    struct sockaddr_in addr;
    memset(&addr, 0, sizeof(addr));
    addr.sin_family = AF_INET;
    addr.sin_port = htons(srv->opts.port);
    if (inet_pton(AF_INET, srv->bind_addr, &addr.sin_addr) != 1)
        return kn_seterr(errbuf, errsz, KN_EINVAL, "bad bind address '%s' (IPv4 expected)",
                         srv->bind_addr);
    srv->daemon = MHD_start_daemon(
        MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_AUTO,
        srv->opts.port, NULL, NULL, on_request, srv, MHD_OPTION_SOCK_ADDR,
        (struct sockaddr *)&addr, MHD_OPTION_CONNECTION_TIMEOUT, srv->opts.timeout_s,
        MHD_OPTION_CONNECTION_LIMIT, srv->opts.max_connections,
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)(64 * 1024), MHD_OPTION_NOTIFY_COMPLETED,
        on_completed, srv, MHD_OPTION_END);
    if (!srv->daemon)
        return kn_seterr(errbuf, errsz, KN_EIO, "cannot listen on %s:%u (port in use?)",
                         srv->bind_addr, srv->opts.port);
    return KN_OK;
}

uint16_t kn_http_server_port(const kn_http_server *srv)
{
    if (!srv->daemon) return 0;
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(srv->daemon, MHD_DAEMON_INFO_BIND_PORT);
    return info ? info->port : 0;
}

void kn_http_server_destroy(kn_http_server *srv)
{
    if (!srv) return;
    if (srv->daemon) MHD_stop_daemon(srv->daemon);
    for (int i = 0; i < srv->nroutes; i++) {
        free(srv->routes[i].method);
        free(srv->routes[i].pattern);
        for (int k = 0; k < srv->routes[i].nseg; k++) free(srv->routes[i].segments[k]);
    }
    free(srv->service);
    free(srv->bind_addr);
    free(srv);
}
