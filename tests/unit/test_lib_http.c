/* Unit tests for lib/http: routing, captures, buffered and streaming bodies,
 * limits, JSON errors and the built-in endpoints, through a real server on an
 * ephemeral loopback port driven by libcurl. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <curl/curl.h>

#include "net/http.h"
#include "core/kn.h"

typedef struct {
    char *data;
    size_t len;
} buf_t;

static size_t on_data(char *p, size_t sz, size_t n, void *ud)
{
    buf_t *b = ud;
    b->data = realloc(b->data, b->len + sz * n + 1);
    memcpy(b->data + b->len, p, sz * n);
    b->len += sz * n;
    b->data[b->len] = '\0';
    return sz * n;
}

/* Performs a request; returns the status and fills body (caller frees). */
static long request(uint16_t port, const char *method, const char *path, const char *body,
                    size_t body_len, buf_t *out)
{
    char url[512];
    snprintf(url, sizeof(url), "http://127.0.0.1:%u%s", port, path);
    CURL *c = curl_easy_init();
    memset(out, 0, sizeof(*out));
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, out);
    struct curl_slist *h = curl_slist_append(NULL, "Expect:");
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    if (body) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_len);
    }
    long status = 0;
    assert_int_equal(curl_easy_perform(c), CURLE_OK);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    return status;
}

static void echo_handler(kn_http_req *req, void *ctx)
{
    (void)ctx;
    size_t len;
    const char *body = kn_http_req_body(req, &len);
    json_t *j = json_pack("{s:s,s:s?,s:s?,s:I}", "name", kn_http_req_param(req, "name"), "v",
                          kn_http_req_param(req, "v"), "q", kn_http_req_query(req, "q"), "len",
                          (json_int_t)len);
    (void)body;
    kn_http_respond_json(req, 200, j);
}

static void json_handler(kn_http_req *req, void *ctx)
{
    (void)ctx;
    json_t *j = kn_http_req_json(req);
    if (!j) return; /* answered 400 already */
    kn_http_respond_json(req, 201, j);
}

typedef struct {
    size_t total;
} upload_state;

static int upload_chunk(kn_http_req *req, const char *data, size_t len, void *ctx)
{
    (void)ctx;
    (void)data;
    upload_state *s = kn_http_req_state(req);
    if (!s) {
        s = calloc(1, sizeof(*s));
        kn_http_req_set_state(req, s, free);
    }
    s->total += len;
    return 0;
}

static void upload_done(kn_http_req *req, void *ctx)
{
    (void)ctx;
    upload_state *s = kn_http_req_state(req);
    kn_http_respond_json(req, 200, json_pack("{s:I}", "bytes", (json_int_t)(s ? s->total : 0)));
}

static void silent_handler(kn_http_req *req, void *ctx)
{
    (void)req;
    (void)ctx;
}

static int ready_flag;
static int ready_cb(void *ctx, char *why, size_t whysz)
{
    (void)ctx;
    if (ready_flag) return 0;
    snprintf(why, whysz, "database unreachable");
    return 1;
}

static void http_server_routes(void **state)
{
    (void)state;
    kn_metrics *m = kn_metrics_new();
    kn_http_options o = {.port = 0, .service = "test", .max_body = 1024, .metrics = m,
                         .ready = ready_cb};
    kn_http_server *srv = kn_http_server_new(&o);
    assert_int_equal(kn_http_server_route(srv, "GET", "/v1/models/{name}", echo_handler, NULL, NULL), KN_OK);
    kn_http_server_route(srv, "GET", "/v1/models/{name}/versions/{v}", echo_handler, NULL, NULL);
    kn_http_server_route(srv, "POST", "/v1/json", json_handler, NULL, NULL);
    kn_http_server_route(srv, "PUT", "/v1/upload", upload_done, upload_chunk, NULL);
    kn_http_server_route(srv, "GET", "/v1/silent", silent_handler, NULL, NULL);
    char err[256];
    assert_int_equal(kn_http_server_start(srv, err, sizeof(err)), KN_OK);
    uint16_t port = kn_http_server_port(srv);
    assert_true(port > 0);
    buf_t b;

    assert_int_equal(request(port, "GET", "/v1/models/mnist?q=x%20y", NULL, 0, &b), 200);
    assert_non_null(strstr(b.data, "\"name\":\"mnist\""));
    assert_non_null(strstr(b.data, "\"q\":\"x y\""));
    free(b.data);
    assert_int_equal(request(port, "GET", "/v1/models/a/versions/7", NULL, 0, &b), 200);
    assert_non_null(strstr(b.data, "\"v\":\"7\""));
    free(b.data);

    /* Unknown path, wrong method. */
    assert_int_equal(request(port, "GET", "/v2/nothing", NULL, 0, &b), 404);
    assert_non_null(strstr(b.data, "\"code\":\"not_found\""));
    free(b.data);
    assert_int_equal(request(port, "DELETE", "/v1/models/a", NULL, 0, &b), 405);
    free(b.data);

    /* JSON bodies: good, malformed, not an object, too large. */
    assert_int_equal(request(port, "POST", "/v1/json", "{\"a\":1}", 7, &b), 201);
    assert_string_equal(b.data, "{\"a\":1}");
    free(b.data);
    assert_int_equal(request(port, "POST", "/v1/json", "{\"a\":", 5, &b), 400);
    assert_non_null(strstr(b.data, "bad_json"));
    free(b.data);
    assert_int_equal(request(port, "POST", "/v1/json", "[1]", 3, &b), 400);
    free(b.data);
    char *big = malloc(4096);
    memset(big, 'x', 4096);
    assert_int_equal(request(port, "POST", "/v1/json", big, 4096, &b), 413);
    free(b.data);

    /* Streaming routes see every byte and are not bound by max_body. */
    char *huge = malloc(3 << 20);
    memset(huge, 'y', 3 << 20);
    assert_int_equal(request(port, "PUT", "/v1/upload", huge, 3 << 20, &b), 200);
    assert_non_null(strstr(b.data, "\"bytes\":3145728"));
    free(b.data);
    free(huge);
    free(big);

    /* A handler that answers nothing gets a 500, not a hang. */
    assert_int_equal(request(port, "GET", "/v1/silent", NULL, 0, &b), 500);
    free(b.data);

    /* Built-ins. */
    assert_int_equal(request(port, "GET", "/healthz", NULL, 0, &b), 200);
    free(b.data);
    ready_flag = 0;
    assert_int_equal(request(port, "GET", "/readyz", NULL, 0, &b), 503);
    assert_non_null(strstr(b.data, "database unreachable"));
    free(b.data);
    ready_flag = 1;
    assert_int_equal(request(port, "GET", "/readyz", NULL, 0, &b), 200);
    free(b.data);
    assert_int_equal(request(port, "GET", "/metrics", NULL, 0, &b), 200);
    assert_non_null(strstr(b.data, "kiln_http_request_duration_seconds_bucket"));
    assert_non_null(strstr(b.data, "kiln_http_requests_total{code=\"404\"}"));
    free(b.data);

    kn_http_server_destroy(srv);
    kn_metrics_destroy(m);
}

/* kn_http_server_lookup (what fuzz_http drives) routes exactly as requests
 * are routed above: the first route of the method wins, captures in order,
 * 405 when only other methods match, 414 past 1023 bytes. */
static void http_lookup(void **state)
{
    (void)state;
    kn_http_options o = {.service = "test"};
    kn_http_server *srv = kn_http_server_new(&o);
    kn_http_server_route(srv, "GET", "/", echo_handler, NULL, NULL);
    kn_http_server_route(srv, "GET", "/v1/models/{name}", echo_handler, NULL, NULL);
    kn_http_server_route(srv, "PUT", "/v1/models/{name}/versions/{v}", echo_handler, NULL, NULL);
    kn_http_capture caps[2];
    const char *pattern;
    int n;
    assert_int_equal(kn_http_server_lookup(srv, "PUT", "/v1/models/a b/versions/7", &pattern,
                                           caps, 2, &n),
                     200);
    assert_string_equal(pattern, "/v1/models/{name}/versions/{v}");
    assert_int_equal(n, 2);
    assert_string_equal(caps[0].name, "name");
    assert_string_equal(caps[0].value, "a b");
    assert_string_equal(caps[1].name, "v");
    assert_string_equal(caps[1].value, "7");
    /* fewer slots than captures: the first ones */
    assert_int_equal(kn_http_server_lookup(srv, "PUT", "//v1/models/x//versions/y/", &pattern,
                                           caps, 1, &n),
                     200);
    assert_int_equal(n, 1);
    assert_string_equal(caps[0].value, "x");
    assert_int_equal(kn_http_server_lookup(srv, "GET", "/", &pattern, caps, 2, &n), 200);
    assert_string_equal(pattern, "/");
    assert_int_equal(n, 0);
    assert_int_equal(kn_http_server_lookup(srv, "DELETE", "/v1/models/a", &pattern, caps, 2, &n),
                     405);
    assert_null(pattern);
    assert_int_equal(n, 0);
    assert_int_equal(kn_http_server_lookup(srv, "GET", "/v1/model/a", &pattern, caps, 2, &n), 404);
    char path[1100];
    memset(path, 'a', sizeof(path) - 1);
    path[0] = '/';
    path[sizeof(path) - 1] = '\0';
    assert_int_equal(kn_http_server_lookup(srv, "GET", path, &pattern, caps, 2, &n), 414);
    path[1023] = '\0';
    assert_int_equal(kn_http_server_lookup(srv, "GET", path, &pattern, caps, 2, &n), 404);
    kn_http_server_destroy(srv);
}

int main(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    const struct CMUnitTest tests[] = {cmocka_unit_test(http_server_routes),
                                       cmocka_unit_test(http_lookup)};
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    curl_global_cleanup();
    return rc;
}
