/* test_nn_models.c: finite-difference gradient checks of every model type
 * (MLP relu/tanh with dropout, linear regression, CNN max/avg pooling, GPT,
 * Transformer classifier mean/CLS) through the public model API, plus spec
 * validation, batch-size limits, inference and seeded generation.
 * The numeric gradient of the float mean loss is a central difference with
 * h = 1e-2 for smooth MLP/CNN, h = 1e-3 for ReLU/max-pool models (kinks) and
 * transformers (layernorm of a small residual stream is strongly curved); up to 6 elements per
 * parameter tensor. Pass: |num - ana| <= 5e-4 + 5e-2 * |ana|. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nn/model.h"
#include "nn/model_int.h" /* white box: pin the dropout stream between evaluations */
#include "nn/rng.h"

static double worst;

static float loss_of(kn_model *m, const kn_batch *b, uint64_t fwd)
{
    float loss;
    char err[256];
    m->fwd_count = fwd; /* same dropout mask for every evaluation */
    int rc = kn_model_forward(m, b, &loss, err, sizeof(err));
    if (rc) fail_msg("forward: %s", err);
    return loss;
}

static void gradcheck(kn_model *m, const kn_batch *b, double h, const char *what)
{
    kn_model_zero_grad(m);
    loss_of(m, b, 7);
    assert_int_equal(kn_model_backward(m), KN_OK);
    const kn_tensor_set *P = kn_model_params(m), *G = kn_model_grads(m);
    for (int t = 0; t < P->n; t++) {
        const kn_tensor *tt = &P->t[t];
        size_t stride = tt->numel > 6 ? tt->numel / 6 : 1;
        for (size_t e = 0; e < tt->numel; e += stride) {
            float *x = P->data + tt->offset + e;
            float g = G->data[tt->offset + e];
            float save = *x, xp = (float)(save + h), xm = (float)(save - h);
            *x = xp;
            double lp = loss_of(m, b, 7);
            *x = xm;
            double lm = loss_of(m, b, 7);
            *x = save;
            double num = (lp - lm) / ((double)xp - (double)xm);
            double tol = 5e-4 + 5e-2 * fabs(g), err = fabs(num - g);
            if (err / tol > worst) worst = err / tol;
            if (err > tol)
                fail_msg("%s: %s[%zu] numeric %.6g analytic %.6g", what, tt->name, e, num,
                         (double)g);
        }
    }
}

static kn_model *make(const char *spec_json, int max_b)
{
    json_error_t je;
    json_t *spec = json_loads(spec_json, 0, &je);
    assert_non_null(spec);
    kn_model *m = NULL;
    char err[256] = "";
    int rc = kn_model_new(spec, 1234, max_b, NULL, &m, err, sizeof(err));
    json_decref(spec);
    if (rc) fail_msg("kn_model_new: %s", err);
    return m;
}

static float *randv(kn_rng *r, size_t n, float s)
{
    float *v = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++)
        v[i] = s * (2.0f * kn_rng_uniform(r) - 1.0f);
    return v;
}

static void test_mlp(void **state)
{
    (void)state;
    kn_rng r;
    kn_rng_init(&r, 1);
    float *x = randv(&r, 4 * 6, 1.0f);
    int labels[4] = {0, 2, 1, 2};
    kn_batch b = {.B = 4, .x = x, .labels = labels};
    kn_model *m = make("{\"type\":\"mlp\",\"sizes\":[6,5,4,3],\"activation\":\"tanh\","
                       "\"dropout\":0.3}",
                       8);
    assert_int_equal(kn_model_num_params(m), 6 * 5 + 5 + 5 * 4 + 4 + 4 * 3 + 3);
    kn_model_set_training(m, 1);
    gradcheck(m, &b, 1e-2, "mlp tanh dropout");
    kn_model_destroy(m);
    m = make("{\"type\":\"mlp\",\"sizes\":[6,8,3],\"activation\":\"relu\"}", 8);
    gradcheck(m, &b, 1e-3, "mlp relu");
    kn_model_destroy(m);
    m = make("{\"type\":\"mlp\",\"sizes\":[6,5,3],\"activation\":\"sigmoid\"}", 8);
    gradcheck(m, &b, 1e-2, "mlp sigmoid");
    kn_model_destroy(m);
    m = make("{\"type\":\"mlp\",\"sizes\":[6,5,3],\"activation\":\"gelu\",\"loss\":\"mse\"}", 8);
    float *y = randv(&r, 12, 1.0f);
    kn_batch by = {.B = 4, .x = x, .y = y};
    gradcheck(m, &by, 1e-2, "mlp gelu mse");
    kn_model_destroy(m);
    free(x);
    free(y);
}

static void test_linreg(void **state)
{
    (void)state;
    kn_rng r;
    kn_rng_init(&r, 2);
    float *x = randv(&r, 5 * 3, 1.0f), *y = randv(&r, 5 * 2, 1.0f);
    kn_batch b = {.B = 5, .x = x, .y = y};
    kn_model *m = make("{\"type\":\"linreg\",\"in\":3,\"out\":2}", 5);
    gradcheck(m, &b, 1e-2, "linreg");
    /* MSE by hand for one forward */
    float loss, w[6], bias[2];
    assert_int_equal(kn_model_get_tensor(m, "layers.0.weight", w, 6), KN_OK);
    assert_int_equal(kn_model_get_tensor(m, "layers.0.bias", bias, 2), KN_OK);
    assert_int_equal(kn_model_forward(m, &b, &loss, NULL, 0), KN_OK);
    double ref = 0;
    for (int n = 0; n < 5; n++)
        for (int o = 0; o < 2; o++) {
            double p = bias[o];
            for (int i = 0; i < 3; i++)
                p += (double)w[o * 3 + i] * x[n * 3 + i];
            ref += (p - y[n * 2 + o]) * (p - y[n * 2 + o]);
        }
    assert_float_equal(loss, ref / 10.0, 1e-5);
    /* linear regression learns y = 2x - 1 with SGD */
    kn_model_destroy(m);
    m = make("{\"type\":\"linreg\",\"in\":1,\"out\":1}", 16);
    kn_optim_config oc;
    kn_optim_config_default(&oc, KN_OPT_SGD);
    oc.lr = 0.1f;
    oc.momentum = 0.9f;
    assert_int_equal(kn_model_set_optim(m, &oc), KN_OK);
    float xs[16], ys[16];
    for (int i = 0; i < 16; i++)
        xs[i] = (float)i / 8.0f - 1.0f, ys[i] = 2.0f * xs[i] - 1.0f;
    kn_batch lb = {.B = 16, .x = xs, .y = ys};
    for (int it = 0; it < 300; it++) {
        kn_model_zero_grad(m);
        assert_int_equal(kn_model_forward(m, &lb, &loss, NULL, 0), KN_OK);
        kn_model_backward(m);
        kn_model_step(m, NULL, NULL);
    }
    assert_true(loss < 1e-6);
    kn_model_get_tensor(m, "layers.0.weight", w, 1);
    assert_float_equal(w[0], 2.0f, 1e-3);
    kn_model_destroy(m);
    free(x);
    free(y);
}

static void test_cnn(void **state)
{
    (void)state;
    kn_rng r;
    kn_rng_init(&r, 3);
    float *x = randv(&r, 3 * 2 * 8 * 8, 1.0f);
    int labels[3] = {4, 0, 2};
    kn_batch b = {.B = 3, .x = x, .labels = labels};
    kn_model *m = make("{\"type\":\"cnn\",\"input\":[2,8,8],\"convs\":[{\"out\":3,\"k\":3,"
                       "\"pad\":1},{\"out\":4,\"k\":3,\"pad\":1}],\"fc\":[8],\"classes\":5,"
                       "\"activation\":\"tanh\",\"pool\":\"avg\"}",
                       4);
    gradcheck(m, &b, 1e-2, "cnn tanh avgpool");
    kn_model_destroy(m);
    m = make("{\"type\":\"cnn\",\"input\":[2,8,8],\"convs\":[{\"out\":3,\"k\":5,\"pad\":2},"
             "{\"out\":4,\"k\":3,\"stride\":2,\"pool\":0}],\"fc\":[6],\"classes\":5}",
             4);
    gradcheck(m, &b, 1e-3, "cnn relu maxpool");
    kn_model_destroy(m);
    free(x);
}

static void test_gpt(void **state)
{
    (void)state;
    kn_rng r;
    kn_rng_init(&r, 4);
    int tokens[12], labels[12];
    for (int i = 0; i < 12; i++)
        tokens[i] = (int)(kn_rng_u64(&r) % 37);
    for (int i = 0; i < 12; i++)
        labels[i] = i == 3 ? -1 : (int)(kn_rng_u64(&r) % 37);
    kn_model *m = make("{\"type\":\"gpt\",\"n_layer\":2,\"n_head\":2,\"n_embd\":8,"
                       "\"block_size\":8,\"vocab_size\":37}",
                       2);
    assert_int_equal(kn_model_num_outputs(m), 37);
    /* padded to 64 rows of wte */
    const kn_tensor_set *P = kn_model_params(m);
    assert_int_equal(P->t[kn_tensor_find(P, "wte.weight")].shape[0], 64);
    kn_batch b = {.B = 2, .T = 6, .tokens = tokens, .labels = labels};
    gradcheck(m, &b, 1e-3, "gpt");
    /* causality: changing a later token leaves earlier logits unchanged */
    float l1[6 * 37], l2[6 * 37];
    kn_batch bi = {.B = 1, .T = 6, .tokens = tokens};
    assert_int_equal(kn_model_forward(m, &bi, NULL, NULL, 0), KN_OK);
    kn_model_logits(m, l1, 6 * 37);
    int t2[6];
    memcpy(t2, tokens, sizeof(t2));
    t2[5] = (t2[5] + 1) % 37;
    bi.tokens = t2;
    kn_model_forward(m, &bi, NULL, NULL, 0);
    kn_model_logits(m, l2, 6 * 37);
    assert_memory_equal(l1, l2, 5 * 37 * sizeof(float));
    /* generation: greedy is deterministic; sampling is seeded */
    int out1[10], out2[10], out3[10];
    kn_sample_config greedy = {0}, samp = {.temperature = 1.0f, .top_k = 5, .seed = 9};
    assert_int_equal(kn_model_generate(m, tokens, 3, 7, &greedy, out1, NULL, 0), KN_OK);
    assert_int_equal(kn_model_generate(m, tokens, 3, 7, &greedy, out2, NULL, 0), KN_OK);
    assert_memory_equal(out1, out2, sizeof(out1));
    assert_int_equal(kn_model_generate(m, tokens, 3, 7, &samp, out2, NULL, 0), KN_OK);
    assert_int_equal(kn_model_generate(m, tokens, 3, 7, &samp, out3, NULL, 0), KN_OK);
    assert_memory_equal(out2, out3, sizeof(out2));
    for (int i = 0; i < 10; i++)
        assert_in_range(out2[i], 0, 36);
    /* greedy token = argmax of the last position's logits */
    kn_batch bg = {.B = 1, .T = 3, .tokens = tokens};
    kn_model_forward(m, &bg, NULL, NULL, 0);
    int pred[3];
    kn_model_predict(m, pred, 3);
    assert_int_equal(out1[3], pred[2]);
    /* top_k = 1 sampling equals greedy */
    kn_sample_config k1 = {.temperature = 0.8f, .top_k = 1, .seed = 3};
    kn_model_generate(m, tokens, 3, 7, &k1, out3, NULL, 0);
    assert_memory_equal(out1, out3, sizeof(out1));
    /* prompts longer than block_size slide the window: each greedy token is
     * the argmax of a plain forward over the last block_size (8) tokens */
    int longp[20];
    assert_int_equal(kn_model_generate(m, tokens, 12, 8, &greedy, longp, NULL, 0), KN_OK);
    assert_memory_equal(longp, tokens, 12 * sizeof(int));
    for (int n = 12; n < 20; n++) {
        kn_batch bw = {.B = 1, .T = 8, .tokens = longp + n - 8};
        assert_int_equal(kn_model_forward(m, &bw, NULL, NULL, 0), KN_OK);
        int pw[8];
        assert_int_equal(kn_model_predict(m, pw, 8), KN_OK);
        if (longp[n] != pw[7]) fail_msg("token %d: generated %d, reference %d", n, longp[n], pw[7]);
    }
    kn_model_destroy(m);
}

static void test_txtcls(void **state)
{
    (void)state;
    kn_rng r;
    kn_rng_init(&r, 5);
    int tokens[15], labels[3] = {1, 0, 2};
    for (int i = 0; i < 15; i++)
        tokens[i] = (int)(kn_rng_u64(&r) % 20);
    kn_batch b = {.B = 3, .T = 5, .tokens = tokens, .labels = labels};
    kn_model *m = make("{\"type\":\"txtcls\",\"n_layer\":1,\"n_head\":2,\"n_embd\":8,"
                       "\"block_size\":6,\"vocab_size\":20,\"classes\":3}",
                       3);
    gradcheck(m, &b, 1e-3, "txtcls mean");
    kn_model_destroy(m);
    m = make("{\"type\":\"txtcls\",\"n_layer\":2,\"n_head\":1,\"n_embd\":4,\"block_size\":6,"
             "\"vocab_size\":20,\"classes\":3,\"pool\":\"cls\",\"causal\":true}",
             3);
    gradcheck(m, &b, 1e-3, "txtcls cls causal");
    int pred[3];
    assert_int_equal(kn_model_predict(m, pred, 3), KN_OK);
    kn_model_destroy(m);
}

static void test_spec_errors(void **state)
{
    (void)state;
    const char *bad[] = {
        "{\"type\":\"mlp\",\"sizes\":[3]}",
        "{\"type\":\"mlp\",\"sizes\":[3,0]}",
        "{\"type\":\"mlp\",\"sizes\":[3,2],\"activation\":\"swish\"}",
        "{\"type\":\"cnn\",\"input\":[1,4,4],\"convs\":[{\"out\":2,\"k\":9}],\"classes\":2}",
        "{\"type\":\"gpt\",\"n_embd\":10,\"n_head\":3}",
        "{\"type\":\"gpt\",\"vocab_size\":100,\"padded_vocab_size\":50}",
        "{\"type\":\"resnet\"}",
        "[]",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        json_t *s = json_loads(bad[i], 0, NULL);
        kn_model *m = (kn_model *)1;
        char err[256] = "";
        assert_int_not_equal(kn_model_new(s, 1, 4, NULL, &m, err, sizeof(err)), KN_OK);
        assert_null(m);
        assert_true(strlen(err) > 0);
        json_decref(s);
    }
    /* batch over the allocated size is refused, not reallocated */
    kn_model *m = make("{\"type\":\"mlp\",\"sizes\":[2,2]}", 4);
    float x[10] = {0};
    int lab[5] = {0, 1, 0, 1, 0};
    kn_batch b = {.B = 5, .x = x, .labels = lab};
    char err[256];
    assert_int_equal(kn_model_forward(m, &b, NULL, err, sizeof(err)), KN_EINVAL);
    b.B = 4;
    lab[0] = 2; /* class out of range */
    assert_int_equal(kn_model_forward(m, &b, NULL, err, sizeof(err)), KN_EINVAL);
    assert_int_equal(kn_model_backward(m), KN_EINVAL);
    kn_model_destroy(m);
    m = make("{\"type\":\"gpt\",\"n_layer\":1,\"n_head\":1,\"n_embd\":4,\"block_size\":4,"
             "\"vocab_size\":10}",
             1);
    int tok[5] = {1, 2, 3, 4, 5};
    kn_batch g = {.B = 1, .T = 5, .tokens = tok};
    assert_int_equal(kn_model_forward(m, &g, NULL, err, sizeof(err)), KN_EINVAL); /* T > block */
    g.T = 4;
    tok[1] = 10;
    assert_int_equal(kn_model_forward(m, &g, NULL, err, sizeof(err)), KN_EINVAL); /* id >= V */
    kn_model_destroy(m);
}

/* Training reduces the loss: MLP and CNN on a learnable toy problem. */
static void test_training_converges(void **state)
{
    (void)state;
    kn_model *m = make("{\"type\":\"cnn\",\"input\":[1,8,8],\"convs\":[{\"out\":4,\"k\":3,"
                       "\"pad\":1}],\"fc\":[16],\"classes\":2}",
                       16);
    kn_optim_config oc;
    kn_optim_config_default(&oc, KN_OPT_ADAMW);
    oc.lr = 1e-2f;
    kn_model_set_optim(m, &oc);
    float x[16 * 64];
    int lab[16];
    kn_rng r;
    kn_rng_init(&r, 6);
    for (int n = 0; n < 16; n++) { /* class = bright left half vs bright right half */
        lab[n] = n & 1;
        for (int i = 0; i < 64; i++)
            x[n * 64 + i] = 0.3f * kn_rng_uniform(&r) + (((i % 8) < 4) == lab[n] ? 1.0f : 0.0f);
    }
    kn_batch b = {.B = 16, .x = x, .labels = lab};
    float first = 0, loss = 0;
    for (int it = 0; it < 40; it++) {
        kn_model_zero_grad(m);
        kn_model_forward(m, &b, &loss, NULL, 0);
        if (!it) first = loss;
        kn_model_backward(m);
        kn_model_step(m, NULL, NULL);
    }
    assert_true(loss < 0.1f * first);
    int pred[16];
    kn_model_forward(m, &b, NULL, NULL, 0);
    kn_model_predict(m, pred, 16);
    assert_memory_equal(pred, lab, sizeof(lab));
    kn_model_destroy(m);
}

static int report(void **state)
{
    (void)state;
    printf("# worst |num - ana| / tol over all model checks: %.3f\n", worst);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mlp),
        cmocka_unit_test(test_linreg),
        cmocka_unit_test(test_cnn),
        cmocka_unit_test(test_gpt),
        cmocka_unit_test(test_txtcls),
        cmocka_unit_test(test_spec_errors),
        cmocka_unit_test(test_training_converges),
    };
    return cmocka_run_group_tests(tests, NULL, report);
}
