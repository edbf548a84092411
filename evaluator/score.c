/* score.c: one model on one eval set → metrics. Classifiers (mlp, cnn on
 * image shards; txtcls on text_class shards): confusion matrix, accuracy,
 * per-class and macro precision/recall/F1. Language models (gpt on lm_tokens
 * shards): token-weighted loss, perplexity, and samples from fixed prompts.
 * Examples are laid out exactly as the trainer's batcher does (image HWC →
 * CHW, u8 scaled to [0, 1]; token rows truncated to the block size).
 * Limits: regression models (mse loss) are refused: no shard kind carries
 * regression targets yet. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "evaluator.h"
#include "evmetrics.h"
#include "core/kn.h"
#include "core/log.h"
#include "stream/shard.h"
#include "stream/feed.h"
#include "core/shutdown.h"

/* The same values as kn_feed_input. */
enum { IN_IMAGE = KN_FEED_IMAGE, IN_LM = KN_FEED_LM, IN_TEXTCLS = KN_FEED_TEXTCLS };

typedef struct {
    int input;
    int C, H, W, in_numel; /* images: model input (C, H, W); in_numel for mlp */
    int cnn;               /* 1: shape must match (C, H, W) exactly */
    int T, vocab, classes;
    int rows;    /* batch rows */
    float *x;    /* (rows, in_numel) */
    int *tokens; /* (rows, T) */
    int *labels; /* (rows) or (rows, T) */
    int *preds;  /* (rows) */
    uint64_t *unigram; /* LM: (vocab) counts of the scored target tokens */
} layout;

int ev_score_batch_for(const json_t *spec, const ev_score_options *o)
{
    const char *type = json_string_value(json_object_get(spec, "type"));
    int b = type && strcmp(type, "gpt") == 0 ? o->lm_batch : o->batch;
    return b > 0 ? b : 1;
}

void ev_score_free(ev_score *s)
{
    if (!s) return;
    json_decref(s->metrics);
    json_decref(s->confusion);
    json_decref(s->samples);
    memset(s, 0, sizeof(*s));
}

static int spec_int(const json_t *spec, const char *k, int def)
{
    json_t *v = json_object_get(spec, k);
    return json_is_integer(v) ? (int)json_integer_value(v) : def;
}

static int layout_init(layout *l, kn_model *m, char *errbuf, size_t errsz)
{
    memset(l, 0, sizeof(*l));
    const json_t *spec = kn_model_spec(m);
    const char *type = json_string_value(json_object_get(spec, "type"));
    const char *loss = json_string_value(json_object_get(spec, "loss"));
    l->rows = kn_model_max_batch(m);
    switch (kn_model_type(m)) {
    case KN_MODEL_CNN: {
        json_t *in = json_object_get(spec, "input");
        l->input = IN_IMAGE;
        l->cnn = 1;
        l->C = (int)json_integer_value(json_array_get(in, 0));
        l->H = (int)json_integer_value(json_array_get(in, 1));
        l->W = (int)json_integer_value(json_array_get(in, 2));
        l->in_numel = l->C * l->H * l->W;
        l->classes = kn_model_num_outputs(m);
        break;
    }
    case KN_MODEL_MLP: {
        if (loss && strcmp(loss, "mse") == 0)
            return kn_seterr(errbuf, errsz, KN_EINVAL,
                             "regression model (%s, mse loss): no eval shard kind carries "
                             "regression targets",
                             type ? type : "?");
        json_t *sizes = json_object_get(spec, "sizes");
        l->input = IN_IMAGE;
        l->in_numel = json_is_array(sizes) ? (int)json_integer_value(json_array_get(sizes, 0))
                                           : spec_int(spec, "in", 0);
        l->classes = kn_model_num_outputs(m);
        break;
    }
    case KN_MODEL_GPT:
        l->input = IN_LM;
        l->T = kn_model_block_size(m);
        l->vocab = kn_model_num_outputs(m);
        break;
    case KN_MODEL_TXTCLS:
        l->input = IN_TEXTCLS;
        l->T = kn_model_block_size(m);
        l->vocab = spec_int(spec, "vocab_size", 0);
        l->classes = kn_model_num_outputs(m);
        break;
    default:
        return kn_seterr(errbuf, errsz, KN_EINVAL, "model type '%s' cannot be evaluated",
                         type ? type : "?");
    }
    size_t rows = (size_t)l->rows;
    if (l->input == IN_IMAGE)
        l->x = malloc(rows * (size_t)l->in_numel * sizeof(float));
    else
        l->tokens = malloc(rows * (size_t)l->T * sizeof(int));
    l->labels = malloc(rows * (size_t)(l->input == IN_LM ? l->T : 1) * sizeof(int));
    l->preds = malloc(rows * sizeof(int));
    if (l->input == IN_LM && !(l->unigram = calloc((size_t)l->vocab, sizeof(uint64_t))))
        return kn_seterr(errbuf, errsz, KN_ENOMEM, "out of memory");
    if ((!l->x && !l->tokens) || !l->labels || !l->preds)
        return kn_seterr(errbuf, errsz, KN_ENOMEM, "out of memory");
    return KN_OK;
}

static void layout_free(layout *l)
{
    free(l->x);
    free(l->tokens);
    free(l->labels);
    free(l->preds);
    free(l->unigram);
}

/* The unigram baseline: the cross-entropy (nats/token) of the eval targets
 * under their own empirical unigram distribution, i.e. the loss of the best
 * model that ignores context. A language model worth keeping is below it. */
static double unigram_loss(const uint64_t *counts, int vocab)
{
    uint64_t total = 0;
    for (int i = 0; i < vocab; i++) total += counts[i];
    double h = 0;
    for (int i = 0; i < vocab; i++)
        if (counts[i]) {
            double p = (double)counts[i] / (double)total;
            h -= p * log(p);
        }
    return total ? h : NAN;
}

/* "" when the shard fits the model, else why not. */
static const char *mismatch(const layout *l, const kn_shard_view *v, char *why, size_t whysz)
{
    const kn_shard_info *in = &v->info;
    why[0] = '\0';
    if (l->input == IN_IMAGE) {
        if (in->kind != KN_SHARD_IMAGE || !v->labels)
            snprintf(why, whysz, "shard kind %s, the model needs labelled images",
                     kn_shard_kind_name(in->kind));
        else if (in->dtype != KN_SHARD_F32 && in->dtype != KN_SHARD_U8)
            snprintf(why, whysz, "image dtype %s", kn_shard_dtype_name(in->dtype));
        else if ((int)(in->shape[0] * in->shape[1] * in->shape[2]) != l->in_numel ||
                 (l->cnn && ((int)in->shape[0] != l->H || (int)in->shape[1] != l->W ||
                             (int)in->shape[2] != l->C)))
            snprintf(why, whysz, "image shape %ux%ux%u does not fit the model's input",
                     in->shape[0], in->shape[1], in->shape[2]);
        return why;
    }
    kn_shard_kind want = l->input == IN_LM ? KN_SHARD_LM_TOKENS : KN_SHARD_TEXT_CLASS;
    if (in->kind != want)
        snprintf(why, whysz, "shard kind %s, the model needs %s", kn_shard_kind_name(in->kind),
                 kn_shard_kind_name(want));
    else if (in->dtype != KN_SHARD_U16 && in->dtype != KN_SHARD_U32)
        snprintf(why, whysz, "token dtype %s", kn_shard_dtype_name(in->dtype));
    else if (l->input == IN_LM && in->shape[0] < 2)
        snprintf(why, whysz, "token blocks of %u", in->shape[0]);
    else if (l->input == IN_TEXTCLS && !v->labels)
        snprintf(why, whysz, "text_class shard without labels");
    return why;
}

/* Copies example i into row r; -1 when it does not fit (label/token range). */
static int copy_example(layout *l, const kn_shard_view *v, uint32_t i, int r)
{
    kn_feed f = {.input = (kn_feed_input)l->input, .in_numel = l->in_numel, .T = l->T,
                 .vocab = l->vocab, .classes = l->classes, .x = l->x, .tokens = l->tokens,
                 .labels = l->labels};
    return kn_feed_copy(&f, v, i, r);
}

/* Runs the B rows filled so far and accumulates their figures. */
static int run_batch(kn_model *m, layout *l, int B, ev_confusion *conf, ev_lm_loss *lm,
                     char *errbuf, size_t errsz)
{
    kn_batch b = {.B = B, .T = l->T, .x = l->x, .tokens = l->tokens, .labels = l->labels};
    if (l->input == IN_IMAGE) b.T = 0;
    float loss = 0;
    int rc = kn_model_forward(m, &b, &loss, errbuf, errsz);
    if (rc != KN_OK) return rc;
    if (l->input == IN_LM) {
        int64_t n = 0;
        for (size_t i = 0; i < (size_t)B * l->T; i++)
            if (l->labels[i] >= 0) {
                n++;
                l->unigram[l->labels[i]]++;
            }
        ev_lm_loss_add(lm, loss, n);
        return KN_OK;
    }
    if ((rc = kn_model_predict(m, l->preds, (size_t)l->rows)) != KN_OK)
        return kn_seterr(errbuf, errsz, rc, "reading predictions: %s", kn_strerror(rc));
    for (int r = 0; r < B; r++)
        ev_confusion_add(conf, l->labels[r], l->preds[r]);
    return KN_OK;
}

/* Bytes to valid UTF-8 (invalid sequences become '?'), NUL-terminated in
 * place; s has room for len + 1 bytes. */
static void utf8_sanitize(char *s, size_t len)
{
    size_t i = 0;
    while (i < len) {
        unsigned char c = (unsigned char)s[i];
        size_t n = c < 0x80             ? 1
                   : (c & 0xE0) == 0xC0 ? 2
                   : (c & 0xF0) == 0xE0 ? 3
                   : (c & 0xF8) == 0xF0 ? 4
                                        : 0;
        int ok = n > 0 && i + n <= len && !(n == 1 && c == 0);
        for (size_t k = 1; ok && k < n; k++)
            ok = ((unsigned char)s[i + k] & 0xC0) == 0x80;
        if (!ok) {
            s[i++] = '?';
            continue;
        }
        i += n;
    }
    s[len] = '\0';
}

static json_t *generate_samples(kn_model *m, const ev_score_options *o)
{
    json_t *out = json_array();
    int T = kn_model_block_size(m), V = kn_model_num_outputs(m);
    int n_new = o->sample_tokens > 0 ? o->sample_tokens : 32;
    for (size_t p = 0; out && p < o->nprompts; p++) {
        char err[256];
        kn_bpe_ids ids;
        kn_bpe_ids_init(&ids);
        if (kn_bpe_encode(o->bpe, o->prompts[p], strlen(o->prompts[p]), KN_BPE_SPECIAL_ORDINARY,
                          &ids, err, sizeof(err)) != KN_OK) {
            kn_bpe_ids_free(&ids);
            continue;
        }
        int np = (int)ids.len;
        if (np >= T) np = T - 1;
        int *buf = malloc((size_t)(np + n_new + 1) * sizeof(int));
        char *text = malloc((size_t)(np + n_new + 1) * 64 + 1);
        size_t tl = 0;
        int ok = buf && text;
        for (int i = 0; ok && i < np; i++) {
            buf[i] = (int)ids.ids[ids.len - (size_t)np + (size_t)i];
            if (buf[i] >= V) ok = 0;
        }
        if (ok && np == 0) { /* empty prompt: start from <|endoftext|> when known */
            int64_t eot = kn_bpe_special_id(o->bpe, "<|endoftext|>");
            buf[0] = eot >= 0 && eot < V ? (int)eot : 0;
            np = 1;
        }
        kn_sample_config sc = {
            .temperature = o->temperature, .top_k = o->top_k, .seed = o->seed + p};
        if (ok && kn_model_generate(m, buf, np, n_new, &sc, buf, err, sizeof(err)) != KN_OK) {
            kn_log_warn("sample %zu: %s", p, err);
            ok = 0;
        }
        for (int i = 0; ok && i < np + n_new; i++) { /* id by id: skip ids the tokenizer lacks */
            uint32_t id = (uint32_t)buf[i];
            size_t got = 0;
            if (kn_bpe_decode(o->bpe, &id, 1, text + tl, 64, &got, NULL, 0) == KN_OK) tl += got;
        }
        if (ok) {
            utf8_sanitize(text, tl);
            json_array_append_new(out, json_pack("{s:s,s:s,s:i}", "prompt", o->prompts[p], "text",
                                                 text, "new_tokens", n_new));
        }
        free(buf);
        free(text);
        kn_bpe_ids_free(&ids);
    }
    return out;
}

int ev_score_model(kn_model *m, const ev_evalset *es, const ev_score_options *o, ev_score *out,
                   char *errbuf, size_t errsz)
{
    memset(out, 0, sizeof(*out));
    layout l;
    ev_confusion conf = {0};
    ev_lm_loss lm = {0};
    int rc = layout_init(&l, m, errbuf, errsz);
    if (rc != KN_OK) goto out;
    if (l.input != IN_LM && (rc = ev_confusion_init(&conf, l.classes)) != KN_OK) {
        kn_seterr(errbuf, errsz, rc, "model with %d classes", l.classes);
        goto out;
    }
    kn_model_set_training(m, 0);
    int B = 0;
    char why[160], first_why[160] = "";
    for (size_t s = 0; s < es->nshards; s++) {
        kn_shard_view v;
        if (kn_shard_parse(es->shards[s].buf, es->shards[s].len, &v, why, sizeof(why)) != KN_OK ||
            mismatch(&l, &v, why, sizeof(why))[0]) {
            if (!first_why[0]) snprintf(first_why, sizeof(first_why), "%s", why);
            out->skipped++;
            continue;
        }
        for (uint32_t i = 0; i < v.info.count; i++) {
            if (copy_example(&l, &v, i, B) != 0) {
                out->skipped++;
                continue;
            }
            out->examples++;
            if (++B < l.rows) continue;
            if ((rc = run_batch(m, &l, B, &conf, &lm, errbuf, errsz)) != KN_OK) goto out;
            B = 0;
            if (kn_shutdown_requested()) {
                rc = EV_ABANDONED;
                goto out;
            }
        }
    }
    if (B > 0 && (rc = run_batch(m, &l, B, &conf, &lm, errbuf, errsz)) != KN_OK) goto out;
    if (out->examples == 0) {
        rc = kn_seterr(errbuf, errsz, KN_EINVAL,
                       "none of the %lld shard(s)/example(s) of the eval set fit the model%s%s",
                       (long long)out->skipped, first_why[0] ? ": " : "", first_why);
        goto out;
    }
    out->metrics = json_object();
    if (!out->metrics) {
        rc = KN_ENOMEM;
        goto out;
    }
    json_object_set_new(out->metrics, "eval_examples", json_integer(out->examples));
    if (l.input == IN_LM) {
        out->primary = "loss";
        json_object_set_new(out->metrics, "loss", json_real(ev_lm_loss_mean(&lm)));
        json_object_set_new(out->metrics, "perplexity", json_real(ev_lm_perplexity(&lm)));
        json_object_set_new(out->metrics, "eval_tokens", json_integer(lm.tokens));
        json_object_set_new(out->metrics, "unigram_loss", json_real(unigram_loss(l.unigram, l.vocab)));
        if (o->bpe && o->nprompts > 0) out->samples = generate_samples(m, o);
    } else {
        ev_class_report r;
        out->primary = "accuracy";
        if ((rc = ev_class_report_compute(&conf, &r)) != KN_OK) goto out;
        rc = ev_class_report_to_metrics(&r, out->metrics);
        ev_class_report_free(&r);
        if (rc != KN_OK) goto out;
        out->confusion = ev_confusion_to_json(&conf);
    }
    /* json_real(NAN) is NULL: a non-finite figure is simply absent, and the
     * policy then rejects the version naming the missing metric. */
    if (!json_object_get(out->metrics, out->primary))
        kn_log_warn("the model's %s on the eval set is not finite", out->primary);
    rc = KN_OK;
out:
    if (rc != KN_OK) {
        int64_t ex = out->examples, sk = out->skipped;
        ev_score_free(out);
        out->examples = ex;
        out->skipped = sk;
    }
    ev_confusion_free(&conf);
    layout_free(&l);
    return rc;
}
