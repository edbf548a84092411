/* Unit: dedup catches exact and near duplicates at the stated threshold
 * (MinHash 128 hashes, 16 bands x 8 rows, 5-character shingles, estimated
 * Jaccard >= 0.8), keeps distinct texts (fortunes), rolls back pending
 * inserts, and rebuilds the same state from its changelog entries. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <math.h>
#include <string.h>

#include <cmocka.h>

#include "skip.h"

#include "text/dedup.h"
#include "core/kn.h"

static kn_dedup *mk(void)
{
    kn_dedup_options o;
    kn_dedup_options_default(&o);
    char err[256];
    kn_dedup *d = kn_dedup_new(&o, err, sizeof(err));
    assert_non_null(d);
    return d;
}

static int check_text(kn_dedup *d, const char *t, double *sim)
{
    kn_dedup_fp fp;
    assert_int_equal(kn_dedup_fingerprint(d, t, strlen(t), &fp), KN_OK);
    return kn_dedup_check(d, &fp, sim);
}

static void add_text(kn_dedup *d, const char *t, int pending)
{
    kn_dedup_fp fp;
    assert_int_equal(kn_dedup_fingerprint(d, t, strlen(t), &fp), KN_OK);
    assert_int_equal(kn_dedup_insert(d, &fp, pending), KN_OK);
}

static const char *base =
    "The quick brown fox jumps over the lazy dog while the farmer watches from the porch, "
    "wondering whether the dog will ever wake up before the sun goes down over the hills.";

static void exact_and_near(void **state)
{
    (void)state;
    kn_dedup *d = mk();
    double sim;
    assert_int_equal(check_text(d, base, &sim), KN_DEDUP_NEW);
    add_text(d, base, 0);
    assert_int_equal(check_text(d, base, &sim), KN_DEDUP_EXACT);
    /* Case and whitespace changes: different bytes, same normalized shingles. */
    char *v = strdup(base);
    v[0] = 't';
    char buf[1024];
    snprintf(buf, sizeof(buf), "  %s  \n", v);
    assert_int_equal(check_text(d, buf, &sim), KN_DEDUP_NEAR);
    assert_true(sim > 0.99);
    /* One word changed out of ~35: Jaccard of 5-shingles ~0.93: a near duplicate. */
    snprintf(buf, sizeof(buf), "%s", base);
    memcpy(strstr(buf, "quick"), "quiet", 5);
    assert_int_equal(check_text(d, buf, &sim), KN_DEDUP_NEAR);
    assert_true(sim >= 0.8);
    /* Half the text replaced: well under the threshold. */
    const char *half = "The quick brown fox jumps over the lazy dog while the farmer watches "
                       "a completely different scene: two cats argue about fish on a boat.";
    assert_int_equal(check_text(d, half, &sim), KN_DEDUP_NEW);
    assert_true(sim < 0.8);
    free(v);
    kn_dedup_destroy(d);
}

/* Builds texts whose true Jaccard similarity to a base sits on either side of
 * the threshold and checks the decisions follow the estimate. */
static void threshold_behaviour(void **state)
{
    (void)state;
    kn_dedup *d = mk();
    /* 400 distinct 5-char words: shingle sets are nearly disjoint per word. */
    char text[8192];
    size_t n = 0;
    for (int w = 0; w < 400; w++)
        n += (size_t)snprintf(text + n, sizeof(text) - n, "w%04d ", w);
    add_text(d, text, 0);
    /* Replace the first k words by other words: Jaccard falls as k grows. */
    int caught_small = 0, caught_large = 0;
    for (int k = 1; k <= 10; k++) {
        char t[8192];
        size_t m = 0;
        for (int w = 0; w < 400; w++)
            m += (size_t)snprintf(t + m, sizeof(t) - m, "w%04d ", w < k ? 9000 + w : w);
        caught_small += check_text(d, t, NULL) == KN_DEDUP_NEAR;
    }
    for (int k = 150; k <= 160; k++) {
        char t[8192];
        size_t m = 0;
        for (int w = 0; w < 400; w++)
            m += (size_t)snprintf(t + m, sizeof(t) - m, "w%04d ", w < k ? 9000 + w : w);
        caught_large += check_text(d, t, NULL) == KN_DEDUP_NEAR;
    }
    assert_int_equal(caught_small, 10); /* J ~ 0.97 .. 0.9 */
    assert_int_equal(caught_large, 0);  /* J ~ 0.45 */
    kn_dedup_destroy(d);
}

/* Pairs built to a known Jaccard similarity of their 5-character shingle
 * sets, just above and just below the documented 0.8. A text is L characters
 * drawn from 68 printable ASCII symbols (no letters A-Z, no whitespace: the
 * normalization leaves it as is), so its L-4 shingles are distinct; its
 * variant keeps the first m characters and replaces the rest with fresh
 * ones, sharing exactly m-4 shingles: J = (m-4) / (2(L-4) - (m-4)). The
 * true J of each pair is recomputed here from the shingle sets. With 128
 * hashes the estimate has a standard deviation near 0.035, so a single pair
 * may fall on the wrong side; over NPAIRS pairs the counts separate. Measured
 * (flagged of 40 at J = 0.84 / at J = 0.76): threshold 0.8: 34 / 2; 0.9: 0 / 0;
 * 0.85: 16 / 0; 0.75: 40 / 19; 0.7: 40 / 32. The bars are 30 and 10. */
#define JL     1004 /* characters per text: 1000 shingles */
#define NPAIRS 40

static uint64_t jrand(uint64_t *s)
{
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return *s >> 33;
}

static char jchar(uint64_t *s)
{
    int c = '!' + (int)(jrand(s) % 68); /* '!'..'@' and, shifted past the capitals, '['..'~' */
    return (char)(c >= 'A' ? c + 26 : c);
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Sorted distinct 5-byte shingles of t (ASCII) into out; returns their count. */
static size_t shingles(const char *t, uint64_t *out)
{
    size_t n = strlen(t), k = 0;
    for (size_t i = 0; i + 5 <= n; i++) {
        uint64_t v = 0;
        for (int j = 0; j < 5; j++)
            v = v << 8 | (uint8_t)t[i + (size_t)j];
        out[k++] = v;
    }
    qsort(out, k, sizeof(*out), cmp_u64);
    size_t u = 0;
    for (size_t i = 0; i < k; i++)
        if (!u || out[u - 1] != out[i]) out[u++] = out[i];
    return u;
}

static double true_jaccard(const char *a, const char *b)
{
    static uint64_t sa[JL], sb[JL];
    size_t na = shingles(a, sa), nb = shingles(b, sb), i = 0, j = 0, both = 0;
    while (i < na && j < nb) {
        if (sa[i] == sb[j])
            both++, i++, j++;
        else if (sa[i] < sb[j])
            i++;
        else
            j++;
    }
    return (double)both / (double)(na + nb - both);
}

/* Adds NPAIRS base texts to d and counts how many of their variants at
 * Jaccard `target` it flags as near duplicates. */
static int flagged_at(kn_dedup *d, double target, uint64_t seed)
{
    int shared = (int)(target * 2 * (JL - 4) / (1 + target) + 0.5), m = shared + 4, flagged = 0;
    char base[JL + 1], var[JL + 1];
    for (int p = 0; p < NPAIRS; p++) {
        for (int i = 0; i < JL; i++)
            base[i] = jchar(&seed);
        base[JL] = 0;
        memcpy(var, base, (size_t)m);
        for (int i = m; i < JL; i++)
            do
                var[i] = jchar(&seed);
            while (i == m && var[i] == base[m]); /* the first new shingle differs */
        var[JL] = 0;
        double j = true_jaccard(base, var);
        if (fabs(j - target) > 0.005)
            fail_msg("pair %d: true Jaccard %.4f, wanted %.2f", p, j, target);
        add_text(d, base, 0);
        flagged += check_text(d, var, NULL) == KN_DEDUP_NEAR;
    }
    return flagged;
}

static void threshold_is_0_8(void **state)
{
    (void)state;
    kn_dedup *d = mk();
    int above = flagged_at(d, 0.84, 0x6b696c6e2d383421ull);
    int below = flagged_at(d, 0.76, 0x6b696c6e2d373621ull);
    print_message("true Jaccard 0.84: %d of %d flagged; 0.76: %d of %d flagged\n", above, NPAIRS,
                  below, NPAIRS);
    assert_true(above >= NPAIRS * 3 / 4); /* 30: a threshold of 0.85 or 0.9 misses these */
    assert_true(below <= NPAIRS / 4);     /* 10: a threshold of 0.75 or 0.7 catches these */
    kn_dedup_destroy(d);
}

/* Every fortune in a few categories is kept except those that really repeat. */
static void fortunes_distinct(void **state)
{
    (void)state;
    const char *cats[] = {"computers", "science", "food", "love"};
    kn_dedup *d = mk();
    int total = 0, dups = 0, files = 0;
    for (size_t c = 0; c < sizeof(cats) / sizeof(cats[0]); c++) {
        char path[256];
        snprintf(path, sizeof(path), "/usr/share/games/fortunes/%s", cats[c]);
        FILE *f = fopen(path, "r");
        if (!f) continue;
        files++;
        char *doc = malloc(1 << 16), line[4096];
        size_t len = 0;
        while (fgets(line, sizeof(line), f)) {
            if (strcmp(line, "%\n") == 0) {
                if (len > 40) {
                    doc[len] = 0;
                    total++;
                    if (check_text(d, doc, NULL) != KN_DEDUP_NEW)
                        dups++;
                    else
                        add_text(d, doc, 0);
                }
                len = 0;
                continue;
            }
            size_t l = strlen(line);
            if (len + l < (1 << 16) - 1) {
                memcpy(doc + len, line, l);
                len += l;
            }
        }
        free(doc);
        fclose(f);
    }
    if (files == 0) {
        kn_dedup_destroy(d);
        skip_because("fortunes not installed (apt-get install -y fortunes)");
    }
    print_message("fortunes: %d texts, %d flagged as duplicates\n", total, dups);
    assert_true(total > 500);
    /* The fortune files repeat a handful of texts; anything more is a false positive. */
    assert_true(dups * 100 < total);
    kn_dedup_destroy(d);
}

static void rollback_and_changelog(void **state)
{
    (void)state;
    kn_dedup *d = mk();
    add_text(d, "first committed document, long enough to shingle", 0);
    add_text(d, "a pending document that will be rolled back later on", 1);
    assert_int_equal(kn_dedup_count(d), 2);
    kn_dedup_rollback(d);
    assert_int_equal(kn_dedup_count(d), 1);
    assert_int_equal(check_text(d, "a pending document that will be rolled back later on", NULL),
                     KN_DEDUP_NEW);
    add_text(d, "a pending document that will be rolled back later on", 1);
    kn_dedup_commit(d);
    assert_int_equal(check_text(d, "a pending document that will be rolled back later on", NULL),
                     KN_DEDUP_EXACT);

    /* Changelog: entries applied to a fresh object give the same answers. */
    kn_dedup *r = mk();
    const char *docs[] = {"first committed document, long enough to shingle",
                          "a pending document that will be rolled back later on"};
    for (int i = 0; i < 2; i++) {
        kn_dedup_fp fp;
        kn_dedup_fingerprint(d, docs[i], strlen(docs[i]), &fp);
        char key[KN_DEDUP_KEY_LEN];
        uint8_t val[KN_DEDUP_VALUE_MAX];
        size_t vl = kn_dedup_entry_encode(d, &fp, key, val);
        assert_int_equal(vl, 8 + 2 * 128); /* version 2: 16-bit values */
        assert_int_equal(val[0], 2);
        assert_int_equal(kn_dedup_entry_apply(r, key, sizeof(key), val, vl), KN_OK);
        assert_int_equal(kn_dedup_entry_apply(r, key, sizeof(key), val, vl),
                         KN_OK); /* idempotent */
        assert_int_equal(kn_dedup_entry_apply(r, key, sizeof(key), val, vl - 1), KN_ECORRUPT);
    }
    assert_int_equal(kn_dedup_entry_apply(r, "tail/x", 6, "", 0), KN_ENOTFOUND);
    /* A version-1 entry (32-bit values, written before 2026-12-01) still
     * counts for near matches: its low 16 bits are the values. */
    {
        const char *old = "an entry written by an older instance, before 16-bit values";
        kn_dedup_fp fp;
        kn_dedup_fingerprint(d, old, strlen(old), &fp);
        char key[KN_DEDUP_KEY_LEN];
        uint8_t v2[KN_DEDUP_VALUE_MAX], v1[8 + 4 * 128];
        kn_dedup_entry_encode(d, &fp, key, v2);
        memcpy(v1, v2, 8);
        v1[0] = 1;
        for (int j = 0; j < 128; j++) { /* high halves: anything */
            v1[8 + 4 * j] = v2[8 + 2 * j];
            v1[9 + 4 * j] = v2[9 + 2 * j];
            v1[10 + 4 * j] = (uint8_t)(j * 37);
            v1[11 + 4 * j] = (uint8_t)(j * 11 + 5);
        }
        assert_int_equal(kn_dedup_entry_apply(r, key, sizeof(key), v1, sizeof(v1) - 1),
                         KN_ECORRUPT);
        assert_int_equal(kn_dedup_entry_apply(r, key, sizeof(key), v1, sizeof(v1)), KN_OK);
        assert_int_equal(
            check_text(r, "An entry written by an older  instance, before 16-bit values", NULL),
            KN_DEDUP_NEAR);
    }
    assert_int_equal(kn_dedup_count(r), 3);
    assert_int_equal(check_text(r, "First committed document,  long enough to shingle", NULL),
                     KN_DEDUP_NEAR);
    /* An entry committed elsewhere turns our pending copy into a committed one. */
    kn_dedup *p = mk();
    add_text(p, docs[0], 1);
    kn_dedup_fp fp;
    kn_dedup_fingerprint(p, docs[0], strlen(docs[0]), &fp);
    char key[KN_DEDUP_KEY_LEN];
    uint8_t val[KN_DEDUP_VALUE_MAX];
    size_t vl = kn_dedup_entry_encode(p, &fp, key, val);
    assert_int_equal(kn_dedup_entry_apply(p, key, sizeof(key), val, vl), KN_OK);
    kn_dedup_rollback(p);
    assert_int_equal(check_text(p, docs[0], NULL), KN_DEDUP_EXACT);
    kn_dedup_destroy(p);
    kn_dedup_destroy(r);
    kn_dedup_destroy(d);
}

static void exact_only_and_bad_options(void **state)
{
    (void)state;
    kn_dedup_options o;
    kn_dedup_options_default(&o);
    char err[256];
    o.bands = 7; /* 128 is not a multiple of 7 */
    assert_null(kn_dedup_new(&o, err, sizeof(err)));
    kn_dedup_options_default(&o);
    o.near = 0;
    kn_dedup *d = kn_dedup_new(&o, err, sizeof(err));
    assert_non_null(d);
    add_text(d, base, 0);
    assert_int_equal(check_text(d, base, NULL), KN_DEDUP_EXACT);
    char buf[1024];
    snprintf(buf, sizeof(buf), "%s!", base);
    assert_int_equal(check_text(d, buf, NULL), KN_DEDUP_NEW);
    /* many inserts grow every table */
    for (int i = 0; i < 5000; i++) {
        snprintf(buf, sizeof(buf), "document number %d", i);
        add_text(d, buf, i % 2);
    }
    kn_dedup_commit(d);
    assert_int_equal(kn_dedup_count(d), 5001);
    kn_dedup_destroy(d);
}

/* Texts of random words (like distinct short records): none is flagged. */
static void many_distinct(void **state)
{
    (void)state;
    kn_dedup *d = mk();
    char buf[512];
    uint64_t r = 12345;
    for (int i = 0; i < 3000; i++) {
        size_t m = 0;
        for (int w = 0; w < 12; w++) {
            int wl = 3 + (int)((r >> 33) % 6);
            for (int c = 0; c < wl; c++) {
                r = r * 6364136223846793005ull + 1442695040888963407ull;
                buf[m++] = (char)('a' + (r >> 33) % 26);
            }
            buf[m++] = ' ';
        }
        buf[m] = 0;
        assert_int_equal(check_text(d, buf, NULL), KN_DEDUP_NEW);
        add_text(d, buf, 0);
    }
    assert_int_equal(kn_dedup_count(d), 3000);
    kn_dedup_destroy(d);
}

static void text_n(char *buf, int i)
{
    uint64_t r = (uint64_t)i * 0x9e3779b97f4a7c15ull + 99;
    size_t m = 0;
    for (int w = 0; w < 14; w++) {
        for (int c = 0; c < 5; c++) {
            r = r * 6364136223846793005ull + 1442695040888963407ull;
            buf[m++] = (char)('a' + (r >> 33) % 26);
        }
        buf[m++] = ' ';
    }
    buf[m] = 0;
}

/* A window of W holds between W/2 and W documents: the most recent W/2 are
 * always caught (exact and near), documents older than W never; the memory
 * stops growing; pending inserts still roll back. */
static void window_bounds(void **state)
{
    (void)state;
    kn_dedup_options o;
    kn_dedup_options_default(&o);
    o.window = 1000;
    char err[256], buf[512];
    kn_dedup *d = kn_dedup_new(&o, err, sizeof(err));
    assert_non_null(d);
    size_t mem_at_2000 = 0;
    for (int i = 0; i < 5000; i++) {
        text_n(buf, i);
        assert_int_equal(check_text(d, buf, NULL), KN_DEDUP_NEW);
        add_text(d, buf, 0);
        assert_true(kn_dedup_count(d) <= 1000);
        if (i >= 1000) assert_true(kn_dedup_count(d) >= 500);
        if (i == 1999) mem_at_2000 = kn_dedup_memory(d);
    }
    assert_int_equal(kn_dedup_memory(d), mem_at_2000); /* steady: allocations reused */
    assert_true(kn_dedup_rotations(d) >= 8);
    for (int i = 5000 - 500; i < 5000; i++) { /* the last W/2: remembered */
        text_n(buf, i);
        assert_int_equal(check_text(d, buf, NULL), KN_DEDUP_EXACT);
        buf[0] = buf[0] == 'a' ? 'b' : 'a'; /* one character changed: near */
        assert_int_equal(check_text(d, buf, NULL), KN_DEDUP_NEAR);
    }
    for (int i = 0; i < 5000 - 1000; i++) { /* older than W: forgotten */
        text_n(buf, i);
        assert_int_equal(check_text(d, buf, NULL), KN_DEDUP_NEW);
    }
    /* Rollback across a rotation: pending documents in either generation go. */
    for (int i = 10000; i < 10600; i++) {
        text_n(buf, i);
        add_text(d, buf, 1);
    }
    kn_dedup_rollback(d);
    for (int i = 10000; i < 10600; i++) {
        text_n(buf, i);
        assert_int_equal(check_text(d, buf, NULL), KN_DEDUP_NEW);
    }
    kn_dedup_destroy(d);
    o.window = 1;
    assert_null(kn_dedup_new(&o, err, sizeof(err)));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(exact_and_near),         cmocka_unit_test(threshold_behaviour),
        cmocka_unit_test(threshold_is_0_8),       cmocka_unit_test(fortunes_distinct),
        cmocka_unit_test(rollback_and_changelog), cmocka_unit_test(exact_only_and_bad_options),
        cmocka_unit_test(many_distinct),          cmocka_unit_test(window_bounds),
    };
    return skip_run_group_tests(tests, NULL, NULL);
}
