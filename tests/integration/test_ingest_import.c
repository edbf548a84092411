/* test_ingest_import.c: the dataset importers against the real Debian data.
 * Fashion-MNIST: exactly 60,000 train + 10,000 test records, labels 0..9,
 * each a P5 PGM whose pixel bytes equal the IDX item named by its origin.
 * Fortunes: one record per fortune (raw or, for invalid UTF-8, DLQ), label =
 * the category file, bytes = the text between "%" lines. Skips (and says so)
 * when a package is not installed. */
#include <dirent.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "../unit/skip.h"

#include "image/idx.h"
#include "test_ingest_util.h"

#define FMNIST   "/usr/share/datasets/fashion-mnist"
#define FORTUNES "/usr/share/games/fortunes"

static uint8_t *load_items(const char *path, uint32_t *n, uint64_t *item)
{
    char e[512];
    kn_idx *f = kn_idx_open(path, e, sizeof(e));
    if (!f) fail_msg("%s", e);
    *n = kn_idx_hdr(f)->dims[0];
    *item = kn_idx_hdr(f)->item_size;
    uint8_t *all = malloc((size_t)*n * *item);
    for (uint32_t i = 0; i < *n; i++)
        if (kn_idx_next(f, all + (size_t)i * *item, e, sizeof(e)) != KN_OK) fail_msg("%s", e);
    if (kn_idx_next(f, all, e, sizeof(e)) != KN_ENOTFOUND) fail_msg("%s: trailing data", path);
    kn_idx_close(f);
    return all;
}

static void test_fashion_mnist(void **state)
{
    (void)state;
    struct stat sb;
    if (stat(FMNIST "/train-images-idx3-ubyte.gz", &sb) != 0) {
        skip_because("dataset-fashion-mnist is not installed (apt-get install -y "
                     "dataset-fashion-mnist)");
    }
    char prefix[128], envp[256], topic[300];
    ti_prefix(prefix, sizeof(prefix), "fmnist");
    snprintf(envp, sizeof(envp), "KILN_KAFKA_TOPIC_PREFIX=%s", prefix);
    const char *env[] = {envp, NULL};
    const char *args[] = {"import", "fashion-mnist", NULL};
    assert_int_equal(ti_run(args, env, NULL, 180), 0);

    struct {
        const char *split, *stem;
        uint8_t *img, *lab;
        uint32_t n;
        uint64_t isz;
        uint32_t seen;
    } sp[2] = {{"train", "train", NULL, NULL, 0, 0, 0}, {"test", "t10k", NULL, NULL, 0, 0, 0}};
    for (int s = 0; s < 2; s++) {
        char p[512];
        uint32_t ln;
        uint64_t lsz;
        snprintf(p, sizeof(p), FMNIST "/%s-images-idx3-ubyte.gz", sp[s].stem);
        sp[s].img = load_items(p, &sp[s].n, &sp[s].isz);
        snprintf(p, sizeof(p), FMNIST "/%s-labels-idx1-ubyte.gz", sp[s].stem);
        sp[s].lab = load_items(p, &ln, &lsz);
        assert_int_equal(ln, sp[s].n);
    }
    assert_int_equal(sp[0].n, 60000);
    assert_int_equal(sp[1].n, 10000);

    ti_recs img, dlq;
    ti_topic(topic, sizeof(topic), prefix, "raw.image");
    assert_int_equal(ti_consume(topic, 0, &img), 0);
    ti_topic(topic, sizeof(topic), prefix, "dlq");
    assert_int_equal(ti_consume(topic, 0, &dlq), 0);
    assert_int_equal(dlq.n, 0);
    assert_int_equal(img.n, 70000);
    uint8_t *seen[2] = {calloc(60000, 1), calloc(10000, 1)};
    int per_class[10] = {0};
    for (size_t i = 0; i < img.n; i++) {
        const ti_rec *r = &img.v[i];
        int s = strcmp(r->info.split, "train") == 0  ? 0
                : strcmp(r->info.split, "test") == 0 ? 1
                                                     : -1;
        assert_true(s >= 0);
        const char *hash = strrchr(r->info.origin, '#');
        assert_non_null(hash);
        assert_non_null(strstr(r->info.origin, sp[s].stem));
        uint32_t idx = (uint32_t)strtoul(hash + 1, NULL, 10);
        assert_true(idx < sp[s].n);
        assert_int_equal(seen[s][idx], 0); /* each image exactly once */
        seen[s][idx] = 1;
        sp[s].seen++;
        static const char head[] = "P5\n28 28\n255\n";
        assert_int_equal(r->len, sizeof(head) - 1 + 784);
        assert_memory_equal(r->value, head, sizeof(head) - 1);
        assert_memory_equal(r->value + sizeof(head) - 1, sp[s].img + (size_t)idx * 784, 784);
        char want[8];
        snprintf(want, sizeof(want), "%u", sp[s].lab[idx]);
        assert_string_equal(r->info.label, want);
        per_class[sp[s].lab[idx]]++;
        assert_string_equal(r->info.dataset, "fashion-mnist");
        assert_string_equal(r->info.content_type, "image/x-portable-graymap");
        assert_string_equal(r->info.source, "import");
        char key[65];
        kn_record_key(r->value, r->len, key);
        assert_string_equal(r->key, key);
    }
    assert_int_equal(sp[0].seen, 60000);
    assert_int_equal(sp[1].seen, 10000);
    for (int k = 0; k < 10; k++)
        assert_int_equal(per_class[k], 7000);
    for (int s = 0; s < 2; s++) {
        free(sp[s].img);
        free(sp[s].lab);
        free(seen[s]);
    }
    ti_recs_free(&img);
    ti_recs_free(&dlq);
}

/* The expected fortunes, split independently of the importer. */
typedef struct {
    char origin[600];
    char sha[65];
} fortune;

static size_t expected_fortunes(fortune **out)
{
    size_t n = 0, cap = 1024;
    fortune *v = malloc(cap * sizeof(*v));
    DIR *d = opendir(FORTUNES);
    struct dirent *e;
    while ((e = readdir(d))) {
        char path[512];
        const char *dot = strrchr(e->d_name, '.');
        if (e->d_name[0] == '.' || (dot && (!strcmp(dot, ".dat") || !strcmp(dot, ".u8")))) continue;
        snprintf(path, sizeof(path), FORTUNES "/%s", e->d_name);
        struct stat sb;
        if (lstat(path, &sb) != 0 || !S_ISREG(sb.st_mode)) continue;
        FILE *f = fopen(path, "rb");
        fseek(f, 0, SEEK_END);
        long len = ftell(f);
        fseek(f, 0, SEEK_SET);
        char *text = malloc((size_t)len + 3);
        if (fread(text, 1, (size_t)len, f) != (size_t)len) fail();
        fclose(f);
        text[len] = '\0';
        /* fortunes: pieces between lines that are exactly "%" */
        long start = 0, idx = 0;
        for (long i = 0; i <= len; i++) {
            int at_sep = (i == 0 || text[i - 1] == '\n') && i < len && text[i] == '%' &&
                         (i + 1 == len || text[i + 1] == '\n');
            if (!at_sep && i != len) continue;
            long end = i; /* piece is text[start, end) */
            long plen = end - start;
            if (plen > 0 && text[start + plen - 1] == '\n') plen--;
            int blank = 1;
            for (long k = 0; k < plen; k++)
                if (!strchr(" \t\r\n", text[start + k])) blank = 0;
            if (!blank) {
                if (n == cap) v = realloc(v, (cap *= 2) * sizeof(*v));
                snprintf(v[n].origin, sizeof(v[n].origin), "%s#%ld", path, idx);
                kn_record_key(text + start, (size_t)plen, v[n].sha);
                n++;
            }
            idx++;
            if (i == len) break;
            start = i + 2 > len ? len : i + 2;
            i++;
        }
        free(text);
    }
    closedir(d);
    *out = v;
    return n;
}

static int cmp_origin(const void *a, const void *b)
{
    return strcmp(((const fortune *)a)->origin, ((const fortune *)b)->origin);
}

static void test_fortunes(void **state)
{
    (void)state;
    struct stat sb;
    if (stat(FORTUNES "/computers", &sb) != 0) {
        skip_because("fortunes is not installed (apt-get install -y fortunes)");
    }
    char prefix[128], envp[256], topic[300];
    ti_prefix(prefix, sizeof(prefix), "fortunes");
    snprintf(envp, sizeof(envp), "KILN_KAFKA_TOPIC_PREFIX=%s", prefix);
    const char *env[] = {envp, NULL};
    const char *args[] = {"import", "fortunes", NULL};
    assert_int_equal(ti_run(args, env, NULL, 120), 0);

    fortune *want;
    size_t nwant = expected_fortunes(&want);
    qsort(want, nwant, sizeof(*want), cmp_origin);
    assert_true(nwant > 1000);
    ti_recs text, dlq;
    ti_topic(topic, sizeof(topic), prefix, "raw.text");
    assert_int_equal(ti_consume(topic, 0, &text), 0);
    ti_topic(topic, sizeof(topic), prefix, "dlq");
    assert_int_equal(ti_consume(topic, 0, &dlq), 0);
    fprintf(stderr, "fortunes: %zu expected, %zu records, %zu in the DLQ\n", nwant, text.n, dlq.n);
    assert_int_equal(text.n + dlq.n, nwant);
    uint8_t *hit = calloc(nwant, 1);
    for (int pass = 0; pass < 2; pass++) {
        const ti_recs *rs = pass ? &dlq : &text;
        for (size_t i = 0; i < rs->n; i++) {
            const ti_rec *r = &rs->v[i];
            fortune key;
            snprintf(key.origin, sizeof(key.origin), "%.*s", (int)sizeof(key.origin) - 1,
                     r->info.origin);
            fortune *w = bsearch(&key, want, nwant, sizeof(*want), cmp_origin);
            if (!w) fail_msg("unexpected record from %s", r->info.origin);
            assert_int_equal(hit[w - want], 0);
            hit[w - want] = 1;
            /* label = the category = the file name */
            const char *slash = strrchr(r->info.origin, '/');
            char cat[128];
            snprintf(cat, sizeof(cat), "%.*s", (int)(strchr(slash, '#') - slash - 1), slash + 1);
            assert_string_equal(r->info.label, cat);
            assert_string_equal(r->info.dataset, "fortunes");
            if (pass == 0) {
                assert_string_equal(r->key, w->sha);
            } else {
                assert_string_equal(r->info.reason, KN_REASON_BAD_UTF8);
                assert_string_equal(r->info.original_sha256, w->sha);
            }
        }
    }
    free(hit);
    free(want);
    ti_recs_free(&text);
    ti_recs_free(&dlq);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fashion_mnist),
        cmocka_unit_test(test_fortunes),
    };
    return skip_run_group_tests(tests, NULL, NULL);
}
