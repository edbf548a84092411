/* api.c: the registry's JSON API under /v1 (models, versions, metrics, tags,
 * aliases with compare-and-set, rollback, events, tokens) and the web page at
 * /. Artifacts live in artifact.c. Every handler: reg_call_begin (connection
 * + auth) → parameterized queries → exactly one answer → reg_call_end.
 * JSON documents are built by SQL functions of migration 001 (version_doc,
 * model_doc, event_doc) so that every endpoint shows the same shape. */
#include "registry.h"

#include <ctype.h>
#include <math.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "embedded.h"
#include "core/kn.h"
#include "core/log.h"
#include "core/sha256.h"

/* Version lifecycle (versions.status), kept by status_transition_ok():
 *  1. A version is born `registered` (POST .../versions).
 *  2. registered → evaluated: its metrics are in (POST .../status).
 *  3. registered | evaluated → promoted: only by moving the promotion alias
 *     (`production` by default) onto it, in the same transaction.
 *  4. registered | evaluated → rejected: POST .../reject, with a reason and a
 *     snapshot of its metrics in the event log.
 *  5. any state but archived → archived, once no alias points at it;
 *     archived is final.
 *  6. promoted stays promoted when the alias later moves on: it records that
 *     the version once served.
 * Alias invariants, kept by h_alias_put / h_alias_rollback:
 *  7. An alias points at an existing version of its model that was neither
 *     rejected nor archived when the alias moved there.
 *  8. Every move is one row of `aliases` changed and one event appended in
 *     the same transaction (data: alias, from, to, metrics snapshot); a move
 *     with expected_version only happens if the alias still points there
 *     (row lock), otherwise 409 and nothing changes.
 *  9. Rollback moves the alias to the `from` of the latest forward move that
 *     brought it to its current version. */
static int status_transition_ok(const char *from, const char *to)
{
    static const struct {
        const char *from, *to;
    } allowed[] = {
        {"registered", "evaluated"}, {"registered", "promoted"}, {"evaluated", "promoted"},
        {"registered", "rejected"},  {"evaluated", "rejected"},  {"registered", "archived"},
        {"evaluated", "archived"},   {"promoted", "archived"},   {"rejected", "archived"},
        {"evaluated", "evaluated"},
    };
    for (size_t i = 0; i < KN_ARRAY_LEN(allowed); i++)
        if (strcmp(allowed[i].from, from) == 0 && strcmp(allowed[i].to, to) == 0) return 1;
    return 0;
}

static int aliasable_status(const char *status)
{
    return strcmp(status, "rejected") != 0 && strcmp(status, "archived") != 0;
}

/* --- the call context --- */

static unsigned parse_roles(const char *csv)
{
    unsigned roles = 0;
    char buf[128];
    snprintf(buf, sizeof(buf), "%s", csv);
    for (char *save = NULL, *r = strtok_r(buf, ",", &save); r; r = strtok_r(NULL, ",", &save)) {
        if (strcmp(r, "read") == 0) roles |= REG_ROLE_READ;
        else if (strcmp(r, "write") == 0) roles |= REG_ROLE_WRITE | REG_ROLE_READ;
        else if (strcmp(r, "promote") == 0) roles |= REG_ROLE_PROMOTE | REG_ROLE_READ;
        else if (strcmp(r, "admin") == 0)
            roles |= REG_ROLE_ADMIN | REG_ROLE_PROMOTE | REG_ROLE_WRITE | REG_ROLE_READ;
    }
    return roles;
}

static const char *role_name(unsigned need)
{
    if (need & REG_ROLE_ADMIN) return "admin";
    if (need & REG_ROLE_PROMOTE) return "promote";
    if (need & REG_ROLE_WRITE) return "write";
    return "read";
}

int reg_call_begin(reg_call *c, reg_app *app, kn_http_req *req, unsigned need)
{
    char err[256];
    memset(c, 0, sizeof(*c));
    c->app = app;
    c->req = req;
    snprintf(c->actor, sizeof(c->actor), "anonymous");
    c->db = reg_pool_get(app->pool, err, sizeof(err));
    if (!c->db) {
        kn_metrics_add(app->db_unavailable, 1);
        kn_log_warn("%s", err);
        kn_http_add_header(req, "Retry-After", "1");
        kn_http_respond_error(req, 503, "unavailable", "the database is unavailable; retry");
        return -1;
    }
    const char *auth = kn_http_req_header(req, "Authorization");
    if (auth) {
        if (strncasecmp(auth, "Bearer ", 7) != 0 || !auth[7]) {
            kn_http_respond_error(req, 401, "unauthorized",
                                  "the Authorization header must be 'Bearer <token>'");
            goto fail;
        }
        char hash[KN_SHA256_HEX_LEN];
        kn_sha256_hex(auth + 7, strlen(auth + 7), hash);
        const char *params[1] = {hash};
        PGresult *r = reg_q(c, PGRES_TUPLES_OK,
                            "SELECT id, name, array_to_string(roles, ',') AS roles FROM tokens "
                            "WHERE hash = $1 AND revoked_at IS NULL",
                            1, params);
        if (!r) {
            reg_db_fail(c, "checking the token");
            goto fail;
        }
        if (PQntuples(r) != 1) {
            PQclear(r);
            kn_http_respond_error(req, 401, "unauthorized", "unknown or revoked token");
            goto fail;
        }
        c->token_id = strtoll(reg_col(r, 0, "id"), NULL, 10);
        snprintf(c->actor, sizeof(c->actor), "%s", reg_col(r, 0, "name"));
        c->roles = parse_roles(reg_col(r, 0, "roles"));
        PQclear(r);
    } else if (!app->read_requires_token) {
        c->roles = 0;
    }
    unsigned open = app->read_requires_token ? 0 : REG_ROLE_READ;
    if ((need & ~open & ~c->roles) != 0) {
        if (!auth)
            kn_http_respond_error(req, 401, "unauthorized",
                                  "this call needs a bearer token with the %s role",
                                  role_name(need));
        else
            kn_http_respond_error(req, 403, "forbidden", "token '%s' lacks the %s role",
                                  c->actor, role_name(need & ~c->roles));
        goto fail;
    }
    return 0;
fail:
    reg_pool_put(app->pool, c->db);
    c->db = NULL;
    return -1;
}

void reg_call_end(reg_call *c)
{
    /* a write (committed or not) drops the answers kept in memory before
     * its own answer leaves: its client then reads what it wrote (cache.c) */
    const char *m = kn_http_req_method(c->req);
    if (c->app->cache && !c->keeps_cache && strcmp(m, "GET") != 0 && strcmp(m, "HEAD") != 0)
        reg_cache_invalidate(c->app->cache);
    reg_pool_put(c->app->pool, c->db);
    c->db = NULL;
}

PGresult *reg_q(reg_call *c, ExecStatusType want, const char *sql, int n,
                const char *const *params)
{
    PGresult *r = reg_exec_params(c->db, sql, n, params);
    if (PQresultStatus(r) == want) return r;
    const char *state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
    snprintf(c->sqlstate, sizeof(c->sqlstate), "%s", state ? state : "");
    snprintf(c->dberr, sizeof(c->dberr), "%s", PQerrorMessage(c->db));
    char *nl = strchr(c->dberr, '\n');
    if (nl) *nl = '\0';
    PQclear(r);
    return NULL;
}

int reg_exec(reg_call *c, const char *sql)
{
    PGresult *r = reg_q(c, PGRES_COMMAND_OK, sql, 0, NULL);
    if (!r) return -1;
    PQclear(r);
    return 0;
}

void reg_db_fail(reg_call *c, const char *what)
{
    if (PQstatus(c->db) != CONNECTION_OK || strncmp(c->sqlstate, "08", 2) == 0 ||
        strncmp(c->sqlstate, "57P", 3) == 0 || strcmp(c->sqlstate, "57014") == 0 ||
        strcmp(c->sqlstate, "25P03") == 0) {
        /* 57014: statement_timeout; 25P03: idle_in_transaction timeout */
        kn_metrics_add(c->app->db_unavailable, 1);
        kn_log_warn("%s: database connection lost: %s", what, c->dberr);
        kn_http_add_header(c->req, "Retry-After", "1");
        kn_http_respond_error(c->req, 503, "unavailable", "the database is unavailable; retry");
    } else if (strcmp(c->sqlstate, "40001") == 0 || strcmp(c->sqlstate, "40P01") == 0 ||
               strcmp(c->sqlstate, "23505") == 0 || strcmp(c->sqlstate, "55P03") == 0) {
        kn_http_respond_error(c->req, 409, "conflict", "%s: a concurrent change won; retry",
                              what);
    } else if (strcmp(c->sqlstate, "53100") == 0) { /* disk_full: the database's disk */
        kn_log_error("%s: the database's disk is full: %s", what, c->dberr);
        kn_http_add_header(c->req, "Retry-After", "30");
        kn_http_respond_error(c->req, 507, "insufficient_storage",
                              "%s: the database's disk is full; nothing was stored, retry once "
                              "there is space",
                              what);
    } else if (strncmp(c->sqlstate, "22", 2) == 0) {
        kn_http_respond_error(c->req, 400, "bad_request", "%s: invalid value (%s)", what,
                              c->dberr);
    } else {
        kn_log_error("%s: %s (sqlstate %s)", what, c->dberr, c->sqlstate);
        kn_http_respond_error(c->req, 500, "internal", "%s failed", what);
    }
}

/* --- small helpers --- */

int reg_valid_name(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 128 || !isalnum((unsigned char)s[0]) || strstr(s, "..")) return 0;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)s[i]) && s[i] != '.' && s[i] != '_' && s[i] != '-') return 0;
    return 1;
}

int reg_valid_alias(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 64 || !(s[0] >= 'a' && s[0] <= 'z')) return 0;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '_' ||
              s[i] == '-'))
            return 0;
    return 1;
}

static int valid_key(const char *s) /* tag keys, metric names */
{
    size_t n = strlen(s);
    if (n == 0 || n > 128) return 0;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)s[i]) && !strchr("._-:/", s[i])) return 0;
    return 1;
}

long reg_parse_version(const char *s)
{
    if (!s || !*s || strlen(s) > 10) return -1;
    for (const char *p = s; *p; p++)
        if (!isdigit((unsigned char)*p)) return -1;
    long v = strtol(s, NULL, 10);
    return v >= 1 && v <= 2147483647L ? v : -1;
}

/* A JSON document from a jsonb column; NULL on a parse failure (cannot
 * happen for text PostgreSQL produced, short of OOM). */
static json_t *col_json(const PGresult *r, int row, const char *name)
{
    const char *text = reg_col(r, row, name);
    return json_loads(text[0] ? text : "null", JSON_DECODE_ANY, NULL);
}

/* Answers with the jsonb text of a column as PostgreSQL wrote it (floats
 * in their shortest exact form). */
static void respond_doc(kn_http_req *req, int status, const PGresult *r, int row, const char *col)
{
    const char *text = reg_col(r, row, col);
    kn_http_respond(req, status, "application/json", text, strlen(text));
}

/* Answers `head` (an object, consumed) with member `key` = the array of the
 * jsonb texts in column col of rows [0, n). */
static void respond_docs(kn_http_req *req, json_t *head, const char *key, const PGresult *r,
                         int n, const char *col)
{
    char *h = json_dumps(head, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(head);
    char *out = NULL;
    size_t len = 0;
    FILE *f = h ? open_memstream(&out, &len) : NULL;
    if (!f) {
        free(h);
        kn_http_respond_error(req, 500, "internal", "out of memory");
        return;
    }
    size_t hl = strlen(h);
    fprintf(f, "%.*s%s\"%s\":[", (int)(hl - 1), h, hl > 2 ? "," : "", key);
    for (int i = 0; i < n; i++) fprintf(f, "%s%s", i ? "," : "", reg_col(r, i, col));
    fputs("]}", f);
    fclose(f);
    free(h);
    kn_http_respond(req, 200, "application/json", out, len);
    free(out);
}

/* An optional string member: 0 (and *out, "" when absent or null) or -1 after
 * answering 400. */
static int body_str(reg_call *c, json_t *body, const char *key, size_t max, const char **out)
{
    json_t *v = json_object_get(body, key);
    *out = "";
    if (!v || json_is_null(v)) return 0;
    if (!json_is_string(v) || json_string_length(v) > max ||
        memchr(json_string_value(v), '\0', json_string_length(v))) {
        kn_http_respond_error(c->req, 400, "bad_request",
                              "'%s' must be a string of at most %zu bytes", key, max);
        return -1;
    }
    *out = json_string_value(v);
    return 0;
}

int64_t reg_model_id(reg_call *c, const char *name)
{
    const char *params[1] = {name};
    PGresult *r = reg_q(c, PGRES_TUPLES_OK, "SELECT id FROM models WHERE name = $1", 1, params);
    if (!r) {
        reg_db_fail(c, "looking up the model");
        return -1;
    }
    int64_t id = PQntuples(r) == 1 ? strtoll(reg_col(r, 0, "id"), NULL, 10) : -1;
    PQclear(r);
    if (id < 0) kn_http_respond_error(c->req, 404, "not_found", "no model named '%s'", name);
    return id;
}

int reg_event(reg_call *c, int64_t model_id, long version, const char *kind, const char *reason,
              json_t *data)
{
    char mid[24], ver[24];
    char *text = data ? json_dumps(data, JSON_COMPACT) : NULL;
    snprintf(mid, sizeof(mid), "%lld", (long long)model_id);
    snprintf(ver, sizeof(ver), "%ld", version);
    const char *params[6] = {mid, version > 0 ? ver : NULL, kind, c->actor, reason ? reason : "",
                             text ? text : "{}"};
    PGresult *r = reg_q(c, PGRES_COMMAND_OK,
                        "INSERT INTO events (model_id, version, kind, actor, reason, data) "
                        "VALUES ($1, $2, $3, $4, $5, $6::jsonb)",
                        6, params);
    free(text);
    if (!r) return -1;
    PQclear(r);
    return 0;
}

/* Resolves {name} and {version} of the path; answers 400 and returns -1 when
 * either is malformed. */
static int path_model(reg_call *c, const char **name)
{
    *name = kn_http_req_param(c->req, "name");
    if (!*name || !reg_valid_name(*name)) {
        kn_http_respond_error(c->req, 400, "bad_name",
                              "model names are 1-128 characters of [A-Za-z0-9._-], starting "
                              "with a letter or digit, without '..'");
        return -1;
    }
    return 0;
}

static int path_version(reg_call *c, long *version, char buf[24])
{
    *version = reg_parse_version(kn_http_req_param(c->req, "version"));
    if (*version < 0) {
        kn_http_respond_error(c->req, 400, "bad_version",
                              "the version must be a positive integer");
        return -1;
    }
    snprintf(buf, 24, "%ld", *version);
    return 0;
}

/* Answers `status` with the version_doc of (model, version), or 404/5xx.
 * 0 when the document was sent. */
static int respond_version(reg_call *c, int status, const char *name, const char *ver)
{
    const char *params[2] = {name, ver};
    PGresult *r = reg_q(c, PGRES_TUPLES_OK,
                        "SELECT version_doc(v, m.name) AS doc FROM models m "
                        "JOIN versions v ON v.model_id = m.id "
                        "WHERE m.name = $1 AND v.version = $2::int",
                        2, params);
    if (!r) {
        reg_db_fail(c, "reading the version");
        return -1;
    }
    int found = PQntuples(r) == 1;
    if (found) respond_doc(c->req, status, r, 0, "doc");
    else kn_http_respond_error(c->req, 404, "not_found", "model '%s' has no version %s", name, ver);
    PQclear(r);
    return found ? 0 : -1;
}

/* --- models --- */

static void h_models_list(kn_http_req *req, void *ctx)
{
    reg_call c;
    if (reg_call_begin(&c, ctx, req, REG_ROLE_READ) != 0) return;
    PGresult *r = NULL;
    const char *after = kn_http_req_query(req, "page_token");
    const char *limit_s = kn_http_req_query(req, "limit");
    long limit = limit_s ? reg_parse_version(limit_s) : 100;
    if (limit < 1 || limit > 1000) {
        kn_http_respond_error(req, 400, "bad_request", "limit must be 1..1000");
        goto out;
    }
    char lim[24];
    snprintf(lim, sizeof(lim), "%ld", limit + 1);
    const char *params[2] = {after ? after : "", lim};
    r = reg_q(&c, PGRES_TUPLES_OK,
              "SELECT name, model_doc(m) AS doc FROM models m WHERE name > $1 "
              "ORDER BY name LIMIT $2::int",
              2, params);
    if (!r) {
        reg_db_fail(&c, "listing models");
        goto out;
    }
    json_t *list = json_array();
    int n = PQntuples(r);
    for (int i = 0; i < n && i < limit; i++) json_array_append_new(list, col_json(r, i, "doc"));
    json_t *res = json_pack("{s:o}", "models", list);
    if (n > limit)
        json_object_set_new(res, "next_page_token", json_string(reg_col(r, (int)limit - 1, "name")));
    kn_http_respond_json(req, 200, res);
out:
    PQclear(r);
    reg_call_end(&c);
}

static void h_models_create(kn_http_req *req, void *ctx)
{
    reg_call c;
    if (reg_call_begin(&c, ctx, req, REG_ROLE_WRITE) != 0) return;
    PGresult *r = NULL;
    json_t *body = kn_http_req_json(req);
    const char *name, *task, *desc;
    if (!body) goto out;
    if (body_str(&c, body, "name", 128, &name) || body_str(&c, body, "task", 256, &task) ||
        body_str(&c, body, "description", 4096, &desc))
        goto out;
    if (!reg_valid_name(name)) {
        kn_http_respond_error(req, 400, "bad_name",
                              "'name' must be 1-128 characters of [A-Za-z0-9._-], starting "
                              "with a letter or digit, without '..'");
        goto out;
    }
    if (reg_exec(&c, "BEGIN") != 0) goto dberr;
    const char *params[4] = {name, task, desc, c.actor};
    r = reg_q(&c, PGRES_TUPLES_OK,
              "INSERT INTO models (name, task, description, created_by) VALUES ($1, $2, $3, $4) "
              "ON CONFLICT (name) DO NOTHING RETURNING id, model_doc(models) AS doc",
              4, params);
    if (!r) goto dberr;
    if (PQntuples(r) == 0) {
        kn_http_respond_error(req, 409, "exists", "a model named '%s' already exists", name);
        goto out;
    }
    if (reg_event(&c, strtoll(reg_col(r, 0, "id"), NULL, 10), 0, "model.created", "", NULL) ||
        reg_exec(&c, "COMMIT"))
        goto dberr;
    kn_http_respond_json(req, 201, col_json(r, 0, "doc"));
    goto out;
dberr:
    reg_db_fail(&c, "creating the model");
out:
    PQclear(r);
    json_decref(body);
    reg_call_end(&c);
}

static void h_model_get(kn_http_req *req, void *ctx)
{
    reg_call c;
    if (reg_call_begin(&c, ctx, req, REG_ROLE_READ) != 0) return;
    PGresult *r = NULL;
    const char *name;
    if (path_model(&c, &name)) goto out;
    const char *params[1] = {name};
    r = reg_q(&c, PGRES_TUPLES_OK, "SELECT model_doc(m) AS doc FROM models m WHERE name = $1", 1,
              params);
    if (!r) reg_db_fail(&c, "reading the model");
    else if (PQntuples(r) == 0)
        kn_http_respond_error(req, 404, "not_found", "no model named '%s'", name);
    else kn_http_respond_json(req, 200, col_json(r, 0, "doc"));
out:
    PQclear(r);
    reg_call_end(&c);
}

static void h_model_patch(kn_http_req *req, void *ctx)
{
    reg_call c;
    if (reg_call_begin(&c, ctx, req, REG_ROLE_WRITE) != 0) return;
    PGresult *r = NULL;
    json_t *body = kn_http_req_json(req);
    const char *name, *task, *desc;
    if (!body || path_model(&c, &name)) goto out;
    if (body_str(&c, body, "task", 256, &task) || body_str(&c, body, "description", 4096, &desc))
        goto out;
    const char *params[5] = {name, task, json_object_get(body, "task") ? "1" : "0", desc,
                             json_object_get(body, "description") ? "1" : "0"};
    r = reg_q(&c, PGRES_TUPLES_OK,
              "UPDATE models SET task = CASE WHEN $3 = '1' THEN $2 ELSE task END, "
              "description = CASE WHEN $5 = '1' THEN $4 ELSE description END "
              "WHERE name = $1 RETURNING model_doc(models) AS doc",
              5, params);
    if (!r) reg_db_fail(&c, "updating the model");
    else if (PQntuples(r) == 0)
        kn_http_respond_error(req, 404, "not_found", "no model named '%s'", name);
    else kn_http_respond_json(req, 200, col_json(r, 0, "doc"));
out:
    PQclear(r);
    json_decref(body);
    reg_call_end(&c);
}

/* --- training leases (issue 18, finding 8) ---
 * Invariants, kept by h_lease_take and lease_check:
 * 10. A model has at most one lease row; its epoch only grows, by one each
 *     time the lease changes hands (a new holder after expiry or release).
 * 11. A version created with X-Kiln-Lease-Epoch: E is created only while the
 *     model's lease has epoch E (the lease row is read under a share lock
 *     inside the creating transaction, so a takeover waits for it or wins
 *     before it). */

/* Inside the caller's transaction: 0 when epoch (text) is the model's lease
 * epoch; otherwise answers 409 fenced (or 400, or the db error), -1. */
static int lease_check(reg_call *c, const char *mid, const char *name, const char *epoch)
{
    char *end = NULL;
    long long e = strtoll(epoch, &end, 10);
    if (!epoch[0] || *end || e < 1) {
        kn_http_respond_error(c->req, 400, "bad_request",
                              "X-Kiln-Lease-Epoch must be a positive integer");
        return -1;
    }
    const char *p[1] = {mid};
    PGresult *r = reg_q(c, PGRES_TUPLES_OK,
                        "SELECT epoch, holder FROM leases WHERE model_id = $1 FOR SHARE", 1, p);
    if (!r) {
        reg_db_fail(c, "checking the lease");
        return -1;
    }
    int ok = PQntuples(r) == 1 && strtoll(reg_col(r, 0, "epoch"), NULL, 10) == e;
    if (!ok) {
        if (PQntuples(r) == 1)
            kn_http_respond_error(c->req, 409, "fenced",
                                  "model '%s' is now trained by '%s' (lease epoch %s, yours %lld):"
                                  " this trainer must stop",
                                  name, reg_col(r, 0, "holder"), reg_col(r, 0, "epoch"), e);
        else
            kn_http_respond_error(c->req, 409, "fenced",
                                  "model '%s' has no training lease (yours: epoch %lld)", name, e);
    }
    PQclear(r);
    return ok ? 0 : -1;
}

/* POST .../lease {"holder": "..", "ttl_s": 60, "epoch": E|null}: takes the
 * model's training lease when it is free, expired or already ours (epoch E),
 * and extends it by ttl_s. 200 {holder, epoch, expires_at, acquired}; 409
 * lease_held (another holder's lease runs) or fenced (E is not current). */
static void h_lease_take(kn_http_req *req, void *ctx)
{
    reg_call c;
    if (reg_call_begin(&c, ctx, req, REG_ROLE_WRITE) != 0) return;
    PGresult *r = NULL;
    json_t *body = kn_http_req_json(req);
    const char *name, *holder;
    if (!body || path_model(&c, &name) || body_str(&c, body, "holder", 200, &holder)) goto out;
    json_t *jt = json_object_get(body, "ttl_s"), *je = json_object_get(body, "epoch");
    if (!holder[0] || !json_is_integer(jt) || json_integer_value(jt) < 1 ||
        json_integer_value(jt) > 86400 ||
        (je && !json_is_null(je) && (!json_is_integer(je) || json_integer_value(je) < 1))) {
        kn_http_respond_error(req, 400, "bad_request",
                              "'holder' (1-200 bytes), 'ttl_s' (1..86400) and 'epoch' (a positive "
                              "integer, or null to take a new lease) are expected");
        goto out;
    }
    char ttl[24], ep[24], mid[24];
    snprintf(ttl, sizeof(ttl), "%lld", (long long)json_integer_value(jt));
    snprintf(ep, sizeof(ep), "%lld",
             je && !json_is_null(je) ? (long long)json_integer_value(je) : 0LL);
    if (reg_exec(&c, "BEGIN")) goto dberr;
    int64_t id = reg_model_id(&c, name);
    if (id < 0) goto out;
    snprintf(mid, sizeof(mid), "%lld", (long long)id);
    const char *p[1] = {mid};
    r = reg_q(&c, PGRES_TUPLES_OK,
              "SELECT holder, epoch, expires_at < now() AS expired, expires_at FROM leases "
              "WHERE model_id = $1 FOR UPDATE",
              1, p);
    if (!r) goto dberr;
    int exists = PQntuples(r) == 1, acquired = 0;
    if (exists) {
        int mine =
            strcmp(reg_col(r, 0, "holder"), holder) == 0 && strcmp(reg_col(r, 0, "epoch"), ep) == 0;
        int expired = strcmp(reg_col(r, 0, "expired"), "t") == 0;
        if (!mine && strcmp(ep, "0") != 0) {
            kn_http_respond_error(req, 409, "fenced",
                                  "model '%s' is now trained by '%s' (lease epoch %s, yours %s)",
                                  name, reg_col(r, 0, "holder"), reg_col(r, 0, "epoch"), ep);
            goto out;
        }
        if (!mine && !expired) {
            kn_http_respond_error(
                req, 409, "lease_held", "model '%s' is trained by '%s' (lease epoch %s, until %s)",
                name, reg_col(r, 0, "holder"), reg_col(r, 0, "epoch"), reg_col(r, 0, "expires_at"));
            goto out;
        }
        acquired = !mine;
    } else if (strcmp(ep, "0") != 0) {
        kn_http_respond_error(req, 409, "fenced", "model '%s' has no lease with epoch %s", name,
                              ep);
        goto out;
    } else {
        acquired = 1;
    }
    PQclear(r);
    const char *pu[4] = {mid, holder, ttl, acquired ? "1" : "0"};
    r = reg_q(&c, PGRES_TUPLES_OK,
              "INSERT INTO leases (model_id, holder, epoch, expires_at) "
              "VALUES ($1, $2, 1, now() + make_interval(secs => $3::int)) "
              "ON CONFLICT (model_id) DO UPDATE SET holder = $2, "
              "epoch = leases.epoch + $4::int, "
              "acquired_at = CASE WHEN $4::int = 1 THEN now() ELSE leases.acquired_at END, "
              "expires_at = now() + make_interval(secs => $3::int) "
              "RETURNING holder, epoch, expires_at",
              4, pu);
    if (!r) goto dberr;
    json_t *res =
        json_pack("{s:s,s:s,s:I,s:s,s:b}", "model", name, "holder", reg_col(r, 0, "holder"),
                  "epoch", (json_int_t)strtoll(reg_col(r, 0, "epoch"), NULL, 10), "expires_at",
                  reg_col(r, 0, "expires_at"), "acquired", acquired);
    if (acquired) {
        json_t *data = json_pack("{s:s,s:I}", "holder", holder, "epoch",
                                 (json_int_t)strtoll(reg_col(r, 0, "epoch"), NULL, 10));
        int erc = reg_event(&c, id, 0, "lease.acquired", "", data);
        json_decref(data);
        if (erc) {
            json_decref(res);
            goto dberr;
        }
    }
    if (reg_exec(&c, "COMMIT")) {
        json_decref(res);
        goto dberr;
    }
    kn_http_respond_json(req, 200, res);
    goto out;
dberr:
    reg_db_fail(&c, "taking the lease");
out:
    PQclear(r);
    json_decref(body);
    reg_call_end(&c);
}

/* DELETE .../lease?holder=H&epoch=E: gives the lease back (it expires now),
 * so the next trainer need not wait for the expiry. 200, or 409 fenced. */
static void h_lease_release(kn_http_req *req, void *ctx)
{
    reg_call c;
    if (reg_call_begin(&c, ctx, req, REG_ROLE_WRITE) != 0) return;
    PGresult *r = NULL;
    const char *name, *holder = kn_http_req_query(req, "holder"),
                      *ep = kn_http_req_query(req, "epoch");
    if (path_model(&c, &name)) goto out;
    if (!holder || !ep || reg_parse_version(ep) < 0) {
        kn_http_respond_error(req, 400, "bad_request", "?holder=H&epoch=E are expected");
        goto out;
    }
    const char *p[3] = {name, holder, ep};
    r = reg_q(&c, PGRES_TUPLES_OK,
              "UPDATE leases l SET expires_at = now() FROM models m WHERE m.id = l.model_id "
              "AND m.name = $1 AND l.holder = $2 AND l.epoch = $3::bigint RETURNING l.epoch",
              3, p);
    if (!r) {
        reg_db_fail(&c, "releasing the lease");
        goto out;
    }
    if (PQntuples(r) != 1)
        kn_http_respond_error(req, 409, "fenced", "'%s' holds no lease of '%s' with epoch %s",
                              holder, name, ep);
    else
        kn_http_respond_json(req, 200, json_pack("{s:s,s:b}", "model", name, "released", 1));
out:
    PQclear(r);
    reg_call_end(&c);
}

/* --- versions --- */

static void h_versions_create(kn_http_req *req, void *ctx)
{
    reg_app *app = ctx;
    reg_call c;
    if (reg_call_begin(&c, app, req, REG_ROLE_WRITE) != 0) return;
    PGresult *r = NULL;
    char *lineage = NULL;
    json_t *body = kn_http_req_json(req);
    const char *name, *desc, *key;
    if (!body || path_model(&c, &name)) goto out;
    if (body_str(&c, body, "description", 4096, &desc) ||
        body_str(&c, body, "idempotency_key", 200, &key))
        goto out;
    const char *lease_epoch = kn_http_req_header(req, "X-Kiln-Lease-Epoch");
    const char *hkey = kn_http_req_header(req, "Idempotency-Key");
    if (hkey) {
        if (strlen(hkey) == 0 || strlen(hkey) > 200 || (key[0] && strcmp(key, hkey) != 0)) {
            kn_http_respond_error(req, 400, "bad_request",
                                  "Idempotency-Key must be 1-200 bytes and match "
                                  "'idempotency_key' when both are given");
            goto out;
        }
        key = hkey;
    }
    json_t *lin = json_object_get(body, "lineage");
    if (lin && !json_is_object(lin)) {
        kn_http_respond_error(req, 400, "bad_request", "'lineage' must be a JSON object");
        goto out;
    }
    json_t *tags = json_object_get(body, "tags");
    if (tags && !json_is_object(tags)) {
        kn_http_respond_error(req, 400, "bad_request", "'tags' must be an object of strings");
        goto out;
    }
    const char *tk;
    json_t *tv;
    json_object_foreach(tags, tk, tv) {
        if (!valid_key(tk) || !json_is_string(tv) || json_string_length(tv) > 1024) {
            kn_http_respond_error(req, 400, "bad_request",
                                  "tag '%.64s': keys are 1-128 of [A-Za-z0-9._-:/], values "
                                  "strings of at most 1024 bytes", tk);
            goto out;
        }
    }
    lineage = lin ? json_dumps(lin, JSON_COMPACT) : strdup("{}");
    if (!lineage) {
        kn_http_respond_error(req, 500, "internal", "out of memory");
        goto out;
    }

    /* The model row lock serializes version allocation: numbers are 1..N
     * without gaps, and a retried key finds the first attempt's version. */
    if (reg_exec(&c, "BEGIN") != 0) goto dberr;
    const char *p1[1] = {name};
    r = reg_q(&c, PGRES_TUPLES_OK,
              "UPDATE models SET next_version = next_version + 1 WHERE name = $1 "
              "RETURNING id, next_version - 1 AS version",
              1, p1);
    if (!r) goto dberr;
    if (PQntuples(r) == 0) {
        kn_http_respond_error(req, 404, "not_found", "no model named '%s'", name);
        goto out;
    }
    char mid[24], ver[24];
    snprintf(mid, sizeof(mid), "%s", reg_col(r, 0, "id"));
    snprintf(ver, sizeof(ver), "%s", reg_col(r, 0, "version"));
    PQclear(r);
    r = NULL;
    if (lease_epoch && lease_check(&c, mid, name, lease_epoch) != 0) goto out;
    if (key[0]) {
        const char *p2[2] = {mid, key};
        r = reg_q(&c, PGRES_TUPLES_OK,
                  "SELECT version FROM versions WHERE model_id = $1 AND idempotency_key = $2", 2,
                  p2);
        if (!r) goto dberr;
        if (PQntuples(r) == 1) { /* a retry: answer what the first attempt made */
            char old[24];
            snprintf(old, sizeof(old), "%s", reg_col(r, 0, "version"));
            if (reg_exec(&c, "ROLLBACK")) goto dberr;
            kn_http_add_header(req, "Idempotent-Replayed", "true");
            respond_version(&c, 200, name, old);
            goto out;
        }
        PQclear(r);
        r = NULL;
    }
    const char *p3[6] = {mid, ver, key[0] ? key : NULL, lineage, desc, c.actor};
    r = reg_q(&c, PGRES_COMMAND_OK,
              "INSERT INTO versions (model_id, version, idempotency_key, lineage, description, "
              "created_by) VALUES ($1, $2::int, $3, $4::jsonb, $5, $6)",
              6, p3);
    if (!r) goto dberr;
    PQclear(r);
    r = NULL;
    json_object_foreach(tags, tk, tv) {
        const char *p4[4] = {mid, ver, tk, json_string_value(tv)};
        r = reg_q(&c, PGRES_COMMAND_OK,
                  "INSERT INTO tags (model_id, version, key, value) VALUES ($1, $2::int, $3, $4)",
                  4, p4);
        if (!r) goto dberr;
        PQclear(r);
        r = NULL;
    }
    json_t *edata = json_pack("{s:s?}", "idempotency_key", key[0] ? key : NULL);
    int erc = reg_event(&c, strtoll(mid, NULL, 10), strtol(ver, NULL, 10), "version.created",
                        desc, edata);
    json_decref(edata);
    if (erc || reg_exec(&c, "COMMIT")) goto dberr;
    kn_metrics_add(app->versions_created, 1);
    char loc[256];
    snprintf(loc, sizeof(loc), "/v1/models/%s/versions/%s", name, ver);
    kn_http_add_header(req, "Location", loc);
    respond_version(&c, 201, name, ver);
    goto out;
dberr:
    reg_db_fail(&c, "creating the version");
out:
    PQclear(r);
    free(lineage);
    json_decref(body);
    reg_call_end(&c);
}

/* Parses "accuracy>=0.9" into name, SQL operator (from a fixed list) and a
 * number; -1 if malformed. */
static int parse_metric_filter(const char *s, char *name, size_t namesz, const char **op,
                               char *num, size_t numsz)
{
    static const char *ops[] = {">=", "<=", "!=", ">", "<", "="};
    const char *p = s;
    while (*p && !strchr("<>=!", *p)) p++;
    size_t n = (size_t)(p - s);
    if (n == 0 || n >= namesz) return -1;
    memcpy(name, s, n);
    name[n] = '\0';
    if (!valid_key(name)) return -1;
    for (size_t i = 0; i < KN_ARRAY_LEN(ops); i++) {
        size_t ol = strlen(ops[i]);
        if (strncmp(p, ops[i], ol) != 0) continue;
        *op = strcmp(ops[i], "!=") == 0 ? "<>" : ops[i];
        const char *v = p + ol;
        char *end;
        double d = strtod(v, &end);
        if (!*v || *end || !isfinite(d) || strlen(v) >= numsz) return -1;
        snprintf(num, numsz, "%s", v);
        return 0;
    }
    return -1;
}

static void h_versions_list(kn_http_req *req, void *ctx)
{
    reg_call c;
    if (reg_call_begin(&c, ctx, req, REG_ROLE_READ) != 0) return;
    PGresult *r = NULL;
    const char *name;
    char sql[2048], frag[256];
    const char *params[12];
    int np = 0;
    char mname[160], mnum[64], lim[24], tagk[160];
    const char *mop = NULL;
    if (path_model(&c, &name)) goto out;
    int64_t mid = reg_model_id(&c, name);
    if (mid < 0) goto out;
    char midbuf[24];
    snprintf(midbuf, sizeof(midbuf), "%lld", (long long)mid);
    params[np++] = name;
    params[np++] = midbuf;

    const char *status = kn_http_req_query(req, "status");
    const char *alias = kn_http_req_query(req, "alias");
    const char *tag = kn_http_req_query(req, "tag");
    const char *metric = kn_http_req_query(req, "metric");
    const char *sort = kn_http_req_query(req, "sort");
    const char *token = kn_http_req_query(req, "page_token");
    const char *limit_s = kn_http_req_query(req, "limit");
    long limit = limit_s ? reg_parse_version(limit_s) : 50;
    if (limit < 1 || limit > 500) {
        kn_http_respond_error(req, 400, "bad_request", "limit must be 1..500");
        goto out;
    }
    /* sort: version | -version (default) | metric:NAME | -metric:NAME */
    int desc = 1, by_metric = 0;
    char sname[160] = "";
    if (sort) {
        const char *s = sort;
        desc = s[0] == '-';
        if (*s == '-' || *s == '+') s++;
        if (strncmp(s, "metric:", 7) == 0 && valid_key(s + 7) && strlen(s + 7) < sizeof(sname)) {
            by_metric = 1;
            snprintf(sname, sizeof(sname), "%s", s + 7);
        } else if (strcmp(s, "version") != 0 && strcmp(s, "created") != 0) {
            kn_http_respond_error(req, 400, "bad_request",
                                  "sort must be version, -version, metric:NAME or -metric:NAME");
            goto out;
        }
    }
    snprintf(sql, sizeof(sql), "SELECT version_doc(v, $1) AS doc, v.version AS version%s "
             "FROM versions v WHERE v.model_id = $2::bigint",
             by_metric ? ", latest_metrics(v.model_id, v.version) ->> $3 AS sortkey" : "");
    if (by_metric) {
        params[np++] = sname;
        strcat(sql, " AND latest_metrics(v.model_id, v.version) ? $3");
    }
    if (status) {
        if (strcmp(status, "registered") && strcmp(status, "evaluated") &&
            strcmp(status, "promoted") && strcmp(status, "rejected") &&
            strcmp(status, "archived")) {
            kn_http_respond_error(req, 400, "bad_request",
                                  "status must be registered, evaluated, promoted, rejected or "
                                  "archived");
            goto out;
        }
        params[np++] = status;
        snprintf(frag, sizeof(frag), " AND v.status = $%d", np);
        strcat(sql, frag);
    }
    if (alias) {
        if (!reg_valid_alias(alias)) {
            kn_http_respond_error(req, 400, "bad_alias", "bad alias name in the filter");
            goto out;
        }
        params[np++] = alias;
        snprintf(frag, sizeof(frag),
                 " AND EXISTS (SELECT 1 FROM aliases a WHERE a.model_id = v.model_id AND "
                 "a.version = v.version AND a.alias = $%d)", np);
        strcat(sql, frag);
    }
    if (tag) { /* key or key:value */
        const char *colon = strchr(tag, '=');
        size_t kl = colon ? (size_t)(colon - tag) : strlen(tag);
        if (kl == 0 || kl >= sizeof(tagk)) {
            kn_http_respond_error(req, 400, "bad_request", "tag filter: KEY or KEY=VALUE");
            goto out;
        }
        memcpy(tagk, tag, kl);
        tagk[kl] = '\0';
        params[np++] = tagk;
        snprintf(frag, sizeof(frag),
                 " AND EXISTS (SELECT 1 FROM tags t WHERE t.model_id = v.model_id AND "
                 "t.version = v.version AND t.key = $%d", np);
        strcat(sql, frag);
        if (colon) {
            params[np++] = colon + 1;
            snprintf(frag, sizeof(frag), " AND t.value = $%d", np);
            strcat(sql, frag);
        }
        strcat(sql, ")");
    }
    if (metric) {
        if (parse_metric_filter(metric, mname, sizeof(mname), &mop, mnum, sizeof(mnum))) {
            kn_http_respond_error(req, 400, "bad_request",
                                  "metric filter: NAME>=NUMBER (operators >= <= > < = !=)");
            goto out;
        }
        params[np++] = mname;
        params[np++] = mnum;
        snprintf(frag, sizeof(frag),
                 " AND (latest_metrics(v.model_id, v.version) ->> $%d)::float8 %s $%d::float8",
                 np - 1, mop, np);
        strcat(sql, frag);
    }
    char tokv[64] = "", tokk[64] = "";
    if (token) { /* "v<version>" or "m<value>/<version>": keyset, not offset */
        char *end;
        if (!by_metric && token[0] == 'v' && reg_parse_version(token + 1) > 0) {
            snprintf(tokv, sizeof(tokv), "%s", token + 1);
            params[np++] = tokv;
            snprintf(frag, sizeof(frag), " AND v.version %s $%d::int", desc ? "<" : ">", np);
            strcat(sql, frag);
        } else if (by_metric && token[0] == 'm' && strchr(token, '/') &&
                   (strtod(token + 1, &end), end == strchr(token, '/')) &&
                   reg_parse_version(end + 1) > 0 && (size_t)(end - token) < sizeof(tokk)) {
            snprintf(tokk, sizeof(tokk), "%.*s", (int)(end - token - 1), token + 1);
            snprintf(tokv, sizeof(tokv), "%s", end + 1);
            params[np++] = tokk;
            params[np++] = tokv;
            snprintf(frag, sizeof(frag),
                     " AND ((latest_metrics(v.model_id, v.version) ->> $3)::float8, v.version) "
                     "%s ($%d::float8, $%d::int)", desc ? "<" : ">", np - 1, np);
            strcat(sql, frag);
        } else {
            kn_http_respond_error(req, 400, "bad_request", "page_token is not one this list gave");
            goto out;
        }
    }
    if (by_metric)
        snprintf(frag, sizeof(frag), " ORDER BY (latest_metrics(v.model_id, v.version) ->> $3)"
                 "::float8 %s, v.version %s", desc ? "DESC" : "ASC", desc ? "DESC" : "ASC");
    else snprintf(frag, sizeof(frag), " ORDER BY v.version %s", desc ? "DESC" : "ASC");
    strcat(sql, frag);
    snprintf(lim, sizeof(lim), "%ld", limit + 1);
    params[np++] = lim;
    snprintf(frag, sizeof(frag), " LIMIT $%d::int", np);
    strcat(sql, frag);

    r = reg_q(&c, PGRES_TUPLES_OK, sql, np, params);
    if (!r) {
        reg_db_fail(&c, "listing versions");
        goto out;
    }
    int n = PQntuples(r);
    json_t *res = json_pack("{s:s}", "model", name);
    if (n > limit) {
        char next[160];
        int last = (int)limit - 1;
        if (by_metric)
            snprintf(next, sizeof(next), "m%s/%s", reg_col(r, last, "sortkey"),
                     reg_col(r, last, "version"));
        else snprintf(next, sizeof(next), "v%s", reg_col(r, last, "version"));
        json_object_set_new(res, "next_page_token", json_string(next));
    }
    respond_docs(req, res, "versions", r, n > limit ? (int)limit : n, "doc");
out:
    PQclear(r);
    reg_call_end(&c);
}

static void h_version_get(kn_http_req *req, void *ctx)
{
    reg_call c;
    if (reg_call_begin(&c, ctx, req, REG_ROLE_READ) != 0) return;
    const char *name;
    long v;
    char ver[24];
    if (path_model(&c, &name) || path_version(&c, &v, ver)) goto out;
    respond_version(&c, 200, name, ver);
out:
    reg_call_end(&c);
}

/* Locks the version row inside the caller's transaction; fills model id and
 * status. Returns 0, or -1 after answering (404 / db error). */
static int lock_version(reg_call *c, const char *name, const char *ver, char mid[24],
                        char status[16])
{
    const char *params[2] = {name, ver};
    PGresult *r = reg_q(c, PGRES_TUPLES_OK,
                        "SELECT v.model_id, v.status FROM versions v JOIN models m "
                        "ON m.id = v.model_id WHERE m.name = $1 AND v.version = $2::int "
                        "FOR UPDATE OF v",
                        2, params);
    if (!r) {
        reg_db_fail(c, "locking the version");
        return -1;
    }
    int found = PQntuples(r) == 1;
    if (found) {
        snprintf(mid, 24, "%s", reg_col(r, 0, "model_id"));
        snprintf(status, 16, "%s", reg_col(r, 0, "status"));
    }
    PQclear(r);
    if (!found)
        kn_http_respond_error(c->req, 404, "not_found", "model '%s' has no version %s", name, ver);
    return found ? 0 : -1;
}

/* POST .../status {"status": "evaluated"|"archived", "reason": "..."} */
static void h_version_status(kn_http_req *req, void *ctx)
{
    reg_call c;
    if (reg_call_begin(&c, ctx, req, REG_ROLE_WRITE) != 0) return;
    PGresult *r = NULL;
    json_t *body = kn_http_req_json(req);
    const char *name, *to, *reason;
    long v;
    char ver[24], mid[24], from[16];
    if (!body || path_model(&c, &name) || path_version(&c, &v, ver)) goto out;
    if (body_str(&c, body, "status", 16, &to) || body_str(&c, body, "reason", 4096, &reason))
        goto out;
    if (strcmp(to, "evaluated") != 0 && strcmp(to, "archived") != 0) {
        kn_http_respond_error(req, 400, "bad_request",
                              "'status' must be evaluated or archived (promote by moving the "
                              "alias, reject with POST .../reject)");
        goto out;
    }
    if (reg_exec(&c, "BEGIN")) goto dberr;
    if (lock_version(&c, name, ver, mid, from)) goto out;
    if (!status_transition_ok(from, to)) {
        kn_http_respond_error(req, 409, "invalid_state", "version %s is %s: cannot become %s", ver,
                              from, to);
        goto out;
    }
    if (strcmp(to, "archived") == 0) {
        const char *p[2] = {mid, ver};
        r = reg_q(&c, PGRES_TUPLES_OK,
                  "SELECT alias FROM aliases WHERE model_id = $1 AND version = $2::int", 2, p);
        if (!r) goto dberr;
        if (PQntuples(r) > 0) {
            kn_http_respond_error(req, 409, "invalid_state",
                                  "version %s is still the target of alias '%s'", ver,
                                  reg_col(r, 0, "alias"));
            goto out;
        }
        PQclear(r);
        r = NULL;
    }
    const char *p2[4] = {mid, ver, to, reason};
    r = reg_q(&c, PGRES_COMMAND_OK,
              "UPDATE versions SET status = $3, status_reason = $4 "
              "WHERE model_id = $1 AND version = $2::int",
              4, p2);
    if (!r) goto dberr;
    json_t *data = json_pack("{s:s,s:s}", "from", from, "to", to);
    char kind[32];
    snprintf(kind, sizeof(kind), "version.%s", to);
    int erc = reg_event(&c, strtoll(mid, NULL, 10), v, kind, reason, data);
    json_decref(data);
    if (erc || reg_exec(&c, "COMMIT")) goto dberr;
    respond_version(&c, 200, name, ver);
    goto out;
dberr:
    reg_db_fail(&c, "changing the status");
out:
    PQclear(r);
    json_decref(body);
    reg_call_end(&c);
}

/* POST .../reject {"reason": "...", "metrics": {name: value}} */
static void h_version_reject(kn_http_req *req, void *ctx)
{
    reg_app *app = ctx;
    reg_call c;
    if (reg_call_begin(&c, app, req, REG_ROLE_WRITE) != 0) return;
    PGresult *r = NULL;
    char *extra = NULL;
    json_t *body = kn_http_req_json(req);
    const char *name, *reason;
    long v;
    char ver[24], mid[24], from[16];
    if (!body || path_model(&c, &name) || path_version(&c, &v, ver)) goto out;
    if (body_str(&c, body, "reason", 4096, &reason)) goto out;
    if (!reason[0]) {
        kn_http_respond_error(req, 400, "bad_request", "a rejection needs a 'reason'");
        goto out;
    }
    json_t *m = json_object_get(body, "metrics");
    if (m && !json_is_object(m)) {
        kn_http_respond_error(req, 400, "bad_request", "'metrics' must be an object");
        goto out;
    }
    extra = m ? json_dumps(m, JSON_COMPACT) : NULL;
    if (reg_exec(&c, "BEGIN")) goto dberr;
    if (lock_version(&c, name, ver, mid, from)) goto out;
    if (!status_transition_ok(from, "rejected")) {
        kn_http_respond_error(req, 409, "invalid_state", "version %s is %s: cannot be rejected",
                              ver, from);
        goto out;
    }
    const char *p[6] = {mid, ver, reason, extra ? extra : "{}", c.actor, from};
    r = reg_q(&c, PGRES_COMMAND_OK,
              "WITH upd AS (UPDATE versions SET status = 'rejected', status_reason = $3 "
              "WHERE model_id = $1 AND version = $2::int RETURNING model_id, version) "
              "INSERT INTO events (model_id, version, kind, actor, reason, data) "
              "SELECT model_id, version, 'version.rejected', $5, $3, jsonb_build_object("
              "'from', $6::text, 'metrics', latest_metrics(model_id, version) || "
              "(SELECT coalesce(jsonb_object_agg(key, to_jsonb((value #>> '{}')::float8)), '{}') "
              "FROM jsonb_each($4::jsonb))) "
              "FROM upd",
              6, p);
    if (!r) goto dberr;
    PQclear(r);
    r = NULL;
    if (reg_exec(&c, "COMMIT")) goto dberr;
    kn_metrics_add(app->rejections, 1);
    respond_version(&c, 200, name, ver);
    goto out;
dberr:
    reg_db_fail(&c, "rejecting the version");
out:
    PQclear(r);
    free(extra);
    json_decref(body);
    reg_call_end(&c);
}

/* --- metrics and tags --- */

static void h_metrics_get(kn_http_req *req, void *ctx)
{
    reg_call c;
    if (reg_call_begin(&c, ctx, req, REG_ROLE_READ) != 0) return;
    PGresult *r = NULL;
    const char *name;
    long v;
    char ver[24];
    if (path_model(&c, &name) || path_version(&c, &v, ver)) goto out;
    const char *p[2] = {name, ver};
    r = reg_q(&c, PGRES_TUPLES_OK,
              "SELECT jsonb_build_object('model', m.name, 'version', v.version, 'metrics', "
              "(SELECT coalesce(jsonb_agg(jsonb_build_object('name', x.name, 'value', x.value, "
              "'dataset', x.dataset, 'step', x.step, 'recorded_at', x.recorded_at) "
              "ORDER BY x.id), '[]') FROM metrics x "
              "WHERE x.model_id = v.model_id AND x.version = v.version)) AS doc "
              "FROM models m JOIN versions v ON v.model_id = m.id "
              "WHERE m.name = $1 AND v.version = $2::int",
              2, p);
    if (!r) {
        reg_db_fail(&c, "reading metrics");
        goto out;
    }
    if (PQntuples(r) == 1) respond_doc(req, 200, r, 0, "doc");
    else kn_http_respond_error(req, 404, "not_found", "model '%s' has no version %s", name, ver);
out:
    PQclear(r);
    reg_call_end(&c);
}

/* POST .../metrics {"metrics": [{"name","value","dataset","step"}...]} or one
 * such object as the body. */
static void h_metrics_post(kn_http_req *req, void *ctx)
{
    reg_call c;
    if (reg_call_begin(&c, ctx, req, REG_ROLE_WRITE) != 0) return;
    PGresult *r = NULL;
    json_t *body = kn_http_req_json(req);
    json_t *list = NULL;
    const char *name;
    long v;
    char ver[24], mid[24], status[16];
    if (!body || path_model(&c, &name) || path_version(&c, &v, ver)) goto out;
    list = json_object_get(body, "metrics");
    if (list) json_incref(list);
    else list = json_pack("[O]", body);
    if (!json_is_array(list) || json_array_size(list) == 0 || json_array_size(list) > 1000) {
        kn_http_respond_error(req, 400, "bad_request",
                              "'metrics' must be an array of 1..1000 {name, value, dataset, step}");
        goto out;
    }
    size_t i;
    json_t *m;
    json_array_foreach(list, i, m) {
        json_t *jn = json_object_get(m, "name"), *jv = json_object_get(m, "value");
        json_t *jd = json_object_get(m, "dataset"), *js = json_object_get(m, "step");
        if (!json_is_object(m) || !json_is_string(jn) || !valid_key(json_string_value(jn)) ||
            !json_is_number(jv) || !isfinite(json_number_value(jv)) ||
            (jd && !json_is_null(jd) && (!json_is_string(jd) || json_string_length(jd) > 256)) ||
            (js && !json_is_null(js) && !json_is_integer(js))) {
            kn_http_respond_error(req, 400, "bad_request",
                                  "metric %zu: needs 'name' (1-128 of [A-Za-z0-9._-:/]), a "
                                  "finite number 'value', optional string 'dataset' and integer "
                                  "'step'", i);
            goto out;
        }
    }
    if (reg_exec(&c, "BEGIN")) goto dberr;
    if (lock_version(&c, name, ver, mid, status)) goto out;
    if (strcmp(status, "archived") == 0) {
        kn_http_respond_error(req, 409, "invalid_state", "version %s is archived", ver);
        goto out;
    }
    json_array_foreach(list, i, m) {
        char val[64], step[32];
        snprintf(val, sizeof(val), "%.17g", json_number_value(json_object_get(m, "value")));
        json_t *js = json_object_get(m, "step");
        snprintf(step, sizeof(step), "%lld", (long long)json_integer_value(js));
        json_t *jd = json_object_get(m, "dataset");
        const char *p[6] = {mid, ver, json_string_value(json_object_get(m, "name")), val,
                            json_is_string(jd) ? json_string_value(jd) : "",
                            json_is_integer(js) ? step : NULL};
        r = reg_q(&c, PGRES_COMMAND_OK,
                  "INSERT INTO metrics (model_id, version, name, value, dataset, step) "
                  "VALUES ($1, $2::int, $3, $4::float8, $5, $6::bigint)",
                  6, p);
        if (!r) goto dberr;
        PQclear(r);
        r = NULL;
    }
    if (reg_exec(&c, "COMMIT")) goto dberr;
    respond_version(&c, 201, name, ver);
    goto out;
dberr:
    reg_db_fail(&c, "recording metrics");
out:
    PQclear(r);
    json_decref(list);
    json_decref(body);
    reg_call_end(&c);
}

/* POST .../tags {"tags": {key: value}}: sets (or replaces) those tags. */
static void h_tags_post(kn_http_req *req, void *ctx)
{
    reg_call c;
    if (reg_call_begin(&c, ctx, req, REG_ROLE_WRITE) != 0) return;
    PGresult *r = NULL;
    json_t *body = kn_http_req_json(req);
    const char *name, *k;
    json_t *tv;
    long v;
    char ver[24], mid[24], status[16];
    if (!body || path_model(&c, &name) || path_version(&c, &v, ver)) goto out;
    json_t *tags = json_object_get(body, "tags");
    if (!json_is_object(tags)) {
        kn_http_respond_error(req, 400, "bad_request", "'tags' must be an object of strings");
        goto out;
    }
    json_object_foreach(tags, k, tv) {
        if (!valid_key(k) || !json_is_string(tv) || json_string_length(tv) > 1024) {
            kn_http_respond_error(req, 400, "bad_request", "tag '%.64s' is malformed", k);
            goto out;
        }
    }
    if (reg_exec(&c, "BEGIN")) goto dberr;
    if (lock_version(&c, name, ver, mid, status)) goto out;
    json_object_foreach(tags, k, tv) {
        const char *p[4] = {mid, ver, k, json_string_value(tv)};
        r = reg_q(&c, PGRES_COMMAND_OK,
                  "INSERT INTO tags (model_id, version, key, value) VALUES ($1, $2::int, $3, $4) "
                  "ON CONFLICT (model_id, version, key) DO UPDATE SET value = EXCLUDED.value",
                  4, p);
        if (!r) goto dberr;
        PQclear(r);
        r = NULL;
    }
    if (reg_event(&c, strtoll(mid, NULL, 10), v, "version.tagged", "", tags) ||
        reg_exec(&c, "COMMIT"))
        goto dberr;
    respond_version(&c, 200, name, ver);
    goto out;
dberr:
    reg_db_fail(&c, "setting tags");
out:
    PQclear(r);
    json_decref(body);
    reg_call_end(&c);
}

/* --- aliases --- */

static unsigned alias_role(reg_app *app, const char *alias)
{
    return alias && strcmp(alias, app->promotion_alias) == 0 ? REG_ROLE_PROMOTE : REG_ROLE_WRITE;
}

static int path_alias(reg_call *c, const char **alias)
{
    *alias = kn_http_req_param(c->req, "alias");
    if (!*alias || !reg_valid_alias(*alias)) {
        kn_http_respond_error(c->req, 400, "bad_alias",
                              "alias names are 1-64 characters of [a-z0-9_-], starting with a "
                              "letter");
        return -1;
    }
    return 0;
}

static void h_aliases_list(kn_http_req *req, void *ctx)
{
    reg_call c;
    if (reg_call_begin(&c, ctx, req, REG_ROLE_READ) != 0) return;
    PGresult *r = NULL;
    const char *name;
    if (path_model(&c, &name)) goto out;
    int64_t mid = reg_model_id(&c, name);
    if (mid < 0) goto out;
    char midbuf[24];
    snprintf(midbuf, sizeof(midbuf), "%lld", (long long)mid);
    const char *p[1] = {midbuf};
    r = reg_q(&c, PGRES_TUPLES_OK,
              "SELECT coalesce(jsonb_agg(jsonb_build_object('alias', alias, 'version', version, "
              "'updated_at', updated_at, 'updated_by', updated_by) ORDER BY alias), '[]') AS doc "
              "FROM aliases WHERE model_id = $1",
              1, p);
    if (!r) reg_db_fail(&c, "listing aliases");
    else kn_http_respond_json(req, 200, json_pack("{s:s,s:o}", "model", name, "aliases",
                                                  col_json(r, 0, "doc")));
out:
    PQclear(r);
    reg_call_end(&c);
}

/* "What do I deploy": one query, the alias with its version's document. */
static void h_alias_get(kn_http_req *req, void *ctx)
{
    reg_app *app = ctx;
    reg_call c;
    /* from memory when no token is to be checked (cache.c); gen before the
     * query, so an answer read before a change is not kept after it */
    const char *kname = kn_http_req_param(req, "name"), *kalias = kn_http_req_param(req, "alias");
    char key[600] = "";
    uint64_t gen = 0;
    if (app->cache && !app->read_requires_token && !kn_http_req_header(req, "Authorization") &&
        kname && kalias && strlen(kname) + strlen(kalias) < 256) {
        snprintf(key, sizeof(key), "alias\n%s\n%s", kname, kalias);
        gen = reg_cache_gen(app->cache);
        size_t len = 0;
        char *text = gen ? reg_cache_get(app->cache, key, &len) : NULL;
        if (text) {
            kn_http_respond(req, 200, "application/json", text, len);
            free(text);
            return;
        }
    }
    if (reg_call_begin(&c, ctx, req, REG_ROLE_READ) != 0) return;
    PGresult *r = NULL;
    const char *name, *alias;
    if (path_model(&c, &name) || path_alias(&c, &alias)) goto out;
    const char *p[2] = {name, alias};
    r = reg_q(&c, PGRES_TUPLES_OK,
              "SELECT version_doc(v, m.name) || jsonb_build_object('alias', a.alias, "
              "'alias_updated_at', a.updated_at, 'alias_updated_by', a.updated_by, "
              "'download_url', CASE WHEN v.artifact_sha256 IS NULL THEN NULL ELSE "
              "'/v1/models/' || m.name || '/versions/' || v.version || '/artifact' END) AS doc "
              "FROM models m JOIN aliases a ON a.model_id = m.id "
              "JOIN versions v ON v.model_id = a.model_id AND v.version = a.version "
              "WHERE m.name = $1 AND a.alias = $2",
              2, p);
    if (!r) {
        reg_db_fail(&c, "reading the alias");
        goto out;
    }
    if (PQntuples(r) == 1) {
        respond_doc(req, 200, r, 0, "doc");
        if (key[0]) reg_cache_put(app->cache, key, reg_col(r, 0, "doc"), gen);
    } else if (reg_model_id(&c, name) >= 0) {
        kn_http_respond_error(req, 404, "not_found", "model '%s' has no alias '%s'", name, alias);
    }
out:
    PQclear(r);
    reg_call_end(&c);
}

/* Reads the alias under a row lock inside the caller's transaction: *cur is
 * its version, or 0 when it does not exist. 0 or -1 (db error, not answered). */
static int lock_alias(reg_call *c, const char *mid, const char *alias, long *cur)
{
    const char *p[2] = {mid, alias};
    PGresult *r = reg_q(c, PGRES_TUPLES_OK,
                        "SELECT version FROM aliases WHERE model_id = $1 AND alias = $2 "
                        "FOR UPDATE",
                        2, p);
    if (!r) return -1;
    *cur = PQntuples(r) == 1 ? strtol(reg_col(r, 0, "version"), NULL, 10) : 0;
    PQclear(r);
    return 0;
}

/* Moves (or creates) alias → version in the caller's transaction, promotes
 * the version when it is the promotion alias, and appends the event with the
 * metrics snapshot. cur = 0: the alias does not exist yet. */
static int move_alias(reg_call *c, const char *mid, const char *alias, long cur, long to,
                      const char *kind, const char *reason)
{
    char curs[24], tos[24];
    snprintf(curs, sizeof(curs), "%ld", cur);
    snprintf(tos, sizeof(tos), "%ld", to);
    const char *p[6] = {mid, alias, tos, c->actor, cur ? curs : NULL, reason};
    PGresult *r = reg_q(c, PGRES_COMMAND_OK,
                        cur ? "UPDATE aliases SET version = $3::int, updated_at = now(), "
                              "updated_by = $4 WHERE model_id = $1 AND alias = $2"
                            : "INSERT INTO aliases (model_id, alias, version, updated_by) "
                              "VALUES ($1, $2, $3::int, $4)",
                        4, p);
    if (!r) return -1;
    PQclear(r);
    if (strcmp(alias, c->app->promotion_alias) == 0 && strcmp(kind, "version.rolled_back") != 0) {
        const char *pp[2] = {mid, tos};
        r = reg_q(c, PGRES_COMMAND_OK,
                  "UPDATE versions SET status = 'promoted' WHERE model_id = $1 "
                  "AND version = $2::int AND status IN ('registered', 'evaluated')",
                  2, pp);
        if (!r) return -1;
        PQclear(r);
    }
    r = reg_q(c, PGRES_COMMAND_OK,
              "INSERT INTO events (model_id, version, kind, actor, reason, data) "
              "VALUES ($1, $3::int, $7, $4, $6, jsonb_build_object('alias', $2::text, "
              "'from', $5::int, 'to', $3::int, 'metrics', latest_metrics($1, $3::int)))",
              7, (const char *const[]){p[0], p[1], p[2], p[3], p[4], p[5], kind});
    if (!r) return -1;
    PQclear(r);
    return 0;
}

/* PUT .../aliases/{alias} {"version": N, "expected_version": M|null, "reason": ".."} */
static void h_alias_put(kn_http_req *req, void *ctx)
{
    reg_app *app = ctx;
    reg_call c;
    if (reg_call_begin(&c, app, req, alias_role(app, kn_http_req_param(req, "alias"))) != 0)
        return;
    json_t *body = kn_http_req_json(req);
    const char *name, *alias, *reason;
    char mid[24], status[16], ver[24];
    long cur = 0;
    if (!body || path_model(&c, &name) || path_alias(&c, &alias)) goto out;
    if (body_str(&c, body, "reason", 4096, &reason)) goto out;
    json_t *jv = json_object_get(body, "version");
    json_t *je = json_object_get(body, "expected_version");
    if (!json_is_integer(jv) || json_integer_value(jv) < 1 ||
        json_integer_value(jv) > 2147483647 ||
        (je && !json_is_null(je) && (!json_is_integer(je) || json_integer_value(je) < 1))) {
        kn_http_respond_error(req, 400, "bad_request",
                              "'version' must be a positive integer; 'expected_version' a "
                              "positive integer or null (alias must not exist yet)");
        goto out;
    }
    long to = (long)json_integer_value(jv);
    snprintf(ver, sizeof(ver), "%ld", to);
    /* Lock order everywhere: alias row, then version row. */
    if (reg_exec(&c, "BEGIN")) goto dberr;
    int64_t id = reg_model_id(&c, name);
    if (id < 0) goto out;
    snprintf(mid, sizeof(mid), "%lld", (long long)id);
    if (lock_alias(&c, mid, alias, &cur)) goto dberr;
    if (lock_version(&c, name, ver, mid, status)) goto out;
    if (je) {
        long want = json_is_null(je) ? 0 : (long)json_integer_value(je);
        if (want != cur) {
            kn_metrics_add(app->alias_conflicts, 1);
            if (cur)
                kn_http_respond_error(req, 409, "conflict",
                                      "alias '%s' points to version %ld, not %ld", alias, cur,
                                      want);
            else
                kn_http_respond_error(req, 409, "conflict",
                                      "alias '%s' does not exist (expected version %ld)", alias,
                                      want);
            goto out;
        }
    }
    if (cur == to) { /* already there: nothing changes, no event */
        if (reg_exec(&c, "COMMIT")) goto dberr;
        kn_http_respond_json(req, 200, json_pack("{s:s,s:s,s:I,s:I,s:b}", "model", name, "alias",
                                                 alias, "version", (json_int_t)to,
                                                 "previous_version", (json_int_t)cur, "changed", 0));
        goto out;
    }
    if (!aliasable_status(status)) {
        kn_http_respond_error(req, 409, "invalid_state",
                              "version %ld is %s: an alias cannot point at it", to, status);
        goto out;
    }
    int promo = strcmp(alias, app->promotion_alias) == 0;
    if (move_alias(&c, mid, alias, cur, to, promo ? "version.promoted" : "alias.moved", reason) ||
        reg_exec(&c, "COMMIT"))
        goto dberr;
    if (promo) kn_metrics_add(app->promotions, 1);
    json_t *res = json_pack("{s:s,s:s,s:I,s:b}", "model", name, "alias", alias, "version",
                            (json_int_t)to, "changed", 1);
    json_object_set_new(res, "previous_version", cur ? json_integer(cur) : json_null());
    kn_http_respond_json(req, 200, res);
    goto out;
dberr:
    if (strcmp(c.sqlstate, "23505") == 0) { /* two creators of a new alias: one won */
        kn_metrics_add(app->alias_conflicts, 1);
        kn_http_respond_error(req, 409, "conflict", "alias '%s' was created concurrently", alias);
    } else {
        reg_db_fail(&c, "moving the alias");
    }
out:
    json_decref(body);
    reg_call_end(&c);
}

/* DELETE .../aliases/{alias}[?expected_version=N] */
static void h_alias_delete(kn_http_req *req, void *ctx)
{
    reg_app *app = ctx;
    reg_call c;
    if (reg_call_begin(&c, app, req, alias_role(app, kn_http_req_param(req, "alias"))) != 0)
        return;
    PGresult *r = NULL;
    const char *name, *alias;
    long cur = 0;
    if (path_model(&c, &name) || path_alias(&c, &alias)) goto out;
    const char *exp = kn_http_req_query(req, "expected_version");
    long want = exp ? reg_parse_version(exp) : 0;
    if (want < 0) {
        kn_http_respond_error(req, 400, "bad_request", "expected_version must be a version");
        goto out;
    }
    if (reg_exec(&c, "BEGIN")) goto dberr;
    int64_t id = reg_model_id(&c, name);
    if (id < 0) goto out;
    char mid[24];
    snprintf(mid, sizeof(mid), "%lld", (long long)id);
    if (lock_alias(&c, mid, alias, &cur)) goto dberr;
    if (!cur) {
        kn_http_respond_error(req, 404, "not_found", "model '%s' has no alias '%s'", name, alias);
        goto out;
    }
    if (want && want != cur) {
        kn_http_respond_error(req, 409, "conflict", "alias '%s' points to version %ld, not %ld",
                              alias, cur, want);
        goto out;
    }
    const char *p[2] = {mid, alias};
    r = reg_q(&c, PGRES_COMMAND_OK, "DELETE FROM aliases WHERE model_id = $1 AND alias = $2", 2, p);
    if (!r) goto dberr;
    json_t *data = json_pack("{s:s,s:I,s:n}", "alias", alias, "from", (json_int_t)cur, "to");
    int erc = reg_event(&c, id, cur, "alias.deleted", kn_http_req_query(req, "reason"), data);
    json_decref(data);
    if (erc || reg_exec(&c, "COMMIT")) goto dberr;
    kn_http_respond_json(req, 200, json_pack("{s:s,s:s,s:I,s:b}", "model", name, "alias", alias,
                                             "previous_version", (json_int_t)cur, "deleted", 1));
    goto out;
dberr:
    reg_db_fail(&c, "deleting the alias");
out:
    PQclear(r);
    reg_call_end(&c);
}

/* POST .../aliases/{alias}/rollback {"reason": ".."}: invariant 9. */
static void h_alias_rollback(kn_http_req *req, void *ctx)
{
    reg_app *app = ctx;
    reg_call c;
    if (reg_call_begin(&c, app, req, alias_role(app, kn_http_req_param(req, "alias"))) != 0)
        return;
    PGresult *r = NULL;
    json_t *body = NULL;
    const char *name, *alias, *reason = "";
    long cur = 0;
    size_t blen = 0;
    if (path_model(&c, &name) || path_alias(&c, &alias)) goto out;
    if (kn_http_req_body(req, &blen) && blen > 0) {
        if (!(body = kn_http_req_json(req))) goto out;
        if (body_str(&c, body, "reason", 4096, &reason)) goto out;
    }
    if (reg_exec(&c, "BEGIN")) goto dberr;
    int64_t id = reg_model_id(&c, name);
    if (id < 0) goto out;
    char mid[24], curs[24];
    snprintf(mid, sizeof(mid), "%lld", (long long)id);
    if (lock_alias(&c, mid, alias, &cur)) goto dberr;
    if (!cur) {
        kn_http_respond_error(req, 404, "not_found", "model '%s' has no alias '%s'", name, alias);
        goto out;
    }
    snprintf(curs, sizeof(curs), "%ld", cur);
    const char *p[3] = {mid, alias, curs};
    r = reg_q(&c, PGRES_TUPLES_OK,
              "SELECT e.data ->> 'from' AS prev FROM events e "
              "WHERE e.model_id = $1 AND e.kind IN ('version.promoted', 'alias.moved') "
              "AND e.data ->> 'alias' = $2 AND (e.data ->> 'to')::int = $3::int "
              "ORDER BY e.id DESC LIMIT 1",
              3, p);
    if (!r) goto dberr;
    long prev = PQntuples(r) == 1 && !reg_col_null(r, 0, "prev")
                    ? strtol(reg_col(r, 0, "prev"), NULL, 10)
                    : 0;
    PQclear(r);
    r = NULL;
    if (!prev) {
        kn_http_respond_error(req, 409, "no_previous",
                              "alias '%s' has no earlier version to roll back to", alias);
        goto out;
    }
    /* The target's status is read under its row lock, taken after the alias
     * lock as in h_alias_put: an archive of it either commits first (we see
     * `archived` here) or waits for us and then finds the alias on it. */
    char prevs[24], status[16];
    snprintf(prevs, sizeof(prevs), "%ld", prev);
    if (lock_version(&c, name, prevs, mid, status)) goto out;
    if (!aliasable_status(status)) {
        kn_http_respond_error(req, 409, "invalid_state",
                              "the previous version %ld is %s: cannot roll back to it", prev,
                              status);
        goto out;
    }
    if (move_alias(&c, mid, alias, cur, prev, "version.rolled_back", reason) ||
        reg_exec(&c, "COMMIT"))
        goto dberr;
    kn_metrics_add(app->rollbacks, 1);
    kn_http_respond_json(req, 200, json_pack("{s:s,s:s,s:I,s:I,s:b}", "model", name, "alias",
                                             alias, "version", (json_int_t)prev,
                                             "previous_version", (json_int_t)cur, "changed", 1));
    goto out;
dberr:
    reg_db_fail(&c, "rolling back the alias");
out:
    PQclear(r);
    json_decref(body);
    reg_call_end(&c);
}

/* --- events --- */

/* GET .../events?since=ID&limit=N&kind=K: oldest first, after `since`. */
static void h_events(kn_http_req *req, void *ctx)
{
    reg_call c;
    if (reg_call_begin(&c, ctx, req, REG_ROLE_READ) != 0) return;
    PGresult *r = NULL;
    const char *name;
    if (path_model(&c, &name)) goto out;
    const char *since = kn_http_req_query(req, "since");
    const char *limit_s = kn_http_req_query(req, "limit");
    const char *kind = kn_http_req_query(req, "kind");
    long limit = limit_s ? reg_parse_version(limit_s) : 100;
    char *end = NULL;
    long long s = since ? strtoll(since, &end, 10) : 0;
    if (limit < 1 || limit > 1000 || (since && (*end || s < 0)) ||
        (kind && (strlen(kind) > 64 || !valid_key(kind)))) {
        kn_http_respond_error(req, 400, "bad_request",
                              "since must be an event id, limit 1..1000, kind an event kind");
        goto out;
    }
    int64_t mid = reg_model_id(&c, name);
    if (mid < 0) goto out;
    char ms[24], ss[24], ls[24];
    snprintf(ms, sizeof(ms), "%lld", (long long)mid);
    snprintf(ss, sizeof(ss), "%lld", s);
    snprintf(ls, sizeof(ls), "%ld", limit);
    const char *p[5] = {ms, ss, ls, name, kind};
    r = reg_q(&c, PGRES_TUPLES_OK,
              "SELECT id, event_doc(e, $4) AS doc FROM events e WHERE model_id = $1 "
              "AND id > $2::bigint AND ($5::text IS NULL OR kind = $5) "
              "ORDER BY id LIMIT $3::int",
              5, p);
    if (!r) {
        reg_db_fail(&c, "reading events");
        goto out;
    }
    int n = PQntuples(r);
    json_t *res = json_pack("{s:s}", "model", name);
    json_object_set_new(res, "next_since",
                        json_integer(n ? strtoll(reg_col(r, n - 1, "id"), NULL, 10) : s));
    respond_docs(req, res, "events", r, n, "doc");
out:
    PQclear(r);
    reg_call_end(&c);
}

/* GET /v1/events?since=ID&limit=N&kinds=K1,K2: every model's events, oldest
 * first, after `since` (for relays: kiln-evaluator announces what operators
 * did, docs/evaluator.md). Also "settled_id": every event with an id up to
 * it is committed, and "last_id", the newest (ids are taken in insert order, not commit order, so a
 * relay that moved its cursor past a transaction still open would skip its
 * event; events older than two minutes cannot belong to an open one: the
 * registry's transactions are short and bounded by its timeouts). */
static void h_events_all(kn_http_req *req, void *ctx)
{
    reg_call c;
    if (reg_call_begin(&c, ctx, req, REG_ROLE_READ) != 0) return;
    PGresult *r = NULL;
    const char *since = kn_http_req_query(req, "since");
    const char *limit_s = kn_http_req_query(req, "limit");
    const char *kinds = kn_http_req_query(req, "kinds");
    long limit = limit_s ? reg_parse_version(limit_s) : 100;
    char *end = NULL;
    long long s = since ? strtoll(since, &end, 10) : 0;
    int kinds_ok = !kinds || (strlen(kinds) <= 512 && kinds[0]);
    for (const char *k = kinds; kinds_ok && k && *k; k++)
        kinds_ok = isalnum((unsigned char)*k) || strchr("._-,", *k);
    if (limit < 1 || limit > 1000 || (since && (*end || s < 0)) || !kinds_ok) {
        kn_http_respond_error(req, 400, "bad_request",
                              "since must be an event id, limit 1..1000, kinds a comma-separated "
                              "list of event kinds");
        goto out;
    }
    char ss[24], ls[24];
    snprintf(ss, sizeof(ss), "%lld", s);
    snprintf(ls, sizeof(ls), "%ld", limit);
    const char *p[3] = {ss, ls, kinds};
    r = reg_q(&c, PGRES_TUPLES_OK,
              "SELECT e.id, event_doc(e, m.name) AS doc FROM events e "
              "LEFT JOIN models m ON m.id = e.model_id WHERE e.id > $1::bigint "
              "AND ($3::text IS NULL OR e.kind = ANY (string_to_array($3, ','))) "
              "ORDER BY e.id LIMIT $2::int",
              3, p);
    if (!r) {
        reg_db_fail(&c, "reading events");
        goto out;
    }
    PGresult *st = reg_q(&c, PGRES_TUPLES_OK,
                         "SELECT coalesce((SELECT id FROM events WHERE at < now() - "
                         "interval '2 minutes' ORDER BY id DESC LIMIT 1), 0) AS id, "
                         "coalesce((SELECT max(id) FROM events), 0) AS last",
                         0, NULL);
    if (!st) {
        reg_db_fail(&c, "reading events");
        goto out;
    }
    int n = PQntuples(r);
    json_t *res = json_object();
    json_object_set_new(res, "next_since",
                        json_integer(n ? strtoll(reg_col(r, n - 1, "id"), NULL, 10) : s));
    json_object_set_new(res, "settled_id", json_integer(strtoll(reg_col(st, 0, "id"), NULL, 10)));
    json_object_set_new(res, "last_id", json_integer(strtoll(reg_col(st, 0, "last"), NULL, 10)));
    PQclear(st);
    respond_docs(req, res, "events", r, n, "doc");
out:
    PQclear(r);
    reg_call_end(&c);
}

/* --- serving instances (issue 15: the page shows which version each runs) --- */

static int valid_instance(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 200) return 0;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)s[i]) && !strchr("._:-", s[i])) return 0;
    return 1;
}

/* PUT /v1/serving/{instance} {"url": "...", "models": [{"name", "version",
 * "alias", "loaded_at", ...}, ...]}: a kiln-serve instance reports what it
 * serves (serve/follow.c, every few seconds). A report needs what reads
 * need (the read role when reads need a token): it changes no model, only
 * what the page shows (and so leaves the alias cache alone). Each model
 * entry keeps only the fields below, strings cut at 300 bytes. */
static void h_serving_put(kn_http_req *req, void *ctx)
{
    reg_call c;
    if (reg_call_begin(&c, ctx, req, REG_ROLE_READ) != 0) return;
    json_t *body = kn_http_req_json(req), *clean = NULL;
    PGresult *r = NULL;
    const char *inst = kn_http_req_param(req, "instance"), *url;
    if (!body) goto out;
    if (!inst || !valid_instance(inst)) {
        kn_http_respond_error(req, 400, "bad_request",
                              "an instance id is 1-200 characters of [A-Za-z0-9._:-]");
        goto out;
    }
    c.keeps_cache = 1;
    if (body_str(&c, body, "url", 512, &url)) goto out;
    json_t *models = json_object_get(body, "models"), *m;
    if (!json_is_array(models) || json_array_size(models) > 64) {
        kn_http_respond_error(req, 400, "bad_request", "'models' must be an array of at most 64");
        goto out;
    }
    clean = json_array();
    size_t i;
    json_array_foreach(models, i, m)
    {
        json_t *e = json_object();
        static const char *const strs[] = {"name", "alias", "status", "since", "reason"};
        for (size_t k = 0; k < KN_ARRAY_LEN(strs); k++) {
            json_t *v = json_object_get(m, strs[k]);
            size_t n = json_string_length(v);
            json_t *t = json_is_string(v) ? json_stringn(json_string_value(v), n > 300 ? 300 : n)
                                          : NULL;
            if (t) json_object_set_new(e, strs[k], t);
        }
        json_t *v = json_object_get(m, "version");
        json_object_set(e, "version", json_is_integer(v) ? v : json_null());
        json_array_append_new(clean, e);
    }
    char *models_txt = json_dumps(clean, JSON_COMPACT);
    const char *p[4] = {inst, url, models_txt ? models_txt : "[]", c.actor};
    r = reg_q(&c, PGRES_COMMAND_OK,
              "INSERT INTO serving_instances (instance, url, models, reported_by) "
              "VALUES ($1, $2, $3::jsonb, $4) ON CONFLICT (instance) DO UPDATE SET "
              "url = EXCLUDED.url, models = EXCLUDED.models, reported_by = EXCLUDED.reported_by, "
              "seen_at = now()",
              4, p);
    free(models_txt);
    if (!r) {
        reg_db_fail(&c, "recording the report");
        goto out;
    }
    PQclear(r);
    r = reg_q(&c, PGRES_COMMAND_OK,
              "DELETE FROM serving_instances WHERE seen_at < now() - interval '1 day'", 0, NULL);
    if (!r) {
        reg_db_fail(&c, "recording the report");
        goto out;
    }
    kn_http_respond_json(req, 200, json_pack("{s:s}", "instance", inst));
out:
    PQclear(r);
    json_decref(clean);
    json_decref(body);
    reg_call_end(&c);
}

/* GET /v1/serving: every instance that reported in the last day, with the
 * seconds since its last report ("age_s"; the page greys out old ones). */
static void h_serving_list(kn_http_req *req, void *ctx)
{
    reg_call c;
    if (reg_call_begin(&c, ctx, req, REG_ROLE_READ) != 0) return;
    PGresult *r = reg_q(
        &c, PGRES_TUPLES_OK,
        "SELECT coalesce(jsonb_agg(jsonb_build_object('instance', instance, 'url', url, "
        "'models', models, 'reported_by', reported_by, 'first_seen', first_seen, 'seen_at', "
        "seen_at, 'age_s', round(extract(epoch FROM now() - seen_at)::numeric, 1)) "
        "ORDER BY instance), '[]') AS doc FROM serving_instances "
        "WHERE seen_at > now() - interval '1 day'",
        0, NULL);
    if (!r) reg_db_fail(&c, "listing serving instances");
    else kn_http_respond_json(req, 200, json_pack("{s:o}", "instances", col_json(r, 0, "doc")));
    PQclear(r);
    reg_call_end(&c);
}

/* POST .../events {"kind": "evalset.refrozen", "reason": "..", "data": {..}}:
 * an operator action that is not a row change of its own gets its line in the
 * event log. Only the kinds below; the promote role, because what they
 * record decides promotions (an eval set re-frozen by hand, docs/evaluator.md). */
static void h_events_post(kn_http_req *req, void *ctx)
{
    static const char *const kinds[] = {"evalset.refrozen"};
    reg_call c;
    if (reg_call_begin(&c, ctx, req, REG_ROLE_PROMOTE) != 0) return;
    json_t *body = kn_http_req_json(req);
    const char *name, *kind, *reason;
    if (!body || path_model(&c, &name)) goto out;
    if (body_str(&c, body, "kind", 64, &kind) || body_str(&c, body, "reason", 4096, &reason))
        goto out;
    int known = 0;
    for (size_t i = 0; i < KN_ARRAY_LEN(kinds); i++)
        known |= strcmp(kind, kinds[i]) == 0;
    json_t *data = json_object_get(body, "data");
    if (!known || !reason[0] || (data && !json_is_object(data))) {
        kn_http_respond_error(req, 400, "bad_request",
                              "'kind' must be evalset.refrozen, 'reason' is required, 'data' "
                              "an object");
        goto out;
    }
    int64_t mid = reg_model_id(&c, name);
    if (mid < 0) goto out;
    if (reg_event(&c, mid, 0, kind, reason, data)) {
        reg_db_fail(&c, "recording the event");
        goto out;
    }
    kn_http_respond_json(req, 201,
                         json_pack("{s:s,s:s,s:s}", "model", name, "kind", kind, "reason", reason));
out:
    json_decref(body);
    reg_call_end(&c);
}

/* --- tokens --- */

static void h_tokens_create(kn_http_req *req, void *ctx)
{
    reg_call c;
    if (reg_call_begin(&c, ctx, req, REG_ROLE_ADMIN) != 0) return;
    PGresult *r = NULL;
    json_t *body = kn_http_req_json(req);
    const char *name;
    char roles[128] = "{", secret[3 + 64 + 1], hash[KN_SHA256_HEX_LEN];
    if (!body || body_str(&c, body, "name", 128, &name)) goto out;
    json_t *jr = json_object_get(body, "roles");
    size_t i;
    json_t *role;
    if (!name[0] || !json_is_array(jr) || json_array_size(jr) == 0 || json_array_size(jr) > 4)
        goto bad;
    json_array_foreach(jr, i, role) {
        const char *s = json_string_value(role);
        if (!s || (strcmp(s, "read") && strcmp(s, "write") && strcmp(s, "promote") &&
                   strcmp(s, "admin")))
            goto bad;
        strcat(roles, i ? "," : "");
        strcat(roles, s);
    }
    strcat(roles, "}");
    unsigned char raw[32];
    if (RAND_bytes(raw, sizeof(raw)) != 1) {
        kn_http_respond_error(req, 500, "internal", "no randomness for a token");
        goto out;
    }
    strcpy(secret, "kn_");
    for (size_t k = 0; k < sizeof(raw); k++) sprintf(secret + 3 + 2 * k, "%02x", raw[k]);
    kn_sha256_hex(secret, strlen(secret), hash);
    const char *p[4] = {name, hash, roles, c.actor};
    r = reg_q(&c, PGRES_TUPLES_OK,
              "INSERT INTO tokens (name, hash, roles, created_by) VALUES ($1, $2, $3::text[], $4) "
              "RETURNING id, created_at",
              4, p);
    if (!r) {
        reg_db_fail(&c, "creating the token");
        goto out;
    }
    json_t *res = json_pack("{s:I,s:s,s:O,s:s,s:s}", "id",
                            (json_int_t)strtoll(reg_col(r, 0, "id"), NULL, 10), "name", name,
                            "roles", jr, "token", secret, "created_at",
                            reg_col(r, 0, "created_at"));
    kn_log_info("token %s created by %s", reg_col(r, 0, "id"), c.actor);
    kn_http_respond_json(req, 201, res);
    goto out;
bad:
    kn_http_respond_error(req, 400, "bad_request",
                          "a token needs a 'name' and 'roles': a list of read, write, promote, "
                          "admin");
out:
    PQclear(r);
    json_decref(body);
    reg_call_end(&c);
}

static void h_tokens_list(kn_http_req *req, void *ctx)
{
    reg_call c;
    if (reg_call_begin(&c, ctx, req, REG_ROLE_ADMIN) != 0) return;
    PGresult *r = reg_q(&c, PGRES_TUPLES_OK,
                        "SELECT coalesce(jsonb_agg(jsonb_build_object('id', id, 'name', name, "
                        "'roles', to_jsonb(roles), 'created_at', created_at, 'created_by', "
                        "created_by, 'revoked_at', revoked_at) ORDER BY id), '[]') AS doc "
                        "FROM tokens",
                        0, NULL);
    if (!r) reg_db_fail(&c, "listing tokens");
    else kn_http_respond_json(req, 200, json_pack("{s:o}", "tokens", col_json(r, 0, "doc")));
    PQclear(r);
    reg_call_end(&c);
}

static void h_tokens_revoke(kn_http_req *req, void *ctx)
{
    reg_call c;
    if (reg_call_begin(&c, ctx, req, REG_ROLE_ADMIN) != 0) return;
    PGresult *r = NULL;
    const char *id = kn_http_req_param(req, "id");
    if (reg_parse_version(id) < 0) {
        kn_http_respond_error(req, 400, "bad_request", "a token id is a positive integer");
        goto out;
    }
    const char *p[1] = {id};
    r = reg_q(&c, PGRES_TUPLES_OK,
              "UPDATE tokens SET revoked_at = now() WHERE id = $1::bigint AND revoked_at IS NULL "
              "RETURNING id",
              1, p);
    if (!r) reg_db_fail(&c, "revoking the token");
    else if (PQntuples(r) == 0)
        kn_http_respond_error(req, 404, "not_found", "no active token %s", id);
    else {
        kn_log_info("token %s revoked by %s", id, c.actor);
        kn_http_respond_json(req, 200, json_pack("{s:I,s:b}", "id",
                                                 (json_int_t)strtoll(id, NULL, 10), "revoked", 1));
    }
out:
    PQclear(r);
    reg_call_end(&c);
}

static void h_whoami(kn_http_req *req, void *ctx)
{
    reg_call c;
    if (reg_call_begin(&c, ctx, req, 0) != 0) return;
    json_t *roles = json_array();
    static const char *names[] = {"read", "write", "promote", "admin"};
    for (unsigned i = 0; i < 4; i++)
        if (c.roles & (1u << i)) json_array_append_new(roles, json_string(names[i]));
    kn_http_respond_json(req, 200, json_pack("{s:s,s:o}", "name", c.actor, "roles", roles));
    reg_call_end(&c);
}

static void h_index(kn_http_req *req, void *ctx)
{
    (void)ctx;
    kn_http_add_header(req, "Cache-Control", "no-cache");
    kn_http_add_header(req, "Content-Security-Policy",
                       "default-src 'self'; script-src 'unsafe-inline'; style-src "
                       "'unsafe-inline'");
    kn_http_respond(req, 200, "text/html; charset=utf-8", reg_web_index, strlen(reg_web_index));
}

void reg_api_routes(kn_http_server *srv, reg_app *app)
{
    static const struct {
        const char *method, *pattern;
        kn_http_handler h;
    } routes[] = {
        {"GET", "/", h_index},
        {"GET", "/v1/whoami", h_whoami},
        {"GET", "/v1/events", h_events_all},
        {"GET", "/v1/serving", h_serving_list},
        {"PUT", "/v1/serving/{instance}", h_serving_put},
        {"GET", "/v1/models", h_models_list},
        {"POST", "/v1/models", h_models_create},
        {"GET", "/v1/models/{name}", h_model_get},
        {"PATCH", "/v1/models/{name}", h_model_patch},
        {"GET", "/v1/models/{name}/versions", h_versions_list},
        {"POST", "/v1/models/{name}/versions", h_versions_create},
        {"GET", "/v1/models/{name}/versions/{version}", h_version_get},
        {"POST", "/v1/models/{name}/versions/{version}/status", h_version_status},
        {"POST", "/v1/models/{name}/versions/{version}/reject", h_version_reject},
        {"GET", "/v1/models/{name}/versions/{version}/metrics", h_metrics_get},
        {"POST", "/v1/models/{name}/versions/{version}/metrics", h_metrics_post},
        {"POST", "/v1/models/{name}/versions/{version}/tags", h_tags_post},
        {"GET", "/v1/models/{name}/aliases", h_aliases_list},
        {"GET", "/v1/models/{name}/aliases/{alias}", h_alias_get},
        {"PUT", "/v1/models/{name}/aliases/{alias}", h_alias_put},
        {"DELETE", "/v1/models/{name}/aliases/{alias}", h_alias_delete},
        {"POST", "/v1/models/{name}/aliases/{alias}/rollback", h_alias_rollback},
        {"GET", "/v1/models/{name}/events", h_events},
        {"POST", "/v1/models/{name}/events", h_events_post},
        {"POST", "/v1/models/{name}/lease", h_lease_take},
        {"DELETE", "/v1/models/{name}/lease", h_lease_release},
        {"GET", "/v1/tokens", h_tokens_list},
        {"POST", "/v1/tokens", h_tokens_create},
        {"DELETE", "/v1/tokens/{id}", h_tokens_revoke},
    };
    for (size_t i = 0; i < KN_ARRAY_LEN(routes); i++)
        kn_http_server_route(srv, routes[i].method, routes[i].pattern, routes[i].h, NULL, app);
}
