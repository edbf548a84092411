/* kiln-registry: the model registry service: HTTP/JSON API under /v1 and a
 * web page at /, on PostgreSQL (see docs/registry.md). This file is the
 * loop: configuration, migrations, the server, SIGTERM. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/config.h"
#include "net/http.h"
#include "core/kn.h"
#include "core/log.h"
#include "core/metrics.h"
#include "registry.h"
#include "core/shutdown.h"

#define DEFAULT_DB "host=127.0.0.1 port=15432 dbname=kiln user=kiln password=kiln"

static const char usage[] =
    "usage: kiln-registry [--config FILE] [--help] [--version]\n"
    "\n"
    "The kiln model registry: HTTP/JSON API under /v1, web page at /, on PostgreSQL.\n"
    "\n"
    "Configuration ([registry] section of FILE; each key also from KILN_REGISTRY_<KEY>):\n"
    "  registry.bind                 listen address (127.0.0.1)\n"
    "  registry.port                 listen port (8080; 0 = any free port, printed in the log)\n"
    "  registry.db                   libpq conninfo (else KILN_PG_CONNINFO, else the native "
    "stack)\n"
    "  registry.schema               PostgreSQL schema holding the tables (kiln_registry)\n"
    "  registry.pool_size            database connections (16)\n"
    "  registry.read_requires_token  reads need a token with the read role (false)\n"
    "  registry.admin_token          admin token stored (hashed) at start if new\n"
    "  registry.promotion_alias      alias whose moves need the promote role (production)\n"
    "  registry.max_artifact_bytes   upload size limit, k/m/g suffixes (4g)\n"
    "  registry.max_body_bytes       JSON body limit (1m)\n"
    "  registry.timeout_s            idle connection timeout against slow clients (30)\n"
    "  registry.upload_timeout_s     an artifact upload is cut after this long (3600)\n"
    "  registry.upload_min_bytes_per_s  ... or when slower on average after timeout_s (16384)\n"
    "  registry.staging_dir          where uploads are staged (TMPDIR, else /tmp)\n"
    "  registry.statement_timeout_ms, lock_timeout_ms, idle_in_transaction_timeout_ms\n"
    "                                database session limits (30000, 5000, 60000; 0 = none)\n"
    "  log.level                     debug, info, warn, error (info)\n";

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

int main(int argc, char **argv)
{
    const char *config_path = NULL;
    char err[512];
    int rc = 1;
    kn_config *cfg = NULL;
    kn_metrics *metrics = NULL;
    kn_http_server *srv = NULL;
    reg_app app;
    memset(&app, 0, sizeof(app));

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            fputs(usage, stdout);
            return 0;
        } else if (strcmp(argv[i], "--version") == 0) {
            printf("kiln-registry %s\n", KN_VERSION);
            return 0;
        } else if (strcmp(argv[i], "--config") == 0 && i + 1 < argc) {
            config_path = argv[++i];
        } else {
            fprintf(stderr, "kiln-registry: unknown argument '%s'\n%s", argv[i], usage);
            return 2; /* usage, as the other services */
        }
    }

    cfg = kn_config_new();
    if (!cfg) goto out;
    if (config_path && kn_config_load_file(cfg, config_path, err, sizeof(err)) != KN_OK) {
        fprintf(stderr, "kiln-registry: %s\n", err);
        goto out;
    }
    int level = kn_log_level_parse(kn_config_get(cfg, "log.level", "info"));
    kn_log_init("kiln-registry", level < 0 ? KN_LOG_INFO : (kn_log_level)level);
    kn_shutdown_setup();

    int ok = 1, ok2 = 1, ok3 = 1, ok4 = 1, ok5 = 1, ok6 = 1;
    const char *db = kn_config_get(cfg, "registry.db", getenv("KILN_PG_CONNINFO"));
    if (!db) db = DEFAULT_DB;
    const char *schema = kn_config_get(cfg, "registry.schema", "kiln_registry");
    int64_t pool = kn_config_get_int(cfg, "registry.pool_size", 16, &ok);
    int64_t port = kn_config_get_int(cfg, "registry.port", 8080, &ok2);
    app.read_requires_token = kn_config_get_bool(cfg, "registry.read_requires_token", 0, &ok3);
    app.max_artifact = (uint64_t)kn_config_get_int(cfg, "registry.max_artifact_bytes",
                                                   4LL << 30, &ok4);
    int64_t max_body = kn_config_get_int(cfg, "registry.max_body_bytes", 1 << 20, &ok5);
    int64_t timeout = kn_config_get_int(cfg, "registry.timeout_s", 30, &ok6);
    app.promotion_alias = kn_config_get(cfg, "registry.promotion_alias", "production");
    if (!ok || !ok2 || !ok3 || !ok4 || !ok5 || !ok6 || pool < 1 || pool > 256 || port < 0 ||
        port > 65535 || max_body < 1 || timeout < 1 || !reg_valid_alias(app.promotion_alias)) {
        kn_log_error("bad registry configuration: check pool_size (1..256), port, "
                     "read_requires_token, max_artifact_bytes, max_body_bytes, timeout_s, "
                     "promotion_alias");
        goto out;
    }

    app.pool = reg_pool_new(db, schema, (int)pool, 5000);
    metrics = kn_metrics_new();
    if (!app.pool || !metrics) goto out;
    if (reg_limits_configure(&app, cfg, err, sizeof(err)) != KN_OK) {
        kn_log_error("%s", err);
        goto out;
    }
    app.metrics = metrics;
    app.versions_created = kn_metrics_counter(metrics, "kiln_registry_versions_created_total",
                                              "Model versions created", NULL);
    app.promotions = kn_metrics_counter(metrics, "kiln_registry_promotions_total",
                                        "Moves of the promotion alias", NULL);
    app.rejections = kn_metrics_counter(metrics, "kiln_registry_rejections_total",
                                        "Versions rejected", NULL);
    app.rollbacks = kn_metrics_counter(metrics, "kiln_registry_rollbacks_total",
                                       "Alias rollbacks", NULL);
    app.alias_conflicts = kn_metrics_counter(metrics, "kiln_registry_alias_conflicts_total",
                                             "Alias moves refused by compare-and-set", NULL);
    app.artifact_bytes_in = kn_metrics_counter(metrics, "kiln_registry_artifact_bytes_in_total",
                                               "Artifact bytes stored", NULL);
    app.artifact_bytes_out = kn_metrics_counter(
        metrics, "kiln_registry_artifact_bytes_out_total", "Artifact bytes served", NULL);
    app.db_unavailable = kn_metrics_counter(metrics, "kiln_registry_db_unavailable_total",
                                            "Requests answered 503 for want of the database",
                                            NULL);

    /* The database may come up after us (compose): retry for a while. */
    for (int attempt = 0;; attempt++) {
        if (reg_migrate(app.pool, err, sizeof(err)) == KN_OK) break;
        if (attempt == 30 || kn_shutdown_requested()) {
            kn_log_error("%s", err);
            goto out;
        }
        kn_log_warn("%s (retrying)", err);
        sleep(1);
    }
    const char *admin = kn_config_get(cfg, "registry.admin_token", NULL);
    if (admin && admin[0] && reg_bootstrap_admin(app.pool, admin, err, sizeof(err)) != KN_OK) {
        kn_log_error("%s", err);
        goto out;
    }

    kn_http_options opts = {
        .bind_addr = kn_config_get(cfg, "registry.bind", "127.0.0.1"),
        .port = (uint16_t)port,
        .service = "kiln-registry",
        .max_body = (size_t)max_body,
        .timeout_s = (unsigned)timeout,
        .max_connections = 512,
        .metrics = metrics,
        .ready = ready,
        .ready_ctx = &app,
    };
    srv = kn_http_server_new(&opts);
    if (!srv) goto out;
    reg_api_routes(srv, &app);
    reg_artifact_routes(srv, &app);
    if (kn_http_server_start(srv, err, sizeof(err)) != KN_OK) {
        kn_log_error("%s", err);
        goto out;
    }
    kn_log_fields(KN_LOG_INFO,
                  json_pack("{s:s,s:i,s:s,s:b}", "bind", opts.bind_addr, "port",
                            (int)kn_http_server_port(srv), "schema", schema, "read_requires_token",
                            app.read_requires_token),
                  "kiln-registry %s listening", KN_VERSION);

    while (!kn_shutdown_requested()) usleep(100 * 1000);
    kn_log_info("shutting down: finishing requests in flight");
    kn_http_server_destroy(srv); /* stops accepting, joins connection threads */
    srv = NULL;
    rc = 0;
out:
    kn_http_server_destroy(srv);
    reg_pool_destroy(app.pool);
    kn_metrics_destroy(metrics);
    kn_config_destroy(cfg);
    if (rc == 0) kn_log_info("stopped");
    return rc;
}
