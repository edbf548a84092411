/* dataset.c: the per-dataset stages of kiln-preprocess and its shard buffers.
 *
 * LM streams (one per split): cleaned documents are appended as
 * <|endoftext|> + tokens; blocks of T+1 tokens are cut with a one-token
 * overlap (block i's last token is block i+1's first, as llm.c's loader
 * reads inputs and shifted targets). The tail shorter than T+1 and the keys
 * of records not yet in a block survive a commit as a changelog entry
 * "tail/<split>/<instance>" written in the same transaction. */
#include "dataset.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "text/dedup.h"
#include "image/image.h"
#include "stream/kafka.h"
#include "core/kn.h"
#include "core/log.h"
#include "stream/shard.h"

typedef struct {
    uint32_t *tok; /* (cap) stream tokens not yet past a block boundary */
    size_t n, cap;
    uint8_t *keys; /* (kcap, 32) keys of records not yet in a shard */
    size_t nk, kcap;
} lm_tail;

typedef struct {
    kn_shard_writer *w;
    char topic[256];
    lm_tail tail, committed; /* committed = as of the last commit (for abort) */
    int tail_dirty;          /* changed in the open transaction */
    kn_metric *m_examples, *m_shards;
} pp_split;

struct pp_dataset {
    kn_recipe r;
    const pp_env *env;
    kn_bpe *bpe;
    uint32_t eot, pad;
    kn_shard_dtype dtype;
    kn_dedup *dd;
    pp_split split[2];
    char state_topic[256];
    kn_bpe_ids ids; /* scratch */
    uint8_t *row;   /* scratch: one text_class row */
    kn_image img;   /* scratch */
};

static const char *split_name(int s)
{
    return s == PP_EVAL ? "eval" : "train";
}

static int tail_reserve(lm_tail *t, size_t ntok, size_t nkeys)
{
    if (ntok > t->cap) {
        size_t c = t->cap ? t->cap : 1024;
        while (c < ntok)
            c *= 2;
        uint32_t *p = realloc(t->tok, c * sizeof(uint32_t));
        if (!p) return KN_ENOMEM;
        t->tok = p;
        t->cap = c;
    }
    if (nkeys > t->kcap) {
        size_t c = t->kcap ? t->kcap : 64;
        while (c < nkeys)
            c *= 2;
        uint8_t *p = realloc(t->keys, c * 32);
        if (!p) return KN_ENOMEM;
        t->keys = p;
        t->kcap = c;
    }
    return KN_OK;
}

static int tail_copy(lm_tail *dst, const lm_tail *src)
{
    if (tail_reserve(dst, src->n, src->nk) != KN_OK) return KN_ENOMEM;
    if (src->n) memcpy(dst->tok, src->tok, src->n * sizeof(uint32_t));
    if (src->nk) memcpy(dst->keys, src->keys, src->nk * 32);
    dst->n = src->n;
    dst->nk = src->nk;
    return KN_OK;
}

static void tail_free(lm_tail *t)
{
    free(t->tok);
    free(t->keys);
    memset(t, 0, sizeof(*t));
}

int pp_split_of(const uint8_t key[32], double eval_fraction)
{
    uint64_t h = 0;
    for (int i = 0; i < 8; i++)
        h = (h << 8) | key[i];
    uint64_t cut = (uint64_t)(eval_fraction * 10000.0 + 0.5);
    return h % 10000 < cut ? PP_EVAL : PP_TRAIN;
}

pp_dataset *pp_dataset_new(kn_recipe *r, const pp_env *env, char *errbuf, size_t errsz)
{
    pp_dataset *ds = calloc(1, sizeof(*ds));
    if (!ds) {
        kn_recipe_free(r);
        memset(r, 0, sizeof(*r));
        kn_seterr(errbuf, errsz, KN_ENOMEM, "out of memory");
        return NULL;
    }
    ds->r = *r;
    memset(r, 0, sizeof(*r));
    ds->env = env;
    kn_bpe_ids_init(&ds->ids);
    kn_image_init(&ds->img);
    const kn_recipe *rc = &ds->r;
    snprintf(ds->state_topic, sizeof(ds->state_topic), "%s.state.%s", env->prefix, rc->name);

    uint32_t shape[3] = {0, 0, 0}, ndim = 1, max_keys = rc->shard_examples;
    kn_shard_kind kind;
    if (rc->kind != KN_RECIPE_IMAGE) {
        char e[512];
        ds->bpe = kn_bpe_load(rc->tokenizer, rc->pattern, e, sizeof(e));
        if (!ds->bpe) {
            /* Say which key pointed there and, for a relative path, from where. */
            char cwd[512] = "";
            if (rc->tokenizer[0] != '/' && !getcwd(cwd, sizeof(cwd))) cwd[0] = '\0';
            kn_seterr(errbuf, errsz, KN_EINVAL,
                      "[dataset.%s] tokenizer = %s: %s%s%s%s (train one with `kiln-preprocess "
                      "tokenizer train --out FILE PATH...`, or point the key at a tiktoken rank "
                      "file)",
                      rc->name, rc->tokenizer, e,
                      cwd[0] ? " (relative to the working directory " : "", cwd, cwd[0] ? ")" : "");
            goto fail;
        }
        int64_t eot = kn_bpe_special_id(ds->bpe, "<|endoftext|>");
        if (eot < 0) {
            kn_seterr(errbuf, errsz, KN_EINVAL,
                      "[dataset.%s] tokenizer %s has no <|endoftext|> token", rc->name,
                      rc->tokenizer);
            goto fail;
        }
        ds->eot = (uint32_t)eot;
        ds->pad = rc->pad_id >= 0 ? (uint32_t)rc->pad_id : ds->eot;
        ds->dtype = kn_bpe_vocab_size(ds->bpe) <= 65536 ? KN_SHARD_U16 : KN_SHARD_U32;
        if (rc->kind == KN_RECIPE_LM) {
            kind = KN_SHARD_LM_TOKENS;
            shape[0] = rc->block_size + 1;
            max_keys = rc->shard_examples * 16 < 1024 ? 1024 : rc->shard_examples * 16;
        } else {
            kind = KN_SHARD_TEXT_CLASS;
            shape[0] = rc->max_len;
        }
        if (rc->dedup != KN_RECIPE_DEDUP_NONE) {
            ds->dd = kn_dedup_new(&rc->dedup_opts, errbuf, errsz);
            if (!ds->dd) goto fail;
        }
        ds->row = malloc((size_t)shape[0] * 4);
        if (!ds->row) goto oom;
    } else {
        kind = KN_SHARD_IMAGE;
        ds->dtype = KN_SHARD_F32;
        ndim = 3;
        shape[0] = (uint32_t)rc->height;
        shape[1] = (uint32_t)rc->width;
        shape[2] = (uint32_t)rc->channels;
    }
    /* A full shard must fit in one Kafka message: one that does not fails
     * at produce time on every retry, so such a recipe is refused here. The
     * bound: the examples with their label and seed, the keys, and 64 KiB
     * for the shard header and the record's framing and headers. */
    {
        size_t per = (size_t)shape[0] * (shape[1] ? shape[1] : 1) * (shape[2] ? shape[2] : 1) *
                         kn_shard_dtype_size(ds->dtype) +
                     16;
        size_t fixed = (64 << 10) + (size_t)max_keys * KN_SHARD_KEY_LEN;
        double need = (double)fixed + (double)per * rc->shard_examples;
        if (need > KN_KAFKA_MAX_MESSAGE_BYTES) {
            size_t fit =
                KN_KAFKA_MAX_MESSAGE_BYTES > fixed ? (KN_KAFKA_MAX_MESSAGE_BYTES - fixed) / per : 0;
            kn_seterr(errbuf, errsz, KN_EINVAL,
                      "[dataset.%s] shard_examples = %u: a shard of %u examples of %zu bytes "
                      "(%.1f MiB) is over Kafka's message.max.bytes (%d MiB); set shard_examples "
                      "to %zu or fewer",
                      rc->name, rc->shard_examples, rc->shard_examples, per - 16, need / 1048576.0,
                      KN_KAFKA_MAX_MESSAGE_BYTES >> 20, fit);
            goto fail;
        }
    }
    for (int s = 0; s < 2; s++) {
        pp_split *sp = &ds->split[s];
        snprintf(sp->topic, sizeof(sp->topic), "%s.%s.%s", env->prefix, split_name(s), rc->name);
        sp->w = kn_shard_writer_new(kind, ds->dtype, ndim, shape, rc->shard_examples, max_keys,
                                    errbuf, errsz);
        if (!sp->w) goto fail;
        char labels[256];
        snprintf(labels, sizeof(labels), "dataset=\"%s\",split=\"%s\"", rc->name, split_name(s));
        sp->m_examples = kn_metrics_counter(env->m->reg, "kiln_preprocess_examples_out_total",
                                            "Examples (LM: blocks) written to shards", labels);
        sp->m_shards = kn_metrics_counter(env->m->reg, "kiln_preprocess_shards_out_total",
                                          "Shards produced", labels);
    }
    return ds;
oom:
    kn_seterr(errbuf, errsz, KN_ENOMEM, "out of memory");
fail:
    pp_dataset_destroy(ds);
    return NULL;
}

void pp_dataset_destroy(pp_dataset *ds)
{
    if (!ds) return;
    for (int s = 0; s < 2; s++) {
        kn_shard_writer_destroy(ds->split[s].w);
        tail_free(&ds->split[s].tail);
        tail_free(&ds->split[s].committed);
    }
    kn_dedup_destroy(ds->dd);
    kn_bpe_destroy(ds->bpe);
    kn_bpe_ids_free(&ds->ids);
    kn_image_free(&ds->img);
    free(ds->row);
    kn_recipe_free(&ds->r);
    free(ds);
}

const kn_recipe *pp_dataset_recipe(const pp_dataset *ds)
{
    return &ds->r;
}

const char *pp_dataset_topic(const pp_dataset *ds, int split)
{
    return ds->split[split].topic;
}

const char *pp_dataset_state_topic(const pp_dataset *ds)
{
    return ds->state_topic;
}

/* Produces the split's shard (if it holds anything) and empties the writer. */
static int emit_shard(pp_dataset *ds, int s)
{
    pp_split *sp = &ds->split[s];
    uint32_t count = kn_shard_writer_count(sp->w);
    if (count == 0 && kn_shard_writer_nkeys(sp->w) == 0) return KN_OK;
    const void *buf;
    size_t len;
    kn_shard_writer_finish(sp->w, &buf, &len);
    char created[24], ver[8];
    snprintf(created, sizeof(created), "%lld", (long long)kn_record_now_ms());
    snprintf(ver, sizeof(ver), "%d", KN_SHARD_VERSION);
    kn_kafka_header h[8];
    size_t nh = 0;
    h[nh++] = (kn_kafka_header){"shard-version", ver, strlen(ver)};
    h[nh++] = (kn_kafka_header){"dataset", ds->r.name, strlen(ds->r.name)};
    h[nh++] = (kn_kafka_header){"split", split_name(s), strlen(split_name(s))};
    h[nh++] = (kn_kafka_header){"recipe-sha256", ds->r.hash, 64};
    if (ds->bpe) h[nh++] = (kn_kafka_header){"tokenizer-sha256", kn_bpe_hash(ds->bpe), 64};
    h[nh++] = (kn_kafka_header){"producer", ds->env->instance, strlen(ds->env->instance)};
    h[nh++] = (kn_kafka_header){"created-ms", created, strlen(created)};
    int rc = kn_kafka_produce(ds->env->producer, sp->topic, -1, NULL, 0, buf, len, h, nh, NULL);
    if (rc != KN_OK) return rc;
    kn_metrics_add(sp->m_examples, count);
    kn_metrics_add(sp->m_shards, 1);
    kn_shard_writer_reset(sp->w);
    return KN_OK;
}

/* Moves the tail's pending keys into the shard (emitting it when its key
 * capacity runs out). */
static int move_keys(pp_dataset *ds, int s)
{
    pp_split *sp = &ds->split[s];
    for (size_t i = 0; i < sp->tail.nk; i++) {
        if (kn_shard_writer_add_key(sp->w, sp->tail.keys + 32 * i) != KN_OK) {
            int rc = emit_shard(ds, s);
            if (rc != KN_OK) return rc;
            kn_shard_writer_add_key(sp->w, sp->tail.keys + 32 * i);
        }
    }
    sp->tail.nk = 0;
    return KN_OK;
}

/* Appends one document's tokens to the split's LM stream and cuts every
 * complete block. */
static int lm_append(pp_dataset *ds, int s, const uint8_t key[32], const uint32_t *tok, size_t n)
{
    pp_split *sp = &ds->split[s];
    lm_tail *t = &sp->tail;
    size_t T1 = ds->r.block_size + 1;
    if (tail_reserve(t, t->n + n + 1, t->nk + 1) != KN_OK) return KN_ENOMEM;
    t->tok[t->n++] = ds->eot;
    memcpy(t->tok + t->n, tok, n * sizeof(uint32_t));
    t->n += n;
    memcpy(t->keys + 32 * t->nk++, key, 32);
    sp->tail_dirty = 1;
    size_t off = 0;
    while (t->n - off >= T1) {
        if (kn_shard_writer_full(sp->w)) {
            int rc = emit_shard(ds, s);
            if (rc != KN_OK) return rc;
        }
        int rc = move_keys(ds, s);
        if (rc != KN_OK) return rc;
        const uint32_t *b = t->tok + off;
        if (ds->dtype == KN_SHARD_U16) {
            uint16_t *row = (uint16_t *)ds->row;
            if (!row) return KN_ENOMEM;
            for (size_t i = 0; i < T1; i++)
                row[i] = (uint16_t)b[i];
        } else {
            memcpy(ds->row, b, T1 * 4);
        }
        kn_shard_writer_add(sp->w, ds->row, 0, 0, NULL);
        off += T1 - 1; /* one-token overlap */
    }
    if (off) {
        memmove(t->tok, t->tok + off, (t->n - off) * sizeof(uint32_t));
        t->n -= off;
    }
    if (kn_shard_writer_full(sp->w)) return emit_shard(ds, s);
    return KN_OK;
}

static void set_out(pp_outcome *out, const char *reason, const char *fmt, const char *arg)
{
    out->reason = reason;
    snprintf(out->detail, sizeof(out->detail), fmt, arg);
}

static int process_text(pp_dataset *ds, int s, const uint8_t key[32], const kn_record_info *info,
                        const char *text, size_t len, pp_outcome *out)
{
    const kn_recipe *r = &ds->r;
    char *clean = NULL;
    size_t clen = len;
    int rc = KN_OK;
    int32_t label = -1;
    if (r->kind == KN_RECIPE_TEXT_CLASS) {
        if (!info->label[0] && r->require_label) {
            set_out(out, "missing_label", "dataset %s needs a label on every record", r->name);
            return KN_OK;
        }
        if (info->label[0] && (label = kn_recipe_label(r, info->label)) < 0) {
            set_out(out, "unknown_label", "label \"%s\" is not in the dataset's label list",
                    info->label);
            return KN_OK;
        }
    }
    if (r->clean) {
        const char *reason = NULL;
        rc = kn_textclean(&r->clean_opts, text, len, &clean, &clen, &reason);
        if (rc == KN_EINVAL && reason) {
            set_out(out, reason, "refused by the cleaning filters of dataset %s", r->name);
            return KN_OK;
        }
        if (rc != KN_OK) return rc;
        text = clean;
    }
    if (ds->dd) {
        kn_dedup_fp fp;
        if ((rc = kn_dedup_fingerprint(ds->dd, text, clen, &fp)) != KN_OK) goto out;
        double sim = 0;
        int d = kn_dedup_check(ds->dd, &fp, &sim);
        if (d != KN_DEDUP_NEW) {
            out->duplicate = 1;
            out->reason = d == KN_DEDUP_EXACT ? "duplicate_exact" : "duplicate_near";
            snprintf(out->detail, sizeof(out->detail),
                     "estimated Jaccard %.3f with a text already kept in dataset %s", sim, r->name);
            goto out;
        }
        char k[KN_DEDUP_KEY_LEN];
        uint8_t v[KN_DEDUP_VALUE_MAX];
        size_t vl = kn_dedup_entry_encode(ds->dd, &fp, k, v);
        rc = kn_kafka_produce(ds->env->producer, ds->state_topic, -1, k, sizeof(k), v, vl, NULL, 0,
                              NULL);
        if (rc != KN_OK) goto out;
        if ((rc = kn_dedup_insert(ds->dd, &fp, 1)) != KN_OK) goto out;
    }
    ds->ids.len = 0;
    char e[256];
    if ((rc = kn_bpe_encode(ds->bpe, text, clen, KN_BPE_SPECIAL_ORDINARY, &ds->ids, e,
                            sizeof(e))) != KN_OK)
        goto out;
    kn_metrics_add(ds->env->m->tokens, (double)ds->ids.len);
    if (r->kind == KN_RECIPE_LM) {
        rc = lm_append(ds, s, key, ds->ids.ids, ds->ids.len);
    } else {
        pp_split *sp = &ds->split[s];
        size_t L = r->max_len;
        for (size_t i = 0; i < L; i++) {
            uint32_t id = i < ds->ids.len ? ds->ids.ids[i] : ds->pad;
            if (ds->dtype == KN_SHARD_U16)
                ((uint16_t *)ds->row)[i] = (uint16_t)id;
            else
                ((uint32_t *)ds->row)[i] = id;
        }
        kn_shard_writer_add(sp->w, ds->row, label, 0, key);
        if (kn_shard_writer_full(sp->w)) rc = emit_shard(ds, s);
    }
out:
    free(clean);
    return rc;
}

static int process_image(pp_dataset *ds, int s, const uint8_t key[32], const kn_record_info *info,
                         const void *value, size_t len, pp_outcome *out)
{
    const kn_recipe *r = &ds->r;
    int32_t label = -1;
    if (!info->label[0] && r->require_label) {
        set_out(out, "missing_label", "dataset %s needs a label on every record", r->name);
        return KN_OK;
    }
    if (info->label[0] && (label = kn_recipe_label(r, info->label)) < 0) {
        set_out(out, "unknown_label", "label \"%s\" is not in the dataset's label list",
                info->label);
        return KN_OK;
    }
    char e[256];
    kn_image *img = &ds->img;
    kn_image_free(img);
    int rc = kn_image_decode(value, len, r->max_pixels, img, e, sizeof(e));
    if (rc == KN_EINVAL || rc == KN_ETOOBIG || rc == KN_EUNSUPPORTED) {
        out->reason = rc == KN_ETOOBIG        ? "too_many_pixels"
                      : rc == KN_EUNSUPPORTED ? "unsupported"
                                              : "bad_image";
        snprintf(out->detail, sizeof(out->detail), "%s", e);
        return KN_OK;
    }
    if (rc != KN_OK) return rc;
    if ((rc = kn_image_convert(img, r->width, r->height, r->channels, img)) != KN_OK) return rc;
    uint64_t seed = 0;
    if (s == PP_TRAIN && r->augment) {
        /* bytes 8..15 of the key: independent of the split's bytes 0..7 */
        for (int i = 8; i < 16; i++)
            seed = (seed << 8) | key[i];
        if (seed == 0) seed = 1; /* 0 means "not augmented" in the shard */
        if ((rc = kn_image_augment(img, &r->aug, seed, img)) != KN_OK) return rc;
    }
    kn_image_normalize(img, r->mean, r->std);
    kn_metrics_add(ds->env->m->images, 1);
    pp_split *sp = &ds->split[s];
    kn_shard_writer_add(sp->w, img->data, label, seed, key);
    if (kn_shard_writer_full(sp->w)) return emit_shard(ds, s);
    return KN_OK;
}

int pp_dataset_process(pp_dataset *ds, const uint8_t key[32], const kn_record_info *info,
                       const void *value, size_t len, pp_outcome *out)
{
    memset(out, 0, sizeof(*out));
    /* A split declared by a privileged source (a dataset importer's
     * published train/test split, e.g. Fashion-MNIST's t10k; an operator; an
     * HTTP caller whose token has the split role: ingest then sets split-by)
     * wins over the hash split, so the eval set is the published test set.
     * Without split-by a split header is anyone's wish and is ignored: an
     * anonymous writer must not choose what the evaluator scores on. */
    const char *declared =
        info->split_by[0] || strcmp(info->source, "import") == 0 ? info->split : "";
    int s = strcmp(declared, "test") == 0    ? PP_EVAL
            : strcmp(declared, "train") == 0 ? PP_TRAIN
                                             : pp_split_of(key, ds->r.eval_fraction);
    if (ds->r.kind == KN_RECIPE_IMAGE) return process_image(ds, s, key, info, value, len, out);
    return process_text(ds, s, key, info, value, len, out);
}

/* Tail entry: u8 version 1 | 3 zero bytes | u32 ntok | u32 nkeys | ntok u32 | nkeys * 32 B. */
static int emit_tail(pp_dataset *ds, int s)
{
    pp_split *sp = &ds->split[s];
    char key[512];
    int kl = snprintf(key, sizeof(key), "tail/%s/%s", split_name(s), ds->env->instance);
    size_t vl = 12 + 4 * sp->tail.n + 32 * sp->tail.nk;
    uint8_t *v = malloc(vl);
    if (!v) return KN_ENOMEM;
    memset(v, 0, 4);
    v[0] = 1;
    uint32_t hdr[2] = {(uint32_t)sp->tail.n, (uint32_t)sp->tail.nk};
    for (int j = 0; j < 2; j++)
        for (int i = 0; i < 4; i++)
            v[4 + 4 * j + i] = (uint8_t)(hdr[j] >> (8 * i));
    for (size_t t = 0; t < sp->tail.n; t++)
        for (int i = 0; i < 4; i++)
            v[12 + 4 * t + (size_t)i] = (uint8_t)(sp->tail.tok[t] >> (8 * i));
    if (sp->tail.nk) memcpy(v + 12 + 4 * sp->tail.n, sp->tail.keys, 32 * sp->tail.nk);
    int rc = kn_kafka_produce(ds->env->producer, ds->state_topic, -1, key, (size_t)kl, v, vl, NULL,
                              0, NULL);
    free(v);
    return rc;
}

int pp_dataset_flush(pp_dataset *ds)
{
    for (int s = 0; s < 2; s++) {
        int rc = emit_shard(ds, s);
        if (rc != KN_OK) return rc;
        if (ds->r.kind == KN_RECIPE_LM && ds->split[s].tail_dirty && (rc = emit_tail(ds, s)) != KN_OK)
            return rc;
    }
    return KN_OK;
}

void pp_dataset_commit(pp_dataset *ds)
{
    if (ds->dd) kn_dedup_commit(ds->dd);
    for (int s = 0; s < 2; s++) {
        pp_split *sp = &ds->split[s];
        if (sp->tail_dirty && tail_copy(&sp->committed, &sp->tail) != KN_OK)
            kn_log_error("dataset %s: out of memory saving the LM tail; an abort before the next "
                         "commit would lose it",
                         ds->r.name);
        sp->tail_dirty = 0;
    }
}

void pp_dataset_abort(pp_dataset *ds)
{
    if (ds->dd) kn_dedup_rollback(ds->dd);
    for (int s = 0; s < 2; s++) {
        pp_split *sp = &ds->split[s];
        kn_shard_writer_reset(sp->w);
        if (tail_copy(&sp->tail, &sp->committed) != KN_OK) {
            kn_log_error("dataset %s: out of memory restoring the LM tail", ds->r.name);
            sp->tail.n = sp->tail.nk = 0;
        }
        sp->tail_dirty = 0;
    }
}

int pp_dataset_apply_state(pp_dataset *ds, const void *key, size_t klen, const void *value,
                           size_t vlen, int at_start)
{
    if (klen > 5 && memcmp(key, "tail/", 5) == 0) {
        if (!at_start || ds->r.kind != KN_RECIPE_LM) return KN_OK;
        char mine[512];
        for (int s = 0; s < 2; s++) {
            int ml = snprintf(mine, sizeof(mine), "tail/%s/%s", split_name(s), ds->env->instance);
            if ((size_t)ml != klen || memcmp(key, mine, klen) != 0) continue;
            const uint8_t *v = value;
            if (vlen < 12 || v[0] != 1) return KN_ECORRUPT;
            uint32_t n = 0, nk = 0;
            for (int i = 3; i >= 0; i--) {
                n = (n << 8) | v[4 + i];
                nk = (nk << 8) | v[8 + i];
            }
            if ((uint64_t)vlen != 12 + 4 * (uint64_t)n + 32 * (uint64_t)nk) return KN_ECORRUPT;
            lm_tail *t = &ds->split[s].tail;
            if (tail_reserve(t, n, nk) != KN_OK) return KN_ENOMEM;
            for (uint32_t j = 0; j < n; j++) {
                const uint8_t *p = v + 12 + 4 * (size_t)j;
                t->tok[j] = (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) |
                            ((uint32_t)p[3] << 24);
            }
            if (nk) memcpy(t->keys, v + 12 + 4 * (size_t)n, 32 * (size_t)nk);
            t->n = n;
            t->nk = nk;
            if (tail_copy(&ds->split[s].committed, t) != KN_OK) return KN_ENOMEM;
        }
        return KN_OK;
    }
    if (!ds->dd) return KN_OK;
    int rc = kn_dedup_entry_apply(ds->dd, key, klen, value, vlen);
    return rc == KN_ENOTFOUND ? KN_OK : rc;
}
