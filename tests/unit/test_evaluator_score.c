/* Unit: score.c on in-memory eval sets (no Kafka): an MLP on image shards
 * gives the accuracy and confusion matrix of its own predictions; a tiny GPT
 * on lm_tokens shards gives a finite loss with perplexity = exp(loss) and
 * decoded samples from fixed prompts (tokenizer trained here); a shard of the
 * wrong kind is skipped and counted; a regression model is refused. Two
 * references share nothing with the forward pass: a classifier with weights
 * set by hand scores a confusion matrix whose metrics are worked out by hand,
 * and an all-zero GPT scores ln V. The eval set's identity
 * (ev_evalset_identify, shared by the service and `score`) hashes every
 * shard's bytes in order and counts only the valid shards' examples. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "text/bpe.h"
#include "evaluator.h"
#include "core/kn.h"
#include "core/sha256.h"
#include "nn/model.h"
#include "stream/shard.h"
#include "near.h"

static void add_blob(ev_evalset *es, const void *buf, size_t len)
{
    es->shards = realloc(es->shards, (es->nshards + 1) * sizeof(ev_blob));
    assert_non_null(es->shards);
    es->shards[es->nshards].buf = malloc(len);
    memcpy(es->shards[es->nshards].buf, buf, len);
    es->shards[es->nshards++].len = len;
    es->bytes += len;
}

static void image_shard(ev_evalset *es, int n, uint32_t seed)
{
    uint32_t shape[3] = {2, 2, 1};
    char err[256];
    kn_shard_writer *w = kn_shard_writer_new(KN_SHARD_IMAGE, KN_SHARD_F32, 3, shape, (uint32_t)n,
                                             (uint32_t)n, err, sizeof(err));
    assert_non_null(w);
    for (int i = 0; i < n; i++) {
        float x[4];
        for (int j = 0; j < 4; j++)
            x[j] = (float)((seed * 31u + (uint32_t)i * 7u + (uint32_t)j * 13u) % 17) / 17.0f;
        assert_int_equal(kn_shard_writer_add(w, x, i % 3, 0, NULL), KN_OK);
    }
    const void *buf;
    size_t len;
    kn_shard_writer_finish(w, &buf, &len);
    add_blob(es, buf, len);
    kn_shard_writer_destroy(w);
}

static void classifier(void **state)
{
    (void)state;
    ev_evalset es = {0};
    image_shard(&es, 50, 1);
    image_shard(&es, 37, 2);
    uint32_t tshape[1] = {5}; /* a token shard: does not fit an MLP */
    char err[256];
    kn_shard_writer *w =
        kn_shard_writer_new(KN_SHARD_LM_TOKENS, KN_SHARD_U16, 1, tshape, 1, 1, err, sizeof(err));
    uint16_t toks[5] = {1, 2, 3, 4, 5};
    assert_int_equal(kn_shard_writer_add(w, toks, 0, 0, NULL), KN_OK);
    const void *buf;
    size_t len;
    kn_shard_writer_finish(w, &buf, &len);
    add_blob(&es, buf, len);
    kn_shard_writer_destroy(w);

    json_t *spec = json_pack("{s:s,s:[i,i,i]}", "type", "mlp", "sizes", 4, 8, 3);
    kn_model *m = NULL;
    assert_int_equal(kn_model_new(spec, 3, 16, NULL, &m, err, sizeof(err)), KN_OK);
    json_decref(spec);
    ev_score_options o = {.batch = 16};
    ev_score sc;
    assert_int_equal(ev_score_model(m, &es, &o, &sc, err, sizeof(err)), KN_OK);
    assert_int_equal(sc.examples, 87);
    assert_int_equal(sc.skipped, 1);
    assert_string_equal(sc.primary, "accuracy");

    /* reference: the same model, one example at a time */
    int64_t correct = 0, cm[3][3] = {{0}};
    for (size_t s = 0; s < 2; s++) {
        kn_shard_view v;
        assert_int_equal(kn_shard_parse(es.shards[s].buf, es.shards[s].len, &v, NULL, 0), KN_OK);
        for (uint32_t i = 0; i < v.info.count; i++) {
            float x[4];
            memcpy(x, kn_shard_example(&v, i), sizeof(x));
            kn_batch b = {.B = 1, .x = x};
            assert_int_equal(kn_model_forward(m, &b, NULL, err, sizeof(err)), KN_OK);
            int p;
            assert_int_equal(kn_model_predict(m, &p, 1), KN_OK);
            int t = kn_shard_label(&v, i);
            correct += p == t;
            cm[t][p]++;
        }
    }
    assert_near(json_number_value(json_object_get(sc.metrics, "accuracy")), (double)correct / 87.0,
                1e-12);
    for (int t = 0; t < 3; t++)
        for (int p = 0; p < 3; p++)
            assert_int_equal(json_integer_value(json_array_get(
                                 json_array_get(sc.confusion, (size_t)t), (size_t)p)),
                             cm[t][p]);
    assert_non_null(json_object_get(sc.metrics, "macro_f1"));
    assert_null(sc.samples);
    ev_score_free(&sc);
    kn_model_destroy(m);

    spec = json_pack("{s:s,s:i,s:i}", "type", "linreg", "in", 4, "out", 1);
    assert_int_equal(kn_model_new(spec, 3, 16, NULL, &m, err, sizeof(err)), KN_OK);
    json_decref(spec);
    assert_int_equal(ev_score_model(m, &es, &o, &sc, err, sizeof(err)), KN_EINVAL);
    assert_non_null(strstr(err, "regression"));
    kn_model_destroy(m);
    ev_evalset_free(&es);
}

/* An independent reference: a one-layer classifier whose weights are set by
 * hand to pick the largest of the first three inputs, so every prediction is
 * known by construction (no forward pass needed to know it), on examples laid
 * out to give the confusion matrix below (rows true, columns predicted).
 * The expected metrics are worked out by hand from that matrix:
 *   [[5,2,1],[0,6,3],[4,0,9]]: 20 of 30 right; F1 = 2TP / (row + column):
 *   10/17, 12/17, 18/26; precision 5/9, 6/8, 9/13; recall 5/8, 6/9, 9/13. */
static void classifier_hand_computed(void **state)
{
    (void)state;
    static const int cm[3][3] = {{5, 2, 1}, {0, 6, 3}, {4, 0, 9}};
    uint32_t shape[3] = {2, 2, 1};
    char err[256];
    ev_evalset es = {0};
    kn_shard_writer *w =
        kn_shard_writer_new(KN_SHARD_IMAGE, KN_SHARD_F32, 3, shape, 30, 30, err, sizeof(err));
    assert_non_null(w);
    int n = 0;
    for (int t = 0; t < 3; t++)
        for (int p = 0; p < 3; p++)
            for (int k = 0; k < cm[t][p]; k++, n++) {
                float x[4] = {0.1f, 0.2f, 0.3f, (float)n}; /* x[3] is ignored by the weights */
                x[p] = 2.0f + 0.01f * (float)k;
                assert_int_equal(kn_shard_writer_add(w, x, t, 0, NULL), KN_OK);
            }
    const void *buf;
    size_t len;
    kn_shard_writer_finish(w, &buf, &len);
    add_blob(&es, buf, len);
    kn_shard_writer_destroy(w);

    json_t *spec = json_pack("{s:s,s:[i,i]}", "type", "mlp", "sizes", 4, 3);
    kn_model *m = NULL;
    assert_int_equal(kn_model_new(spec, 3, 8, NULL, &m, err, sizeof(err)), KN_OK);
    json_decref(spec);
    const float wgt[12] = {1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0}, bias[3] = {0, 0, 0};
    assert_int_equal(kn_model_set_tensor(m, "layers.0.weight", wgt, 12), KN_OK);
    assert_int_equal(kn_model_set_tensor(m, "layers.0.bias", bias, 3), KN_OK);
    ev_score_options o = {.batch = 8}; /* 30 = 3 full batches and a short one */
    ev_score sc;
    assert_int_equal(ev_score_model(m, &es, &o, &sc, err, sizeof(err)), KN_OK);
    assert_int_equal(sc.examples, 30);
    for (int t = 0; t < 3; t++)
        for (int p = 0; p < 3; p++)
            assert_int_equal(json_integer_value(json_array_get(
                                 json_array_get(sc.confusion, (size_t)t), (size_t)p)),
                             cm[t][p]);
    const struct {
        const char *name;
        double want;
    } want[] = {
        {"accuracy", 20.0 / 30.0},
        {"f1.0", 10.0 / 17.0},
        {"f1.1", 12.0 / 17.0},
        {"f1.2", 18.0 / 26.0},
        {"macro_f1", (10.0 / 17.0 + 12.0 / 17.0 + 18.0 / 26.0) / 3.0},
        {"precision.0", 5.0 / 9.0},
        {"recall.0", 5.0 / 8.0},
        {"macro_precision", (5.0 / 9.0 + 6.0 / 8.0 + 9.0 / 13.0) / 3.0},
        {"macro_recall", (5.0 / 8.0 + 6.0 / 9.0 + 9.0 / 13.0) / 3.0},
    };
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        json_t *v = json_object_get(sc.metrics, want[i].name);
        if (!v) fail_msg("no metric %s", want[i].name);
        assert_near(json_number_value(v), want[i].want, 1e-12);
    }
    assert_int_equal(json_integer_value(json_object_get(sc.metrics, "eval_examples")), 30);
    ev_score_free(&sc);
    kn_model_destroy(m);
    ev_evalset_free(&es);
}

/* An independent reference for the LM metrics: a GPT with every weight zero
 * predicts the uniform distribution (zero embeddings, layer norms of zero
 * vectors are zero, zero logits), so its loss is ln V and its perplexity V
 * exactly, whatever the tokens. */
static void language_model_uniform(void **state)
{
    (void)state;
    char err[256];
    const int V = 50;
    ev_evalset es = {0};
    uint32_t shape[1] = {9};
    kn_shard_writer *w =
        kn_shard_writer_new(KN_SHARD_LM_TOKENS, KN_SHARD_U16, 1, shape, 6, 6, err, sizeof(err));
    assert_non_null(w);
    for (int r = 0; r < 6; r++) {
        uint16_t blk[9];
        for (int j = 0; j < 9; j++)
            blk[j] = (uint16_t)((r * 7 + j * 3) % V);
        assert_int_equal(kn_shard_writer_add(w, blk, 0, 0, NULL), KN_OK);
    }
    const void *buf;
    size_t len;
    kn_shard_writer_finish(w, &buf, &len);
    add_blob(&es, buf, len);
    kn_shard_writer_destroy(w);
    json_t *spec = json_pack("{s:s,s:i,s:i,s:i,s:i,s:i}", "type", "gpt", "n_layer", 2, "n_head", 2,
                             "n_embd", 16, "block_size", 8, "vocab_size", V);
    kn_model *m = NULL;
    assert_int_equal(kn_model_new(spec, 5, 4, NULL, &m, err, sizeof(err)), KN_OK);
    json_decref(spec);
    const kn_tensor_set *P = kn_model_params(m);
    for (int i = 0; i < P->n; i++) {
        float *zero = calloc(P->t[i].numel, sizeof(float));
        assert_int_equal(kn_model_set_tensor(m, P->t[i].name, zero, P->t[i].numel), KN_OK);
        free(zero);
    }
    ev_score_options o = {.lm_batch = 4};
    ev_score sc;
    assert_int_equal(ev_score_model(m, &es, &o, &sc, err, sizeof(err)), KN_OK);
    assert_int_equal(json_integer_value(json_object_get(sc.metrics, "eval_tokens")), 48);
    assert_near(json_number_value(json_object_get(sc.metrics, "loss")), log((double)V), 1e-5);
    assert_near(json_number_value(json_object_get(sc.metrics, "perplexity")), (double)V, 1e-3);
    ev_score_free(&sc);
    kn_model_destroy(m);
    ev_evalset_free(&es);
}

static void language_model(void **state)
{
    (void)state;
    char err[256], path[] = "/tmp/kiln-test-ev-bpe-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    const char *texts[2] = {"the cat sat on the mat. the dog sat on the log. ",
                            "once upon a time the cat and the dog sat together. "};
    size_t lens[2] = {strlen(texts[0]), strlen(texts[1])};
    assert_int_equal(kn_bpe_train(texts, lens, 2, 300, KN_BPE_R50K, path, err, sizeof(err)), KN_OK);
    kn_bpe *bpe = kn_bpe_load(path, KN_BPE_R50K, err, sizeof(err));
    unlink(path);
    assert_non_null(bpe);
    int V = (int)kn_bpe_vocab_size(bpe);

    ev_evalset es = {0};
    uint32_t shape[1] = {9}; /* T + 1 with T = 8 */
    kn_shard_writer *w =
        kn_shard_writer_new(KN_SHARD_LM_TOKENS, KN_SHARD_U16, 1, shape, 10, 10, err, sizeof(err));
    assert_non_null(w);
    kn_bpe_ids ids;
    kn_bpe_ids_init(&ids);
    assert_int_equal(
        kn_bpe_encode(bpe, texts[1], lens[1], KN_BPE_SPECIAL_ORDINARY, &ids, err, sizeof(err)),
        KN_OK);
    static unsigned counts[65536]; /* target tokens, for the unigram baseline */
    for (int r = 0; r < 10; r++) {
        uint16_t blk[9];
        for (int j = 0; j < 9; j++)
            blk[j] = (uint16_t)ids.ids[(size_t)(r + j) % ids.len];
        for (int j = 1; j < 9; j++)
            counts[blk[j]]++;
        assert_int_equal(kn_shard_writer_add(w, blk, 0, 0, NULL), KN_OK);
    }
    kn_bpe_ids_free(&ids);
    const void *buf;
    size_t len;
    kn_shard_writer_finish(w, &buf, &len);
    add_blob(&es, buf, len);
    kn_shard_writer_destroy(w);

    json_t *spec = json_pack("{s:s,s:i,s:i,s:i,s:i,s:i}", "type", "gpt", "n_layer", 1, "n_head", 2,
                             "n_embd", 16, "block_size", 8, "vocab_size", V);
    kn_model *m = NULL;
    assert_int_equal(kn_model_new(spec, 5, 4, NULL, &m, err, sizeof(err)), KN_OK);
    json_decref(spec);
    const char *prompts[2] = {"the cat", "once upon"};
    ev_score_options o = {.lm_batch = 4,
                          .bpe = bpe,
                          .prompts = prompts,
                          .nprompts = 2,
                          .sample_tokens = 6,
                          .temperature = 0.8f,
                          .top_k = 10,
                          .seed = 1};
    ev_score sc;
    assert_int_equal(ev_score_model(m, &es, &o, &sc, err, sizeof(err)), KN_OK);
    assert_string_equal(sc.primary, "loss");
    double loss = json_number_value(json_object_get(sc.metrics, "loss"));
    double ppl = json_number_value(json_object_get(sc.metrics, "perplexity"));
    assert_true(isfinite(loss) && loss > 0);
    assert_near(ppl, exp(loss), 1e-9 * ppl);
    assert_true(fabs(loss - log((double)V)) < 1.0); /* untrained: near uniform */
    assert_int_equal(json_integer_value(json_object_get(sc.metrics, "eval_tokens")), 80);
    double h = 0; /* entropy of the 80 targets' own unigram distribution */
    for (int t = 0; t < 65536; t++)
        if (counts[t]) h -= counts[t] / 80.0 * log(counts[t] / 80.0);
    assert_near(json_number_value(json_object_get(sc.metrics, "unigram_loss")), h, 1e-9);
    assert_int_equal(json_array_size(sc.samples), 2);
    const char *t0 = json_string_value(json_object_get(json_array_get(sc.samples, 0), "text"));
    assert_non_null(t0);
    assert_true(strncmp(t0, "the cat", 7) == 0);
    fprintf(stderr, "sample: %s\n", t0);
    /* deterministic for a seed */
    ev_score sc2;
    assert_int_equal(ev_score_model(m, &es, &o, &sc2, err, sizeof(err)), KN_OK);
    assert_true(json_equal(sc.samples, sc2.samples));
    ev_score_free(&sc);
    ev_score_free(&sc2);
    kn_model_destroy(m);
    kn_bpe_destroy(bpe);
    ev_evalset_free(&es);
}

static void identity(void **state)
{
    (void)state;
    ev_evalset es = {0};
    image_shard(&es, 5, 1);
    add_blob(&es, "not a shard", 11); /* hashed and counted as a shard, no examples */
    image_shard(&es, 3, 2);
    ev_evalset_id id = {.examples = 99, .shards = 99};
    assert_int_equal(ev_evalset_identify(es.shards, es.nshards, &id), KN_OK);
    assert_int_equal(id.examples, 8);
    assert_int_equal(id.shards, 3);
    assert_string_equal(id.kind, "image");
    /* the reference: SHA-256 of the values concatenated in order */
    size_t total = 0;
    for (size_t i = 0; i < es.nshards; i++)
        total += es.shards[i].len;
    unsigned char *cat = malloc(total);
    assert_non_null(cat);
    size_t at = 0;
    for (size_t i = 0; i < es.nshards; i++) {
        memcpy(cat + at, es.shards[i].buf, es.shards[i].len);
        at += es.shards[i].len;
    }
    char hex[KN_SHA256_HEX_LEN];
    kn_sha256_hex(cat, total, hex);
    assert_string_equal(id.sha256, hex);
    /* order is part of the identity */
    ev_blob t = es.shards[0];
    es.shards[0] = es.shards[2];
    es.shards[2] = t;
    ev_evalset_id id2 = {0};
    assert_int_equal(ev_evalset_identify(es.shards, es.nshards, &id2), KN_OK);
    assert_int_equal(id2.examples, 8);
    assert_string_not_equal(id2.sha256, id.sha256);
    free(cat);
    ev_evalset_free(&es);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(classifier),     cmocka_unit_test(classifier_hand_computed),
        cmocka_unit_test(language_model), cmocka_unit_test(language_model_uniform),
        cmocka_unit_test(identity),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
