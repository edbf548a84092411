/* kiln-ingest: reads text and images from files, JSON lines, URL lists, an
 * HTTP endpoint and dataset importers; validates them; produces raw records
 * to <prefix>.raw.{text,image} and refusals to <prefix>.dlq (docs/ingest.md).
 * This file is the story: the command and its options, the pipeline, one
 * source until done (or SIGTERM), then the drain. The skeleton
 * (service/service.h) does options, logging and signals; ingest's own
 * server (server.c) answers /v1/records beside /healthz /readyz /metrics. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/kn.h"
#include "core/log.h"
#include "ingest.h"
#include "service/keys.h"
#include "service/service.h"

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
    OPT_REASON,
    OPT_SINCE,
    OPT_REPLAY,
    OPT_JSON,
    OPT_SEPARATOR,
};

static const kn_service_option options[] = {
    {"glob", OPT_GLOB, "G", "files: only file names matching G (repeatable)"},
    {"follow", OPT_FOLLOW, NULL, "files: keep watching the directories for new files (inotify)"},
    {"state", OPT_STATE, "F", "files: journal for crash-safe, exactly-once directory imports"},
    {"dataset", OPT_DATASET, "D", "dataset header (default: ingest.dataset)"},
    {"label", OPT_LABEL, "L", "label header for records that carry none"},
    {"split", OPT_SPLIT, "S", "split header (train|test)"},
    {"kind", OPT_KIND, "auto|text|image", "how to treat input (default auto: magic bytes)"},
    {"port", OPT_PORT, "N", "serve /healthz /readyz /metrics (and /v1/records) on N"},
    {"progress", OPT_PROGRESS, NULL, "force the progress line on"},
    {"no-progress", OPT_NO_PROGRESS, NULL, "force the progress line off"},
    {"separator", OPT_SEPARATOR, "S",
     "files: split text files into records at lines equal to S (\"%\": fortune files)"},
    {"reason", OPT_REASON, "R", "dlq: only records refused for reason R (bad_utf8, ...)"},
    {"since", OPT_SINCE, "T", "dlq: only records refused since T (30m, 2h, 1d, 2026-11-30T10:00)"},
    {"replay", OPT_REPLAY, NULL, "dlq: re-submit what kiln-preprocess refused, exactly once"},
    {"json", OPT_JSON, NULL, "dlq: one JSON object per record"},
    {NULL, 0, NULL, NULL},
};

/* The configuration keys: kn_keys_ingest in lib/service/keys.c, where the
 * stack-wide check (kn_keys_check) sees every service's keys. */

typedef struct {
    const char *dataset, *label, *split, *kind; /* options */
    const char *separator;                      /* --separator, NULL: ingest.separator */
    int port, progress;                         /* -1: not given */
    char *globs[64];
    ing_files_args fa;
    ing_ctx c;
    int have_ctx;
    ing_server *srv;
    ing_dlq_args dlq; /* the dlq command's filters */
} ingest;

static int option(kn_service *svc, void *app, int id, const char *arg)
{
    ingest *in = app;
    switch (id) {
    case OPT_GLOB:
        if (in->fa.nglobs < 64) in->globs[in->fa.nglobs++] = (char *)arg;
        break;
    case OPT_FOLLOW:
        in->fa.follow = 1;
        break;
    case OPT_STATE:
        in->fa.state_path = arg;
        break;
    case OPT_DATASET:
        in->dataset = arg;
        break;
    case OPT_LABEL:
        in->label = arg;
        break;
    case OPT_SPLIT:
        in->split = arg;
        break;
    case OPT_KIND:
        in->kind = arg;
        break;
    case OPT_PORT:
        in->port = atoi(arg);
        break;
    case OPT_SEPARATOR:
        in->separator = arg;
        break;
    case OPT_REASON:
        in->dlq.reason = arg;
        break;
    case OPT_SINCE:
        if (ing_dlq_parse_since(arg, kn_record_now_ms(), &in->dlq.since_ms) != KN_OK) {
            kn_service_usage_error(svc, "--since %s: use 30m, 2h, 1d or 2026-11-30T10:00", arg);
            return 1;
        }
        in->dlq.since_set = 1;
        break;
    case OPT_REPLAY:
        in->dlq.replay = 1;
        break;
    case OPT_JSON:
        in->dlq.json = 1;
        break;
    default:
        in->progress = id == OPT_PROGRESS;
    }
    return 0;
}

/* The command and its arguments. */
static int check(kn_service *svc, void *app)
{
    (void)app;
    int n;
    char **args = kn_service_args(svc, &n);
    const char *cmd = n > 0 ? args[0] : "";
    if (n == 0) return 1;
    if (strcmp(cmd, "serve") && strcmp(cmd, "files") && strcmp(cmd, "jsonl") &&
        strcmp(cmd, "urls") && strcmp(cmd, "import") && strcmp(cmd, "dlq")) {
        kn_service_usage_error(svc, "unknown command '%s'", cmd);
        return 1;
    }
    if ((strcmp(cmd, "files") == 0 && n < 2) || (strcmp(cmd, "urls") == 0 && n != 2) ||
        (strcmp(cmd, "import") == 0 && n < 2)) {
        kn_service_usage_error(svc, "%s: missing argument", cmd);
        return 1;
    }
    return 0;
}

/* The options and [ingest] keys as the pipeline takes them; 0 or 1. */
static int configure(kn_service *svc, ingest *in, ing_options *o)
{
    *o = (ing_options){
        .brokers = kn_service_get(svc, "kafka.brokers"),
        .partitions = (int)kn_service_get_int(svc, "ingest.partitions", NULL),
        .max_text = (size_t)kn_service_get_int(svc, "ingest.max_text_bytes", NULL),
        .max_image = (size_t)kn_service_get_int(svc, "ingest.max_image_bytes", NULL),
        .dlq_max = (size_t)kn_service_get_int(svc, "ingest.dlq_max_bytes", NULL),
        .limits = {(uint32_t)kn_service_get_int(svc, "ingest.max_side", NULL),
                   (uint64_t)kn_service_get_int(svc, "ingest.max_pixels", NULL)},
        .dataset = in->dataset ? in->dataset : kn_service_get(svc, "ingest.dataset"),
        .label = in->label,
        .split = in->split,
        .progress = in->progress,
        .separator = in->separator ? in->separator : kn_service_get(svc, "ingest.separator"),
    };
    snprintf(o->prefix, sizeof(o->prefix), "%s", kn_service_get(svc, "kafka.topic_prefix"));
    const char *policy = kn_service_get(svc, "ingest.utf8_policy");
    o->utf8_repair = strcmp(policy, "repair") == 0;
    if (!o->utf8_repair && strcmp(policy, "reject") != 0) {
        fprintf(stderr, "kiln-ingest: ingest.utf8_policy must be reject or repair\n");
        return 1;
    }
    if (strcmp(in->kind, "text") == 0)
        o->kind = ING_KIND_TEXT;
    else if (strcmp(in->kind, "image") == 0)
        o->kind = ING_KIND_IMAGE;
    else if (strcmp(in->kind, "auto") != 0) {
        fprintf(stderr, "kiln-ingest: --kind must be auto, text or image\n");
        return 1;
    }
    if (o->max_image > (12u << 20)) o->max_image = 12u << 20; /* under message.max.bytes (16 MiB) */
    return 0;
}

static int run(kn_service *svc, void *app)
{
    ingest *in = app;
    ing_options o;
    char e[512];
    int nargs, code = 0;
    char **args = kn_service_args(svc, &nargs);
    const char *cmd = args[0];
    int is_serve = strcmp(cmd, "serve") == 0;
    args++, nargs--;
    if (strcmp(cmd, "dlq") == 0) { /* reads Kafka only: no producer of records, no server */
        in->dlq.brokers = kn_service_get(svc, "kafka.brokers");
        in->dlq.prefix = kn_service_get(svc, "kafka.topic_prefix");
        in->dlq.dataset = in->dataset;
        return ing_dlq_run(&in->dlq);
    }
    if (configure(svc, in, &o) != 0) return 1;
    char hint[1024]; /* records for a dataset without a section end in the DLQ: say so now */
    if (in->dataset &&
        !kn_keys_has_section(kn_service_config(svc), "dataset", o.dataset, hint, sizeof(hint)) &&
        !strstr(hint, "there are none"))
        kn_log_warn(
            "dataset %s has no [dataset.%s] section in the configuration%s: kiln-preprocess "
            "will refuse its records (unknown_dataset; `kiln-ingest dlq` lists them)",
            o.dataset, o.dataset, hint);
    o.bulk = !is_serve && !in->fa.follow && in->port < 0;
    in->have_ctx = 1;
    if (ing_ctx_init(&in->c, kn_service_config(svc), &o, e, sizeof(e)) != KN_OK) {
        kn_log_error("start-up: %s", e);
        return 1;
    }
    if (is_serve || in->fa.follow || in->port >= 0) {
        int port = in->port >= 0 ? in->port : (int)kn_service_get_int(svc, "ingest.port", NULL);
        in->srv = ing_server_start(&in->c, kn_service_get(svc, "ingest.bind"), port, e, sizeof(e));
        if (!in->srv) {
            kn_log_error("http: %s", e);
            return 1;
        }
    }

    if (is_serve) {
        kn_service_wait();
    } else if (strcmp(cmd, "files") == 0) {
        in->fa.paths = args;
        in->fa.npaths = nargs;
        code = ing_files_run(&in->c, &in->fa);
    } else if (strcmp(cmd, "jsonl") == 0) {
        code = ing_jsonl_run(&in->c, nargs ? args[0] : "-");
    } else if (strcmp(cmd, "urls") == 0) {
        code = ing_urls_run(&in->c, args[0]);
    } else if (strcmp(args[0], "fashion-mnist") == 0) {
        code = ing_import_fashion_mnist(&in->c, nargs > 1 ? args[1] : NULL);
    } else if (strcmp(args[0], "fortunes") == 0) {
        code = ing_import_fortunes(&in->c, nargs > 1 ? args[1] : NULL);
    } else {
        kn_log_error("import: unknown dataset '%s' (fashion-mnist, fortunes)", args[0]);
        code = 2;
    }

    ing_server_stop(in->srv); /* answers in flight finish first */
    in->srv = NULL;
    if (ing_drain(&in->c, NULL, 30000) > 0) code = 1;
    kn_log_fields(KN_LOG_INFO,
                  json_pack("{s:I,s:I,s:I}", "delivered", (json_int_t)atomic_load(&in->c.delivered),
                            "refused", (json_int_t)atomic_load(&in->c.refused), "failed",
                            (json_int_t)atomic_load(&in->c.failed)),
                  "kiln-ingest: exiting (code %d)", code);
    return code;
}

static void cleanup(void *app)
{
    ingest *in = app;
    ing_server_stop(in->srv);
    if (in->have_ctx) ing_ctx_free(&in->c);
}

int main(int argc, char **argv)
{
    static const kn_service_spec spec = {
        .name = ING_SERVICE,
        .usage = "usage: kiln-ingest [options] <command> [args]\n",
        .about = "commands:\n"
                 "  files PATH...            files and directories (recursive); --glob, "
                 "--follow, --state\n"
                 "  jsonl [FILE|-]           JSON lines: {\"text\":..} or {\"image_base64\":..},\n"
                 "                           optional \"label\", \"dataset\", \"split\" (default "
                 "stdin)\n"
                 "  urls FILE                one URL per line (optional label after a space)\n"
                 "  serve                    HTTP: POST /v1/records?dataset=&label= (raw or "
                 "multipart)\n"
                 "  import fashion-mnist [DIR]  Debian dataset-fashion-mnist (train + test "
                 "splits)\n"
                 "  import fortunes [DIR]    Debian fortunes: one record per fortune, label = "
                 "category\n"
                 "  dlq [--dataset D] [--reason R] [--since T] [--replay] [--json]\n"
                 "                           the refused records of <prefix>.dlq: origin, reason,\n"
                 "                           detail, preview; --replay re-submits what\n"
                 "                           kiln-preprocess refused, once the cause is fixed\n",
        .args_help = "<command> [args]",
        .options = options,
        .option = option,
        .check = check,
        .keys = kn_keys_ingest,
        .drain_s = 20, /* unacknowledged records are not acknowledged to senders */
        .run = run,
        .cleanup = cleanup,
    };
    ingest in = {.kind = "auto", .port = -1, .progress = -1};
    in.fa.globs = in.globs;
    return kn_service_main(&spec, &in, argc, argv);
}
