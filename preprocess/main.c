/* kiln-preprocess: consumes raw records, cleans, deduplicates, tokenizes or
 * augments them per dataset recipe, and produces shards to
 * <prefix>.train.<dataset> / <prefix>.eval.<dataset>, exactly once (Kafka
 * transactions; see stream.h). Scale by starting more instances with
 * distinct preprocess.instance ids. docs/preprocess.md is the manual. This
 * file is the story: recipes, topics, the transactional producer, the stream
 * until SIGTERM; the skeleton (service/service.h) does the rest. */
#include <malloc.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/kn.h"
#include "core/log.h"
#include "core/shutdown.h"
#include "service/keys.h"
#include "service/service.h"
#include "stream.h"
#include "stream/kafka.h"
#include "stream/record.h"
#include "export_cmd.h"
#include "lag_cmd.h"
#include "tokenizer_cmd.h"

#define MAX_DATASETS 64

static const kn_service_option options[] = {
    {"instance", 'i', "ID",
     "this instance's stable id (preprocess.instance); the transactional.id\n"
     "is kiln-preprocess-<ID>: give every instance its own, keep it on restart"},
    {NULL, 0, NULL, NULL},
};

/* The configuration keys: kn_keys_preprocess in lib/service/keys.c, where the
 * stack-wide check (kn_keys_check) sees every service's keys. */

typedef struct {
    const kn_config *cfg;
    const char *only; /* comma list or NULL */
    char *sections[MAX_DATASETS];
    size_t n;
} section_list;

static int listed(const char *list, const char *name)
{
    size_t n = strlen(name);
    for (const char *p = list; *p;) {
        while (*p == ' ' || *p == ',')
            p++;
        const char *e = p;
        while (*e && *e != ',' && *e != ' ')
            e++;
        if ((size_t)(e - p) == n && strncmp(p, name, n) == 0) return 1;
        p = e;
    }
    return 0;
}

static void add_section(const char *section, void *ctx)
{
    section_list *l = ctx;
    if (strchr(section + 8, '.')) return; /* [dataset.a.b] is not a dataset */
    if (l->only && !listed(l->only, section + 8)) return;
    if (l->n < MAX_DATASETS) l->sections[l->n++] = strdup(section);
}

typedef struct {
    const char *instance; /* --instance */
    pp_metrics metrics;
    pp_env env;
    section_list sl;
    pp_dataset *ds[MAX_DATASETS];
    size_t nds;
    pp_stream *st;
    /* what /readyz says before the stream runs (waiting for Kafka) */
    pthread_mutex_t wmu;
    char waiting[600];
    pp_stream *started; /* st once running: read by /readyz under wmu */
} preprocess;

static int ready(void *ctx, char *why, size_t whysz)
{
    preprocess *pp = ctx;
    pthread_mutex_lock(&pp->wmu);
    pp_stream *st = pp->started;
    snprintf(why, whysz, "%s", pp->waiting[0] ? pp->waiting : "starting");
    pthread_mutex_unlock(&pp->wmu);
    if (!st) return 1;
    return pp_stream_ready(st, why, whysz) ? 0 : 1;
}

static void broker_waiting(void *ctx, const char *why)
{
    preprocess *pp = ctx;
    pthread_mutex_lock(&pp->wmu);
    snprintf(pp->waiting, sizeof(pp->waiting), "waiting for Kafka: %s", why);
    pthread_mutex_unlock(&pp->wmu);
}

static int option(kn_service *svc, void *app, int id, const char *arg)
{
    (void)svc;
    ((preprocess *)app)->instance = arg;
    return id != 'i';
}

/* The topics: outputs and state (compacted) per dataset, the DLQ, and the
 * raw inputs when missing. */
static int create_topics(kn_service *svc, preprocess *pp, char *e, size_t esz)
{
    int ok = 1;
    int outp = (int)kn_service_get_int(svc, "preprocess.output_partitions", &ok);
    int rawp = (int)kn_service_get_int(svc, "ingest.partitions", &ok);
    kn_kafka_topic_spec specs[3 + 3 * MAX_DATASETS];
    char names[3 + 3 * MAX_DATASETS][300];
    size_t nspec = 0;
    const char *fixed[] = {KN_RECORD_TOPIC_TEXT, KN_RECORD_TOPIC_IMAGE, KN_RECORD_TOPIC_DLQ};
    for (int i = 0; i < 3; i++) {
        kn_record_topic(names[nspec], sizeof(names[0]), pp->env.prefix, fixed[i]);
        specs[nspec] = (kn_kafka_topic_spec){names[nspec], i < 2 ? rawp : 1, 0, 0};
        nspec++;
    }
    for (size_t i = 0; i < pp->sl.n; i++) {
        const char *suffix[] = {"train", "eval", "state"};
        for (int k = 0; k < 3; k++) {
            snprintf(names[nspec], sizeof(names[0]), "%s.%s.%s", pp->env.prefix, suffix[k],
                     pp->sl.sections[i] + 8);
            specs[nspec] = (kn_kafka_topic_spec){names[nspec], k == 2 ? 1 : outp, k == 2, 0};
            nspec++;
        }
    }
    return kn_kafka_create_topics(kn_service_get(svc, "kafka.brokers"), specs, nspec, 15000, e,
                                  esz);
}

static int run(kn_service *svc, void *app)
{
    preprocess *pp = app;
    char e[1024], host[128] = "local", txid[300];
    kn_config *cfg = kn_service_config(svc);
    kn_service_set_nice(svc, "preprocess.nice");
    pp_metrics_init(&pp->metrics, kn_service_metrics(svc));
    gethostname(host, sizeof(host) - 1);
    const char *brokers = kn_service_get(svc, "kafka.brokers");
    const char *instance = kn_service_get(svc, "preprocess.instance");
    pp->env.prefix = kn_service_get(svc, "kafka.topic_prefix");
    pp->env.instance = pp->instance ? pp->instance : instance ? instance : host;
    pp->env.m = &pp->metrics;
    /* checked before Kafka: a mistake stops the service at once */
    const char *codec = kn_service_get(svc, "preprocess.compression");
    if (!codec || (strcmp(codec, "zstd") && strcmp(codec, "lz4") && strcmp(codec, "none"))) {
        kn_log_error("preprocess.compression = %s: expected zstd, lz4 or none",
                     codec ? codec : "(unset)");
        return 1;
    }
    pp_stream_options so = {
        .brokers = brokers,
        .group = kn_service_get(svc, "preprocess.group"),
        .default_dataset = kn_service_get(svc, "preprocess.default_dataset"),
        .flush_ms = (int)kn_service_get_int(svc, "preprocess.flush_ms", NULL),
        .txn_max_records = (int)kn_service_get_int(svc, "preprocess.txn_max_records", NULL),
        .dlq_duplicates = kn_service_get_bool(svc, "preprocess.dlq_duplicates", NULL),
        .dlq_max_bytes = (size_t)kn_service_get_int(svc, "preprocess.dlq_max_bytes", NULL),
        .record_attempts = (int)kn_service_get_int(svc, "preprocess.record_attempts", NULL),
    };

    /* Recipes. */
    pp->sl.cfg = cfg;
    pp->sl.only = kn_service_get(svc, "preprocess.datasets");
    kn_config_foreach_section(cfg, "dataset.", add_section, &pp->sl);
    if (pp->sl.n == 0) {
        kn_log_error("no [dataset.NAME] section in the configuration: nothing to do");
        return 1;
    }
    /* /readyz answers from here on; a broker not up yet (started before it):
     * wait, not ready, and say so */
    pthread_mutex_init(&pp->wmu, NULL);
    kn_http_options ho = {.bind_addr = kn_service_get(svc, "preprocess.bind"),
                          .port = (uint16_t)kn_service_get_int(svc, "preprocess.port", NULL),
                          .ready = ready,
                          .ready_ctx = pp};
    if (ho.port > 0 && kn_service_listen(svc, &ho, NULL, NULL, e, sizeof(e)) != KN_OK) {
        kn_log_error("%s", e);
        return 1;
    }
    if (kn_kafka_wait_broker(brokers, broker_waiting, pp, kn_shutdown_requested) != KN_OK) return 0;
    if (create_topics(svc, pp, e, sizeof(e)) != KN_OK) {
        kn_log_error("%s", e);
        return 1;
    }
    snprintf(txid, sizeof(txid), "%s-%s", PP_SERVICE, pp->env.instance);
    /* A transaction left open by an instance killed -9 holds back every
     * read_committed reader of the topics it wrote (the other instances'
     * dedup changelog tail included) until the broker times it out, or the
     * instance restarts: librdkafka's 60 s default is cut to what a commit
     * interval needs (docs/preprocess.md "Scaling out"). zstd at level 1:
     * token shards hardly compress at any level, and the default level cost
     * a tenth of the text path's CPU (docs/performance.md). */
    char txn_timeout[32];
    long long tt = 4LL * so.flush_ms;
    tt = tt < 10000 ? 10000 : tt > 900000 ? 900000 : tt; /* 900 s: the broker's default maximum */
    snprintf(txn_timeout, sizeof(txn_timeout), "%lld", tt);
    const char *pextra[] = {"transaction.timeout.ms", txn_timeout, "compression.level", "1", NULL};
    kn_kafka_producer_options po = {.brokers = brokers,
                                    .client_id = txid,
                                    .transactional_id = txid,
                                    .linger_ms = 20,
                                    .compression = codec,
                                    .extra = pextra};
    if (!(pp->env.producer = kn_kafka_producer_new(&po, e, sizeof(e)))) {
        kn_log_error("%s", e);
        return 1;
    }
    for (size_t i = 0; i < pp->sl.n; i++) {
        kn_recipe r;
        if (kn_recipe_load(cfg, pp->sl.sections[i], &r, e, sizeof(e)) != KN_OK) {
            kn_recipe_free(&r);
            kn_log_error("%s", e);
            return 1;
        }
        if (!(pp->ds[pp->nds] = pp_dataset_new(&r, &pp->env, e, sizeof(e)))) {
            kn_log_error("%s", e);
            return 1;
        }
        const kn_recipe *dr = pp_dataset_recipe(pp->ds[pp->nds++]);
        kn_log_info("dataset %s: kind %s, recipe %.12s, eval fraction %.3f", dr->name,
                    kn_recipe_kind_name(dr->kind), dr->hash, dr->eval_fraction);
    }

    if (!(pp->st = pp_stream_new(&so, &pp->env, pp->ds, pp->nds, e, sizeof(e)))) {
        kn_log_error("%s", e);
        return 1;
    }
    if (pp_stream_start(pp->st, e, sizeof(e)) != KN_OK) {
        kn_log_error("%s", e);
        return 1;
    }
    pthread_mutex_lock(&pp->wmu);
    pp->started = pp->st;
    pthread_mutex_unlock(&pp->wmu);
    kn_log_info("kiln-preprocess %s: instance %s, %zu dataset(s), group %s", KN_VERSION,
                pp->env.instance, pp->nds, so.group);

    /* The loop: one record at a time; transactions commit every flush_ms. */
    int rc = KN_OK;
    while (!kn_shutdown_requested() && rc == KN_OK) {
        rc = pp_stream_step(pp->st);
        pp_metrics_refusals_tick(&pp->metrics);
    }
    if (rc == KN_OK) rc = pp_stream_drain(pp->st);
    kn_log_info("kiln-preprocess: %s", rc == KN_OK ? "drained, exiting" : "fatal error, exiting");
    return rc == KN_OK ? 0 : 1;
}

static void cleanup(void *app)
{
    preprocess *pp = app;
    pp_stream_destroy(pp->st); /* leaves the group while the producer still lives */
    for (size_t i = 0; i < pp->nds; i++)
        pp_dataset_destroy(pp->ds[i]);
    kn_kafka_producer_destroy(pp->env.producer, 10000);
    for (size_t i = 0; i < pp->sl.n; i++)
        free(pp->sl.sections[i]);
}

int main(int argc, char **argv)
{
    static const kn_service_command commands[] = {
        {"tokenizer", pp_tokenizer_main}, {"export", pp_export_main}, {"lag", pp_lag_main},
        {NULL, NULL}};
    static const kn_service_spec spec = {
        .name = PP_SERVICE,
        .usage = "usage: kiln-preprocess [--config FILE] [--instance ID]\n"
                 "       kiln-preprocess tokenizer train --out FILE [--vocab N] PATH...  "
                 "(--help for more)\n"
                 "       kiln-preprocess export --dataset NAME --out DIR [--range ...]  "
                 "(--help for more)\n"
                 "       kiln-preprocess lag [--config FILE]  (raw records not yet "
                 "preprocessed)\n",
        .about = "Consumes <prefix>.raw.text and <prefix>.raw.image as a consumer group and "
                 "produces\nshards to <prefix>.train.<dataset> and <prefix>.eval.<dataset>, "
                 "refused records to\n<prefix>.dlq, and dedup/tokenizer state to "
                 "<prefix>.state.<dataset>, in Kafka\ntransactions (exactly once). SIGTERM "
                 "commits the open transaction and exits 0.\n",
        .options = options,
        .option = option,
        .keys = kn_keys_preprocess,
        .keys_note =
            "  [dataset.NAME] kind = lm | text_class | image, and the recipe keys listed in\n"
            "  docs/preprocess.md (tokenizer, block_size, max_len, labels, eval_fraction, "
            "...)\n",
        .commands = commands,
        .drain_s = 20, /* a drain cut short loses nothing: the open transaction aborts */
        .run = run,
        .cleanup = cleanup,
    };
    /* glibc gives a freed block over the mmap threshold (128 KiB at first)
     * back to the kernel and trims the heaps' tops: every fetched and
     * decompressed batch, compression context and grown dedup table then
     * lands on fresh pages the kernel must zero (a fifth of the instance's
     * CPU in page faults, docs/performance.md). This long-lived process
     * reuses its memory instead: blocks up to 64 MiB come from the heaps,
     * and a heap keeps up to 256 MiB of free space at its top. */
    mallopt(M_MMAP_THRESHOLD, 64 << 20);
    mallopt(M_TRIM_THRESHOLD, 256 << 20);
    preprocess pp = {0};
    return kn_service_main(&spec, &pp, argc, argv);
}
