/* test_nn_optim.c: optimizer updates against values computed by hand (and a
 * double-precision reference over many steps), weight-decay masking, global
 * norm clipping, LR schedules and the optimizer JSON config. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <string.h>

#include "core/kn.h"
#include "nn/optim.h"
#include "near.h"

/* params: "w" (1, 2) with weight decay, "b" (1) without. */
typedef struct {
    kn_tensor_set p, g;
} pg;

static void pg_init(pg *s, float w0, float w1, float b0)
{
    const kn_backend *be = kn_backend_cpu();
    kn_tensor_set_init(&s->p);
    int sh[2] = {1, 2};
    assert_int_equal(kn_tensor_add(&s->p, "w", 2, sh, 1), 0);
    assert_int_equal(kn_tensor_add(&s->p, "b", 1, sh, 0), 1);
    assert_int_equal(kn_tensor_set_alloc(&s->p, be), KN_OK);
    assert_int_equal(kn_tensor_set_clone_layout(&s->g, &s->p), KN_OK);
    assert_int_equal(kn_tensor_set_alloc(&s->g, be), KN_OK);
    float *w = kn_tensor_ptr(&s->p, 0), *b = kn_tensor_ptr(&s->p, 1);
    w[0] = w0, w[1] = w1, b[0] = b0;
}

static void pg_grad(pg *s, float g0, float g1, float gb)
{
    float *w = kn_tensor_ptr(&s->g, 0), *b = kn_tensor_ptr(&s->g, 1);
    w[0] = g0, w[1] = g1, b[0] = gb;
}

static void pg_free(pg *s)
{
    kn_tensor_set_free(&s->p);
    kn_tensor_set_free(&s->g);
}

#define W(s, i) (kn_tensor_ptr(&(s).p, 0)[i])
#define B0(s)   (kn_tensor_ptr(&(s).p, 1)[0])

static void test_sgd_momentum(void **state)
{
    (void)state;
    pg s;
    pg_init(&s, 1.0f, -2.0f, 0.5f);
    kn_optim_config c;
    kn_optim_config_default(&c, KN_OPT_SGD);
    c.lr = 0.1f;
    c.momentum = 0.9f;
    kn_optim *o = kn_optim_new(&c, &s.p, kn_backend_cpu());
    pg_grad(&s, 0.5f, 1.0f, -1.0f);
    kn_optim_update(o, &s.p, &s.g, NULL, NULL);
    /* buf = g; p -= lr * buf */
    assert_near(W(s, 0), 0.95f, 1e-7);
    assert_float_equal(W(s, 1), -2.1f, 1e-6);
    assert_near(B0(s), 0.6f, 1e-7);
    kn_optim_update(o, &s.p, &s.g, NULL, NULL);
    /* buf = 0.9 * 0.5 + 0.5 = 0.95; p = 0.95 - 0.095 */
    assert_float_equal(W(s, 0), 0.855f, 1e-6);
    assert_float_equal(B0(s), 0.79f, 1e-6);
    assert_int_equal(o->step, 2);
    kn_optim_destroy(o);
    pg_free(&s);
}

static void test_adam_adamw(void **state)
{
    (void)state;
    for (int kind = KN_OPT_ADAM; kind <= KN_OPT_ADAMW; kind++) {
        pg s;
        pg_init(&s, 1.0f, -2.0f, 0.5f);
        kn_optim_config c;
        kn_optim_config_default(&c, kind);
        c.lr = 0.1f;
        c.weight_decay = 0.1f;
        c.eps = 1e-8f;
        kn_optim *o = kn_optim_new(&c, &s.p, kn_backend_cpu());
        pg_grad(&s, 0.5f, 1.0f, -1.0f);
        kn_optim_update(o, &s.p, &s.g, NULL, NULL);
        if (kind == KN_OPT_ADAMW) {
            /* first step: mhat/sqrt(vhat) = sign(g); decoupled decay on w only */
            assert_float_equal(W(s, 0), 1.0f * (1 - 0.01f) - 0.1f, 1e-6);
            assert_float_equal(W(s, 1), -2.0f * (1 - 0.01f) - 0.1f, 1e-6);
            assert_float_equal(B0(s), 0.6f, 1e-6);
        } else {
            /* L2: g' = g + wd p = 0.6, 0.8 for w (signs kept); b not decayed */
            assert_float_equal(W(s, 0), 0.9f, 1e-6);
            assert_float_equal(W(s, 1), -2.1f, 1e-6);
            assert_float_equal(B0(s), 0.6f, 1e-6);
        }
        /* 50 more steps against a double-precision reference of the same rule */
        double p = W(s, 0), m = o->m.data[0], v = o->v.data[0];
        for (int t = 2; t <= 51; t++) {
            float gw = 0.3f * sinf((float)t);
            pg_grad(&s, gw, 0.0f, 0.0f);
            kn_optim_update(o, &s.p, &s.g, NULL, NULL);
            double g = gw + (kind == KN_OPT_ADAM ? 0.1 * p : 0.0);
            m = 0.9 * m + 0.1 * g;
            v = 0.999 * v + 0.001 * g * g;
            double mh = m / (1 - pow(0.9, t)), vh = v / (1 - pow(0.999, t));
            if (kind == KN_OPT_ADAMW) p *= 1 - 0.1 * 0.1;
            p -= 0.1 * mh / (sqrt(vh) + 1e-8);
        }
        assert_float_equal(W(s, 0), p, 1e-5);
        kn_optim_destroy(o);
        pg_free(&s);
    }
}

static void test_rmsprop(void **state)
{
    (void)state;
    pg s;
    pg_init(&s, 1.0f, -2.0f, 0.5f);
    kn_optim_config c;
    kn_optim_config_default(&c, KN_OPT_RMSPROP);
    c.lr = 0.01f;
    kn_optim *o = kn_optim_new(&c, &s.p, kn_backend_cpu());
    pg_grad(&s, 0.5f, 1.0f, -1.0f);
    kn_optim_update(o, &s.p, &s.g, NULL, NULL);
    /* v = 0.01 g^2; p -= lr g / (sqrt(v) + eps) = lr * g / (0.1 |g|) = 0.1 sign(g) */
    assert_float_equal(W(s, 0), 0.9f, 1e-5);
    assert_float_equal(W(s, 1), -2.1f, 1e-5);
    assert_float_equal(B0(s), 0.6f, 1e-5);
    kn_optim_update(o, &s.p, &s.g, NULL, NULL);
    /* v = 0.99 * 0.0025 + 0.01 * 0.25 = 0.004975 */
    assert_float_equal(W(s, 0), 0.9f - 0.01f * 0.5f / sqrtf(0.004975f), 1e-5);
    kn_optim_destroy(o);
    pg_free(&s);
}

static void test_clipping(void **state)
{
    (void)state;
    pg s;
    pg_init(&s, 0.0f, 0.0f, 0.0f);
    kn_optim_config c;
    kn_optim_config_default(&c, KN_OPT_SGD);
    c.lr = 1.0f;
    c.grad_clip = 1.0f;
    kn_optim *o = kn_optim_new(&c, &s.p, kn_backend_cpu());
    pg_grad(&s, 3.0f, 0.0f, 4.0f); /* norm 5 */
    float norm, lr;
    kn_optim_update(o, &s.p, &s.g, &norm, &lr);
    assert_float_equal(norm, 5.0f, 1e-6);
    assert_near(lr, 1.0f, 0);
    assert_float_equal(W(s, 0), -0.6f, 1e-6);
    assert_float_equal(B0(s), -0.8f, 1e-6);
    pg_grad(&s, 0.3f, 0.0f, 0.4f); /* under the limit: untouched */
    kn_optim_update(o, &s.p, &s.g, &norm, NULL);
    assert_float_equal(W(s, 0), -0.9f, 1e-6);
    kn_optim_destroy(o);
    pg_free(&s);
}

static void test_schedules(void **state)
{
    (void)state;
    kn_optim_config c;
    kn_optim_config_default(&c, KN_OPT_ADAMW);
    c.lr = 1.0f;
    assert_near(kn_optim_lr(&c, 12345), 1.0f, 0);
    c.schedule = KN_LR_COSINE;
    c.warmup = 10;
    c.total = 110;
    c.min_lr_frac = 0.1f;
    assert_near(kn_optim_lr(&c, 0), 0.1f, 1e-7);
    assert_near(kn_optim_lr(&c, 9), 1.0f, 1e-7);
    assert_near(kn_optim_lr(&c, 10), 1.0f, 1e-7);
    assert_float_equal(kn_optim_lr(&c, 60), 0.55f, 1e-6); /* halfway: min + (max - min) / 2 */
    assert_near(kn_optim_lr(&c, 110), 0.1f, 1e-7);
    assert_near(kn_optim_lr(&c, 5000), 0.1f, 1e-7);
    c.schedule = KN_LR_STEP;
    c.warmup = 0;
    c.step_size = 100;
    c.gamma = 0.5f;
    assert_near(kn_optim_lr(&c, 99), 1.0f, 0);
    assert_near(kn_optim_lr(&c, 100), 0.5f, 0);
    assert_near(kn_optim_lr(&c, 250), 0.25f, 0);
}

static void test_config_json(void **state)
{
    (void)state;
    kn_optim_config c, c2;
    char err[256];
    json_t *j = json_loads("{\"type\":\"adamw\",\"lr\":3e-4,\"betas\":[0.9,0.95],"
                           "\"weight_decay\":0.1,\"grad_clip\":1.0,\"schedule\":{\"type\":"
                           "\"cosine\",\"warmup\":100,\"total\":5000,\"min_lr_frac\":0.1}}",
                           0, NULL);
    assert_int_equal(kn_optim_config_from_json(&c, j, err, sizeof(err)), KN_OK);
    assert_near(c.beta2, 0.95f, 0);
    assert_int_equal(c.schedule, KN_LR_COSINE);
    assert_int_equal(c.total, 5000);
    json_t *back = kn_optim_config_to_json(&c);
    assert_int_equal(kn_optim_config_from_json(&c2, back, err, sizeof(err)), KN_OK);
    assert_memory_equal(&c, &c2, sizeof(c));
    json_decref(back);
    json_decref(j);
    const char *bad[] = {"{\"type\":\"lamb\"}", "{\"type\":\"sgd\",\"lr\":\"x\"}",
                         "{\"type\":\"sgd\",\"lrr\":1}", "{\"type\":\"sgd\",\"betas\":[1]}",
                         "{\"type\":\"sgd\",\"schedule\":{\"type\":\"poly\"}}"};
    for (size_t i = 0; i < KN_ARRAY_LEN(bad); i++) {
        j = json_loads(bad[i], 0, NULL);
        err[0] = 0;
        assert_int_equal(kn_optim_config_from_json(&c, j, err, sizeof(err)), KN_EINVAL);
        assert_true(strlen(err) > 0);
        json_decref(j);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sgd_momentum), cmocka_unit_test(test_adam_adamw),
        cmocka_unit_test(test_rmsprop),      cmocka_unit_test(test_clipping),
        cmocka_unit_test(test_schedules),    cmocka_unit_test(test_config_json),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
