/* batcher.c: shards from Kafka → minibatches, with an exact record of what
 * was consumed (the invariants are numbered in trainer.h). One shard is read
 * at a time, its examples in a permutation drawn from (seed, partition,
 * offset), so a resumed trainer replays the same order and can skip the
 * first `pos` examples of a shard a checkpoint fell inside of.
 * Limits: image shards of dtype f32 or u8 (u8 scaled to [0, 1]); token
 * shards of u16 or u32 ids. */
#include "trainer.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/kn.h"
#include "core/log.h"
#include "core/shutdown.h"

double trn_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static uint64_t splitmix64(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static int spec_int(const json_t *spec, const char *key, int def)
{
    json_t *v = json_object_get(spec, key);
    return json_is_integer(v) ? (int)json_integer_value(v) : def;
}

int trn_batcher_init(trn_batcher *b, const kn_model *m, int max_batch, int nparts, uint64_t seed,
                     int shuffle, char *err, size_t errsz)
{
    memset(b, 0, sizeof(*b));
    b->cur = -1;
    b->max_batch = max_batch;
    b->seed = seed;
    b->shuffle = shuffle;
    const json_t *spec = kn_model_spec(m);
    const char *type = json_string_value(json_object_get(spec, "type"));
    switch (kn_model_type(m)) {
    case KN_MODEL_CNN: {
        json_t *in = json_object_get(spec, "input");
        if (json_array_size(in) != 3)
            return kn_seterr(err, errsz, KN_EINVAL, "cnn spec: 'input' must be [C, H, W]");
        b->input = TRN_IN_IMAGE;
        b->C = (int)json_integer_value(json_array_get(in, 0));
        b->H = (int)json_integer_value(json_array_get(in, 1));
        b->W = (int)json_integer_value(json_array_get(in, 2));
        b->in_numel = b->C * b->H * b->W;
        b->classes = kn_model_num_outputs(m);
        break;
    }
    case KN_MODEL_MLP: {
        json_t *sizes = json_object_get(spec, "sizes");
        int in = json_is_array(sizes) ? (int)json_integer_value(json_array_get(sizes, 0))
                                      : spec_int(spec, "in", 0);
        const char *loss = json_string_value(json_object_get(spec, "loss"));
        if (loss && strcmp(loss, "mse") == 0)
            return kn_seterr(err, errsz, KN_EINVAL,
                             "model type '%s' with mse loss: no shard kind carries regression "
                             "targets; the trainer feeds classifiers and language models",
                             type ? type : "?");
        b->input = TRN_IN_IMAGE;
        b->in_numel = in;
        b->C = 0; /* layout taken from each shard (flattened CHW) */
        b->classes = kn_model_num_outputs(m);
        break;
    }
    case KN_MODEL_GPT:
        b->input = TRN_IN_LM;
        b->T = kn_model_block_size(m);
        b->vocab = kn_model_num_outputs(m);
        break;
    case KN_MODEL_TXTCLS:
        b->input = TRN_IN_TEXTCLS;
        b->T = kn_model_block_size(m);
        b->vocab = spec_int(spec, "vocab_size", 0);
        b->classes = kn_model_num_outputs(m);
        break;
    default:
        return kn_seterr(err, errsz, KN_EINVAL, "model type '%s' cannot be trained from shards",
                         type ? type : "?");
    }
    b->nparts = nparts;
    b->parts = calloc((size_t)nparts, sizeof(*b->parts));
    b->skipped = json_array();
    size_t rows = (size_t)max_batch;
    if (b->input == TRN_IN_IMAGE) {
        b->x = malloc(rows * (size_t)b->in_numel * sizeof(float));
        b->labels = malloc(rows * sizeof(int));
    } else {
        b->tokens = malloc(rows * (size_t)b->T * sizeof(int));
        b->labels = malloc(rows * (size_t)(b->input == TRN_IN_LM ? b->T : 1) * sizeof(int));
    }
    if (!b->parts || !b->skipped || !b->labels || (!b->x && !b->tokens)) {
        trn_batcher_free(b);
        return kn_seterr(err, errsz, KN_ENOMEM, "batcher: out of memory");
    }
    for (int p = 0; p < nparts; p++) {
        b->parts[p].partition = p;
        b->parts[p].resume_offset = -1;
    }
    b->last_record = trn_now();
    return KN_OK;
}

void trn_batcher_free(trn_batcher *b)
{
    if (!b) return;
    if (b->msg) rd_kafka_message_destroy(b->msg);
    free(b->parts);
    free(b->perm);
    free(b->x);
    free(b->tokens);
    free(b->labels);
    free(b->aug_tmp);
    trn_window_free(&b->win);
    json_decref(b->skipped);
    memset(b, 0, sizeof(*b));
}

void trn_batcher_set_start(trn_batcher *b, int32_t p, int64_t offset, uint32_t pos)
{
    trn_part *pt = &b->parts[p];
    pt->start_offset = pt->next_offset = offset;
    pt->start_pos = pt->pos = pos;
    pt->resume_offset = pos > 0 ? offset : -1;
    pt->resume_pos = pos;
}

/* Records a skipped shard (invariant 3) and moves past it. */
static void skip_shard(trn_batcher *b, trn_part *pt, int64_t offset, const char *reason)
{
    b->bad_shards++;
    json_array_append_new(b->skipped, json_pack("{s:i, s:I, s:s}", "partition", pt->partition,
                                                "offset", (json_int_t)offset, "reason", reason));
    kn_log_fields(KN_LOG_ERROR,
                  json_pack("{s:i, s:I, s:s}", "partition", pt->partition, "offset",
                            (json_int_t)offset, "reason", reason),
                  "skipping an unusable shard");
    pt->next_offset = offset + 1;
    pt->pos = 0;
}

static void header_text(const rd_kafka_message_t *m, const char *name, char *out, size_t outsz)
{
    const void *v;
    size_t len;
    if (kn_kafka_header_get(m, name, &v, &len) != KN_OK || len == 0 || len >= outsz) return;
    memcpy(out, v, len);
    out[len] = '\0';
}

/* Checks a shard's kind and shape against the model; "" when usable. */
const char *trn_shard_mismatch(const trn_batcher *b, const kn_shard_view *v, char *why,
                                  size_t whysz)
{
    const kn_shard_info *in = &v->info;
    why[0] = '\0';
    if (b->input == TRN_IN_IMAGE) {
        if (in->kind != KN_SHARD_IMAGE)
            snprintf(why, whysz, "shard kind %s, the model needs image",
                     kn_shard_kind_name(in->kind));
        else if (in->dtype != KN_SHARD_F32 && in->dtype != KN_SHARD_U8)
            snprintf(why, whysz, "image dtype %s (need f32 or u8)", kn_shard_dtype_name(in->dtype));
        else if (in->ndim != 3 ||
                 (uint64_t)in->shape[0] * in->shape[1] * in->shape[2] != (uint64_t)b->in_numel ||
                 (b->C && (in->shape[0] != (uint32_t)b->H || in->shape[1] != (uint32_t)b->W ||
                           in->shape[2] != (uint32_t)b->C)))
            snprintf(why, whysz, "image shape (%u,%u,%u) does not fit the model input (%d values)",
                     in->shape[0], in->shape[1], in->shape[2], b->in_numel);
        else if (!v->labels)
            snprintf(why, whysz, "image shard without labels");
    } else {
        int want = b->input == TRN_IN_LM ? KN_SHARD_LM_TOKENS : KN_SHARD_TEXT_CLASS;
        if ((int)in->kind != want)
            snprintf(why, whysz, "shard kind %s, the model needs %s", kn_shard_kind_name(in->kind),
                     kn_shard_kind_name(want));
        else if (in->dtype != KN_SHARD_U16 && in->dtype != KN_SHARD_U32)
            snprintf(why, whysz, "token dtype %s (need u16 or u32)",
                     kn_shard_dtype_name(in->dtype));
        else if (in->ndim != 1 || in->shape[0] < (b->input == TRN_IN_LM ? 2u : 1u))
            snprintf(why, whysz, "token shard shape (%u) too short", in->shape[0]);
        else if (b->input == TRN_IN_TEXTCLS && !v->labels)
            snprintf(why, whysz, "text_class shard without labels");
    }
    return why;
}

/* Gives back the record in hand: the consumer's message (a source's record
 * stays valid until its next call). */
static void drop_record(trn_batcher *b, rd_kafka_message_t *m, trn_record *r)
{
    (void)b;
    (void)r;
    if (m) rd_kafka_message_destroy(m);
}

static void copy_text(const char *v, char *out, size_t outsz)
{
    if (v && *v && strlen(v) < outsz) snprintf(out, outsz, "%s", v);
}

/* Makes record r (message m, or NULL for a source record) the current shard.
 * Returns 1 when a shard is ready, 0 when it was dropped (a skip). */
static int take_shard(trn_batcher *b, rd_kafka_message_t *m, trn_record *r)
{
    b->last_record = trn_now();
    if (r->partition < 0 || r->partition >= b->nparts) {
        kn_log_error("record from partition %d beyond the %d assigned; ignored", (int)r->partition,
                     b->nparts);
        drop_record(b, m, r);
        return 0;
    }
    trn_part *pt = &b->parts[r->partition];
    if (r->offset < pt->next_offset) { /* a duplicate delivery: already consumed */
        drop_record(b, m, r);
        return 0;
    }
    /* Offsets may jump (transaction markers, aborted records): everything
     * between next_offset and this record is not data for a read_committed
     * reader, so the range stays contiguous. */
    pt->next_offset = r->offset;
    pt->pos = 0;
    char err[256], why[256];
    int rc = kn_shard_parse(r->payload, r->len, &b->view, err, sizeof(err));
    if (rc != KN_OK) {
        char reason[300];
        snprintf(reason, sizeof(reason), "%s: %s", kn_strerror(rc), err);
        skip_shard(b, pt, r->offset, reason);
        drop_record(b, m, r);
        return 0;
    }
    if (trn_shard_mismatch(b, &b->view, why, sizeof(why))[0]) {
        skip_shard(b, pt, r->offset, why);
        drop_record(b, m, r);
        return 0;
    }
    uint32_t n = b->view.info.count;
    if (n > b->perm_cap) {
        uint32_t *np = realloc(b->perm, (size_t)n * sizeof(*np));
        if (!np) { /* cannot happen in practice: shards are bounded; retry later */
            kn_log_error("batcher: out of memory for a shard of %u examples", n);
            drop_record(b, m, r);
            return 0;
        }
        b->perm = np;
        b->perm_cap = n;
    }
    for (uint32_t i = 0; i < n; i++)
        b->perm[i] = i;
    if (b->shuffle && n > 1) {
        uint64_t st = b->seed ^ ((uint64_t)(uint32_t)r->partition << 48) ^
                      (uint64_t)r->offset * 0xD1B54A32D192ED03ull;
        for (uint32_t i = n - 1; i > 0; i--) {
            uint32_t j = (uint32_t)(splitmix64(&st) % ((uint64_t)i + 1));
            uint32_t t = b->perm[i];
            b->perm[i] = b->perm[j];
            b->perm[j] = t;
        }
    }
    if (pt->resume_offset >= 0) {
        if (pt->resume_offset == r->offset)
            pt->pos = pt->resume_pos < n ? pt->resume_pos : n;
        else
            kn_log_warn("partition %d: resume shard at offset %" PRId64
                        " not seen (first record %" PRId64 "); nothing skipped",
                        (int)r->partition, pt->resume_offset, r->offset);
        pt->resume_offset = -1;
    }
    if (m) {
        header_text(m, "tokenizer-sha256", b->tokenizer_hash, sizeof(b->tokenizer_hash));
        header_text(m, "recipe-sha256", b->recipe, sizeof(b->recipe));
    } else {
        copy_text(r->tokenizer_hash, b->tokenizer_hash, sizeof(b->tokenizer_hash));
        copy_text(r->recipe, b->recipe, sizeof(b->recipe));
    }
    b->msg = m;
    b->rec = *r;
    b->has_rec = 1;
    b->cur = (int)r->partition;
    return 1;
}

/* Takes the next record as the current shard. Returns 1 when a shard is
 * ready, 0 otherwise: from the consumer, nothing arrived, an event or a skip;
 * from b->src, the end of the data (unusable shards are skipped here). */
static int next_shard(trn_batcher *b, kn_kafka_consumer *c, int timeout_ms)
{
    trn_record r;
    if (b->src) {
        char e[512];
        int rc;
        while ((rc = b->src->next(b->src, &r, e, sizeof(e))) == 1)
            if (take_shard(b, NULL, &r)) return 1;
        if (rc < 0) kn_log_error("shard source: %s", e);
        return 0;
    }
    rd_kafka_message_t *m = kn_kafka_consumer_poll(c, timeout_ms);
    if (!m) return 0;
    if (m->err) {
        if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
            kn_log_warn("kafka: %s", rd_kafka_message_errstr(m));
        rd_kafka_message_destroy(m);
        return 0;
    }
    r = (trn_record){.partition = m->partition, .offset = m->offset, .payload = m->payload,
                     .len = m->len};
    return take_shard(b, m, &r);
}

/* Releases a fully read shard: it now counts as consumed (invariant 2). */
static void finish_shard(trn_batcher *b)
{
    trn_part *pt = &b->parts[b->cur];
    pt->next_offset = b->rec.offset + 1;
    pt->pos = 0;
    pt->shards++;
    drop_record(b, b->msg, &b->rec);
    b->msg = NULL;
    b->has_rec = 0;
    b->cur = -1;
}

/* Copies example i of the current shard into row r. 0 when copied, -1 when
 * the example is unusable (label or token out of range). */
static int copy_example(trn_batcher *b, uint32_t i, int r)
{
    kn_feed f = {.input = (kn_feed_input)b->input, .in_numel = b->in_numel, .T = b->T,
                 .vocab = b->vocab, .classes = b->classes, .x = b->x, .tokens = b->tokens,
                 .labels = b->labels};
    return kn_feed_copy(&f, &b->view, i, r);
}

int trn_batcher_fill(trn_batcher *b, kn_kafka_consumer *c, int flush_ms)
{
    b->B = 0;
    double idle_since = trn_now();
    while (b->B < b->max_batch) {
        if (!b->has_rec) {
            if (kn_shutdown_requested()) break;
            if (next_shard(b, c, 100)) {
                idle_since = trn_now();
                continue;
            }
            if ((trn_now() - idle_since) * 1000.0 >= flush_ms) break;
            continue;
        }
        trn_part *pt = &b->parts[b->cur];
        uint32_t n = b->view.info.count;
        while (b->B < b->max_batch && pt->pos < n) {
            uint32_t i = b->perm[pt->pos++];
            if (copy_example(b, i, b->B) == 0) {
                b->B++;
                pt->examples++;
            } else {
                pt->skipped_examples++;
            }
        }
        if (pt->pos >= n) finish_shard(b);
    }
    b->total_examples += b->B;
    if (b->input == TRN_IN_LM) b->total_tokens += (int64_t)b->B * b->T;
    return b->B;
}

void trn_batcher_batch(const trn_batcher *b, kn_batch *out)
{
    memset(out, 0, sizeof(*out));
    out->B = b->B;
    out->T = b->input == TRN_IN_IMAGE ? 0 : b->T;
    out->x = b->x;
    out->tokens = b->tokens;
    out->labels = b->labels;
}

void trn_batcher_new_range(trn_batcher *b)
{
    for (int p = 0; p < b->nparts; p++) {
        trn_part *pt = &b->parts[p];
        pt->start_offset = pt->next_offset;
        pt->start_pos = pt->pos;
        pt->examples = pt->skipped_examples = pt->shards = 0;
    }
    json_array_clear(b->skipped);
}

int64_t trn_batcher_range_examples(const trn_batcher *b)
{
    int64_t n = 0;
    if (b->win.active) {
        for (int e = 0; e <= b->win.passes + 1; e++)
            n += b->win.epoch_examples[e];
        return n;
    }
    for (int p = 0; p < b->nparts; p++)
        n += b->parts[p].examples;
    return n;
}

json_t *trn_batcher_ranges_json(const trn_batcher *b)
{
    json_t *a = json_array();
    if (b->win.active) { /* epochs: the cycle's new range, what this version trained of it */
        const trn_window *w = &b->win;
        for (int p = 0; p < b->nparts; p++) {
            int64_t shards = 0;
            for (int i = 0; i < w->nitems; i++)
                shards += w->items[i].partition == p && !w->items[i].replay;
            json_array_append_new(
                a, json_pack("{s:i, s:{s:I, s:i}, s:{s:I, s:i}, s:I, s:I, s:I}", "partition", p,
                             "start", "offset", (json_int_t)w->lo[p], "pos", 0, "end", "offset",
                             (json_int_t)w->hi[p], "pos", 0, "examples",
                             (json_int_t)w->part_examples[p], "skipped_examples", (json_int_t)0,
                             "shards", (json_int_t)shards));
        }
        return a;
    }
    for (int p = 0; p < b->nparts; p++) {
        const trn_part *pt = &b->parts[p];
        json_array_append_new(
            a, json_pack("{s:i, s:{s:I, s:I}, s:{s:I, s:I}, s:I, s:I, s:I}", "partition",
                         pt->partition, "start", "offset", (json_int_t)pt->start_offset, "pos",
                         (json_int_t)pt->start_pos, "end", "offset", (json_int_t)pt->next_offset,
                         "pos", (json_int_t)pt->pos, "examples", (json_int_t)pt->examples,
                         "skipped_examples", (json_int_t)pt->skipped_examples, "shards",
                         (json_int_t)pt->shards));
    }
    return a;
}
