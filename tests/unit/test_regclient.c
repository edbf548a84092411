/* test_regclient.c: lib/net/regclient's retry promise (regclient.h): GETs and
 * writes carrying an Idempotency-Key are retried on 503 and network errors, 3
 * tries with backoff; other writes and other statuses are answered at once.
 * A scripted lib/net/http server on a loopback port counts every request
 * and answers 503 a chosen number of times before succeeding. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "core/kn.h"
#include "net/http.h"
#include "net/regclient.h"

#include "dead_url.h"

typedef struct {
    int fail_first; /* answer fail_status this many times, then succeed */
    int fail_status;
    int hits;
    int keyed_hits; /* requests that carried an Idempotency-Key */
} script;

static script S;

static void answer(kn_http_req *req, int ok_status, json_t *ok_body)
{
    S.hits++;
    if (kn_http_req_header(req, "Idempotency-Key")) S.keyed_hits++;
    if (S.hits <= S.fail_first) {
        json_decref(ok_body);
        kn_http_respond_error(req, S.fail_status, "scripted", "scripted failure %d", S.hits);
        return;
    }
    kn_http_respond_json(req, ok_status, ok_body);
}

static void on_models(kn_http_req *req, void *ctx)
{
    (void)ctx;
    answer(req, 200, json_pack("{s:[]}", "models"));
}

static void on_versions(kn_http_req *req, void *ctx)
{
    (void)ctx;
    answer(req, 201, json_pack("{s:i}", "version", 7));
}

static void on_alias(kn_http_req *req, void *ctx)
{
    (void)ctx;
    answer(req, 200, json_pack("{s:i}", "version", 3));
}

static kn_http_server *srv;
static char base[64];

static int setup(void **state)
{
    (void)state;
    kn_http_options o = {.service = "test-regclient"};
    srv = kn_http_server_new(&o);
    char e[256];
    if (!srv || kn_http_server_route(srv, "GET", "/v1/models", on_models, NULL, NULL) ||
        kn_http_server_route(srv, "POST", "/v1/models/{name}/versions", on_versions, NULL, NULL) ||
        kn_http_server_route(srv, "PUT", "/v1/models/{name}/aliases/{alias}", on_alias, NULL,
                             NULL) ||
        kn_http_server_start(srv, e, sizeof(e)))
        return -1;
    snprintf(base, sizeof(base), "http://127.0.0.1:%u", kn_http_server_port(srv));
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    kn_http_server_destroy(srv);
    return 0;
}

static void arm(int fail_first, int fail_status)
{
    S = (script){.fail_first = fail_first, .fail_status = fail_status};
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void test_get_retries(void **state)
{
    (void)state;
    kn_regclient *c = kn_regclient_new(base, "tok");
    char e[256];
    json_t *out = NULL;
    /* two 503s, then an answer: the caller sees only the answer */
    arm(2, 503);
    double t0 = now_s();
    assert_int_equal(kn_regclient_list_models(c, &out, e, sizeof(e)), KN_OK);
    double took = now_s() - t0;
    assert_int_equal(S.hits, 3);
    assert_non_null(json_object_get(out, "models"));
    json_decref(out);
    assert_true(took >= 0.55); /* backoff 0.2 s then 0.4 s */
    /* 503 three times: the third is the last try */
    arm(3, 503);
    assert_int_equal(kn_regclient_list_models(c, &out, e, sizeof(e)), KN_EHTTP);
    assert_int_equal(S.hits, 3);
    assert_int_equal(kn_regclient_last_status(c), 503);
    assert_null(out);
    /* other errors are final: 500, 404 */
    arm(1, 500);
    assert_int_equal(kn_regclient_list_models(c, &out, e, sizeof(e)), KN_EHTTP);
    assert_int_equal(S.hits, 1);
    arm(1, 404);
    assert_int_equal(kn_regclient_list_models(c, &out, e, sizeof(e)), KN_ENOTFOUND);
    assert_int_equal(S.hits, 1);
    kn_regclient_destroy(c);
}

static void test_writes(void **state)
{
    (void)state;
    kn_regclient *c = kn_regclient_new(base, "tok");
    char e[256];
    int v = 0;
    /* with an idempotency key a create is retried and every try carries it */
    arm(1, 503);
    assert_int_equal(
        kn_regclient_create_version(c, "m", "key-1", NULL, NULL, &v, NULL, e, sizeof(e)), KN_OK);
    assert_int_equal(v, 7);
    assert_int_equal(S.hits, 2);
    assert_int_equal(S.keyed_hits, 2);
    /* without one it is not: a retry could create a second version */
    arm(1, 503);
    v = 0;
    assert_int_equal(kn_regclient_create_version(c, "m", NULL, NULL, NULL, &v, NULL, e, sizeof(e)),
                     KN_EHTTP);
    assert_int_equal(S.hits, 1);
    assert_int_equal(v, 0);
    /* an alias move (compare-and-set, no key) is not retried either */
    arm(1, 503);
    assert_int_equal(kn_regclient_set_alias(c, "m", "production", 3, 2, "test", NULL, e, sizeof(e)),
                     KN_EHTTP);
    assert_int_equal(S.hits, 1);
    kn_regclient_destroy(c);
}

static void test_network_error_retried(void **state)
{
    (void)state;
    /* a port nobody listens on: connection refused, retried with backoff */
    char e[256], url[64];
    dead_url(url, sizeof(url));
    kn_regclient *c = kn_regclient_new(url, NULL);
    json_t *out = NULL;
    double t0 = now_s();
    assert_int_equal(kn_regclient_list_models(c, &out, e, sizeof(e)), KN_EHTTP);
    double took = now_s() - t0;
    assert_int_equal(kn_regclient_last_status(c), 0);
    assert_true(took >= 0.55 && took < 10);
    kn_regclient_destroy(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_get_retries),
        cmocka_unit_test(test_writes),
        cmocka_unit_test(test_network_error_retried),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
