/* source_files.c: kiln-trainer without Kafka or a registry. Shards exported
 * by `kiln-preprocess export` (lib/stream/shardfiles.h) feed the batcher
 * through its source hook, in (partition, offset) order with partitions
 * interleaved one shard at a time; every checkpoint becomes
 * OUT/MODEL-vN.safetensors (the same bytes trn_checkpoint would upload) and
 * OUT/MODEL-vN.lineage.json (the registry's lineage document, plus "source":
 * the directory, the manifest's SHA-256, the pass and the files the range
 * covers). With one partition and the same seed, config and ranges, the
 * checkpoint equals the one trained from Kafka byte for byte (the consumer
 * delivers a partition in offset order; across partitions its interleaving
 * follows arrival, so only one-partition runs compare exactly). */
#include "trainer.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/kn.h"
#include "core/log.h"
#include "stream/shardfiles.h"

struct trn_files {
    trn_source src; /* first: the batcher's hook */
    kn_shardfiles sf;
    char dir[PATH_MAX];
    char out_dir[PATH_MAX];
    size_t *order; /* (norder) train files, in training order */
    size_t norder, next;
    int nparts;
    int64_t *start, *end; /* (nparts) exported range of each partition */
    int passes, pass;     /* pass: 0-based */
    uint64_t seed;
    void *buf; /* the payload in hand */
    const trn_settings *s;
    trn_batcher *b; /* skipped files go to its skipped_shards */
};

static int files_next(trn_source *src, trn_record *r)
{
    trn_files *f = (trn_files *)src;
    while (f->next < f->norder) {
        size_t i = f->order[f->next++];
        const kn_shardfile *sf = &f->sf.files[i];
        void *buf = NULL;
        size_t len = 0;
        char e[512];
        if (kn_shardfiles_read(&f->sf, i, &buf, &len, e, sizeof(e)) != KN_OK) {
            /* a missing or altered file is not the exported data: skipped
             * loudly and listed in the lineage's skipped_shards */
            kn_log_error("%s; skipped", e);
            json_array_append_new(f->b->skipped,
                                  json_pack("{s:i, s:I, s:s}", "partition", sf->partition,
                                            "offset", (json_int_t)sf->offset, "reason", e));
            f->b->bad_shards++;
            continue;
        }
        f->buf = buf;
        *r = (trn_record){.partition = sf->partition,
                          .offset = sf->offset,
                          .payload = buf,
                          .len = len,
                          .tokenizer_hash = kn_shardfiles_header(&f->sf, i, "tokenizer-sha256"),
                          .recipe = kn_shardfiles_header(&f->sf, i, "recipe-sha256")};
        return 1;
    }
    return 0;
}

static void files_release(trn_source *src, trn_record *r)
{
    trn_files *f = (trn_files *)src;
    (void)r;
    free(f->buf);
    f->buf = NULL;
}

void trn_files_free(trn_files *f)
{
    if (!f) return;
    free(f->buf);
    free(f->order);
    free(f->start);
    free(f->end);
    kn_shardfiles_close(&f->sf);
    free(f);
}

/* Training order: the train files, partitions interleaved one shard at a
 * time, each partition in offset order. */
static int make_order(trn_files *f)
{
    size_t n = f->sf.nfiles, k = 0;
    f->order = calloc(n ? n : 1, sizeof(*f->order));
    size_t *cursor = calloc((size_t)f->nparts + 1, sizeof(*cursor));
    if (!f->order || !cursor) {
        free(cursor);
        return KN_ENOMEM;
    }
    /* files are sorted by (split, partition, offset): cursor[p] walks p's */
    for (int p = 0; p < f->nparts; p++) {
        cursor[p] = n;
        for (size_t i = 0; i < n; i++)
            if (strcmp(f->sf.files[i].split, "train") == 0 && f->sf.files[i].partition == p) {
                cursor[p] = i;
                break;
            }
    }
    for (int progress = 1; progress;) {
        progress = 0;
        for (int p = 0; p < f->nparts; p++) {
            size_t i = cursor[p];
            if (i >= n || strcmp(f->sf.files[i].split, "train") != 0 ||
                f->sf.files[i].partition != p)
                continue;
            if (f->sf.files[i].offset >= f->start[p] && f->sf.files[i].offset < f->end[p])
                f->order[k++] = i;
            cursor[p] = i + 1;
            progress = 1;
        }
    }
    free(cursor);
    f->norder = k;
    return KN_OK;
}

static void set_starts(trn_files *f, trn_batcher *b)
{
    for (int p = 0; p < f->nparts; p++)
        trn_batcher_set_start(b, p, f->start[p], 0);
}

int trn_files_start(trn_files **out, const char *dir, const char *out_dir, int passes,
                    trn_settings *s, trn_ckpt_ctx *ctx, trn_batcher *b, const kn_backend *be,
                    char *err, size_t errsz)
{
    char e[512];
    int rc;
    *out = NULL;
    trn_files *f = calloc(1, sizeof(*f));
    if (!f) return kn_seterr(err, errsz, KN_ENOMEM, "out of memory");
    f->src.next = files_next;
    f->src.release = files_release;
    f->passes = passes > 0 ? passes : 1;
    f->seed = s->seed;
    f->s = s;
    if (!realpath(dir, f->dir)) {
        rc = kn_seterr(err, errsz, KN_ENOTFOUND, "--from-dir %s: %s", dir, strerror(errno));
        goto fail;
    }
    snprintf(f->out_dir, sizeof(f->out_dir), "%s", out_dir && *out_dir ? out_dir : ".");
    if (mkdir(f->out_dir, 0755) != 0 && errno != EEXIST) {
        rc = kn_seterr(err, errsz, KN_EIO, "--out-dir %s: %s", f->out_dir, strerror(errno));
        goto fail;
    }
    if ((rc = kn_shardfiles_open(f->dir, &f->sf, e, sizeof(e))) != KN_OK) {
        kn_seterr(err, errsz, rc, "%s", e);
        goto fail;
    }
    const char *topic = NULL;
    if (kn_shardfiles_range(&f->sf, "train", &topic, &f->nparts, NULL, NULL, 0) != KN_OK ||
        f->nparts <= 0 || !topic) {
        rc = kn_seterr(err, errsz, KN_ENOTFOUND, "%s: the export holds no train split", f->dir);
        goto fail;
    }
    f->start = calloc((size_t)f->nparts, sizeof(int64_t));
    f->end = calloc((size_t)f->nparts, sizeof(int64_t));
    if (!f->start || !f->end ||
        kn_shardfiles_range(&f->sf, "train", NULL, NULL, f->start, f->end, f->nparts) != KN_OK) {
        rc = kn_seterr(err, errsz, KN_ENOMEM, "out of memory");
        goto fail;
    }
    if (make_order(f) != KN_OK) {
        rc = kn_seterr(err, errsz, KN_ENOMEM, "out of memory");
        goto fail;
    }
    const char *ds = json_string_value(json_object_get(f->sf.manifest, "dataset"));
    if (ds && strcmp(ds, s->dataset) != 0)
        kn_log_warn("[model.%s] trains dataset '%s'; %s holds an export of '%s'", s->model,
                    s->dataset, f->dir, ds);
    snprintf(s->topic, sizeof(s->topic), "%s", topic);

    /* a fresh model: no registry to resume from */
    if ((rc = kn_model_new(s->spec, s->seed, s->batch, be, &ctx->model, e, sizeof(e))) != KN_OK) {
        kn_seterr(err, errsz, rc, "[model.%s] spec: %s", s->model, e);
        goto fail;
    }
    kn_optim_config oc;
    if ((rc = kn_optim_config_from_json(&oc, s->optim, e, sizeof(e))) != KN_OK ||
        (rc = kn_model_set_optim(ctx->model, &oc)) != KN_OK) {
        kn_seterr(err, errsz, rc, "[model.%s] optim: %s", s->model, e);
        goto fail;
    }
    ctx->parent_version = 0;
    snprintf(ctx->parent_model, sizeof(ctx->parent_model), "%s", s->model);
    ctx->parent_relation = "resume";
    ctx->step = ctx->steps_at_last_ckpt = 0;
    if ((rc = trn_batcher_init(b, ctx->model, s->batch, f->nparts, s->seed, s->shuffle, e,
                               sizeof(e))) != KN_OK) {
        kn_seterr(err, errsz, rc, "[model.%s]: %s", s->model, e);
        goto fail;
    }
    ctx->batcher = b;
    b->src = &f->src;
    f->b = b;
    set_starts(f, b);
    ctx->files = f;
    kn_log_fields(KN_LOG_INFO,
                  json_pack("{s:s, s:s, s:i, s:I, s:i, s:s}", "dir", f->dir, "topic", s->topic,
                            "partitions", f->nparts, "shards", (json_int_t)f->norder, "passes",
                            f->passes, "out_dir", f->out_dir),
                  "training from shard files");
    *out = f;
    return KN_OK;
fail:
    trn_files_free(f);
    return rc;
}

int trn_files_next_pass(trn_files *f, trn_batcher *b)
{
    if (f->pass + 1 >= f->passes) return 0;
    f->pass++;
    f->next = 0;
    /* pass 0 uses the configured seed (so it matches a Kafka run); later
     * passes draw a new in-shard order from (seed, pass) */
    b->seed = f->seed ^ ((uint64_t)f->pass * 0x9E3779B97F4A7C15ull);
    set_starts(f, b);
    kn_log_info("pass %d of %d over the files", f->pass + 1, f->passes);
    return 1;
}

/* The files a lineage range covers: [start.offset, end.offset), plus the
 * shard at end.offset when end.pos > 0 (read in part). */
static json_t *range_files(const trn_files *f, json_t *parts)
{
    json_t *a = json_array();
    size_t i;
    json_t *pr;
    json_array_foreach(parts, i, pr)
    {
        int p = (int)json_integer_value(json_object_get(pr, "partition"));
        json_t *st = json_object_get(pr, "start"), *en = json_object_get(pr, "end");
        int64_t from = json_integer_value(json_object_get(st, "offset"));
        int64_t to = json_integer_value(json_object_get(en, "offset"));
        if (json_integer_value(json_object_get(en, "pos")) > 0) to++;
        for (size_t k = 0; k < f->norder; k++) {
            const kn_shardfile *sf = &f->sf.files[f->order[k]];
            if (sf->partition == p && sf->offset >= from && sf->offset < to)
                json_array_append_new(a, json_pack("{s:s, s:i, s:I, s:s}", "path", sf->path,
                                                   "partition", p, "offset", (json_int_t)sf->offset,
                                                   "sha256", sf->sha256));
        }
    }
    return a;
}

static int write_file(const char *path, const void *buf, size_t len)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0644);
    if (fd < 0) return -1;
    const char *p = buf;
    while (len > 0) {
        ssize_t w = write(fd, p, len);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
            close(fd);
            unlink(path);
            return -1;
        }
        p += w;
        len -= (size_t)w;
    }
    if (fsync(fd) != 0 || close(fd) != 0) {
        unlink(path);
        return -1;
    }
    return 0;
}

int trn_files_checkpoint(trn_files *f, trn_ckpt_ctx *ctx, const unsigned char *buf, size_t len,
                         const char *sha, json_t *lineage, int *version, char *err, size_t errsz)
{
    int v = ctx->last_version + 1;
    char st[PATH_MAX + 500], lj[PATH_MAX + 500], base[400];
    snprintf(base, sizeof(base), "%s-v%d", ctx->s->model, v);
    snprintf(st, sizeof(st), "%s/%s.safetensors", f->out_dir, base);
    snprintf(lj, sizeof(lj), "%s/%s.lineage.json", f->out_dir, base);
    if (write_file(st, buf, len) != 0)
        return kn_seterr(err, errsz, KN_EIO,
                         "writing %s: %s (an earlier run's? use an empty "
                         "--out-dir)",
                         st, strerror(errno));
    json_t *doc = json_deep_copy(lineage);
    json_object_set_new(
        doc, "source",
        json_pack("{s:s, s:s, s:s, s:i, s:i, s:I, s:o}", "kind", "files", "dir", f->dir,
                  "manifest_sha256", f->sf.manifest_sha256, "pass", f->pass + 1, "passes",
                  f->passes, "pass_seed",
                  (json_int_t)(f->seed ^ ((uint64_t)f->pass * 0x9E3779B97F4A7C15ull)), "files",
                  range_files(f, json_object_get(lineage, "partitions"))));
    json_object_set_new(doc, "version", json_integer(v));
    json_object_set_new(doc, "artifact",
                        json_pack("{s:o, s:I, s:s}", "file", json_sprintf("%s.safetensors", base),
                                  "bytes", (json_int_t)len, "sha256", sha));
    char *txt = json_dumps(doc, JSON_INDENT(2) | JSON_SORT_KEYS);
    json_decref(doc);
    int rc = txt && write_file(lj, txt, strlen(txt)) == 0 ? KN_OK : KN_EIO;
    free(txt);
    if (rc != KN_OK) return kn_seterr(err, errsz, rc, "writing %s: %s", lj, strerror(errno));
    *version = v;
    return KN_OK;
}
