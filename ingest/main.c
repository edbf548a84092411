/* kiln-ingest: reads text and images from files, JSON lines, URL lists, an
 * HTTP endpoint and dataset importers; validates them; produces raw records
 * to <prefix>.raw.{text,image} and refusals to <prefix>.dlq (docs/ingest.md). */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/config.h"
#include "ingest.h"
#include "core/kn.h"
#include "core/log.h"
#include "core/shutdown.h"

static void usage(FILE *f)
{
    fprintf(
        f, "usage: kiln-ingest [options] <command> [args]\n"
           "\n"
           "commands:\n"
           "  files PATH...            files and directories (recursive)\n"
           "      --glob G             only file names matching G (repeatable)\n"
           "      --follow             keep watching the directories for new files (inotify)\n"
           "      --state F            journal for crash-safe, exactly-once directory imports\n"
           "  jsonl [FILE|-]           JSON lines: {\"text\":..} or {\"image_base64\":..},\n"
           "                           optional \"label\", \"dataset\", \"split\" (default stdin)\n"
           "  urls FILE                one URL per line (optional label after a space)\n"
           "  serve                    HTTP: POST /v1/records?dataset=&label= (raw or multipart)\n"
           "  import fashion-mnist [DIR]  Debian dataset-fashion-mnist (train + test splits)\n"
           "  import fortunes [DIR]    Debian fortunes: one record per fortune, label = category\n"
           "\n"
           "options:\n"
           "  --config F               configuration file (KILN_* environment overrides it)\n"
           "  --dataset D              dataset header (default: ingest.dataset or \"default\")\n"
           "  --label L                label header for records that carry none\n"
           "  --split S                split header (train|test)\n"
           "  --kind auto|text|image   how to treat input (default auto: magic bytes)\n"
           "  --port N                 serve /healthz /readyz /metrics (and /v1/records) on N\n"
           "  --progress, --no-progress  force the progress line on or off\n"
           "  --help, --version\n"
           "\n"
           "configuration keys (file [section] key, or KILN_SECTION_KEY):\n"
           "  kafka.brokers (127.0.0.1:19092)  kafka.topic_prefix (kiln)  ingest.partitions (3)\n"
           "  ingest.port (8081) ingest.bind (127.0.0.1)  ingest.max_text_bytes (1m)\n"
           "  ingest.max_image_bytes (8m) ingest.dlq_max_bytes (1m) ingest.max_side (16384)\n"
           "  ingest.max_pixels (40000000) ingest.utf8_policy (reject|repair)\n"
           "  ingest.batch_files (1000) ingest.batch_bytes (16m) ingest.ack_timeout_ms (30000)\n"
           "  ingest.url_timeout_ms (30000) ingest.url_connect_timeout_ms (10000)\n"
           "  ingest.url_retries (3) ingest.url_backoff_ms (500) ingest.url_max_redirects (5)\n"
           "  ingest.tokens_file (none: writes get 401) ingest.anonymous_writes (false)\n"
           "  ingest.drain_timeout_ms (60000: a batch source's wait for its last reports)\n"
           "  log.level (info)\n");
}

enum {
    OPT_GLOB = 256,
    OPT_FOLLOW,
    OPT_STATE,
    OPT_DATASET,
    OPT_LABEL,
    OPT_SPLIT,
    OPT_KIND,
    OPT_PORT,
    OPT_PROGRESS,
    OPT_NO_PROGRESS,
    OPT_CONFIG,
    OPT_VERSION
};

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, OPT_VERSION},
        {"config", required_argument, NULL, OPT_CONFIG},
        {"glob", required_argument, NULL, OPT_GLOB},
        {"follow", no_argument, NULL, OPT_FOLLOW},
        {"state", required_argument, NULL, OPT_STATE},
        {"dataset", required_argument, NULL, OPT_DATASET},
        {"label", required_argument, NULL, OPT_LABEL},
        {"split", required_argument, NULL, OPT_SPLIT},
        {"kind", required_argument, NULL, OPT_KIND},
        {"port", required_argument, NULL, OPT_PORT},
        {"progress", no_argument, NULL, OPT_PROGRESS},
        {"no-progress", no_argument, NULL, OPT_NO_PROGRESS},
        {NULL, 0, NULL, 0},
    };
    const char *config_path = getenv("KILN_CONFIG"), *dataset = NULL, *label = NULL, *split = NULL,
               *kind = "auto";
    char *globs[64];
    ing_files_args fa = {.globs = globs};
    int port = -1, progress = -1, opt, code = 1;
    char e[512];

    while ((opt = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (opt) {
        case 'h':
            usage(stdout);
            return 0;
        case OPT_VERSION:
            printf("kiln-ingest %s\n", KN_VERSION);
            return 0;
        case OPT_CONFIG:
            config_path = optarg;
            break;
        case OPT_GLOB:
            if (fa.nglobs < 64) globs[fa.nglobs++] = optarg;
            break;
        case OPT_FOLLOW:
            fa.follow = 1;
            break;
        case OPT_STATE:
            fa.state_path = optarg;
            break;
        case OPT_DATASET:
            dataset = optarg;
            break;
        case OPT_LABEL:
            label = optarg;
            break;
        case OPT_SPLIT:
            split = optarg;
            break;
        case OPT_KIND:
            kind = optarg;
            break;
        case OPT_PORT:
            port = atoi(optarg);
            break;
        case OPT_PROGRESS:
            progress = 1;
            break;
        case OPT_NO_PROGRESS:
            progress = 0;
            break;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind >= argc) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[optind];
    char **args = argv + optind + 1;
    int nargs = argc - optind - 1;

    kn_config *cfg = kn_config_new();
    if (!cfg) return 1;
    if (config_path && kn_config_load_file(cfg, config_path, e, sizeof(e)) != KN_OK) {
        fprintf(stderr, "kiln-ingest: %s\n", e);
        kn_config_destroy(cfg);
        return 2;
    }
    int lvl = kn_log_level_parse(kn_config_get(cfg, "log.level", "info"));
    kn_log_init(ING_SERVICE, lvl < 0 ? KN_LOG_INFO : (kn_log_level)lvl);
    kn_shutdown_setup();

    ing_options o = {
        .brokers = kn_config_get(cfg, "kafka.brokers", "127.0.0.1:19092"),
        .partitions = (int)kn_config_get_int(cfg, "ingest.partitions", 3, NULL),
        .max_text = (size_t)kn_config_get_int(cfg, "ingest.max_text_bytes", 1 << 20, NULL),
        .max_image = (size_t)kn_config_get_int(cfg, "ingest.max_image_bytes", 8 << 20, NULL),
        .dlq_max = (size_t)kn_config_get_int(cfg, "ingest.dlq_max_bytes", 1 << 20, NULL),
        .limits = {(uint32_t)kn_config_get_int(cfg, "ingest.max_side", 16384, NULL),
                   (uint64_t)kn_config_get_int(cfg, "ingest.max_pixels", 40000000, NULL)},
        .dataset = dataset ? dataset : kn_config_get(cfg, "ingest.dataset", "default"),
        .label = label,
        .split = split,
        .progress = progress,
    };
    snprintf(o.prefix, sizeof(o.prefix), "%s", kn_config_get(cfg, "kafka.topic_prefix", "kiln"));
    const char *policy = kn_config_get(cfg, "ingest.utf8_policy", "reject");
    o.utf8_repair = strcmp(policy, "repair") == 0;
    if (!o.utf8_repair && strcmp(policy, "reject") != 0) {
        fprintf(stderr, "kiln-ingest: ingest.utf8_policy must be reject or repair\n");
        goto out_cfg;
    }
    if (strcmp(kind, "text") == 0)
        o.kind = ING_KIND_TEXT;
    else if (strcmp(kind, "image") == 0)
        o.kind = ING_KIND_IMAGE;
    else if (strcmp(kind, "auto") != 0) {
        fprintf(stderr, "kiln-ingest: --kind must be auto, text or image\n");
        goto out_cfg;
    }
    if (o.max_image > (12u << 20)) o.max_image = 12u << 20; /* under message.max.bytes (16 MiB) */

    int is_serve = strcmp(cmd, "serve") == 0;
    if (!is_serve && strcmp(cmd, "files") && strcmp(cmd, "jsonl") && strcmp(cmd, "urls") &&
        strcmp(cmd, "import")) {
        fprintf(stderr, "kiln-ingest: unknown command '%s' (see --help)\n", cmd);
        code = 2;
        goto out_cfg;
    }
    if ((strcmp(cmd, "files") == 0 && nargs < 1) || (strcmp(cmd, "urls") == 0 && nargs != 1) ||
        (strcmp(cmd, "import") == 0 && nargs < 1)) {
        fprintf(stderr, "kiln-ingest: %s: missing argument (see --help)\n", cmd);
        code = 2;
        goto out_cfg;
    }

    o.bulk = !is_serve && !fa.follow && port < 0;
    ing_ctx c;
    if (ing_ctx_init(&c, cfg, &o, e, sizeof(e)) != KN_OK) {
        kn_log_error("start-up: %s", e);
        ing_ctx_free(&c);
        goto out_cfg;
    }
    ing_server *srv = NULL;
    if (is_serve || fa.follow || port >= 0) {
        if (port < 0) port = (int)kn_config_get_int(cfg, "ingest.port", 8081, NULL);
        srv = ing_server_start(&c, kn_config_get(cfg, "ingest.bind", "127.0.0.1"), port, e,
                               sizeof(e));
        if (!srv) {
            kn_log_error("http: %s", e);
            ing_ctx_free(&c);
            goto out_cfg;
        }
    }

    if (is_serve) {
        while (!kn_shutdown_requested())
            usleep(100 * 1000);
        code = 0;
    } else if (strcmp(cmd, "files") == 0) {
        fa.paths = args;
        fa.npaths = nargs;
        code = ing_files_run(&c, &fa);
    } else if (strcmp(cmd, "jsonl") == 0) {
        code = ing_jsonl_run(&c, nargs ? args[0] : "-");
    } else if (strcmp(cmd, "urls") == 0) {
        code = ing_urls_run(&c, args[0]);
    } else if (strcmp(args[0], "fashion-mnist") == 0) {
        code = ing_import_fashion_mnist(&c, nargs > 1 ? args[1] : NULL);
    } else if (strcmp(args[0], "fortunes") == 0) {
        code = ing_import_fortunes(&c, nargs > 1 ? args[1] : NULL);
    } else {
        kn_log_error("import: unknown dataset '%s' (fashion-mnist, fortunes)", args[0]);
        code = 2;
    }

    ing_server_stop(srv); /* answers in flight finish first */
    if (ing_drain(&c, NULL, 30000) > 0) code = 1;
    kn_log_fields(KN_LOG_INFO,
                  json_pack("{s:I,s:I,s:I}", "delivered", (json_int_t)atomic_load(&c.delivered),
                            "refused", (json_int_t)atomic_load(&c.refused), "failed",
                            (json_int_t)atomic_load(&c.failed)),
                  "kiln-ingest: exiting (code %d)", code);
    ing_ctx_free(&c);
out_cfg:
    kn_config_destroy(cfg);
    return code;
}
