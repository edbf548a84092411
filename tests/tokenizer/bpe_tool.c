/* bpe_tool.c: command-line driver for the BPE parity and training checks run
 * by tests/scripts/bpe-parity.sh (and by hand). Not installed.
 *   bpe_tool parity <rank-file> <r50k|cl100k> <expected-file>
 *   bpe_tool train <r50k|cl100k> <vocab-size> <out-rank-file> <file>...
 *   bpe_tool encode <rank-file> <r50k|cl100k> <file>   (ids on stdout)
 *   bpe_tool bench <rank-file> <r50k|cl100k> <corpus> <seconds> [<expected-ids>] [--special]
 *       single-thread encode speed, one call per document, over a corpus of
 *       NUL-separated documents (tests/tokenizer/bench-corpus.js); with the
 *       expected ids (reference.js expect-corpus: one line per document) every
 *       document's ids must be identical first. --special encodes with special
 *       tokens allowed (KN_BPE_SPECIAL_ALLOW), as npm tiktoken-node's `encode`
 *       does, instead of as plain text (tiktoken's encode_ordinary). */
#include "text/bpe.h"
#include "core/kn.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    for (;;) {
        if (n == cap) buf = realloc(buf, cap *= 2);
        size_t r = fread(buf + n, 1, cap - n, f);
        if (r == 0) break;
        n += r;
    }
    fclose(f);
    *len = n;
    return buf;
}

static int parse_kind(const char *s, kn_bpe_kind *k)
{
    if (strcmp(s, "r50k") == 0)
        *k = KN_BPE_R50K;
    else if (strcmp(s, "cl100k") == 0)
        *k = KN_BPE_CL100K;
    else
        return -1;
    return 0;
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* CPU time of this thread: on a shared machine it leaves out the time other
 * processes hold the core. */
static double cpu_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Prints where two id sequences first differ, with the decoded text around. */
static void show_diff(const kn_bpe *b, const uint32_t *got, size_t ng, const uint32_t *want,
                      size_t nw)
{
    size_t i = 0;
    while (i < ng && i < nw && got[i] == want[i])
        i++;
    size_t from = i > 5 ? i - 5 : 0;
    char buf[512];
    size_t len = 0;
    printf("    first difference at id %zu\n    got: ", i);
    for (size_t k = from; k < ng && k < i + 6; k++)
        printf(" %u", got[k]);
    printf("\n    want:");
    for (size_t k = from; k < nw && k < i + 6; k++)
        printf(" %u", want[k]);
    size_t nshow = nw - from < 12 ? nw - from : 12;
    kn_bpe_decode(b, want + from, nshow, buf, sizeof(buf) - 1, &len, NULL, 0);
    if (len > sizeof(buf) - 1) len = sizeof(buf) - 1;
    printf("\n    text: \"");
    for (size_t k = 0; k < len; k++) {
        unsigned char c = (unsigned char)buf[k];
        if (c < 0x20 || c == '"' || c == '\\')
            printf("\\x%02x", c);
        else
            putchar(c);
    }
    printf("\"\n");
}

static int cmd_parity(const char *rank_file, kn_bpe_kind kind, const char *expected)
{
    char err[512];
    kn_bpe *b = kn_bpe_load(rank_file, kind, err, sizeof(err));
    if (!b) {
        fprintf(stderr, "load: %s\n", err);
        return 1;
    }
    FILE *f = fopen(expected, "r");
    if (!f) {
        perror(expected);
        return 1;
    }
    size_t linecap = 1 << 20;
    char *line = malloc(linecap);
    ssize_t ll;
    size_t ndocs = 0, nbad_docs = 0, nids = 0, nsame = 0, nbytes = 0, nrt_bad = 0;
    kn_bpe_ids got, want;
    kn_bpe_ids_init(&got);
    kn_bpe_ids_init(&want);
    double t_enc = 0;
    while ((ll = getline(&line, &linecap, f)) > 0) {
        char kindc = line[0];
        char *text = NULL, name[4096] = "";
        size_t tlen = 0, nexp = 0;
        if (kindc == 'D') {
            size_t nb;
            if (sscanf(line, "D %zu %zu %4095[^\n]", &nb, &nexp, name) != 3) goto bad_line;
            text = slurp(name, &tlen);
            if (!text || tlen != nb) {
                fprintf(stderr, "%s: cannot read or size changed\n", name);
                return 1;
            }
        } else if (kindc == 'S') {
            char hex[4096];
            if (sscanf(line, "S %4095s %zu", hex, &nexp) != 2) goto bad_line;
            tlen = strlen(hex) / 2;
            text = malloc(tlen + 1);
            for (size_t i = 0; i < tlen; i++) {
                unsigned v;
                sscanf(hex + 2 * i, "%2x", &v);
                text[i] = (char)v;
            }
            snprintf(name, sizeof(name), "special case \"%.*s\"", (int)tlen, text);
        } else {
            goto bad_line;
        }
        ll = getline(&line, &linecap, f);
        if (ll < 0) goto bad_line;
        want.len = 0;
        char *p = line;
        for (size_t i = 0; i < nexp; i++) {
            char *e;
            unsigned long v = strtoul(p, &e, 10);
            if (e == p) goto bad_line;
            kn_bpe_ids tmp = want;
            if (tmp.len == tmp.cap) {
                tmp.cap = tmp.cap ? tmp.cap * 2 : 1024;
                tmp.ids = realloc(tmp.ids, tmp.cap * sizeof(uint32_t));
            }
            tmp.ids[tmp.len++] = (uint32_t)v;
            want = tmp;
            p = e;
        }
        got.len = 0;
        double t0 = now();
        int rc = kn_bpe_encode(b, text, tlen,
                               kindc == 'S' ? KN_BPE_SPECIAL_ALLOW : KN_BPE_SPECIAL_ORDINARY, &got,
                               err, sizeof(err));
        t_enc += now() - t0;
        if (rc) {
            fprintf(stderr, "%s: encode: %s\n", name, err);
            return 1;
        }
        size_t same = 0;
        for (size_t i = 0; i < got.len && i < want.len; i++)
            same += got.ids[i] == want.ids[i];
        ndocs++;
        nids += want.len;
        nsame += got.len == want.len ? same : 0;
        nbytes += tlen;
        if (got.len != want.len || same != want.len) {
            nbad_docs++;
            printf("MISMATCH %s: %zu ids, reference %zu\n", name, got.len, want.len);
            show_diff(b, got.ids, got.len, want.ids, want.len);
        }
        char *dec = malloc(tlen + 1);
        size_t dlen = 0;
        rc = kn_bpe_decode(b, got.ids, got.len, dec, tlen, &dlen, err, sizeof(err));
        if (rc || dlen != tlen || memcmp(dec, text, tlen) != 0) {
            nrt_bad++;
            printf("ROUNDTRIP FAIL %s: decode gives %zu bytes, text has %zu (%s)\n", name, dlen,
                   tlen, rc ? err : "bytes differ");
        }
        free(dec);
        free(text);
    }
    printf("parity %s (%s): %zu documents, %zu bytes, %zu reference ids, %zu identical "
           "(%.4f%%), %zu documents differ, %zu round-trip failures; encode %.1f MB/s\n",
           rank_file, kind == KN_BPE_CL100K ? "cl100k" : "r50k", ndocs, nbytes, nids, nsame,
           nids ? 100.0 * (double)nsame / (double)nids : 0.0, nbad_docs, nrt_bad,
           (double)nbytes / 1e6 / t_enc);
    printf("rank file sha256 %s, vocab size %zu\n", kn_bpe_hash(b), kn_bpe_vocab_size(b));
    fclose(f);
    free(line);
    kn_bpe_ids_free(&got);
    kn_bpe_ids_free(&want);
    kn_bpe_destroy(b);
    return (nbad_docs || nrt_bad || ndocs == 0) ? 1 : 0;
bad_line:
    fprintf(stderr, "%s: malformed expected-ids file\n", expected);
    return 1;
}

static int cmd_train(kn_bpe_kind kind, size_t vocab, const char *out, int nfiles, char **files)
{
    const char **texts = calloc((size_t)nfiles, sizeof(*texts));
    size_t *lens = calloc((size_t)nfiles, sizeof(*lens));
    size_t total = 0;
    for (int i = 0; i < nfiles; i++) {
        texts[i] = slurp(files[i], &lens[i]);
        if (!texts[i]) {
            perror(files[i]);
            return 1;
        }
        total += lens[i];
    }
    char err[512];
    double t0 = now();
    int rc = kn_bpe_train(texts, lens, (size_t)nfiles, vocab, kind, out, err, sizeof(err));
    double t1 = now();
    if (rc) {
        fprintf(stderr, "train: %s\n", err);
        return 1;
    }
    kn_bpe *b = kn_bpe_load(out, kind, err, sizeof(err));
    if (!b) {
        fprintf(stderr, "load trained: %s\n", err);
        return 1;
    }
    kn_bpe_ids ids;
    kn_bpe_ids_init(&ids);
    size_t ntok = 0, bad = 0;
    for (int i = 0; i < nfiles; i++) {
        ids.len = 0;
        if (kn_bpe_encode(b, texts[i], lens[i], KN_BPE_SPECIAL_ORDINARY, &ids, err, sizeof(err))) {
            fprintf(stderr, "encode: %s\n", err);
            return 1;
        }
        ntok += ids.len;
        char *dec = malloc(lens[i] + 1);
        size_t dlen = 0;
        if (kn_bpe_decode(b, ids.ids, ids.len, dec, lens[i], &dlen, err, sizeof(err)) ||
            dlen != lens[i] || memcmp(dec, texts[i], lens[i]) != 0) {
            printf("ROUNDTRIP FAIL %s\n", files[i]);
            bad++;
        }
        free(dec);
    }
    printf("trained %s: %zu ids (eot %lld) on %d files, %zu bytes in %.2f s; re-encoded to %zu "
           "tokens (%.2f bytes/token), %zu round-trip failures\n",
           out, kn_bpe_vocab_size(b), (long long)kn_bpe_special_id(b, "<|endoftext|>"), nfiles,
           total, t1 - t0, ntok, (double)total / (double)ntok, bad);
    kn_bpe_ids_free(&ids);
    kn_bpe_destroy(b);
    for (int i = 0; i < nfiles; i++)
        free((void *)texts[i]);
    free(texts);
    free(lens);
    return bad || ntok >= total ? 1 : 0;
}

static int cmd_encode(const char *rank_file, kn_bpe_kind kind, const char *file)
{
    char err[512];
    kn_bpe *b = kn_bpe_load(rank_file, kind, err, sizeof(err));
    if (!b) {
        fprintf(stderr, "load: %s\n", err);
        return 1;
    }
    size_t len;
    char *text = slurp(file, &len);
    if (!text) {
        perror(file);
        return 1;
    }
    kn_bpe_ids ids;
    kn_bpe_ids_init(&ids);
    if (kn_bpe_encode(b, text, len, KN_BPE_SPECIAL_ORDINARY, &ids, err, sizeof(err))) {
        fprintf(stderr, "encode: %s\n", err);
        return 1;
    }
    for (size_t i = 0; i < ids.len; i++)
        printf("%u%c", ids.ids[i], i + 1 < ids.len ? ' ' : '\n');
    kn_bpe_ids_free(&ids);
    free(text);
    kn_bpe_destroy(b);
    return 0;
}

/* Reads one line of ids ("1 2 3\n") into v; returns 0, or -1 at end of file. */
static int read_id_line(FILE *f, char **line, size_t *cap, kn_bpe_ids *v)
{
    ssize_t ll = getline(line, cap, f);
    if (ll < 0) return -1;
    v->len = 0;
    char *p = *line;
    for (;;) {
        char *e;
        unsigned long x = strtoul(p, &e, 10);
        if (e == p) break;
        if (v->len == v->cap) {
            v->cap = v->cap ? v->cap * 2 : 1024;
            v->ids = realloc(v->ids, v->cap * sizeof(uint32_t));
        }
        v->ids[v->len++] = (uint32_t)x;
        p = e;
    }
    return 0;
}

static int cmd_bench(const char *rank_file, kn_bpe_kind kind, const char *corpus, double seconds,
                     const char *expected, kn_bpe_special special)
{
    char err[512];
    kn_bpe *b = kn_bpe_load(rank_file, kind, err, sizeof(err));
    if (!b) {
        fprintf(stderr, "load: %s\n", err);
        return 1;
    }
    size_t len;
    char *text = slurp(corpus, &len);
    if (!text) {
        perror(corpus);
        return 1;
    }
    size_t ndocs = 0, cap = 1024;
    size_t *start = malloc(cap * sizeof(*start)), *dlen = malloc(cap * sizeof(*dlen));
    for (size_t p = 0; p <= len;) {
        const char *nul = memchr(text + p, 0, len - p);
        size_t e = nul ? (size_t)(nul - text) : len;
        if (ndocs == cap) {
            cap *= 2;
            start = realloc(start, cap * sizeof(*start));
            dlen = realloc(dlen, cap * sizeof(*dlen));
        }
        start[ndocs] = p;
        dlen[ndocs++] = e - p;
        p = e + 1;
    }
    kn_bpe_ids ids, want;
    kn_bpe_ids_init(&ids);
    kn_bpe_ids_init(&want);
    FILE *f = expected ? fopen(expected, "r") : NULL;
    if (expected && !f) {
        perror(expected);
        return 1;
    }
    char *line = NULL;
    size_t linecap = 0, nids = 0, nbad = 0;
    double first = 0; /* CPU time of the first pass: what a cache saw never before */
    for (size_t i = 0; i < ndocs; i++) { /* warm-up, id count and (with expected) parity */
        ids.len = 0;
        double c = cpu_now();
        if (kn_bpe_encode(b, text + start[i], dlen[i], special, &ids, err, sizeof(err))) {
            fprintf(stderr, "encode: %s\n", err);
            return 1;
        }
        first += cpu_now() - c;
        nids += ids.len;
        if (!f) continue;
        if (read_id_line(f, &line, &linecap, &want)) {
            fprintf(stderr, "%s: fewer lines than the corpus has documents\n", expected);
            return 1;
        }
        if (want.len != ids.len || memcmp(want.ids, ids.ids, ids.len * sizeof(uint32_t)) != 0) {
            if (nbad++ < 5) {
                printf("MISMATCH document %zu: %zu ids, reference %zu\n", i, ids.len, want.len);
                show_diff(b, ids.ids, ids.len, want.ids, want.len);
            }
        }
    }
    if (f && read_id_line(f, &line, &linecap, &want) == 0) {
        fprintf(stderr, "%s: more lines than the corpus has documents\n", expected);
        return 1;
    }
    size_t passes = 0;
    double t0 = now(), c0 = cpu_now(), elapsed;
    do {
        for (size_t i = 0; i < ndocs; i++) {
            ids.len = 0;
            kn_bpe_encode(b, text + start[i], dlen[i], special, &ids, NULL, 0);
        }
        passes++;
        elapsed = now() - t0;
    } while (elapsed < seconds);
    double cpu = cpu_now() - c0;
    printf("bench %s%s: %zu documents, %zu bytes, %zu ids; %.2f MB/s wall, %.2f MB/s of CPU time "
           "(%.2f Mtok/s wall, %zu passes; first pass %.2f MB/s of CPU time)",
           kind == KN_BPE_CL100K ? "cl100k" : "r50k",
           special == KN_BPE_SPECIAL_ALLOW ? " (special tokens allowed)" : "", ndocs, len, nids,
           (double)len * (double)passes / 1e6 / elapsed, (double)len * (double)passes / 1e6 / cpu,
           (double)nids * (double)passes / 1e6 / elapsed, passes, (double)len / 1e6 / first);
    if (f) printf("; ids %s", nbad ? "DIFFER" : "identical to the reference");
    printf("\n");
    if (nbad) printf("%zu of %zu documents differ from %s\n", nbad, ndocs, expected);
    if (f) fclose(f);
    free(line);
    kn_bpe_ids_free(&ids);
    kn_bpe_ids_free(&want);
    free(start);
    free(dlen);
    free(text);
    kn_bpe_destroy(b);
    return nbad ? 1 : 0;
}

int main(int argc, char **argv)
{
    kn_bpe_kind kind;
    if (argc == 5 && strcmp(argv[1], "parity") == 0 && parse_kind(argv[3], &kind) == 0)
        return cmd_parity(argv[2], kind, argv[4]);
    if (argc >= 6 && strcmp(argv[1], "train") == 0 && parse_kind(argv[2], &kind) == 0)
        return cmd_train(kind, strtoull(argv[3], NULL, 10), argv[4], argc - 5, argv + 5);
    if (argc == 5 && strcmp(argv[1], "encode") == 0 && parse_kind(argv[3], &kind) == 0)
        return cmd_encode(argv[2], kind, argv[4]);
    kn_bpe_special special = KN_BPE_SPECIAL_ORDINARY;
    if (argc >= 7 && strcmp(argv[1], "bench") == 0 && strcmp(argv[argc - 1], "--special") == 0) {
        special = KN_BPE_SPECIAL_ALLOW;
        argc--;
    }
    if ((argc == 6 || argc == 7) && strcmp(argv[1], "bench") == 0 &&
        parse_kind(argv[3], &kind) == 0)
        return cmd_bench(argv[2], kind, argv[4], atof(argv[5]), argc == 7 ? argv[6] : NULL,
                         special);
    fprintf(stderr, "usage: bpe_tool parity <rank-file> <r50k|cl100k> <expected>\n"
                    "       bpe_tool train <r50k|cl100k> <vocab-size> <out> <file>...\n"
                    "       bpe_tool encode <rank-file> <r50k|cl100k> <file>\n"
                    "       bpe_tool bench <rank-file> <r50k|cl100k> <corpus> <seconds> "
                    "[<expected-ids>] [--special]\n");
    return 2;
}
