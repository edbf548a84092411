/* Unit: shard format round trips for every kind, and the reader's refusals:
 * a flipped byte anywhere (CRC), truncation at every length, an unknown
 * version, bad magic, and random garbage (never out of bounds under ASan). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/crc32c.h"
#include "core/kn.h"
#include "stream/shard.h"

static void fill_key(uint8_t key[32], uint32_t i)
{
    for (int b = 0; b < 32; b++)
        key[b] = (uint8_t)(i * 31 + b * 7);
}

static uint8_t *copy_of(const void *p, size_t n)
{
    uint8_t *c = malloc(n ? n : 1);
    memcpy(c, p, n);
    return c;
}

static void roundtrip_lm(void **state)
{
    (void)state;
    char err[256];
    uint32_t shape[1] = {65}; /* T = 64 */
    kn_shard_writer *w =
        kn_shard_writer_new(KN_SHARD_LM_TOKENS, KN_SHARD_U16, 1, shape, 8, 100, err, sizeof(err));
    assert_non_null(w);
    uint16_t block[65];
    for (uint32_t b = 0; b < 5; b++) {
        for (int t = 0; t < 65; t++)
            block[t] = (uint16_t)(b * 1000 + t);
        assert_int_equal(kn_shard_writer_add(w, block, 0, 0, NULL), KN_OK);
    }
    uint8_t key[32];
    for (uint32_t k = 0; k < 7; k++) {
        fill_key(key, k);
        assert_int_equal(kn_shard_writer_add_key(w, key), KN_OK);
    }
    const void *buf;
    size_t len;
    kn_shard_writer_finish(w, &buf, &len);
    kn_shard_view v;
    assert_int_equal(kn_shard_parse(buf, len, &v, err, sizeof(err)), KN_OK);
    assert_int_equal(v.info.kind, KN_SHARD_LM_TOKENS);
    assert_int_equal(v.info.dtype, KN_SHARD_U16);
    assert_int_equal(v.info.shape[0], 65);
    assert_int_equal(v.info.count, 5);
    assert_int_equal(v.info.nkeys, 7);
    assert_null(v.labels);
    assert_null(v.seeds);
    assert_int_equal(kn_shard_label(&v, 0), -1);
    for (uint32_t b = 0; b < 5; b++) {
        const uint16_t *x = kn_shard_example(&v, b);
        assert_int_equal(x[0], b * 1000);
        assert_int_equal(x[64], b * 1000 + 64);
    }
    fill_key(key, 6);
    assert_memory_equal(kn_shard_key(&v, 6), key, 32);
    /* reset makes an empty but valid shard */
    kn_shard_writer_reset(w);
    kn_shard_writer_finish(w, &buf, &len);
    assert_int_equal(len, KN_SHARD_HEADER_SIZE);
    assert_int_equal(kn_shard_parse(buf, len, &v, err, sizeof(err)), KN_OK);
    assert_int_equal(v.info.count, 0);
    kn_shard_writer_destroy(w);
}

static void roundtrip_text_class(void **state)
{
    (void)state;
    char err[256];
    uint32_t shape[1] = {16};
    kn_shard_writer *w =
        kn_shard_writer_new(KN_SHARD_TEXT_CLASS, KN_SHARD_U32, 1, shape, 3, 3, err, sizeof(err));
    assert_non_null(w);
    uint32_t row[16];
    uint8_t key[32];
    for (uint32_t i = 0; i < 3; i++) {
        for (int t = 0; t < 16; t++)
            row[t] = 100000 + i * 16 + (uint32_t)t;
        fill_key(key, i);
        assert_int_equal(kn_shard_writer_add(w, row, (int32_t)i + 7, 0, key), KN_OK);
    }
    assert_true(kn_shard_writer_full(w));
    assert_int_equal(kn_shard_writer_add(w, row, 1, 0, key), KN_ETOOBIG);
    const void *buf;
    size_t len;
    kn_shard_writer_finish(w, &buf, &len);
    kn_shard_view v;
    assert_int_equal(kn_shard_parse(buf, len, &v, err, sizeof(err)), KN_OK);
    assert_int_equal(v.info.kind, KN_SHARD_TEXT_CLASS);
    assert_int_equal(v.info.count, 3);
    assert_int_equal(v.info.nkeys, 3);
    assert_non_null(v.labels);
    assert_null(v.seeds);
    for (uint32_t i = 0; i < 3; i++) {
        assert_int_equal(kn_shard_label(&v, i), (int32_t)i + 7);
        const uint32_t *x = kn_shard_example(&v, i);
        assert_int_equal(x[15], 100000 + i * 16 + 15);
        fill_key(key, i);
        assert_memory_equal(kn_shard_key(&v, i), key, 32);
    }
    kn_shard_writer_destroy(w);
}

static void roundtrip_image(void **state)
{
    (void)state;
    char err[256];
    uint32_t shape[3] = {28, 28, 1};
    kn_shard_writer *w =
        kn_shard_writer_new(KN_SHARD_IMAGE, KN_SHARD_F32, 3, shape, 10, 10, err, sizeof(err));
    assert_non_null(w);
    assert_int_equal(kn_shard_writer_example_bytes(w), 28 * 28 * 4);
    float img[28 * 28];
    uint8_t key[32];
    for (uint32_t i = 0; i < 7; i++) {
        for (int p = 0; p < 28 * 28; p++)
            img[p] = (float)i + (float)p / 1000.0f;
        fill_key(key, i);
        assert_int_equal(kn_shard_writer_add(w, img, (int32_t)i % 10, 0xdeadbeef00ull + i, key),
                         KN_OK);
    }
    const void *buf;
    size_t len;
    kn_shard_writer_finish(w, &buf, &len);
    uint8_t *c = copy_of(buf, len);
    kn_shard_view v;
    assert_int_equal(kn_shard_parse(c, len, &v, err, sizeof(err)), KN_OK);
    assert_int_equal(v.info.ndim, 3);
    assert_int_equal(v.info.shape[2], 1);
    assert_int_equal(v.info.count, 7);
    for (uint32_t i = 0; i < 7; i++) {
        assert_int_equal(kn_shard_label(&v, i), (int32_t)i);
        assert_true(kn_shard_seed(&v, i) == 0xdeadbeef00ull + i);
        float x;
        memcpy(&x, (const uint8_t *)kn_shard_example(&v, i) + 4 * 100, 4);
        assert_true(x == (float)i + 100.0f / 1000.0f);
    }
    free(c);
    kn_shard_writer_destroy(w);
}

/* A small image shard used by the refusal tests. */
static uint8_t *sample(size_t *len)
{
    char err[256];
    uint32_t shape[3] = {4, 4, 3};
    kn_shard_writer *w =
        kn_shard_writer_new(KN_SHARD_IMAGE, KN_SHARD_U8, 3, shape, 4, 4, err, sizeof(err));
    uint8_t img[48], key[32];
    for (uint32_t i = 0; i < 3; i++) {
        memset(img, (int)i, sizeof(img));
        fill_key(key, i);
        kn_shard_writer_add(w, img, 1, 42 + i, key);
    }
    const void *buf;
    kn_shard_writer_finish(w, &buf, len);
    uint8_t *c = copy_of(buf, *len);
    kn_shard_writer_destroy(w);
    return c;
}

static void corrupted_byte(void **state)
{
    (void)state;
    char err[256];
    size_t len;
    uint8_t *s = sample(&len);
    kn_shard_view v;
    for (size_t i = 0; i < len; i++) {
        s[i] ^= 0x10;
        int rc = kn_shard_parse(s, len, &v, err, sizeof(err));
        /* bytes 4-5 are the version: a change there is an unknown version */
        if (i == 4 || i == 5)
            assert_int_equal(rc, KN_EUNSUPPORTED);
        else
            assert_int_equal(rc, KN_ECORRUPT);
        s[i] ^= 0x10;
    }
    /* payload byte → the payload CRC says so */
    s[KN_SHARD_HEADER_SIZE + 3] ^= 1;
    assert_int_equal(kn_shard_parse(s, len, &v, err, sizeof(err)), KN_ECORRUPT);
    assert_non_null(strstr(err, "payload CRC32C"));
    s[KN_SHARD_HEADER_SIZE + 3] ^= 1;
    assert_int_equal(kn_shard_parse(s, len, &v, err, sizeof(err)), KN_OK);
    free(s);
}

static void truncated(void **state)
{
    (void)state;
    char err[256];
    size_t len;
    uint8_t *s = sample(&len);
    kn_shard_view v;
    for (size_t n = 0; n < len; n++) {
        uint8_t *c = copy_of(s, n); /* exact-size heap copy: ASan sees any overread */
        assert_int_equal(kn_shard_parse(c, n, &v, err, sizeof(err)), KN_ECORRUPT);
        free(c);
    }
    /* trailing bytes are refused too */
    uint8_t *c = malloc(len + 1);
    memcpy(c, s, len);
    c[len] = 0;
    assert_int_equal(kn_shard_parse(c, len + 1, &v, err, sizeof(err)), KN_ECORRUPT);
    free(c);
    free(s);
}

static void unknown_version(void **state)
{
    (void)state;
    char err[256];
    size_t len;
    uint8_t *s = sample(&len);
    kn_shard_view v;
    s[4] = 2; /* version 2, header CRC fixed up as a future writer would */
    uint32_t crc = kn_crc32c(0, s, 60);
    for (int i = 0; i < 4; i++)
        s[60 + i] = (uint8_t)(crc >> (8 * i));
    assert_int_equal(kn_shard_parse(s, len, &v, err, sizeof(err)), KN_EUNSUPPORTED);
    assert_non_null(strstr(err, "version 2"));
    memcpy(s, "KSHX", 4);
    assert_int_equal(kn_shard_parse(s, len, &v, err, sizeof(err)), KN_ECORRUPT);
    assert_non_null(strstr(err, "magic"));
    free(s);
}

static void hostile_headers(void **state)
{
    (void)state;
    char err[256];
    kn_shard_view v;
    /* A header with a valid CRC that claims a huge count: refused by size. */
    uint8_t h[KN_SHARD_HEADER_SIZE] = {0};
    memcpy(h, "KSHD", 4);
    h[4] = 1;
    h[6] = 64;
    h[8] = KN_SHARD_TEXT_CLASS;
    h[9] = KN_SHARD_U32;
    h[10] = 1;
    h[11] = KN_SHARD_F_LABELS;
    h[12] = 0xff;
    h[13] = 0xff;
    h[14] = 0xff;            /* shape[0] = 16M tokens */
    memset(h + 24, 0xff, 8); /* count, nkeys = 2^32-1 */
    memset(h + 32, 0xff, 8); /* payload size */
    uint32_t crc = kn_crc32c(0, h, 60);
    for (int i = 0; i < 4; i++)
        h[60 + i] = (uint8_t)(crc >> (8 * i));
    assert_int_not_equal(kn_shard_parse(h, sizeof(h), &v, err, sizeof(err)), KN_OK);
    /* Zero examples of a shape no writer accepts (one example of 2^25 u16
     * tokens is the whole 64 MiB limit, with no room for the header): refused
     * like the writer refuses it (found by fuzz_shard). */
    memset(h, 0, sizeof(h));
    memcpy(h, "KSHD", 4);
    h[4] = 1;
    h[6] = 64;
    h[8] = KN_SHARD_LM_TOKENS;
    h[9] = KN_SHARD_U16;
    h[10] = 1;
    h[15] = 2; /* shape[0] = 2^25 */
    uint32_t pcrc = kn_crc32c(0, h + 64, 0);
    for (int i = 0; i < 4; i++)
        h[40 + i] = (uint8_t)(pcrc >> (8 * i));
    crc = kn_crc32c(0, h, 60);
    for (int i = 0; i < 4; i++)
        h[60 + i] = (uint8_t)(crc >> (8 * i));
    assert_int_equal(kn_shard_parse(h, sizeof(h), &v, err, sizeof(err)), KN_ETOOBIG);
    h[15] = 0;
    h[14] = 1; /* shape[0] = 2^16: fits, and zero examples of it parse */
    crc = kn_crc32c(0, h, 60);
    for (int i = 0; i < 4; i++)
        h[60 + i] = (uint8_t)(crc >> (8 * i));
    assert_int_equal(kn_shard_parse(h, sizeof(h), &v, err, sizeof(err)), KN_OK);
    /* Random garbage behind a valid magic and version. */
    srand(7);
    for (int trial = 0; trial < 2000; trial++) {
        size_t n = (size_t)(rand() % 300);
        uint8_t *g = malloc(n ? n : 1);
        for (size_t i = 0; i < n; i++)
            g[i] = (uint8_t)rand();
        if (n >= 6) {
            memcpy(g, "KSHD", 4);
            g[4] = 1;
            g[5] = 0;
        }
        if (n >= 64) {
            crc = kn_crc32c(0, g, 60);
            for (int i = 0; i < 4; i++)
                g[60 + i] = (uint8_t)(crc >> (8 * i));
        }
        assert_int_not_equal(kn_shard_parse(g, n, &v, err, sizeof(err)), KN_OK);
        free(g);
    }
}

static void writer_refuses_bad_shapes(void **state)
{
    (void)state;
    char err[256];
    uint32_t shape[3] = {28, 28, 0};
    assert_null(
        kn_shard_writer_new(KN_SHARD_IMAGE, KN_SHARD_F32, 3, shape, 4, 4, err, sizeof(err)));
    uint32_t big[3] = {4096, 4096, 3};
    assert_null(kn_shard_writer_new(KN_SHARD_IMAGE, KN_SHARD_F32, 3, big, 4, 4, err, sizeof(err)));
    assert_null(
        kn_shard_writer_new(KN_SHARD_LM_TOKENS, KN_SHARD_U16, 3, big, 4, 4, err, sizeof(err)));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(roundtrip_lm),    cmocka_unit_test(roundtrip_text_class),
        cmocka_unit_test(roundtrip_image), cmocka_unit_test(corrupted_byte),
        cmocka_unit_test(truncated),       cmocka_unit_test(unknown_version),
        cmocka_unit_test(hostile_headers), cmocka_unit_test(writer_refuses_bad_shapes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
