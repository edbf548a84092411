/* window.c: epochs over a window of the stream (trainer.h has the model:
 * cycles of items, passes, a cursor). A cycle's records are read once into
 * memory (window_max_mb bounds it), so every epoch can visit them in a fresh
 * seeded order without seeking Kafka per shard; the cursor (epoch, index,
 * pos) is all a checkpoint needs to say what was trained, because the order
 * of every epoch is a function of (seed, cycle, epoch) and the items.
 * The records come through a trn_source (next record: partition, offset,
 * bytes, headers), opened by trn_source_open: Kafka here, or the files of an
 * export (source_files.c) for kiln-trainer --from-dir, so epochs over files
 * are the same code as epochs over the stream. */
#include "trainer.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/kn.h"
#include "core/log.h"
#include "core/shutdown.h"

static uint64_t mix(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

uint64_t trn_epoch_seed(uint64_t seed, int cycle, int epoch)
{
    uint64_t st = seed ^ ((uint64_t)(uint32_t)cycle * 0xA24BAED4963EE407ull) ^
                  ((uint64_t)(uint32_t)epoch * 0x9FB21C651E98DF25ull);
    return mix(&st) >> 1;
}

static uint64_t item_seed(uint64_t base, int32_t partition, int64_t offset)
{
    uint64_t st =
        base ^ ((uint64_t)(uint32_t)partition << 48) ^ (uint64_t)offset * 0xD1B54A32D192ED03ull;
    return mix(&st);
}

static void shuffle_u32(uint32_t *a, uint32_t n, uint64_t st)
{
    for (uint32_t i = n > 0 ? n - 1 : 0; i > 0; i--) {
        uint32_t j = (uint32_t)(mix(&st) % ((uint64_t)i + 1));
        uint32_t t = a[i];
        a[i] = a[j];
        a[j] = t;
    }
}

/* --- the Kafka source --- */
typedef struct {
    trn_source base;
    kn_kafka_consumer *c;
    int nparts;
    int64_t *lo, *hi;
    int *done;
    int left;
    rd_kafka_message_t *m;
    char tok[65], rec[65];
} kafka_source;

static int kafka_next(trn_source *src, trn_record *rec, char *err, size_t errsz);
static void kafka_destroy(trn_source *src);

int trn_source_next(trn_source *src, trn_record *rec, char *err, size_t errsz)
{
    return src->next(src, rec, err, errsz);
}

void trn_source_free(trn_source *src)
{
    if (src) src->destroy(src);
}

trn_source *trn_source_open(const trn_settings *s, int nparts, const int64_t *lo, const int64_t *hi,
                            json_t *skipped, char *err, size_t errsz)
{
    if (s->from_files) return trn_source_files(s->from_files, nparts, lo, hi, skipped, err, errsz);
    char group[200];
    snprintf(group, sizeof(group), "kiln-trainer.%s.window", s->model);
    return trn_source_kafka(s->brokers, s->topic, group, nparts, lo, hi, err, errsz);
}

trn_source *trn_source_kafka(const char *brokers, const char *topic, const char *group, int nparts,
                             const int64_t *lo, const int64_t *hi, char *err, size_t errsz)
{
    kafka_source *s = calloc(1, sizeof(*s));
    if (!s) return NULL;
    s->base.next = kafka_next;
    s->base.destroy = kafka_destroy;
    s->nparts = nparts;
    s->lo = calloc((size_t)nparts, sizeof(int64_t));
    s->hi = calloc((size_t)nparts, sizeof(int64_t));
    s->done = calloc((size_t)nparts, sizeof(int));
    static const char *const extra[] = {"enable.partition.eof", "true", NULL};
    kn_kafka_consumer_options co = {.brokers = brokers,
                                    .group_id = group,
                                    .read_committed = 1,
                                    .client_id = "kiln-trainer",
                                    .extra = extra};
    if (s->lo && s->hi && s->done) s->c = kn_kafka_consumer_new(&co, err, errsz);
    if (!s->c) {
        kafka_destroy(&s->base);
        return NULL;
    }
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(nparts);
    for (int p = 0; p < nparts; p++) {
        s->lo[p] = lo[p];
        s->hi[p] = hi[p];
        s->done[p] = lo[p] >= hi[p];
        if (!s->done[p]) {
            s->left++;
            rd_kafka_topic_partition_list_add(l, topic, p)->offset = lo[p];
        }
    }
    int rc = s->left ? kn_kafka_consumer_assign(s->c, l, err, errsz) : KN_OK;
    rd_kafka_topic_partition_list_destroy(l);
    if (rc != KN_OK) {
        kafka_destroy(&s->base);
        return NULL;
    }
    return &s->base;
}

static void finish_part(kafka_source *s, int p)
{
    if (!s->done[p]) {
        s->done[p] = 1;
        s->left--;
    }
}

static void copy_header(const rd_kafka_message_t *m, const char *name, char *out, size_t outsz)
{
    const void *v;
    size_t len;
    out[0] = '\0';
    if (kn_kafka_header_get(m, name, &v, &len) != KN_OK || len == 0 || len >= outsz) return;
    memcpy(out, v, len);
    out[len] = '\0';
}

static int kafka_next(trn_source *src, trn_record *rec, char *err, size_t errsz)
{
    kafka_source *s = (kafka_source *)src;
    if (s->m) {
        rd_kafka_message_destroy(s->m);
        s->m = NULL;
    }
    double quiet_since = trn_now();
    while (s->left > 0) {
        if (kn_shutdown_requested()) return kn_seterr(err, errsz, KN_ERR, "shutdown requested");
        rd_kafka_message_t *m = kn_kafka_consumer_poll(s->c, 200);
        if (!m) {
            /* read_committed: an open transaction holds the end back; a
             * range that never completes is an error, not a hang */
            if (trn_now() - quiet_since > 120)
                return kn_seterr(err, errsz, KN_ETIMEDOUT,
                                 "reading the window: no record for 120 s before its end");
            continue;
        }
        int p = m->partition;
        if (p < 0 || p >= s->nparts || s->done[p]) {
            rd_kafka_message_destroy(m);
            continue;
        }
        if (m->err) {
            if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
                if (m->offset >= s->hi[p]) finish_part(s, p);
            } else {
                kn_log_warn("kafka: %s", rd_kafka_message_errstr(m));
            }
            rd_kafka_message_destroy(m);
            continue;
        }
        quiet_since = trn_now();
        if (m->offset < s->lo[p] || m->offset >= s->hi[p]) {
            if (m->offset >= s->hi[p]) finish_part(s, p);
            rd_kafka_message_destroy(m);
            continue;
        }
        if (m->offset >= s->hi[p] - 1) finish_part(s, p);
        s->m = m;
        copy_header(m, "tokenizer-sha256", s->tok, sizeof(s->tok));
        copy_header(m, "recipe-sha256", s->rec, sizeof(s->rec));
        rec->partition = p;
        rec->offset = m->offset;
        rec->payload = m->payload;
        rec->len = m->len;
        rec->tokenizer_hash = s->tok[0] ? s->tok : NULL;
        rec->recipe = s->rec[0] ? s->rec : NULL;
        return 1;
    }
    return 0;
}

static void kafka_destroy(trn_source *src)
{
    kafka_source *s = (kafka_source *)src;
    if (!s) return;
    if (s->m) rd_kafka_message_destroy(s->m);
    kn_kafka_consumer_destroy(s->c);
    free(s->lo);
    free(s->hi);
    free(s->done);
    free(s);
}

/* --- loading a cycle --- */
static void items_free(trn_item *items, int n)
{
    for (int i = 0; i < n; i++)
        free(items[i].payload);
    free(items);
}

void trn_window_free(trn_window *w)
{
    items_free(w->items, w->nitems);
    free(w->lo);
    free(w->hi);
    free(w->pool_lo);
    free(w->pool_hi);
    free(w->order);
    free(w->epoch_examples);
    free(w->epoch_skipped);
    free(w->part_examples);
    memset(w, 0, sizeof(*w));
}

static int item_cmp(const void *a, const void *b)
{
    const trn_item *x = a, *y = b;
    if (x->partition != y->partition) return x->partition < y->partition ? -1 : 1;
    return x->offset < y->offset ? -1 : x->offset > y->offset;
}

/* Reads every record of lo..hi into *items (sorted by partition, offset). */
static int read_range(trn_batcher *b, const trn_settings *s, const int64_t *lo, const int64_t *hi,
                      trn_item **items, int *n, size_t *bytes, char *err, size_t errsz)
{
    int cap = 0, rc = KN_OK;
    char e[512];
    *items = NULL;
    *n = 0;
    int any = 0;
    for (int p = 0; p < b->nparts; p++)
        any |= lo[p] < hi[p];
    if (!any) return KN_OK;
    trn_source *src = trn_source_open(s, b->nparts, lo, hi, b->skipped, e, sizeof(e));
    if (!src)
        return kn_seterr(err, errsz, s->from_files ? KN_ENOMEM : KN_EKAFKA, "window source: %s", e);
    trn_record r;
    int got;
    while ((got = trn_source_next(src, &r, e, sizeof(e))) == 1) {
        if (*bytes + r.len > (size_t)(s->window_max_mb * 1048576.0)) {
            rc = kn_seterr(err, errsz, KN_ENOMEM,
                           "[model.%s] the window holds more than window_max_mb = %.0f MB of "
                           "shards (use window = last:K, or raise window_max_mb)",
                           s->model, s->window_max_mb);
            break;
        }
        if (*n == cap) {
            cap = cap ? cap * 2 : 256;
            trn_item *ni = realloc(*items, (size_t)cap * sizeof(*ni));
            if (!ni) {
                rc = kn_seterr(err, errsz, KN_ENOMEM, "window: out of memory");
                break;
            }
            *items = ni;
        }
        trn_item *it = &(*items)[(*n)++];
        memset(it, 0, sizeof(*it));
        it->partition = r.partition;
        it->offset = r.offset;
        it->payload = malloc(r.len ? r.len : 1);
        if (!it->payload) {
            rc = kn_seterr(err, errsz, KN_ENOMEM, "window: out of memory");
            break;
        }
        memcpy(it->payload, r.payload, r.len);
        it->len = r.len;
        *bytes += r.len;
        if (r.tokenizer_hash)
            snprintf(b->tokenizer_hash, sizeof(b->tokenizer_hash), "%s", r.tokenizer_hash);
        if (r.recipe) snprintf(b->recipe, sizeof(b->recipe), "%s", r.recipe);
    }
    if (got < 0 && rc == KN_OK) rc = kn_seterr(err, errsz, got, "reading the window: %s", e);
    trn_source_free(src);
    if (rc != KN_OK) return rc;
    qsort(*items, (size_t)*n, sizeof(**items), item_cmp);
    /* parse after sorting: the views point into each item's own payload */
    for (int i = 0; i < *n; i++) {
        trn_item *it = &(*items)[i];
        char pe[256];
        int prc = kn_shard_parse(it->payload, it->len, &it->view, pe, sizeof(pe));
        if (prc != KN_OK)
            snprintf(it->why, sizeof(it->why), "%s: %.150s", kn_strerror(prc), pe);
        else
            trn_shard_mismatch(b, &it->view, it->why, sizeof(it->why));
        it->usable = it->why[0] == '\0';
        it->count = it->usable ? it->view.info.count : 0;
        it->take = it->count;
    }
    return KN_OK;
}

static int64_t *dup64(const int64_t *a, int n)
{
    int64_t *o = calloc((size_t)(n > 0 ? n : 1), sizeof(int64_t));
    if (o && a) memcpy(o, a, (size_t)n * sizeof(int64_t));
    return o;
}

int trn_window_load(trn_batcher *b, const trn_settings *s, int cycle, int replay, int passes,
                    const int64_t *lo, const int64_t *hi, const int64_t *pool_lo,
                    const int64_t *pool_hi, const json_t *replay_list, char *err, size_t errsz)
{
    trn_window *w = &b->win;
    trn_window_free(w);
    size_t bytes = 0;
    trn_item *nw = NULL, *pool = NULL;
    int nn = 0, np = 0, rc;
    double t0 = trn_now();
    if ((rc = read_range(b, s, lo, hi, &nw, &nn, &bytes, err, errsz)) != KN_OK) goto fail;
    int64_t new_examples = 0;
    for (int i = 0; i < nn; i++)
        new_examples += nw[i].take;
    if (replay &&
        (rc = read_range(b, s, pool_lo, pool_hi, &pool, &np, &bytes, err, errsz)) != KN_OK)
        goto fail;
    /* the replay sample: whole shards of the pool in a seeded order, the
     * last one cut to what is still wanted; or exactly the lineage's list */
    int64_t want = replay ? llround(s->replay_ratio * (double)new_examples) : 0, got = 0;
    if (replay && replay_list) {
        for (int i = 0; i < np; i++)
            pool[i].take = 0;
        size_t k;
        json_t *e3;
        json_array_foreach(replay_list, k, e3)
        {
            int32_t p = (int32_t)json_integer_value(json_array_get(e3, 0));
            int64_t off = json_integer_value(json_array_get(e3, 1));
            int64_t take = json_integer_value(json_array_get(e3, 2));
            int found = 0;
            for (int i = 0; i < np; i++)
                if (pool[i].partition == p && pool[i].offset == off) {
                    pool[i].take = (uint32_t)(take < pool[i].count ? take : pool[i].count);
                    found = 1;
                }
            if (!found)
                kn_log_error("replay shard %d:%" PRId64 " of the lineage is not in the pool", p,
                             off);
        }
    } else if (replay && np > 0) {
        uint32_t *ord = malloc((size_t)np * sizeof(uint32_t));
        if (!ord) {
            rc = kn_seterr(err, errsz, KN_ENOMEM, "window: out of memory");
            goto fail;
        }
        for (int i = 0; i < np; i++)
            ord[i] = (uint32_t)i;
        shuffle_u32(ord, (uint32_t)np, trn_epoch_seed(s->seed, cycle, 0) ^ 0x5265706C6179ull);
        for (int i = 0; i < np; i++)
            pool[i].take = 0;
        for (int i = 0; i < np && got < want; i++) {
            trn_item *it = &pool[ord[i]];
            int64_t t = want - got < it->count ? want - got : it->count;
            it->take = (uint32_t)t;
            got += t;
        }
        free(ord);
    }
    /* items: the new shards (unusable ones too: listed, nothing trained),
     * then the replayed ones */
    int n = nn;
    for (int i = 0; i < np; i++)
        n += pool[i].take > 0;
    w->items = calloc((size_t)(n > 0 ? n : 1), sizeof(trn_item));
    w->order = calloc((size_t)(n > 0 ? n : 1), sizeof(uint32_t));
    w->epoch_examples = calloc((size_t)passes + 2, sizeof(int64_t));
    w->epoch_skipped = calloc((size_t)passes + 2, sizeof(int64_t));
    w->part_examples = calloc((size_t)b->nparts, sizeof(int64_t));
    w->lo = dup64(lo, b->nparts);
    w->hi = dup64(hi, b->nparts);
    w->pool_lo = dup64(replay ? pool_lo : NULL, b->nparts);
    w->pool_hi = dup64(replay ? pool_hi : NULL, b->nparts);
    if (!w->items || !w->order || !w->epoch_examples || !w->epoch_skipped || !w->part_examples ||
        !w->lo || !w->hi || !w->pool_lo || !w->pool_hi) {
        rc = kn_seterr(err, errsz, KN_ENOMEM, "window: out of memory");
        goto fail;
    }
    for (int i = 0; i < nn; i++) {
        w->items[w->nitems++] = nw[i];
        nw[i].payload = NULL;
        if (!nw[i].usable) {
            b->bad_shards++;
            json_array_append_new(
                b->skipped, json_pack("{s:i, s:I, s:s}", "partition", nw[i].partition, "offset",
                                      (json_int_t)nw[i].offset, "reason", nw[i].why));
            kn_log_error("window: skipping the unusable shard %d:%" PRId64 ": %s", nw[i].partition,
                         nw[i].offset, nw[i].why);
        }
    }
    w->replay_examples = 0;
    for (int i = 0; i < np; i++)
        if (pool[i].take > 0) {
            pool[i].replay = 1;
            w->replay_examples += pool[i].take;
            w->items[w->nitems++] = pool[i];
            pool[i].payload = NULL;
        }
    /* the views point into payloads that moved with the struct: re-parse */
    for (int i = 0; i < w->nitems; i++) {
        trn_item *it = &w->items[i];
        char pe[256];
        if (it->usable) kn_shard_parse(it->payload, it->len, &it->view, pe, sizeof(pe));
    }
    items_free(nw, nn);
    items_free(pool, np);
    w->active = 1;
    w->cycle = cycle;
    w->replay = replay;
    w->passes = passes;
    w->nparts = b->nparts;
    w->pass_examples = 0;
    for (int i = 0; i < w->nitems; i++)
        w->pass_examples += w->items[i].take;
    w->cur_index = -1;
    trn_window_seek(b, 1, 0, 0);
    if (w->pass_examples == 0) w->epoch = passes + 1; /* nothing to train: done */
    kn_log_fields(KN_LOG_INFO,
                  json_pack("{s:i, s:s, s:i, s:i, s:I, s:I, s:I, s:f}", "cycle", cycle, "kind",
                            replay ? "replay" : "window", "passes", passes, "shards", w->nitems,
                            "examples_per_epoch", (json_int_t)w->pass_examples, "replayed",
                            (json_int_t)w->replay_examples, "bytes", (json_int_t)bytes, "seconds",
                            trn_now() - t0),
                  "window loaded");
    return KN_OK;
fail:
    items_free(nw, nn);
    items_free(pool, np);
    trn_window_free(w);
    return rc;
}

int trn_window_done(const trn_window *w)
{
    return !w->active || w->epoch > w->passes;
}

void trn_window_seek(trn_batcher *b, int epoch, int index, uint32_t pos)
{
    trn_window *w = &b->win;
    w->epoch = epoch;
    w->index = index;
    w->pos = pos;
    w->cur_index = -1;
    w->order_epoch = 0;
    trn_window_new_range(b);
}

/* The order of epoch e's items. */
static void epoch_order(const trn_batcher *b, int e, uint32_t *out)
{
    const trn_window *w = &b->win;
    for (int i = 0; i < w->nitems; i++)
        out[i] = (uint32_t)i;
    if (b->shuffle) shuffle_u32(out, (uint32_t)w->nitems, trn_epoch_seed(b->seed, w->cycle, e));
}

/* The permutation of the current item's examples in the current epoch. */
static int item_perm(trn_batcher *b)
{
    trn_window *w = &b->win;
    trn_item *it = &w->items[w->order[w->index]];
    if (it->count > b->perm_cap) {
        uint32_t *np = realloc(b->perm, (size_t)it->count * sizeof(*np));
        if (!np) return KN_ENOMEM;
        b->perm = np;
        b->perm_cap = it->count;
    }
    for (uint32_t i = 0; i < it->count; i++)
        b->perm[i] = i;
    if (it->replay) /* the replayed part: the first `take` of a cycle-fixed permutation */
        shuffle_u32(b->perm, it->count,
                    item_seed(trn_epoch_seed(b->seed, w->cycle, 0) ^ 0x5265706C6179ull,
                              it->partition, it->offset));
    if (b->shuffle)
        shuffle_u32(
            b->perm, it->take,
            item_seed(trn_epoch_seed(b->seed, w->cycle, w->epoch), it->partition, it->offset));
    w->cur_index = w->index;
    return KN_OK;
}

/* Random horizontal flip and shift of row r (CHW), drawn from st. */
static void augment_row(trn_batcher *b, int r, uint64_t st)
{
    int C = b->C, H = b->H, W = b->W;
    float *x = b->x + (size_t)r * (size_t)b->in_numel;
    int flip = b->aug_hflip && (mix(&st) & 1);
    int dx = 0, dy = 0;
    if (b->aug_crop > 0) {
        dx = (int)(mix(&st) % (uint64_t)(2 * b->aug_crop + 1)) - b->aug_crop;
        dy = (int)(mix(&st) % (uint64_t)(2 * b->aug_crop + 1)) - b->aug_crop;
    }
    if (!flip && !dx && !dy) return;
    memcpy(b->aug_tmp, x, (size_t)b->in_numel * sizeof(float));
    for (int c = 0; c < C; c++)
        for (int y = 0; y < H; y++)
            for (int xx = 0; xx < W; xx++) {
                int sy = y - dy, sx = (flip ? W - 1 - xx : xx) - dx;
                x[((size_t)c * H + y) * W + xx] = sy >= 0 && sy < H && sx >= 0 && sx < W
                                                      ? b->aug_tmp[((size_t)c * H + sy) * W + sx]
                                                      : 0.0f;
            }
}

static int at_stop(const trn_window *w)
{
    return w->stop_epoch > 0 && w->epoch == w->stop_epoch && w->index == w->stop_index &&
           w->pos == w->stop_pos;
}

int trn_window_fill(trn_batcher *b)
{
    trn_window *w = &b->win;
    b->B = 0;
    w->epoch_end = 0;
    while (b->B < b->max_batch && !trn_window_done(w) && !at_stop(w)) {
        if (w->order_epoch != w->epoch) {
            epoch_order(b, w->epoch, w->order);
            w->order_epoch = w->epoch;
            w->cur_index = -1;
        }
        trn_item *it = &w->items[w->order[w->index]];
        if (w->cur_index != w->index && item_perm(b) != KN_OK) {
            kn_log_error("window: out of memory for a shard of %u examples", it->count);
            break;
        }
        uint64_t es = trn_epoch_seed(b->seed, w->cycle, w->epoch);
        int pidx = it->partition;
        while (b->B < b->max_batch && w->pos < it->take && !at_stop(w)) {
            uint32_t i = b->perm[w->pos++];
            kn_feed f = {.input = (kn_feed_input)b->input,
                         .in_numel = b->in_numel,
                         .T = b->T,
                         .vocab = b->vocab,
                         .classes = b->classes,
                         .x = b->x,
                         .tokens = b->tokens,
                         .labels = b->labels};
            if (kn_feed_copy(&f, &it->view, i, b->B) == 0) {
                if (b->aug_tmp)
                    augment_row(b, b->B,
                                item_seed(es ^ ((uint64_t)i << 20), it->partition, it->offset));
                b->B++;
                w->epoch_examples[w->epoch]++;
                if (pidx >= 0 && pidx < b->nparts) w->part_examples[pidx]++;
            } else {
                w->epoch_skipped[w->epoch]++;
            }
        }
        if (w->pos >= it->take) {
            w->index++;
            w->pos = 0;
            if (w->index >= w->nitems) { /* the epoch is complete: a batch never spans two */
                w->epoch++;
                w->index = 0;
                w->epoch_end = 1;
                break;
            }
        }
    }
    b->total_examples += b->B;
    if (b->input == TRN_IN_LM) b->total_tokens += (int64_t)b->B * b->T;
    return b->B;
}

void trn_window_new_range(trn_batcher *b)
{
    trn_window *w = &b->win;
    w->start_epoch = w->epoch;
    w->start_index = w->index;
    w->start_pos = w->pos;
    if (w->epoch_examples) memset(w->epoch_examples, 0, (size_t)(w->passes + 2) * sizeof(int64_t));
    if (w->epoch_skipped) memset(w->epoch_skipped, 0, (size_t)(w->passes + 2) * sizeof(int64_t));
    if (w->part_examples) memset(w->part_examples, 0, (size_t)b->nparts * sizeof(int64_t));
}

static json_t *ranges(const int64_t *lo, const int64_t *hi, int n)
{
    json_t *a = json_array();
    for (int p = 0; p < n; p++)
        json_array_append_new(a, json_pack("{s:i, s:I, s:I}", "partition", p, "start",
                                           (json_int_t)lo[p], "end", (json_int_t)hi[p]));
    return a;
}

json_t *trn_window_cycle_json(const trn_batcher *b, const trn_settings *s)
{
    const trn_window *w = &b->win;
    json_t *replay = json_null();
    if (w->replay) {
        json_t *list = json_array();
        for (int i = 0; i < w->nitems; i++)
            if (w->items[i].replay)
                json_array_append_new(list, json_pack("[i, I, i]", w->items[i].partition,
                                                      (json_int_t)w->items[i].offset,
                                                      (int)w->items[i].take));
        replay = json_pack("{s:f, s:s, s:o, s:I, s:o}", "ratio", s->replay_ratio, "from",
                           s->replay_from, "pool", ranges(w->pool_lo, w->pool_hi, w->nparts),
                           "examples", (json_int_t)w->replay_examples, "shards", list);
    }
    return json_pack("{s:i, s:s, s:s, s:i, s:o, s:i, s:I, s:o}", "n", w->cycle, "kind",
                     w->replay ? "replay" : "window", "window", s->window, "passes", w->passes,
                     "ranges", ranges(w->lo, w->hi, w->nparts), "shards", w->nitems,
                     "examples_per_epoch", (json_int_t)w->pass_examples, "replay", replay);
}

json_t *trn_window_epochs_json(const trn_batcher *b)
{
    const trn_window *w = &b->win;
    json_t *a = json_array();
    uint32_t *ord = malloc((size_t)(w->nitems > 0 ? w->nitems : 1) * sizeof(uint32_t));
    if (!ord) return a;
    int last = w->epoch <= w->passes ? w->epoch : w->passes;
    for (int e = w->start_epoch; e <= last; e++) {
        int si = e == w->start_epoch ? w->start_index : 0;
        uint32_t sp = e == w->start_epoch ? w->start_pos : 0;
        int ei = e == w->epoch ? w->index : w->nitems;
        uint32_t ep = e == w->epoch ? w->pos : 0;
        if (si == ei && sp == ep) continue;
        epoch_order(b, e, ord);
        json_t *shards = json_array();
        for (int k = si; k <= ei && k < w->nitems; k++) {
            uint32_t from = k == si ? sp : 0;
            uint32_t to = k == ei ? ep : w->items[ord[k]].take;
            if (to <= from) continue;
            json_array_append_new(shards, json_pack("[i, I, i, i]", w->items[ord[k]].partition,
                                                    (json_int_t)w->items[ord[k]].offset, (int)from,
                                                    (int)to));
        }
        json_array_append_new(
            a, json_pack("{s:i, s:I, s:{s:i, s:i}, s:{s:i, s:i}, s:I, s:I, s:o}", "epoch", e,
                         "seed", (json_int_t)trn_epoch_seed(b->seed, w->cycle, e), "start", "index",
                         si, "pos", (int)sp, "end", "index", ei, "pos", (int)ep, "examples",
                         (json_int_t)w->epoch_examples[e], "skipped_examples",
                         (json_int_t)w->epoch_skipped[e], "shards", shards));
    }
    free(ord);
    return a;
}

json_t *trn_window_cursor_json(const trn_batcher *b)
{
    const trn_window *w = &b->win;
    return json_pack("{s:i, s:i, s:i, s:i, s:b}", "cycle", w->cycle, "epoch", w->epoch, "index",
                     w->index, "pos", (int)w->pos, "done", trn_window_done(w));
}
