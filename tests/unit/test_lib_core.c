/* Unit tests for the small lib modules: config, crc32c, sha256, metrics, log. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/config.h"
#include "core/crc32c.h"
#include "core/kn.h"
#include "core/metrics.h"
#include "core/sha256.h"

static void config_file_and_env(void **state)
{
    (void)state;
    /* The caller's stack exports KILN_KAFKA_BROKERS; the file's value is under test. */
    unsetenv("KILN_KAFKA_BROKERS");
    kn_config *cfg = kn_config_new();
    char err[256];
    const char *text = "# comment\n"
                       "[kafka]\n"
                       "brokers = 10.0.0.1:9092 \n"
                       "linger = 4k\n"
                       "[model.cnn]\n"
                       "arch = cnn\n"
                       "lr = 0.001\n"
                       "[model.gpt]\n"
                       "arch = gpt\n"
                       "enabled = yes\n";
    assert_int_equal(kn_config_load_string(cfg, text, "t.ini", err, sizeof(err)), KN_OK);
    assert_string_equal(kn_config_get(cfg, "kafka.brokers", NULL), "10.0.0.1:9092");
    assert_int_equal(kn_config_get_int(cfg, "kafka.linger", 0, NULL), 4096);
    assert_true(kn_config_get_double(cfg, "model.cnn.lr", 0, NULL) == 0.001);
    assert_int_equal(kn_config_get_bool(cfg, "model.gpt.enabled", 0, NULL), 1);
    assert_string_equal(kn_config_get(cfg, "missing.key", "dflt"), "dflt");

    setenv("KILN_KAFKA_BROKERS", "127.0.0.1:1", 1);
    assert_string_equal(kn_config_get(cfg, "kafka.brokers", NULL), "127.0.0.1:1");
    unsetenv("KILN_KAFKA_BROKERS");

    char env[64];
    kn_config_env_name("model.cnn-x.lr", env, sizeof(env));
    assert_string_equal(env, "KILN_MODEL_CNN_X_LR");

    int ok = 1;
    kn_config_set(cfg, "x.n", "12q");
    assert_int_equal(kn_config_get_int(cfg, "x.n", 7, &ok), 7);
    assert_int_equal(ok, 0);
    kn_config_destroy(cfg);
}

static int count_sections;
static void on_section(const char *section, void *ctx)
{
    (void)ctx;
    assert_true(strcmp(section, "model.cnn") == 0 || strcmp(section, "model.gpt") == 0);
    count_sections++;
}

static void config_sections_and_errors(void **state)
{
    (void)state;
    kn_config *cfg = kn_config_new();
    char err[256];
    assert_int_equal(kn_config_load_string(cfg, "[model.cnn]\na=1\nb=2\n[model.gpt]\na=1\n[x]\nq=1\n",
                                           "t", err, sizeof(err)),
                     KN_OK);
    count_sections = 0;
    kn_config_foreach_section(cfg, "model.", on_section, NULL);
    assert_int_equal(count_sections, 2);

    /* A bad line names the file and line, and keeps nothing from that file. */
    assert_int_equal(kn_config_load_string(cfg, "[y]\nok = 1\nthis line is bad\n", "bad.ini", err,
                                           sizeof(err)),
                     KN_EINVAL);
    assert_non_null(strstr(err, "bad.ini:3"));
    assert_null(kn_config_get(cfg, "y.ok", NULL));
    assert_int_equal(kn_config_load_string(cfg, "[unterminated\n", "b", err, sizeof(err)),
                     KN_EINVAL);
    assert_int_equal(kn_config_load_file(cfg, "/nonexistent/kiln.ini", err, sizeof(err)), KN_EIO);
    kn_config_destroy(cfg);
}

static void crc32c_known_values(void **state)
{
    (void)state;
    /* RFC 3720 B.4 test vectors. */
    uint8_t zeros[32] = {0}, ones[32], inc[32];
    memset(ones, 0xff, sizeof(ones));
    for (int i = 0; i < 32; i++) inc[i] = (uint8_t)i;
    assert_int_equal(kn_crc32c(0, zeros, 32), 0x8A9136AA);
    assert_int_equal(kn_crc32c(0, ones, 32), 0x62A8AB43);
    assert_int_equal(kn_crc32c(0, inc, 32), 0x46DD794E);
    assert_int_equal(kn_crc32c(0, "123456789", 9), 0xE3069283);
    /* Hardware and software paths agree, and the CRC extends. */
    char buf[1000];
    for (int i = 0; i < 1000; i++) buf[i] = (char)(i * 7 + 3);
    for (size_t n = 0; n < 1000; n += 37) {
        assert_int_equal(kn_crc32c(0, buf, n), kn_crc32c_sw(0, buf, n));
        assert_int_equal(kn_crc32c(kn_crc32c(0, buf, n), buf + n, 1000 - n), kn_crc32c(0, buf, 1000));
    }
}

static void sha256_known_values(void **state)
{
    (void)state;
    char hex[KN_SHA256_HEX_LEN];
    kn_sha256_hex("abc", 3, hex);
    assert_string_equal(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    kn_sha256_hex("", 0, hex);
    assert_string_equal(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    assert_true(kn_sha256_hex_valid(hex));
    assert_false(kn_sha256_hex_valid("abc"));
    assert_false(kn_sha256_hex_valid("E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855"));

    kn_sha256 *h = kn_sha256_new();
    kn_sha256_update(h, "a", 1);
    kn_sha256_update(h, "bc", 2);
    uint8_t d[KN_SHA256_LEN];
    kn_sha256_final(h, d);
    kn_sha256_destroy(h);
    kn_sha256_to_hex(d, hex);
    assert_string_equal(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

static void metrics_render(void **state)
{
    (void)state;
    kn_metrics *m = kn_metrics_new();
    kn_metric *c1 = kn_metrics_counter(m, "kiln_rejects_total", "Rejected", "reason=\"utf8\"");
    kn_metric *c2 = kn_metrics_counter(m, "kiln_rejects_total", "Rejected", "reason=\"size\"");
    assert_ptr_equal(c1, kn_metrics_counter(m, "kiln_rejects_total", "Rejected", "reason=\"utf8\""));
    kn_metrics_add(c1, 2);
    kn_metrics_add(c2, 1);
    kn_metric *g = kn_metrics_gauge(m, "kiln_lag", "Lag", NULL);
    kn_metrics_set(g, 42);
    kn_metric *h = kn_metrics_histogram(m, "kiln_latency_seconds", "Latency", NULL);
    kn_metrics_observe(h, 0.003);
    kn_metrics_observe(h, 20);
    char *text = kn_metrics_render(m);
    assert_non_null(strstr(text, "# TYPE kiln_rejects_total counter\n"));
    assert_non_null(strstr(text, "kiln_rejects_total{reason=\"utf8\"} 2\n"));
    assert_non_null(strstr(text, "kiln_rejects_total{reason=\"size\"} 1\n"));
    assert_non_null(strstr(text, "kiln_lag 42\n"));
    assert_non_null(strstr(text, "kiln_latency_seconds_bucket{le=\"0.005\"} 1\n"));
    assert_non_null(strstr(text, "kiln_latency_seconds_bucket{le=\"+Inf\"} 2\n"));
    assert_non_null(strstr(text, "kiln_latency_seconds_count 2\n"));
    /* HELP/TYPE appear once per metric name. */
    char *first = strstr(text, "# HELP kiln_rejects_total");
    assert_null(strstr(first + 1, "# HELP kiln_rejects_total"));
    free(text);
    kn_metrics_destroy(m);
}

static void strerror_covers_codes(void **state)
{
    (void)state;
    for (int rc = 0; rc >= -15; rc--) assert_string_not_equal(kn_strerror(rc), "unknown error");
    char err[32];
    assert_int_equal(kn_seterr(err, sizeof(err), KN_EINVAL, "bad %d", 7), KN_EINVAL);
    assert_string_equal(err, "bad 7");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(config_file_and_env),  cmocka_unit_test(config_sections_and_errors),
        cmocka_unit_test(crc32c_known_values),  cmocka_unit_test(sha256_known_values),
        cmocka_unit_test(metrics_render),       cmocka_unit_test(strerror_covers_codes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
