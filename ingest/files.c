/* files.c: the files source: paths and directories (recursive, glob filters
 * on the file name), optional follow mode (inotify), optional state file.
 *
 * Without --state: every file is produced once through the idempotent
 * producer; the exit code says whether all were acknowledged.
 * With --state: files go in batches, each batch one Kafka transaction that
 * also carries a marker record to <prefix>.ingest.progress; the journal
 * (state.c) makes a kill -9 at any point resume with every file on the topic
 * exactly once for read_committed readers (docs/ingest.md explains why). */
#include "ingest.h"
#include "core/kn.h"
#include "core/log.h"
#include "core/sha256.h"
#include "core/shutdown.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct {
    ing_ctx *c;
    const ing_files_args *a;
    ing_state *st;          /* NULL without --state */
    char *state_abs;        /* absolute state path (never ingested itself) */
    kn_kafka_producer *txp; /* transactional producer (with --state) */
    char txn_id[128];
    ing_strset *seen; /* paths submitted in this run (follow mode dedup) */
    ing_tally *tally; /* outlives the run while reports are outstanding */
    long batch_files;
    size_t batch_bytes;
    uint64_t files_total;
    ing_progress pr;
    int failed; /* a fatal error happened: stop */
} files_run;

typedef struct {
    char **v;
    size_t n, cap;
} pathvec;

static int pv_push(pathvec *v, const char *s)
{
    if (v->n == v->cap) {
        size_t nc = v->cap ? v->cap * 2 : 256;
        char **g = realloc(v->v, nc * sizeof(char *));
        if (!g) return KN_ENOMEM;
        v->v = g;
        v->cap = nc;
    }
    if (!(v->v[v->n] = strdup(s))) return KN_ENOMEM;
    v->n++;
    return KN_OK;
}

static void pv_free(pathvec *v)
{
    for (size_t i = 0; i < v->n; i++)
        free(v->v[i]);
    free(v->v);
    memset(v, 0, sizeof(*v));
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int wanted(files_run *r, const char *path)
{
    if (r->state_abs && (strcmp(path, r->state_abs) == 0 ||
                         (strncmp(path, r->state_abs, strlen(r->state_abs)) == 0 &&
                          strcmp(path + strlen(r->state_abs), ".tmp") == 0)))
        return 0;
    if (r->st && ing_state_is_done(r->st, path)) return 0;
    if (r->seen && ing_strset_has(r->seen, path)) return 0;
    if (r->a->nglobs == 0) return 1;
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    for (int i = 0; i < r->a->nglobs; i++)
        if (fnmatch(r->a->globs[i], base, 0) == 0) return 1;
    return 0;
}

/* Collects regular files under path (symbolic links are not followed inside
 * directories, so a link loop cannot trap the walk). */
static void walk(files_run *r, const char *path, pathvec *out, int depth)
{
    struct stat sb;
    if ((depth == 0 ? stat(path, &sb) : lstat(path, &sb)) != 0) {
        kn_log_warn("%s: %s (skipped)", path, strerror(errno));
        return;
    }
    if (S_ISREG(sb.st_mode)) {
        if (!kn_record_utf8_valid(path, strlen(path), NULL)) {
            /* Headers and the journal are UTF-8: refuse the file, visibly. */
            size_t n;
            char *shown = kn_record_utf8_repair(path, strlen(path), &n);
            ing_item it = {.source = "file",
                           .origin = shown ? shown : "(unprintable)",
                           .refuse_reason = KN_REASON_UNSUPPORTED,
                           .refuse_detail = "the file name is not valid UTF-8; rename the file"};
            if (!r->seen || ing_strset_add(r->seen, it.origin) == 1)
                ing_submit_tally(r->c, NULL, &it, r->tally, NULL);
            free(shown);
        } else if (wanted(r, path)) {
            pv_push(out, path);
        }
        return;
    }
    if (!S_ISDIR(sb.st_mode) || depth > 64) return;
    DIR *d = opendir(path);
    if (!d) {
        kn_log_warn("%s: %s (skipped)", path, strerror(errno));
        return;
    }
    struct dirent *e;
    char child[PATH_MAX];
    while ((e = readdir(d))) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
        int n = snprintf(child, sizeof(child), "%s/%s", strcmp(path, "/") ? path : "", e->d_name);
        if (n < 0 || (size_t)n >= sizeof(child)) continue;
        walk(r, child, out, depth + 1);
    }
    closedir(d);
}

/* A text file of several records (fortune files: lines holding "%" between
 * them, as the fortunes importer reads them): one record per part, origin
 * "path#N" (N from 1); parts of only whitespace are skipped. Valid UTF-8
 * only (the caller checks): other bytes go whole to validation. */
static int submit_split(files_run *r, kn_kafka_producer *p, const ing_item *whole)
{
    const char *sep = r->c->opt.separator, *d = whole->data, *end = d + whole->len;
    size_t seplen = strlen(sep);
    char origin[PATH_MAX + 32];
    int n = 0, rc = KN_OK;
    const char *start = d;
    for (const char *line = d; rc == KN_OK && start < end;) {
        const char *nl = memchr(line, '\n', (size_t)(end - line));
        const char *lend = nl ? nl : end;
        size_t llen = (size_t)(lend - line);
        if (llen && line[llen - 1] == '\r') llen--;
        int is_sep = llen == seplen && memcmp(line, sep, seplen) == 0;
        if (is_sep || !nl) {
            const char *pend = is_sep ? line : end; /* the part: start .. pend */
            int blank = 1;
            for (const char *q = start; q < pend && blank; q++)
                blank = *q == ' ' || *q == '\n' || *q == '\r' || *q == '\t';
            if (!blank) {
                ing_item it = *whole;
                it.data = start;
                it.len = (size_t)(pend - start);
                snprintf(origin, sizeof(origin), "%s#%d", whole->origin, ++n);
                it.origin = origin;
                rc = ing_submit_tally(r->c, p, &it, r->tally, NULL);
            }
            start = nl ? nl + 1 : end;
        }
        line = nl ? nl + 1 : end;
    }
    return rc;
}

/* A file named *.jsonl: one record per non-blank line, as `kiln-ingest
 * jsonl` reads them (origin PATH:LINE). */
static int submit_jsonl(files_run *r, kn_kafka_producer *p, const ing_item *whole)
{
    const char *d = whole->data, *end = d + whole->len;
    uint64_t lineno = 0;
    int rc = KN_OK;
    for (const char *line = d; rc == KN_OK && line < end;) {
        const char *nl = memchr(line, '\n', (size_t)(end - line));
        const char *lend = nl ? nl : end;
        size_t n = (size_t)(lend - line);
        lineno++;
        if (n && line[n - 1] == '\r') n--;
        size_t k = 0;
        while (k < n && (line[k] == ' ' || line[k] == '\t'))
            k++;
        if (k < n) rc = ing_jsonl_line(r->c, p, whole->origin, lineno, line, n, r->tally);
        line = nl ? nl + 1 : end;
    }
    return rc;
}

/* Reads one file and submits it (raw or DLQ) on producer p. */
static int submit_file(files_run *r, kn_kafka_producer *p, const char *path, size_t *bytes)
{
    ing_ctx *c = r->c;
    size_t limit = c->opt.max_text > c->opt.max_image ? c->opt.max_text : c->opt.max_image;
    ing_item it = {.source = "file", .origin = path};
    char sha[KN_SHA256_HEX_LEN], detail[300];
    char *data = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat sb;
    if (fd < 0 || fstat(fd, &sb) != 0) {
        snprintf(detail, sizeof(detail), "cannot open: %s", strerror(errno));
        it.refuse_reason = KN_REASON_READ_ERROR;
        it.refuse_detail = detail;
    } else if ((uint64_t)sb.st_size > limit) {
        /* Too large for any record: the DLQ gets a pointer (path, size, hash). */
        it.full_len = (uint64_t)sb.st_size;
        if (kn_sha256_file_hex(path, sha) == KN_OK) it.full_sha256 = sha;
    } else {
        size_t cap = (size_t)sb.st_size + 1, len = 0;
        data = malloc(cap);
        ssize_t n = 0;
        while (data && len < cap && (n = read(fd, data + len, cap - len)) > 0)
            len += (size_t)n;
        if (!data || n < 0) {
            snprintf(detail, sizeof(detail), "read failed: %s",
                     data ? strerror(errno) : "no memory");
            it.refuse_reason = KN_REASON_READ_ERROR;
            it.refuse_detail = detail;
        } else if (len > limit) { /* grew while we read */
            it.full_len = len;
        } else {
            it.data = data;
            it.len = len;
        }
    }
    if (fd >= 0) close(fd);
    *bytes = it.len;
    size_t plen = strlen(path);
    int rc;
    if (it.data && plen > 6 && strcmp(path + plen - 6, ".jsonl") == 0)
        rc = submit_jsonl(r, p, &it);
    else if (it.data && c->opt.separator && *c->opt.separator && c->opt.kind != ING_KIND_IMAGE &&
             kn_record_utf8_valid(it.data, it.len, NULL))
        rc = submit_split(r, p, &it);
    else
        rc = ing_submit_tally(c, p, &it, r->tally, NULL);
    free(data);
    return rc;
}

/* --- transactions: marker check after a crash --- */

/* Is batch `batch` of this transactional id committed? Reads the progress
 * topic with read_committed up to its end. 1 yes, 0 no, <0 could not tell. */
static int marker_committed(files_run *r, uint64_t batch)
{
    ing_ctx *c = r->c;
    char e[512], group[160];
    snprintf(group, sizeof(group), "%s-check-%d", r->txn_id, (int)getpid());
    static const char *const extra[] = {"enable.partition.eof", "true", NULL};
    kn_kafka_consumer_options co = {.brokers = c->opt.brokers,
                                    .group_id = group,
                                    .client_id = ING_SERVICE,
                                    .read_committed = 1,
                                    .extra = extra};
    kn_kafka_consumer *k = kn_kafka_consumer_new(&co, e, sizeof(e));
    if (!k) {
        kn_log_error("state: %s", e);
        return -1;
    }
    int64_t lo = 0, hi = 0;
    int found = -1;
    if (kn_kafka_watermarks(kn_kafka_consumer_handle(k), c->topic_progress, 0, &lo, &hi, 10000)) {
        kn_log_error("state: cannot read the watermarks of %s", c->topic_progress);
        goto out;
    }
    found = 0;
    if (hi <= lo) goto out;
    rd_kafka_topic_partition_list_t *parts = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(parts, c->topic_progress, 0)->offset =
        RD_KAFKA_OFFSET_BEGINNING;
    int arc = kn_kafka_consumer_assign(k, parts, e, sizeof(e));
    rd_kafka_topic_partition_list_destroy(parts);
    if (arc) {
        kn_log_error("state: %s", e);
        found = -1;
        goto out;
    }
    double end = ing_now() + 120; /* an open transaction of another instance holds the LSO back
                                     at most transaction.timeout.ms */
    char want[64];
    snprintf(want, sizeof(want), "\"batch\":%llu,", (unsigned long long)batch);
    for (;;) {
        if (ing_now() > end) {
            kn_log_error("state: %s not read to its end in time", c->topic_progress);
            found = -1;
            break;
        }
        rd_kafka_message_t *m = kn_kafka_consumer_poll(k, 500);
        if (!m) continue;
        int64_t next = m->offset + (m->err ? 0 : 1);
        if (m->err && m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            kn_log_warn("state: %s", rd_kafka_message_errstr(m));
            rd_kafka_message_destroy(m);
            continue;
        }
        if (!m->err && m->key_len == strlen(r->txn_id) &&
            memcmp(m->key, r->txn_id, m->key_len) == 0 && m->len < 4096) {
            char v[4096];
            memcpy(v, m->payload, m->len);
            v[m->len] = '\0';
            if (strstr(v, want)) found = 1;
        }
        rd_kafka_message_destroy(m);
        if (found == 1 || next >= hi) break;
    }
out:
    kn_kafka_consumer_destroy(k);
    return found;
}

static int produce_marker(files_run *r, uint64_t batch, size_t nfiles)
{
    char v[512];
    int n = snprintf(v, sizeof(v), "{\"batch\":%llu,\"files\":%zu,\"time_ms\":%lld}",
                     (unsigned long long)batch, nfiles, (long long)kn_record_now_ms());
    return kn_kafka_produce(r->txp, r->c->topic_progress, 0, r->txn_id, strlen(r->txn_id), v,
                            (size_t)n, NULL, 0, NULL);
}

/* One batch in one transaction. Retries a batch whose transaction had to be
 * aborted; a fatal Kafka error stops the run. */
static int run_batch_txn(files_run *r, char *const *paths, size_t n)
{
    char e[512];
    for (int attempt = 1; attempt <= 3; attempt++) {
        uint64_t batch = ing_state_next_batch(r->st);
        size_t bytes = 0, b;
        int rc = kn_kafka_txn_begin(r->txp, e, sizeof(e));
        if (rc) {
            kn_log_error("%s", e);
            return rc;
        }
        for (size_t i = 0; i < n && rc == KN_OK; i++) {
            rc = submit_file(r, r->txp, paths[i], &b);
            bytes += b;
        }
        if (rc == KN_OK) rc = produce_marker(r, batch, n);
        if (rc == KN_OK) rc = ing_state_begin(r->st, batch, paths, n, e, sizeof(e));
        if (rc == KN_EIO) {
            kn_log_error("%s", e);
            kn_kafka_txn_abort(r->txp, 30000, e, sizeof(e));
            return KN_EIO;
        }
        if (rc == KN_OK) {
            do
                rc = kn_kafka_txn_commit(r->txp, 60000, e, sizeof(e));
            while (rc == KN_ETIMEDOUT && !kn_shutdown_requested());
        }
        if (rc == KN_OK) {
            if (ing_state_end(r->st, batch, 1, e, sizeof(e)) != KN_OK) {
                /* Committed in Kafka; the next start finds the marker. */
                kn_log_error("%s", e);
                return KN_EIO;
            }
            r->files_total += n;
            return KN_OK;
        }
        kn_log_error("batch %llu: %s", (unsigned long long)batch, e);
        if (kn_kafka_txn_abort(r->txp, 30000, e, sizeof(e)) != KN_OK) {
            kn_log_error("%s", e); /* fatal (fenced by a newer instance?): stop */
            return KN_EKAFKA;
        }
        ing_state_end(r->st, batch, 0, e, sizeof(e));
        kn_log_warn("batch %llu aborted; sending its %zu files again (attempt %d)",
                    (unsigned long long)batch, n, attempt + 1);
    }
    return KN_EKAFKA;
}

static int run_batch_plain(files_run *r, char *const *paths, size_t n)
{
    size_t b;
    for (size_t i = 0; i < n; i++) {
        int rc = submit_file(r, r->c->prod, paths[i], &b);
        if (rc != KN_OK) return rc;
        if (r->seen) ing_strset_add(r->seen, paths[i]);
        r->files_total++;
        ing_progress_update(&r->pr, r->files_total, 0);
    }
    return KN_OK;
}

/* Sends files in batches of at most batch_files files / batch_bytes bytes. */
static int run_files(files_run *r, char *const *paths, size_t n)
{
    size_t i = 0;
    while (i < n && !kn_shutdown_requested()) {
        size_t j = i, bytes = 0;
        while (j < n && (long)(j - i) < r->batch_files) {
            struct stat sb;
            if (stat(paths[j], &sb) == 0) bytes += (size_t)sb.st_size;
            j++;
            if (bytes >= r->batch_bytes) break;
        }
        int rc = r->st ? run_batch_txn(r, paths + i, j - i) : run_batch_plain(r, paths + i, j - i);
        if (rc != KN_OK) {
            r->failed = 1;
            return rc;
        }
        if (r->st) ing_progress_update(&r->pr, r->files_total, 0);
        i = j;
    }
    return KN_OK;
}

/* --- follow mode --- */

typedef struct {
    int wd;
    char *dir;
} watch;

typedef struct {
    int fd;
    watch *w;
    size_t n, cap;
} watcher;

static void watch_tree(watcher *wt, const char *dir, int depth)
{
    struct stat sb;
    if (depth > 64 || lstat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode)) return;
    int wd = inotify_add_watch(
        wt->fd, dir, IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE | IN_ONLYDIR | IN_DONT_FOLLOW);
    if (wd < 0) {
        kn_log_warn("inotify %s: %s", dir, strerror(errno));
        return;
    }
    if (wt->n == wt->cap) {
        size_t nc = wt->cap ? wt->cap * 2 : 16;
        watch *g = realloc(wt->w, nc * sizeof(*g));
        if (!g) return;
        wt->w = g;
        wt->cap = nc;
    }
    wt->w[wt->n++] = (watch){wd, strdup(dir)};
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    char child[PATH_MAX];
    while ((e = readdir(d))) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
        if (snprintf(child, sizeof(child), "%s/%s", dir, e->d_name) >= (int)sizeof(child)) continue;
        watch_tree(wt, child, depth + 1);
    }
    closedir(d);
}

static const char *watch_dir(const watcher *wt, int wd)
{
    for (size_t i = 0; i < wt->n; i++)
        if (wt->w[i].wd == wd) return wt->w[i].dir;
    return NULL;
}

static int follow(files_run *r, watcher *wt)
{
    pathvec pending = {0};
    char buf[64 * 1024] __attribute__((aligned(__alignof__(struct inotify_event))));
    char path[PATH_MAX];
    kn_log_info("following %zu director%s for new files", wt->n, wt->n == 1 ? "y" : "ies");
    while (!kn_shutdown_requested() && !r->failed) {
        struct pollfd pfd = {wt->fd, POLLIN, 0};
        int pr = poll(&pfd, 1, 200);
        if (pr > 0) {
            ssize_t len = read(wt->fd, buf, sizeof(buf));
            for (char *p = buf; len > 0 && p < buf + len;) {
                struct inotify_event *ev = (struct inotify_event *)p;
                p += sizeof(*ev) + ev->len;
                const char *dir = watch_dir(wt, ev->wd);
                if (!dir || !ev->len) continue;
                if (snprintf(path, sizeof(path), "%s/%s", dir, ev->name) >= (int)sizeof(path))
                    continue;
                if (ev->mask & IN_ISDIR) {
                    if (ev->mask & (IN_CREATE | IN_MOVED_TO)) {
                        watch_tree(wt, path, 0);
                        walk(r, path, &pending, 0); /* files that arrived before the watch */
                    }
                } else if (ev->mask & (IN_CLOSE_WRITE | IN_MOVED_TO)) {
                    if (wanted(r, path)) pv_push(&pending, path);
                }
            }
            if (pending.n < (size_t)r->batch_files) continue; /* more may be coming */
        }
        if (pending.n) {
            qsort(pending.v, pending.n, sizeof(char *), cmp_str);
            size_t w = 0; /* drop duplicates (several events for one file) */
            for (size_t i = 0; i < pending.n; i++) {
                if (w && strcmp(pending.v[w - 1], pending.v[i]) == 0)
                    free(pending.v[i]);
                else
                    pending.v[w++] = pending.v[i];
            }
            pending.n = w;
            pathvec todo = {0};
            for (size_t i = 0; i < pending.n; i++)
                if (wanted(r, pending.v[i])) pv_push(&todo, pending.v[i]);
            run_files(r, todo.v, todo.n);
            pv_free(&todo);
            pv_free(&pending);
        }
    }
    pv_free(&pending);
    return r->failed ? KN_EKAFKA : KN_OK;
}

int ing_files_run(ing_ctx *c, const ing_files_args *a)
{
    files_run r = {.c = c, .a = a};
    pathvec list = {0};
    watcher wt = {.fd = -1};
    char **roots = NULL;
    char e[512];
    int code = 1;
    r.batch_files = (long)kn_config_get_int(c->cfg, "ingest.batch_files", 1000, NULL);
    r.batch_bytes = (size_t)kn_config_get_int(c->cfg, "ingest.batch_bytes", 16 << 20, NULL);
    if (r.batch_files < 1) r.batch_files = 1;
    if (a->follow) r.seen = ing_strset_new();
    if (!(r.tally = ing_tally_new())) {
        kn_log_error("files: out of memory");
        goto out;
    }

    if (a->state_path) {
        char abs[PATH_MAX], dig[KN_SHA256_HEX_LEN];
        r.st = ing_state_open(a->state_path, e, sizeof(e));
        if (!r.st) {
            kn_log_error("%s", e);
            goto out;
        }
        /* The state file's absolute path names the import: its transactional
         * id survives restarts, so a restarted import fences its zombie. */
        if (!realpath(a->state_path, abs)) {
            char dir[PATH_MAX];
            snprintf(dir, sizeof(dir), "%s", a->state_path);
            char *slash = strrchr(dir, '/');
            const char *base = slash ? slash + 1 : a->state_path;
            if (slash) *slash = '\0';
            if (!realpath(slash ? (dir[0] ? dir : "/") : ".", abs)) {
                kn_log_error("%s: %s", a->state_path, strerror(errno));
                goto out;
            }
            size_t l = strlen(abs);
            snprintf(abs + l, sizeof(abs) - l, "/%s", base);
        }
        r.state_abs = strdup(abs);
        kn_sha256_hex(abs, strlen(abs), dig);
        const char *tid = kn_config_get(c->cfg, "ingest.transactional_id", NULL);
        if (tid)
            snprintf(r.txn_id, sizeof(r.txn_id), "%s", tid);
        else
            snprintf(r.txn_id, sizeof(r.txn_id), "kiln-ingest-files-%.16s", dig);
        r.txp = ing_producer_new(c, r.txn_id, e, sizeof(e));
        if (!r.txp) {
            kn_log_error("%s", e);
            goto out;
        }
        uint64_t pb;
        char *const *pp;
        size_t pn;
        int committed = 0;
        if (ing_state_pending(r.st, &pb, &pp, &pn) == KN_OK) {
            committed = marker_committed(&r, pb);
            if (committed < 0) {
                kn_log_error("state: cannot tell whether batch %llu committed; not guessing",
                             (unsigned long long)pb);
                goto out;
            }
            kn_log_info("state: batch %llu (%zu files) left open by a crash was %s",
                        (unsigned long long)pb, pn, committed ? "committed" : "not committed");
        }
        if (ing_state_settle(r.st, committed, e, sizeof(e)) != KN_OK) {
            kn_log_error("%s", e);
            goto out;
        }
        kn_log_info("state %s: %zu files already done (transactional id %s)", abs,
                    ing_state_done_count(r.st), r.txn_id);
    }

    /* Absolute roots: the journal names files by absolute path, whatever the cwd. */
    roots = calloc((size_t)a->npaths + 1, sizeof(char *));
    for (int i = 0; roots && i < a->npaths; i++) {
        char abs[PATH_MAX];
        roots[i] = strdup(realpath(a->paths[i], abs) ? abs : a->paths[i]);
    }
    if (!roots) goto out;
    if (a->follow) {
        wt.fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
        if (wt.fd < 0) {
            kn_log_error("inotify: %s", strerror(errno));
            goto out;
        }
        for (int i = 0; i < a->npaths; i++)
            watch_tree(&wt, roots[i], 0); /* before the scan */
    }
    for (int i = 0; i < a->npaths; i++)
        walk(&r, roots[i], &list, 0);
    if (list.n) qsort(list.v, list.n, sizeof(char *), cmp_str);
    kn_log_info("files: %zu to send", list.n);
    ing_progress_start(&r.pr, &c->opt, "files", list.n);
    run_files(&r, list.v, list.n);
    if (a->follow && !r.failed) follow(&r, &wt);

    int left = ing_drain(c, NULL, ing_drain_timeout_ms(c));
    ing_progress_update(&r.pr, r.files_total, 1);
    long ok = atomic_load(&r.tally->ok), refused = atomic_load(&r.tally->refused),
         failed = atomic_load(&r.tally->failed);
    kn_log_fields(KN_LOG_INFO,
                  json_pack("{s:I,s:I,s:I,s:i}", "records", (json_int_t)ok, "refused",
                            (json_int_t)refused, "failed", (json_int_t)failed, "unreported", left),
                  "files: finished");
    code = (r.failed || failed || left) ? 1 : 0;
out:
    if (r.txp) kn_kafka_producer_destroy(r.txp, 10000);
    ing_tally_unref(r.tally); /* reports still to come hold their own references */
    ing_state_close(r.st);
    ing_strset_destroy(r.seen);
    free(r.state_abs);
    pv_free(&list);
    if (wt.fd >= 0) close(wt.fd);
    for (size_t i = 0; i < wt.n; i++)
        free(wt.w[i].dir);
    free(wt.w);
    for (int i = 0; roots && i < a->npaths; i++)
        free(roots[i]);
    free(roots);
    return code;
}
