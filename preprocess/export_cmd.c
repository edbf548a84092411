/* export_cmd.c: `kiln-preprocess export`: copies the shards of an offset
 * range of <prefix>.train.<dataset> and <prefix>.eval.<dataset> (read
 * committed) into a directory, one file per shard holding exactly the record
 * value, plus manifest.json (topic, partition, offset, size, SHA-256 and
 * headers of every file; the range of every partition; the recipe and
 * tokenizer hashes). kiln-trainer --from-dir and kiln-evaluator score read
 * it back (lib/stream/shardfiles.h); docs/formats.md has the layout. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <jansson.h>

#include "core/config.h"
#include "core/kn.h"
#include "core/sha256.h"
#include "core/shutdown.h"
#include "export_cmd.h"
#include "image/idx.h"
#include "image/image.h"
#include "recipe/recipe.h"
#include "service/service.h"
#include "stream/kafka.h"
#include "stream/shard.h"
#include "stream/shardfiles.h"

#define EXPORT_IDLE_MS 30000

static void usage(FILE *f)
{
    fprintf(f, "usage: kiln-preprocess export --dataset NAME --out DIR [options]\n"
               "\n"
               "Copies the shards of <prefix>.train.<dataset> and <prefix>.eval.<dataset>\n"
               "(read_committed) into DIR: one file per shard, byte for byte the Kafka\n"
               "record value, and DIR/manifest.json (topic, partition, offset, bytes,\n"
               "sha256 and headers of each file; each partition's exported range; the\n"
               "recipe and tokenizer hashes). kiln-trainer --from-dir DIR trains from it,\n"
               "kiln-evaluator score --eval-dir DIR scores on it. See docs/preprocess.md.\n"
               "\n"
               "options:\n"
               "  --dataset NAME      the [dataset.NAME] whose topics are exported (required)\n"
               "  --out DIR           output directory (created; must not hold an export)\n"
               "  --config FILE       read kafka.brokers and kafka.topic_prefix from FILE\n"
               "                      (KILN_KAFKA_BROKERS / KILN_KAFKA_TOPIC_PREFIX override)\n"
               "  --brokers LIST      Kafka bootstrap servers (default kafka.brokers)\n"
               "  --prefix P          topic prefix (default kafka.topic_prefix, \"kiln\")\n"
               "  --split S           train | eval | both (default both)\n"
               "  --range SPLIT:P:START-END\n"
               "                      export offsets [START, END) of partition P of SPLIT\n"
               "                      (END may be empty: the committed end); repeatable.\n"
               "                      Partitions not named: everything retained.\n"
               "  --from-idx DIR      no Kafka: make the shards preprocess would make of\n"
               "                      `kiln-ingest import fashion-mnist DIR` (train-* and t10k-*\n"
               "                      IDX files; needs --config with [dataset.NAME]); offsets\n"
               "                      are shard numbers\n"
               "  --quiet             no progress lines\n"
               "  --help              this text\n");
}

typedef struct {
    char split[8];
    int partition;
    int64_t start, end; /* end -1: the committed end */
} range_opt;

static int parse_range(const char *s, range_opt *r)
{
    char split[8];
    int p, n = 0;
    long long a, b = -1;
    if (sscanf(s, "%7[a-z]:%d:%lld-%n", split, &p, &a, &n) < 3 || n == 0) return -1;
    if (s[n] && sscanf(s + n, "%lld", &b) != 1) return -1;
    if ((strcmp(split, "train") != 0 && strcmp(split, "eval") != 0) || p < 0 || a < 0 ||
        (b >= 0 && b < a))
        return -1;
    snprintf(r->split, sizeof(r->split), "%s", split);
    r->partition = p;
    r->start = a;
    r->end = b;
    return 0;
}

static int mkdirs(const char *path)
{
    char tmp[4096];
    snprintf(tmp, sizeof(tmp), "%s", path);
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        if (mkdir(tmp, 0755) != 0 && errno != EEXIST) return -1;
        *p = '/';
    }
    return mkdir(tmp, 0755) != 0 && errno != EEXIST ? -1 : 0;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

typedef struct {
    const char *out;
    int quiet;
    json_t *files;      /* manifest "files" */
    json_t *splits;     /* manifest "splits" */
    json_t *recipes;    /* distinct recipe-sha256 values */
    json_t *tokenizers; /* distinct tokenizer-sha256 values */
    int64_t nfiles, bytes;
    double t0, last_progress;
} exporter;

static void add_distinct(json_t *arr, const char *v)
{
    size_t i;
    json_t *x;
    json_array_foreach(arr, i, x) if (strcmp(json_string_value(x), v) == 0) return;
    json_array_append_new(arr, json_string(v));
}

/* The record's headers as {name: text}; values that are not UTF-8 go to
 * {name: "hex:..."}. */
static json_t *headers_json(rd_kafka_message_t *m, exporter *ex)
{
    json_t *h = json_object();
    rd_kafka_headers_t *hdrs = NULL;
    if (rd_kafka_message_headers(m, &hdrs) != RD_KAFKA_RESP_ERR_NO_ERROR || !hdrs) return h;
    const char *name;
    const void *val;
    size_t size;
    for (size_t i = 0;
         rd_kafka_header_get_all(hdrs, i, &name, &val, &size) == RD_KAFKA_RESP_ERR_NO_ERROR; i++) {
        json_t *s = val ? json_stringn(val, size) : json_null();
        if (!s) {
            char *hex = malloc(2 * size + 5);
            if (!hex) continue;
            strcpy(hex, "hex:");
            for (size_t k = 0; k < size; k++)
                sprintf(hex + 4 + 2 * k, "%02x", ((const unsigned char *)val)[k]);
            s = json_string(hex);
            free(hex);
        }
        json_object_set_new(h, name, s);
    }
    const char *r = json_string_value(json_object_get(h, "recipe-sha256"));
    if (r && *r) add_distinct(ex->recipes, r);
    const char *t = json_string_value(json_object_get(h, "tokenizer-sha256"));
    if (t && *t) add_distinct(ex->tokenizers, t);
    return h;
}

/* Writes one record as a file and adds it to the manifest (headers: stolen). */
static int write_record(exporter *ex, const char *split, const char *topic, int32_t partition,
                        int64_t offset, const void *payload, size_t len, json_t *headers,
                        json_t *part, char *err, size_t errsz)
{
    char rel[256], path[4096], dir[4096], hex[KN_SHA256_HEX_LEN];
    snprintf(rel, sizeof(rel), "%s/p%d/%020" PRId64 ".kshd", split, (int)partition, offset);
    snprintf(dir, sizeof(dir), "%s/%s/p%d", ex->out, split, (int)partition);
    snprintf(path, sizeof(path), "%s/%s", ex->out, rel);
    if (mkdirs(dir) != 0) {
        json_decref(headers);
        return kn_seterr(err, errsz, KN_EIO, "mkdir %s: %s", dir, strerror(errno));
    }
    FILE *f = fopen(path, "wb");
    int wrote = f && (!len || fwrite(payload, 1, len, f) == len);
    if (!f || fclose(f) != 0 || !wrote) {
        int e = errno;
        json_decref(headers);
        return kn_seterr(err, errsz, KN_EIO, "writing %s: %s", path, strerror(e));
    }
    kn_sha256_hex(payload, len, hex);
    kn_shard_view v;
    int valid = kn_shard_parse(payload, len, &v, NULL, 0) == KN_OK;
    json_int_t examples = valid ? (json_int_t)v.info.count : 0;
    json_array_append_new(
        ex->files, json_pack("{s:s, s:s, s:s, s:i, s:I, s:I, s:s, s:I, s:b, s:o}", "path", rel,
                             "split", split, "topic", topic, "partition", (int)partition, "offset",
                             (json_int_t)offset, "bytes", (json_int_t)len, "sha256", hex,
                             "examples", examples, "valid", valid, "headers", headers));
    json_object_set_new(part, "shards",
                        json_integer(json_integer_value(json_object_get(part, "shards")) + 1));
    json_object_set_new(
        part, "examples",
        json_integer(json_integer_value(json_object_get(part, "examples")) + examples));
    ex->nfiles++;
    ex->bytes += (int64_t)len;
    double t = now_s();
    if (!ex->quiet && t - ex->last_progress >= 2.0) {
        fprintf(stderr,
                "export: %" PRId64 " shards, %.1f MB, %.0f s (%s [%d] offset %" PRId64 ")\n",
                ex->nfiles, (double)ex->bytes / 1e6, t - ex->t0, topic, (int)partition, offset);
        ex->last_progress = t;
    }
    return KN_OK;
}

static int export_split(exporter *ex, const char *brokers, const char *topic, const char *split,
                        const range_opt *ranges, int nranges, char *err, size_t errsz)
{
    static const char *const extra[] = {"enable.partition.eof", "true", NULL};
    kn_kafka_consumer_options o = {.brokers = brokers,
                                   .group_id = "kiln-preprocess-export", /* assign only */
                                   .client_id = "kiln-preprocess-export",
                                   .read_committed = 1,
                                   .extra = extra};
    kn_kafka_consumer *c = kn_kafka_consumer_new(&o, err, errsz);
    if (!c) return KN_EKAFKA;
    rd_kafka_t *rk = kn_kafka_consumer_handle(c);
    int rc = KN_OK;
    int64_t *start = NULL, *end = NULL;
    int *done = NULL;
    json_t *parts = json_array();
    rd_kafka_topic_partition_list_t *l = NULL;
    int n = kn_kafka_partition_count(rk, topic, 10000);
    if (n <= 0) {
        rc = kn_seterr(err, errsz, KN_ENOTFOUND, "topic %s does not exist", topic);
        goto out;
    }
    start = calloc((size_t)n, sizeof(*start));
    end = calloc((size_t)n, sizeof(*end));
    done = calloc((size_t)n, sizeof(*done));
    l = rd_kafka_topic_partition_list_new(n);
    if (!start || !end || !done || !l || !parts) {
        rc = kn_seterr(err, errsz, KN_ENOMEM, "out of memory");
        goto out;
    }
    int remaining = 0;
    for (int p = 0; p < n; p++) {
        int64_t lo, hi; /* read_committed: hi is the last stable offset */
        if ((rc = kn_kafka_watermarks(rk, topic, p, &lo, &hi, 10000)) != KN_OK) {
            kn_seterr(err, errsz, rc, "watermarks of %s [%d]", topic, p);
            goto out;
        }
        start[p] = lo;
        end[p] = hi;
        for (int i = 0; i < nranges; i++) {
            if (strcmp(ranges[i].split, split) != 0 || ranges[i].partition != p) continue;
            if (ranges[i].start < lo) {
                rc = kn_seterr(err, errsz, KN_ENOTFOUND,
                               "%s [%d]: offset %" PRId64 " is no longer retained (first %" PRId64
                               ")",
                               topic, p, ranges[i].start, lo);
                goto out;
            }
            start[p] = ranges[i].start;
            if (ranges[i].end >= 0 && ranges[i].end < hi) end[p] = ranges[i].end;
            if (start[p] > end[p]) start[p] = end[p];
        }
        json_array_append_new(parts, json_pack("{s:i, s:I, s:I, s:I, s:I}", "partition", p, "start",
                                               (json_int_t)start[p], "end", (json_int_t)end[p],
                                               "shards", (json_int_t)0, "examples", (json_int_t)0));
        if (end[p] > start[p]) {
            rd_kafka_topic_partition_list_add(l, topic, p)->offset = start[p];
            remaining++;
        } else {
            done[p] = 1;
        }
    }
    for (int i = 0; i < nranges; i++)
        if (strcmp(ranges[i].split, split) == 0 && ranges[i].partition >= n) {
            rc = kn_seterr(err, errsz, KN_EINVAL, "--range %s:%d: %s has %d partition(s)", split,
                           ranges[i].partition, topic, n);
            goto out;
        }
    if (remaining && (rc = kn_kafka_consumer_assign(c, l, err, errsz)) != KN_OK) goto out;
    double last = now_s();
    while (remaining > 0) {
        if (kn_shutdown_requested()) {
            rc = kn_seterr(err, errsz, KN_ERR, "interrupted");
            goto out;
        }
        rd_kafka_message_t *m = kn_kafka_consumer_poll(c, 200);
        if (!m) {
            if ((now_s() - last) * 1000 > EXPORT_IDLE_MS) {
                rc = kn_seterr(err, errsz, KN_ETIMEDOUT,
                               "reading %s: no progress for %d s (%d partition(s) unfinished)",
                               topic, EXPORT_IDLE_MS / 1000, remaining);
                goto out;
            }
            continue;
        }
        int32_t p = m->partition;
        int over = p < 0 || p >= n || done[p];
        if (!over && m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            if (m->offset >= end[p]) done[p] = 1, remaining--;
        } else if (!over && !m->err) {
            last = now_s();
            if (m->offset >= end[p]) {
                done[p] = 1, remaining--;
            } else {
                rc =
                    write_record(ex, split, topic, p, m->offset, m->payload, m->len,
                                 headers_json(m, ex), json_array_get(parts, (size_t)p), err, errsz);
                if (rc == KN_OK && m->offset + 1 >= end[p]) done[p] = 1, remaining--;
            }
        }
        rd_kafka_message_destroy(m);
        if (rc != KN_OK) goto out;
    }
    json_object_set_new(ex->splits, split,
                        json_pack("{s:s, s:O}", "topic", topic, "partitions", parts));
out:
    kn_kafka_consumer_destroy(c);
    if (l) rd_kafka_topic_partition_list_destroy(l);
    json_decref(parts);
    free(start);
    free(end);
    free(done);
    return rc;
}

/* --from-idx: the shards kiln-preprocess would make of `kiln-ingest import
 * fashion-mnist DIR` (one partition, published splits: train-* to train,
 * t10k-* to eval), made here from the IDX files with the dataset's recipe:
 * each image as the PGM record ingest sends (its SHA-256 the source key),
 * converted, augmented (train, when the recipe says) and normalized as
 * preprocess does, shard_examples per shard. Offsets are shard numbers. */
static int export_idx(exporter *ex, const char *dir, const kn_recipe *r, const char *stem,
                      const char *split, const char *topic, char *err, size_t errsz)
{
    char ipath[4096], lpath[4096], e[512];
    snprintf(ipath, sizeof(ipath), "%s/%s-images-idx3-ubyte.gz", dir, stem);
    snprintf(lpath, sizeof(lpath), "%s/%s-labels-idx1-ubyte.gz", dir, stem);
    kn_idx *im = kn_idx_open(ipath, e, sizeof(e)),
           *lb = im ? kn_idx_open(lpath, e, sizeof(e)) : NULL;
    if (!im || !lb) {
        kn_idx_close(im);
        return kn_seterr(err, errsz, KN_ENOTFOUND, "%s", e);
    }
    int rc = KN_OK;
    kn_shard_writer *w = NULL;
    uint8_t *pgm = NULL;
    kn_image img;
    kn_image_init(&img);
    json_t *part =
        json_pack("{s:i, s:I, s:I, s:I, s:I}", "partition", 0, "start", (json_int_t)0, "end",
                  (json_int_t)0, "shards", (json_int_t)0, "examples", (json_int_t)0);
    const kn_idx_header *ih = kn_idx_hdr(im), *lh = kn_idx_hdr(lb);
    if (ih->dtype != KN_IDX_U8 || ih->ndim != 3 || lh->dtype != KN_IDX_U8 || lh->ndim != 1 ||
        ih->dims[0] != lh->dims[0]) {
        rc = kn_seterr(err, errsz, KN_ECORRUPT,
                       "%s / %s: expected u8 N x rows x cols images and "
                       "N u8 labels",
                       ipath, lpath);
        goto out;
    }
    char head[64];
    int hl = snprintf(head, sizeof(head), "P5\n%u %u\n255\n", ih->dims[2], ih->dims[1]);
    uint32_t shape[3] = {(uint32_t)r->height, (uint32_t)r->width, (uint32_t)r->channels};
    w = kn_shard_writer_new(KN_SHARD_IMAGE, KN_SHARD_F32, 3, shape, r->shard_examples,
                            r->shard_examples, e, sizeof(e));
    pgm = malloc((size_t)hl + ih->item_size);
    if (!w || !pgm) {
        rc = kn_seterr(err, errsz, KN_ENOMEM, "shard writer: %s", w ? "out of memory" : e);
        goto out;
    }
    memcpy(pgm, head, (size_t)hl);
    int64_t shard = 0;
    int train = strcmp(split, "train") == 0;
    for (uint32_t i = 0; i <= ih->dims[0]; i++) {
        if (i < ih->dims[0]) {
            uint8_t cls, key[KN_SHA256_LEN];
            if ((rc = kn_idx_next(im, pgm + hl, e, sizeof(e))) != KN_OK ||
                (rc = kn_idx_next(lb, &cls, e, sizeof(e))) != KN_OK) {
                kn_seterr(err, errsz, rc, "%s", e);
                goto out;
            }
            char label[8];
            snprintf(label, sizeof(label), "%u", cls);
            int li = kn_recipe_label(r, label);
            if (li < 0) continue; /* preprocess refuses it (unknown_label) */
            kn_sha256_digest(pgm, (size_t)hl + ih->item_size, key);
            kn_image_free(&img);
            if ((rc = kn_image_decode(pgm, (size_t)hl + ih->item_size, r->max_pixels, &img, e,
                                      sizeof(e))) != KN_OK ||
                (rc = kn_image_convert(&img, r->width, r->height, r->channels, &img)) != KN_OK) {
                kn_seterr(err, errsz, rc, "%s #%u: %s", ipath, i, e);
                goto out;
            }
            uint64_t seed = 0;
            if (train && r->augment) {
                for (int k = 8; k < 16; k++)
                    seed = (seed << 8) | key[k];
                if (seed == 0) seed = 1;
                if ((rc = kn_image_augment(&img, &r->aug, seed, &img)) != KN_OK) {
                    kn_seterr(err, errsz, rc, "%s #%u: augment", ipath, i);
                    goto out;
                }
            }
            kn_image_normalize(&img, r->mean, r->std);
            kn_shard_writer_add(w, img.data, li, seed, key);
            if (!kn_shard_writer_full(w)) continue;
        }
        if (kn_shard_writer_count(w) == 0) break;
        const void *buf;
        size_t len;
        kn_shard_writer_finish(w, &buf, &len);
        char created[32];
        snprintf(created, sizeof(created), "%lld", (long long)time(NULL) * 1000);
        json_t *h = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s}", "shard-version", "1", "dataset",
                              r->name, "split", split, "recipe-sha256", r->hash, "producer",
                              "export-idx", "created-ms", created);
        rc = write_record(ex, split, topic, 0, shard++, buf, len, h, part, err, errsz);
        kn_shard_writer_reset(w);
        if (rc != KN_OK) goto out;
    }
    add_distinct(ex->recipes, r->hash);
    json_object_set_new(part, "end", json_integer(shard));
    json_object_set_new(ex->splits, split,
                        json_pack("{s:s, s:[O]}", "topic", topic, "partitions", part));
out:
    json_decref(part);
    kn_image_free(&img);
    free(pgm);
    kn_shard_writer_destroy(w);
    kn_idx_close(im);
    kn_idx_close(lb);
    return rc;
}

static int cmp_files(const void *a, const void *b)
{
    const json_t *x = *(json_t *const *)a, *y = *(json_t *const *)b;
    return strcmp(json_string_value(json_object_get(x, "path")),
                  json_string_value(json_object_get(y, "path")));
}

int pp_export_main(int argc, char **argv)
{
    static const struct option opts[] = {{"dataset", required_argument, NULL, 'd'},
                                         {"out", required_argument, NULL, 'o'},
                                         {"config", required_argument, NULL, 'c'},
                                         {"brokers", required_argument, NULL, 'b'},
                                         {"prefix", required_argument, NULL, 'p'},
                                         {"split", required_argument, NULL, 's'},
                                         {"range", required_argument, NULL, 'r'},
                                         {"quiet", no_argument, NULL, 'q'},
                                         {"from-idx", required_argument, NULL, 'x'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    const char *dataset = NULL, *out = NULL, *config = NULL, *brokers = NULL, *prefix = NULL;
    const char *split = "both", *idx = NULL;
    range_opt ranges[256];
    int nranges = 0, quiet = 0, ch;
    optind = 1;
    while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (ch) {
        case 'd':
            dataset = optarg;
            break;
        case 'o':
            out = optarg;
            break;
        case 'c':
            config = optarg;
            break;
        case 'b':
            brokers = optarg;
            break;
        case 'p':
            prefix = optarg;
            break;
        case 's':
            split = optarg;
            break;
        case 'q':
            quiet = 1;
            break;
        case 'x':
            idx = optarg;
            break;
        case 'r':
            if (nranges >= 256 || parse_range(optarg, &ranges[nranges]) != 0) {
                fprintf(stderr, "kiln-preprocess export: --range %s: use SPLIT:P:START-END\n",
                        optarg);
                return 2;
            }
            nranges++;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (!dataset || !out || optind < argc ||
        (strcmp(split, "both") && strcmp(split, "train") && strcmp(split, "eval"))) {
        usage(stderr);
        return 2;
    }
    char err[1024];
    kn_config *cfg = kn_config_new();
    if (!cfg || (config && kn_config_load_file(cfg, config, err, sizeof(err)) != KN_OK)) {
        fprintf(stderr, "kiln-preprocess export: %s\n", cfg ? err : "out of memory");
        kn_config_destroy(cfg);
        return 1;
    }
    if (!brokers) brokers = kn_config_get(cfg, "kafka.brokers", KN_SERVICE_DEFAULT_BROKERS);
    if (!prefix) prefix = kn_config_get(cfg, "kafka.topic_prefix", "kiln");
    char mpath[4096];
    snprintf(mpath, sizeof(mpath), "%s/%s", out, KN_SHARDFILES_MANIFEST);
    struct stat st;
    if (stat(mpath, &st) == 0) {
        fprintf(stderr, "kiln-preprocess export: %s exists: choose an empty directory\n", mpath);
        kn_config_destroy(cfg);
        return 1;
    }
    if (mkdirs(out) != 0) {
        fprintf(stderr, "kiln-preprocess export: mkdir %s: %s\n", out, strerror(errno));
        kn_config_destroy(cfg);
        return 1;
    }
    kn_shutdown_setup();
    exporter ex = {.out = out,
                   .quiet = quiet,
                   .files = json_array(),
                   .splits = json_object(),
                   .recipes = json_array(),
                   .tokenizers = json_array(),
                   .t0 = now_s()};
    int rc = KN_OK;
    const char *which[] = {"train", "eval"};
    for (int i = 0; i < 2 && rc == KN_OK; i++) {
        if (strcmp(split, "both") != 0 && strcmp(split, which[i]) != 0) continue;
        char topic[512];
        snprintf(topic, sizeof(topic), "%s.%s.%s", prefix, which[i], dataset);
        if (!idx) {
            rc = export_split(&ex, brokers, topic, which[i], ranges, nranges, err, sizeof(err));
            continue;
        }
        char section[300];
        kn_recipe r;
        snprintf(section, sizeof(section), "dataset.%s", dataset);
        snprintf(topic, sizeof(topic), "idx:%s/%s-images-idx3-ubyte.gz", idx,
                 i == 0 ? "train" : "t10k");
        if ((rc = kn_recipe_load(cfg, section, &r, err, sizeof(err))) == KN_OK) {
            if (r.kind != KN_RECIPE_IMAGE)
                rc = kn_seterr(err, sizeof(err), KN_EINVAL, "--from-idx: [%s] is not kind = image",
                               section);
            else
                rc = export_idx(&ex, idx, &r, i == 0 ? "train" : "t10k", which[i], topic, err,
                                sizeof(err));
        }
        kn_recipe_free(&r);
    }
    if (rc == KN_OK) {
        /* files in (split, partition, offset) order: the paths sort that way */
        size_t n = json_array_size(ex.files);
        json_t **v = calloc(n ? n : 1, sizeof(*v));
        for (size_t i = 0; v && i < n; i++)
            v[i] = json_incref(json_array_get(ex.files, i));
        if (v) qsort(v, n, sizeof(*v), cmp_files);
        json_array_clear(ex.files);
        for (size_t i = 0; v && i < n; i++)
            json_array_append_new(ex.files, v[i]);
        free(v);
        char created[32];
        time_t t = time(NULL);
        struct tm tm;
        gmtime_r(&t, &tm);
        strftime(created, sizeof(created), "%Y-%m-%dT%H:%M:%SZ", &tm);
        json_t *m = json_pack(
            "{s:s, s:i, s:s, s:s, s:s, s:s, s:o, s:O, s:O, s:O, s:I, s:I}", "kind",
            KN_SHARDFILES_KIND, "schema", 1, "dataset", dataset, "prefix", prefix, "created",
            created, "isolation", "read_committed", "recipe_sha256",
            json_array_size(ex.recipes) == 1 ? json_incref(json_array_get(ex.recipes, 0))
                                             : json_null(),
            "tokenizer_sha256",
            json_array_size(ex.tokenizers) == 1 ? json_array_get(ex.tokenizers, 0) : json_null(),
            "splits", ex.splits, "files", ex.files, "shards", (json_int_t)ex.nfiles, "bytes",
            (json_int_t)ex.bytes);
        json_object_set(m, "recipes", ex.recipes);
        json_object_set(m, "tokenizers", ex.tokenizers);
        char tmp[4200];
        snprintf(tmp, sizeof(tmp), "%s.tmp", mpath);
        if (!m || json_dump_file(m, tmp, JSON_INDENT(1) | JSON_SORT_KEYS) != 0 ||
            rename(tmp, mpath) != 0)
            rc = kn_seterr(err, sizeof(err), KN_EIO, "writing %s", mpath);
        json_decref(m);
    }
    if (rc == KN_OK)
        fprintf(stderr, "export: %" PRId64 " shards, %.1f MB in %.1f s -> %s\n", ex.nfiles,
                (double)ex.bytes / 1e6, now_s() - ex.t0, mpath);
    else
        fprintf(stderr, "kiln-preprocess export: %s\n", err);
    json_decref(ex.files);
    json_decref(ex.splits);
    json_decref(ex.recipes);
    json_decref(ex.tokenizers);
    kn_config_destroy(cfg);
    return rc == KN_OK ? 0 : 1;
}
