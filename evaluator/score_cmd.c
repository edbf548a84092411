/* score_cmd.c: `kiln-evaluator score --checkpoint FILE --eval-dir DIR`:
 * scores a checkpoint file on exported eval shards (`kiln-preprocess
 * export`), without Kafka or a registry, with the scoring the service uses
 * (score.c). The eval set is the export's eval split in (partition, offset)
 * order, hashed as the service hashes a frozen eval set, so the figures and
 * the eval set's sha256 compare with the ones the registry records for the
 * same range. Prints one JSON object on stdout. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/kn.h"
#include "core/log.h"
#include "core/shutdown.h"
#include "evaluator.h"
#include "nn/backend.h"
#include "stream/shardfiles.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: kiln-evaluator score --checkpoint FILE --eval-dir DIR [options]\n"
               "\n"
               "Scores a checkpoint (safetensors, as kiln-trainer writes) on the eval shards\n"
               "exported by `kiln-preprocess export` into DIR, and prints the metrics the\n"
               "evaluator records (accuracy, macro_f1, loss, ...; perplexity for language\n"
               "models) as one JSON object. No Kafka, no registry. See docs/evaluator.md.\n"
               "\n"
               "options:\n"
               "  --checkpoint FILE   the model to score (required)\n"
               "  --eval-dir DIR      an export holding the eval split (required)\n"
               "  --split S           eval (default) or train\n"
               "  --batch N           rows per forward pass (default 256; LM: 4)\n"
               "  --backend B         auto | cpu | cuda (default auto)\n"
               "  --confusion         include the confusion matrix\n"
               "  --help              this text\n");
}

/* A usage error: what was wrong, then the usage text; exit status 2. */
static int usage_error(const char *fmt, const char *arg)
{
    fprintf(stderr, "kiln-evaluator score: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\n\n");
    usage(stderr);
    return 2;
}

/* The split's files, read and SHA-checked, as an eval set identified as
 * the service identifies a frozen one (ev_evalset_identify). */
static int load_set(const kn_shardfiles *sf, const char *split, ev_evalset *es, char *err,
                    size_t errsz)
{
    memset(es, 0, sizeof(*es));
    size_t n = 0;
    for (size_t i = 0; i < sf->nfiles; i++)
        n += strcmp(sf->files[i].split, split) == 0;
    if (n == 0) return kn_seterr(err, errsz, KN_ENOTFOUND, "%s holds no %s shards", sf->dir, split);
    es->shards = calloc(n, sizeof(*es->shards));
    if (!es->shards) return kn_seterr(err, errsz, KN_ENOMEM, "out of memory");
    const char *topic = NULL;
    for (size_t i = 0; i < sf->nfiles; i++) { /* sorted by (split, partition, offset) */
        if (strcmp(sf->files[i].split, split) != 0) continue;
        ev_blob *b = &es->shards[es->nshards];
        int rc = kn_shardfiles_read(sf, i, &b->buf, &b->len, err, errsz);
        if (rc != KN_OK) return rc;
        es->nshards++;
        es->bytes += b->len;
        topic = sf->files[i].topic;
    }
    if (ev_evalset_identify(es->shards, es->nshards, &es->id) != KN_OK)
        return kn_seterr(err, errsz, KN_ENOMEM, "out of memory");
    snprintf(es->id.topic, sizeof(es->id.topic), "%s", topic ? topic : "");
    return KN_OK;
}

int ev_score_cmd_main(int argc, char **argv)
{
    static const struct option opts[] = {{"checkpoint", required_argument, NULL, 'c'},
                                         {"eval-dir", required_argument, NULL, 'd'},
                                         {"split", required_argument, NULL, 's'},
                                         {"batch", required_argument, NULL, 'b'},
                                         {"backend", required_argument, NULL, 'B'},
                                         {"confusion", no_argument, NULL, 'C'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    const char *ckpt = NULL, *dir = NULL, *split = "eval", *backend = "auto";
    int batch = 0, confusion = 0, ch;
    optind = 1;
    while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (ch) {
        case 'c':
            ckpt = optarg;
            break;
        case 'd':
            dir = optarg;
            break;
        case 's':
            split = optarg;
            break;
        case 'b': {
            char *end = NULL;
            long v = strtol(optarg, &end, 10);
            if (end == optarg || *end || v < 1 || v > 65536)
                return usage_error("--batch %s: use 1..65536", optarg);
            batch = (int)v;
            break;
        }
        case 'B':
            backend = optarg;
            break;
        case 'C':
            confusion = 1;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    /* every argument is checked before the backend is picked: a bad one is
     * a usage error, not a backend warning followed by an error */
    if (!ckpt || !dir) return usage_error("%s", "--checkpoint and --eval-dir are required");
    if (optind < argc) return usage_error("unexpected argument %s", argv[optind]);
    if (strcmp(split, "eval") != 0 && strcmp(split, "train") != 0)
        return usage_error("--split %s: use eval or train", split);
    if (strcmp(backend, "auto") != 0 && strcmp(backend, "cpu") != 0 && strcmp(backend, "cuda") != 0)
        return usage_error("--backend %s: use auto, cpu or cuda", backend);
    kn_shutdown_setup();
    char err[1024];
    int rc, code = 1;
    kn_shardfiles sf;
    ev_evalset es = {0};
    kn_model *m = NULL;
    json_t *meta = NULL, *out = NULL;
    ev_score sc = {0};
    const kn_backend *be = NULL;
    if ((rc = kn_shardfiles_open(dir, &sf, err, sizeof(err))) != KN_OK) goto fail;
    if ((rc = load_set(&sf, split, &es, err, sizeof(err))) != KN_OK) goto fail_sf;
    if (access(ckpt, R_OK) != 0) {
        rc =
            kn_seterr(err, sizeof(err), KN_ENOTFOUND, "--checkpoint %s: %s", ckpt, strerror(errno));
        goto fail_sf;
    }
    if (!(be = kn_backend_pick(backend))) {
        rc = kn_seterr(err, sizeof(err), KN_EINVAL, "--backend %s: %s", backend,
                       kn_backend_why_not(backend));
        goto fail_sf;
    }
    ev_score_options o = {.batch = batch ? batch : 256, .lm_batch = batch ? batch : 4};
    /* the spec decides the rows: load the file once to read it */
    if ((rc = kn_model_load_file(ckpt, 1, be, &m, &meta, err, sizeof(err))) != KN_OK) goto fail_sf;
    int rows = ev_score_batch_for(kn_model_spec(m), &o);
    kn_model_destroy(m);
    m = NULL;
    json_decref(meta);
    meta = NULL;
    if ((rc = kn_model_load_file(ckpt, rows, be, &m, &meta, err, sizeof(err))) != KN_OK)
        goto fail_sf;
    struct timespec a, z;
    clock_gettime(CLOCK_MONOTONIC, &a);
    if ((rc = ev_score_model(m, &es, &o, &sc, err, sizeof(err))) != KN_OK) goto fail_sf;
    clock_gettime(CLOCK_MONOTONIC, &z);
    out = json_pack("{s:s, s:s, s:s, s:O, s:s, s:{s:s, s:s, s:I, s:I, s:s}, s:I, s:f}",
                    "checkpoint", ckpt, "backend", be->name, "primary", sc.primary, "metrics",
                    sc.metrics, "split", split, "eval_set", "dir", sf.dir, "topic", es.id.topic,
                    "shards", (json_int_t)es.id.shards, "examples", (json_int_t)es.id.examples,
                    "sha256", es.id.sha256, "skipped", (json_int_t)sc.skipped, "seconds",
                    (double)(z.tv_sec - a.tv_sec) + (double)(z.tv_nsec - a.tv_nsec) * 1e-9);
    if (out && confusion && sc.confusion) json_object_set(out, "confusion", sc.confusion);
    if (out) {
        json_dumpf(out, stdout, JSON_INDENT(2) | JSON_SORT_KEYS);
        fputc('\n', stdout);
        code = 0;
    }
fail_sf:
    kn_shardfiles_close(&sf);
fail:
    if (code != 0)
        fprintf(stderr, "kiln-evaluator score: %s\n", rc != KN_OK ? err : "out of memory");
    json_decref(out);
    ev_score_free(&sc);
    ev_evalset_free(&es);
    kn_model_destroy(m);
    json_decref(meta);
    return code;
}
