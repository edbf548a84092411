/* Unit: the evaluator's error classifier (issue 18, finding 5): which failed
 * registry or scoring calls are retried with backoff (transient), which
 * reject the version and move on (permanent), and which re-read and decide
 * again (409). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <cmocka.h>

#include "core/kn.h"
#include "evaluator.h"

typedef struct {
    int rc;
    int status; /* HTTP status of the answer; 0: none came */
    ev_errclass want;
    const char *what;
} class_case;

static const class_case cases[] = {
    {KN_OK, 200, EV_ERR_NONE, "success"},
    /* permanent: the request or the version is wrong; retrying cannot help */
    {KN_EINVAL, 400, EV_ERR_PERMANENT, "400 bad request"},
    {KN_EAUTH, 403, EV_ERR_PERMANENT, "403 role missing"},
    {KN_ENOTFOUND, 404, EV_ERR_PERMANENT, "404 not found"},
    {KN_EINVAL, 405, EV_ERR_PERMANENT, "405"},
    {KN_ETOOBIG, 413, EV_ERR_PERMANENT, "413 too large"},
    {KN_EINVAL, 422, EV_ERR_PERMANENT, "422 digest mismatch"},
    {KN_ECORRUPT, 0, EV_ERR_PERMANENT, "a checkpoint that is not safetensors"},
    {KN_ENOMEM, 0, EV_ERR_PERMANENT, "out of memory loading a huge checkpoint"},
    {KN_EUNSUPPORTED, 0, EV_ERR_PERMANENT, "an unknown layer"},
    {KN_EINVAL, 0, EV_ERR_PERMANENT, "a model that does not fit the eval set"},
    /* transient: the other side is down or busy */
    {KN_EHTTP, 0, EV_ERR_TRANSIENT, "connection refused"},
    {KN_ETIMEDOUT, 0, EV_ERR_TRANSIENT, "timed out"},
    {KN_EKAFKA, 0, EV_ERR_TRANSIENT, "Kafka"},
    {KN_EIO, 0, EV_ERR_TRANSIENT, "disk"},
    {KN_ERR, 0, EV_ERR_TRANSIENT, "unspecified"},
    {KN_EHTTP, 500, EV_ERR_TRANSIENT, "500"},
    {KN_EHTTP, 502, EV_ERR_TRANSIENT, "502"},
    {KN_EHTTP, 503, EV_ERR_TRANSIENT, "503 Retry-After"},
    {KN_EHTTP, 408, EV_ERR_TRANSIENT, "408"},
    {KN_EHTTP, 429, EV_ERR_TRANSIENT, "429"},
    {KN_EAUTH, 401, EV_ERR_TRANSIENT, "401: our own token, fixed by an operator"},
    /* 409: re-read and decide again */
    {KN_ECONFLICT, 409, EV_ERR_CONFLICT, "409"},
    {KN_ECONFLICT, 0, EV_ERR_CONFLICT, "a conflict without an answer"},
};

static void classify_table(void **state)
{
    (void)state;
    int bad = 0;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        ev_errclass got = ev_classify(cases[i].rc, cases[i].status);
        if (got != cases[i].want) {
            fprintf(stderr, "%s (rc %d, HTTP %d): got class %d, want %d\n", cases[i].what,
                    cases[i].rc, cases[i].status, (int)got, (int)cases[i].want);
            bad++;
        }
    }
    assert_int_equal(bad, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(classify_table)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
