/* test_nn_batchnorm.c: batch normalisation and label smoothing.
 *  - the CPU ops against a numpy reference (tests/nn/bn_fixture.json, written
 *    by tests/nn/make_bn_fixture.py: PyTorch's BatchNorm2d and
 *    CrossEntropyLoss(label_smoothing) formulas in float64);
 *  - a model with "bn": train mode moves the running statistics, eval mode
 *    uses them and leaves them alone, a finite-difference check of the whole
 *    model's loss against its backward pass in train mode;
 *  - checkpoints: the running statistics round-trip, a loaded model answers
 *    bit-identically and continues training bit-identically (the CPU side of
 *    "a checkpoint written on one backend continues on the other": the load
 *    goes to kn_backend_pick("auto"), the CUDA backend on a GPU machine with
 *    tests/gpu/run checking the same within tolerance);
 *  - specs: "bn" and "label_smoothing" are validated and recorded only when
 *    given (a spec without them normalises as before). */
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
#include "nn/rng.h"
#include "near.h"

static json_t *fixture;

static float *fvec(const json_t *o, const char *key, size_t n)
{
    const json_t *a = json_object_get(o, key);
    assert_non_null(a);
    assert_int_equal(json_array_size(a), n);
    float *v = calloc(n, sizeof(float));
    for (size_t i = 0; i < n; i++)
        v[i] = (float)json_number_value(json_array_get(a, i));
    return v;
}

static void assert_vec_near(const float *got, const json_t *o, const char *key, size_t n,
                            double atol, double rtol)
{
    float *want = fvec(o, key, n);
    for (size_t i = 0; i < n; i++)
        if (!(fabs((double)got[i] - want[i]) <= atol + rtol * fabs(want[i])))
            fail_msg("%s[%zu] = %.9g, numpy %.9g", key, i, (double)got[i], (double)want[i]);
    free(want);
}

static void test_bn_ops_fixture(void **state)
{
    (void)state;
    const kn_backend *be = kn_backend_cpu();
    const json_t *f = json_object_get(fixture, "bn");
    const int B = (int)json_integer_value(json_object_get(f, "B")),
              C = (int)json_integer_value(json_object_get(f, "C")),
              HW = (int)json_integer_value(json_object_get(f, "HW"));
    const size_t n = (size_t)B * C * HW;
    const float mom = (float)json_number_value(json_object_get(f, "momentum")),
                eps = (float)json_number_value(json_object_get(f, "eps"));
    float *x = fvec(f, "x", n), *w = fvec(f, "w", C), *b = fvec(f, "b", C),
          *rm = fvec(f, "run_mean", C), *rv = fvec(f, "run_var", C), *dout = fvec(f, "dout", n);
    float *out = calloc(n, sizeof(float)), *dx = calloc(n, sizeof(float)),
          *dw = calloc(C, sizeof(float)), *db = calloc(C, sizeof(float)),
          *mean = calloc(C, sizeof(float)), *rstd = calloc(C, sizeof(float));
    const json_t *t = json_object_get(f, "train"), *e = json_object_get(f, "eval");

    /* eval first: the running statistics as given, left unchanged */
    be->batchnorm_fwd(out, mean, rstd, rm, rv, x, w, b, B, C, HW, mom, eps, 0);
    assert_vec_near(out, e, "out", n, 1e-5, 1e-5);
    assert_vec_near(rm, f, "run_mean", C, 0, 0);
    assert_vec_near(rv, f, "run_var", C, 0, 0);
    be->batchnorm_bwd(dx, dw, db, dout, x, w, mean, rstd, B, C, HW, 0);
    assert_vec_near(dx, e, "dx", n, 1e-5, 1e-5);

    /* train: batch statistics, running ones moved by momentum */
    memset(dx, 0, n * sizeof(float));
    memset(dw, 0, C * sizeof(float));
    memset(db, 0, C * sizeof(float));
    be->batchnorm_fwd(out, mean, rstd, rm, rv, x, w, b, B, C, HW, mom, eps, 1);
    assert_vec_near(out, t, "out", n, 1e-5, 1e-5);
    assert_vec_near(mean, t, "mean", C, 1e-6, 1e-6);
    assert_vec_near(rstd, t, "rstd", C, 1e-6, 1e-5);
    assert_vec_near(rm, t, "run_mean", C, 1e-6, 1e-6);
    assert_vec_near(rv, t, "run_var", C, 1e-6, 1e-5);
    be->batchnorm_bwd(dx, dw, db, dout, x, w, mean, rstd, B, C, HW, 1);
    assert_vec_near(dx, t, "dx", n, 1e-5, 1e-4);
    assert_vec_near(dw, t, "dw", C, 1e-5, 1e-5);
    assert_vec_near(db, t, "db", C, 1e-5, 1e-5);
    /* backward accumulates (+=) */
    be->batchnorm_bwd(dx, dw, db, dout, x, w, mean, rstd, B, C, HW, 1);
    for (int c = 0; c < C; c++)
        dw[c] *= 0.5f, db[c] *= 0.5f;
    assert_vec_near(dw, t, "dw", C, 1e-5, 1e-5);
    assert_vec_near(db, t, "db", C, 1e-5, 1e-5);
    free(x), free(w), free(b), free(rm), free(rv), free(dout);
    free(out), free(dx), free(dw), free(db), free(mean), free(rstd);
}

static void test_smoothing_fixture(void **state)
{
    (void)state;
    const kn_backend *be = kn_backend_cpu();
    const json_t *f = json_object_get(fixture, "smoothing");
    const int N = (int)json_integer_value(json_object_get(f, "N")),
              V = (int)json_integer_value(json_object_get(f, "V"));
    const float s = (float)json_number_value(json_object_get(f, "s"));
    float *logits = fvec(f, "logits", (size_t)N * V);
    int targets[16], valid = 0;
    for (int i = 0; i < N; i++) {
        targets[i] = (int)json_integer_value(json_array_get(json_object_get(f, "targets"), i));
        valid += targets[i] >= 0;
    }
    float losses[16], lse[16], *dl = calloc((size_t)N * V, sizeof(float));
    be->xent_fwd(losses, lse, logits, targets, N, V, V);
    be->xent_smooth_fwd(losses, logits, lse, targets, s, N, V, V);
    assert_vec_near(losses, f, "losses", N, 1e-5, 1e-5);
    be->xent_bwd(dl, logits, lse, targets, 1.0f / valid, N, V, V);
    be->xent_smooth_bwd(dl, targets, s / valid, N, V, V);
    assert_vec_near(dl, f, "dlogits", (size_t)N * V, 1e-6, 1e-5);

    /* the same through a model: a linear "mlp" whose logits are the fixture's */
    char spec_s[256], err[256];
    snprintf(spec_s, sizeof(spec_s), "{\"type\":\"mlp\",\"sizes\":[%d,%d],\"label_smoothing\":%g}",
             V, V, (double)s);
    json_t *spec = json_loads(spec_s, 0, NULL);
    kn_model *m;
    assert_int_equal(kn_model_new(spec, 1, N, NULL, &m, err, sizeof(err)), KN_OK);
    float *eye = calloc((size_t)V * V, sizeof(float)), *zero = calloc(V, sizeof(float));
    for (int i = 0; i < V; i++)
        eye[i * V + i] = 1.0f;
    assert_int_equal(kn_model_set_tensor(m, "layers.0.weight", eye, (size_t)V * V), KN_OK);
    assert_int_equal(kn_model_set_tensor(m, "layers.0.bias", zero, V), KN_OK);
    kn_batch bt = {.B = N, .x = logits, .labels = targets};
    float loss;
    assert_int_equal(kn_model_forward(m, &bt, &loss, err, sizeof(err)), KN_OK);
    assert_near(loss, json_number_value(json_object_get(f, "mean_loss")), 1e-5);
    /* dW = dlogits^T x, with x the logits: check one entry through the model */
    kn_model_zero_grad(m);
    assert_int_equal(kn_model_backward(m), KN_OK);
    const kn_tensor_set *g = kn_model_grads(m);
    float *gw = calloc((size_t)V * V, sizeof(float));
    be->to_host(gw, g->data + g->t[0].offset, (size_t)V * V * sizeof(float));
    float *want = fvec(f, "dlogits", (size_t)N * V);
    for (int o = 0; o < V; o++)
        for (int i = 0; i < V; i++) {
            double acc = 0.0;
            for (int r = 0; r < N; r++)
                acc += (double)want[r * V + o] * logits[r * V + i];
            assert_near(gw[o * V + i], acc, 1e-5);
        }
    free(gw), free(want), free(eye), free(zero), free(logits), free(dl);
    kn_model_destroy(m);
    json_decref(spec);
}

static const char *BN_CNN =
    "{\"type\":\"cnn\",\"input\":[1,8,8],\"convs\":[{\"out\":4,\"k\":3,\"pad\":1,\"bn\":true},"
    "{\"out\":6,\"k\":3,\"pad\":1}],\"fc\":[12],\"bn\":false,\"dropout\":0.0,"
    "\"label_smoothing\":0.1,\"classes\":5}";

static kn_model *new_model(const char *spec_s, int max_b)
{
    char err[256];
    json_t *spec = json_loads(spec_s, 0, NULL);
    assert_non_null(spec);
    kn_model *m = NULL;
    int rc = kn_model_new(spec, 7, max_b, NULL, &m, err, sizeof(err));
    if (rc) fail_msg("%s", err);
    json_decref(spec);
    return m;
}

static void batch_of(kn_rng *rng, int B, int in, float *x, int *labels, int classes)
{
    for (int i = 0; i < B * in; i++)
        x[i] = 2.0f * kn_rng_uniform(rng) - 0.5f;
    for (int i = 0; i < B; i++)
        labels[i] = (int)(kn_rng_uniform(rng) * classes) % classes;
}

static void test_bn_model_modes(void **state)
{
    (void)state;
    kn_model *m = new_model(BN_CNN, 8);
    const kn_tensor_set *bufs = kn_model_buffers(m);
    assert_int_equal(bufs->n, 2); /* one batchnorm: running mean and var */
    float rm[4], rv[4], rm2[4], rv2[4];
    /* conv 0, then its batchnorm as layer 1 */
    assert_int_equal(kn_model_get_tensor(m, "layers.1.running_mean", rm, 4), KN_OK);
    assert_int_equal(kn_model_get_tensor(m, "layers.1.running_var", rv, 4), KN_OK);
    for (int c = 0; c < 4; c++) {
        assert_near(rm[c], 0.0, 0.0);
        assert_near(rv[c], 1.0, 0.0);
    }
    float w[4];
    assert_int_equal(kn_model_get_tensor(m, "layers.1.weight", w, 4), KN_OK);
    assert_near(w[0], 1.0, 0.0);
    const json_t *norm = kn_model_spec(m);
    assert_true(
        json_is_true(json_object_get(json_array_get(json_object_get(norm, "convs"), 0), "bn")));
    assert_null(json_object_get(json_array_get(json_object_get(norm, "convs"), 1), "bn"));

    kn_rng rng;
    kn_rng_init(&rng, 3);
    float x[8 * 64], logits_a[8 * 5], logits_b[8 * 5], logits_c[8 * 5];
    int labels[8];
    batch_of(&rng, 8, 64, x, labels, 5);
    kn_batch b = {.B = 8, .x = x, .labels = labels};
    char err[256];
    /* eval: running statistics used and unchanged; a batch of 1 gives the same rows */
    assert_int_equal(kn_model_forward(m, &b, NULL, err, sizeof(err)), KN_OK);
    kn_model_logits(m, logits_a, sizeof(logits_a) / sizeof(float));
    kn_model_get_tensor(m, "layers.1.running_mean", rm2, 4);
    assert_memory_equal(rm, rm2, sizeof(rm));
    kn_batch one = {.B = 1, .x = x + 3 * 64};
    assert_int_equal(kn_model_forward(m, &one, NULL, err, sizeof(err)), KN_OK);
    kn_model_logits(m, logits_b, 5);
    for (int k = 0; k < 5; k++)
        assert_near(logits_b[k], logits_a[3 * 5 + k], 1e-5);
    /* train: the batch's statistics; the running ones move by momentum 0.1 */
    kn_model_set_training(m, 1);
    assert_int_equal(kn_model_forward(m, &b, NULL, err, sizeof(err)), KN_OK);
    kn_model_logits(m, logits_b, sizeof(logits_b) / sizeof(float));
    kn_model_get_tensor(m, "layers.1.running_mean", rm2, 4);
    kn_model_get_tensor(m, "layers.1.running_var", rv2, 4);
    int moved = 0, differ = 0;
    for (int c = 0; c < 4; c++)
        moved += rm2[c] != rm[c] && rv2[c] != rv[c];
    for (int k = 0; k < 40; k++)
        differ += fabsf(logits_b[k] - logits_a[k]) > 1e-4f;
    assert_int_equal(moved, 4);
    assert_true(differ > 20);
    /* back to eval: the moved running statistics now change the answer */
    kn_model_set_training(m, 0);
    assert_int_equal(kn_model_forward(m, &b, NULL, err, sizeof(err)), KN_OK);
    kn_model_logits(m, logits_c, sizeof(logits_c) / sizeof(float));
    differ = 0;
    for (int k = 0; k < 40; k++)
        differ += logits_c[k] != logits_a[k];
    assert_true(differ > 20);
    kn_model_destroy(m);
}

/* Finite differences of the model's mean loss (train mode, batchnorm on the
 * batch's statistics, label smoothing) against kn_model_backward, over the
 * batchnorm's weight and bias, the first conv's weights and the fc weights.
 * Average pooling: a max pool's argmax may switch under the step, which a
 * central difference reads as a wrong slope (max pooling is checked in
 * test_nn_layers). */
static void test_bn_model_gradcheck(void **state)
{
    (void)state;
    kn_model *m =
        new_model("{\"type\":\"cnn\",\"input\":[2,6,6],\"bn\":true,"
                  "\"convs\":[{\"out\":3,\"k\":3,\"pad\":1}],\"fc\":[7],"
                  "\"activation\":\"tanh\",\"pool\":\"avg\",\"label_smoothing\":0.2,\"classes\":4}",
                  6);
    kn_rng rng;
    kn_rng_init(&rng, 11);
    float x[6 * 72];
    int labels[6];
    batch_of(&rng, 6, 72, x, labels, 4);
    labels[2] = -1; /* an ignored row */
    kn_batch b = {.B = 6, .x = x, .labels = labels};
    char err[256];
    float loss;
    kn_model_set_training(m, 1);
    kn_model_zero_grad(m);
    assert_int_equal(kn_model_forward(m, &b, &loss, err, sizeof(err)), KN_OK);
    assert_int_equal(kn_model_backward(m), KN_OK);
    const kn_tensor_set *p = kn_model_params(m), *g = kn_model_grads(m);
    /* layers: 0 conv, 1 bn, 2 act, 3 pool, 4 linear, 5 bn, 6 act, 7 linear */
    const char *names[] = {"layers.1.weight", "layers.1.bias", "layers.0.weight",
                           "layers.5.weight", "layers.5.bias", "layers.4.weight"};
    int checked = 0;
    for (size_t k = 0; k < sizeof(names) / sizeof(*names); k++) {
        int i = kn_tensor_find(p, names[k]);
        assert_true(i >= 0);
        const kn_tensor *t = &p->t[i];
        float *pv = calloc(t->numel, sizeof(float)), *gv = calloc(t->numel, sizeof(float));
        memcpy(gv, g->data + t->offset, t->numel * sizeof(float));
        memcpy(pv, p->data + t->offset, t->numel * sizeof(float));
        for (size_t e = 0; e<t->numel; e += t->numel> 20 ? t->numel / 20 : 1) {
            const float save = pv[e], h = 2e-3f;
            float lp, lm;
            pv[e] = save + h;
            kn_model_set_tensor(m, names[k], pv, t->numel);
            kn_model_forward(m, &b, &lp, err, sizeof(err));
            pv[e] = save - h;
            kn_model_set_tensor(m, names[k], pv, t->numel);
            kn_model_forward(m, &b, &lm, err, sizeof(err));
            pv[e] = save;
            kn_model_set_tensor(m, names[k], pv, t->numel);
            double num = ((double)lp - lm) / (2.0 * h);
            if (fabs(num - gv[e]) > 2e-3 + 3e-2 * fabs(gv[e]))
                fail_msg("%s[%zu]: numeric %.6g analytic %.6g", names[k], e, num, (double)gv[e]);
            checked++;
        }
        free(pv), free(gv);
    }
    assert_true(checked > 40);
    kn_model_destroy(m);
}

/* Trains m for n steps on batches drawn from rng. */
static void train_steps(kn_model *m, kn_rng *rng, int n)
{
    float x[8 * 64];
    int labels[8];
    char err[256];
    kn_model_set_training(m, 1);
    for (int s = 0; s < n; s++) {
        batch_of(rng, 8, 64, x, labels, 5);
        kn_batch b = {.B = 8, .x = x, .labels = labels};
        kn_model_zero_grad(m);
        assert_int_equal(kn_model_forward(m, &b, NULL, err, sizeof(err)), KN_OK);
        assert_int_equal(kn_model_backward(m), KN_OK);
        assert_int_equal(kn_model_step(m, NULL, NULL), KN_OK);
    }
}

static void test_bn_checkpoint_continue(void **state)
{
    (void)state;
    kn_model *a = new_model(BN_CNN, 8);
    kn_optim_config oc;
    kn_optim_config_default(&oc, KN_OPT_ADAMW);
    oc.lr = 3e-3f;
    assert_int_equal(kn_model_set_optim(a, &oc), KN_OK);
    kn_rng rng;
    kn_rng_init(&rng, 5);
    train_steps(a, &rng, 4);
    unsigned char *buf;
    size_t len;
    char err[256];
    assert_int_equal(kn_model_save_buffer(a, NULL, &buf, &len, err, sizeof(err)), KN_OK);
    const kn_backend *other = kn_backend_pick("auto");
    assert_non_null(other);
    printf("# continuing on backend %s\n", other->name);
    kn_model *b;
    assert_int_equal(kn_model_load_buffer(buf, len, 8, other, &b, NULL, err, sizeof(err)), KN_OK);
    float ra[4], rb[4];
    kn_model_get_tensor(a, "layers.1.running_var", ra, 4);
    kn_model_get_tensor(b, "layers.1.running_var", rb, 4);
    assert_memory_equal(ra, rb, sizeof(ra));
    assert_true(ra[0] != 1.0f); /* moved by training, so the round trip means something */
    /* continue both from the same batches */
    kn_rng ra_rng = rng, rb_rng = rng;
    train_steps(a, &ra_rng, 3);
    train_steps(b, &rb_rng, 3);
    float xa[8 * 64];
    int la[8];
    batch_of(&ra_rng, 8, 64, xa, la, 5);
    kn_batch bt = {.B = 8, .x = xa};
    float lo_a[40], lo_b[40];
    kn_model_set_training(a, 0);
    kn_model_set_training(b, 0);
    assert_int_equal(kn_model_forward(a, &bt, NULL, err, sizeof(err)), KN_OK);
    assert_int_equal(kn_model_forward(b, &bt, NULL, err, sizeof(err)), KN_OK);
    kn_model_logits(a, lo_a, 40);
    kn_model_logits(b, lo_b, 40);
    if (strcmp(other->name, "cpu") == 0) {
        assert_memory_equal(lo_a, lo_b, sizeof(lo_a)); /* same backend: bit-identical */
        kn_model_get_tensor(a, "layers.1.running_mean", ra, 4);
        kn_model_get_tensor(b, "layers.1.running_mean", rb, 4);
        assert_memory_equal(ra, rb, sizeof(ra));
    } else {
        for (int k = 0; k < 40; k++)
            assert_near(lo_b[k], lo_a[k], 1e-3 + 1e-3 * fabs(lo_a[k]));
    }
    /* a checkpoint that lacks a running statistic is refused, naming it */
    kn_model *c = new_model(BN_CNN, 8);
    unsigned char *buf2;
    size_t len2;
    assert_int_equal(kn_model_save_buffer(c, NULL, &buf2, &len2, err, sizeof(err)), KN_OK);
    char *hit = memmem(buf2, len2, "layers.1.running_var", 20);
    assert_non_null(hit);
    hit[15] = 'X'; /* "layers.1.runninX_var": an unknown tensor now */
    kn_model *d = NULL;
    assert_int_equal(kn_model_load_buffer(buf2, len2, 8, NULL, &d, NULL, err, sizeof(err)),
                     KN_ECORRUPT);
    assert_non_null(strstr(err, "runninX_var"));
    free(buf2);
    kn_model_destroy(c);
    free(buf);
    kn_model_destroy(a);
    kn_model_destroy(b);
}

/* AdamW's decoupled weight decay on a BN CNN: with zero gradients one step
 * scales conv and fc weights by (1 - lr wd) and leaves biases and the
 * batchnorm gains and biases alone. */
static void test_cnn_weight_decay(void **state)
{
    (void)state;
    kn_model *m = new_model(BN_CNN, 2);
    kn_optim_config oc;
    kn_optim_config_default(&oc, KN_OPT_ADAMW);
    oc.lr = 0.1f;
    oc.weight_decay = 0.5f;
    assert_int_equal(kn_model_set_optim(m, &oc), KN_OK);
    const kn_tensor_set *p = kn_model_params(m);
    float *before = malloc(p->numel * sizeof(float));
    memcpy(before, p->data, p->numel * sizeof(float));
    kn_model_zero_grad(m);
    assert_int_equal(kn_model_step(m, NULL, NULL), KN_OK);
    int decayed = 0, kept = 0;
    for (int i = 0; i < p->n; i++) {
        const kn_tensor *t = &p->t[i];
        const int is_weight = t->ndim >= 2; /* conv (OC, C, K, K) and linear (out, in) */
        assert_int_equal(t->decay, is_weight);
        for (size_t e = 0; e < t->numel; e++) {
            float b = before[t->offset + e], a = p->data[t->offset + e];
            if (is_weight)
                assert_near(a, b * (1.0f - 0.1f * 0.5f), 1e-7);
            else
                assert_near(a, b, 0.0);
        }
        decayed += is_weight;
        kept += !is_weight;
    }
    assert_int_equal(decayed, 4); /* 2 convs, fc, classifier */
    assert_int_equal(kept, 6);    /* their biases, the batchnorm's weight and bias */
    free(before);
    kn_model_destroy(m);
}

static void test_specs(void **state)
{
    (void)state;
    char err[256];
    const char *bad[] = {
        "{\"type\":\"cnn\",\"input\":[1,8,8],\"convs\":[{\"out\":4,\"bn\":1}],\"classes\":3}",
        "{\"type\":\"mlp\",\"sizes\":[4,3],\"bn\":\"yes\"}",
        "{\"type\":\"mlp\",\"sizes\":[4,3],\"label_smoothing\":1.0}",
        "{\"type\":\"mlp\",\"sizes\":[4,3],\"label_smoothing\":-0.1}",
        "{\"type\":\"mlp\",\"sizes\":[4,3],\"loss\":\"mse\",\"label_smoothing\":0.1}",
        "{\"type\":\"cnn\",\"input\":[1,8,8],\"convs\":[{\"out\":4,\"batchnorm\":true}]}",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(*bad); i++) {
        json_t *s = json_loads(bad[i], 0, NULL);
        assert_non_null(s);
        if (kn_model_spec_check(s, err, sizeof(err)) != KN_EINVAL)
            fail_msg("spec %zu accepted: %s", i, bad[i]);
        json_decref(s);
    }
    /* without the keys, the normalised spec carries neither: old specs (and
     * the checkpoints written from them) are unchanged */
    kn_model *m = new_model("{\"type\":\"mlp\",\"sizes\":[4,3]}", 2);
    assert_null(json_object_get(kn_model_spec(m), "bn"));
    assert_null(json_object_get(kn_model_spec(m), "label_smoothing"));
    assert_int_equal(kn_model_buffers(m)->n, 0);
    kn_model_destroy(m);
    /* mlp "bn": one batchnorm after each hidden linear layer */
    m = new_model("{\"type\":\"mlp\",\"sizes\":[4,5,6,3],\"bn\":true}", 2);
    assert_int_equal(kn_model_buffers(m)->n, 4);
    float v[6];
    assert_int_equal(kn_model_get_tensor(m, "layers.1.running_mean", v, 5), KN_OK);
    assert_int_equal(kn_model_get_tensor(m, "layers.4.running_var", v, 6), KN_OK);
    kn_model_destroy(m);
}

static int setup(void **state)
{
    (void)state;
    json_error_t je;
    fixture = json_load_file(KILN_SOURCE_DIR "/tests/nn/bn_fixture.json", 0, &je);
    if (!fixture) {
        fprintf(stderr, "bn_fixture.json: %s\n", je.text);
        return -1;
    }
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    json_decref(fixture);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bn_ops_fixture),
        cmocka_unit_test(test_smoothing_fixture),
        cmocka_unit_test(test_bn_model_modes),
        cmocka_unit_test(test_bn_model_gradcheck),
        cmocka_unit_test(test_bn_checkpoint_continue),
        cmocka_unit_test(test_cnn_weight_decay),
        cmocka_unit_test(test_specs),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
