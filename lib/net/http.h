/* lib/net/ (uses core): HTTP — the server every service embeds (http.h, on
 * libmicrohttpd, with /healthz /readyz /metrics), multipart form parsing
 * (multipart.h) and the registry's client on libcurl (regclient.h).
 *
 * http.h: the HTTP server every service embeds, on libmicrohttpd.
 *
 * Routes are (method, pattern) pairs; a pattern's `{name}` segment captures
 * one path segment (percent-decoded). Every server answers GET /healthz,
 * /readyz and /metrics itself. One thread per connection, so a handler may
 * block (on PostgreSQL, on a Kafka acknowledgement) without stalling others.
 *
 * Request bodies are buffered up to max_body bytes, unless the route has a
 * body callback, which then sees the body chunk by chunk (streaming uploads).
 * Handlers answer with exactly one kn_http_respond_*() call; a handler that
 * answers nothing gets a 500. Errors are JSON: {"error":{"code":..,"message":..}}. */
#ifndef KN_HTTP_H
#define KN_HTTP_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <jansson.h>

#include "core/metrics.h"

typedef struct kn_http_server kn_http_server;
typedef struct kn_http_req kn_http_req;

/* Answers the request (must call one kn_http_respond_*). */
typedef void (*kn_http_handler)(kn_http_req *req, void *ctx);

/* Streaming body: called for each chunk (len > 0) as it arrives. Return 0 to
 * go on; non-zero to stop reading: the handler is then still called, and
 * should answer from the state the callback left (see kn_http_req_set_state).
 * A 408 answered by the callback is sent at once and the connection closed,
 * without reading the rest of the body (a slow client cut is not waited for). */
typedef int (*kn_http_body_cb)(kn_http_req *req, const char *data, size_t len, void *ctx);

/* Readiness probe: 0 when ready; otherwise fill why and return non-zero. */
typedef int (*kn_http_ready_cb)(void *ctx, char *why, size_t whysz);

/* Streaming response: copy up to max bytes at pos into buf; return the count,
 * or -1 on error (the connection is closed), or KN_HTTP_STREAM_END to end a
 * response of size KN_HTTP_SIZE_UNKNOWN (sent chunked). One thread serves
 * each connection, so the reader may block until it has bytes. */
#define KN_HTTP_STREAM_END   ((ssize_t)-2)
#define KN_HTTP_SIZE_UNKNOWN UINT64_MAX
typedef ssize_t (*kn_http_reader_cb)(void *cls, uint64_t pos, char *buf, size_t max);

typedef struct {
    const char *bind_addr;   /* "127.0.0.1" (default) or "0.0.0.0" */
    uint16_t port;           /* 0: an ephemeral port (see kn_http_server_port) */
    const char *service;     /* for logs and metrics */
    size_t max_body;         /* bytes buffered for a non-streaming route (default 8 MiB) */
    unsigned timeout_s;      /* idle connection timeout, against slow clients (default 30) */
    unsigned max_connections;/* default 256 */
    kn_metrics *metrics;     /* registry rendered at /metrics (may be NULL); not owned */
    kn_http_ready_cb ready;  /* may be NULL: always ready */
    void *ready_ctx;
    /* 0: a body over max_body is answered 413 here. 1: the route's handler is
     * still called (without the body) and sees kn_http_req_oversize(), so a
     * service can record the refusal before answering (ingest's DLQ). */
    int oversize_to_handler;
} kn_http_options;

/* Creates a server (not yet listening). Caller frees with destroy. */
kn_http_server *kn_http_server_new(const kn_http_options *opts);

/* Adds a route before start. body_cb may be NULL. Returns KN_OK or KN_EINVAL. */
int kn_http_server_route(kn_http_server *srv, const char *method, const char *pattern,
                         kn_http_handler handler, kn_http_body_cb body_cb, void *ctx);

/* Routing alone, exactly as a request for (method, path) is routed, path
 * already percent-decoded (libmicrohttpd does that before routing): for
 * tests and the fuzzer. 200: *pattern is the matched route's pattern (owned
 * by srv) and the first maxcaps captures are copied to caps (*ncaps of them,
 * cut to fit); 404: no route's path matches; 405: only routes of other
 * methods match; 414: the path is over 1023 bytes. Out of memory while
 * capturing reads as no match. */
typedef struct {
    char name[64];
    char value[1024];
} kn_http_capture;
int kn_http_server_lookup(const kn_http_server *srv, const char *method, const char *path,
                          const char **pattern, kn_http_capture *caps, int maxcaps, int *ncaps);

int kn_http_server_start(kn_http_server *srv, char *errbuf, size_t errsz);
uint16_t kn_http_server_port(const kn_http_server *srv);

/* Stops listening, waits for handlers in flight, frees. Accepts NULL. */
void kn_http_server_destroy(kn_http_server *srv);

/* --- the request (valid until the response is sent) --- */
const char *kn_http_req_method(const kn_http_req *req);
const char *kn_http_req_path(const kn_http_req *req);
const char *kn_http_req_id(const kn_http_req *req);          /* unique per request */
const char *kn_http_req_param(const kn_http_req *req, const char *name); /* {name} capture */
const char *kn_http_req_query(const kn_http_req *req, const char *key);  /* NULL if absent */
const char *kn_http_req_header(const kn_http_req *req, const char *name);
/* With oversize_to_handler: the body's size when it was over max_body (the
 * declared Content-Length, or the bytes seen), else 0. */
uint64_t kn_http_req_oversize(const kn_http_req *req);
/* Buffered body (NULL and 0 for streaming routes or no body). */
const char *kn_http_req_body(const kn_http_req *req, size_t *len);
/* Parses the buffered body as a JSON object; on failure answers 400 itself and
 * returns NULL. Caller owns the result. */
json_t *kn_http_req_json(kn_http_req *req);

/* Per-request state for streaming handlers; `free_fn` (may be NULL) runs when
 * the request ends, answered or not (client gone, timeout). */
void kn_http_req_set_state(kn_http_req *req, void *state, void (*free_fn)(void *));
void *kn_http_req_state(const kn_http_req *req);

/* --- responses --- */
/* Adds a header to the coming response (copied). */
void kn_http_add_header(kn_http_req *req, const char *name, const char *value);
/* body copied */
void kn_http_respond(kn_http_req *req, int status, const char *content_type, const void *body,
                     size_t len);
/* body consumed */
void kn_http_respond_json(kn_http_req *req, int status, json_t *body);
void kn_http_respond_error(kn_http_req *req, int status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Streams `size` bytes (or KN_HTTP_SIZE_UNKNOWN: until the reader says
 * KN_HTTP_STREAM_END) from reader; free_fn(cls) runs when done, also when
 * the client went away. */
void kn_http_respond_stream(kn_http_req *req, int status, const char *content_type,
                            uint64_t size, kn_http_reader_cb reader, void *cls,
                            void (*free_fn)(void *));

#endif
