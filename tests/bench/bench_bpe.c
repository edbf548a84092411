/* bench_bpe.c: single-thread encode throughput of lib/bpe on the Debian
 * fortunes for r50k_base and cl100k_base, next to npm `tiktoken` (WASM) timed
 * by tests/tokenizer/bench-ref.js on the same files, with the speed ratio.
 * The ids must be tiktoken's, compared by a SHA-256 over every document's
 * id count and ids (little-endian u32) on both sides; a difference, or a
 * reference that did not run, exits 1. Needs the rank files
 * (tests/tokenizer/cache.sh).
 * Usage: bench_bpe [seconds-per-measure (default 3)] [source-dir] */
#include "core/kn.h"
#include "core/sha256.h"
#include "text/bpe.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifndef KILN_SOURCE_DIR
#define KILN_SOURCE_DIR "."
#endif
#define FORTUNES "/usr/share/games/fortunes"

typedef struct {
    char *path;
    char *text;
    size_t len;
} doc;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* This thread's CPU seconds: the figure a shared, loaded machine does not
 * distort (wall time there includes the time other processes ran). */
static double cpu_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void put_le32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The fortune text files (not the .dat/.u8 indexes), sorted by name. */
static doc *load_fortunes(size_t *ndocs, size_t *nbytes)
{
    DIR *d = opendir(FORTUNES);
    if (!d) return NULL;
    char *names[256];
    size_t n = 0;
    struct dirent *e;
    while ((e = readdir(d)) && n < 256) {
        const char *dot = strrchr(e->d_name, '.');
        if (e->d_name[0] == '.' || (dot && (!strcmp(dot, ".dat") || !strcmp(dot, ".u8")))) continue;
        names[n++] = strdup(e->d_name);
    }
    closedir(d);
    qsort(names, n, sizeof(names[0]), cmp_str);
    doc *docs = calloc(n, sizeof(*docs));
    *nbytes = 0;
    for (size_t i = 0; i < n; i++) {
        char path[1024];
        snprintf(path, sizeof(path), "%s/%s", FORTUNES, names[i]);
        free(names[i]);
        FILE *f = fopen(path, "rb");
        if (!f) return NULL;
        fseek(f, 0, SEEK_END);
        long sz = ftell(f);
        fseek(f, 0, SEEK_SET);
        docs[i].path = strdup(path);
        docs[i].text = malloc((size_t)sz + 1);
        docs[i].len = fread(docs[i].text, 1, (size_t)sz, f);
        fclose(f);
        *nbytes += docs[i].len;
    }
    *ndocs = n;
    return docs;
}

/* Runs bench-ref.js; returns MB/s, with the id count and the ids' SHA-256 (hex)
 * (0 when node or the packages are missing, or it failed). */
static double reference_mbps(const char *src, const char *enc, double seconds, const doc *docs,
                             size_t ndocs, size_t *ref_ids, char ref_hex[KN_SHA256_HEX_LEN])
{
    size_t cap = 4096 + ndocs * 64, n = 0;
    char *cmd = malloc(cap);
    n += (size_t)snprintf(cmd, cap, "node '%s/tests/tokenizer/bench-ref.js' %s %g", src, enc,
                          seconds);
    for (size_t i = 0; i < ndocs; i++)
        n += (size_t)snprintf(cmd + n, cap - n, " '%s'", docs[i].path);
    snprintf(cmd + n, cap - n, " 2>&1");
    FILE *p = popen(cmd, "r");
    free(cmd);
    if (!p) return 0;
    char line[512], name[64], first[512] = "", hex[80] = "";
    double mbps = 0;
    size_t bytes;
    while (fgets(line, sizeof(line), p))
        if (sscanf(line, "ref %63s %lf %zu %zu %79s", name, &mbps, ref_ids, &bytes, hex) != 5 &&
            !first[0])
            snprintf(first, sizeof(first), "%s", line);
    if (strlen(hex) == KN_SHA256_HEX_LEN - 1) memcpy(ref_hex, hex, KN_SHA256_HEX_LEN);
    int rc = pclose(p);
    if (rc != 0 || mbps <= 0 || !kn_sha256_hex_valid(ref_hex)) {
        printf("  bench-ref.js failed (status %d): %s", rc, first[0] ? first : "no output\n");
        return 0;
    }
    return mbps;
}

int main(int argc, char **argv)
{
    double seconds = argc > 1 ? atof(argv[1]) : 3.0;
    const char *src = argc > 2 ? argv[2] : KILN_SOURCE_DIR;
    if (seconds <= 0) seconds = 3.0;
    size_t ndocs = 0, nbytes = 0;
    doc *docs = load_fortunes(&ndocs, &nbytes);
    if (!docs || ndocs == 0) {
        fprintf(stderr, "bench_bpe: no fortunes in %s (apt-get install -y fortunes)\n", FORTUNES);
        return 1;
    }
    printf("corpus: %zu fortune files, %zu bytes; %.1f s per measure, one thread\n", ndocs, nbytes,
           seconds);
    static const struct {
        const char *file;
        const char *name;
        kn_bpe_kind kind;
    } encs[] = {{"r50k_base.tiktoken", "r50k_base", KN_BPE_R50K},
                {"cl100k_base.tiktoken", "cl100k_base", KN_BPE_CL100K}};
    int status = 0;
    for (size_t e = 0; e < KN_ARRAY_LEN(encs); e++) {
        char path[4096], err[512];
        snprintf(path, sizeof(path), "%s/.cache/tokenizer/%s", src, encs[e].file);
        double t0 = now();
        kn_bpe *b = kn_bpe_load(path, encs[e].kind, err, sizeof(err));
        double tload = now() - t0;
        if (!b) {
            fprintf(stderr, "bench_bpe: %s (run tests/scripts/bpe-parity.sh first)\n", err);
            return 1;
        }
        kn_bpe_ids ids;
        kn_bpe_ids_init(&ids);
        size_t nids = 0;
        kn_sha256 *h = kn_sha256_new();
        if (!h) return 1;
        for (size_t i = 0; i < ndocs; i++) { /* warm-up, the id count and the ids' digest */
            ids.len = 0;
            if (kn_bpe_encode(b, docs[i].text, docs[i].len, KN_BPE_SPECIAL_ORDINARY, &ids, err,
                              sizeof(err)) != KN_OK) {
                fprintf(stderr, "bench_bpe: %s: %s\n", docs[i].path, err);
                return 1;
            }
            uint8_t le[4];
            put_le32(le, (uint32_t)ids.len);
            kn_sha256_update(h, le, 4);
            for (size_t k = 0; k < ids.len; k++) {
                put_le32(le, ids.ids[k]);
                kn_sha256_update(h, le, 4);
            }
            nids += ids.len;
        }
        uint8_t dig[KN_SHA256_LEN];
        char hex[KN_SHA256_HEX_LEN];
        kn_sha256_final(h, dig);
        kn_sha256_destroy(h);
        kn_sha256_to_hex(dig, hex);
        size_t passes = 0;
        double elapsed;
        t0 = now();
        double c0 = cpu_now();
        do {
            for (size_t i = 0; i < ndocs; i++) {
                ids.len = 0;
                kn_bpe_encode(b, docs[i].text, docs[i].len, KN_BPE_SPECIAL_ORDINARY, &ids, NULL, 0);
            }
            passes++;
            elapsed = now() - t0;
        } while (elapsed < seconds);
        double mbps = (double)nbytes * (double)passes / 1e6 / elapsed;
        double cpu_mbps = (double)nbytes * (double)passes / 1e6 / (cpu_now() - c0);
        size_t ref_ids = 0;
        char ref_hex[KN_SHA256_HEX_LEN] = "";
        double ref = reference_mbps(src, encs[e].name, seconds, docs, ndocs, &ref_ids, ref_hex);
        printf("%-12s kiln %7.2f MB/s (%.2f Mtok/s, %zu ids, load %.0f ms; %.2f MB per CPU-second)",
               encs[e].name, mbps, (double)nids * (double)passes / 1e6 / elapsed, nids, tload * 1e3,
               cpu_mbps);
        if (ref > 0) {
            int same = ref_ids == nids && strcmp(ref_hex, hex) == 0;
            printf("  tiktoken-wasm %6.2f MB/s (%zu ids)  ratio %.1fx  ids %s (sha256 %.16s)\n",
                   ref, ref_ids, mbps / ref, same ? "identical" : "DIFFER", hex);
            if (!same) {
                printf("FAIL: %s: kiln's ids (sha256 %s) are not tiktoken's (sha256 %s)\n",
                       encs[e].name, hex, ref_hex);
                status = 1;
            }
        } else {
            printf("\nFAIL: %s: no reference figure (node, tests/tokenizer/node_modules?)\n",
                   encs[e].name);
            status = 1;
        }
        kn_bpe_ids_free(&ids);
        kn_bpe_destroy(b);
    }
    for (size_t i = 0; i < ndocs; i++) {
        free(docs[i].path);
        free(docs[i].text);
    }
    free(docs);
    return status;
}
