/* kiln-serve: answers predictions and generations with the version each
 * configured model's alias (production) names, swaps versions live when the
 * alias moves, and serves a version only with the preprocessing recipe and
 * tokenizer its lineage names (docs/serve.md). This file is the story:
 * configuration, the slots, the server, the first load, the follower. The
 * loading and batching are in models.c, the following in follow.c, the API
 * in api.c; the skeleton (service/service.h) does the rest. */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/kn.h"
#include "core/log.h"
#include "serve.h"
#include "service/keys.h"

/* The configuration keys: kn_keys_serve in lib/service/keys.c, where the
 * stack-wide check (kn_keys_check) sees every service's keys. */

/* Fills app->slots from serve.models. */
static int make_slots(kn_service *svc, sv_app *app)
{
    char *list = strdup(kn_service_get(svc, "serve.models")), *save = NULL;
    const char *alias = kn_service_get(svc, "serve.alias");
    if (!list) return 1;
    for (char *p = strtok_r(list, " ,\t", &save); p; p = strtok_r(NULL, " ,\t", &save)) {
        if (strlen(p) >= sizeof(app->slots[0].name) || sv_find(app, p)) {
            kn_log_error("serve.models: '%s' is too long or listed twice", p);
            free(list);
            return 1;
        }
        sv_slot *ns = realloc(app->slots, (app->nslots + 1) * sizeof(*ns));
        if (!ns) {
            free(list);
            return 1;
        }
        app->slots = ns;
        sv_slot *s = &ns[app->nslots];
        memset(s, 0, sizeof(*s));
        snprintf(s->name, sizeof(s->name), "%s", p);
        char k[300];
        snprintf(k, sizeof(k), "serve.%s.alias", p);
        snprintf(s->alias, sizeof(s->alias), "%s", kn_config_get(app->cfg, k, alias));
        snprintf(k, sizeof(k), "serve.%s.version", p);
        int ok = 1;
        s->pinned = (int)kn_config_get_int(app->cfg, k, 0, &ok);
        if (!ok || s->pinned < 0 || !s->alias[0]) {
            kn_log_error("serve.%s.version must be a version number (>= 1), alias not empty", p);
            free(list);
            return 1;
        }
        app->nslots++;
    }
    free(list);
    if (app->nslots == 0) {
        kn_log_error("serve.models is empty: name the models to serve (serve.models = cnn-fmnist "
                     "gpt-fortunes)");
        return 1;
    }
    /* pthread objects and metrics only once the array no longer moves */
    for (size_t i = 0; i < app->nslots; i++) {
        sv_slot *s = &app->slots[i];
        char labels[200];
        pthread_mutex_init(&s->mu, NULL);
        snprintf(labels, sizeof(labels), "model=\"%s\"", s->name);
        s->m_swaps = kn_metrics_counter(app->metrics, "kiln_serve_swaps_total",
                                        "Versions swapped in after the first", labels);
        s->m_latency = kn_metrics_histogram(app->metrics, "kiln_serve_request_seconds",
                                            "Seconds per answered request", labels);
        s->m_requests = kn_metrics_counter(app->metrics, "kiln_serve_requests_total",
                                           "Requests answered 200", labels);
        s->m_failures = kn_metrics_counter(app->metrics, "kiln_serve_failures_total",
                                           "Requests failed on the server's side (5xx)", labels);
    }
    return 0;
}

static int run(kn_service *svc, void *arg)
{
    sv_app *app = arg;
    char err[1024];
    int ok = 1;
    app->svc = svc;
    app->cfg = kn_service_config(svc);
    app->metrics = kn_service_metrics(svc);
    int64_t port = kn_service_get_int(svc, "serve.port", &ok);
    app->poll_s = kn_service_get_double(svc, "serve.poll_s", &ok);
    int64_t blas = kn_service_get_int(svc, "serve.blas_threads", &ok);
    int64_t mb = kn_service_get_int(svc, "serve.max_batch", &ok);
    int64_t wait = kn_service_get_int(svc, "serve.max_wait_us", &ok);
    int64_t body = kn_service_get_int(svc, "serve.max_body", &ok);
    int64_t px = kn_service_get_int(svc, "serve.max_pixels", &ok);
    int64_t dec = kn_service_get_int(svc, "serve.max_decoding", &ok);
    int64_t prompt = kn_service_get_int(svc, "serve.max_prompt_bytes", &ok);
    int64_t newtok = kn_service_get_int(svc, "serve.max_new_tokens", &ok);
    int64_t topk = kn_service_get_int(svc, "serve.top_k", &ok);
    int64_t timeout = kn_service_get_int(svc, "serve.timeout_s", &ok);
    const char *backend = kn_service_get(svc, "serve.backend");
    if (!ok || port < 0 || port > 65535 || !(app->poll_s >= 0.1 && app->poll_s <= 3600) ||
        blas < 0 || mb < 1 || mb > 4096 || wait < 0 || wait > 1000000 || body < 1 || px < 1 ||
        dec < 1 || dec > 1024 || prompt < 1 || newtok < 1 || newtok > 1 << 20 || topk < 1 ||
        timeout < 1) {
        kn_log_error(
            "bad [serve] configuration: check port, poll_s (0.1..3600), blas_threads, "
            "max_batch (1..4096), max_wait_us (0..1000000), max_body, max_pixels, max_decoding "
            "(1..1024), "
            "max_prompt_bytes, max_new_tokens, top_k, timeout_s");
        return 1;
    }
    if (!(app->be = kn_backend_pick(backend))) {
        kn_log_error("serve.backend = %s: %s", backend, kn_backend_why_not(backend));
        return 1;
    }
    if (blas > 0) openblas_set_num_threads((int)blas);
    app->max_batch = (int)mb;
    app->max_wait_us = (long)wait;
    app->max_pixels = (size_t)px;
    sem_init(&app->decoders, 0, (unsigned)dec);
    app->decoders_ready = 1;
    app->max_prompt_bytes = (size_t)prompt;
    app->max_new_tokens = (int)newtok;
    app->default_top_k = (int)topk;
    app->registry_url = kn_service_get(svc, "registry.url");
    const char *tok = kn_service_get(svc, "serve.token");
    if (!tok) tok = getenv("KILN_REGISTRY_TOKEN");
    app->registry_token = tok && tok[0] ? tok : NULL;
    const char *auth = kn_service_get(svc, "serve.auth_token");
    app->auth_token = auth && auth[0] ? auth : NULL;
    const char *tmp = getenv("TMPDIR"), *wd = kn_service_get(svc, "serve.work_dir");
    app->work_dir = wd ? wd : tmp && tmp[0] ? tmp : "/tmp";
    app->brokers = kn_service_get(svc, "kafka.brokers");
    app->prefix = kn_service_get(svc, "kafka.topic_prefix");
    app->m_bad_input = kn_metrics_counter(app->metrics, "kiln_serve_bad_requests_total",
                                          "Requests refused with a 4xx", NULL);
    app->m_load_failures = kn_metrics_counter(app->metrics, "kiln_serve_load_failures_total",
                                              "Versions that could not be loaded or served", NULL);
    if (make_slots(svc, app) != 0) return 1;

    kn_http_options ho = {.bind_addr = kn_service_get(svc, "serve.bind"),
                          .port = (uint16_t)port,
                          .max_body = (size_t)body,
                          .timeout_s = (unsigned)timeout,
                          .max_connections = 1024};
    if (kn_service_listen(svc, &ho, sv_routes, app, err, sizeof(err)) != KN_OK) {
        kn_log_error("%s", err);
        return 1;
    }
    kn_service_ready(svc, 0, "loading the models");
    {
        char host[128] = "localhost";
        gethostname(host, sizeof(host) - 1);
        const char *b = ho.bind_addr && strcmp(ho.bind_addr, "0.0.0.0") != 0 ? ho.bind_addr : host;
        snprintf(app->instance, sizeof(app->instance), "%s:%d", host, (int)kn_service_port(svc));
        for (char *p = app->instance; *p; p++) /* the registry takes [A-Za-z0-9._:-] */
            if (!strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._:-", *p))
                *p = '-';
        snprintf(app->self_url, sizeof(app->self_url), "http://%s:%d", b,
                 (int)kn_service_port(svc));
    }
    kn_log_fields(KN_LOG_INFO,
                  json_pack("{s:s,s:i,s:s,s:s,s:i,s:i}", "bind", ho.bind_addr, "port",
                            (int)kn_service_port(svc), "registry", app->registry_url, "backend",
                            app->be->name, "max_batch", app->max_batch, "max_wait_us",
                            (int)app->max_wait_us),
                  "kiln-serve %s listening", KN_VERSION);
    sv_follow_initial(app);
    if (sv_follow_start(app, err, sizeof(err)) != KN_OK) {
        kn_log_error("%s", err);
        return 1;
    }
    kn_service_wait();
    return 0;
}

static void cleanup(void *arg)
{
    sv_app *app = arg;
    sv_follow_stop(app);
    for (size_t i = 0; i < app->nslots; i++) {
        sv_version_release(app->slots[i].cur);
        pthread_mutex_destroy(&app->slots[i].mu);
    }
    free(app->slots);
    if (app->decoders_ready) sem_destroy(&app->decoders);
}

int main(int argc, char **argv)
{
    static const kn_service_spec spec = {
        .name = "kiln-serve",
        .about = "Serves the models of serve.models: each at the version its alias (production) "
                 "names,\nloaded from the registry (SHA-256 verified) with the preprocessing "
                 "recipe and\ntokenizer of its lineage, swapped live when the alias moves "
                 "(<prefix>.events and\nregistry polling). POST /v1/models/M/predict, "
                 "/v1/models/M/generate; GET /v1/models.\n",
        .keys = kn_keys_serve,
        .keys_note = "  serve.<MODEL>.alias, serve.<MODEL>.version: follow another alias, or pin "
                     "a version\n  [dataset.<D>]: the recipes (and rank files) versions are "
                     "served with, matched by\n  the recipe_sha256 / tokenizer_sha256 of their "
                     "lineage\n",
        .drain_s = 30,
        .run = run,
        .cleanup = cleanup,
    };
    sv_app app = {0};
    return kn_service_main(&spec, &app, argc, argv);
}
