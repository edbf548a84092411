/* kiln-evaluator: scores every checkpoint.created on the frozen eval set of
 * its dataset, records the metrics in the registry, and promotes or rejects
 * the version by the model's policy (docs/evaluator.md). This file is the
 * loop: configuration, the consumer, one event at a time, commit after the
 * work is recorded, SIGTERM. The per-event flow is in flow.c. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/config.h"
#include "evaluator.h"
#include "net/http.h"
#include "stream/kafka.h"
#include "core/kn.h"
#include "core/log.h"
#include "core/metrics.h"
#include "nn/backend.h"
#include "net/regclient.h"
#include "core/shutdown.h"

static const char usage[] =
    "usage: kiln-evaluator [--config FILE] [--help] [--version]\n"
    "\n"
    "Consumes checkpoint.created events from <prefix>.events, scores each version on the\n"
    "frozen eval set <prefix>.eval.<dataset>, records metrics in the registry, and promotes\n"
    "(moves the production alias) or rejects the version by its [policy.MODEL] section.\n"
    "\n"
    "Configuration (each key also from KILN_<SECTION>_<KEY>):\n"
    "  kafka.brokers, kafka.topic_prefix (kiln), registry.url, log.level\n"
    "  evaluator.bind (127.0.0.1)        evaluator.port (8084; 0 = any free port)\n"
    "  evaluator.group (<prefix>.evaluator)  consumer group of the events topic\n"
    "  evaluator.token                   registry token (else KILN_REGISTRY_TOKEN)\n"
    "  evaluator.alias (production)      the alias a passing version moves\n"
    "  evaluator.backend (auto)          auto, cpu or cuda\n"
    "  evaluator.min_eval_examples (1)   examples needed before an eval set is frozen\n"
    "  evaluator.batch (256), evaluator.lm_batch (4)   rows per forward pass\n"
    "  evaluator.cache_bytes (1g)        eval sets kept in memory\n"
    "  evaluator.work_dir ($TMPDIR or /tmp)  where artifacts are downloaded\n"
    "  evaluator.prompts                 LM sample prompts separated by '|'\n"
    "  evaluator.sample_tokens (48), evaluator.temperature (0.8), evaluator.top_k (40),\n"
    "  evaluator.seed (1234)             sampling of the stored LM samples\n"
    "  dataset.<D>.tokenizer, dataset.<D>.pattern   decode LM samples\n"
    "  [policy.MODEL] / [policy.default]: min_M, max_M, improve_M, improve_rel_M, guard_M,\n"
    "                                   guard_rel_M, direction_M = higher|lower\n";

typedef struct {
    volatile int ready;
    char why[1200];
} ready_state;

static int ready_cb(void *ctx, char *why, size_t whysz)
{
    ready_state *r = ctx;
    if (r->ready) return 0;
    snprintf(why, whysz, "%s", r->why[0] ? r->why : "starting");
    return 1;
}

/* Sleeps up to seconds, waking early on shutdown. */
static void nap(double seconds)
{
    for (double t = 0; t < seconds && !kn_shutdown_requested(); t += 0.1)
        usleep(100 * 1000);
}

int main(int argc, char **argv)
{
    const char *config_path = NULL;
    char err[1024];
    int rc = 1;
    kn_config *cfg = NULL;
    kn_metrics *metrics = NULL;
    kn_http_server *srv = NULL;
    kn_kafka_consumer *cons = NULL;
    ev_held *held = NULL;
    json_t *policies = NULL;
    char *prompts_buf = NULL;
    const char **prompts = NULL;
    ready_state rs = {0};
    ev_ctx ctx;
    memset(&ctx, 0, sizeof(ctx));

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            fputs(usage, stdout);
            return 0;
        } else if (strcmp(argv[i], "--version") == 0) {
            printf("kiln-evaluator %s\n", KN_VERSION);
            return 0;
        } else if (strcmp(argv[i], "--config") == 0 && i + 1 < argc) {
            config_path = argv[++i];
        } else {
            fprintf(stderr, "kiln-evaluator: unknown argument '%s'\n%s", argv[i], usage);
            return 2; /* usage, as the other services */
        }
    }
    cfg = kn_config_new();
    if (!cfg) goto out;
    if (config_path && kn_config_load_file(cfg, config_path, err, sizeof(err)) != KN_OK) {
        fprintf(stderr, "kiln-evaluator: %s\n", err);
        goto out;
    }
    int level = kn_log_level_parse(kn_config_get(cfg, "log.level", "info"));
    kn_log_init("kiln-evaluator", level < 0 ? KN_LOG_INFO : (kn_log_level)level);
    kn_shutdown_setup();

    /* --- configuration (fail fast, naming the key) --- */
    if (ev_policy_sections(config_path, cfg, &policies, err, sizeof(err)) != KN_OK) {
        kn_log_error("%s", err);
        goto out;
    }
    int ok[12] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1};
    const char *brokers = kn_config_get(cfg, "kafka.brokers", "127.0.0.1:19092");
    const char *prefix = kn_config_get(cfg, "kafka.topic_prefix", "kiln");
    const char *url = kn_config_get(cfg, "registry.url", "http://127.0.0.1:8080");
    const char *token = kn_config_get(cfg, "evaluator.token", getenv("KILN_REGISTRY_TOKEN"));
    const char *backend = kn_config_get(cfg, "evaluator.backend", "auto");
    int64_t port = kn_config_get_int(cfg, "evaluator.port", 8084, &ok[0]);
    ctx.min_eval_examples = kn_config_get_int(cfg, "evaluator.min_eval_examples", 1, &ok[1]);
    int64_t cache = kn_config_get_int(cfg, "evaluator.cache_bytes", 1LL << 30, &ok[2]);
    int64_t batch = kn_config_get_int(cfg, "evaluator.batch", 256, &ok[3]);
    int64_t lm_batch = kn_config_get_int(cfg, "evaluator.lm_batch", 4, &ok[4]);
    int64_t stoks = kn_config_get_int(cfg, "evaluator.sample_tokens", 48, &ok[5]);
    double temp = kn_config_get_double(cfg, "evaluator.temperature", 0.8, &ok[6]);
    int64_t top_k = kn_config_get_int(cfg, "evaluator.top_k", 40, &ok[7]);
    int64_t seed = kn_config_get_int(cfg, "evaluator.seed", 1234, &ok[8]);
    int all_ok = 1;
    for (size_t i = 0; i < KN_ARRAY_LEN(ok); i++)
        all_ok &= ok[i];
    if (!all_ok || port < 0 || port > 65535 || batch < 1 || batch > 65536 || lm_batch < 1 ||
        lm_batch > 4096 || stoks < 0 || stoks > 4096 || !(temp >= 0) || top_k < 0 || cache < 0 ||
        (strcmp(backend, "auto") && strcmp(backend, "cpu") && strcmp(backend, "cuda"))) {
        kn_log_error("bad [evaluator] configuration: check port, min_eval_examples, cache_bytes, "
                     "batch (1..65536), lm_batch (1..4096), sample_tokens (0..4096), temperature "
                     "(>= 0), top_k, seed, backend (auto|cpu|cuda)");
        goto out;
    }
    /* auto: see KN_AUTO_PICKS_CUDA in nn/backend.h */
    ctx.backend = strcmp(backend, "cuda") == 0 || (KN_AUTO_PICKS_CUDA && strcmp(backend, "auto") == 0)
                      ? kn_backend_get("cuda")
                      : kn_backend_cpu();
    if (!ctx.backend && strcmp(backend, "cuda") == 0) {
        kn_log_error("evaluator.backend = cuda, but the CUDA backend is not available: %s",
                     kn_backend_why_not("cuda"));
        goto out;
    }
    if (!ctx.backend) ctx.backend = kn_backend_cpu();
    prompts_buf = strdup(kn_config_get(cfg, "evaluator.prompts",
                                       "The|Once upon a time|You will|A wise man once said"));
    prompts = calloc(64, sizeof(*prompts));
    if (!prompts_buf || !prompts) goto out;
    for (char *save = NULL, *p = strtok_r(prompts_buf, "|", &save); p && ctx.score.nprompts < 64;
         p = strtok_r(NULL, "|", &save))
        prompts[ctx.score.nprompts++] = p;

    char group[300], state_topic[300];
    snprintf(group, sizeof(group), "%s", kn_config_get(cfg, "evaluator.group", ""));
    if (!group[0]) snprintf(group, sizeof(group), "%s.evaluator", prefix);
    snprintf(state_topic, sizeof(state_topic), "%s.state.evaluator", prefix);
    snprintf(ctx.events_topic, sizeof(ctx.events_topic), "%s.events", prefix);
    const char *tmp = getenv("TMPDIR");
    ctx.cfg = cfg;
    ctx.brokers = brokers;
    ctx.prefix = prefix;
    ctx.alias = kn_config_get(cfg, "evaluator.alias", "production");
    ctx.work_dir = kn_config_get(cfg, "evaluator.work_dir", tmp && tmp[0] ? tmp : "/tmp");
    ctx.cache_bytes = (size_t)cache;
    ctx.policies = policies;
    ctx.score = (ev_score_options){.batch = (int)batch,
                                   .lm_batch = (int)lm_batch,
                                   .prompts = prompts,
                                   .nprompts = ctx.score.nprompts,
                                   .sample_tokens = (int)stoks,
                                   .temperature = (float)temp,
                                   .top_k = (int)top_k,
                                   .seed = (uint64_t)seed};

    /* --- metrics and the HTTP server --- */
    metrics = kn_metrics_new();
    if (!metrics) goto out;
    ctx.m_evaluations = kn_metrics_counter(metrics, "kiln_evaluator_evaluations_total",
                                           "Versions scored on an eval set", NULL);
    ctx.m_promotions = kn_metrics_counter(metrics, "kiln_evaluator_promotions_total",
                                          "Versions promoted by policy", NULL);
    ctx.m_rejections = kn_metrics_counter(metrics, "kiln_evaluator_rejections_total",
                                          "Versions rejected by policy or as unusable", NULL);
    ctx.m_failures = kn_metrics_counter(metrics, "kiln_evaluator_failures_total",
                                        "Evaluations that failed (retried or rejected)", NULL);
    ctx.m_eval_seconds = kn_metrics_histogram(metrics, "kiln_evaluator_eval_seconds",
                                              "Seconds spent scoring one version", NULL);
    ctx.m_evalset_stopped = kn_metrics_counter(
        metrics, "kiln_evaluator_evalset_unusable_total",
        "Tries that found a frozen eval set unreadable or changed (promotion stopped)", NULL);
    kn_metric *m_retries = kn_metrics_counter(metrics, "kiln_evaluator_retries_total",
                                              "Events retried after a transient failure", NULL);
    kn_http_options ho = {.bind_addr = kn_config_get(cfg, "evaluator.bind", "127.0.0.1"),
                          .port = (uint16_t)port,
                          .service = "kiln-evaluator",
                          .metrics = metrics,
                          .ready = ready_cb,
                          .ready_ctx = &rs};
    srv = kn_http_server_new(&ho);
    if (!srv || kn_http_server_start(srv, err, sizeof(err)) != KN_OK) {
        kn_log_error("http: %s", srv ? err : "out of memory");
        goto out;
    }

    /* --- registry, Kafka, the state store --- */
    ctx.reg = kn_regclient_new(url, token && token[0] ? token : NULL);
    kn_kafka_producer_options po = {
        .brokers = brokers, .client_id = "kiln-evaluator", .dr_cb = ev_publish_dr, .linger_ms = 1};
    ctx.producer = kn_kafka_producer_new(&po, err, sizeof(err));
    if (!ctx.reg || !ctx.producer) {
        kn_log_error("start: %s", ctx.reg ? err : "out of memory");
        goto out;
    }
    kn_kafka_topic_spec ets = {.name = ctx.events_topic, .partitions = KN_EVENTS_PARTITIONS};
    if (kn_kafka_create_topics(brokers, &ets, 1, 10000, err, sizeof(err)) != KN_OK)
        kn_log_warn("creating %s: %s", ctx.events_topic, err);
    for (int attempt = 0; !(ctx.state = ev_state_open(brokers, state_topic, err, sizeof(err)));
         attempt++) {
        snprintf(rs.why, sizeof(rs.why), "state topic: %s", err);
        if (attempt == 30 || kn_shutdown_requested()) {
            kn_log_error("%s: %s", state_topic, err);
            goto out;
        }
        kn_log_warn("%s: %s (retrying)", state_topic, err);
        nap(2);
    }
    static const char *const extra[] = {"max.poll.interval.ms", "3600000", NULL};
    kn_kafka_consumer_options co = {.brokers = brokers,
                                    .group_id = group,
                                    .client_id = "kiln-evaluator",
                                    .read_committed = 1,
                                    .auto_offset_reset = "earliest",
                                    .extra = extra};
    const char *topics[1] = {ctx.events_topic};
    if (!(cons = kn_kafka_consumer_new(&co, err, sizeof(err))) ||
        kn_kafka_consumer_subscribe(cons, topics, 1, err, sizeof(err)) != KN_OK) {
        kn_log_error("consumer: %s", err);
        goto out;
    }
    rs.ready = 1;
    kn_log_fields(KN_LOG_INFO,
                  json_pack("{s:s,s:s,s:s,s:i,s:s,s:o}", "events", ctx.events_topic, "group", group,
                            "registry", url, "port", (int)kn_http_server_port(srv), "backend",
                            ctx.backend->name, "policies", json_deep_copy(policies)),
                  "kiln-evaluator %s listening", KN_VERSION);

    /* --- the loop: one event at a time; commit once its work is recorded; an
     * event that failed transiently is held (held.c) while other partitions go on --- */
    if (!(held = ev_held_new(30, m_retries))) goto out;
    while (!kn_shutdown_requested()) {
        ev_held_retry_due(held, &ctx, cons);
        rs.ready = ev_held_count(held, rs.why, sizeof(rs.why)) == 0;
        rd_kafka_message_t *m = kn_kafka_consumer_poll(cons, 500);
        if (!m) continue;
        if (m->err) {
            if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
                kn_log_warn("events: %s", rd_kafka_message_errstr(m));
            rd_kafka_message_destroy(m);
            continue;
        }
        ev_held_dispatch(held, &ctx, cons, m);
    }
    kn_log_info("shutting down");
    rc = 0;
out:
    ev_held_destroy(held);
    kn_kafka_consumer_destroy(cons);
    kn_http_server_destroy(srv);
    ev_state_destroy(ctx.state);
    kn_kafka_producer_destroy(ctx.producer, 10000);
    kn_regclient_destroy(ctx.reg);
    ev_ctx_free(&ctx);
    json_decref(policies);
    free(prompts);
    free(prompts_buf);
    kn_metrics_destroy(metrics);
    kn_config_destroy(cfg);
    if (rc == 0) kn_log_info("stopped");
    return rc;
}
