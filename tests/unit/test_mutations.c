/* Mutation tests of every parser that sees bytes from outside: image decoding
 * (PNG, JPEG, PGM/PPM, IDX entries), the ingest media probe, shards,
 * safetensors checkpoints, text cleaning, UTF-8 repair, and BPE rank files and
 * encoding. Each starts from valid inputs made here and feeds thousands of
 * deterministic mutations (bit flips, interesting bytes and 32-bit values,
 * truncations, duplicated and deleted runs); every result must be a clean
 * success that keeps the parser's promises or a clean refusal with a reason.
 * The sanitize test runs this under ASan + UBSan, where an over-read or an
 * uninitialised size shows. Cleaning without markup stripping must also be
 * idempotent, and BPE must give back any bytes it encoded. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "text/bpe.h"
#include "image/image.h"
#include "core/kn.h"
#include "image/media.h"
#include "mutate.h"
#include "nn/safetensors.h"
#include "stream/record.h"
#include "stream/shard.h"
#include "text/textclean.h"

#ifdef KILN_HAVE_SPNG
#include <spng.h>
#endif
#ifdef KILN_HAVE_TURBOJPEG
#include <turbojpeg.h>
#endif

#define ROUNDS 20000

/* One mutation stream per test, reseeded at its start. */
static kn_rng rng;

static uint8_t *mutate(const uint8_t *src, size_t len, size_t *out_len)
{
    return mut_copy(&rng, src, len, NULL, out_len);
}

/* Reads every byte of p[0..n): an out-of-bounds view shows under ASan. */
static unsigned touch(const void *p, size_t n)
{
    const volatile uint8_t *b = p;
    unsigned s = 0;
    for (size_t i = 0; i < n; i++)
        s += b[i];
    return s;
}

/* ---- seeds ---- */

typedef struct {
    uint8_t *data;
    size_t len;
} blob;

static blob blob_of(const void *p, size_t n)
{
    blob b = {malloc(n), n};
    assert_non_null(b.data);
    memcpy(b.data, p, n);
    return b;
}

static uint8_t *pixels(int w, int h, int c)
{
    uint8_t *p = malloc((size_t)w * h * c);
    assert_non_null(p);
    for (size_t i = 0; i < (size_t)w * h * c; i++)
        p[i] = (uint8_t)(i * 37 + 11);
    return p;
}

/* Valid images of every format the decoder knows; returns how many. */
static int image_seeds(blob *out)
{
    int n = 0;
    uint8_t *px = pixels(16, 9, 3);
    char hdr[32];
    int hl = snprintf(hdr, sizeof(hdr), "P6\n16 9\n255\n");
    uint8_t *ppm = malloc((size_t)hl + 16 * 9 * 3);
    assert_non_null(ppm);
    memcpy(ppm, hdr, (size_t)hl);
    memcpy(ppm + hl, px, 16 * 9 * 3);
    out[n++] = blob_of(ppm, (size_t)hl + 16 * 9 * 3);
    free(ppm);
    hl = snprintf(hdr, sizeof(hdr), "P5\n# c\n7 5\n255\n");
    uint8_t pgm[64];
    memcpy(pgm, hdr, (size_t)hl);
    memcpy(pgm + hl, px, 35);
    out[n++] = blob_of(pgm, (size_t)hl + 35);
    /* an IDX image entry: u8, 2 dimensions (rows, cols) */
    uint8_t idx[12 + 28 * 28] = {0, 0, 0x08, 2, 0, 0, 0, 28, 0, 0, 0, 28};
    memcpy(idx + 12, px, 16 * 9 * 3 < 28 * 28 ? 16 * 9 * 3 : 28 * 28);
    out[n++] = blob_of(idx, sizeof(idx));
#ifdef KILN_HAVE_SPNG
    for (int color = 0; color < 2; color++) {
        spng_ctx *ctx = spng_ctx_new(SPNG_CTX_ENCODER);
        assert_non_null(ctx);
        spng_set_option(ctx, SPNG_ENCODE_TO_BUFFER, 1);
        int c = color ? 3 : 1;
        struct spng_ihdr ih = {16, 9, 8, (uint8_t)(color ? 2 : 0), 0, 0, 0};
        assert_int_equal(spng_set_ihdr(ctx, &ih), 0);
        assert_int_equal(
            spng_encode_image(ctx, px, (size_t)16 * 9 * c, SPNG_FMT_PNG, SPNG_ENCODE_FINALIZE), 0);
        size_t len;
        int err = 0;
        void *png = spng_get_png_buffer(ctx, &len, &err);
        assert_int_equal(err, 0);
        out[n++] = blob_of(png, len);
        free(png);
        spng_ctx_free(ctx);
    }
#endif
#ifdef KILN_HAVE_TURBOJPEG
    for (int color = 0; color < 2; color++) {
        tjhandle tj = tjInitCompress();
        assert_non_null(tj);
        unsigned char *jpg = NULL;
        unsigned long len = 0;
        assert_int_equal(tjCompress2(tj, px, 16, 0, 9, color ? TJPF_RGB : TJPF_GRAY, &jpg, &len,
                                     color ? TJSAMP_420 : TJSAMP_GRAY, 85, 0),
                         0);
        out[n++] = blob_of(jpg, len);
        tjFree(jpg);
        tjDestroy(tj);
    }
#endif
    free(px);
    return n;
}

/* ---- tests ---- */

static void test_image_decode(void **state)
{
    (void)state;
    blob seeds[8];
    int ns = image_seeds(seeds);
    const size_t maxp = 1u << 20;
    int ok = 0;
    kn_rng_init(&rng, 0x1234567);
    for (int s = 0; s < ns; s++) {
        kn_image img;
        char err[256];
        kn_image_init(&img);
        if (kn_image_decode(seeds[s].data, seeds[s].len, maxp, &img, err, sizeof(err)) != KN_OK)
            fail_msg("seed %d does not decode: %s", s, err);
        kn_image_free(&img);
        for (int r = 0; r < ROUNDS; r++) {
            size_t n;
            uint8_t *m = mutate(seeds[s].data, seeds[s].len, &n);
            kn_image_init(&img);
            err[0] = '\0';
            int rc = kn_image_decode(m, n, maxp, &img, err, sizeof(err));
            if (rc == KN_OK) {
                assert_non_null(img.data);
                assert_true(img.w > 0 && img.h > 0 && img.c >= 1 && img.c <= 4);
                assert_true((size_t)img.w * (size_t)img.h <= maxp);
                touch(img.data, (size_t)img.w * img.h * img.c * sizeof(float));
                ok++;
            } else {
                if (img.data != NULL || err[0] == '\0')
                    fail_msg("seed %d round %d: rc %d, data %p, message '%s'", s, r, rc,
                             (void *)img.data, err);
            }
            kn_image_free(&img);
            free(m);
        }
        free(seeds[s].data);
    }
    printf("# image decode: %d seeds x %d mutations, %d still decoded\n", ns, ROUNDS, ok);
}

static void test_media_probe(void **state)
{
    (void)state;
    blob seeds[8];
    int ns = image_seeds(seeds);
    kn_media_limits lim = {4096, 1u << 20};
    kn_rng_init(&rng, 0x89abcdef);
    int ok = 0;
    for (int s = 0; s < ns; s++) {
        for (int r = 0; r < ROUNDS; r++) {
            size_t n;
            uint8_t *m = mutate(seeds[s].data, seeds[s].len, &n);
            kn_media_info info;
            const char *why = NULL;
            char err[256] = "";
            if (kn_media_probe(m, n, &lim, &info, &why, err, sizeof(err)) == KN_OK) {
                assert_true(info.width > 0 && info.height > 0);
                assert_true(info.width <= lim.max_side && info.height <= lim.max_side);
                assert_true((uint64_t)info.width * info.height <= lim.max_pixels);
                ok++;
            } else if (!why || !err[0]) {
                fail_msg("seed %d round %d: refused without a reason", s, r);
            }
            free(m);
        }
        free(seeds[s].data);
    }
    printf("# media probe: %d seeds x %d mutations, %d accepted\n", ns, ROUNDS, ok);
}

static void test_shard_parse(void **state)
{
    (void)state;
    char err[256];
    uint32_t shape[3] = {4, 4, 1};
    kn_shard_writer *w =
        kn_shard_writer_new(KN_SHARD_IMAGE, KN_SHARD_U8, 3, shape, 4, 4, err, sizeof(err));
    assert_non_null(w);
    uint8_t px[16], key[KN_SHARD_KEY_LEN];
    for (int i = 0; i < 3; i++) {
        memset(px, i * 40, sizeof(px));
        memset(key, i + 1, sizeof(key));
        assert_int_equal(kn_shard_writer_add(w, px, i, 1000 + (uint64_t)i, key), KN_OK);
    }
    const void *buf;
    size_t len;
    kn_shard_writer_finish(w, &buf, &len);
    kn_shard_view v;
    assert_int_equal(kn_shard_parse(buf, len, &v, err, sizeof(err)), KN_OK);
    kn_rng_init(&rng, 0x5eed);
    int ok = 0;
    for (int r = 0; r < ROUNDS; r++) {
        size_t n;
        uint8_t *m = mutate(buf, len, &n);
        err[0] = '\0';
        if (kn_shard_parse(m, n, &v, err, sizeof(err)) == KN_OK) {
            for (uint32_t i = 0; i < v.info.count; i++) {
                touch(kn_shard_example(&v, i), v.example_bytes);
                (void)kn_shard_label(&v, i);
                (void)kn_shard_seed(&v, i);
            }
            touch(v.keys, (size_t)v.info.nkeys * KN_SHARD_KEY_LEN);
            ok++;
        } else if (!err[0]) {
            fail_msg("round %d: refused without a message", r);
        }
        free(m);
    }
    kn_shard_writer_destroy(w);
    printf("# shard parse: %d mutations, %d accepted (a CRC guards each part)\n", ROUNDS, ok);
}

static void test_safetensors_parse(void **state)
{
    (void)state;
    char err[256];
    const int64_t s1[2] = {3, 4}, s2[1] = {5};
    float a[12], b[5];
    for (int i = 0; i < 12; i++)
        a[i] = (float)i * 0.5f;
    for (int i = 0; i < 5; i++)
        b[i] = -(float)i;
    kn_safetensors_entry e[2] = {{"w", 2, s1, a}, {"b", 1, s2, b}};
    json_t *meta = json_pack("{s:s,s:s}", "kiln.model", "{\"type\":\"mlp\"}", "kiln.step", "7");
    unsigned char *buf;
    size_t len;
    assert_int_equal(kn_safetensors_write(e, 2, meta, &buf, &len, err, sizeof(err)), KN_OK);
    json_decref(meta);
    kn_rng_init(&rng, 0xfeedface);
    int ok = 0;
    for (int r = 0; r < ROUNDS; r++) {
        size_t n;
        uint8_t *m = mutate(buf, len, &n);
        kn_safetensors_file f;
        err[0] = '\0';
        if (kn_safetensors_parse(m, n, &f, err, sizeof(err)) == KN_OK) {
            for (int i = 0; i < f.n; i++) {
                const kn_safetensors_tensor *t = &f.tensors[i];
                assert_true(t->data >= m && t->data + t->nbytes <= m + n);
                touch(t->data, t->nbytes);
            }
            kn_safetensors_file_free(&f);
            ok++;
        } else if (!err[0]) {
            fail_msg("round %d: refused without a message", r);
        }
        free(m);
    }
    free(buf);
    printf("# safetensors parse: %d mutations, %d accepted\n", ROUNDS, ok);
}

static const char *const texts[] = {
    "Hello, <b>world</b>! Caf\xc3\xa9 na\xc3\xafve \xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e "
    "\xf0\x9f\x98\x80 &amp; 12345   tabs\tand\nlines",
    "A fortune: you will be hungry again in one hour. -- Confucius\n\n\n",
    "e\xcc\x81 \xef\xac\x81 \xe2\x84\xab \xc2\xa0 \x01\x02 \xe2\x80\x8b",
};

static int in_reason_list(const char *r)
{
    for (const char *const *l = kn_textclean_reason_list(); *l; l++)
        if (strcmp(*l, r) == 0) return 1;
    return 0;
}

static void test_textclean_and_utf8(void **state)
{
    (void)state;
    kn_textclean_options o[2];
    kn_textclean_defaults(&o[0]);
    kn_textclean_defaults(&o[1]);
    o[1].normalize = KN_TEXT_NORM_NFKC;
    o[1].strip_markup = 1;
    o[1].min_chars = 3;
    o[1].min_letter_ratio = 0.2;
    kn_rng_init(&rng, 0xabad1dea);
    int ok = 0;
    for (size_t t = 0; t < sizeof(texts) / sizeof(texts[0]); t++) {
        for (int r = 0; r < ROUNDS; r++) {
            size_t n;
            uint8_t *m = mutate((const uint8_t *)texts[t], strlen(texts[t]), &n);
            for (int k = 0; k < 2; k++) {
                char *out = NULL;
                size_t out_len = 0;
                const char *reason = NULL;
                int rc = kn_textclean(&o[k], (const char *)m, n, &out, &out_len, &reason);
                if (rc == KN_OK) {
                    assert_non_null(out);
                    assert_true(kn_record_utf8_valid(out, out_len, NULL));
                    assert_int_equal(out[out_len], '\0');
                    if (k == 0) { /* without markup stripping, cleaning is idempotent */
                        char *again = NULL;
                        size_t again_len = 0;
                        assert_int_equal(
                            kn_textclean(&o[0], out, out_len, &again, &again_len, NULL), KN_OK);
                        assert_int_equal(again_len, out_len);
                        assert_memory_equal(again, out, out_len);
                        free(again);
                    }
                    ok++;
                } else {
                    assert_null(out);
                    assert_true(rc == KN_EINVAL && reason && in_reason_list(reason));
                }
                free(out);
            }
            size_t rl = 0, bad = 0;
            char *rep = kn_record_utf8_repair(m, n, &rl);
            assert_non_null(rep);
            assert_true(kn_record_utf8_valid(rep, rl, &bad));
            if (kn_record_utf8_valid(m, n, NULL)) {
                assert_int_equal(rl, n);
                assert_memory_equal(rep, m, n);
            }
            free(rep);
            free(m);
        }
    }
    printf("# textclean: %zu texts x %d mutations x 2 recipes, %d cleaned\n",
           sizeof(texts) / sizeof(texts[0]), ROUNDS, ok);
}

static void test_bpe(void **state)
{
    (void)state;
    char err[256], path[] = "/tmp/kiln-test-mutations-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    size_t lens[3];
    for (int i = 0; i < 3; i++)
        lens[i] = strlen(texts[i]);
    assert_int_equal(kn_bpe_train(texts, lens, 3, 300, KN_BPE_R50K, path, err, sizeof(err)), KN_OK);
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    char rank[1 << 16];
    size_t rlen = fread(rank, 1, sizeof(rank), f);
    fclose(f);
    unlink(path);
    assert_true(rlen > 0 && rlen < sizeof(rank));
    kn_bpe *bpe = kn_bpe_load_mem(rank, rlen, "trained", KN_BPE_R50K, err, sizeof(err));
    assert_non_null(bpe);

    /* any bytes encode and decode back to themselves */
    kn_rng_init(&rng, 0xb9e);
    char dec[4096];
    for (size_t t = 0; t < 3; t++) {
        for (int r = 0; r < ROUNDS; r++) {
            size_t n, outlen;
            uint8_t *m = mutate((const uint8_t *)texts[t], lens[t], &n);
            kn_bpe_ids ids;
            kn_bpe_ids_init(&ids);
            assert_int_equal(kn_bpe_encode(bpe, (const char *)m, n, KN_BPE_SPECIAL_ORDINARY, &ids,
                                           err, sizeof(err)),
                             KN_OK);
            assert_int_equal(
                kn_bpe_decode(bpe, ids.ids, ids.len, dec, sizeof(dec), &outlen, err, sizeof(err)),
                KN_OK);
            assert_int_equal(outlen, n);
            assert_memory_equal(dec, m, n);
            kn_bpe_ids_free(&ids);
            free(m);
        }
    }
    /* a damaged rank file loads (if it is still a valid one) or is refused */
    int loaded = 0;
    for (int r = 0; r < ROUNDS; r++) {
        size_t n;
        uint8_t *m = mutate((const uint8_t *)rank, rlen, &n);
        err[0] = '\0';
        kn_bpe *b2 = kn_bpe_load_mem((const char *)m, n, "mutated", KN_BPE_R50K, err, sizeof(err));
        if (b2) {
            kn_bpe_ids ids;
            kn_bpe_ids_init(&ids);
            assert_int_equal(kn_bpe_encode(b2, texts[0], lens[0], KN_BPE_SPECIAL_ORDINARY, &ids,
                                           err, sizeof(err)),
                             KN_OK);
            kn_bpe_ids_free(&ids);
            kn_bpe_destroy(b2);
            loaded++;
        } else if (!err[0]) {
            fail_msg("round %d: rank file refused without a message", r);
        }
        free(m);
    }
    kn_bpe_destroy(bpe);
    printf("# bpe: 3 texts x %d mutations round-trip; %d of %d damaged rank files still load\n",
           ROUNDS, loaded, ROUNDS);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_image_decode),       cmocka_unit_test(test_media_probe),
        cmocka_unit_test(test_shard_parse),        cmocka_unit_test(test_safetensors_parse),
        cmocka_unit_test(test_textclean_and_utf8), cmocka_unit_test(test_bpe),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
