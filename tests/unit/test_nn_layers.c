/* test_nn_layers.c: finite-difference gradient checks of every CPU backend
 * op (forward + backward of each layer and loss). The scalar checked is
 * L = sum_i out_i * r_i (r fixed random), accumulated in double; the numeric
 * gradient is a central difference with step h = 1e-3 using the exact float
 * step taken. Pass: |num - ana| <= 1e-3 + 1e-2 * |ana| for every checked
 * element (all elements of these small shapes, at most 97 per tensor). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nn/backend.h"
#include "nn/rng.h"
#include "near.h"

#define GC_H    1e-3
#define GC_ATOL 1e-3
#define GC_RTOL 1e-2

static const kn_backend *be;
static kn_rng rng;

static float *randv(size_t n, float scale)
{
    float *v = calloc(n ? n : 1, sizeof(float));
    for (size_t i = 0; i < n; i++)
        v[i] = scale * (2.0f * kn_rng_uniform(&rng) - 1.0f);
    return v;
}

static float *zerov(size_t n)
{
    return calloc(n ? n : 1, sizeof(float));
}

/* One op under test: fwd recomputes out from the current inputs. */
typedef struct {
    void (*fwd)(void *ctx);
    void *ctx;
    float *out;
    size_t nout;
    float *r; /* weights of the scalar loss, (nout) */
} gc_op;

static double gc_loss(gc_op *op)
{
    op->fwd(op->ctx);
    double s = 0.0;
    for (size_t i = 0; i < op->nout; i++)
        s += (double)op->out[i] * op->r[i];
    return s;
}

static double max_err_seen;

/* Compares analytic gradient g of x (n) with central differences. */
static void gc_check(gc_op *op, float *x, const float *g, size_t n, const char *what)
{
    size_t stride = n > 97 ? n / 97 : 1;
    for (size_t i = 0; i < n; i += stride) {
        float save = x[i];
        float xp = (float)(save + GC_H), xm = (float)(save - GC_H);
        x[i] = xp;
        double lp = gc_loss(op);
        x[i] = xm;
        double lm = gc_loss(op);
        x[i] = save;
        double num = (lp - lm) / ((double)xp - (double)xm);
        double err = fabs(num - g[i]);
        double tol = GC_ATOL + GC_RTOL * fabs(g[i]);
        if (err / tol > max_err_seen) max_err_seen = err / tol;
        if (err > tol) fail_msg("%s[%zu]: numeric %.6g analytic %.6g", what, i, num, (double)g[i]);
    }
    gc_loss(op); /* restore out */
}

/* ---------------------------------------------------------------- linear */

typedef struct {
    float *out, *inp, *w, *b;
    int N, C, OC;
} mm_ctx;

static void mm_fwd(void *p)
{
    mm_ctx *c = p;
    be->matmul_fwd(c->out, c->inp, c->w, c->b, c->N, c->C, c->OC);
}

static void test_matmul(void **state)
{
    (void)state;
    mm_ctx c = {.N = 5, .C = 7, .OC = 4};
    c.inp = randv(35, 1), c.w = randv(28, 1), c.b = randv(4, 1), c.out = zerov(20);
    float *r = randv(20, 1), *di = zerov(35), *dw = zerov(28), *db = zerov(4);
    gc_op op = {mm_fwd, &c, c.out, 20, r};
    gc_loss(&op);
    be->matmul_bwd(di, dw, db, r, c.inp, c.w, c.N, c.C, c.OC);
    gc_check(&op, c.inp, di, 35, "matmul dinp");
    gc_check(&op, c.w, dw, 28, "matmul dw");
    gc_check(&op, c.b, db, 4, "matmul dbias");
    free(db), free(c.b);
    free(c.inp), free(c.w), free(c.out), free(r), free(di), free(dw);
}

/* ---------------------------------------------------------------- conv2d */

typedef struct {
    float *out, *inp, *w, *b, *scratch;
    kn_conv_shape s;
} conv_ctx;

static void conv_fwd(void *p)
{
    conv_ctx *c = p;
    be->conv2d_fwd(c->out, c->inp, c->w, c->b, c->scratch, &c->s);
}

static void conv_case(int B, int C, int H, int W, int OC, int K, int stride, int pad)
{
    conv_ctx c = {
        .s = {.B = B, .C = C, .H = H, .W = W, .OC = OC, .K = K, .stride = stride, .pad = pad}};
    c.s.OH = (H + 2 * pad - K) / stride + 1;
    c.s.OW = (W + 2 * pad - K) / stride + 1;
    size_t ni = (size_t)B * C * H * W, nw = (size_t)OC * C * K * K;
    size_t no = (size_t)B * OC * c.s.OH * c.s.OW;
    c.inp = randv(ni, 1), c.w = randv(nw, 1), c.b = randv(OC, 1), c.out = zerov(no);
    c.scratch = zerov(be->conv2d_scratch(&c.s));
    float *r = randv(no, 1), *di = zerov(ni), *dw = zerov(nw), *db = zerov(OC);
    gc_op op = {conv_fwd, &c, c.out, no, r};
    gc_loss(&op);
    be->conv2d_bwd(di, dw, db, r, c.inp, c.w, c.scratch, &c.s);
    gc_check(&op, c.inp, di, ni, "conv dinp");
    gc_check(&op, c.w, dw, nw, "conv dw");
    gc_check(&op, c.b, db, OC, "conv dbias");
    free(c.inp), free(c.w), free(c.b), free(c.out), free(c.scratch);
    free(r), free(di), free(dw), free(db);
}

static void test_conv2d(void **state)
{
    (void)state;
    conv_case(2, 3, 6, 5, 4, 3, 1, 1); /* same padding */
    conv_case(2, 2, 7, 7, 3, 3, 2, 0); /* strided, valid */
    conv_case(1, 1, 5, 5, 2, 5, 1, 2); /* Fashion-MNIST style 5x5 pad 2 */
    conv_case(3, 2, 4, 6, 2, 2, 2, 1); /* stride and pad together */
}

/* ---------------------------------------------------------------- pooling */

typedef struct {
    int kind;
    float *out, *inp;
    int *idx;
    kn_pool_shape s;
} pool_ctx;

static void pool_fwd(void *p)
{
    pool_ctx *c = p;
    be->pool2d_fwd(c->kind, c->out, c->idx, c->inp, &c->s);
}

static void test_pool(void **state)
{
    (void)state;
    for (int kind = KN_POOL_MAX; kind <= KN_POOL_AVG; kind++) {
        pool_ctx c = {.kind = kind, .s = {.B = 2, .C = 3, .H = 6, .W = 5, .K = 2, .S = 2}};
        c.s.OH = 3, c.s.OW = 2;
        size_t ni = 2 * 3 * 6 * 5, no = 2 * 3 * 3 * 2;
        c.inp = randv(ni, 1), c.out = zerov(no), c.idx = calloc(no, sizeof(int));
        float *r = randv(no, 1), *di = zerov(ni);
        gc_op op = {pool_fwd, &c, c.out, no, r};
        gc_loss(&op);
        be->pool2d_bwd(kind, di, r, c.idx, &c.s);
        gc_check(&op, c.inp, di, ni, kind == KN_POOL_MAX ? "maxpool dinp" : "avgpool dinp");
        free(c.inp), free(c.out), free(c.idx), free(r), free(di);
    }
}

/* ---------------------------------------------------------------- embeddings */

typedef struct {
    float *out, *wte, *wpe;
    int *ids;
    int B, T, C;
} emb_ctx;

static void emb_fwd(void *p)
{
    emb_ctx *c = p;
    be->embed_fwd(c->out, c->ids, c->wte, c->B * c->T, c->C);
    be->posemb_fwd(c->out, c->wpe, c->B, c->T, c->C);
}

static void test_embedding(void **state)
{
    (void)state;
    emb_ctx c = {.B = 2, .T = 4, .C = 5};
    int ids[8] = {3, 1, 3, 0, 6, 6, 2, 1};
    c.ids = ids;
    c.wte = randv(7 * 5, 1), c.wpe = randv(4 * 5, 1), c.out = zerov(40);
    float *r = randv(40, 1), *dwte = zerov(35), *dwpe = zerov(20);
    gc_op op = {emb_fwd, &c, c.out, 40, r};
    gc_loss(&op);
    be->embed_bwd(dwte, r, ids, 8, 5);
    be->posemb_bwd(dwpe, r, 2, 4, 5);
    gc_check(&op, c.wte, dwte, 35, "embedding dwte");
    gc_check(&op, c.wpe, dwpe, 20, "positional dwpe");
    free(c.wte), free(c.wpe), free(c.out), free(r), free(dwte), free(dwpe);
}

/* ---------------------------------------------------------------- layernorm */

typedef struct {
    float *out, *mean, *rstd, *inp, *w, *b;
    int N, C;
} ln_ctx;

static void ln_fwd(void *p)
{
    ln_ctx *c = p;
    be->layernorm_fwd(c->out, c->mean, c->rstd, c->inp, c->w, c->b, c->N, c->C);
}

static void test_layernorm(void **state)
{
    (void)state;
    ln_ctx c = {.N = 6, .C = 9};
    c.inp = randv(54, 2), c.w = randv(9, 1), c.b = randv(9, 1), c.out = zerov(54);
    c.mean = zerov(6), c.rstd = zerov(6);
    float *r = randv(54, 1), *di = zerov(54), *dw = zerov(9), *db = zerov(9);
    gc_op op = {ln_fwd, &c, c.out, 54, r};
    gc_loss(&op);
    be->layernorm_bwd(di, dw, db, r, c.inp, c.w, c.mean, c.rstd, c.N, c.C);
    gc_check(&op, c.inp, di, 54, "layernorm dinp");
    gc_check(&op, c.w, dw, 9, "layernorm dw");
    gc_check(&op, c.b, db, 9, "layernorm db");
    free(c.inp), free(c.w), free(c.b), free(c.out), free(c.mean), free(c.rstd);
    free(r), free(di), free(dw), free(db);
}

/* ---------------------------------------------------------------- batchnorm */

typedef struct {
    float *out, *mean, *rstd, *rm, *rv, *inp, *w, *b;
    int B, C, HW, training;
} bn_ctx;

static void bn_fwd(void *p)
{
    bn_ctx *c = p;
    c->rm[0] = 0.25f; /* the running statistics as the eval case expects them */
    c->rv[0] = 2.0f;
    be->batchnorm_fwd(c->out, c->mean, c->rstd, c->rm, c->rv, c->inp, c->w, c->b, c->B, c->C, c->HW,
                      0.1f, 1e-5f, c->training);
}

static void test_batchnorm(void **state)
{
    (void)state;
    for (int training = 1; training >= 0; training--) {
        bn_ctx c = {.B = 3, .C = 4, .HW = 5, .training = training};
        const size_t n = 60;
        c.inp = randv(n, 2), c.w = randv(4, 1), c.b = randv(4, 1), c.out = zerov(n);
        c.mean = zerov(4), c.rstd = zerov(4), c.rm = randv(4, 0.5f), c.rv = randv(4, 0.5f);
        for (int i = 0; i < 4; i++)
            c.rv[i] += 1.0f;
        float *r = randv(n, 1), *di = zerov(n), *dw = zerov(4), *db = zerov(4);
        gc_op op = {bn_fwd, &c, c.out, n, r};
        gc_loss(&op);
        be->batchnorm_bwd(di, dw, db, r, c.inp, c.w, c.mean, c.rstd, c.B, c.C, c.HW, training);
        gc_check(&op, c.inp, di, n, training ? "batchnorm train dinp" : "batchnorm eval dinp");
        gc_check(&op, c.w, dw, 4, "batchnorm dw");
        gc_check(&op, c.b, db, 4, "batchnorm db");
        free(c.inp), free(c.w), free(c.b), free(c.out), free(c.mean), free(c.rstd);
        free(c.rm), free(c.rv), free(r), free(di), free(dw), free(db);
    }
}

/* ---------------------------------------------------------------- attention */

typedef struct {
    float *out, *preatt, *att, *qkv;
    int B, T, C, NH, causal;
} att_ctx;

static void att_fwd(void *p)
{
    att_ctx *c = p;
    be->attention_fwd(c->out, c->preatt, c->att, c->qkv, c->B, c->T, c->C, c->NH, c->causal);
}

static void test_attention(void **state)
{
    (void)state;
    for (int causal = 0; causal <= 1; causal++) {
        att_ctx c = {.B = 2, .T = 5, .C = 8, .NH = 2, .causal = causal};
        size_t nq = 2 * 5 * 24, no = 2 * 5 * 8, na = 2 * 2 * 5 * 5;
        c.qkv = randv(nq, 1.5f), c.out = zerov(no), c.preatt = zerov(na), c.att = zerov(na);
        float *r = randv(no, 1), *dq = zerov(nq), *dpre = zerov(na), *datt = zerov(na);
        gc_op op = {att_fwd, &c, c.out, no, r};
        gc_loss(&op);
        be->attention_bwd(dq, dpre, datt, r, c.qkv, c.att, c.B, c.T, c.C, c.NH, causal);
        gc_check(&op, c.qkv, dq, nq, causal ? "causal attention dqkv" : "attention dqkv");
        free(c.qkv), free(c.out), free(c.preatt), free(c.att), free(r), free(dq), free(dpre),
            free(datt);
    }
}

/* ---------------------------------------------------------------- activations etc. */

typedef struct {
    int kind;
    float *out, *inp, *inp2, *mask;
    size_t n;
    int B, T, C;
    float p;
} ew_ctx;

static void act_fwd(void *p)
{
    ew_ctx *c = p;
    be->act_fwd(c->kind, c->out, c->inp, c->n);
}

static void test_activations(void **state)
{
    (void)state;
    const char *names[] = {"", "relu", "tanh", "sigmoid", "gelu"};
    for (int kind = KN_ACT_RELU; kind <= KN_ACT_GELU; kind++) {
        ew_ctx c = {.kind = kind, .n = 40};
        c.inp = randv(40, 3), c.out = zerov(40);
        if (kind == KN_ACT_RELU) /* keep away from the kink */
            for (int i = 0; i < 40; i++)
                if (fabsf(c.inp[i]) < 0.01f) c.inp[i] = 0.5f;
        float *r = randv(40, 1), *di = zerov(40);
        gc_op op = {act_fwd, &c, c.out, 40, r};
        gc_loss(&op);
        be->act_bwd(kind, di, c.inp, c.out, r, 40);
        gc_check(&op, c.inp, di, 40, names[kind]);
        free(c.inp), free(c.out), free(r), free(di);
    }
    /* GELU(tanh) reference values (PyTorch approximate="tanh") */
    float x[3] = {-1.0f, 0.5f, 2.0f}, y[3];
    be->act_fwd(KN_ACT_GELU, y, x, 3);
    assert_float_equal(y[0], -0.158808f, 1e-5);
    assert_float_equal(y[1], 0.345714f, 1e-5);
    assert_float_equal(y[2], 1.954598f, 1e-5);
}

static void drop_fwd(void *p)
{
    ew_ctx *c = p;
    be->dropout_fwd(c->out, c->mask, c->inp, c->n, c->p, 1234);
}

static void test_dropout(void **state)
{
    (void)state;
    ew_ctx c = {.n = 1000, .p = 0.25f};
    c.inp = randv(1000, 1), c.out = zerov(1000), c.mask = zerov(1000);
    float *r = randv(1000, 1), *di = zerov(1000);
    gc_op op = {drop_fwd, &c, c.out, 1000, r};
    gc_loss(&op);
    be->dropout_bwd(di, r, c.mask, 1000);
    gc_check(&op, c.inp, di, 1000, "dropout dinp");
    int dropped = 0;
    for (int i = 0; i < 1000; i++) {
        dropped += c.mask[i] == 0.0f;
        if (c.mask[i] != 0.0f) assert_float_equal(c.mask[i], 1.0f / 0.75f, 1e-6);
    }
    assert_in_range(dropped, 200, 300); /* ~250 expected */
    /* same seed, same mask: deterministic */
    float *m2 = zerov(1000), *o2 = zerov(1000);
    be->dropout_fwd(o2, m2, c.inp, 1000, 0.25f, 1234);
    assert_memory_equal(m2, c.mask, 1000 * sizeof(float));
    be->dropout_fwd(o2, m2, c.inp, 1000, 0.25f, 1235);
    assert_memory_not_equal(m2, c.mask, 1000 * sizeof(float));
    free(c.inp), free(c.out), free(c.mask), free(r), free(di), free(m2), free(o2);
}

static void res_fwd(void *p)
{
    ew_ctx *c = p;
    be->residual_fwd(c->out, c->inp, c->inp2, c->n);
}

static void test_residual(void **state)
{
    (void)state;
    ew_ctx c = {.n = 30};
    c.inp = randv(30, 1), c.inp2 = randv(30, 1), c.out = zerov(30);
    float *r = randv(30, 1), *da = zerov(30), *db = zerov(30);
    gc_op op = {res_fwd, &c, c.out, 30, r};
    gc_loss(&op);
    be->residual_bwd(da, db, r, 30);
    gc_check(&op, c.inp, da, 30, "residual da");
    gc_check(&op, c.inp2, db, 30, "residual db");
    free(c.inp), free(c.inp2), free(c.out), free(r), free(da), free(db);
}

static void pool_seq_fwd(void *p)
{
    ew_ctx *c = p;
    be->seqpool_fwd(c->kind, c->out, c->inp, c->B, c->T, c->C);
}

static void test_seqpool(void **state)
{
    (void)state;
    for (int kind = KN_SEQPOOL_MEAN; kind <= KN_SEQPOOL_CLS; kind++) {
        ew_ctx c = {.kind = kind, .B = 2, .T = 3, .C = 4};
        c.inp = randv(24, 1), c.out = zerov(8);
        float *r = randv(8, 1), *di = zerov(24);
        gc_op op = {pool_seq_fwd, &c, c.out, 8, r};
        gc_loss(&op);
        be->seqpool_bwd(kind, di, r, 2, 3, 4);
        gc_check(&op, c.inp, di, 24, kind == KN_SEQPOOL_MEAN ? "meanpool" : "clspool");
        free(c.inp), free(c.out), free(r), free(di);
    }
}

/* ---------------------------------------------------------------- losses */

typedef struct {
    float *losses, *lse, *logits, *y;
    int *targets;
    int N, V, Vp;
} loss_ctx;

static void xent_fwd(void *p)
{
    loss_ctx *c = p;
    be->xent_fwd(c->losses, c->lse, c->logits, c->targets, c->N, c->V, c->Vp);
}

static float smooth_s;

static void xent_smooth_fwd(void *p)
{
    loss_ctx *c = p;
    be->xent_fwd(c->losses, c->lse, c->logits, c->targets, c->N, c->V, c->Vp);
    be->xent_smooth_fwd(c->losses, c->logits, c->lse, c->targets, smooth_s, c->N, c->V, c->Vp);
}

static void mse_fwd(void *p)
{
    loss_ctx *c = p;
    be->mse_fwd(c->losses, c->logits, c->y, c->N, c->V);
}

static void test_losses(void **state)
{
    (void)state;
    int targets[5] = {0, 6, -1, 3, 2};
    loss_ctx c = {.N = 5, .V = 7, .Vp = 8, .targets = targets};
    c.logits = randv(40, 3), c.lse = zerov(5), c.losses = zerov(5);
    float r[5] = {0.7f, 0.7f, 0.7f, 0.7f, 0.7f};
    float *dl = zerov(40);
    gc_op op = {xent_fwd, &c, c.losses, 5, r};
    gc_loss(&op);
    xent_fwd(&c); /* lse of the unperturbed logits */
    be->xent_bwd(dl, c.logits, c.lse, targets, 0.7f, 5, 7, 8);
    gc_check(&op, c.logits, dl, 40, "softmax xent dlogits");
    assert_near(c.losses[2], 0.0f, 0.0); /* ignored row */
    for (int n = 0; n < 5; n++)
        assert_near(dl[n * 8 + 7], 0.0f, 0.0); /* padding */
    /* stability: huge logits give a finite loss */
    float big[3] = {1000.0f, -1000.0f, 999.0f}, pb[1], lb;
    int t0 = 2;
    be->xent_fwd(&lb, pb, big, &t0, 1, 3, 3);
    assert_float_equal(lb, 1.3132616f, 1e-5);

    /* label smoothing on top: xent_bwd + xent_smooth_bwd is the gradient */
    smooth_s = 0.15f;
    float *ds = zerov(40);
    gc_op ops = {xent_smooth_fwd, &c, c.losses, 5, r};
    gc_loss(&ops);
    be->xent_bwd(ds, c.logits, c.lse, targets, 0.7f, 5, 7, 8);
    be->xent_smooth_bwd(ds, targets, 0.7f * smooth_s, 5, 7, 8);
    gc_check(&ops, c.logits, ds, 40, "label-smoothed xent dlogits");
    assert_near(c.losses[2], 0.0f, 0.0);
    for (int n = 0; n < 5; n++)
        assert_near(ds[n * 8 + 7], 0.0f, 0.0);
    free(ds);

    loss_ctx m = {.N = 4, .V = 3};
    m.logits = randv(12, 1), m.y = randv(12, 1), m.losses = zerov(4);
    float *dp = zerov(12);
    gc_op op2 = {mse_fwd, &m, m.losses, 4, r};
    gc_loss(&op2);
    be->mse_bwd(dp, m.logits, m.y, 0.7f, 4, 3);
    gc_check(&op2, m.logits, dp, 12, "mse dpred");
    free(c.logits), free(c.lse), free(c.losses), free(dl);
    free(m.logits), free(m.y), free(m.losses), free(dp);
}

static int setup(void **state)
{
    (void)state;
    be = kn_backend_cpu();
    kn_rng_init(&rng, 42);
    return 0;
}

static int report(void **state)
{
    (void)state;
    printf("# worst |num - ana| / tol over all checks: %.3f\n", max_err_seen);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_matmul),      cmocka_unit_test(test_conv2d),
        cmocka_unit_test(test_pool),        cmocka_unit_test(test_embedding),
        cmocka_unit_test(test_layernorm),   cmocka_unit_test(test_attention),
        cmocka_unit_test(test_activations), cmocka_unit_test(test_dropout),
        cmocka_unit_test(test_residual),    cmocka_unit_test(test_seqpool),
        cmocka_unit_test(test_losses),      cmocka_unit_test(test_batchnorm),
    };
    return cmocka_run_group_tests(tests, setup, report);
}
