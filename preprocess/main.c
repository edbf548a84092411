/* kiln-preprocess: consumes raw records, cleans, deduplicates, tokenizes or
 * augments them per dataset recipe, and produces shards to
 * <prefix>.train.<dataset> / <prefix>.eval.<dataset>, exactly once (Kafka
 * transactions; see stream.h). Scale by starting more instances with
 * distinct preprocess.instance ids. docs/preprocess.md is the manual. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/config.h"
#include "net/http.h"
#include "stream/kafka.h"
#include "core/kn.h"
#include "core/log.h"
#include "stream/record.h"
#include "core/shutdown.h"
#include "stream.h"
#include "tokenizer_cmd.h"

#define MAX_DATASETS 64

static void usage(FILE *f)
{
    fprintf(
        f,
        "usage: kiln-preprocess [--config FILE] [--instance ID]\n"
        "       kiln-preprocess tokenizer train --out FILE [--vocab N] PATH...  (--help for more)\n"
        "\n"
        "Consumes <prefix>.raw.text and <prefix>.raw.image as a consumer group and produces\n"
        "shards to <prefix>.train.<dataset> and <prefix>.eval.<dataset>, refused records to\n"
        "<prefix>.dlq, and dedup/tokenizer state to <prefix>.state.<dataset>, in Kafka\n"
        "transactions (exactly once). SIGTERM commits the open transaction and exits 0.\n"
        "\n"
        "  --config FILE   configuration file (default $KILN_CONFIG); KILN_* variables override "
        "it\n"
        "  --instance ID   this instance's stable id (preprocess.instance); the transactional.id\n"
        "                  is kiln-preprocess-<ID>: give every instance its own, keep it on "
        "restart\n"
        "  --help, --version\n"
        "\n"
        "configuration ([section] key, or KILN_SECTION_KEY):\n"
        "  kafka.brokers, kafka.topic_prefix (kiln)\n"
        "  preprocess.instance (hostname), preprocess.group (kiln-preprocess),\n"
        "  preprocess.bind (127.0.0.1), preprocess.port (8082; 0 = none),\n"
        "  preprocess.flush_ms (2000), preprocess.txn_max_records (5000),\n"
        "  preprocess.datasets (all [dataset.*] sections), preprocess.default_dataset,\n"
        "  preprocess.output_partitions (1), preprocess.dlq_duplicates (false),\n"
        "  preprocess.dlq_max_bytes (1m), ingest.partitions (3: for raw topics it creates)\n"
        "  preprocess.record_attempts (3: a failing record's tries before the DLQ)\n"
        "  [dataset.NAME] kind = lm | text_class | image, and the recipe keys listed in\n"
        "  docs/preprocess.md (tokenizer, block_size, max_len, labels, eval_fraction, ...)\n");
}

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

static int ready(void *ctx, char *why, size_t whysz)
{
    if (pp_stream_ready(ctx)) return 0;
    snprintf(why, whysz, "rebuilding state or joining the consumer group");
    return 1;
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "tokenizer") == 0) return pp_tokenizer_main(argc - 1, argv + 1);
    const char *config_path = getenv("KILN_CONFIG"), *instance_arg = NULL;
    static const struct option opts[] = {{"config", required_argument, NULL, 'c'},
                                         {"instance", required_argument, NULL, 'i'},
                                         {"help", no_argument, NULL, 'h'},
                                         {"version", no_argument, NULL, 'V'},
                                         {NULL, 0, NULL, 0}};
    int ch;
    while ((ch = getopt_long(argc, argv, "c:i:hV", opts, NULL)) != -1) {
        switch (ch) {
        case 'c':
            config_path = optarg;
            break;
        case 'i':
            instance_arg = optarg;
            break;
        case 'h':
            usage(stdout);
            return 0;
        case 'V':
            printf("kiln-preprocess %s\n", KN_VERSION);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "kiln-preprocess: unexpected argument '%s' (see --help)\n", argv[optind]);
        return 2;
    }

    int code = 1;
    char e[1024], host[128] = "local";
    kn_config *cfg = kn_config_new();
    kn_metrics *reg = kn_metrics_new();
    pp_metrics metrics;
    pp_env env = {0};
    pp_dataset *ds[MAX_DATASETS] = {0};
    section_list sl = {0};
    size_t nds = 0;
    pp_stream *st = NULL;
    kn_http_server *srv = NULL;
    if (!cfg || !reg) return 1;
    if (config_path && kn_config_load_file(cfg, config_path, e, sizeof(e)) != KN_OK) {
        fprintf(stderr, "kiln-preprocess: %s\n", e);
        goto out;
    }
    int lvl = kn_log_level_parse(kn_config_get(cfg, "log.level", "info"));
    kn_log_init(PP_SERVICE, lvl < 0 ? KN_LOG_INFO : (kn_log_level)lvl);
    kn_shutdown_setup();
    pp_metrics_init(&metrics, reg);

    gethostname(host, sizeof(host) - 1);
    const char *brokers = kn_config_get(cfg, "kafka.brokers", "127.0.0.1:19092");
    env.prefix = kn_config_get(cfg, "kafka.topic_prefix", "kiln");
    env.instance = instance_arg ? instance_arg : kn_config_get(cfg, "preprocess.instance", host);
    env.m = &metrics;
    pp_stream_options so = {
        .brokers = brokers,
        .group = kn_config_get(cfg, "preprocess.group", "kiln-preprocess"),
        .default_dataset = kn_config_get(cfg, "preprocess.default_dataset", ""),
        .flush_ms = (int)kn_config_get_int(cfg, "preprocess.flush_ms", 2000, NULL),
        .txn_max_records = (int)kn_config_get_int(cfg, "preprocess.txn_max_records", 5000, NULL),
        .dlq_duplicates = kn_config_get_bool(cfg, "preprocess.dlq_duplicates", 0, NULL),
        .dlq_max_bytes = (size_t)kn_config_get_int(cfg, "preprocess.dlq_max_bytes", 1 << 20, NULL),
        .record_attempts = (int)kn_config_get_int(cfg, "preprocess.record_attempts", 3, NULL),
    };

    /* Recipes. */
    sl.cfg = cfg;
    sl.only = kn_config_get(cfg, "preprocess.datasets", NULL);
    kn_config_foreach_section(cfg, "dataset.", add_section, &sl);
    if (sl.n == 0) {
        kn_log_error("no [dataset.NAME] section in the configuration: nothing to do");
        goto out;
    }

    /* Topics: outputs, state (compacted), DLQ; the raw inputs if missing. */
    int outp = (int)kn_config_get_int(cfg, "preprocess.output_partitions", 1, NULL);
    int rawp = (int)kn_config_get_int(cfg, "ingest.partitions", 3, NULL);
    kn_kafka_topic_spec specs[3 + 3 * MAX_DATASETS];
    char names[3 + 3 * MAX_DATASETS][300];
    size_t nspec = 0;
    const char *fixed[] = {KN_RECORD_TOPIC_TEXT, KN_RECORD_TOPIC_IMAGE, KN_RECORD_TOPIC_DLQ};
    for (int i = 0; i < 3; i++) {
        kn_record_topic(names[nspec], sizeof(names[0]), env.prefix, fixed[i]);
        specs[nspec] = (kn_kafka_topic_spec){names[nspec], i < 2 ? rawp : 1, 0, 0};
        nspec++;
    }
    for (size_t i = 0; i < sl.n; i++) {
        const char *suffix[] = {"train", "eval", "state"};
        for (int k = 0; k < 3; k++) {
            snprintf(names[nspec], sizeof(names[0]), "%s.%s.%s", env.prefix, suffix[k],
                     sl.sections[i] + 8);
            specs[nspec] = (kn_kafka_topic_spec){names[nspec], k == 2 ? 1 : outp, k == 2, 0};
            nspec++;
        }
    }
    if (kn_kafka_create_topics(brokers, specs, nspec, 15000, e, sizeof(e)) != KN_OK) {
        kn_log_error("%s", e);
        goto out;
    }

    char txid[300];
    snprintf(txid, sizeof(txid), "%s-%s", PP_SERVICE, env.instance);
    kn_kafka_producer_options po = {
        .brokers = brokers, .client_id = txid, .transactional_id = txid, .linger_ms = 20};
    env.producer = kn_kafka_producer_new(&po, e, sizeof(e));
    if (!env.producer) {
        kn_log_error("%s", e);
        goto out;
    }
    for (size_t i = 0; i < sl.n; i++) {
        pp_recipe r;
        if (pp_recipe_load(cfg, sl.sections[i], &r, e, sizeof(e)) != KN_OK) {
            pp_recipe_free(&r);
            kn_log_error("%s", e);
            goto out;
        }
        if (!(ds[nds] = pp_dataset_new(&r, &env, e, sizeof(e)))) {
            kn_log_error("%s", e);
            goto out;
        }
        kn_log_info("dataset %s: kind %s, recipe %.12s, eval fraction %.3f",
                    pp_dataset_recipe(ds[nds])->name,
                    pp_kind_name(pp_dataset_recipe(ds[nds])->kind),
                    pp_dataset_recipe(ds[nds])->hash, pp_dataset_recipe(ds[nds])->eval_fraction);
        nds++;
    }

    if (!(st = pp_stream_new(&so, &env, ds, nds, e, sizeof(e)))) {
        kn_log_error("%s", e);
        goto out;
    }
    int port = (int)kn_config_get_int(cfg, "preprocess.port", 8082, NULL);
    if (port > 0) {
        kn_http_options ho = {.bind_addr = kn_config_get(cfg, "preprocess.bind", "127.0.0.1"),
                              .port = (uint16_t)port,
                              .service = PP_SERVICE,
                              .metrics = reg,
                              .ready = ready,
                              .ready_ctx = st};
        srv = kn_http_server_new(&ho);
        if (!srv || kn_http_server_start(srv, e, sizeof(e)) != KN_OK) {
            kn_log_error("http: %s", srv ? e : "out of memory");
            goto out;
        }
    }
    if (pp_stream_start(st, e, sizeof(e)) != KN_OK) {
        kn_log_error("%s", e);
        goto out;
    }
    kn_log_info("kiln-preprocess %s: instance %s, %zu dataset(s), group %s", KN_VERSION,
                env.instance, nds, so.group);

    /* The loop: one record at a time; transactions commit every flush_ms. */
    int rc = KN_OK;
    while (!kn_shutdown_requested() && rc == KN_OK)
        rc = pp_stream_step(st);
    if (rc == KN_OK) rc = pp_stream_drain(st);
    code = rc == KN_OK ? 0 : 1;
    kn_log_info("kiln-preprocess: %s", code == 0 ? "drained, exiting" : "fatal error, exiting");
out:
    kn_http_server_destroy(srv);
    pp_stream_destroy(st); /* leaves the group while the producer still lives */
    for (size_t i = 0; i < nds; i++)
        pp_dataset_destroy(ds[i]);
    kn_kafka_producer_destroy(env.producer, 10000);
    for (size_t i = 0; i < sl.n; i++)
        free(sl.sections[i]);
    kn_metrics_destroy(reg);
    kn_config_destroy(cfg);
    return code;
}
