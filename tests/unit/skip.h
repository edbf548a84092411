/* skip.h: a skipped cmocka test is never a pass. cmocka counts skip() as a
 * success (cmocka_run_group_tests returns 0), so CTest would record PASS and
 * SKIP_RETURN_CODE 77 would never fire. Include this after <cmocka.h>: skip()
 * then also counts the skip, and skip_run_group_tests() returns 77 (CTest:
 * SKIPPED) when nothing failed but at least one test skipped, so a suite with
 * one skipped case among passing ones shows as skipped, not passed. A failure
 * wins over a skip. tests/scripts/skip-honest.sh checks every test that calls
 * skip() includes this header. */
#ifndef KILN_TEST_SKIP_H
#define KILN_TEST_SKIP_H

#include <stdarg.h>
#include <stdio.h>

#ifndef CMOCKA_H_
#error "include <cmocka.h> before skip.h"
#endif

/* The number of skip() calls in this process. A function-local static, so
 * the header defines no global; each test program is one translation unit. */
static inline int *skip_counter(void)
{
    static int n;
    return &n;
}

#undef skip
#define skip()                                                                                     \
    do {                                                                                           \
        (*skip_counter())++;                                                                       \
        _skip(__FILE__, __LINE__);                                                                 \
    } while (0)

/* Says why on stdout (the reason CTest's log shows), then skips the test. */
#define skip_because(...)                                                                          \
    do {                                                                                           \
        printf("SKIPPED: ");                                                                       \
        printf(__VA_ARGS__);                                                                       \
        printf("\n");                                                                              \
        fflush(stdout);                                                                            \
        skip();                                                                                    \
    } while (0)

/* cmocka's status when a test failed; else 77 when any test skipped; else 0. */
static inline int skip_exit_status(int cmocka_rc, size_t ntests)
{
    int n = *skip_counter();
    if (cmocka_rc != 0) return cmocka_rc;
    if (n == 0) return 0;
    printf("%d of %zu tests skipped: exit 77 (CTest: SKIPPED), not a pass\n", n, ntests);
    return 77;
}

#define skip_run_group_tests(tests, setup, teardown)                                               \
    skip_exit_status(cmocka_run_group_tests(tests, setup, teardown),                               \
                     sizeof(tests) / sizeof((tests)[0]))

#endif
