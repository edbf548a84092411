/* importers.c: real datasets from Debian packages.
 *   fashion-mnist: /usr/share/datasets/fashion-mnist/{train,t10k}-*-ubyte.gz;
 *     each image becomes a binary PGM (P5, 28x28, maxval 255) whose pixel
 *     bytes are exactly the IDX bytes; label = class 0..9; split = train|test.
 *   fortunes: /usr/share/games/fortunes/<category>, fortunes separated by
 *     lines holding only "%"; one record per non-blank fortune, label =
 *     category. Index files (.dat, .u8), symlinks and sub-directories (the
 *     "off" collection) are skipped. */
#include "image/idx.h"
#include "ingest.h"
#include "core/kn.h"
#include "core/log.h"
#include "core/shutdown.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define FMNIST_DIR   "/usr/share/datasets/fashion-mnist"
#define FORTUNES_DIR "/usr/share/games/fortunes"

/* Writes v in decimal at out (room for 11 bytes), NUL-terminated. */
static void put_u32(char *out, uint32_t v)
{
    char tmp[10];
    int n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (n)
        *out++ = tmp[--n];
    *out = '\0';
}

static int import_split(ing_ctx *c, const char *dir, const char *stem, const char *split,
                        ing_tally *t)
{
    char ipath[PATH_MAX], lpath[PATH_MAX], e[2 * PATH_MAX + 256], origin[PATH_MAX + 32], label[8],
        what[64];
    snprintf(ipath, sizeof(ipath), "%s/%s-images-idx3-ubyte.gz", dir, stem);
    snprintf(lpath, sizeof(lpath), "%s/%s-labels-idx1-ubyte.gz", dir, stem);
    kn_idx *im = kn_idx_open(ipath, e, sizeof(e)), *lb = NULL;
    int rc = KN_ECORRUPT;
    uint8_t *pgm = NULL;
    if (!im) goto fail;
    lb = kn_idx_open(lpath, e, sizeof(e));
    if (!lb) goto fail;
    const kn_idx_header *ih = kn_idx_hdr(im), *lh = kn_idx_hdr(lb);
    if (ih->dtype != KN_IDX_U8 || ih->ndim != 3 || lh->dtype != KN_IDX_U8 || lh->ndim != 1 ||
        ih->dims[0] != lh->dims[0]) {
        snprintf(e, sizeof(e), "%s / %s: expected u8 N x rows x cols images and N u8 labels", ipath,
                 lpath);
        goto fail;
    }
    uint32_t rows = ih->dims[1], cols = ih->dims[2], n = ih->dims[0];
    char head[64];
    int hl = snprintf(head, sizeof(head), "P5\n%u %u\n255\n", cols, rows);
    pgm = malloc((size_t)hl + ih->item_size);
    if (!pgm) goto fail;
    memcpy(pgm, head, (size_t)hl);
    ing_progress pr;
    snprintf(what, sizeof(what), "fashion-mnist %s", split);
    ing_progress_start(&pr, &c->opt, what, n);
    /* per image only the index and the class change: no formatting per record */
    int ol = snprintf(origin, sizeof(origin) - 11, "%s#", ipath);
    if (ol < 0 || (size_t)ol >= sizeof(origin) - 11) ol = 0;
    for (uint32_t i = 0; i < n && !kn_shutdown_requested(); i++) {
        uint8_t cls;
        if ((rc = kn_idx_next(im, pgm + hl, e, sizeof(e))) != KN_OK ||
            (rc = kn_idx_next(lb, &cls, e, sizeof(e))) != KN_OK)
            goto fail;
        put_u32(origin + ol, i);
        put_u32(label, cls);
        ing_item it = {.data = pgm,
                       .len = (size_t)hl + ih->item_size,
                       .kind = ING_KIND_IMAGE,
                       .source = "import",
                       .origin = origin,
                       .dataset = c->opt.dataset && strcmp(c->opt.dataset, "default")
                                      ? c->opt.dataset
                                      : "fashion-mnist",
                       .label = label,
                       .split = split,
                       .split_by = "import"};
        if (cls > 9) {
            it.refuse_reason = KN_REASON_BAD_LABEL;
            it.refuse_detail = "class outside 0..9";
        }
        if ((rc = ing_submit_tally(c, NULL, &it, t, NULL)) != KN_OK) {
            snprintf(e, sizeof(e), "%s: produce failed: %s", origin, kn_strerror(rc));
            goto fail;
        }
        if ((i & 1023) == 1023) ing_progress_update(&pr, i + 1, 0); /* it reads the clock */
    }
    ing_progress_update(&pr, n, 1);
    if (!kn_shutdown_requested() &&
        ((rc = kn_idx_next(im, pgm + hl, e, sizeof(e))) != KN_ENOTFOUND ||
         (rc = kn_idx_next(lb, head, e, sizeof(e))) != KN_ENOTFOUND))
        goto fail;
    rc = KN_OK;
    goto out;
fail:
    kn_log_error("fashion-mnist: %s", e);
    if (rc == KN_OK) rc = KN_ECORRUPT;
out:
    free(pgm);
    kn_idx_close(im);
    kn_idx_close(lb);
    return rc;
}

/* Logs the totals and drops the caller's reference to t. */
static int finish(ing_ctx *c, ing_tally *t, const char *what)
{
    int left = ing_drain(c, NULL, ing_drain_timeout_ms(c));
    long ok = atomic_load(&t->ok), refused = atomic_load(&t->refused),
         failed = atomic_load(&t->failed);
    /* The dataset the records were sent to (--dataset, else the importer's own). */
    const char *ds = c->opt.dataset && strcmp(c->opt.dataset, "default") ? c->opt.dataset : what;
    kn_log_fields(KN_LOG_INFO,
                  json_pack("{s:s,s:s,s:I,s:I,s:I,s:i}", "importer", what, "dataset", ds, "records",
                            (json_int_t)ok, "refused", (json_int_t)refused, "failed",
                            (json_int_t)failed, "unreported", left),
                  "import %s: finished (dataset %s)", what, ds);
    ing_tally_unref(t); /* reports still to come hold their own references */
    return failed || left ? 1 : 0;
}

int ing_import_fashion_mnist(ing_ctx *c, const char *dir)
{
    if (!dir) dir = FMNIST_DIR;
    struct stat sb;
    if (stat(dir, &sb) != 0) {
        kn_log_error("fashion-mnist: %s not found; install it: apt-get install -y "
                     "dataset-fashion-mnist",
                     dir);
        return 1;
    }
    ing_tally *t = ing_tally_new();
    if (!t) {
        kn_log_error("fashion-mnist: out of memory");
        return 1;
    }
    if (import_split(c, dir, "train", "train", t) != KN_OK ||
        import_split(c, dir, "t10k", "test", t) != KN_OK) {
        finish(c, t, "fashion-mnist");
        return 1;
    }
    return finish(c, t, "fashion-mnist");
}

/* Splits one fortune file and submits each fortune. */
static int import_fortune_file(ing_ctx *c, const char *path, const char *category, ing_tally *t,
                               uint64_t *count, ing_progress *pr)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        kn_log_warn("fortunes: %s: %s (skipped)", path, strerror(errno));
        return KN_OK;
    }
    char *line = NULL, *buf = NULL, origin[PATH_MAX + 32];
    size_t lcap = 0, len = 0, cap = 0;
    ssize_t n;
    int rc = KN_OK, eof = 0;
    unsigned idx = 0;
    while (rc == KN_OK && !eof) {
        n = getline(&line, &lcap, f);
        eof = n < 0;
        int sep = !eof && (strcmp(line, "%\n") == 0 || strcmp(line, "%") == 0 ||
                           strcmp(line, "%\r\n") == 0);
        if (!eof && !sep) {
            if (len + (size_t)n + 1 > cap) {
                cap = (len + (size_t)n + 1) * 2;
                char *g = realloc(buf, cap);
                if (!g) {
                    rc = KN_ENOMEM;
                    break;
                }
                buf = g;
            }
            memcpy(buf + len, line, (size_t)n);
            len += (size_t)n;
            continue;
        }
        /* a fortune ends: drop its final newline; skip blank ones */
        size_t flen = len;
        if (flen && buf[flen - 1] == '\n') flen--;
        int blank = 1;
        for (size_t i = 0; i < flen && blank; i++)
            if (buf[i] != ' ' && buf[i] != '\t' && buf[i] != '\n' && buf[i] != '\r') blank = 0;
        if (!blank) {
            snprintf(origin, sizeof(origin), "%s#%u", path, idx);
            ing_item it = {.data = buf,
                           .len = flen,
                           .kind = ING_KIND_TEXT,
                           .source = "import",
                           .origin = origin,
                           .dataset = c->opt.dataset && strcmp(c->opt.dataset, "default")
                                          ? c->opt.dataset
                                          : "fortunes",
                           .label = category};
            rc = ing_submit_tally(c, NULL, &it, t, NULL);
            (*count)++;
            ing_progress_update(pr, *count, 0);
        }
        idx++;
        len = 0;
    }
    free(line);
    free(buf);
    fclose(f);
    return rc;
}

static int cmp_name(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int ing_import_fortunes(ing_ctx *c, const char *dir)
{
    uint64_t count = 0;
    char path[PATH_MAX];
    char *names[1024];
    size_t nn = 0;
    if (!dir) dir = FORTUNES_DIR;
    DIR *d = opendir(dir);
    if (!d) {
        kn_log_error("fortunes: %s: %s; install it: apt-get install -y fortunes", dir,
                     strerror(errno));
        return 1;
    }
    struct dirent *e;
    while ((e = readdir(d)) && nn < KN_ARRAY_LEN(names)) {
        const char *dot = strrchr(e->d_name, '.');
        if (e->d_name[0] == '.' || (dot && (strcmp(dot, ".dat") == 0 || strcmp(dot, ".u8") == 0)))
            continue;
        snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
        struct stat sb;
        if (lstat(path, &sb) != 0 || !S_ISREG(sb.st_mode)) continue; /* links, "off/" */
        names[nn++] = strdup(e->d_name);
    }
    closedir(d);
    qsort(names, nn, sizeof(char *), cmp_name);
    ing_tally *t = ing_tally_new();
    if (!t) {
        kn_log_error("fortunes: out of memory");
        for (size_t i = 0; i < nn; i++)
            free(names[i]);
        return 1;
    }
    ing_progress pr;
    ing_progress_start(&pr, &c->opt, "fortunes", 0);
    int rc = KN_OK;
    for (size_t i = 0; i < nn; i++) {
        if (rc == KN_OK && names[i] && !kn_shutdown_requested()) {
            snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
            rc = import_fortune_file(c, path, names[i], t, &count, &pr);
        }
        free(names[i]);
    }
    ing_progress_update(&pr, count, 1);
    int code = finish(c, t, "fortunes");
    return rc == KN_OK ? code : 1;
}
