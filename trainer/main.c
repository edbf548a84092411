/* kiln-trainer: trains one configured model ([model.NAME]) continuously from
 * <prefix>.train.<dataset>, checkpointing to the registry every N steps or T
 * seconds with exact per-partition lineage, and resuming from the registry's
 * latest version. docs/trainer.md has the design; this file is the loop. */
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/config.h"
#include "net/http.h"
#include "stream/kafka.h"
#include "core/kn.h"
#include "core/log.h"
#include "core/metrics.h"
#include "nn/backend.h"
#include "net/regclient.h"
#include "core/shutdown.h"
#include "trainer.h"

#ifndef KILN_BUILD_ID
#define KILN_BUILD_ID "unknown"
#endif

#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            kn_log_error(__VA_ARGS__);                                                             \
            goto out;                                                                              \
        }                                                                                          \
    } while (0)

static void usage(FILE *f)
{
    fprintf(f, "usage: kiln-trainer --model NAME [options]\n"
               "Trains the model of config section [model.NAME] from <prefix>.train.<dataset>,\n"
               "checkpointing to the registry; resumes from the model's latest version.\n\n"
               "  --model NAME        the [model.NAME] section to train (required)\n"
               "  --config FILE       kiln.ini (default: $KILN_CONFIG, else built-in defaults)\n"
               "  --port N            HTTP port for /healthz /readyz /metrics (default\n"
               "                      trainer.port = 8083; 0 = ephemeral)\n"
               "  --idle-exit SECS    checkpoint and exit once no data came for SECS seconds\n"
               "  --exit-at-end       same as --idle-exit 10 (target_steps always ends the run)\n"
               "  --log-level LEVEL   debug | info | warn | error\n"
               "  --help, --version\n\n"
               "Config keys of [model.NAME]: dataset, spec (JSON), optim (JSON), batch,\n"
               "checkpoint_steps, checkpoint_seconds, target_steps, seed, shuffle, warm_start,\n"
               "tokenizer_sha256, recipe_sha256. [trainer]: bind, port, backend (auto|cpu|cuda),\n"
               "token (else registry.token / KILN_REGISTRY_TOKEN), work_dir, log_seconds,\n"
               "flush_seconds, lease_ttl_s (60), lease_wait_s (120). See docs/trainer.md.\n");
}

typedef struct {
    kn_metric *step, *loss, *eps, *tps, *lr, *grad_norm, *ckpts, *ckpt_fail, *examples, *tokens,
        *skipped, *version, *eta;
} trn_metrics;

static volatile int g_ready;

static int ready_cb(void *ctx, char *why, size_t whysz)
{
    (void)ctx;
    if (g_ready) return 0;
    snprintf(why, whysz, "resuming from the registry / assigning partitions");
    return 1;
}

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
        for (int j = 0; j < 10 && !kn_shutdown_requested(); j++)
            usleep(100000);
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

int main(int argc, char **argv)
{
    const char *model_name = NULL, *config_path = getenv("KILN_CONFIG"), *level = NULL;
    long port = -1;
    double idle_exit = 0;
    static const struct option opts[] = {{"model", required_argument, 0, 'm'},
                                         {"config", required_argument, 0, 'c'},
                                         {"port", required_argument, 0, 'p'},
                                         {"idle-exit", required_argument, 0, 'i'},
                                         {"exit-at-end", no_argument, 0, 'e'},
                                         {"log-level", required_argument, 0, 'l'},
                                         {"help", no_argument, 0, 'h'},
                                         {"version", no_argument, 0, 'V'},
                                         {0, 0, 0, 0}};
    int o;
    while ((o = getopt_long(argc, argv, "m:c:p:i:el:hV", opts, NULL)) != -1) {
        switch (o) {
        case 'm':
            model_name = optarg;
            break;
        case 'c':
            config_path = optarg;
            break;
        case 'p':
            port = strtol(optarg, NULL, 10);
            break;
        case 'i':
            idle_exit = strtod(optarg, NULL);
            break;
        case 'e':
            if (idle_exit <= 0) idle_exit = 10;
            break;
        case 'l':
            level = optarg;
            break;
        case 'h':
            usage(stdout);
            return 0;
        case 'V':
            printf("kiln-trainer %s (build %s)\n", KN_VERSION, KILN_BUILD_ID);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (!model_name || optind < argc || port < -1 || port > 65535 || idle_exit < 0) {
        usage(stderr);
        return 2;
    }

    int exit_code = 1;
    char e[768];
    kn_config *cfg = kn_config_new();
    trn_settings s = {0};
    kn_metrics *metrics = kn_metrics_new();
    kn_http_server *http = NULL;
    kn_regclient *reg = NULL;
    kn_kafka_consumer *cons = NULL;
    kn_kafka_producer *events = NULL;
    trn_batcher b = {0};
    trn_ckpt_ctx ctx = {0};
    trn_metrics tm;
    trn_lease lease = {0};
    int64_t *low = NULL;

    kn_log_init("kiln-trainer", KN_LOG_INFO);
    kn_shutdown_setup();
    CHECK(cfg && metrics, "out of memory");
    CHECK(!config_path || kn_config_load_file(cfg, config_path, e, sizeof(e)) == KN_OK,
          "config: %s", e);
    if (!level) level = kn_config_get(cfg, "log.level", "info");
    CHECK(kn_log_level_parse(level) >= 0, "log level '%s': use debug, info, warn or error", level);
    kn_log_init("kiln-trainer", (kn_log_level)kn_log_level_parse(level));
    CHECK(trn_settings_load(cfg, model_name, &s, e, sizeof(e)) == KN_OK, "config: %s", e);
    s.idle_exit = idle_exit;

    /* Backend: cuda when asked for. auto stays on the CPU until the CUDA
     * backend has passed its parity suite on a GPU (tests/gpu/run); then
     * KN_AUTO_PICKS_CUDA in backend.h turns auto into "CUDA when a GPU answers". */
    const kn_backend *be = strcmp(s.backend, "cuda") == 0 ||
                                   (KN_AUTO_PICKS_CUDA && strcmp(s.backend, "auto") == 0)
                               ? kn_backend_get("cuda")
                               : kn_backend_cpu();
    CHECK(be || strcmp(s.backend, "cuda") != 0,
          "trainer.backend = cuda, but the CUDA backend is not available: %s "
          "(set trainer.backend = cpu or auto)",
          kn_backend_why_not("cuda"));
    if (!be) {
        kn_log_info("backend: cpu (cuda not available: %s)", kn_backend_why_not("cuda"));
        be = kn_backend_cpu();
    }

    metrics_init(&tm, metrics, s.model);
    kn_metrics_set(tm.eta, -1);
    int64_t cfg_port = kn_config_get_int(cfg, "trainer.port", 8083, NULL);
    kn_http_options ho = {.bind_addr = kn_config_get(cfg, "trainer.bind", "127.0.0.1"),
                          .port = (uint16_t)(port >= 0 ? port : cfg_port),
                          .service = "kiln-trainer",
                          .metrics = metrics,
                          .ready = ready_cb};
    http = kn_http_server_new(&ho);
    CHECK(http && kn_http_server_start(http, e, sizeof(e)) == KN_OK, "http: %s", e);

    reg = kn_regclient_new(s.registry_url, s.registry_token[0] ? s.registry_token : NULL);
    kn_kafka_consumer_options co = {
        .brokers = s.brokers, .read_committed = 1, .client_id = "kiln-trainer"};
    char group[200];
    snprintf(group, sizeof(group), "kiln-trainer.%s", s.model);
    co.group_id = group;
    cons = kn_kafka_consumer_new(&co, e, sizeof(e));
    CHECK(reg && cons, "kafka consumer: %s", e);
    kn_kafka_producer_options po = {
        .brokers = s.brokers, .client_id = "kiln-trainer", .dr_cb = trn_events_dr, .linger_ms = 1};
    events = kn_kafka_producer_new(&po, e, sizeof(e));
    CHECK(events, "kafka producer: %s", e);
    kn_kafka_topic_spec ets = {.name = s.events_topic, .partitions = KN_EVENTS_PARTITIONS};
    if (kn_kafka_create_topics(s.brokers, &ets, 1, 10000, e, sizeof(e)) != KN_OK)
        kn_log_warn("creating %s: %s", s.events_topic, e);

    int nparts = wait_for_topic(cons, s.topic);
    if (nparts < 0) {
        exit_code = 0; /* asked to stop before there was anything to do */
        goto out;
    }
    low = calloc((size_t)nparts, sizeof(*low));
    CHECK(low, "out of memory");
    for (int p = 0; p < nparts; p++) {
        int64_t hi;
        CHECK(kn_kafka_watermarks(kn_kafka_consumer_handle(cons), s.topic, p, &low[p], &hi,
                                  10000) == KN_OK,
              "watermarks of %s [%d]", s.topic, p);
    }

    /* one trainer per model: before resume reads the parent (lease.c) */
    if (trn_lease_take(reg, s.model, s.lease_ttl, s.lease_wait, &lease, e, sizeof(e)) != KN_OK) {
        kn_log_error("%s", e);
        goto out;
    }
    ctx.s = &s;
    ctx.reg = reg;
    ctx.events = events;
    ctx.metrics = metrics;
    ctx.backend_name = be->name;
    CHECK(trn_resume(&ctx, &b, nparts, low, be, e, sizeof(e)) == KN_OK, "resume: %s", e);
    CHECK(assign_from(cons, &b, s.topic) == KN_OK, "cannot assign %s", s.topic);
    kn_metrics_set(tm.version, ctx.parent_version);
    kn_metrics_set(tm.step, (double)ctx.step);
    kn_model_set_training(ctx.model, 1);
    g_ready = 1;
    kn_log_fields(KN_LOG_INFO,
                  json_pack("{s:s, s:s, s:i, s:s, s:I, s:i, s:I, s:f, s:I}", "model", s.model,
                            "topic", s.topic, "partitions", nparts, "backend", be->name, "params",
                            (json_int_t)kn_model_num_params(ctx.model), "batch", s.batch,
                            "checkpoint_steps", (json_int_t)s.checkpoint_steps,
                            "checkpoint_seconds", s.checkpoint_seconds, "target_steps",
                            (json_int_t)s.target_steps),
                  "training; http port %u", (unsigned)kn_http_server_port(http));

    /* --- the loop: fill a batch, one update, maybe a checkpoint --- */
    double t_ckpt = trn_now(), t_log = trn_now(), win_loss = 0, retry_at = 0;
    int64_t win_steps = 0, win_examples = 0, win_tokens = 0;
    while (!kn_shutdown_requested()) {
        if (trn_lease_renew(reg, s.model, &lease, e, sizeof(e)) != KN_OK) {
            kn_log_error("fenced: stopping without a checkpoint; steps since version %d are "
                         "left to the trainer that holds the lease",
                         ctx.parent_version);
            goto out;
        }
        if (s.target_steps > 0 && ctx.step >= s.target_steps) {
            kn_log_info("target_steps %" PRId64 " reached", s.target_steps);
            break;
        }
        int B = trn_batcher_fill(&b, cons, (int)(s.flush_seconds * 1000));
        if (B > 0) {
            kn_batch batch;
            float loss = 0, gn = 0, lr = 0;
            trn_batcher_batch(&b, &batch);
            kn_model_zero_grad(ctx.model);
            int rc = kn_model_forward(ctx.model, &batch, &loss, e, sizeof(e));
            /* The batcher validated ids and labels, so a failure is a bug:
             * stop without checkpointing this batch (it is trained again on
             * restart). */
            CHECK(rc == KN_OK, "forward: %s", e);
            CHECK(kn_model_backward(ctx.model) == KN_OK, "backward failed");
            CHECK(kn_model_step(ctx.model, &gn, &lr) == KN_OK, "optimizer step failed");
            if (!isfinite(loss)) kn_log_warn("step %" PRId64 ": loss is %f", ctx.step + 1, loss);
            ctx.step++;
            ctx.examples_total += B;
            ctx.loss_sum += loss;
            ctx.loss_n++;
            int64_t toks = batch.T > 0 ? (int64_t)B * batch.T : 0;
            ctx.tokens_total += toks;
            win_loss += loss;
            win_steps++;
            win_examples += B;
            win_tokens += toks;
            kn_metrics_set(tm.step, (double)ctx.step);
            kn_metrics_set(tm.lr, lr);
            kn_metrics_set(tm.grad_norm, gn);
            kn_metrics_add(tm.examples, B);
            kn_metrics_add(tm.tokens, (double)toks);
        } else if (s.idle_exit > 0 && trn_now() - b.last_record >= s.idle_exit) {
            kn_log_info("no data for %.0f s: finishing", s.idle_exit);
            break;
        }
        double now = trn_now();
        if (now - t_log >= s.log_seconds && win_steps > 0) {
            double dt = now - t_log, sps = (double)win_steps / dt;
            const kn_optim *op = kn_model_optim(ctx.model);
            double eta = s.target_steps > 0 ? (double)(s.target_steps - ctx.step) / sps : -1;
            kn_metrics_set(tm.loss, win_loss / (double)win_steps);
            kn_metrics_set(tm.eps, (double)win_examples / dt);
            kn_metrics_set(tm.tps, (double)win_tokens / dt);
            kn_metrics_set(tm.eta, eta);
            kn_metrics_set(tm.skipped, (double)b.bad_shards);
            json_t *f =
                json_pack("{s:I, s:f, s:f, s:f, s:I}", "step", (json_int_t)ctx.step, "loss",
                          win_loss / (double)win_steps, "examples_per_s", (double)win_examples / dt,
                          "lr", (double)kn_optim_lr(&op->cfg, op->step > 0 ? op->step - 1 : 0),
                          "examples_total", (json_int_t)ctx.examples_total);
            if (win_tokens > 0) json_object_set_new(f, "tokens_per_s", json_real(win_tokens / dt));
            if (eta >= 0) json_object_set_new(f, "eta_s", json_real(eta));
            kn_log_fields(KN_LOG_INFO, f, "progress");
            t_log = now;
            win_loss = 0;
            win_steps = win_examples = win_tokens = 0;
        } else if (now - t_log >= s.log_seconds) {
            t_log = now;
        }
        int64_t new_steps = ctx.step - ctx.steps_at_last_ckpt;
        if (new_steps > 0 && now >= retry_at &&
            ((s.checkpoint_steps > 0 && new_steps >= s.checkpoint_steps) ||
             (s.checkpoint_seconds > 0 && now - t_ckpt >= s.checkpoint_seconds))) {
            /* On failure training goes on and the next checkpoint covers the
             * whole range; a registry outage is retried every 30 s. */
            retry_at = checkpoint(&ctx, &tm, cons, 1) == KN_OK ? 0 : trn_now() + 30;
            t_ckpt = trn_now();
        }
    }
    /* SIGTERM, target or idle: a final checkpoint when anything is new. */
    if (ctx.step > ctx.steps_at_last_ckpt && checkpoint(&ctx, &tm, cons, 3) != KN_OK) {
        kn_log_error("final checkpoint failed: steps since version %d will be retrained on "
                     "restart",
                     ctx.parent_version);
        goto out;
    }
    exit_code = 0;
    kn_log_info("stopped at step %" PRId64 " (version %d)", ctx.step, ctx.parent_version);
out:
    g_ready = 0;
    trn_lease_release(reg, s.model, &lease);
    trn_batcher_free(&b); /* holds a consumer message: before the consumer goes */
    kn_kafka_consumer_destroy(cons);
    kn_kafka_producer_destroy(events, 5000);
    kn_http_server_destroy(http);
    kn_model_destroy(ctx.model);
    kn_regclient_destroy(reg);
    kn_metrics_destroy(metrics);
    trn_settings_free(&s);
    kn_config_destroy(cfg);
    free(low);
    return exit_code;
}
