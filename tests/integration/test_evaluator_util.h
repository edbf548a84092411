/* test_evaluator_util.h: the synthetic data of kiln-evaluator's integration
 * tests (header only: test_evaluator.c, test_evaluator_faults.c). A
 * linearly separable TE_CLASSES-class problem over TE_DIM features (class c
 * lights up the features j with j % TE_CLASSES == c, plus Gaussian noise),
 * its eval set as image shards (4 x 4 x 1 f32) on two partitions, and MLP
 * checkpoints of it: trained (passes min_accuracy 0.8) or not. The draws
 * come from one xorshift64 stream, so a test's data is the same every run. */
#ifndef KILN_TEST_EVALUATOR_UTIL_H
#define KILN_TEST_EVALUATOR_UTIL_H

#include <jansson.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>

#include "core/kn.h"
#include "nn/model.h"
#include "stream/kafka.h"
#include "stream/shard.h"

#define TE_DIM           16
#define TE_CLASSES       4
#define TE_EVAL_PER_PART 200
#define TE_UNUSED        __attribute__((unused))

static uint64_t te_rng_state = 88172645463325252ull;

static TE_UNUSED double te_urand(void)
{
    te_rng_state ^= te_rng_state << 13;
    te_rng_state ^= te_rng_state >> 7;
    te_rng_state ^= te_rng_state << 17;
    return (double)(te_rng_state >> 11) / 9007199254740992.0;
}

static TE_UNUSED float te_gauss(void)
{
    double u = te_urand() + 1e-12, v = te_urand();
    return (float)(sqrt(-2 * log(u)) * cos(2 * M_PI * v));
}

/* One example into x[TE_DIM]; returns its class. */
static TE_UNUSED int te_example(float *x)
{
    int c = (int)(te_urand() * TE_CLASSES) % TE_CLASSES;
    for (int j = 0; j < TE_DIM; j++)
        x[j] = (j % TE_CLASSES == c ? 1.0f : 0.0f) + 0.3f * te_gauss();
    return c;
}

/* The eval set on topic (created with two partitions): one shard of
 * TE_EVAL_PER_PART examples a partition, keyed (partition, index). */
static TE_UNUSED int te_produce_eval_set(const char *brokers, const char *topic,
                                         const char *client_id, char *err, size_t errsz)
{
    kn_kafka_topic_spec spec = {.name = topic, .partitions = 2};
    if (kn_kafka_create_topics(brokers, &spec, 1, 15000, err, errsz) != KN_OK) return -1;
    kn_kafka_producer_options po = {.brokers = brokers, .client_id = client_id};
    kn_kafka_producer *p = kn_kafka_producer_new(&po, err, errsz);
    if (!p) return -1;
    uint32_t shape[3] = {4, 4, 1};
    kn_shard_writer *w = kn_shard_writer_new(KN_SHARD_IMAGE, KN_SHARD_F32, 3, shape,
                                             TE_EVAL_PER_PART, TE_EVAL_PER_PART, err, errsz);
    int rc = w ? 0 : -1;
    for (int part = 0; w && part < 2 && rc == 0; part++) {
        kn_shard_writer_reset(w);
        for (int i = 0; i < TE_EVAL_PER_PART && rc == 0; i++) {
            float x[TE_DIM];
            int c = te_example(x);
            uint8_t key[32] = {0};
            key[0] = (uint8_t)part;
            key[1] = (uint8_t)i;
            if (kn_shard_writer_add(w, x, c, 0, key) != KN_OK) {
                snprintf(err, errsz, "adding example %d to partition %d's shard failed", i, part);
                rc = -1;
            }
        }
        if (rc != 0) break;
        const void *buf;
        size_t len;
        kn_shard_writer_finish(w, &buf, &len);
        rc = kn_kafka_produce(p, topic, part, "k", 1, buf, len, NULL, 0, NULL);
    }
    if (kn_kafka_producer_flush(p, 15000) != 0) rc = -1;
    kn_shard_writer_destroy(w);
    kn_kafka_producer_destroy(p, 5000);
    return rc;
}

/* An MLP (TE_DIM, 32, TE_CLASSES) initialised from seed, trained with Adam
 * (lr 0.01) for steps batches of 64 fresh examples (0: untrained), saved to
 * path. *loss (when not NULL): the last batch's training loss. */
static TE_UNUSED int te_save_mlp(const char *path, uint64_t seed, int steps, float *loss, char *err,
                                 size_t errsz)
{
    json_t *spec = json_pack("{s:s,s:[i,i,i],s:s}", "type", "mlp", "sizes", TE_DIM, 32, TE_CLASSES,
                             "activation", "relu");
    kn_model *m = NULL;
    int rc = kn_model_new(spec, seed, 64, NULL, &m, err, errsz);
    json_decref(spec);
    if (rc != KN_OK) return rc;
    kn_optim_config oc;
    kn_optim_config_default(&oc, KN_OPT_ADAM);
    oc.lr = 0.01f;
    kn_model_set_optim(m, &oc);
    kn_model_set_training(m, 1);
    float x[64 * TE_DIM], last = 0;
    int y[64];
    for (int step = 0; step < steps && rc == KN_OK; step++) {
        for (int i = 0; i < 64; i++)
            y[i] = te_example(x + i * TE_DIM);
        kn_batch b = {.B = 64, .x = x, .labels = y};
        kn_model_zero_grad(m);
        rc = kn_model_forward(m, &b, &last, err, errsz);
        if (rc == KN_OK) rc = kn_model_backward(m);
        if (rc == KN_OK) rc = kn_model_step(m, NULL, NULL);
    }
    if (loss) *loss = last;
    if (rc == KN_OK) rc = kn_model_save_file(m, NULL, path, err, errsz);
    kn_model_destroy(m);
    return rc;
}

#endif
