/* test_nn_backend_guard.c: the model layer touches device memory only
 * through the backend, as a GPU backend requires. CI has no GPU, so this
 * checks it on the CPU: the "guard" backend wraps the CPU ops, but its
 * buffers are pages the host cannot read or write (PROT_NONE) except while
 * one of its own ops, or to_device / to_host, runs. Any host access to a
 * device buffer from lib/nn (model, optimizer, checkpoints, generation,
 * feeds) faults, and the test dies with SIGSEGV.
 *
 * Every model type trains three steps, predicts, generates, saves and loads
 * a checkpoint and reads/writes a tensor by name on the guard backend; the
 * losses, logits and parameters must equal the plain CPU backend's bit for
 * bit (same ops, same order). The guard has neither xent_fused nor
 * optim_update_all, so its models run xent_fwd + xent_bwd and the
 * per-tensor updates where the CPU's run the fused classifier and the
 * multi-tensor update: the bit-for-bit check covers that they agree
 * through training too. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <jansson.h>

#include "nn/backend.h"
#include "nn/model.h"
#include "nn/optim.h"

/* ------------------------------------------------------------ the guard backend */

typedef struct {
    void *p;
    size_t len; /* mapped bytes (whole pages) */
} region;

static region *regions;
static size_t nregions, capregions, page;
static int depth; /* > 0 while an op runs: buffers are open */
static const kn_backend *cpu;

static void protect_all(int prot)
{
    for (size_t i = 0; i < nregions; i++)
        if (mprotect(regions[i].p, regions[i].len, prot) != 0) abort();
}

static void open_all(void)
{
    if (depth++ == 0) protect_all(PROT_READ | PROT_WRITE);
}

static void close_all(void)
{
    if (--depth == 0) protect_all(PROT_NONE);
}

static void *g_alloc(size_t bytes)
{
    size_t len = ((bytes ? bytes : 1) + page - 1) / page * page;
    void *p = mmap(NULL, len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return NULL;
    if (nregions == capregions) {
        capregions = capregions ? 2 * capregions : 64;
        regions = realloc(regions, capregions * sizeof(region));
    }
    regions[nregions++] = (region){p, len};
    if (depth > 0) mprotect(p, len, PROT_READ | PROT_WRITE);
    return p; /* anonymous pages are zero */
}

static void g_free(void *p)
{
    if (!p) return;
    for (size_t i = 0; i < nregions; i++)
        if (regions[i].p == p) {
            munmap(p, regions[i].len);
            regions[i] = regions[--nregions];
            return;
        }
    abort(); /* freeing what the backend did not allocate */
}

/* G(call): runs one CPU op with the device buffers open */
#define G(call)                                                                                    \
    do {                                                                                           \
        open_all();                                                                                \
        call;                                                                                      \
        close_all();                                                                               \
    } while (0)

static void g_to_device(void *d, const void *s, size_t n) { G(cpu->to_device(d, s, n)); }
static void g_to_host(void *d, const void *s, size_t n) { G(cpu->to_host(d, s, n)); }
static void g_zero(void *p, size_t n) { G(cpu->zero(p, n)); }
static void g_matmul_fwd(float *o, const float *i, const float *w, const float *b, int N, int C,
                         int OC)
{
    G(cpu->matmul_fwd(o, i, w, b, N, C, OC));
}
static void g_matmul_bwd(float *di, float *dw, float *db, const float *d, const float *i,
                         const float *w, int N, int C, int OC)
{
    G(cpu->matmul_bwd(di, dw, db, d, i, w, N, C, OC));
}
static size_t g_conv2d_scratch(const kn_conv_shape *s) { return cpu->conv2d_scratch(s); }
static void g_conv2d_fwd(float *o, const float *i, const float *w, const float *b, float *sc,
                         const kn_conv_shape *s)
{
    G(cpu->conv2d_fwd(o, i, w, b, sc, s));
}
static void g_conv2d_bwd(float *di, float *dw, float *db, const float *d, const float *i,
                         const float *w, float *sc, const kn_conv_shape *s)
{
    G(cpu->conv2d_bwd(di, dw, db, d, i, w, sc, s));
}
static void g_pool2d_fwd(int k, float *o, int *ix, const float *i, const kn_pool_shape *s)
{
    G(cpu->pool2d_fwd(k, o, ix, i, s));
}
static void g_pool2d_bwd(int k, float *di, const float *d, const int *ix, const kn_pool_shape *s)
{
    G(cpu->pool2d_bwd(k, di, d, ix, s));
}
static void g_embed_fwd(float *o, const int *ids, const float *w, int N, int C)
{
    G(cpu->embed_fwd(o, ids, w, N, C));
}
static void g_embed_bwd(float *dw, const float *d, const int *ids, int N, int C)
{
    G(cpu->embed_bwd(dw, d, ids, N, C));
}
static void g_posemb_fwd(float *o, const float *w, int B, int T, int C)
{
    G(cpu->posemb_fwd(o, w, B, T, C));
}
static void g_posemb_bwd(float *dw, const float *d, int B, int T, int C)
{
    G(cpu->posemb_bwd(dw, d, B, T, C));
}
static void g_layernorm_fwd(float *o, float *m, float *r, const float *i, const float *w,
                            const float *b, int N, int C)
{
    G(cpu->layernorm_fwd(o, m, r, i, w, b, N, C));
}
static void g_layernorm_bwd(float *di, float *dw, float *db, const float *d, const float *i,
                            const float *w, const float *m, const float *r, int N, int C)
{
    G(cpu->layernorm_bwd(di, dw, db, d, i, w, m, r, N, C));
}
static void g_attention_fwd(float *o, float *pre, float *att, const float *qkv, int B, int T, int C,
                            int NH, int causal)
{
    G(cpu->attention_fwd(o, pre, att, qkv, B, T, C, NH, causal));
}
static void g_attention_bwd(float *dqkv, float *dpre, float *datt, const float *d,
                            const float *qkv, const float *att, int B, int T, int C, int NH,
                            int causal)
{
    G(cpu->attention_bwd(dqkv, dpre, datt, d, qkv, att, B, T, C, NH, causal));
}
static void g_act_fwd(int k, float *o, const float *i, size_t n) { G(cpu->act_fwd(k, o, i, n)); }
static void g_act_bwd(int k, float *di, const float *i, const float *o, const float *d, size_t n)
{
    G(cpu->act_bwd(k, di, i, o, d, n));
}
static void g_dropout_fwd(float *o, float *m, const float *i, size_t n, float p, uint64_t seed)
{
    G(cpu->dropout_fwd(o, m, i, n, p, seed));
}
static void g_dropout_bwd(float *di, const float *d, const float *m, size_t n)
{
    G(cpu->dropout_bwd(di, d, m, n));
}
static void g_residual_fwd(float *o, const float *a, const float *b, size_t n)
{
    G(cpu->residual_fwd(o, a, b, n));
}
static void g_residual_bwd(float *da, float *db, const float *d, size_t n)
{
    G(cpu->residual_bwd(da, db, d, n));
}
static void g_seqpool_fwd(int k, float *o, const float *i, int B, int T, int C)
{
    G(cpu->seqpool_fwd(k, o, i, B, T, C));
}
static void g_seqpool_bwd(int k, float *di, const float *d, int B, int T, int C)
{
    G(cpu->seqpool_bwd(k, di, d, B, T, C));
}
static void g_xent_fwd(float *l, float *z, const float *lg, const int *t, int N, int V, int Vp)
{
    G(cpu->xent_fwd(l, z, lg, t, N, V, Vp));
}
static void g_xent_bwd(float *dl, const float *lg, const float *z, const int *t, float s, int N,
                       int V, int Vp)
{
    G(cpu->xent_bwd(dl, lg, z, t, s, N, V, Vp));
}
static void g_mse_fwd(float *l, const float *p, const float *y, int N, int D)
{
    G(cpu->mse_fwd(l, p, y, N, D));
}
static void g_mse_bwd(float *dp, const float *p, const float *y, float s, int N, int D)
{
    G(cpu->mse_bwd(dp, p, y, s, N, D));
}
static double g_sum(const float *x, size_t n)
{
    double r;
    G(r = cpu->sum(x, n));
    return r;
}
static double g_sumsq(const float *x, size_t n)
{
    double r;
    G(r = cpu->sumsq(x, n));
    return r;
}
static void g_optim_update(const kn_optim_args *a, float *p, const float *g, float *m, float *v,
                           size_t n)
{
    G(cpu->optim_update(a, p, g, m, v, n));
}

static void g_batchnorm_fwd(float *o, float *m, float *r, float *rm, float *rv, const float *i,
                            const float *w, const float *b, int B, int C, int HW, float mom,
                            float eps, int tr)
{
    G(cpu->batchnorm_fwd(o, m, r, rm, rv, i, w, b, B, C, HW, mom, eps, tr));
}
static void g_batchnorm_bwd(float *di, float *dw, float *db, const float *d, const float *i,
                            const float *w, const float *m, const float *r, int B, int C, int HW,
                            int tr)
{
    G(cpu->batchnorm_bwd(di, dw, db, d, i, w, m, r, B, C, HW, tr));
}
static void g_xent_smooth_fwd(float *l, const float *lg, const float *lse, const int *t, float s,
                              int N, int V, int Vp)
{
    G(cpu->xent_smooth_fwd(l, lg, lse, t, s, N, V, Vp));
}
static void g_xent_smooth_bwd(float *dl, const int *t, float s, int N, int V, int Vp)
{
    G(cpu->xent_smooth_bwd(dl, t, s, N, V, Vp));
}

static const kn_backend guard = {
    .name = "guard",
    .alloc = g_alloc,
    .free = g_free,
    .to_device = g_to_device,
    .to_host = g_to_host,
    .zero = g_zero,
    .matmul_fwd = g_matmul_fwd,
    .matmul_bwd = g_matmul_bwd,
    .conv2d_scratch = g_conv2d_scratch,
    .conv2d_fwd = g_conv2d_fwd,
    .conv2d_bwd = g_conv2d_bwd,
    .pool2d_fwd = g_pool2d_fwd,
    .pool2d_bwd = g_pool2d_bwd,
    .embed_fwd = g_embed_fwd,
    .embed_bwd = g_embed_bwd,
    .posemb_fwd = g_posemb_fwd,
    .posemb_bwd = g_posemb_bwd,
    .layernorm_fwd = g_layernorm_fwd,
    .layernorm_bwd = g_layernorm_bwd,
    .attention_fwd = g_attention_fwd,
    .attention_bwd = g_attention_bwd,
    .act_fwd = g_act_fwd,
    .act_bwd = g_act_bwd,
    .dropout_fwd = g_dropout_fwd,
    .dropout_bwd = g_dropout_bwd,
    .residual_fwd = g_residual_fwd,
    .residual_bwd = g_residual_bwd,
    .seqpool_fwd = g_seqpool_fwd,
    .seqpool_bwd = g_seqpool_bwd,
    .xent_fwd = g_xent_fwd,
    .xent_bwd = g_xent_bwd,
    .mse_fwd = g_mse_fwd,
    .mse_bwd = g_mse_bwd,
    .batchnorm_fwd = g_batchnorm_fwd,
    .batchnorm_bwd = g_batchnorm_bwd,
    .xent_smooth_fwd = g_xent_smooth_fwd,
    .xent_smooth_bwd = g_xent_smooth_bwd,
    .sum = g_sum,
    .sumsq = g_sumsq,
    .optim_update = g_optim_update,
};

/* ------------------------------------------------------------ the check */

/* What one backend computed for one model. */
typedef struct {
    float losses[3];
    float *logits; /* after training */
    size_t nlogits;
    float *params; /* after training, then after a checkpoint round trip */
    float *reloaded;
    size_t nparams;
    int generated[12];
} outcome;

static float *params_to_host(const kn_model *m, size_t *n)
{
    const kn_tensor_set *p = kn_model_params(m);
    float *h = malloc(p->numel * sizeof(float));
    p->be->to_host(h, p->data, p->numel * sizeof(float));
    *n = p->numel;
    return h;
}

static void exercise(const char *spec_json, const kn_backend *be, int B, int T, int in, int outs,
                     int vocab, int mse, outcome *o)
{
    char err[256];
    json_t *spec = json_loads(spec_json, 0, NULL);
    assert_non_null(spec);
    kn_model *m = NULL;
    if (kn_model_new(spec, 3, B, be, &m, err, sizeof(err))) fail_msg("%s: %s", spec_json, err);
    json_decref(spec);
    kn_optim_config oc;
    kn_optim_config_default(&oc, KN_OPT_ADAMW);
    oc.grad_clip = 1.0f; /* the clipping path reads the gradient norm */
    assert_int_equal(kn_model_set_optim(m, &oc), KN_OK);

    float *x = NULL, *y = NULL;
    int *tok = NULL, *lab = NULL;
    kn_batch b = {.B = B, .T = T};
    if (vocab) {
        tok = malloc((size_t)B * T * sizeof(int));
        lab = malloc((size_t)B * T * sizeof(int));
        for (int i = 0; i < B * T; i++) {
            tok[i] = (i * 7 + 3) % vocab;
            lab[i] = outs == vocab ? (i % 4 == 1 ? -1 : (tok[i] + 1) % vocab) : i % outs;
        }
        b.tokens = tok;
        b.labels = lab;
    } else {
        x = malloc((size_t)B * in * sizeof(float));
        for (int i = 0; i < B * in; i++)
            x[i] = (float)((i * 37) % 19) / 19.0f - 0.4f;
        b.x = x;
        if (mse) {
            y = malloc((size_t)B * outs * sizeof(float));
            for (int i = 0; i < B * outs; i++)
                y[i] = (float)(i % 5) * 0.25f;
            b.y = y;
        } else {
            lab = malloc((size_t)B * sizeof(int));
            for (int i = 0; i < B; i++)
                lab[i] = i % outs;
            b.labels = lab;
        }
    }
    kn_model_set_training(m, 1); /* as the trainer: the CPU's fused classifier runs */
    for (int s = 0; s < 3; s++) {
        kn_model_zero_grad(m);
        if (kn_model_forward(m, &b, &o->losses[s], err, sizeof(err))) fail_msg("forward: %s", err);
        assert_int_equal(kn_model_backward(m), KN_OK);
        float gn, lr;
        assert_int_equal(kn_model_step(m, &gn, &lr), KN_OK);
    }
    /* inference: logits and predictions of the last batch */
    kn_model_set_training(m, 0);
    kn_batch inf = b;
    inf.labels = NULL;
    inf.y = NULL;
    if (kn_model_forward(m, &inf, NULL, err, sizeof(err))) fail_msg("inference: %s", err);
    o->nlogits = (size_t)B * (vocab && outs == vocab ? T : 1) * outs;
    o->logits = malloc(o->nlogits * sizeof(float));
    assert_int_equal(kn_model_logits(m, o->logits, o->nlogits), KN_OK);
    if (!mse) {
        int *pred = malloc((size_t)B * T * sizeof(int) + 64);
        assert_int_equal(kn_model_predict(m, pred, (size_t)B * (T ? T : 1)), KN_OK);
        free(pred);
    }
    if (vocab && outs == vocab) { /* GPT: sampling reads logits through the backend */
        int prompt[3] = {1, 2, 3};
        kn_sample_config sc = {.temperature = 0.8f, .top_k = 5, .seed = 11};
        if (kn_model_generate(m, prompt, 3, 9, &sc, o->generated, err, sizeof(err)))
            fail_msg("generate: %s", err);
    }
    /* tensors by name */
    const kn_tensor_set *P = kn_model_params(m);
    float *t0 = malloc(P->t[0].numel * sizeof(float));
    assert_int_equal(kn_model_get_tensor(m, P->t[0].name, t0, P->t[0].numel), KN_OK);
    assert_int_equal(kn_model_set_tensor(m, P->t[0].name, t0, P->t[0].numel), KN_OK);
    free(t0);
    o->params = params_to_host(m, &o->nparams);
    /* a checkpoint round trip onto the same backend */
    unsigned char *buf;
    size_t len;
    assert_int_equal(kn_model_save_buffer(m, NULL, &buf, &len, err, sizeof(err)), KN_OK);
    kn_model *m2 = NULL;
    if (kn_model_load_buffer(buf, len, B, be, &m2, NULL, err, sizeof(err)))
        fail_msg("load: %s", err);
    size_t n2;
    o->reloaded = params_to_host(m2, &n2);
    assert_int_equal(n2, o->nparams);
    free(buf);
    kn_model_destroy(m2);
    kn_model_destroy(m);
    free(x), free(y), free(tok), free(lab);
}

static void check(const char *spec, int B, int T, int in, int outs, int vocab, int mse)
{
    outcome c, g;
    memset(&c, 0, sizeof(c));
    memset(&g, 0, sizeof(g));
    exercise(spec, cpu, B, T, in, outs, vocab, mse, &c);
    exercise(spec, &guard, B, T, in, outs, vocab, mse, &g);
    assert_int_equal(nregions, 0); /* every device buffer was freed */
    assert_memory_equal(c.losses, g.losses, sizeof(c.losses));
    assert_memory_equal(c.logits, g.logits, c.nlogits * sizeof(float));
    assert_memory_equal(c.params, g.params, c.nparams * sizeof(float));
    assert_memory_equal(c.params, g.reloaded, c.nparams * sizeof(float));
    assert_memory_equal(c.generated, g.generated, sizeof(c.generated));
    json_t *parsed = json_loads(spec, 0, NULL);
    printf("# %-6s losses %.5f %.5f %.5f, %zu params: guard = cpu\n",
           json_string_value(json_object_get(parsed, "type")), c.losses[0], c.losses[1],
           c.losses[2], c.nparams);
    json_decref(parsed);
    free(c.logits), free(c.params), free(c.reloaded);
    free(g.logits), free(g.params), free(g.reloaded);
}

static void test_mlp(void **state)
{
    (void)state;
    check("{\"type\":\"mlp\",\"sizes\":[12,16,4],\"dropout\":0.1}", 5, 0, 12, 4, 0, 0);
    check("{\"type\":\"mlp\",\"sizes\":[6,8,2],\"activation\":\"gelu\",\"loss\":\"mse\"}", 4, 0, 6,
          2, 0, 1);
    check("{\"type\":\"linreg\",\"in\":5,\"out\":1}", 4, 0, 5, 1, 0, 1);
}

static void test_cnn(void **state)
{
    (void)state;
    check("{\"type\":\"cnn\",\"input\":[1,8,8],\"convs\":[{\"out\":3,\"k\":3,\"pad\":1}],"
          "\"fc\":[8],\"classes\":3}",
          3, 0, 64, 3, 0, 0);
    /* batchnorm (running statistics: buffers) and label smoothing */
    check("{\"type\":\"cnn\",\"input\":[1,8,8],\"bn\":true,\"convs\":[{\"out\":3,\"k\":3,"
          "\"pad\":1}],\"fc\":[8],\"label_smoothing\":0.1,\"classes\":3}",
          3, 0, 64, 3, 0, 0);
}

static void test_gpt(void **state)
{
    (void)state;
    check("{\"type\":\"gpt\",\"n_layer\":1,\"n_head\":2,\"n_embd\":16,\"block_size\":8,"
          "\"vocab_size\":30}",
          2, 8, 0, 30, 30, 0);
}

static void test_txtcls(void **state)
{
    (void)state;
    check("{\"type\":\"txtcls\",\"n_layer\":1,\"n_head\":2,\"n_embd\":16,\"block_size\":8,"
          "\"vocab_size\":30,\"classes\":3}",
          2, 8, 0, 3, 30, 0);
}

/* The guard itself: a host read of a device buffer faults. */
static void test_guard_faults(void **state)
{
    (void)state;
    pid_t pid = fork();
    if (pid == 0) {
        signal(SIGSEGV, SIG_DFL); /* cmocka's handler would catch it */
        volatile float *p = guard.alloc(64);
        float v = p[0]; /* must fault */
        (void)v;
        _exit(0);
    }
    int st;
    waitpid(pid, &st, 0);
    assert_true(WIFSIGNALED(st) && WTERMSIG(st) == SIGSEGV);
}

int main(void)
{
    page = (size_t)sysconf(_SC_PAGESIZE);
    cpu = kn_backend_cpu();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_guard_faults), cmocka_unit_test(test_mlp),
        cmocka_unit_test(test_cnn),          cmocka_unit_test(test_gpt),
        cmocka_unit_test(test_txtcls),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
