/* artifact.c: streaming artifact upload and download.
 *
 * Upload (PUT .../artifact, write role, declared SHA-256 in the X-Kiln-Sha256
 * header or ?sha256=) in two phases, so a slow client holds neither a
 * database connection nor a row lock while its bytes trickle in:
 *  1. transfer: the token, the version and the declared digest are checked
 *     on a pooled connection given back at once; the body is hashed as it
 *     arrives and staged in an unlinked file under registry.staging_dir
 *     (1 MiB writes, memory stays flat). An upload slower on average than
 *     registry.upload_min_bytes_per_s once registry.timeout_s have passed, or
 *     longer than registry.upload_timeout_s, is cut (408).
 *  2. attach: only when the digest matches and the size is within
 *     registry.max_artifact_bytes, one short transaction copies the staged
 *     file into a new large object at local speed, then locks the version
 *     row (bounded by lock_timeout), re-checks it and links the artifact.
 * On a mismatch, an overrun, a cut or a client that goes away nothing reaches
 * the database; a failed attach rolls back and PostgreSQL discards the large
 * object with it; the staged file vanishes with its descriptor (or the
 * process). Bytes whose digest is already stored are hashed, not staged.
 *
 * Download (GET .../artifact): ETag = the digest, single Range, If-None-Match.
 * Each 1 MiB window is read with lo_get on a pooled connection taken only
 * for that query, so a slow reader never holds a database connection. */
#include "registry.h"

#include <ctype.h>
#include <errno.h>
#include <libpq/libpq-fs.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/kn.h"
#include "core/log.h"
#include "core/sha256.h"

#define WINDOW (1u << 20) /* bytes per staged write / lo_write / lo_get */

typedef struct {
    int started;  /* upload_begin ran */
    int answered; /* an error answer is queued; the rest of the body is dropped */
    int dedup;    /* these bytes were already stored when the upload began: hash only */
    char name[160];
    char ver[24];
    char want[KN_SHA256_HEX_LEN];
    char actor[128]; /* the caller's token name, for the event */
    int fd;          /* the staged body (unlinked file), -1 when not staging */
    kn_sha256 *h;
    uint64_t size; /* bytes received so far */
    char *buf;     /* (WINDOW) bytes not yet staged; reused to copy into the object */
    size_t blen;
    struct timespec t0; /* CLOCK_MONOTONIC when the first chunk arrived */
} upload;

static void upload_free(void *p)
{
    upload *u = p;
    if (!u) return;
    if (u->fd >= 0) close(u->fd);
    kn_sha256_destroy(u->h);
    free(u->buf);
    free(u);
}

static void upload_fail(upload *u, kn_http_req *req, int status, const char *code, const char *msg)
{
    kn_http_respond_error(req, status, code, "%s", msg);
    u->answered = 1;
}

/* The declared digest, lower-cased into out; 0 or -1. */
static int declared_digest(kn_http_req *req, char out[KN_SHA256_HEX_LEN])
{
    const char *d = kn_http_req_header(req, "X-Kiln-Sha256");
    if (!d) d = kn_http_req_query(req, "sha256");
    if (!d || strlen(d) != 64) return -1;
    for (int i = 0; i < 64; i++) out[i] = (char)tolower((unsigned char)d[i]);
    out[64] = '\0';
    return kn_sha256_hex_valid(out) ? 0 : -1;
}

/* An unlinked file in dir, open for reading and writing; -1 and errno. */
static int stage_open(const char *dir)
{
    char path[320];
    snprintf(path, sizeof(path), "%s/kiln-upload-XXXXXX", dir);
    int fd = mkstemp(path);
    if (fd >= 0) unlink(path);
    return fd;
}

/* Phase 1 checks: token, path, digest, size, and the version as it is now
 * (no lock, no transaction; attach checks again under the lock). The
 * connection is given back before any body byte is read. On failure the
 * answer is queued and u->answered set. */
static void upload_begin(upload *u, reg_app *app, kn_http_req *req)
{
    char msg[300];
    reg_call c;
    PGresult *r = NULL;
    u->started = 1;
    clock_gettime(CLOCK_MONOTONIC, &u->t0);
    if (reg_call_begin(&c, app, req, REG_ROLE_WRITE) != 0) {
        u->answered = 1;
        return;
    }
    snprintf(u->actor, sizeof(u->actor), "%s", c.actor);
    const char *name = kn_http_req_param(req, "name");
    long v = reg_parse_version(kn_http_req_param(req, "version"));
    if (!name || !reg_valid_name(name) || v < 0) {
        upload_fail(u, req, 400, "bad_request", "bad model name or version in the path");
        goto out;
    }
    snprintf(u->name, sizeof(u->name), "%s", name);
    snprintf(u->ver, sizeof(u->ver), "%ld", v);
    if (declared_digest(req, u->want) != 0) {
        upload_fail(u, req, 400, "bad_digest",
                    "declare the artifact's SHA-256 (64 hex digits) in the X-Kiln-Sha256 header "
                    "or the sha256 query parameter");
        goto out;
    }
    const char *cl = kn_http_req_header(req, "Content-Length");
    if (cl && strtoull(cl, NULL, 10) > app->max_artifact) {
        snprintf(msg, sizeof(msg), "the artifact is over the %llu byte limit",
                 (unsigned long long)app->max_artifact);
        upload_fail(u, req, 413, "too_large", msg);
        goto out;
    }
    const char *p[3] = {u->name, u->ver, u->want};
    r = reg_q(&c, PGRES_TUPLES_OK,
              "SELECT v.status, v.artifact_sha256, "
              "EXISTS (SELECT 1 FROM artifacts a WHERE a.sha256 = $3) AS stored "
              "FROM versions v JOIN models m ON m.id = v.model_id "
              "WHERE m.name = $1 AND v.version = $2::int",
              3, p);
    if (!r) {
        reg_db_fail(&c, "checking the version");
        u->answered = 1;
        goto out;
    }
    if (PQntuples(r) != 1) {
        snprintf(msg, sizeof(msg), "model '%s' has no version %s", u->name, u->ver);
        upload_fail(u, req, 404, "not_found", msg);
        goto out;
    }
    const char *have = reg_col(r, 0, "artifact_sha256");
    u->dedup = strcmp(reg_col(r, 0, "stored"), "t") == 0;
    if (strcmp(reg_col(r, 0, "status"), "archived") == 0) {
        upload_fail(u, req, 409, "invalid_state", "the version is archived");
        goto out;
    }
    if (have[0] && strcmp(have, u->want) != 0) {
        snprintf(msg, sizeof(msg), "version %s already has artifact %s; artifacts are immutable",
                 u->ver, have);
        upload_fail(u, req, 409, "artifact_exists", msg);
        goto out;
    }
    u->h = kn_sha256_new();
    u->buf = malloc(WINDOW);
    if (!u->h || !u->buf) {
        upload_fail(u, req, 500, "internal", "out of memory");
        goto out;
    }
    if (!u->dedup && (u->fd = stage_open(app->staging_dir)) < 0) {
        kn_log_error("artifact upload: cannot stage in %s: %s", app->staging_dir, strerror(errno));
        upload_fail(u, req, 500, "internal", "cannot stage the upload");
        goto out;
    }
out:
    PQclear(r);
    reg_call_end(&c);
}

static int stage_flush(upload *u, kn_http_req *req)
{
    size_t off = 0;
    while (off < u->blen) {
        ssize_t n = write(u->fd, u->buf + off, u->blen - off);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            kn_log_error("artifact upload: staging %s v%s: %s", u->name, u->ver,
                         n < 0 ? strerror(errno) : "short write");
            char msg[300];
            snprintf(msg, sizeof(msg),
                     "the registry cannot stage the upload: %s (registry.staging_dir); nothing "
                     "was stored, retry once there is space",
                     n < 0 ? strerror(errno) : "short write");
            kn_http_add_header(req, "Retry-After", "30");
            upload_fail(u, req, 507, "insufficient_storage", msg);
            return -1;
        }
        off += (size_t)n;
    }
    u->blen = 0;
    return 0;
}

/* Cuts an upload past its deadline or below the minimum rate: 0 or -1
 * (answered 408). */
static int upload_pace(upload *u, reg_app *app, kn_http_req *req)
{
    struct timespec now;
    char msg[256];
    clock_gettime(CLOCK_MONOTONIC, &now);
    double secs = (double)(now.tv_sec - u->t0.tv_sec) + (double)(now.tv_nsec - u->t0.tv_nsec) / 1e9;
    if (secs > (double)app->upload_timeout_s) {
        snprintf(msg, sizeof(msg),
                 "upload cut: not complete after %.0f s (registry.upload_timeout_s = %u); "
                 "nothing stored",
                 secs, app->upload_timeout_s);
    } else if (app->upload_min_rate && secs > (double)app->upload_grace_s &&
               (double)u->size < secs * (double)app->upload_min_rate) {
        snprintf(msg, sizeof(msg),
                 "upload cut: %.0f bytes/s on average after %.0f s, under the minimum of %llu "
                 "(registry.upload_min_bytes_per_s); nothing stored",
                 (double)u->size / secs, secs, (unsigned long long)app->upload_min_rate);
    } else {
        return 0;
    }
    kn_log_warn("artifact upload %s v%s by %s: %s", u->name, u->ver, u->actor, msg);
    kn_metrics_add(app->uploads_cut, 1);
    kn_http_add_header(req, "Connection", "close");
    upload_fail(u, req, 408, "upload_too_slow", msg);
    return -1;
}

static int on_upload_chunk(kn_http_req *req, const char *data, size_t len, void *ctx)
{
    reg_app *app = ctx;
    upload *u = kn_http_req_state(req);
    if (!u) {
        u = calloc(1, sizeof(*u));
        if (!u) {
            kn_http_respond_error(req, 500, "internal", "out of memory");
            return 1;
        }
        u->fd = -1;
        kn_http_req_set_state(req, u, upload_free);
        upload_begin(u, app, req);
    }
    if (u->answered) return 1;
    u->size += len;
    if (u->size > app->max_artifact) {
        char msg[128];
        snprintf(msg, sizeof(msg), "the artifact is over the %llu byte limit",
                 (unsigned long long)app->max_artifact);
        upload_fail(u, req, 413, "too_large", msg);
        return 1;
    }
    if (upload_pace(u, app, req) != 0) return 1;
    kn_sha256_update(u->h, data, len);
    if (u->dedup) return 0;
    while (len > 0) {
        size_t take = WINDOW - u->blen < len ? WINDOW - u->blen : len;
        memcpy(u->buf + u->blen, data, take);
        u->blen += take;
        data += take;
        len -= take;
        if (u->blen == WINDOW && stage_flush(u, req) != 0) return 1;
    }
    return 0;
}

/* libpq's large-object calls return no PGresult, so the error's SQLSTATE
 * (53100 disk_full above all: a 507, not a 500) is read from the message,
 * which carries it at PQERRORS_VERBOSE: "ERROR:  53100: could not extend
 * file ...". Sets c->sqlstate and c->dberr (without the code). */
static void lo_failed(reg_call *c)
{
    const char *m = PQerrorMessage(c->db), *p = strstr(m, ":  ");
    c->sqlstate[0] = '\0';
    if (p && strlen(p + 3) > 6 && p[8] == ':' && p[9] == ' ') {
        int code = 1;
        for (int i = 3; i < 8; i++)
            code &= (p[i] >= '0' && p[i] <= '9') || (p[i] >= 'A' && p[i] <= 'Z');
        if (code) {
            memcpy(c->sqlstate, p + 3, 5);
            c->sqlstate[5] = '\0';
            snprintf(c->dberr, sizeof(c->dberr), "%.*s%s", (int)(p + 3 - m), m, p + 10);
            return;
        }
    }
    snprintf(c->dberr, sizeof(c->dberr), "%s", m);
}

/* Copies the staged body into a new large object in c's transaction;
 * *oid set. 0 or -1 (c->dberr, and c->sqlstate when the server sent one,
 * set). */
static int attach_copy(reg_call *c, upload *u, Oid *oid)
{
    int fd = -1, rc = -1;
    PGVerbosity was = PQsetErrorVerbosity(c->db, PQERRORS_VERBOSE); /* for lo_failed */
    *oid = lo_creat(c->db, INV_READ | INV_WRITE);
    if (*oid == InvalidOid) goto loerr;
    fd = lo_open(c->db, *oid, INV_WRITE);
    if (fd < 0) goto loerr;
    for (uint64_t off = 0; off < u->size;) {
        ssize_t n = pread(u->fd, u->buf, WINDOW, (off_t)off);
        if (n <= 0) {
            snprintf(c->dberr, sizeof(c->dberr), "reading the staged upload: %s",
                     n < 0 ? strerror(errno) : "short file");
            goto out;
        }
        for (ssize_t w = 0; w < n;) {
            int k = lo_write(c->db, fd, u->buf + w, (size_t)(n - w));
            if (k <= 0) goto loerr;
            w += k;
        }
        off += (uint64_t)n;
    }
    if (lo_close(c->db, fd) != 0) goto loerr;
    rc = 0;
    goto out;
loerr:
    lo_failed(c);
out:
    PQsetErrorVerbosity(c->db, was);
    return rc;
}

/* Phase 2: the whole body is in and hashed. */
static void h_upload(kn_http_req *req, void *ctx)
{
    reg_app *app = ctx;
    PGresult *r = NULL;
    char err[256], msg[300];
    upload *u = kn_http_req_state(req);
    if (!u) { /* an empty body: no chunk arrived */
        if (on_upload_chunk(req, "", 0, ctx) != 0) return;
        u = kn_http_req_state(req);
    }
    if (u->answered) return;
    if (upload_pace(u, app, req) != 0) return;
    if (!u->dedup && u->blen && stage_flush(u, req) != 0) return;
    uint8_t digest[KN_SHA256_LEN];
    char got[KN_SHA256_HEX_LEN], sizes[24];
    kn_sha256_final(u->h, digest);
    kn_sha256_to_hex(digest, got);
    if (strcmp(got, u->want) != 0) {
        snprintf(msg, sizeof(msg), "the body's SHA-256 is %s, not the declared %s; nothing stored",
                 got, u->want);
        upload_fail(u, req, 422, "digest_mismatch", msg);
        return;
    }
    reg_call c;
    memset(&c, 0, sizeof(c));
    c.app = app;
    c.req = req;
    snprintf(c.actor, sizeof(c.actor), "%s", u->actor);
    c.db = reg_pool_get(app->pool, err, sizeof(err));
    if (!c.db) {
        kn_metrics_add(app->db_unavailable, 1);
        kn_log_warn("artifact upload: %s", err);
        kn_http_add_header(req, "Retry-After", "1");
        kn_http_respond_error(req, 503, "unavailable", "the database is unavailable; retry");
        return;
    }
    snprintf(sizes, sizeof(sizes), "%llu", (unsigned long long)u->size);
    if (reg_exec(&c, "BEGIN")) goto dberr;
    /* The object first, the row lock last: the lock is held only for the
     * few statements that link the artifact. */
    const char *pw[1] = {u->want};
    r = reg_q(&c, PGRES_TUPLES_OK, "SELECT 1 FROM artifacts WHERE sha256 = $1", 1, pw);
    if (!r) goto dberr;
    int stored = PQntuples(r) == 1;
    PQclear(r);
    r = NULL;
    if (!stored && u->fd < 0) { /* was stored at begin, removed since: cannot happen today */
        upload_fail(u, req, 409, "conflict", "the stored artifact vanished; upload again");
        goto out;
    }
    if (!stored) {
        Oid oid;
        char oids[24];
        if (attach_copy(&c, u, &oid) != 0) goto dberr;
        snprintf(oids, sizeof(oids), "%u", oid);
        const char *p[3] = {u->want, sizes, oids};
        r = reg_q(&c, PGRES_TUPLES_OK,
                  "INSERT INTO artifacts (sha256, size, lo) VALUES ($1, $2::bigint, $3::oid) "
                  "ON CONFLICT (sha256) DO NOTHING RETURNING sha256",
                  3, p);
        if (!r) goto dberr;
        int raced = PQntuples(r) == 0; /* a concurrent upload stored the same bytes */
        PQclear(r);
        r = NULL;
        if (raced && lo_unlink(c.db, oid) != 1) {
            snprintf(c.dberr, sizeof(c.dberr), "%s", PQerrorMessage(c.db));
            goto dberr;
        }
    }
    const char *pv[2] = {u->name, u->ver};
    r = reg_q(&c, PGRES_TUPLES_OK,
              "SELECT v.model_id, v.status, v.artifact_sha256 FROM versions v "
              "JOIN models m ON m.id = v.model_id WHERE m.name = $1 AND v.version = $2::int "
              "FOR UPDATE OF v",
              2, pv);
    if (!r) goto dberr;
    if (PQntuples(r) != 1) {
        snprintf(msg, sizeof(msg), "model '%s' has no version %s", u->name, u->ver);
        upload_fail(u, req, 404, "not_found", msg);
        goto out;
    }
    char mid[24], have[KN_SHA256_HEX_LEN];
    snprintf(mid, sizeof(mid), "%s", reg_col(r, 0, "model_id"));
    snprintf(have, sizeof(have), "%s", reg_col(r, 0, "artifact_sha256"));
    int archived = strcmp(reg_col(r, 0, "status"), "archived") == 0;
    PQclear(r);
    r = NULL;
    if (archived) {
        upload_fail(u, req, 409, "invalid_state", "the version is archived");
        goto out;
    }
    if (have[0] && strcmp(have, u->want) != 0) {
        snprintf(msg, sizeof(msg), "version %s already has artifact %s; artifacts are immutable",
                 u->ver, have);
        upload_fail(u, req, 409, "artifact_exists", msg);
        goto out;
    }
    int changed = !have[0];
    if (changed) {
        const char *p[3] = {mid, u->ver, u->want};
        r = reg_q(&c, PGRES_COMMAND_OK,
                  "UPDATE versions SET artifact_sha256 = $3 WHERE model_id = $1 "
                  "AND version = $2::int",
                  3, p);
        if (!r) goto dberr;
        PQclear(r);
        r = NULL;
        json_t *data = json_pack("{s:s,s:I,s:b}", "sha256", u->want, "size", (json_int_t)u->size,
                                 "deduplicated", stored);
        int erc = reg_event(&c, strtoll(mid, NULL, 10), strtol(u->ver, NULL, 10),
                            "artifact.uploaded", "", data);
        json_decref(data);
        if (erc) goto dberr;
    }
    if (reg_exec(&c, "COMMIT")) goto dberr;
    if (changed) kn_metrics_add(app->artifact_bytes_in, (double)u->size);
    r = reg_q(&c, PGRES_TUPLES_OK,
              "SELECT version_doc(v, m.name) AS doc FROM models m JOIN versions v "
              "ON v.model_id = m.id WHERE m.name = $1 AND v.version = $2::int",
              2, pv);
    if (!r || PQntuples(r) != 1) goto dberr;
    kn_http_add_header(req, "ETag", u->want);
    kn_http_respond_json(req, changed ? 201 : 200,
                         json_loads(reg_col(r, 0, "doc"), 0, NULL));
    goto out;
dberr:
    reg_db_fail(&c, "storing the artifact");
out:
    PQclear(r);
    reg_call_end(&c); /* rolls back an unfinished attach, large object included */
}

/* --- download --- */

typedef struct {
    reg_app *app;
    char oid[16];
    uint64_t start; /* first byte served (Range) */
    uint64_t end;   /* one past the last byte served */
    char *win;      /* (WINDOW) cached bytes of the object */
    uint64_t win_off;
    size_t win_len;
} download;

static void download_free(void *p)
{
    download *d = p;
    if (!d) return;
    free(d->win);
    free(d);
}

/* Refills the window at object offset off. 0 or -1. */
static int download_fill(download *d, uint64_t off)
{
    char err[256], offs[24], lens[16];
    uint64_t want = d->end - off < WINDOW ? d->end - off : WINDOW;
    PGconn *c = reg_pool_get(d->app->pool, err, sizeof(err));
    if (!c) {
        kn_log_warn("artifact download: %s", err);
        return -1;
    }
    snprintf(offs, sizeof(offs), "%llu", (unsigned long long)off);
    snprintf(lens, sizeof(lens), "%llu", (unsigned long long)want);
    const char *p[3] = {d->oid, offs, lens};
    PGresult *r = PQexecParams(c, "SELECT lo_get($1::oid, $2::bigint, $3::int) AS data", 3, NULL,
                               p, NULL, NULL, 1 /* binary: raw bytes */);
    int rc = -1;
    if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1) {
        kn_log_warn("artifact download: %s", PQerrorMessage(c));
        goto out;
    }
    int f = PQfnumber(r, "data");
    size_t n = (size_t)PQgetlength(r, 0, f);
    if (n == 0 || n > WINDOW) goto out;
    memcpy(d->win, PQgetvalue(r, 0, f), n);
    d->win_off = off;
    d->win_len = n;
    rc = 0;
out:
    PQclear(r);
    reg_pool_put(d->app->pool, c);
    return rc;
}

static ssize_t download_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    download *d = cls;
    uint64_t off = d->start + pos;
    if (off >= d->end) return -1;
    if (off < d->win_off || off >= d->win_off + d->win_len) {
        if (download_fill(d, off) != 0) return -1;
    }
    size_t avail = (size_t)(d->win_off + d->win_len - off);
    size_t n = avail < max ? avail : max;
    memcpy(buf, d->win + (off - d->win_off), n);
    kn_metrics_add(d->app->artifact_bytes_out, (double)n);
    return (ssize_t)n;
}

/* Parses a single "bytes=a-b" / "bytes=a-" / "bytes=-n" range against size.
 * 1: a satisfiable range in [*start, *end); 0: no usable Range (serve all);
 * -1: unsatisfiable (416). */
static int parse_range(const char *h, uint64_t size, uint64_t *start, uint64_t *end)
{
    if (!h || strncmp(h, "bytes=", 6) != 0 || strchr(h, ',')) return 0;
    const char *s = h + 6;
    char *e;
    if (*s == '-') {
        if (!isdigit((unsigned char)s[1])) return 0;
        unsigned long long n = strtoull(s + 1, &e, 10);
        if (*e) return 0;
        if (n == 0 || size == 0) return -1;
        *start = n >= size ? 0 : size - n;
        *end = size;
        return 1;
    }
    if (!isdigit((unsigned char)*s)) return 0;
    unsigned long long a = strtoull(s, &e, 10);
    if (*e != '-') return 0;
    unsigned long long b = size ? size - 1 : 0;
    if (e[1]) {
        char *e2;
        if (!isdigit((unsigned char)e[1])) return 0;
        b = strtoull(e + 1, &e2, 10);
        if (*e2 || b < a) return 0;
    }
    if (a >= size) return -1;
    if (b >= size) b = size - 1;
    *start = a;
    *end = b + 1;
    return 1;
}

static void h_download(kn_http_req *req, void *ctx)
{
    reg_app *app = ctx;
    reg_call c;
    if (reg_call_begin(&c, app, req, REG_ROLE_READ) != 0) return;
    PGresult *r = NULL;
    download *d = NULL;
    const char *name = kn_http_req_param(req, "name");
    long v = reg_parse_version(kn_http_req_param(req, "version"));
    if (!name || !reg_valid_name(name) || v < 0) {
        kn_http_respond_error(req, 400, "bad_request", "bad model name or version in the path");
        goto out;
    }
    char ver[24];
    snprintf(ver, sizeof(ver), "%ld", v);
    const char *p[2] = {name, ver};
    r = reg_q(&c, PGRES_TUPLES_OK,
              "SELECT v.artifact_sha256 AS sha256, a.size, a.lo FROM models m "
              "JOIN versions v ON v.model_id = m.id "
              "LEFT JOIN artifacts a ON a.sha256 = v.artifact_sha256 "
              "WHERE m.name = $1 AND v.version = $2::int",
              2, p);
    if (!r) {
        reg_db_fail(&c, "reading the artifact");
        goto out;
    }
    if (PQntuples(r) != 1) {
        kn_http_respond_error(req, 404, "not_found", "model '%s' has no version %s", name, ver);
        goto out;
    }
    if (reg_col_null(r, 0, "sha256")) {
        kn_http_respond_error(req, 404, "no_artifact", "version %s of '%s' has no artifact yet",
                              ver, name);
        goto out;
    }
    const char *sha = reg_col(r, 0, "sha256");
    uint64_t size = strtoull(reg_col(r, 0, "size"), NULL, 10);
    char etag[KN_SHA256_HEX_LEN + 2], crange[80], disp[256];
    snprintf(etag, sizeof(etag), "\"%s\"", sha);
    kn_http_add_header(req, "ETag", etag);
    kn_http_add_header(req, "X-Kiln-Sha256", sha);
    kn_http_add_header(req, "Accept-Ranges", "bytes");
    snprintf(disp, sizeof(disp), "attachment; filename=\"%s-v%s.bin\"", name, ver);
    kn_http_add_header(req, "Content-Disposition", disp);
    const char *inm = kn_http_req_header(req, "If-None-Match");
    if (inm && (strcmp(inm, etag) == 0 || strcmp(inm, sha) == 0)) {
        kn_http_respond(req, 304, NULL, "", 0);
        goto out;
    }
    d = calloc(1, sizeof(*d));
    if (!d || !(d->win = malloc(WINDOW))) {
        kn_http_respond_error(req, 500, "internal", "out of memory");
        goto out;
    }
    d->app = app;
    snprintf(d->oid, sizeof(d->oid), "%s", reg_col(r, 0, "lo"));
    d->start = 0;
    d->end = size;
    int status = 200;
    int rr = parse_range(kn_http_req_header(req, "Range"), size, &d->start, &d->end);
    if (rr < 0) {
        snprintf(crange, sizeof(crange), "bytes */%llu", (unsigned long long)size);
        kn_http_add_header(req, "Content-Range", crange);
        kn_http_respond_error(req, 416, "range_not_satisfiable",
                              "the artifact has %llu bytes", (unsigned long long)size);
        goto out;
    }
    if (rr > 0) {
        status = 206;
        snprintf(crange, sizeof(crange), "bytes %llu-%llu/%llu", (unsigned long long)d->start,
                 (unsigned long long)d->end - 1, (unsigned long long)size);
        kn_http_add_header(req, "Content-Range", crange);
    }
    PQclear(r);
    r = NULL;
    reg_call_end(&c); /* the stream takes connections per window */
    kn_http_respond_stream(req, status, "application/octet-stream", d->end - d->start,
                           download_read, d, download_free);
    return;
out:
    download_free(d);
    PQclear(r);
    reg_call_end(&c);
}

void reg_artifact_routes(kn_http_server *srv, reg_app *app)
{
    app->uploads_cut = kn_metrics_counter(app->metrics, "kiln_registry_uploads_cut_total",
                                          "Artifact uploads cut for being too slow", NULL);
    kn_http_server_route(srv, "PUT", "/v1/models/{name}/versions/{version}/artifact", h_upload,
                         on_upload_chunk, app);
    kn_http_server_route(srv, "GET", "/v1/models/{name}/versions/{version}/artifact",
                         h_download, NULL, app);
}
