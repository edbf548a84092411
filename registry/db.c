/* db.c: the registry's PostgreSQL side that is not a request: a small
 * connection pool (lazy connect, reconnect after a server restart) and the
 * embedded migrations. Only constant SQL is sent with PQexec; everything with
 * a value in it goes through PQexecParams. */
#include "registry.h"

#include <libpq-events.h>

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "embedded.h"
#include "core/config.h"
#include "core/kn.h"
#include "core/log.h"
#include "core/sha256.h"

struct reg_pool {
    pthread_mutex_t lock;
    pthread_cond_t freed;
    char *conninfo;
    char *password;   /* the conninfo's password, to mask in messages; NULL when none */
    int bad_conninfo; /* the conninfo does not parse: libpq would quote it in its errors */
    char schema[64];
    unsigned wait_ms;
    /* Session limits every pooled connection gets (ms, 0 = none): a query,
     * a wait for a row lock, a transaction left idle by a stalled caller. */
    char statement_ms[16], lock_ms[16], idle_tx_ms[16];
    int size;
    int nfree;     /* entries in idle[] */
    int nout;      /* connections handed out */
    PGconn **idle; /* (size) connected or NULL slots are not kept: idle holds live ones */
};

reg_pool *reg_pool_new(const char *conninfo, const char *schema, int size, unsigned wait_ms)
{
    reg_pool *p = calloc(1, sizeof(*p));
    if (!p) return NULL;
    p->conninfo = strdup(conninfo);
    p->idle = calloc((size_t)size, sizeof(*p->idle));
    if (!p->conninfo || !p->idle || strlen(schema) >= sizeof(p->schema)) {
        free(p->conninfo);
        free(p->idle);
        free(p);
        return NULL;
    }
    snprintf(p->schema, sizeof(p->schema), "%s", schema);
    char *perr = NULL;
    PQconninfoOption *opts = PQconninfoParse(conninfo, &perr);
    if (!opts) p->bad_conninfo = 1;
    for (PQconninfoOption *o = opts; o && o->keyword; o++)
        if (strcmp(o->keyword, "password") == 0 && o->val && o->val[0])
            p->password = strdup(o->val);
    PQconninfoFree(opts);
    PQfreemem(perr); /* it may quote the conninfo: never shown */
    p->size = size;
    p->wait_ms = wait_ms;
    reg_pool_set_timeouts(p, 0, 0, 0);
    pthread_mutex_init(&p->lock, NULL);
    pthread_cond_init(&p->freed, NULL);
    return p;
}

void reg_pool_destroy(reg_pool *p)
{
    if (!p) return;
    for (int i = 0; i < p->nfree; i++) PQfinish(p->idle[i]);
    pthread_mutex_destroy(&p->lock);
    pthread_cond_destroy(&p->freed);
    free(p->idle);
    free(p->conninfo);
    free(p->password);
    free(p);
}

void reg_pool_set_timeouts(reg_pool *p, unsigned statement_ms, unsigned lock_ms,
                           unsigned idle_tx_ms)
{
    snprintf(p->statement_ms, sizeof(p->statement_ms), "%u", statement_ms);
    snprintf(p->lock_ms, sizeof(p->lock_ms), "%u", lock_ms);
    snprintf(p->idle_tx_ms, sizeof(p->idle_tx_ms), "%u", idle_tx_ms);
}

static void notice_quiet(void *arg, const char *message)
{
    (void)arg;
    kn_log_debug("postgres: %s", message);
}

/* A new session: search_path and time zone set. NULL and err on failure. */
/* --- prepared statements, per connection ---
 * reg_q() prepares each distinct SQL text once per connection (the first
 * time a connection runs it) and then executes it by name, so PostgreSQL
 * parses and plans the registry's queries once, not per request. The cache
 * rides on the connection as libpq event instance data: it is freed with
 * the connection and emptied if the connection is reset. Texts beyond
 * REG_STMT_MAX per connection (dynamic SQL) run unprepared. */
#define REG_STMT_MAX 96

typedef struct {
    uint64_t hash;
    char *sql;
} reg_stmt;

typedef struct {
    reg_stmt s[REG_STMT_MAX];
    int n;
} reg_stmts;

static void stmts_clear(reg_stmts *st)
{
    for (int i = 0; i < st->n; i++)
        free(st->s[i].sql);
    st->n = 0;
}

static int stmt_events(PGEventId id, void *info, void *pass)
{
    (void)pass;
    if (id == PGEVT_CONNDESTROY || id == PGEVT_CONNRESET) {
        PGconn *c = id == PGEVT_CONNDESTROY ? ((PGEventConnDestroy *)info)->conn
                                             : ((PGEventConnReset *)info)->conn;
        reg_stmts *st = PQinstanceData(c, stmt_events);
        if (st) {
            stmts_clear(st);
            if (id == PGEVT_CONNDESTROY) free(st);
        }
    }
    return 1;
}

static uint64_t fnv1a(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

PGresult *reg_exec_params(PGconn *c, const char *sql, int n, const char *const *params)
{
    reg_stmts *st = PQinstanceData(c, stmt_events);
    if (st && PQtransactionStatus(c) != PQTRANS_INERROR) {
        uint64_t h = fnv1a(sql);
        char name[16];
        for (int i = 0; i < st->n; i++)
            if (st->s[i].hash == h && strcmp(st->s[i].sql, sql) == 0) {
                snprintf(name, sizeof(name), "k%d", i);
                return PQexecPrepared(c, name, n, params, NULL, NULL, 0);
            }
        if (st->n < REG_STMT_MAX) {
            snprintf(name, sizeof(name), "k%d", st->n);
            PGresult *r = PQprepare(c, name, sql, n, NULL);
            int ok = PQresultStatus(r) == PGRES_COMMAND_OK;
            PQclear(r);
            char *copy = ok ? strdup(sql) : NULL;
            if (copy) {
                st->s[st->n].hash = h;
                st->s[st->n].sql = copy;
                st->n++;
                return PQexecPrepared(c, name, n, params, NULL, NULL, 0);
            }
            if (ok) { /* prepared but not remembered: forget it on the server too */
                snprintf(name, sizeof(name), "DEALLOCATE k%d", st->n);
                PQclear(PQexec(c, name));
            }
        }
    }
    return PQexecParams(c, sql, n, NULL, params, NULL, NULL, 0);
}

/* Why a connection failed, without the password: libpq quotes a malformed
 * conninfo in its message (missing "=" after "<text>"), and that text may
 * be (part of) a password, so such a message is replaced; in any other the
 * password, should it appear, is masked. */
static void connect_error(const reg_pool *p, PGconn *c, char *err, size_t errsz)
{
    if (p->bad_conninfo) {
        kn_seterr(err, errsz, KN_EDB,
                  "database unavailable: registry.db is not a valid libpq conninfo (not shown: "
                  "it may hold a password)");
        return;
    }
    char msg[1024];
    const char *src = PQerrorMessage(c), *at;
    size_t n = 0, pl = p->password ? strlen(p->password) : 0;
    msg[0] = '\0';
    while (pl && (at = strstr(src, p->password)) && n < sizeof(msg) - 1) {
        n += (size_t)snprintf(msg + n, sizeof(msg) - n, "%.*s***", (int)(at - src), src);
        src = at + pl;
    }
    if (n < sizeof(msg) - 1) snprintf(msg + n, sizeof(msg) - n, "%s", src);
    kn_seterr(err, errsz, KN_EDB, "database unavailable: %s", msg);
}

static PGconn *pool_connect(reg_pool *p, char *err, size_t errsz)
{
    PGconn *c = PQconnectdb(p->conninfo);
    PGresult *r = NULL;
    if (PQstatus(c) != CONNECTION_OK) {
        connect_error(p, c, err, errsz);
        goto fail;
    }
    PQsetNoticeProcessor(c, notice_quiet, NULL);
    const char *params[4] = {p->schema, p->statement_ms, p->lock_ms, p->idle_tx_ms};
    r = PQexecParams(c,
                     "SELECT set_config('search_path', $1, false), "
                     "set_config('TimeZone', 'UTC', false), "
                     "set_config('statement_timeout', $2, false), "
                     "set_config('lock_timeout', $3, false), "
                     "set_config('idle_in_transaction_session_timeout', $4, false)",
                     4, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        kn_seterr(err, errsz, KN_EDB, "cannot set search_path: %s", PQerrorMessage(c));
        goto fail;
    }
    PQclear(r);
    reg_stmts *st = calloc(1, sizeof(*st));
    if (st && PQregisterEventProc(c, stmt_events, "kiln-stmts", NULL) &&
        PQsetInstanceData(c, stmt_events, st))
        st = NULL; /* owned by the connection now */
    free(st); /* without the cache, queries simply run unprepared */
    return c;
fail:
    PQclear(r);
    PQfinish(c);
    return NULL;
}

PGconn *reg_pool_connect(reg_pool *p, char *err, size_t errsz)
{
    return pool_connect(p, err, errsz);
}

const char *reg_pool_schema(const reg_pool *p) { return p->schema; }

PGconn *reg_pool_get(reg_pool *p, char *err, size_t errsz)
{
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += p->wait_ms / 1000;
    deadline.tv_nsec += (long)(p->wait_ms % 1000) * 1000000L;
    if (deadline.tv_nsec >= 1000000000L) {
        deadline.tv_sec++;
        deadline.tv_nsec -= 1000000000L;
    }
    PGconn *c = NULL;
    pthread_mutex_lock(&p->lock);
    while (p->nfree == 0 && p->nout == p->size) {
        if (pthread_cond_timedwait(&p->freed, &p->lock, &deadline) == ETIMEDOUT) {
            pthread_mutex_unlock(&p->lock);
            kn_seterr(err, errsz, KN_ETIMEDOUT, "all %d database connections busy", p->size);
            return NULL;
        }
    }
    if (p->nfree > 0) c = p->idle[--p->nfree];
    p->nout++;
    pthread_mutex_unlock(&p->lock);

    /* A server restart leaves the socket closed under us; reading what is
     * pending notices it without a round trip. */
    if (c && (PQconsumeInput(c) == 0 || PQstatus(c) != CONNECTION_OK)) {
        PQfinish(c);
        c = NULL;
    }
    if (!c) c = pool_connect(p, err, errsz);
    if (!c) {
        pthread_mutex_lock(&p->lock);
        p->nout--;
        pthread_cond_signal(&p->freed);
        pthread_mutex_unlock(&p->lock);
    }
    return c;
}

void reg_pool_put(reg_pool *p, PGconn *c)
{
    if (!c) return;
    if (PQstatus(c) == CONNECTION_OK && PQtransactionStatus(c) != PQTRANS_IDLE) {
        PGresult *r = PQexec(c, "ROLLBACK");
        PQclear(r);
    }
    if (PQstatus(c) != CONNECTION_OK || PQtransactionStatus(c) != PQTRANS_IDLE) {
        PQfinish(c);
        c = NULL;
    }
    pthread_mutex_lock(&p->lock);
    p->nout--;
    if (c) p->idle[p->nfree++] = c;
    pthread_cond_signal(&p->freed);
    pthread_mutex_unlock(&p->lock);
}

const char *reg_col(const PGresult *r, int row, const char *name)
{
    int f = PQfnumber(r, name);
    if (f < 0 || PQgetisnull(r, row, f)) return "";
    return PQgetvalue(r, row, f);
}

int reg_col_null(const PGresult *r, int row, const char *name)
{
    int f = PQfnumber(r, name);
    return f < 0 || PQgetisnull(r, row, f);
}

static int valid_schema(const char *s)
{
    if (!s[0] || !((s[0] >= 'a' && s[0] <= 'z') || s[0] == '_')) return 0;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || *s == '_')) return 0;
    return 1;
}

int reg_migrate(reg_pool *p, char *err, size_t errsz)
{
    int rc = KN_EDB;
    PGresult *r = NULL;
    PGconn *c = NULL;
    char sql[256];
    if (!valid_schema(p->schema))
        return kn_seterr(err, errsz, KN_EINVAL,
                         "registry.schema '%s': expected lower-case letters, digits, '_'",
                         p->schema);
    c = reg_pool_get(p, err, errsz);
    if (!c) return KN_EDB;

    r = PQexec(c, "BEGIN");
    if (PQresultStatus(r) != PGRES_COMMAND_OK) goto dberr;
    PQclear(r);
    /* a migration may rewrite a big table: the request limits do not apply */
    r = PQexec(c, "SET LOCAL statement_timeout = 0; SET LOCAL lock_timeout = 0");
    if (PQresultStatus(r) != PGRES_COMMAND_OK) goto dberr;
    PQclear(r);
    const char *lock_params[1] = {p->schema};
    r = PQexecParams(c, "SELECT pg_advisory_xact_lock(hashtext('kiln-registry-migrate:' || $1))",
                     1, NULL, lock_params, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) goto dberr;
    PQclear(r);
    /* The schema name was validated above: it is safe to quote in the text. */
    snprintf(sql, sizeof(sql), "CREATE SCHEMA IF NOT EXISTS \"%s\"", p->schema);
    r = PQexec(c, sql);
    if (PQresultStatus(r) != PGRES_COMMAND_OK) goto dberr;
    PQclear(r);
    r = PQexec(c, "CREATE TABLE IF NOT EXISTS schema_migrations ("
                  "name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())");
    if (PQresultStatus(r) != PGRES_COMMAND_OK) goto dberr;
    PQclear(r);
    r = NULL;

    for (const reg_migration *m = reg_migrations; m->name; m++) {
        const char *params[1] = {m->name};
        r = PQexecParams(c, "SELECT 1 FROM schema_migrations WHERE name = $1", 1, NULL, params,
                         NULL, NULL, 0);
        if (PQresultStatus(r) != PGRES_TUPLES_OK) goto dberr;
        int applied = PQntuples(r) > 0;
        PQclear(r);
        r = NULL;
        if (applied) continue;
        r = PQexec(c, m->sql); /* embedded constant text, several statements */
        if (PQresultStatus(r) != PGRES_COMMAND_OK) {
            kn_seterr(err, errsz, KN_EDB, "migration %s failed: %s", m->name,
                      PQerrorMessage(c));
            goto out;
        }
        PQclear(r);
        r = PQexecParams(c, "INSERT INTO schema_migrations (name) VALUES ($1)", 1, NULL, params,
                         NULL, NULL, 0);
        if (PQresultStatus(r) != PGRES_COMMAND_OK) goto dberr;
        PQclear(r);
        r = NULL;
        kn_log_info("applied migration %s to schema %s", m->name, p->schema);
    }
    r = PQexec(c, "COMMIT");
    if (PQresultStatus(r) != PGRES_COMMAND_OK) goto dberr;
    rc = KN_OK;
    goto out;
dberr:
    kn_seterr(err, errsz, KN_EDB, "migrating schema %s: %s", p->schema, PQerrorMessage(c));
out:
    PQclear(r);
    reg_pool_put(p, c);
    return rc;
}

int reg_bootstrap_admin(reg_pool *p, const char *token, char *err, size_t errsz)
{
    char hash[KN_SHA256_HEX_LEN];
    int rc = KN_EDB;
    PGresult *r = NULL;
    PGconn *c = reg_pool_get(p, err, errsz);
    if (!c) return KN_EDB;
    kn_sha256_hex(token, strlen(token), hash);
    const char *params[1] = {hash};
    r = PQexecParams(c,
                     "INSERT INTO tokens (name, hash, roles, created_by) "
                     "VALUES ('bootstrap-admin', $1, '{admin}', 'config') "
                     "ON CONFLICT (hash) DO NOTHING RETURNING id",
                     1, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        kn_seterr(err, errsz, KN_EDB, "storing the admin token: %s", PQerrorMessage(c));
        goto out;
    }
    if (PQntuples(r) == 1) kn_log_info("stored the configured admin token (hashed)");
    rc = KN_OK;
out:
    PQclear(r);
    reg_pool_put(p, c);
    return rc;
}

int reg_limits_configure(reg_app *app, const kn_config *cfg, char *err, size_t errsz)
{
    int ok[8] = {1, 1, 1, 1, 1, 1, 1, 1};
    int64_t stmt = kn_config_get_int(cfg, "registry.statement_timeout_ms", 30000, &ok[0]);
    int64_t lock = kn_config_get_int(cfg, "registry.lock_timeout_ms", 5000, &ok[1]);
    int64_t idle = kn_config_get_int(cfg, "registry.idle_in_transaction_timeout_ms", 60000, &ok[2]);
    int64_t deadline = kn_config_get_int(cfg, "registry.upload_timeout_s", 3600, &ok[3]);
    int64_t rate = kn_config_get_int(cfg, "registry.upload_min_bytes_per_s", 16384, &ok[4]);
    int64_t grace = kn_config_get_int(cfg, "registry.timeout_s", 30, &ok[5]);
    const char *dir = kn_config_get(cfg, "registry.staging_dir", getenv("TMPDIR"));
    for (int i = 0; i < 6; i++)
        if (!ok[i])
            return kn_seterr(err, errsz, KN_EINVAL,
                             "bad registry configuration: a timeout or "
                             "upload limit is not a number");
    if (stmt < 0 || stmt > INT32_MAX || lock < 0 || lock > INT32_MAX || idle < 0 ||
        idle > INT32_MAX || deadline < 1 || rate < 0 || grace < 1)
        return kn_seterr(err, errsz, KN_EINVAL,
                         "bad registry configuration: statement_timeout_ms, lock_timeout_ms, "
                         "idle_in_transaction_timeout_ms must be 0..2^31 ms; upload_timeout_s "
                         ">= 1; upload_min_bytes_per_s >= 0");
    reg_pool_set_timeouts(app->pool, (unsigned)stmt, (unsigned)lock, (unsigned)idle);
    app->upload_timeout_s = (unsigned)deadline;
    app->upload_min_rate = (uint64_t)rate;
    app->upload_grace_s = (unsigned)grace;
    snprintf(app->staging_dir, sizeof(app->staging_dir), "%s", dir && dir[0] ? dir : "/tmp");
    return KN_OK;
}
