/* test_trainer_lease.c: trainer/lease.c's trn_lease_take against a
 * scripted lib/net/http server on a loopback port (the real registry's
 * rules have tests/integration/test_trainer_fencing.c): what it waits out
 * and what it gives up on at once.
 *  - the registry failing (503, 500) for a while, as it does while its
 *    PostgreSQL restarts: waited out within lease_wait_s, then taken (the
 *    chaos run's trainer, started 2 s after a PostgreSQL restart, exited
 *    on the first 503 and counted as a crash);
 *  - the registry away (connection refused) past lease_wait_s: an error
 *    saying so, after waiting;
 *  - another trainer's lease (409 lease_held): waited, then KN_ECONFLICT
 *    naming the holder;
 *  - a refusal (400, 401): returned at once. */
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
#include "trainer.h"

#include "dead_url.h"

/* batcher.c's, which this test does not link */
double trn_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

typedef struct {
    int fail_first; /* answer fail_status (with fail_code) this many times, then the lease */
    int fail_status;
    const char *fail_code;
    int hits;
} script;

static script S;
static kn_http_server *srv;
static char base[64];

static void on_lease(kn_http_req *req, void *ctx)
{
    (void)ctx;
    S.hits++;
    if (S.hits <= S.fail_first) {
        kn_http_respond_error(req, S.fail_status, S.fail_code, "scripted failure %d", S.hits);
        return;
    }
    kn_http_respond_json(
        req, 200,
        json_pack("{s:s,s:s,s:i,s:b}", "model", "m", "holder", "h", "epoch", 3, "acquired", 1));
}

static int setup(void **state)
{
    (void)state;
    kn_http_options o = {.service = "test-trainer-lease"};
    srv = kn_http_server_new(&o);
    char e[256];
    if (!srv ||
        kn_http_server_route(srv, "POST", "/v1/models/{name}/lease", on_lease, NULL, NULL) ||
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

static void arm(int fail_first, int fail_status, const char *fail_code)
{
    S = (script){.fail_first = fail_first, .fail_status = fail_status, .fail_code = fail_code};
}

/* the registry failing for ~2 s (one try a second): waited out, taken */
static void test_registry_failing_waited_out(void **state)
{
    (void)state;
    kn_regclient *c = kn_regclient_new(base, "tok");
    char e[512];
    trn_lease l;
    arm(2, 503, "db_unavailable");
    double t0 = trn_now();
    assert_int_equal(trn_lease_take(c, "m", 10, 30, &l, e, sizeof(e)), KN_OK);
    assert_int_equal(S.hits, 3);
    assert_int_equal(l.epoch, 3);
    assert_true(trn_now() - t0 >= 1.8 && trn_now() - t0 < 10);
    arm(1, 500, "internal");
    assert_int_equal(trn_lease_take(c, "m", 10, 30, &l, e, sizeof(e)), KN_OK);
    assert_int_equal(S.hits, 2);
    kn_regclient_destroy(c);
}

/* nobody listening past lease_wait_s: an error after the wait */
static void test_registry_away_past_the_wait(void **state)
{
    (void)state;
    char e[512], url[64];
    dead_url(url, sizeof(url));
    kn_regclient *c = kn_regclient_new(url, "tok");
    trn_lease l;
    double t0 = trn_now();
    assert_int_equal(trn_lease_take(c, "m", 10, 2, &l, e, sizeof(e)), KN_EHTTP);
    assert_true(trn_now() - t0 >= 1.9 && trn_now() - t0 < 10);
    assert_non_null(strstr(e, "the registry did not answer the training lease of m"));
    assert_int_equal(l.epoch, 0);
    kn_regclient_destroy(c);
}

/* another trainer's lease: waited, then KN_ECONFLICT naming it */
static void test_held_lease(void **state)
{
    (void)state;
    kn_regclient *c = kn_regclient_new(base, "tok");
    char e[512];
    trn_lease l;
    arm(1000, 409, "lease_held");
    double t0 = trn_now();
    assert_int_equal(trn_lease_take(c, "m", 10, 2, &l, e, sizeof(e)), KN_ECONFLICT);
    assert_true(trn_now() - t0 >= 1.9);
    assert_true(S.hits >= 2);
    assert_non_null(strstr(e, "another trainer holds model m"));
    kn_regclient_destroy(c);
}

/* refusals are final: no wait */
static void test_refusals_at_once(void **state)
{
    (void)state;
    kn_regclient *c = kn_regclient_new(base, "tok");
    char e[512];
    trn_lease l;
    arm(1000, 400, "bad_request");
    double t0 = trn_now();
    assert_int_equal(trn_lease_take(c, "m", 10, 30, &l, e, sizeof(e)), KN_EINVAL);
    arm(1000, 401, "unauthorized");
    assert_int_equal(trn_lease_take(c, "m", 10, 30, &l, e, sizeof(e)), KN_EAUTH);
    assert_int_equal(S.hits, 1);
    assert_true(trn_now() - t0 < 5);
    kn_regclient_destroy(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_registry_failing_waited_out),
        cmocka_unit_test(test_registry_away_past_the_wait),
        cmocka_unit_test(test_held_lease),
        cmocka_unit_test(test_refusals_at_once),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
