/* bench_dedup_memory: the dedup index's memory after N synthetic documents,
 * with and without a window (docs/preprocess.md "Dedup", issue 16 item 5).
 * Documents are 12..40 random words (about 150 B, like fortunes); every
 * 50th is a near copy (one word changed) of a recent one and every 97th an
 * exact repeat, so the index is exercised as in preprocess. Prints the
 * process RSS (VmRSS, /proc/self/status) and the index's own allocation at
 * checkpoints, and how many repeats were caught.
 *
 *   bench_dedup_memory [--docs N] [--window W]     (defaults 1000000, 0) */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/kn.h"
#include "text/dedup.h"

static long rss_kb(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kb = -1;
    while (f && fgets(line, sizeof(line), f))
        if (strncmp(line, "VmRSS:", 6) == 0) kb = atol(line + 6);
    if (f) fclose(f);
    return kb;
}

static uint64_t rnd(uint64_t *s)
{
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return *s >> 33;
}

/* Document i's text (deterministic in i): words from a seeded generator. */
static size_t make_doc(uint64_t i, char *buf, int change_word)
{
    uint64_t r = i * 0x9e3779b97f4a7c15ull + 7;
    int nw = 12 + (int)(rnd(&r) % 29);
    size_t m = 0;
    for (int w = 0; w < nw; w++) {
        int wl = 2 + (int)(rnd(&r) % 8);
        for (int c = 0; c < wl; c++) {
            char ch = (char)('a' + rnd(&r) % 26);
            buf[m++] = w == change_word ? (char)('A' + (ch - 'a' + 1) % 26) : ch;
        }
        buf[m++] = ' ';
    }
    buf[m] = 0;
    return m;
}

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    uint64_t ndocs = 1000000;
    size_t window = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--docs") == 0 && i + 1 < argc)
            ndocs = strtoull(argv[++i], NULL, 10);
        else if (strcmp(argv[i], "--window") == 0 && i + 1 < argc)
            window = strtoull(argv[++i], NULL, 10);
        else {
            fprintf(stderr, "usage: bench_dedup_memory [--docs N] [--window W]\n");
            return 2;
        }
    }
    kn_dedup_options o;
    kn_dedup_options_default(&o);
    o.window = window;
    char err[256];
    kn_dedup *d = kn_dedup_new(&o, err, sizeof(err));
    if (!d) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    long rss0 = rss_kb();
    printf("dedup memory: %llu synthetic documents (12..40 words), 128 hashes, 16 bands, "
           "window %zu%s\n",
           (unsigned long long)ndocs, window, window ? "" : " (none)");
    printf("%10s %10s %12s %12s %10s %8s %8s\n", "docs", "held", "index MiB", "RSS MiB", "B/held",
           "exact", "near");
    char buf[1024];
    uint64_t nexact = 0, nnear = 0, kept = 0, pexact = 0, pnear = 0;
    double t0 = now();
    for (uint64_t i = 0; i < ndocs; i++) {
        size_t len;
        if (i % 97 == 96) {
            len = make_doc(i - 1 - (i / 97) % 50, buf, -1); /* exact repeat of a recent one */
            pexact++;
        } else if (i % 50 == 49) {
            len = make_doc(i - 7, buf, 3); /* near copy: one word changed */
            pnear++;
        } else
            len = make_doc(i, buf, -1);
        kn_dedup_fp fp;
        if (kn_dedup_fingerprint(d, buf, len, &fp) != KN_OK) return 1;
        int r = kn_dedup_check(d, &fp, NULL);
        if (r == KN_DEDUP_EXACT)
            nexact++;
        else if (r == KN_DEDUP_NEAR)
            nnear++;
        else {
            if (kn_dedup_insert(d, &fp, 1) != KN_OK) return 1;
            kept++;
        }
        if (i % 5000 == 4999) kn_dedup_commit(d); /* transactions, as preprocess does */
        uint64_t n = i + 1;
        if (n == ndocs || (n % 100000 == 0 && n >= 100000)) {
            size_t held = kn_dedup_count(d);
            size_t mem = kn_dedup_memory(d);
            long rss = rss_kb();
            printf("%10llu %10zu %12.1f %12.1f %10.0f %8llu %8llu\n", (unsigned long long)n, held,
                   mem / 1048576.0, rss / 1024.0,
                   held ? (double)(rss - rss0) * 1024.0 / (double)held : 0.0,
                   (unsigned long long)nexact, (unsigned long long)nnear);
            fflush(stdout);
        }
    }
    double dt = now() - t0;
    printf("kept %llu, exact repeats %llu, near copies %llu (of %llu and %llu planted), "
           "%.0f docs/s, window rotations %llu\n",
           (unsigned long long)kept, (unsigned long long)nexact, (unsigned long long)nnear,
           (unsigned long long)pexact, (unsigned long long)pnear, (double)ndocs / dt,
           (unsigned long long)kn_dedup_rotations(d));
    kn_dedup_destroy(d);
    return 0;
}
