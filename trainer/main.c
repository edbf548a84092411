/* kiln-trainer: trains one configured model ([model.NAME]) continuously from
 * <prefix>.train.<dataset>, checkpointing to the registry every N steps or T
 * seconds with exact per-partition lineage, and resuming from the registry's
 * latest version. docs/trainer.md has the design; this file is the story:
 * resume, then fill a batch, one update, maybe a checkpoint, until SIGTERM,
 * target_steps or idle; the skeleton (service/service.h) does the rest. */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/kn.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/shutdown.h"
#include "net/regclient.h"
#include "nn/backend.h"
#include "service/keys.h"
#include "service/service.h"
#include "stream/kafka.h"
#include "trainer.h"

#ifndef KILN_BUILD_ID
#define KILN_BUILD_ID "unknown"
#endif

#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            kn_log_error(__VA_ARGS__);                                                             \
            return 1;                                                                              \
        }                                                                                          \
    } while (0)

static const kn_service_option options[] = {
    {"model", 'm', "NAME", "the [model.NAME] section to train (required)"},
    {"port", 'p', "N",
     "HTTP port for /healthz /readyz /metrics (default\ntrainer.port; 0 = ephemeral)"},
    {"idle-exit", 'i', "SECS", "checkpoint and exit once no data came for SECS seconds"},
    {"exit-at-end", 'e', NULL, "same as --idle-exit 10 (target_steps always ends the run)"},
    {"log-level", 'l', "LEVEL", "debug | info | warn | error (default log.level)"},
    {NULL, 0, NULL, NULL},
};

/* The configuration keys: kn_keys_trainer in lib/service/keys.c, where the
 * stack-wide check (kn_keys_check) sees every service's keys. */

typedef struct {
    const char *model_name; /* --model */
    long port;              /* --port, -1: trainer.port */
    double idle_exit;       /* --idle-exit seconds, 0: never */
    trn_settings s;
    kn_regclient *reg;
    kn_kafka_consumer *cons;
    kn_kafka_producer *events;
    trn_batcher b;
    trn_ckpt_ctx ctx;
    int64_t *low; /* (nparts) low watermarks of the training topic */
    trn_lease lease; /* one trainer per model (lease.c) */
} trainer;

static int option(kn_service *svc, void *app, int id, const char *arg)
{
    trainer *t = app;
    switch (id) {
    case 'm':
        t->model_name = arg;
        return 0;
    case 'p':
        t->port = strtol(arg, NULL, 10);
        if (t->port >= -1 && t->port <= 65535) return 0;
        kn_service_usage_error(svc, "--port %s: use 0..65535", arg);
        return 1;
    case 'i':
        t->idle_exit = strtod(arg, NULL);
        if (t->idle_exit >= 0) return 0;
        kn_service_usage_error(svc, "--idle-exit %s: use seconds >= 0", arg);
        return 1;
    case 'e':
        if (t->idle_exit <= 0) t->idle_exit = 10;
        return 0;
    case 'l':
        kn_service_log_level(svc, arg);
        return 0;
    }
    return 1;
}

static int check(kn_service *svc, void *app)
{
    if (((trainer *)app)->model_name) return 0;
    kn_service_usage_error(svc, "--model is required");
    return 1;
}

typedef struct {
    kn_metric *step, *loss, *eps, *tps, *lr, *grad_norm, *ckpts, *ckpt_fail, *examples, *tokens,
        *skipped, *version, *eta;
} trn_metrics;

static void metrics_init(trn_metrics *tm, kn_metrics *m, const char *model)
{
    char l[200];
    snprintf(l, sizeof(l), "model=\"%s\"", model);
    tm->step = kn_metrics_gauge(m, "kiln_trainer_step", "Optimizer updates done", l);
    tm->loss = kn_metrics_gauge(m, "kiln_trainer_loss", "Mean training loss, last window", l);
    tm->eps = kn_metrics_gauge(m, "kiln_trainer_examples_per_second", "Training throughput", l);
    tm->tps = kn_metrics_gauge(m, "kiln_trainer_tokens_per_second", "Tokens/s (token models)", l);
    tm->lr = kn_metrics_gauge(m, "kiln_trainer_lr", "Learning rate of the last update", l);
    tm->grad_norm = kn_metrics_gauge(m, "kiln_trainer_grad_norm", "Gradient norm (pre-clip)", l);
    tm->ckpts = kn_metrics_counter(m, "kiln_trainer_checkpoints_total", "Checkpoints created", l);
    tm->ckpt_fail = kn_metrics_counter(m, "kiln_trainer_checkpoint_failures_total",
                                       "Checkpoints that failed (retried later)", l);
    tm->examples =
        kn_metrics_counter(m, "kiln_trainer_examples_total", "Examples trained by this process", l);
    tm->tokens = kn_metrics_counter(m, "kiln_trainer_tokens_total", "Tokens trained", l);
    tm->skipped = kn_metrics_gauge(m, "kiln_trainer_bad_shards",
                                   "Shards skipped as unusable by this process", l);
    tm->version = kn_metrics_gauge(m, "kiln_trainer_version",
                                   "Registry version of the last "
                                   "checkpoint (or the one resumed from)",
                                   l);
    tm->eta = kn_metrics_gauge(m, "kiln_trainer_eta_seconds",
                               "Seconds to target_steps at the current rate (-1: no target)", l);
}

/* Partition count of the training topic, waiting for it to exist. */
static int wait_for_topic(kn_kafka_consumer *c, const char *topic)
{
    for (int i = 0; !kn_shutdown_requested(); i++) {
        int n = kn_kafka_partition_count(kn_kafka_consumer_handle(c), topic, 5000);
        if (n > 0) return n;
        if (i % 10 == 0) kn_log_info("waiting for topic %s to exist", topic);
        kn_service_nap(1);
    }
    return -1;
}

static int assign_from(kn_kafka_consumer *c, const trn_batcher *b, const char *topic)
{
    char e[256];
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(b->nparts);
    for (int p = 0; p < b->nparts; p++)
        rd_kafka_topic_partition_list_add(l, topic, p)->offset = b->parts[p].next_offset;
    int rc = kn_kafka_consumer_assign(c, l, e, sizeof(e));
    if (rc != KN_OK) kn_log_error("assign %s: %s", topic, e);
    rd_kafka_topic_partition_list_destroy(l);
    return rc;
}

/* Consumer-group offsets, for monitoring only (lineage is the truth). */
static void commit_for_monitoring(kn_kafka_consumer *c, const trn_batcher *b, const char *topic)
{
    char e[256];
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(b->nparts);
    for (int p = 0; p < b->nparts; p++)
        rd_kafka_topic_partition_list_add(l, topic, p)->offset = b->parts[p].next_offset;
    if (kn_kafka_consumer_commit(c, l, e, sizeof(e)) != KN_OK)
        kn_log_debug("monitoring commit: %s", e);
    rd_kafka_topic_partition_list_destroy(l);
}

static int checkpoint(trn_ckpt_ctx *ctx, trn_metrics *tm, kn_kafka_consumer *c, int tries)
{
    char e[768];
    for (int i = 0; i < tries; i++) {
        if (trn_checkpoint(ctx, e, sizeof(e)) == KN_OK) {
            kn_metrics_add(tm->ckpts, 1);
            kn_metrics_set(tm->version, ctx->last_version);
            commit_for_monitoring(c, ctx->batcher, ctx->s->topic);
            return KN_OK;
        }
        kn_metrics_add(tm->ckpt_fail, 1);
        kn_log_error("checkpoint failed (training goes on; the next one covers it): %s", e);
    }
    return KN_ERR;
}

/* What the progress line reports: the updates since the last line. */
typedef struct {
    double t, loss;
    int64_t steps, examples, tokens;
} window;

static void log_progress(trainer *t, trn_metrics *tm, window *w, double now)
{
    trn_ckpt_ctx *ctx = &t->ctx;
    double dt = now - w->t, sps = (double)w->steps / dt;
    const kn_optim *op = kn_model_optim(ctx->model);
    double eta = t->s.target_steps > 0 ? (double)(t->s.target_steps - ctx->step) / sps : -1;
    kn_metrics_set(tm->loss, w->loss / (double)w->steps);
    kn_metrics_set(tm->eps, (double)w->examples / dt);
    kn_metrics_set(tm->tps, (double)w->tokens / dt);
    kn_metrics_set(tm->eta, eta);
    kn_metrics_set(tm->skipped, (double)t->b.bad_shards);
    json_t *f = json_pack("{s:I, s:f, s:f, s:f, s:I}", "step", (json_int_t)ctx->step, "loss",
                          w->loss / (double)w->steps, "examples_per_s", (double)w->examples / dt,
                          "lr", (double)kn_optim_lr(&op->cfg, op->step > 0 ? op->step - 1 : 0),
                          "examples_total", (json_int_t)ctx->examples_total);
    if (w->tokens > 0) json_object_set_new(f, "tokens_per_s", json_real(w->tokens / dt));
    if (eta >= 0) json_object_set_new(f, "eta_s", json_real(eta));
    kn_log_fields(KN_LOG_INFO, f, "progress");
}

/* Start-up: settings, backend, server, Kafka, then resume from the registry. */
static void broker_waiting(void *svc, const char *why)
{
    kn_service_ready(svc, 0, "waiting for Kafka: %s", why);
}

static int start(kn_service *svc, trainer *t, trn_metrics *tm)
{
    char e[768];
    trn_settings *s = &t->s;
    CHECK(trn_settings_load(kn_service_config(svc), t->model_name, s, e, sizeof(e)) == KN_OK,
          "config: %s", e);
    s->idle_exit = t->idle_exit;
    /* auto stays on the CPU until the CUDA backend has passed its parity
     * suite on a GPU (tests/gpu/run): KN_AUTO_PICKS_CUDA in nn/backend.h. */
    const kn_backend *be = kn_backend_pick(s->backend);
    CHECK(be,
          "trainer.backend = cuda, but the CUDA backend is not available: %s "
          "(set trainer.backend = cpu or auto)",
          kn_backend_why_not("cuda"));

    metrics_init(tm, kn_service_metrics(svc), s->model);
    kn_metrics_set(tm->eta, -1);
    kn_service_ready(svc, 0, "resuming from the registry / assigning partitions");
    kn_http_options ho = {
        .bind_addr = kn_service_get(svc, "trainer.bind"),
        .port = (uint16_t)(t->port >= 0 ? t->port : kn_service_get_int(svc, "trainer.port", NULL))};
    CHECK(kn_service_listen(svc, &ho, NULL, NULL, e, sizeof(e)) == KN_OK, "%s", e);

    /* a broker not up yet (started before it): wait, not ready, and say so */
    if (kn_kafka_wait_broker(s->brokers, broker_waiting, svc, kn_shutdown_requested) != KN_OK)
        return -1;
    kn_service_ready(svc, 0, "resuming from the registry / assigning partitions");
    t->reg = kn_regclient_new(s->registry_url, s->registry_token[0] ? s->registry_token : NULL);
    char group[200];
    snprintf(group, sizeof(group), "kiln-trainer.%s", s->model);
    kn_kafka_consumer_options co = {
        .brokers = s->brokers, .group_id = group, .read_committed = 1, .client_id = "kiln-trainer"};
    t->cons = kn_kafka_consumer_new(&co, e, sizeof(e));
    CHECK(t->reg && t->cons, "kafka consumer: %s", e);
    kn_kafka_producer_options po = {
        .brokers = s->brokers, .client_id = "kiln-trainer", .dr_cb = trn_events_dr, .linger_ms = 1};
    t->events = kn_kafka_producer_new(&po, e, sizeof(e));
    CHECK(t->events, "kafka producer: %s", e);
    kn_kafka_topic_spec ets = {.name = s->events_topic, .partitions = KN_EVENTS_PARTITIONS};
    if (kn_kafka_create_topics(s->brokers, &ets, 1, 10000, e, sizeof(e)) != KN_OK)
        kn_log_warn("creating %s: %s", s->events_topic, e);

    int nparts = wait_for_topic(t->cons, s->topic);
    if (nparts < 0) return -1; /* asked to stop before there was anything to do */
    t->low = calloc((size_t)nparts, sizeof(*t->low));
    CHECK(t->low, "out of memory");
    for (int p = 0; p < nparts; p++) {
        int64_t hi;
        CHECK(kn_kafka_watermarks(kn_kafka_consumer_handle(t->cons), s->topic, p, &t->low[p], &hi,
                                  10000) == KN_OK,
              "watermarks of %s [%d]", s->topic, p);
    }
    /* one trainer per model: before resume reads the parent (lease.c) */
    if (trn_lease_take(t->reg, s->model, s->lease_ttl, s->lease_wait, &t->lease, e, sizeof(e)) !=
        KN_OK) {
        kn_log_error("%s", e);
        return 1;
    }
    trn_ckpt_ctx *ctx = &t->ctx;
    ctx->s = s;
    ctx->reg = t->reg;
    ctx->events = t->events;
    ctx->metrics = kn_service_metrics(svc);
    ctx->backend_name = be->name;
    CHECK(trn_resume(ctx, &t->b, nparts, t->low, be, e, sizeof(e)) == KN_OK, "resume: %s", e);
    CHECK(assign_from(t->cons, &t->b, s->topic) == KN_OK, "cannot assign %s", s->topic);
    kn_metrics_set(tm->version, ctx->parent_version);
    kn_metrics_set(tm->step, (double)ctx->step);
    kn_model_set_training(ctx->model, 1);
    kn_service_ready(svc, 1, NULL);
    kn_log_fields(KN_LOG_INFO,
                  json_pack("{s:s, s:s, s:i, s:s, s:I, s:i, s:I, s:f, s:I}", "model", s->model,
                            "topic", s->topic, "partitions", nparts, "backend", be->name, "params",
                            (json_int_t)kn_model_num_params(ctx->model), "batch", s->batch,
                            "checkpoint_steps", (json_int_t)s->checkpoint_steps,
                            "checkpoint_seconds", s->checkpoint_seconds, "target_steps",
                            (json_int_t)s->target_steps),
                  "training; http port %u", (unsigned)kn_service_port(svc));
    return 0;
}

static int run(kn_service *svc, void *app)
{
    trainer *t = app;
    trn_settings *s = &t->s;
    trn_ckpt_ctx *ctx = &t->ctx;
    trn_metrics tm;
    char e[768];
    int rc = start(svc, t, &tm);
    if (rc != 0) return rc < 0 ? 0 : 1;

    /* --- the loop: fill a batch, one update, maybe a checkpoint --- */
    double t_ckpt = trn_now(), retry_at = 0;
    window w = {.t = trn_now()};
    while (!kn_shutdown_requested()) {
        if (trn_lease_renew(t->reg, s->model, &t->lease, e, sizeof(e)) != KN_OK) {
            kn_log_error("fenced: stopping without a checkpoint; steps since version %d are "
                         "left to the trainer that holds the lease",
                         ctx->parent_version);
            return 1;
        }
        if (s->target_steps > 0 && ctx->step >= s->target_steps) {
            kn_log_info("target_steps %" PRId64 " reached", s->target_steps);
            break;
        }
        int B = trn_batcher_fill(&t->b, t->cons, (int)(s->flush_seconds * 1000));
        if (B > 0) {
            kn_batch batch;
            float loss = 0, gn = 0, lr = 0;
            trn_batcher_batch(&t->b, &batch);
            kn_model_zero_grad(ctx->model);
            /* The batcher validated ids and labels, so a failure is a bug:
             * stop without checkpointing this batch (it is trained again on
             * restart). */
            CHECK(kn_model_forward(ctx->model, &batch, &loss, e, sizeof(e)) == KN_OK, "forward: %s",
                  e);
            CHECK(kn_model_backward(ctx->model) == KN_OK, "backward failed");
            CHECK(kn_model_step(ctx->model, &gn, &lr) == KN_OK, "optimizer step failed");
            if (!isfinite(loss)) kn_log_warn("step %" PRId64 ": loss is %f", ctx->step + 1, loss);
            int64_t toks = batch.T > 0 ? (int64_t)B * batch.T : 0;
            ctx->step++;
            ctx->examples_total += B;
            ctx->loss_sum += loss;
            ctx->loss_n++;
            ctx->tokens_total += toks;
            w.loss += loss;
            w.steps++;
            w.examples += B;
            w.tokens += toks;
            kn_metrics_set(tm.step, (double)ctx->step);
            kn_metrics_set(tm.lr, lr);
            kn_metrics_set(tm.grad_norm, gn);
            kn_metrics_add(tm.examples, B);
            kn_metrics_add(tm.tokens, (double)toks);
        } else if (s->idle_exit > 0 && trn_now() - t->b.last_record >= s->idle_exit) {
            kn_log_info("no data for %.0f s: finishing", s->idle_exit);
            break;
        }
        double now = trn_now();
        if (now - w.t >= s->log_seconds) {
            if (w.steps > 0) log_progress(t, &tm, &w, now);
            w = (window){.t = now};
        }
        int64_t new_steps = ctx->step - ctx->steps_at_last_ckpt;
        if (new_steps > 0 && now >= retry_at &&
            ((s->checkpoint_steps > 0 && new_steps >= s->checkpoint_steps) ||
             (s->checkpoint_seconds > 0 && now - t_ckpt >= s->checkpoint_seconds))) {
            /* On failure training goes on and the next checkpoint covers the
             * whole range; a registry outage is retried every 30 s. */
            retry_at = checkpoint(ctx, &tm, t->cons, 1) == KN_OK ? 0 : trn_now() + 30;
            t_ckpt = trn_now();
        }
    }
    /* SIGTERM, target or idle: a final checkpoint when anything is new. */
    CHECK(ctx->step <= ctx->steps_at_last_ckpt || checkpoint(ctx, &tm, t->cons, 3) == KN_OK,
          "final checkpoint failed: steps since version %d will be retrained on restart",
          ctx->parent_version);
    kn_log_info("stopped at step %" PRId64 " (version %d)", ctx->step, ctx->parent_version);
    return 0;
}

static void cleanup(void *app)
{
    trainer *t = app;
    trn_lease_release(t->reg, t->s.model, &t->lease);
    trn_batcher_free(&t->b); /* holds a consumer message: before the consumer goes */
    kn_kafka_consumer_destroy(t->cons);
    kn_kafka_producer_destroy(t->events, 5000);
    kn_model_destroy(t->ctx.model);
    kn_regclient_destroy(t->reg);
    trn_settings_free(&t->s);
    free(t->low);
}

int main(int argc, char **argv)
{
    static const kn_service_spec spec = {
        .name = "kiln-trainer",
        .version = KN_VERSION " (build " KILN_BUILD_ID ")",
        .usage = "usage: kiln-trainer --model NAME [options]\n",
        .about = "Trains the model of config section [model.NAME] from "
                 "<prefix>.train.<dataset>,\ncheckpointing to the registry; resumes from the "
                 "model's latest version.\nSee docs/trainer.md.\n",
        .options = options,
        .option = option,
        .check = check,
        .keys = kn_keys_trainer,
        .keys_note =
            "  [model.NAME]: dataset, spec (JSON), optim (JSON), batch, checkpoint_steps,\n"
            "  checkpoint_seconds, target_steps, seed, shuffle, warm_start,\n"
            "  tokenizer_sha256, recipe_sha256 (docs/trainer.md)\n",
        .run = run,
        .cleanup = cleanup,
    };
    trainer t = {.port = -1};
    return kn_service_main(&spec, &t, argc, argv);
}
