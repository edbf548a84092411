/* kiln-evaluator: scores every checkpoint.created on the frozen eval set of
 * its dataset, records the metrics in the registry, and promotes or rejects
 * the version by the model's policy (docs/evaluator.md). This file is the
 * story: configuration, the consumer, one event at a time, commit after the
 * work is recorded. The per-event flow is in flow.c; the skeleton
 * (service/service.h) does options, logging, signals and the server. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/kn.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/shutdown.h"
#include "evaluator.h"
#include "net/regclient.h"
#include "nn/backend.h"
#include "service/keys.h"
#include "service/service.h"
#include "stream/kafka.h"

/* The configuration keys: kn_keys_evaluator in lib/service/keys.c, where the
 * stack-wide check (kn_keys_check) sees every service's keys. */

typedef struct {
    ev_ctx ctx;
    json_t *policies;
    char *prompts_buf;    /* the prompts' text, cut at each '|' */
    const char **prompts; /* (64) into prompts_buf */
    kn_kafka_consumer *cons;
    ev_held *held; /* events waiting out a transient failure */
} evaluator;

/* Reads [evaluator] into ev->ctx; 0 or a log line naming the keys to check. */
static int configure(kn_service *svc, evaluator *ev)
{
    ev_ctx *ctx = &ev->ctx;
    int ok = 1;
    const char *backend = kn_service_get(svc, "evaluator.backend");
    int64_t port = kn_service_get_int(svc, "evaluator.port", &ok);
    int64_t cache = kn_service_get_int(svc, "evaluator.cache_bytes", &ok);
    int64_t batch = kn_service_get_int(svc, "evaluator.batch", &ok);
    int64_t lm_batch = kn_service_get_int(svc, "evaluator.lm_batch", &ok);
    int64_t stoks = kn_service_get_int(svc, "evaluator.sample_tokens", &ok);
    double temp = kn_service_get_double(svc, "evaluator.temperature", &ok);
    int64_t top_k = kn_service_get_int(svc, "evaluator.top_k", &ok);
    int64_t seed = kn_service_get_int(svc, "evaluator.seed", &ok);
    ctx->min_eval_examples = kn_service_get_int(svc, "evaluator.min_eval_examples", &ok);
    if (!ok || port < 0 || port > 65535 || batch < 1 || batch > 65536 || lm_batch < 1 ||
        lm_batch > 4096 || stoks < 0 || stoks > 4096 || !(temp >= 0) || top_k < 0 || cache < 0 ||
        (strcmp(backend, "auto") && strcmp(backend, "cpu") && strcmp(backend, "cuda"))) {
        kn_log_error("bad [evaluator] configuration: check port, min_eval_examples, cache_bytes, "
                     "batch (1..65536), lm_batch (1..4096), sample_tokens (0..4096), temperature "
                     "(>= 0), top_k, seed, backend (auto|cpu|cuda)");
        return 1;
    }
    if (!(ctx->backend = kn_backend_pick(backend))) {
        kn_log_error("evaluator.backend = cuda, but the CUDA backend is not available: %s",
                     kn_backend_why_not("cuda"));
        return 1;
    }
    const char *tmp = getenv("TMPDIR"), *work_dir = kn_service_get(svc, "evaluator.work_dir");
    ctx->cfg = kn_service_config(svc);
    ctx->brokers = kn_service_get(svc, "kafka.brokers");
    ctx->prefix = kn_service_get(svc, "kafka.topic_prefix");
    ctx->alias = kn_service_get(svc, "evaluator.alias");
    ctx->work_dir = work_dir ? work_dir : tmp && tmp[0] ? tmp : "/tmp";
    ctx->cache_bytes = (size_t)cache;
    ctx->score = (ev_score_options){.batch = (int)batch,
                                    .lm_batch = (int)lm_batch,
                                    .prompts = ev->prompts = calloc(64, sizeof(char *)),
                                    .sample_tokens = (int)stoks,
                                    .temperature = (float)temp,
                                    .top_k = (int)top_k,
                                    .seed = (uint64_t)seed};
    ev->prompts_buf = strdup(kn_service_get(svc, "evaluator.prompts"));
    if (!ev->prompts_buf || !ev->prompts) return 1;
    for (char *save = NULL, *p = strtok_r(ev->prompts_buf, "|", &save);
         p && ctx->score.nprompts < 64; p = strtok_r(NULL, "|", &save))
        ev->prompts[ctx->score.nprompts++] = p;
    snprintf(ctx->events_topic, sizeof(ctx->events_topic), "%s.events", ctx->prefix);
    kn_metrics *m = kn_service_metrics(svc);
    ctx->m_evaluations = kn_metrics_counter(m, "kiln_evaluator_evaluations_total",
                                            "Versions scored on an eval set", NULL);
    ctx->m_promotions = kn_metrics_counter(m, "kiln_evaluator_promotions_total",
                                           "Versions promoted by policy", NULL);
    ctx->m_rejections = kn_metrics_counter(m, "kiln_evaluator_rejections_total",
                                           "Versions rejected by policy or as unusable", NULL);
    ctx->m_failures = kn_metrics_counter(m, "kiln_evaluator_failures_total",
                                         "Evaluations that failed (retried or rejected)", NULL);
    ctx->m_eval_seconds = kn_metrics_histogram(m, "kiln_evaluator_eval_seconds",
                                               "Seconds spent scoring one version", NULL);
    ctx->m_evalset_stopped = kn_metrics_counter(
        m, "kiln_evaluator_evalset_unusable_total",
        "Tries that found a frozen eval set unreadable or changed (promotion stopped)", NULL);
    return 0;
}

static void broker_waiting(void *svc, const char *why)
{
    kn_service_ready(svc, 0, "waiting for Kafka: %s", why);
}

static int run(kn_service *svc, void *arg)
{
    evaluator *ev = arg;
    ev_ctx *ctx = &ev->ctx;
    char err[1024], group[300], state_topic[300];
    if (ev_policy_sections(kn_service_config_path(svc), kn_service_config(svc), &ev->policies, err,
                           sizeof(err)) != KN_OK) {
        kn_log_error("%s", err);
        return 1;
    }
    if (configure(svc, ev) != 0) return 1;
    ctx->policies = ev->policies;
    kn_metric *m_retries =
        kn_metrics_counter(kn_service_metrics(svc), "kiln_evaluator_retries_total",
                           "Events retried after a transient failure", NULL);
    kn_http_options ho = {.bind_addr = kn_service_get(svc, "evaluator.bind"),
                          .port = (uint16_t)kn_service_get_int(svc, "evaluator.port", NULL)};
    if (kn_service_listen(svc, &ho, NULL, NULL, err, sizeof(err)) != KN_OK) {
        kn_log_error("%s", err);
        return 1;
    }

    /* a broker not up yet (started before it): wait, not ready, and say so */
    if (kn_kafka_wait_broker(ctx->brokers, broker_waiting, svc, kn_shutdown_requested) != KN_OK)
        return 0;

    /* --- registry, Kafka, the state store --- */
    const char *token = kn_service_get(svc, "evaluator.token"), *url;
    if (!token) token = getenv("KILN_REGISTRY_TOKEN");
    ctx->reg = kn_regclient_new(url = kn_service_get(svc, "registry.url"),
                                token && token[0] ? token : NULL);
    kn_kafka_producer_options po = {.brokers = ctx->brokers,
                                    .client_id = "kiln-evaluator",
                                    .dr_cb = ev_publish_dr,
                                    .linger_ms = 1};
    ctx->producer = kn_kafka_producer_new(&po, err, sizeof(err));
    if (!ctx->reg || !ctx->producer) {
        kn_log_error("start: %s", ctx->reg ? err : "out of memory");
        return 1;
    }
    kn_kafka_topic_spec ets = {.name = ctx->events_topic, .partitions = KN_EVENTS_PARTITIONS};
    if (kn_kafka_create_topics(ctx->brokers, &ets, 1, 10000, err, sizeof(err)) != KN_OK)
        kn_log_warn("creating %s: %s", ctx->events_topic, err);
    snprintf(state_topic, sizeof(state_topic), "%s.state.evaluator", ctx->prefix);
    for (int attempt = 0;
         !(ctx->state = ev_state_open(ctx->brokers, state_topic, err, sizeof(err))); attempt++) {
        kn_service_ready(svc, 0, "state topic: %s", err);
        if (attempt == 30 || kn_shutdown_requested()) {
            kn_log_error("%s: %s", state_topic, err);
            return 1;
        }
        kn_log_warn("%s: %s (retrying)", state_topic, err);
        kn_service_nap(2);
    }
    const char *g = kn_service_get(svc, "evaluator.group");
    snprintf(group, sizeof(group), "%s", g ? g : "");
    if (!group[0]) snprintf(group, sizeof(group), "%s.evaluator", ctx->prefix);
    static const char *const extra[] = {"max.poll.interval.ms", "3600000", NULL};
    kn_kafka_consumer_options co = {.brokers = ctx->brokers,
                                    .group_id = group,
                                    .client_id = "kiln-evaluator",
                                    .read_committed = 1,
                                    .auto_offset_reset = "earliest",
                                    .extra = extra};
    const char *topics[1] = {ctx->events_topic};
    if (!(ev->cons = kn_kafka_consumer_new(&co, err, sizeof(err))) ||
        kn_kafka_consumer_subscribe(ev->cons, topics, 1, err, sizeof(err)) != KN_OK) {
        kn_log_error("consumer: %s", err);
        return 1;
    }
    kn_service_ready(svc, 1, NULL);
    kn_log_fields(KN_LOG_INFO,
                  json_pack("{s:s,s:s,s:s,s:i,s:s,s:o}", "events", ctx->events_topic, "group",
                            group, "registry", url, "port", (int)kn_service_port(svc), "backend",
                            ctx->backend->name, "policies", json_deep_copy(ev->policies)),
                  "kiln-evaluator %s listening", KN_VERSION);

    /* --- the loop: one event at a time; commit once its work is recorded; an
     * event that failed transiently is held (held.c) while other partitions go on --- */
    if (!(ev->held = ev_held_new(30, m_retries))) return 1;
    char why[1200];
    double relay_at = 0;
    int relay_failing = 0;
    while (!kn_shutdown_requested()) {
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        if ((double)now.tv_sec + now.tv_nsec * 1e-9 >= relay_at) { /* flow.c, the relay */
            char rerr[512];
            int rrc = ev_relay(ctx, rerr, sizeof(rerr));
            if (rrc != KN_OK && !relay_failing++)
                kn_log_warn("relay: %s (retrying every second)", rerr);
            else if (rrc == KN_OK && relay_failing) {
                kn_log_info("relay: working again");
                relay_failing = 0;
            }
            relay_at = (double)now.tv_sec + now.tv_nsec * 1e-9 + 1.0;
        }
        ev_held_retry_due(ev->held, ctx, ev->cons);
        if (ev_held_count(ev->held, why, sizeof(why)) == 0)
            kn_service_ready(svc, 1, NULL);
        else
            kn_service_ready(svc, 0, "%s", why);
        rd_kafka_message_t *m = kn_kafka_consumer_poll(ev->cons, 500);
        if (!m) continue;
        if (m->err) {
            if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
                kn_log_warn("events: %s", rd_kafka_message_errstr(m));
            rd_kafka_message_destroy(m);
            continue;
        }
        ev_held_dispatch(ev->held, ctx, ev->cons, m);
    }
    return 0;
}

static void cleanup(void *arg)
{
    evaluator *ev = arg;
    ev_held_destroy(ev->held);
    kn_kafka_consumer_destroy(ev->cons);
    ev_state_destroy(ev->ctx.state);
    kn_kafka_producer_destroy(ev->ctx.producer, 10000);
    kn_regclient_destroy(ev->ctx.reg);
    free(ev->prompts);
    ev_ctx_free(&ev->ctx);
    json_decref(ev->policies);
    free(ev->prompts_buf);
}

int main(int argc, char **argv)
{
    static const kn_service_command commands[] = {{"score", ev_score_cmd_main}, {NULL, NULL}};
    static const kn_service_spec spec = {
        .name = "kiln-evaluator",
        .usage = "usage: kiln-evaluator [--config FILE] [--help] [--version]\n"
                 "       kiln-evaluator score --checkpoint FILE --eval-dir DIR  (--help for "
                 "more)\n",
        .commands = commands,
        .about = "Consumes checkpoint.created events from <prefix>.events, scores each version on "
                 "the\nfrozen eval set <prefix>.eval.<dataset>, records metrics in the registry, "
                 "and promotes\n(moves the production alias) or rejects the version by its "
                 "[policy.MODEL] section.\n",
        .keys = kn_keys_evaluator,
        .keys_note = "  dataset.<D>.tokenizer, dataset.<D>.pattern: decode LM samples\n"
                     "  [policy.MODEL] / [policy.default]: min_M, max_M, improve_M, "
                     "improve_rel_M, guard_M,\n  guard_rel_M, direction_M = higher|lower\n",
        .run = run,
        .cleanup = cleanup,
    };
    evaluator ev = {0};
    return kn_service_main(&spec, &ev, argc, argv);
}
