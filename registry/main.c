/* kiln-registry: the model registry service: HTTP/JSON API under /v1 and a
 * web page at /, on PostgreSQL (see docs/registry.md). This file is the
 * story: configuration, migrations, the server until SIGTERM; the skeleton
 * (service/service.h) does the rest. */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/kn.h"
#include "core/log.h"
#include "core/shutdown.h"
#include "registry.h"
#include "service/keys.h"
#include "service/service.h"

#define DEFAULT_DB "host=127.0.0.1 port=15432 dbname=kiln user=kiln password=kiln"

/* The configuration keys: kn_keys_registry in lib/service/keys.c, where the
 * stack-wide check (kn_keys_check) sees every service's keys. */

/* The counters of reg_app, by field. */
static const struct {
    size_t field;
    const char *name, *help;
} counters[] = {
    {offsetof(reg_app, versions_created), "kiln_registry_versions_created_total",
     "Model versions created"},
    {offsetof(reg_app, promotions), "kiln_registry_promotions_total",
     "Moves of the promotion alias"},
    {offsetof(reg_app, rejections), "kiln_registry_rejections_total", "Versions rejected"},
    {offsetof(reg_app, rollbacks), "kiln_registry_rollbacks_total", "Alias rollbacks"},
    {offsetof(reg_app, alias_conflicts), "kiln_registry_alias_conflicts_total",
     "Alias moves refused by compare-and-set"},
    {offsetof(reg_app, artifact_bytes_in), "kiln_registry_artifact_bytes_in_total",
     "Artifact bytes stored"},
    {offsetof(reg_app, artifact_bytes_out), "kiln_registry_artifact_bytes_out_total",
     "Artifact bytes served"},
    {offsetof(reg_app, db_unavailable), "kiln_registry_db_unavailable_total",
     "Requests answered 503 for want of the database"},
};

static int ready(void *ctx, char *why, size_t whysz)
{
    reg_app *app = ctx;
    PGconn *c = reg_pool_get(app->pool, why, whysz);
    if (!c) return 1;
    PGresult *r = PQexec(c, "SELECT 1");
    int ok = PQresultStatus(r) == PGRES_TUPLES_OK;
    if (!ok) snprintf(why, whysz, "database: %s", PQerrorMessage(c));
    PQclear(r);
    reg_pool_put(app->pool, c);
    return ok ? 0 : 1;
}

static void routes(kn_http_server *srv, void *app)
{
    reg_api_routes(srv, app);
    reg_artifact_routes(srv, app);
}

static int run(kn_service *svc, void *arg)
{
    reg_app *app = arg;
    char err[512];
    int ok = 1;
    const char *db = kn_service_get(svc, "registry.db");
    if (!db) db = getenv("KILN_PG_CONNINFO");
    const char *schema = kn_service_get(svc, "registry.schema");
    int64_t pool = kn_service_get_int(svc, "registry.pool_size", &ok);
    int64_t port = kn_service_get_int(svc, "registry.port", &ok);
    app->read_requires_token = kn_service_get_bool(svc, "registry.read_requires_token", &ok);
    app->max_artifact = (uint64_t)kn_service_get_int(svc, "registry.max_artifact_bytes", &ok);
    int64_t max_body = kn_service_get_int(svc, "registry.max_body_bytes", &ok);
    int64_t timeout = kn_service_get_int(svc, "registry.timeout_s", &ok);
    app->promotion_alias = kn_service_get(svc, "registry.promotion_alias");
    if (!ok || pool < 1 || pool > 256 || port < 0 || port > 65535 || max_body < 1 || timeout < 1 ||
        !reg_valid_alias(app->promotion_alias)) {
        kn_log_error("bad registry configuration: check pool_size (1..256), port, "
                     "read_requires_token, max_artifact_bytes, max_body_bytes, timeout_s, "
                     "promotion_alias");
        return 1;
    }

    kn_metrics *m = app->metrics = kn_service_metrics(svc);
    app->pool = reg_pool_new(db ? db : DEFAULT_DB, schema, (int)pool, 5000);
    if (!app->pool) return 1;
    if (reg_limits_configure(app, kn_service_config(svc), err, sizeof(err)) != KN_OK) {
        kn_log_error("%s", err);
        return 1;
    }
    for (size_t i = 0; i < KN_ARRAY_LEN(counters); i++)
        *(kn_metric **)((char *)app + counters[i].field) =
            kn_metrics_counter(m, counters[i].name, counters[i].help, NULL);

    /* The database may come up after us (compose): retry for a while. */
    for (int attempt = 0; reg_migrate(app->pool, err, sizeof(err)) != KN_OK; attempt++) {
        if (attempt == 30 || kn_shutdown_requested()) {
            kn_log_error("%s", err);
            return 1;
        }
        kn_log_warn("%s (retrying)", err);
        kn_service_nap(1);
    }
    int64_t cache_ms = kn_service_get_int(svc, "registry.cache_ms", &ok);
    if (!ok || cache_ms < 0 || cache_ms > 3600000) {
        kn_log_error("bad registry configuration: cache_ms (0..3600000)");
        return 1;
    }
    if (cache_ms > 0) {
        app->cache = reg_cache_new(app->pool, (unsigned)cache_ms, m);
        /* not needed to answer, but the first reads then come from memory */
        if (app->cache && !reg_cache_wait_ready(app->cache, 2000))
            kn_log_warn("cache: not listening for changes yet; reads go to the database");
    }
    const char *admin = kn_service_get(svc, "registry.admin_token");
    if (admin && admin[0] && reg_bootstrap_admin(app->pool, admin, err, sizeof(err)) != KN_OK) {
        kn_log_error("%s", err);
        return 1;
    }

    kn_http_options ho = {.bind_addr = kn_service_get(svc, "registry.bind"),
                          .port = (uint16_t)port,
                          .max_body = (size_t)max_body,
                          .timeout_s = (unsigned)timeout,
                          .max_connections = 512,
                          .ready = ready,
                          .ready_ctx = app};
    if (kn_service_listen(svc, &ho, routes, app, err, sizeof(err)) != KN_OK) {
        kn_log_error("%s", err);
        return 1;
    }
    kn_log_fields(KN_LOG_INFO,
                  json_pack("{s:s,s:i,s:s,s:b}", "bind", ho.bind_addr, "port",
                            (int)kn_service_port(svc), "schema", schema, "read_requires_token",
                            app->read_requires_token),
                  "kiln-registry %s listening", KN_VERSION);
    kn_service_wait();
    return 0;
}

static void cleanup(void *arg)
{
    reg_app *app = arg;
    reg_cache_destroy(app->cache);
    reg_pool_destroy(app->pool);
}

int main(int argc, char **argv)
{
    static const kn_service_spec spec = {
        .name = "kiln-registry",
        .about = "The kiln model registry: HTTP/JSON API under /v1, web page at /, on "
                 "PostgreSQL.\n",
        .keys = kn_keys_registry,
        .drain_s = 20, /* an upload cut by the deadline is retried by its client */
        .run = run,
        .cleanup = cleanup,
    };
    reg_app app = {0};
    return kn_service_main(&spec, &app, argc, argv);
}
