/* source_files.c: kiln-trainer without Kafka or a registry. Shards exported
 * by `kiln-preprocess export` (lib/stream/shardfiles.h) feed the batcher
 * through its source hook, in (partition, offset) order with partitions
 * interleaved one shard at a time; every checkpoint becomes
 * OUT/MODEL-vN.safetensors (the same bytes trn_checkpoint would upload) and
 * OUT/MODEL-vN.lineage.json (the registry's lineage document, plus "source":
 * the directory, the manifest's SHA-256, the pass and the files the range
 * covers). That is stream mode (epochs = 0). With epochs >= 1 the export is
 * the window: trn_source_open (window.c) reads each cycle from these files,
 * and the epochs, their seeded orders, augmentation and lineage are
 * window.c's, as over Kafka. In stream mode, with one partition and the
 * same seed, config and ranges, the checkpoint equals the one trained from
 * Kafka byte for byte (the consumer delivers a partition in offset order;
 * across partitions its interleaving follows arrival, so only one-partition
 * runs compare exactly). */
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

/* --- the source: an export's train files over [lo, hi) --- */
typedef struct {
    trn_source base;
    const kn_shardfiles *sf;
    json_t *skipped;
    size_t *order; /* (norder) indexes into sf->files, in training order */
    size_t norder, next;
    void *buf; /* the payload handed out last */
} files_source;

static int files_next(trn_source *src, trn_record *r, char *err, size_t errsz)
{
    files_source *fs = (files_source *)src;
    free(fs->buf);
    fs->buf = NULL;
    while (fs->next < fs->norder) {
        size_t i = fs->order[fs->next++];
        const kn_shardfile *sf = &fs->sf->files[i];
        size_t len = 0;
        char e[512];
        int rc = kn_shardfiles_read(fs->sf, i, &fs->buf, &len, e, sizeof(e));
        if (rc != KN_OK) {
            if (!fs->skipped) return kn_seterr(err, errsz, rc, "%s", e);
            /* a missing or altered file is not the exported data: skipped
             * loudly and listed in the lineage's skipped_shards */
            kn_log_error("%s; skipped", e);
            json_array_append_new(fs->skipped,
                                  json_pack("{s:i, s:I, s:s}", "partition", sf->partition, "offset",
                                            (json_int_t)sf->offset, "reason", e));
            continue;
        }
        *r = (trn_record){.partition = sf->partition,
                          .offset = sf->offset,
                          .payload = fs->buf,
                          .len = len,
                          .tokenizer_hash = kn_shardfiles_header(fs->sf, i, "tokenizer-sha256"),
                          .recipe = kn_shardfiles_header(fs->sf, i, "recipe-sha256")};
        return 1;
    }
    return 0;
}

static void files_destroy(trn_source *src)
{
    files_source *fs = (files_source *)src;
    if (!fs) return;
    free(fs->buf);
    free(fs->order);
    free(fs);
}

trn_source *trn_source_files(const kn_shardfiles *sf, int nparts, const int64_t *lo,
                             const int64_t *hi, json_t *skipped, char *err, size_t errsz)
{
    files_source *fs = calloc(1, sizeof(*fs));
    size_t n = sf->nfiles, k = 0;
    size_t *cursor = calloc((size_t)nparts + 1, sizeof(*cursor));
    if (fs) fs->order = calloc(n ? n : 1, sizeof(*fs->order));
    if (!fs || !fs->order || !cursor) {
        free(cursor);
        files_destroy(fs ? &fs->base : NULL);
        kn_seterr(err, errsz, KN_ENOMEM, "out of memory");
        return NULL;
    }
    fs->base.next = files_next;
    fs->base.destroy = files_destroy;
    fs->sf = sf;
    fs->skipped = skipped;
    /* files are sorted by (split, partition, offset): cursor[p] walks p's */
    for (int p = 0; p < nparts; p++) {
        cursor[p] = n;
        for (size_t i = 0; i < n; i++)
            if (strcmp(sf->files[i].split, "train") == 0 && sf->files[i].partition == p) {
                cursor[p] = i;
                break;
            }
    }
    for (int progress = 1; progress;) {
        progress = 0;
        for (int p = 0; p < nparts; p++) {
            size_t i = cursor[p];
            if (i >= n || strcmp(sf->files[i].split, "train") != 0 || sf->files[i].partition != p)
                continue;
            if (sf->files[i].offset >= lo[p] && sf->files[i].offset < hi[p]) fs->order[k++] = i;
            cursor[p] = i + 1;
            progress = 1;
        }
    }
    free(cursor);
    fs->norder = k;
    return &fs->base;
}

/* --- kiln-trainer --from-dir --- */
struct trn_files {
    kn_shardfiles sf;
    char dir[PATH_MAX];
    char out_dir[PATH_MAX];
    trn_source *src; /* the current pass's */
    int64_t nshards; /* train files in the range */
    int nparts;
    int64_t *start, *end; /* (nparts) exported range of each partition */
    int passes, pass;     /* pass: 0-based (stream mode) */
    int epochs;           /* window mode: the files are the window (window.c) */
    uint64_t seed;
    const trn_settings *s;
    trn_batcher *b;
};

void trn_files_free(trn_files *f)
{
    if (!f) return;
    if (f->src) f->src->destroy(f->src);
    free(f->start);
    free(f->end);
    kn_shardfiles_close(&f->sf);
    free(f);
}

/* A source for the whole range, from its start (a new pass). */
static int open_pass(trn_files *f, char *err, size_t errsz)
{
    if (f->src) f->src->destroy(f->src);
    f->src = trn_source_files(&f->sf, f->nparts, f->start, f->end, f->b->skipped, err, errsz);
    if (!f->src) return KN_ENOMEM;
    f->b->src = f->src;
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
    /* --passes counts passes over the files in either mode: in epochs mode
     * it is the epoch count (it replaces the config's `epochs`) */
    if (s->epochs > 0 && passes > 0) s->epochs = passes;
    f->epochs = s->epochs > 0;
    f->passes = f->epochs ? s->epochs : passes > 0 ? passes : 1;
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
    for (size_t i = 0; i < f->sf.nfiles; i++) {
        const kn_shardfile *sf = &f->sf.files[i];
        f->nshards += strcmp(sf->split, "train") == 0 && sf->partition < f->nparts &&
                      sf->offset >= f->start[sf->partition] && sf->offset < f->end[sf->partition];
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
    f->b = b;
    if (f->epochs) /* the window reads the files itself, a cycle at a time */
        s->from_files = &f->sf;
    else if ((rc = open_pass(f, e, sizeof(e))) != KN_OK) {
        trn_batcher_free(b);
        kn_seterr(err, errsz, rc, "%s", e);
        goto fail;
    }
    set_starts(f, b);
    ctx->files = f;
    kn_log_fields(KN_LOG_INFO,
                  json_pack("{s:s, s:s, s:i, s:I, s:s, s:i, s:s}", "dir", f->dir, "topic", s->topic,
                            "partitions", f->nparts, "shards", (json_int_t)f->nshards, "mode",
                            f->epochs ? "epochs" : "stream", "passes", f->passes, "out_dir",
                            f->out_dir),
                  "training from shard files");
    *out = f;
    return KN_OK;
fail:
    trn_files_free(f);
    return rc;
}

void trn_files_bounds(const trn_files *f, int64_t *start, int64_t *end)
{
    memcpy(start, f->start, (size_t)f->nparts * sizeof(int64_t));
    memcpy(end, f->end, (size_t)f->nparts * sizeof(int64_t));
}

int trn_files_next_pass(trn_files *f, trn_batcher *b)
{
    if (f->pass + 1 >= f->passes) return 0;
    char e[256];
    if (open_pass(f, e, sizeof(e)) != KN_OK) {
        kn_log_error("pass %d: %s", f->pass + 2, e);
        return 0;
    }
    f->pass++;
    /* pass 0 uses the configured seed (so it matches a Kafka run); later
     * passes draw a new in-shard order from (seed, pass) */
    b->seed = f->seed ^ ((uint64_t)f->pass * 0x9E3779B97F4A7C15ull);
    set_starts(f, b);
    kn_log_info("pass %d of %d over the files", f->pass + 1, f->passes);
    return 1;
}

static json_t *file_json(const kn_shardfile *sf)
{
    return json_pack("{s:s, s:i, s:I, s:s}", "path", sf->path, "partition", sf->partition, "offset",
                     (json_int_t)sf->offset, "sha256", sf->sha256);
}

typedef struct {
    int64_t partition, offset;
} file_key;

static int key_cmp(const void *a, const void *b)
{
    const file_key *x = a, *y = b;
    if (x->partition != y->partition) return x->partition < y->partition ? -1 : 1;
    return x->offset < y->offset ? -1 : x->offset > y->offset;
}

/* Epochs mode: the files the lineage's epoch segments ([p, offset, from,
 * to]) touch, each once, in export order (the segments sorted, then each
 * train file looked up: an epoch holds a segment per shard). */
static json_t *epoch_files(const trn_files *f, json_t *epochs)
{
    json_t *a = json_array(), *ep, *seg;
    size_t n = 0, i, j;
    json_array_foreach(epochs, i, ep) n += json_array_size(json_object_get(ep, "shards"));
    file_key *keys = malloc((n ? n : 1) * sizeof(*keys));
    if (!keys) return a;
    n = 0;
    json_array_foreach(epochs, i, ep)
    {
        json_array_foreach(json_object_get(ep, "shards"), j, seg)
        {
            keys[n++] = (file_key){json_integer_value(json_array_get(seg, 0)),
                                   json_integer_value(json_array_get(seg, 1))};
        }
    }
    qsort(keys, n, sizeof(*keys), key_cmp);
    for (size_t k = 0; k < f->sf.nfiles; k++) {
        const kn_shardfile *sf = &f->sf.files[k];
        file_key want = {sf->partition, sf->offset};
        if (strcmp(sf->split, "train") == 0 && bsearch(&want, keys, n, sizeof(*keys), key_cmp))
            json_array_append_new(a, file_json(sf));
    }
    free(keys);
    return a;
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
        for (size_t k = 0; k < f->sf.nfiles; k++) {
            const kn_shardfile *sf = &f->sf.files[k];
            if (strcmp(sf->split, "train") == 0 && sf->partition == p && sf->offset >= from &&
                sf->offset < to)
                json_array_append_new(a, file_json(sf));
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
    json_t *src;
    if (f->epochs) /* the lineage's cycle and epochs say what was trained, in which order */
        src = json_pack("{s:s, s:s, s:s, s:o}", "kind", "files", "dir", f->dir, "manifest_sha256",
                        f->sf.manifest_sha256, "files",
                        epoch_files(f, json_object_get(lineage, "epochs")));
    else
        src = json_pack("{s:s, s:s, s:s, s:i, s:i, s:I, s:o}", "kind", "files", "dir", f->dir,
                        "manifest_sha256", f->sf.manifest_sha256, "pass", f->pass + 1, "passes",
                        f->passes, "pass_seed",
                        (json_int_t)(f->seed ^ ((uint64_t)f->pass * 0x9E3779B97F4A7C15ull)),
                        "files", range_files(f, json_object_get(lineage, "partitions")));
    json_object_set_new(doc, "source", src);
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
