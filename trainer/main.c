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
#include <unistd.h>

#include "core/kn.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/shutdown.h"
#include "net/regclient.h"
#include "nn/backend.h"
#include "nn/precision.h"
#include "nn/safetensors.h"
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
    {"exit-at-epoch-end", 'E', NULL,
     "epochs mode: checkpoint and exit once this process\nhas finished an epoch (deploy/run "
     "without --follow)"},
    {"log-level", 'l', "LEVEL", "debug | info | warn | error (default log.level)"},
    {"reproduce", 'r', "VERSION",
     "retrain VERSION of --model from its lineage on the CPU\nand compare the checkpoint's "
     "SHA-256 with the registered\none (kilnctl reproduce runs this); trains nothing new"},
    {"from-dir", 'f', "DIR",
     "train from the shard files of `kiln-preprocess export` in DIR:\n"
     "no Kafka, no registry (docs/trainer.md, \"Training from files\")"},
    {"out-dir", 'o', "DIR", "with --from-dir: where checkpoints and lineage go (default .)"},
    {"passes", 'P', "N",
     "with --from-dir: passes over the files (default 1; with\nepochs >= 1 it is the epoch count)"},
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
    int reproduce;   /* --reproduce VERSION */
    int exit_at_epoch_end;
    /* epochs mode: the cycle after the current one */
    int next_cycle;
    int64_t *prev_hi; /* (nparts) end of the last finished cycle; NULL: cycle 0 pending */
    const char *from_dir, *out_dir; /* --from-dir: training from files (source_files.c) */
    long passes;
    trn_files *files;
    int64_t graph_steps; /* updates of this process that ran as one device graph */
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
    case 'E':
        t->exit_at_epoch_end = 1;
        return 0;
    case 'r':
        t->reproduce = (int)strtol(arg, NULL, 10);
        if (t->reproduce >= 1) return 0;
        kn_service_usage_error(svc, "--reproduce %s: a version number >= 1", arg);
        return 1;
    case 'f':
        t->from_dir = arg;
        return 0;
    case 'o':
        t->out_dir = arg;
        return 0;
    case 'P':
        t->passes = strtol(arg, NULL, 10);
        if (t->passes >= 1 && t->passes <= 100000) return 0;
        kn_service_usage_error(svc, "--passes %s: use 1..100000", arg);
        return 1;
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
        *skipped, *version, *eta, *epoch, *cycle, *graph_steps;
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
    tm->graph_steps = kn_metrics_counter(m, "kiln_trainer_graph_steps_total",
                                         "Updates replayed as one device graph (CUDA)", l);
    tm->skipped = kn_metrics_gauge(m, "kiln_trainer_bad_shards",
                                   "Shards skipped as unusable by this process", l);
    tm->version = kn_metrics_gauge(m, "kiln_trainer_version",
                                   "Registry version of the last "
                                   "checkpoint (or the one resumed from)",
                                   l);
    tm->epoch = kn_metrics_gauge(m, "kiln_trainer_epoch",
                                 "Epoch in progress of the current cycle (0: stream mode)", l);
    tm->cycle = kn_metrics_gauge(m, "kiln_trainer_cycle",
                                 "Cycle (0: the window, then one per replay) in epochs mode", l);
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
            if (c) commit_for_monitoring(c, ctx->batcher, ctx->s->topic);
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

static void log_progress(trainer *t, trn_metrics *tm, const window *w, double now)
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
    if (t->graph_steps > 0) json_object_set_new(f, "graph_steps", json_integer(t->graph_steps));
    kn_log_fields(KN_LOG_INFO, f, "progress");
}

/* Once per loop turn (both modes): every log_seconds, the progress line
 * and the rate gauges for the updates since the last one. */
static void progress(trainer *t, trn_metrics *tm, window *w, double now)
{
    if (now - w->t < t->s.log_seconds) return;
    if (w->steps > 0) log_progress(t, tm, w, now);
    *w = (window){.t = now};
}

/* Before each update (both modes): 1 to train on, 0 when target_steps is
 * reached, -1 when fenced (the lease was taken over: stop at once, without
 * a checkpoint). */
static int may_train(trainer *t)
{
    char e[768];
    if (t->reg && trn_lease_renew(t->reg, t->s.model, &t->lease, e, sizeof(e)) != KN_OK) {
        kn_log_error("fenced: stopping without a checkpoint; steps since version %d are "
                     "left to the trainer that holds the lease",
                     t->ctx.parent_version);
        return -1;
    }
    if (t->s.target_steps > 0 && t->ctx.step >= t->s.target_steps) {
        kn_log_info("target_steps %" PRId64 " reached", t->s.target_steps);
        return 0;
    }
    return 1;
}

/* One update on the batch the batcher just filled. 0, or 1 on a bug-level
 * failure (stop without checkpointing this batch: it is trained again). */
static int train_batch(trainer *t, trn_metrics *tm, window *w)
{
    trn_ckpt_ctx *ctx = &t->ctx;
    char e[768];
    kn_batch batch;
    float loss = 0, gn = 0, lr = 0;
    trn_batcher_batch(&t->b, &batch);
    int B = batch.B;
    /* zero_grad, forward, backward and the update in one call: on CUDA an
     * MLP or CNN step replays as one graph (KILN_CUDA_GRAPH=0: op by op).
     * The batcher validated ids and labels, so a failure is a bug. */
    CHECK(kn_model_train_step(ctx->model, &batch, &loss, &gn, &lr, e, sizeof(e)) == KN_OK,
          "training step: %s", e);
    const int graph = kn_model_last_step_graph(ctx->model);
    t->graph_steps += graph;
    if (tm) kn_metrics_add(tm->graph_steps, graph);
    if (!isfinite(loss)) kn_log_warn("step %" PRId64 ": loss is %f", ctx->step + 1, loss);
    int64_t toks = batch.T > 0 ? (int64_t)B * batch.T : 0;
    ctx->step++;
    ctx->examples_total += B;
    ctx->loss_sum += loss;
    ctx->loss_n++;
    ctx->tokens_total += toks;
    if (w) {
        w->loss += loss;
        w->steps++;
        w->examples += B;
        w->tokens += toks;
    }
    if (tm) {
        kn_metrics_set(tm->step, (double)ctx->step);
        kn_metrics_set(tm->lr, lr);
        kn_metrics_set(tm->grad_norm, gn);
        kn_metrics_add(tm->examples, B);
        kn_metrics_add(tm->tokens, (double)toks);
    }
    return 0;
}

/* The configured augmentation, once the batcher knows the model's input. */
static int setup_augment(trainer *t)
{
    const trn_settings *s = &t->s;
    if (!s->aug_hflip && !s->aug_crop) return 0;
    /* drawn per epoch by the trainer: image models with a CHW layout */
    CHECK(s->epochs > 0 && t->b.input == TRN_IN_IMAGE && t->b.C > 0,
          "[model.%s] augment: needs epochs >= 1 and a cnn model (image input [C, H, W])",
          s->model);
    t->b.aug_hflip = s->aug_hflip;
    t->b.aug_crop = s->aug_crop;
    t->b.aug_tmp = malloc((size_t)t->b.in_numel * sizeof(float));
    CHECK(t->b.aug_tmp, "out of memory");
    return 0;
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
    /* auto: CUDA when a GPU answers, else the CPU (logged by kn_backend_pick) */
    const kn_backend *be = kn_backend_pick(s->backend);
    CHECK(be,
          "trainer.backend = cuda, but the CUDA backend is not available: %s "
          "(set trainer.backend = cpu or auto)",
          kn_backend_why_not("cuda"));
    /* precision (nn/precision.h): the CPU backend trains in fp32 only (its
     * tf32/bf16 tables are an emulation for tests: slower, no gain) */
    CHECK(s->precision == KN_PREC_FP32 || strcmp(be->name, "cpu") != 0,
          "trainer.precision = %s needs the cuda backend, but trainer.backend = %s runs on the "
          "cpu, which trains in fp32 only (set trainer.precision = fp32, or trainer.backend = "
          "cuda on a machine with a GPU)",
          kn_precision_name((kn_precision)s->precision), s->backend);
    be = kn_backend_with_precision(be, (kn_precision)s->precision, e, sizeof(e));
    CHECK(be, "trainer.precision: %s", e);
    if (s->precision != KN_PREC_FP32)
        kn_log_info("trainer.precision = %s: the linear/conv GEMMs round their inputs to it; "
                    "weights, optimizer state and checkpoints stay fp32",
                    kn_precision_name((kn_precision)s->precision));

    metrics_init(tm, kn_service_metrics(svc), s->model);
    kn_metrics_set(tm->eta, -1);
    if (t->from_dir) { /* no Kafka, no registry, no HTTP: source_files.c */
        trn_ckpt_ctx *ctx = &t->ctx;
        ctx->s = s;
        ctx->metrics = kn_service_metrics(svc);
        ctx->backend_name = be->name;
        CHECK(trn_files_start(&t->files, t->from_dir, t->out_dir, (int)t->passes, s, ctx, &t->b,
                              be, e, sizeof(e)) == KN_OK,
              "%s", e);
        if (setup_augment(t) != 0) return 1;
        kn_model_set_training(ctx->model, 1);
        return 0;
    }
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
    ctx->backend = be;
    CHECK(trn_resume(ctx, &t->b, nparts, t->low, be, e, sizeof(e)) == KN_OK, "resume: %s", e);
    if (setup_augment(t) != 0) return 1;
    if (s->epochs == 0) /* epochs mode reads each cycle with its own consumer (window.c) */
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

/* --- epochs mode (window.c): cycles over a window, then replay cycles --- */

static void window_metrics(trainer *t, trn_metrics *tm)
{
    const trn_window *w = &t->b.win;
    kn_metrics_set(tm->epoch, w->active && !trn_window_done(w) ? w->epoch : 0);
    kn_metrics_set(tm->cycle, w->cycle);
}

static void window_loaded(trainer *t, const int64_t *hi)
{
    for (int p = 0; p < t->b.nparts; p++)
        t->b.parts[p].next_offset = hi[p]; /* monitoring commits: the cycle's end */
}

/* Per partition: the low and high watermarks now (from files: the
 * exported range, which never grows). */
static int watermarks(trainer *t, int64_t *low, int64_t *high)
{
    if (t->files) {
        trn_files_bounds(t->files, low, high);
        return 0;
    }
    for (int p = 0; p < t->b.nparts; p++)
        if (kn_kafka_watermarks(kn_kafka_consumer_handle(t->cons), t->s.topic, p, &low[p],
                                &high[p], 10000) != KN_OK) {
            kn_log_warn("watermarks of %s [%d]: not available now", t->s.topic, p);
            return -1;
        }
    return 0;
}

/* A lineage cycle's [{partition, start, end}] (its ranges, or its replay
 * pool) into lo/hi of n partitions; a partition not listed keeps its value. */
static void lineage_ranges(const json_t *arr, int n, int64_t *lo, int64_t *hi)
{
    size_t i;
    json_t *r;
    json_array_foreach(arr, i, r)
    {
        int p = (int)json_integer_value(json_object_get(r, "partition"));
        if (p < 0 || p >= n) continue;
        lo[p] = json_integer_value(json_object_get(r, "start"));
        hi[p] = json_integer_value(json_object_get(r, "end"));
    }
}

/* The cycle the resumed lineage was in: reloaded at its cursor, or (when it
 * was finished) remembered as the end the next replay cycle starts from. */
static int window_resume(trainer *t, char *e, size_t esz)
{
    const json_t *L = t->ctx.resume_lineage;
    const char *mode = json_string_value(json_object_get(L, "mode"));
    json_t *cyc = json_object_get(L, "cycle"), *cur = json_object_get(L, "cursor");
    if (!mode || strcmp(mode, "epochs") != 0 || !json_is_object(cyc) || !json_is_object(cur) ||
        strcmp(json_string_value(json_object_get(L, "topic")) ?: "", t->s.topic) != 0)
        return 0; /* stream-mode (or another topic's) version: cycle 0 from the window */
    int n = t->b.nparts;
    int64_t *lo = calloc((size_t)n, 8), *hi = calloc((size_t)n, 8), *plo = calloc((size_t)n, 8),
            *phi = calloc((size_t)n, 8);
    int rc = KN_OK;
    if (!lo || !hi || !plo || !phi) {
        rc = kn_seterr(e, esz, KN_ENOMEM, "out of memory");
        goto out;
    }
    lineage_ranges(json_object_get(cyc, "ranges"), n, lo, hi);
    json_t *rp = json_object_get(cyc, "replay");
    lineage_ranges(json_object_get(rp, "pool"), n, plo, phi);
    int cycle = (int)json_integer_value(json_object_get(cyc, "n"));
    if (json_is_true(json_object_get(cur, "done"))) {
        t->next_cycle = cycle + 1;
        t->prev_hi = hi;
        hi = NULL;
        kn_log_info("version %d finished cycle %d; waiting for records after it",
                    t->ctx.parent_version, cycle);
        goto out;
    }
    int passes = (int)json_integer_value(json_object_get(cyc, "passes"));
    int replay = json_is_object(rp);
    if ((rc = trn_window_load(&t->b, &t->s, cycle, replay, passes, lo, hi, plo, phi,
                              json_object_get(rp, "shards"), e, esz)) != KN_OK)
        goto out;
    trn_window_seek(&t->b, (int)json_integer_value(json_object_get(cur, "epoch")),
                    (int)json_integer_value(json_object_get(cur, "index")),
                    (uint32_t)json_integer_value(json_object_get(cur, "pos")));
    window_loaded(t, hi);
    t->next_cycle = cycle + 1;
    kn_log_info("resuming cycle %d at epoch %d, shard %d, example %d", cycle, t->b.win.epoch,
                t->b.win.index, (int)t->b.win.pos);
    rc = 1;
out:
    free(lo);
    free(hi);
    free(plo);
    free(phi);
    return rc;
}

/* A loaded window whose new offsets hold no example (only transaction
 * markers, records of an aborted transaction) is not a cycle: a cycle of
 * nothing would move the next cycle's ranges past those offsets (a gap in
 * the lineage's chain) or replay old examples for no new one. 1 when the
 * window has new examples; 0 after freeing it. The one rule for cycle 0 and
 * replay cycles. */
static int window_has_new_examples(trainer *t)
{
    trn_window *w = &t->b.win;
    if (w->pass_examples - w->replay_examples > 0) return 1;
    static int said;
    if (!said++)
        kn_log_info("the new offsets hold no examples yet (transaction markers or aborted "
                    "records): waiting for records");
    trn_window_free(w);
    return 0;
}

/* Cycle 0: the configured window of what the topic holds now. 1 when
 * loaded, 0 when the window is still empty, <0 on error. */
static int window_first(trainer *t, char *e, size_t esz)
{
    int n = t->b.nparts, rc = 0;
    int64_t *low = calloc((size_t)n, 8), *high = calloc((size_t)n, 8), *lo = calloc((size_t)n, 8),
            *hi = calloc((size_t)n, 8);
    if (!low || !high || !lo || !hi || watermarks(t, low, high) != 0) goto out;
    int64_t total = 0;
    for (int p = 0; p < n; p++) {
        if (t->s.window_kind == TRN_WIN_ALL) {
            lo[p] = low[p];
            hi[p] = high[p];
        } else if (t->s.window_kind == TRN_WIN_LAST) {
            hi[p] = high[p];
            lo[p] = high[p] - t->s.window_last > low[p] ? high[p] - t->s.window_last : low[p];
        } else {
            int nr;
            trn_window_fixed(t->s.window, p, &lo[p], &hi[p], &nr);
            if (lo[p] < low[p] && lo[p] < hi[p]) {
                kn_log_error("window %d:%" PRId64 "-%" PRId64 ": offsets below %" PRId64
                             " were deleted by retention; the window starts there",
                             p, lo[p], hi[p], low[p]);
                lo[p] = low[p] < hi[p] ? low[p] : hi[p];
            }
            if (hi[p] > high[p]) { /* a fixed window waits for its records to exist */
                total = 0;
                goto out;
            }
        }
        total += hi[p] - lo[p];
    }
    if (total <= 0) goto out;
    if ((rc = trn_window_load(&t->b, &t->s, 0, 0, t->s.epochs, lo, hi, NULL, NULL, NULL, e,
                              esz)) != KN_OK)
        goto out;
    if (t->s.window_kind != TRN_WIN_FIXED && !window_has_new_examples(t))
        goto out; /* rc is KN_OK (0): nothing loaded */
    window_loaded(t, hi);
    t->next_cycle = 1;
    rc = 1;
out:
    free(low);
    free(high);
    free(lo);
    free(hi);
    return rc;
}

/* The weights a replay cycle starts from: production (when configured and
 * it is not the latest already), else the latest. */
static int replay_weights(trainer *t, char *e, size_t esz)
{
    trn_ckpt_ctx *ctx = &t->ctx;
    ctx->parent_relation = "replay";
    if (strcmp(t->s.replay_from, "production") != 0) return KN_OK;
    json_t *a = NULL, *doc = NULL, *meta = NULL;
    char ee[512];
    if (kn_regclient_get_alias(t->reg, t->s.model, "production", &a, ee, sizeof(ee)) != KN_OK) {
        kn_log_info("replay: no production version of %s; starting from version %d",
                    t->s.model, ctx->parent_version);
        return KN_OK;
    }
    int pv = (int)json_integer_value(json_object_get(a, "version"));
    json_decref(a);
    if (pv <= 0 || pv == ctx->parent_version) return KN_OK;
    kn_model *m = NULL;
    int rc = kn_regclient_get_version(t->reg, t->s.model, pv, &doc, ee, sizeof(ee));
    if (rc == KN_OK) rc = trn_load_version(ctx, t->s.model, pv, ctx->backend, &m, &meta, ee, sizeof(ee));
    if (rc != KN_OK) {
        json_decref(doc);
        return kn_seterr(e, esz, rc, "replay from production version %d: %s", pv, ee);
    }
    kn_model_destroy(ctx->model);
    ctx->model = m;
    if (!kn_model_optim(m) && (rc = trn_attach_optim(ctx, e, esz)) != KN_OK) {
        json_decref(doc);
        json_decref(meta);
        return rc;
    }
    kn_model_set_training(m, 1);
    json_t *lin = json_object_get(doc, "lineage");
    ctx->step = kn_model_optim(m)->step;
    ctx->steps_at_last_ckpt = ctx->step;
    ctx->examples_total = json_integer_value(json_object_get(lin, "examples_total"));
    ctx->tokens_total = json_integer_value(json_object_get(lin, "tokens_total"));
    kn_log_info("replay: warm start from production version %d (latest is %d)", pv,
                ctx->parent_version);
    ctx->parent_version = pv;
    snprintf(ctx->parent_model, sizeof(ctx->parent_model), "%s", t->s.model);
    json_decref(doc);
    json_decref(meta);
    return KN_OK;
}

/* A replay cycle when at least replay_min_records offsets arrived after the
 * last cycle and they hold examples: 1 started, 0 not yet, <0 error. */
static int window_replay(trainer *t, char *e, size_t esz)
{
    if (t->s.window_kind == TRN_WIN_FIXED || !t->prev_hi) return 0;
    int n = t->b.nparts, rc = 0;
    int64_t *low = calloc((size_t)n, 8), *high = calloc((size_t)n, 8), *plo = calloc((size_t)n, 8);
    if (!low || !high || !plo || watermarks(t, low, high) != 0) goto out;
    int64_t fresh = 0;
    for (int p = 0; p < n; p++)
        fresh += high[p] > t->prev_hi[p] ? high[p] - t->prev_hi[p] : 0;
    if (fresh < t->s.replay_min_records) goto out;
    for (int p = 0; p < n; p++) {
        plo[p] = low[p];
        if (t->s.window_kind == TRN_WIN_LAST && t->prev_hi[p] - t->s.window_last > plo[p])
            plo[p] = t->prev_hi[p] - t->s.window_last;
        if (plo[p] > t->prev_hi[p]) plo[p] = t->prev_hi[p];
        if (high[p] < t->prev_hi[p]) high[p] = t->prev_hi[p];
    }
    if ((rc = trn_window_load(&t->b, &t->s, t->next_cycle, 1, t->s.replay_passes, t->prev_hi,
                              high, plo, t->prev_hi, NULL, e, esz)) != KN_OK)
        goto out;
    if (!window_has_new_examples(t)) goto out; /* rc is KN_OK (0): not yet */
    if ((rc = replay_weights(t, e, esz)) != KN_OK) {
        trn_window_free(&t->b.win);
        goto out;
    }
    window_loaded(t, high);
    t->next_cycle++;
    rc = 1;
out:
    free(low);
    free(high);
    free(plo);
    return rc;
}

static int run_epochs(kn_service *svc, trainer *t, trn_metrics *tm)
{
    (void)svc;
    trn_settings *s = &t->s;
    trn_ckpt_ctx *ctx = &t->ctx;
    char e[768];
    int rc = window_resume(t, e, sizeof(e));
    CHECK(rc >= 0, "resuming the window: %s", e);
    double t_ckpt = trn_now(), retry_at = 0, next_look = 0, idle_since = trn_now();
    window w = {.t = trn_now()};
    while (!kn_shutdown_requested()) {
        int go = may_train(t);
        if (go < 0) return 1;
        if (go == 0) break;
        int B = 0;
        if (t->b.win.active && !trn_window_done(&t->b.win)) {
            B = trn_window_fill(&t->b);
            if (B > 0 && train_batch(t, tm, &w) != 0) return 1;
            idle_since = trn_now();
        } else if (ctx->step > ctx->steps_at_last_ckpt) {
            /* the cycle ended: its last version before anything else */
            kn_service_nap(0.1);
        } else if (trn_now() >= next_look) {
            if (t->files && t->b.win.active && trn_window_done(&t->b.win)) {
                kn_log_info("the export's window is trained: %d epochs (version %d)",
                            t->b.win.passes, ctx->parent_version);
                break; /* files never grow: no replay cycle will come */
            }
            if (t->b.win.active && trn_window_done(&t->b.win)) {
                free(t->prev_hi);
                t->prev_hi = malloc((size_t)t->b.nparts * sizeof(int64_t));
                CHECK(t->prev_hi, "out of memory");
                memcpy(t->prev_hi, t->b.win.hi, (size_t)t->b.nparts * sizeof(int64_t));
                trn_window_free(&t->b.win); /* the records go; the next cycle reads its own */
                kn_log_info("cycle %d done at step %" PRId64 " (version %d); waiting for new "
                            "records",
                            t->next_cycle - 1, ctx->step, ctx->parent_version);
            }
            rc = t->prev_hi ? window_replay(t, e, sizeof(e)) : window_first(t, e, sizeof(e));
            CHECK(rc >= 0, "loading the next cycle: %s", e);
            CHECK(rc > 0 || !t->files,
                  "[model.%s] window = %s selects no records of the export in %s (or records "
                  "past its end)",
                  s->model, s->window, t->from_dir);
            next_look = trn_now() + (rc ? 0 : (s->flush_seconds > 0.5 ? s->flush_seconds : 0.5));
            if (rc) idle_since = trn_now();
            else if (s->idle_exit > 0 && trn_now() - idle_since >= s->idle_exit) {
                kn_log_info("no new records for %.0f s: finishing", s->idle_exit);
                break;
            } else
                kn_service_nap(0.2);
        } else {
            kn_service_nap(0.1);
        }
        window_metrics(t, tm);
        double now = trn_now();
        progress(t, tm, &w, now);
        int64_t new_steps = ctx->step - ctx->steps_at_last_ckpt;
        int cycle_over = !t->b.win.active || trn_window_done(&t->b.win);
        if (new_steps > 0 && now >= retry_at &&
            (t->b.win.epoch_end || cycle_over ||
             (s->checkpoint_steps > 0 && new_steps >= s->checkpoint_steps) ||
             (s->checkpoint_seconds > 0 && now - t_ckpt >= s->checkpoint_seconds))) {
            /* every epoch's end is a version (the evaluator sees each epoch) */
            int ended = t->b.win.epoch_end;
            retry_at = checkpoint(ctx, tm, t->cons, 1) == KN_OK ? 0 : trn_now() + 30;
            t_ckpt = trn_now();
            if (retry_at == 0) t->b.win.epoch_end = 0;
            if (retry_at == 0 && ended && t->exit_at_epoch_end) {
                kn_log_info("--exit-at-epoch-end: epoch %d done (version %d); exiting",
                            t->b.win.epoch - 1, ctx->parent_version);
                break;
            }
        }
    }
    CHECK(ctx->step <= ctx->steps_at_last_ckpt || checkpoint(ctx, tm, t->cons, 3) == KN_OK,
          "final checkpoint failed: steps since version %d will be retrained on restart",
          ctx->parent_version);
    kn_log_info("stopped at step %" PRId64 " (version %d)", ctx->step, ctx->parent_version);
    return 0;
}

static int reproduce(kn_service *svc, trainer *t);

/* --- --reproduce VERSION: the version's exact training, again, on the CPU --- */

static const char *lin_str(const json_t *o, const char *k)
{
    const char *v = json_string_value(json_object_get(o, k));
    return v ? v : "";
}

/* Where two safetensors files differ: the header (metadata, shapes) or the
 * tensor bytes. */
static void diff_detail(const unsigned char *a, size_t alen, const char *path, char *out,
                        size_t outsz)
{
    size_t blen = 0;
    unsigned char *b = NULL;
    char e[256];
    if (kn_safetensors_read_file(path, SIZE_MAX, &b, &blen, e, sizeof(e)) != KN_OK) blen = 0;
    if (alen < 8 || blen < 8) {
        snprintf(out, outsz, "the registered artifact could not be read");
        free(b);
        return;
    }
    uint64_t ha = 0, hb = 0;
    for (int i = 7; i >= 0; i--) {
        ha = ha << 8 | a[i];
        hb = hb << 8 | b[i];
    }
    int head_same = ha == hb && 8 + ha <= alen && 8 + hb <= blen && memcmp(a, b, 8 + ha) == 0;
    size_t da = alen - (size_t)(8 + ha), db = blen - (size_t)(8 + hb);
    int data_same = da == db && 8 + ha <= alen && 8 + hb <= blen &&
                    memcmp(a + 8 + ha, b + 8 + hb, da) == 0;
    size_t first = 0;
    if (!data_same && da == db)
        while (first < da && a[8 + ha + first] == b[8 + hb + first]) first++;
    if (head_same)
        snprintf(out, outsz, "the header is identical; the tensor data differ from byte %zu of %zu",
                 first, da);
    else if (data_same)
        snprintf(out, outsz, "the tensor data are identical; the header (metadata) differs "
                 "(a different build, or lineage summary)");
    else
        snprintf(out, outsz, "both the header and the tensor data differ%s",
                 da == db ? "" : " (different sizes)");
    free(b);
}

static int reproduce(kn_service *svc, trainer *t)
{
    char e[768];
    trn_settings *s = &t->s;
    trn_ckpt_ctx *ctx = &t->ctx;
    json_t *doc = NULL, *pdoc = NULL, *meta = NULL, *lin_out = NULL;
    unsigned char *buf = NULL;
    size_t len = 0;
    int rc = 1, V = t->reproduce;
    CHECK(trn_settings_load(kn_service_config(svc), t->model_name, s, e, sizeof(e)) == KN_OK,
          "config: %s", e);
    t->reg = kn_regclient_new(s->registry_url, s->registry_token[0] ? s->registry_token : NULL);
    CHECK(t->reg, "registry client");
    CHECK(kn_regclient_get_version(t->reg, s->model, V, &doc, e, sizeof(e)) == KN_OK,
          "%s version %d: %s", s->model, V, e);
    json_t *L = json_object_get(doc, "lineage");
    const char *want = json_string_value(json_object_get(json_object_get(doc, "artifact"), "sha256"));
    json_t *cyc = json_object_get(L, "cycle"), *cur = json_object_get(L, "cursor");
    json_t *ep0 = json_array_get(json_object_get(L, "epochs"), 0);
    if (!want || strcmp(lin_str(L, "mode"), "epochs") != 0 || !cyc || !cur || !ep0) {
        printf("{\"model\":\"%s\",\"version\":%d,\"reproducible\":false,\"reason\":\"%s\"}\n",
               s->model, V,
               !want ? "the version has no artifact"
                     : "a stream-mode version (schema 1, or epochs = 0): the interleaving of "
                       "partitions as they arrived is not recorded, so its batches cannot be "
                       "rebuilt; versions trained with epochs >= 1 are reproducible");
        json_decref(doc);
        return 7;
    }
    /* the model keys come from the lineage, the config gives Kafka and the registry */
    snprintf(s->dataset, sizeof(s->dataset), "%s", lin_str(L, "dataset"));
    snprintf(s->topic, sizeof(s->topic), "%s", lin_str(L, "topic"));
    json_decref(s->spec);
    s->spec = json_deep_copy(json_object_get(L, "spec"));
    json_decref(s->optim);
    s->optim = json_deep_copy(json_object_get(L, "optim"));
    s->batch = (int)json_integer_value(json_object_get(L, "batch"));
    s->seed = (uint64_t)json_integer_value(json_object_get(L, "seed"));
    s->shuffle = json_is_true(json_object_get(L, "shuffle"));
    json_t *aug = json_object_get(L, "augment");
    s->aug_hflip = json_is_true(json_object_get(aug, "hflip"));
    s->aug_crop = (int)json_integer_value(json_object_get(aug, "crop"));
    snprintf(s->window, sizeof(s->window), "%s", lin_str(cyc, "window"));
    json_t *rp = json_object_get(cyc, "replay");
    if (json_is_object(rp)) {
        s->replay_ratio = json_real_value(json_object_get(rp, "ratio"));
        snprintf(s->replay_from, sizeof(s->replay_from), "%s", lin_str(rp, "from"));
    }
    json_t *pre = json_object_get(L, "preprocess");
    snprintf(s->tokenizer_hash, sizeof(s->tokenizer_hash), "%s", lin_str(pre, "tokenizer_sha256"));
    snprintf(s->recipe, sizeof(s->recipe), "%s", lin_str(pre, "recipe_sha256"));

    const kn_backend *be = kn_backend_pick("cpu");
    CHECK(be, "no CPU backend");
    ctx->s = s;
    ctx->reg = t->reg;
    ctx->backend = be;
    ctx->backend_name = be->name;
    /* the starting point: the parent's checkpoint, or the spec's seeded init */
    json_t *par = json_object_get(L, "parent");
    const char *rel = lin_str(par, "relation");
    if (!json_is_object(par)) {
        CHECK(kn_model_new(s->spec, s->seed, s->batch, be, &ctx->model, e, sizeof(e)) == KN_OK,
              "spec: %s", e);
        CHECK(trn_attach_optim(ctx, e, sizeof(e)) == KN_OK, "%s", e);
        snprintf(ctx->parent_model, sizeof(ctx->parent_model), "%s", s->model);
        ctx->parent_relation = "resume";
    } else {
        const char *pm = lin_str(par, "model");
        int pv = (int)json_integer_value(json_object_get(par, "version"));
        CHECK(trn_load_version(ctx, pm, pv, be, &ctx->model, &meta, e, sizeof(e)) == KN_OK, "%s",
              e);
        snprintf(ctx->parent_model, sizeof(ctx->parent_model), "%s", pm);
        ctx->parent_version = pv;
        static char relbuf[32];
        snprintf(relbuf, sizeof(relbuf), "%s", rel);
        ctx->parent_relation = relbuf;
        if (strcmp(rel, "warm_start") == 0 || !kn_model_optim(ctx->model)) {
            CHECK(trn_attach_optim(ctx, e, sizeof(e)) == KN_OK, "%s", e);
        } else {
            CHECK(kn_regclient_get_version(t->reg, pm, pv, &pdoc, e, sizeof(e)) == KN_OK,
                  "%s version %d: %s", pm, pv, e);
            json_t *pl = json_object_get(pdoc, "lineage");
            ctx->examples_total = json_integer_value(json_object_get(pl, "examples_total"));
            ctx->tokens_total = json_integer_value(json_object_get(pl, "tokens_total"));
        }
    }
    ctx->step = kn_model_optim(ctx->model)->step;
    kn_model_set_training(ctx->model, 1);
    int nparts = (int)json_array_size(json_object_get(L, "partitions"));
    CHECK(nparts > 0, "version %d: lineage without partitions", V);
    CHECK(trn_batcher_init(&t->b, ctx->model, s->batch, nparts, s->seed, s->shuffle, e,
                           sizeof(e)) == KN_OK,
          "%s", e);
    ctx->batcher = &t->b;
    if ((s->aug_hflip || s->aug_crop) && t->b.input == TRN_IN_IMAGE && t->b.C > 0) {
        t->b.aug_hflip = s->aug_hflip;
        t->b.aug_crop = s->aug_crop;
        t->b.aug_tmp = malloc((size_t)t->b.in_numel * sizeof(float));
    }
    int64_t *lo = calloc((size_t)nparts, 8), *hi = calloc((size_t)nparts, 8),
            *plo = calloc((size_t)nparts, 8), *phi = calloc((size_t)nparts, 8);
    CHECK(lo && hi && plo && phi, "out of memory");
    lineage_ranges(json_object_get(cyc, "ranges"), nparts, lo, hi);
    lineage_ranges(json_object_get(rp, "pool"), nparts, plo, phi);
    double t0 = trn_now();
    rc = trn_window_load(&t->b, s, (int)json_integer_value(json_object_get(cyc, "n")),
                         json_is_object(rp), (int)json_integer_value(json_object_get(cyc, "passes")),
                         lo, hi, plo, phi, json_object_get(rp, "shards"), e, sizeof(e));
    free(lo);
    free(hi);
    free(plo);
    free(phi);
    CHECK(rc == KN_OK, "reading the lineage's ranges: %s", e);
    json_t *st = json_object_get(ep0, "start");
    trn_window_seek(&t->b, (int)json_integer_value(json_object_get(ep0, "epoch")),
                    (int)json_integer_value(json_object_get(st, "index")),
                    (uint32_t)json_integer_value(json_object_get(st, "pos")));
    t->b.win.stop_epoch = (int)json_integer_value(json_object_get(cur, "epoch"));
    t->b.win.stop_index = (int)json_integer_value(json_object_get(cur, "index"));
    t->b.win.stop_pos = (uint32_t)json_integer_value(json_object_get(cur, "pos"));
    int64_t trained = 0;
    while (!kn_shutdown_requested()) {
        int B = trn_window_fill(&t->b);
        if (B == 0) {
            if (trn_window_done(&t->b.win) || (t->b.win.epoch == t->b.win.stop_epoch &&
                                               t->b.win.index == t->b.win.stop_index &&
                                               t->b.win.pos == t->b.win.stop_pos))
                break;
            continue; /* an epoch boundary */
        }
        if (train_batch(t, NULL, NULL) != 0) return 1;
        trained += B;
    }
    char sha[KN_SHA256_HEX_LEN];
    CHECK(trn_checkpoint_bytes(ctx, &lin_out, &buf, &len, sha, e, sizeof(e)) == KN_OK, "%s", e);
    int same = strcmp(sha, want) == 0;
    char detail[1200] = "bit-identical";
    if (!same) {
        char path[700];
        snprintf(path, sizeof(path), "%s/kiln-trainer-%s-%d.registered.safetensors", s->work_dir,
                 s->model, (int)getpid());
        char sh2[KN_SHA256_HEX_LEN];
        if (kn_regclient_download_artifact(t->reg, s->model, V, path, sh2, e, sizeof(e)) == KN_OK)
            diff_detail(buf, len, path, detail, sizeof(detail));
        else
            snprintf(detail, sizeof(detail), "could not download the registered artifact: %.300s", e);
        unlink(path);
        int64_t want_ex = json_integer_value(json_object_get(L, "examples"));
        if (trained != want_ex) {
            size_t l = strlen(detail);
            snprintf(detail + l, sizeof(detail) - l, "; trained %" PRId64 " examples, the lineage "
                     "says %" PRId64, trained, want_ex);
        }
        if (strcmp(lin_str(pre, "recipe_sha256"), t->b.recipe[0] ? t->b.recipe : lin_str(pre, "recipe_sha256")) != 0) {
            size_t l = strlen(detail);
            snprintf(detail + l, sizeof(detail) - l, "; the shards' recipe-sha256 is %s, the "
                     "lineage's %s", t->b.recipe, lin_str(pre, "recipe_sha256"));
        }
    }
    json_t *rep = json_pack("{s:s, s:i, s:b, s:s, s:s, s:I, s:I, s:f, s:s, s:s}", "model",
                            s->model, "version", V, "identical", same, "registered_sha256", want,
                            "reproduced_sha256", sha, "examples", (json_int_t)trained, "step",
                            (json_int_t)ctx->step, "seconds", trn_now() - t0, "backend",
                            be->name, "detail", detail);
    char *txt = json_dumps(rep, JSON_COMPACT);
    printf("%s\n", txt ? txt : "{}");
    fflush(stdout);
    free(txt);
    json_decref(rep);
    free(buf);
    json_decref(lin_out);
    json_decref(doc);
    json_decref(pdoc);
    json_decref(meta);
    return same ? 0 : 6;
}

static int run(kn_service *svc, void *app)
{
    trainer *t = app;
    trn_settings *s = &t->s;
    trn_ckpt_ctx *ctx = &t->ctx;
    trn_metrics tm;
    if (t->reproduce) return reproduce(svc, t);
    kn_service_set_nice(svc, "trainer.nice");
    int rc = start(svc, t, &tm);
    if (rc != 0) return rc < 0 ? 0 : 1;
    if (s->epochs > 0) /* from Kafka or from files: window.c reads the cycle */
        return run_epochs(svc, t, &tm);

    /* --- the loop: fill a batch, one update, maybe a checkpoint --- */
    double t_ckpt = trn_now(), retry_at = 0;
    window w = {.t = trn_now()};
    while (!kn_shutdown_requested()) {
        int go = may_train(t);
        if (go < 0) return 1;
        if (go == 0) break;
        int B = trn_batcher_fill(&t->b, t->cons, t->files ? 0 : (int)(s->flush_seconds * 1000));
        if (B > 0) {
            if (train_batch(t, &tm, &w) != 0) return 1;
        } else if (t->files && !kn_shutdown_requested()) { /* the files are read to the end */
            CHECK(ctx->step <= ctx->steps_at_last_ckpt || checkpoint(ctx, &tm, NULL, 3) == KN_OK,
                  "checkpoint at the end of a pass failed");
            if (!trn_files_next_pass(t->files, &t->b)) break;
        } else if (s->idle_exit > 0 && trn_now() - t->b.last_record >= s->idle_exit) {
            kn_log_info("no data for %.0f s: finishing", s->idle_exit);
            break;
        }
        double now = trn_now();
        progress(t, &tm, &w, now);
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
    trn_files_free(t->files); /* after the batcher: its view points into the source's record */
    kn_kafka_consumer_destroy(t->cons);
    kn_kafka_producer_destroy(t->events, 5000);
    kn_model_destroy(t->ctx.model);
    kn_regclient_destroy(t->reg);
    trn_settings_free(&t->s);
    json_decref(t->ctx.resume_lineage);
    json_decref(t->ctx.repro_lineage);
    free(t->prev_hi);
    free(t->low);
}

int main(int argc, char **argv)
{
    static const kn_service_spec spec = {
        .name = "kiln-trainer",
        .version = KN_VERSION " (build " KILN_BUILD_ID ")",
        .usage = "usage: kiln-trainer --model NAME [options]\n"
                 "       kiln-trainer --model NAME --from-dir DIR [--out-dir OUT] [--passes N]\n",
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
            "  tokenizer_sha256, recipe_sha256, epochs, window, replay_ratio,\n"
            "  replay_passes, replay_min_records, replay_from, augment (docs/trainer.md)\n",
        .run = run,
        .cleanup = cleanup,
    };
    trainer t = {.port = -1};
    return kn_service_main(&spec, &t, argc, argv);
}
