/* state.c: the directory-import journal and a string set.
 *
 * Invariants (the exactly-once argument is in docs/ingest.md):
 *   1. A path is in the done set only if the Kafka transaction that carried
 *      its record committed ("C n" written after commit_transaction returned,
 *      or the batch's marker found committed in <prefix>.ingest.progress).
 *   2. "B n"/"F" lines are durable (fsync) before commit_transaction is called,
 *      so after a crash every possibly-committed batch is known: the last "B"
 *      without "C"/"A" is the pending batch, settled against Kafka on restart.
 *   3. Batch numbers are never reused ("S n" survives compaction). */
#include "ingest.h"
#include "core/kn.h"
#include "core/log.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define STATE_MAGIC "kiln-ingest-state 1"

/* --- string set: open addressing, FNV-1a --- */

struct ing_strset {
    char **slots;
    size_t cap, n; /* cap is a power of two */
};

static uint64_t fnv(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++)
        h = (h ^ (uint8_t)*s) * 1099511628211ull;
    return h;
}

ing_strset *ing_strset_new(void)
{
    ing_strset *s = calloc(1, sizeof(*s));
    if (!s) return NULL;
    s->cap = 1024;
    s->slots = calloc(s->cap, sizeof(char *));
    if (!s->slots) {
        free(s);
        return NULL;
    }
    return s;
}

void ing_strset_destroy(ing_strset *s)
{
    if (!s) return;
    for (size_t i = 0; i < s->cap; i++)
        free(s->slots[i]);
    free(s->slots);
    free(s);
}

static size_t find_slot(char *const *slots, size_t cap, const char *key)
{
    size_t i = fnv(key) & (cap - 1);
    while (slots[i] && strcmp(slots[i], key) != 0)
        i = (i + 1) & (cap - 1);
    return i;
}

int ing_strset_has(const ing_strset *s, const char *key)
{
    return s->slots[find_slot(s->slots, s->cap, key)] != NULL;
}

int ing_strset_add(ing_strset *s, const char *key)
{
    if ((s->n + 1) * 2 > s->cap) {
        size_t ncap = s->cap * 2;
        char **ns = calloc(ncap, sizeof(char *));
        if (!ns) return KN_ENOMEM;
        for (size_t i = 0; i < s->cap; i++)
            if (s->slots[i]) ns[find_slot(ns, ncap, s->slots[i])] = s->slots[i];
        free(s->slots);
        s->slots = ns;
        s->cap = ncap;
    }
    size_t i = find_slot(s->slots, s->cap, key);
    if (s->slots[i]) return 0;
    if (!(s->slots[i] = strdup(key))) return KN_ENOMEM;
    s->n++;
    return 1;
}

size_t ing_strset_count(const ing_strset *s)
{
    return s->n;
}

/* --- journal --- */

typedef struct {
    char **v;
    size_t n, cap;
} strvec;

static int vec_push(strvec *v, const char *s)
{
    if (v->n == v->cap) {
        size_t nc = v->cap ? v->cap * 2 : 64;
        char **g = realloc(v->v, nc * sizeof(char *));
        if (!g) return KN_ENOMEM;
        v->v = g;
        v->cap = nc;
    }
    if (!(v->v[v->n] = strdup(s))) return KN_ENOMEM;
    v->n++;
    return KN_OK;
}

static void vec_clear(strvec *v)
{
    for (size_t i = 0; i < v->n; i++)
        free(v->v[i]);
    v->n = 0;
}

struct ing_state {
    char *path;
    int fd; /* append fd, -1 until settled */
    ing_strset *done;
    uint64_t max_batch; /* highest batch number ever used */
    int has_pending;
    uint64_t pending;     /* batch number of the open batch */
    strvec pending_files; /* its files (after open: the crashed batch; later: the current) */
};

static int fsync_dir_of(const char *path)
{
    char *copy = strdup(path);
    if (!copy) return KN_ENOMEM;
    int dfd = open(dirname(copy), O_RDONLY | O_DIRECTORY);
    free(copy);
    if (dfd < 0) return KN_EIO;
    int rc = fsync(dfd) == 0 ? KN_OK : KN_EIO;
    close(dfd);
    return rc;
}

static int write_all(int fd, const char *buf, size_t len)
{
    while (len) {
        ssize_t w = write(fd, buf, len);
        if (w < 0) {
            if (errno == EINTR) continue;
            return KN_EIO;
        }
        buf += w;
        len -= (size_t)w;
    }
    return KN_OK;
}

/* Appends `tag json(path)\n` to a growing buffer. */
static int emit_path(char **buf, size_t *len, size_t *cap, char tag, const char *path)
{
    json_t *j = json_string(path);
    char *enc = j ? json_dumps(j, JSON_ENCODE_ANY | JSON_COMPACT) : NULL;
    json_decref(j);
    if (!enc) return KN_EINVAL; /* not UTF-8: callers skip such paths earlier */
    size_t need = strlen(enc) + 4;
    if (*len + need > *cap) {
        size_t nc = (*cap + need) * 2;
        char *g = realloc(*buf, nc);
        if (!g) {
            free(enc);
            return KN_ENOMEM;
        }
        *buf = g;
        *cap = nc;
    }
    *len += (size_t)sprintf(*buf + *len, "%c %s\n", tag, enc);
    free(enc);
    return KN_OK;
}

static char *decode_path(const char *s)
{
    json_error_t e;
    json_t *j = json_loads(s, JSON_DECODE_ANY, &e);
    char *out = j && json_is_string(j) ? strdup(json_string_value(j)) : NULL;
    json_decref(j);
    return out;
}

static int parse(ing_state *st, char *text, size_t len, char *errbuf, size_t errsz)
{
    strvec cur = {0};
    uint64_t cur_batch = 0;
    int in_batch = 0, lineno = 0;
    char *p = text, *end = text + len;
    while (p < end) {
        char *nl = memchr(p, '\n', (size_t)(end - p));
        if (!nl) {
            kn_log_warn("state %s: ignoring a torn last line", st->path);
            break;
        }
        *nl = '\0';
        lineno++;
        if (lineno == 1) {
            if (strcmp(p, STATE_MAGIC) != 0) {
                vec_clear(&cur);
                free(cur.v);
                return kn_seterr(errbuf, errsz, KN_ECORRUPT, "%s: not a kiln-ingest state file",
                                 st->path);
            }
        } else if ((p[0] == 'D' || p[0] == 'F') && p[1] == ' ') {
            char *path = decode_path(p + 2);
            if (path) {
                if (p[0] == 'D')
                    ing_strset_add(st->done, path);
                else if (in_batch)
                    vec_push(&cur, path);
                free(path);
            } else
                kn_log_warn("state %s: line %d unreadable, ignored", st->path, lineno);
        } else if (p[0] && p[1] == ' ' && strchr("SBCA", p[0])) {
            uint64_t n = strtoull(p + 2, NULL, 10);
            if (n > st->max_batch) st->max_batch = n;
            if (p[0] == 'B') {
                vec_clear(&cur);
                in_batch = 1;
                cur_batch = n;
            } else if ((p[0] == 'C' || p[0] == 'A') && in_batch && n == cur_batch) {
                if (p[0] == 'C')
                    for (size_t i = 0; i < cur.n; i++)
                        ing_strset_add(st->done, cur.v[i]);
                vec_clear(&cur);
                in_batch = 0;
            }
        }
        p = nl + 1;
    }
    if (in_batch) {
        st->has_pending = 1;
        st->pending = cur_batch;
        st->pending_files = cur;
    } else {
        vec_clear(&cur);
        free(cur.v);
    }
    return KN_OK;
}

ing_state *ing_state_open(const char *path, char *errbuf, size_t errsz)
{
    ing_state *st = calloc(1, sizeof(*st));
    char *text = NULL;
    if (!st || !(st->path = strdup(path)) || !(st->done = ing_strset_new())) {
        kn_seterr(errbuf, errsz, KN_ENOMEM, "out of memory");
        goto fail;
    }
    st->fd = -1;
    FILE *f = fopen(path, "rb");
    if (f) {
        size_t cap = 1 << 16, len = 0, r;
        text = malloc(cap);
        while (text && (r = fread(text + len, 1, cap - len, f)) > 0) {
            len += r;
            if (len == cap) {
                char *g = realloc(text, cap * 2);
                if (!g) {
                    free(text);
                    text = NULL;
                    break;
                }
                text = g;
                cap *= 2;
            }
        }
        int err = ferror(f);
        fclose(f);
        if (!text || err) {
            kn_seterr(errbuf, errsz, KN_EIO, "%s: cannot read the state file", path);
            goto fail;
        }
        if (parse(st, text, len, errbuf, errsz) != KN_OK) goto fail;
        free(text);
        text = NULL;
    } else if (errno != ENOENT) {
        kn_seterr(errbuf, errsz, KN_EIO, "%s: %s", path, strerror(errno));
        goto fail;
    }
    return st;
fail:
    free(text);
    ing_state_close(st);
    return NULL;
}

void ing_state_close(ing_state *st)
{
    if (!st) return;
    if (st->fd >= 0) close(st->fd);
    ing_strset_destroy(st->done);
    vec_clear(&st->pending_files);
    free(st->pending_files.v);
    free(st->path);
    free(st);
}

int ing_state_is_done(const ing_state *st, const char *path)
{
    return ing_strset_has(st->done, path);
}

size_t ing_state_done_count(const ing_state *st)
{
    return ing_strset_count(st->done);
}

int ing_state_pending(const ing_state *st, uint64_t *batch, char *const **paths, size_t *n)
{
    if (!st->has_pending) return KN_ENOTFOUND;
    *batch = st->pending;
    *paths = st->pending_files.v;
    *n = st->pending_files.n;
    return KN_OK;
}

int ing_state_settle(ing_state *st, int committed, char *errbuf, size_t errsz)
{
    char tmp[4096];
    char *buf = NULL;
    size_t len = 0, cap = 0;
    int rc = KN_OK, fd = -1;
    if (st->has_pending && committed)
        for (size_t i = 0; i < st->pending_files.n; i++)
            ing_strset_add(st->done, st->pending_files.v[i]);
    st->has_pending = 0;
    vec_clear(&st->pending_files);

    snprintf(tmp, sizeof(tmp), "%s.tmp", st->path);
    cap = 4096;
    buf = malloc(cap);
    if (!buf) return kn_seterr(errbuf, errsz, KN_ENOMEM, "out of memory");
    len =
        (size_t)snprintf(buf, cap, "%s\nS %llu\n", STATE_MAGIC, (unsigned long long)st->max_batch);
    for (size_t i = 0; i < st->done->cap && rc == KN_OK; i++)
        if (st->done->slots[i]) rc = emit_path(&buf, &len, &cap, 'D', st->done->slots[i]);
    if (rc != KN_OK) {
        rc = kn_seterr(errbuf, errsz, rc, "%s: cannot encode the state", st->path);
        goto out;
    }
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0 || write_all(fd, buf, len) != KN_OK || fsync(fd) != 0) {
        rc = kn_seterr(errbuf, errsz, KN_EIO, "%s: %s", tmp, strerror(errno));
        goto out;
    }
    close(fd);
    fd = -1;
    if (rename(tmp, st->path) != 0 || fsync_dir_of(st->path) != KN_OK) {
        rc = kn_seterr(errbuf, errsz, KN_EIO, "%s: rename: %s", st->path, strerror(errno));
        goto out;
    }
    if (st->fd >= 0) close(st->fd);
    st->fd = open(st->path, O_WRONLY | O_APPEND | O_CLOEXEC);
    if (st->fd < 0) rc = kn_seterr(errbuf, errsz, KN_EIO, "%s: %s", st->path, strerror(errno));
out:
    if (fd >= 0) close(fd);
    free(buf);
    return rc;
}

uint64_t ing_state_next_batch(ing_state *st)
{
    return st->max_batch + 1;
}

int ing_state_begin(ing_state *st, uint64_t batch, char *const *paths, size_t n, char *errbuf,
                    size_t errsz)
{
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    int rc = KN_OK;
    if (!buf) return kn_seterr(errbuf, errsz, KN_ENOMEM, "out of memory");
    len = (size_t)snprintf(buf, cap, "B %llu\n", (unsigned long long)batch);
    vec_clear(&st->pending_files);
    for (size_t i = 0; i < n && rc == KN_OK; i++) {
        rc = emit_path(&buf, &len, &cap, 'F', paths[i]);
        if (rc == KN_OK) rc = vec_push(&st->pending_files, paths[i]);
    }
    if (rc == KN_OK && (write_all(st->fd, buf, len) != KN_OK || fdatasync(st->fd) != 0))
        rc = KN_EIO;
    free(buf);
    if (rc != KN_OK)
        return kn_seterr(errbuf, errsz, rc, "%s: cannot append batch %llu", st->path,
                         (unsigned long long)batch);
    if (batch > st->max_batch) st->max_batch = batch;
    st->has_pending = 1;
    st->pending = batch;
    return KN_OK;
}

int ing_state_end(ing_state *st, uint64_t batch, int committed, char *errbuf, size_t errsz)
{
    char line[64];
    int n =
        snprintf(line, sizeof(line), "%c %llu\n", committed ? 'C' : 'A', (unsigned long long)batch);
    if (committed)
        for (size_t i = 0; i < st->pending_files.n; i++)
            ing_strset_add(st->done, st->pending_files.v[i]);
    vec_clear(&st->pending_files);
    st->has_pending = 0;
    if (write_all(st->fd, line, (size_t)n) != KN_OK || fdatasync(st->fd) != 0)
        return kn_seterr(errbuf, errsz, KN_EIO, "%s: cannot append: %s", st->path, strerror(errno));
    return KN_OK;
}
