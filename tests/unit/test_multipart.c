/* Unit tests for lib/multipart: a body as curl sends it, parameters quoted
 * and bare, a part without headers, bodies that are not multipart, more parts
 * than the caller's array, and 20,000 mutations of a valid body (every part
 * must stay inside the body; run under ASan by the sanitize test). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "net/multipart.h"
#include "mutate.h"

static const char body_curl[] =
    "--------------------------d74496d66958873e\r\n"
    "Content-Disposition: form-data; name=\"dataset\"\r\n"
    "\r\n"
    "fashion-mnist\r\n"
    "--------------------------d74496d66958873e\r\n"
    "Content-Disposition: form-data; name=\"file\"; filename=\"shoe.png\"\r\n"
    "Content-Type: image/png\r\n"
    "\r\n"
    "\x89PNG\r\n\x1a\n--not-the-boundary\r\n"
    "--------------------------d74496d66958873e--\r\n";
static const char boundary_curl[] = "------------------------d74496d66958873e";

static void test_curl_body(void **state)
{
    (void)state;
    kn_multipart_part p[4];
    int n = kn_multipart_parse(body_curl, sizeof(body_curl) - 1, boundary_curl, p, 4);
    assert_int_equal(n, 2);
    assert_string_equal(p[0].name, "dataset");
    assert_string_equal(p[0].filename, "");
    assert_int_equal(p[0].len, strlen("fashion-mnist"));
    assert_memory_equal(p[0].data, "fashion-mnist", p[0].len);
    assert_string_equal(p[1].name, "file");
    assert_string_equal(p[1].filename, "shoe.png");
    assert_string_equal(p[1].ctype, "image/png");
    const char want[] = "\x89PNG\r\n\x1a\n--not-the-boundary";
    assert_int_equal(p[1].len, sizeof(want) - 1);
    assert_memory_equal(p[1].data, want, p[1].len);
}

static void test_params(void **state)
{
    (void)state;
    char out[16];
    const char *h = "multipart/form-data; boundary=abc123; charset=utf-8";
    kn_multipart_param(h, strlen(h), "boundary", out, sizeof(out));
    assert_string_equal(out, "abc123");
    h = "form-data; filename=\"x;y.txt\"; name=\"f\"";
    kn_multipart_param(h, strlen(h), "name", out, sizeof(out)); /* not filename= */
    assert_string_equal(out, "f");
    kn_multipart_param(h, strlen(h), "filename", out, sizeof(out));
    assert_string_equal(out, "x;y.txt");
    h = "form-data; name=\"a-very-long-field-name\"";
    kn_multipart_param(h, strlen(h), "name", out, sizeof(out));
    assert_string_equal(out, "a-very-long-fie"); /* cut to fit */
    kn_multipart_param(h, strlen(h), "missing", out, sizeof(out));
    assert_string_equal(out, "");
    h = "form-data; name=\"unterminated";
    kn_multipart_param(h, strlen(h), "name", out, sizeof(out));
    assert_string_equal(out, "unterminated");
}

static void test_no_headers_and_refusals(void **state)
{
    (void)state;
    kn_multipart_part p[2];
    const char ok[] = "--b\r\n\r\nplain\r\n--b--";
    assert_int_equal(kn_multipart_parse(ok, sizeof(ok) - 1, "b", p, 2), 1);
    assert_int_equal(p[0].len, 5);
    assert_memory_equal(p[0].data, "plain", 5);
    assert_string_equal(p[0].name, "");

    const char *bad[] = {
        "",                                    /* empty */
        "no delimiter at all",                 /* no opening delimiter */
        "--b\r\nContent-Type: x\r\nbody--b--", /* headers never end */
        "--b\r\n\r\nbody without a next one",  /* no closing delimiter */
        "--bX\r\n\r\nbody\r\n--b--",           /* delimiter followed by junk */
        "--b\r\n\r\nbody\r\n--b",              /* cut after the last delimiter */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (kn_multipart_parse(bad[i], strlen(bad[i]), "b", p, 2) != -1)
            fail_msg("body %zu accepted: %s", i, bad[i]);
    char longb[80];
    memset(longb, 'x', 71);
    longb[71] = '\0';
    assert_int_equal(kn_multipart_parse(ok, sizeof(ok) - 1, longb, p, 2), -1);
    assert_int_equal(kn_multipart_parse(ok, sizeof(ok) - 1, "", p, 2), -1);
}

static void test_more_parts_than_room(void **state)
{
    (void)state;
    char body[1024];
    size_t n = 0;
    for (int i = 0; i < 5; i++)
        n += (size_t)snprintf(body + n, sizeof(body) - n,
                              "--zz\r\nContent-Disposition: form-data; name=\"f%d\"\r\n\r\n%d\r\n",
                              i, i);
    n += (size_t)snprintf(body + n, sizeof(body) - n, "--zz--\r\n");
    kn_multipart_part p[3];
    memset(p, 0, sizeof(p));
    assert_int_equal(kn_multipart_parse(body, n, "zz", p, 3), 5);
    assert_string_equal(p[2].name, "f2");
    assert_memory_equal(p[2].data, "2", 1);
}

static void test_mutations(void **state)
{
    (void)state;
    kn_rng rng;
    kn_rng_init(&rng, 0x3141592653589793ull);
    int parsed = 0;
    for (int r = 0; r < 20000; r++) {
        size_t n;
        /* the bytes multipart framing is made of */
        char *exact = (char *)mut_copy(&rng, (const uint8_t *)body_curl, sizeof(body_curl) - 1,
                                       "\r\n-\"; ", &n);
        kn_multipart_part p[4];
        int k = kn_multipart_parse(exact, n, boundary_curl, p, 4);
        assert_true(k >= -1);
        for (int i = 0; i < k && i < 4; i++) {
            assert_true(p[i].data >= exact && p[i].data + p[i].len <= exact + n);
            assert_true(strlen(p[i].name) < sizeof(p[i].name));
            assert_true(strlen(p[i].ctype) < sizeof(p[i].ctype));
        }
        if (k >= 0) parsed++;
        free(exact);
    }
    printf("# multipart: 20000 mutations, %d still parse\n", parsed);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_curl_body),
        cmocka_unit_test(test_params),
        cmocka_unit_test(test_no_headers_and_refusals),
        cmocka_unit_test(test_more_parts_than_room),
        cmocka_unit_test(test_mutations),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
