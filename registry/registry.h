/* registry.h: what the registry's own files share (not a public API):
 * the PostgreSQL connection pool and migrations (db.c), the per-request
 * call context with auth (api.c), and the route tables (api.c, artifact.c). */
#ifndef REG_REGISTRY_H
#define REG_REGISTRY_H

#include <stdint.h>

#include <libpq-fe.h>

#include "core/config.h"
#include "net/http.h"
#include "core/metrics.h"

/* --- db.c --- */
typedef struct reg_pool reg_pool;

/* A pool of at most `size` connections to conninfo, each with search_path =
 * schema and TimeZone = UTC. Connections are opened lazily. Caller frees. */
reg_pool *reg_pool_new(const char *conninfo, const char *schema, int size, unsigned wait_ms);
void reg_pool_destroy(reg_pool *p);
/* Session limits set on every connection the pool opens from now on (ms;
 * 0 = no limit): statement_timeout, lock_timeout and
 * idle_in_transaction_session_timeout. Call before the first get. */
void reg_pool_set_timeouts(reg_pool *p, unsigned statement_ms, unsigned lock_ms,
                           unsigned idle_tx_ms);

/* A connection ready for queries, or NULL (err says why: database down, pool
 * exhausted for wait_ms). Reconnects a connection the server dropped. */
PGconn *reg_pool_get(reg_pool *p, char *err, size_t errsz);

/* A connection like the pool's, outside it (the cache's listener owns it). */
PGconn *reg_pool_connect(reg_pool *p, char *err, size_t errsz);
const char *reg_pool_schema(const reg_pool *p);

/* Gives a connection back. One left inside a transaction is rolled back;
 * a broken one is closed and reopened on a later get. Accepts NULL. */
void reg_pool_put(reg_pool *p, PGconn *c);

/* Creates the schema when missing and applies the embedded migrations not
 * yet recorded, all in one transaction under an advisory lock (so two
 * registries starting together do not race). */
int reg_migrate(reg_pool *p, char *err, size_t errsz);

/* Stores the hash of `token` as an admin token named "bootstrap-admin" unless
 * that hash is already known (a revoked one stays revoked). */
int reg_bootstrap_admin(reg_pool *p, const char *token, char *err, size_t errsz);

/* The value of a column by name; "" for NULL. */
const char *reg_col(const PGresult *r, int row, const char *name);
int reg_col_null(const PGresult *r, int row, const char *name);

/* --- cache.c: read answers kept in memory ---
 * A small map of key → answer text. A LISTEN connection drops everything on
 * each kiln_registry_change notification for our schema (migration 003: sent
 * by every committed change to models, versions, aliases, metrics, tags,
 * artifacts), and this process drops it after each of its own writes before
 * answering them. While the listener is not connected nothing is kept or
 * answered from memory. An entry also expires after max_age_ms.
 * Use: gen = reg_cache_gen() BEFORE the query; reg_cache_put(key, text, gen)
 * after it keeps the text only if nothing changed in between. */
typedef struct reg_cache reg_cache;
reg_cache *reg_cache_new(reg_pool *pool, unsigned max_age_ms, kn_metrics *m);
void reg_cache_destroy(reg_cache *c);
uint64_t reg_cache_gen(reg_cache *c); /* 0: not caching now */
char *reg_cache_get(reg_cache *c, const char *key, size_t *len); /* malloc'd copy or NULL */
void reg_cache_put(reg_cache *c, const char *key, const char *text, uint64_t gen);
void reg_cache_invalidate(reg_cache *c);
/* Waits up to ms for the listener to be connected; 1 when it is. */
int reg_cache_wait_ready(reg_cache *c, unsigned ms);

/* --- the application --- */
enum {
    REG_ROLE_READ = 1,
    REG_ROLE_WRITE = 2,
    REG_ROLE_PROMOTE = 4,
    REG_ROLE_ADMIN = 8,
};

typedef struct {
    reg_pool *pool;
    kn_metrics *metrics;
    kn_metric *versions_created; /* counters */
    kn_metric *promotions;
    kn_metric *rejections;
    kn_metric *rollbacks;
    kn_metric *alias_conflicts;
    kn_metric *artifact_bytes_in;
    kn_metric *artifact_bytes_out;
    kn_metric *db_unavailable;
    int read_requires_token;
    uint64_t max_artifact;       /* bytes */
    const char *promotion_alias; /* moving it needs the promote role; default "production" */
    /* Uploads (artifact.c): the body is staged in an unlinked file under
     * staging_dir, holding no database connection; an upload taking longer
     * than upload_timeout_s, or slower on average than upload_min_rate
     * bytes/s once upload_grace_s have passed, is cut. */
    unsigned upload_timeout_s;
    uint64_t upload_min_rate; /* bytes/s; 0: no minimum */
    unsigned upload_grace_s;
    char staging_dir[256];
    kn_metric *uploads_cut; /* counter */
    reg_cache *cache;       /* NULL: off (registry.cache_ms = 0) */
} reg_app;

/* Reads the registry's database session limits and upload limits from cfg
 * (defaults in docs/registry.md) into app and app->pool. KN_OK, or
 * KN_EINVAL with err naming the keys. */
int reg_limits_configure(reg_app *app, const kn_config *cfg, char *err, size_t errsz);

/* One API call: a pooled connection and who is calling. */
typedef struct {
    reg_app *app;
    kn_http_req *req;
    PGconn *db;
    unsigned roles; /* effective REG_ROLE_* of the caller */
    int64_t token_id;
    char actor[128]; /* token name, or "anonymous" */
    char sqlstate[6]; /* of the last failed query */
    char dberr[256];
    int keeps_cache; /* a write that changes nothing the cache holds */
} reg_call;

/* Takes a connection and checks the caller holds every role in `need`.
 * Returns 0, or answers (401, 403, 503) and returns -1 (nothing to end). */
int reg_call_begin(reg_call *c, reg_app *app, kn_http_req *req, unsigned need);
/* Gives the connection back (rolling back an open transaction). */
void reg_call_end(reg_call *c);

/* PQexecParams with text parameters; the result when its status is `want`,
 * otherwise NULL with c->sqlstate/dberr set (the result already cleared). */
/* PQexecParams through the connection's prepared-statement cache (db.c). */
PGresult *reg_exec_params(PGconn *c, const char *sql, int n, const char *const *params);
PGresult *reg_q(reg_call *c, ExecStatusType want, const char *sql, int n,
                const char *const *params);
/* Runs a statement expecting PGRES_COMMAND_OK; 0 or -1. */
int reg_exec(reg_call *c, const char *sql);
/* Answers a failed query: 503 when the database is gone, 409 for a
 * serialization failure, 500 otherwise. */
void reg_db_fail(reg_call *c, const char *what);

/* Validators for names that travel in paths. */
int reg_valid_name(const char *s);  /* models: [A-Za-z0-9][A-Za-z0-9._-]{0,127}, no ".." */
int reg_valid_alias(const char *s); /* [a-z][a-z0-9_-]{0,63} */
/* Parses a version number 1..INT32_MAX; -1 if bad. */
long reg_parse_version(const char *s);

/* Looks the model up; answers 404 (or the db error) and returns -1 if absent. */
int64_t reg_model_id(reg_call *c, const char *name);

/* Appends an event; 0 or -1 (c->sqlstate set). data (may be NULL) is borrowed. */
int reg_event(reg_call *c, int64_t model_id, long version, const char *kind, const char *reason,
              json_t *data);

void reg_api_routes(kn_http_server *srv, reg_app *app);
void reg_artifact_routes(kn_http_server *srv, reg_app *app);

#endif
