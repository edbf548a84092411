/* test_nn_memory.c: the backend's own count of device memory
 * (kn_backend_mem) and what a transformer keeps for its backward.
 *
 * - The ledger: alloc/free through the CPU backend move `alloc` by the
 *   bytes asked for, the peak holds the most at once until a reset, the
 *   CPU has no scratch.
 * - A GPT allocates everything at creation (a training step allocates
 *   nothing more through the backend) and gives it all back when
 *   destroyed; its activations and their gradients stay within what
 *   model_tfm.c says it keeps: per layer 10 C floats a token (and the
 *   layernorms' mean and rstd and the attention's log-sum-exp, or its
 *   T x T probabilities unfused), one set of buffers for what every layer
 *   recomputes or overwrites, 13 C floats a token of gradients for all
 *   layers together, the logits once (their gradient in place); GELU's
 *   output recomputed (kn_tfm_gelu_keep_bytes = 0, as for GPT-2). Before
 *   2026-12-01 every output of every layer was kept (18 C) and the
 *   gradients mirrored the activations, about twice this bound.
 * - GELU's output kept per layer or recomputed: the same bits.
 * - The in-place logits' gradient: a backward after an inference-mode
 *   forward (the fused classifier then runs in the backward) gives the
 *   same bits as after a training forward (where it ran in the forward).
 * - bf16 storage (qkv, atty, fch as bf16): the memory it saves, the
 *   training it changes (by rounding only), and its consumers reading it
 *   as stored (backend.h's *_bf16 ops) and its GEMMs and attention
 *   writing it so (matmul_fwd_to_bf16, attention_fused_fwd_to_bf16: no
 *   working buffer, where it was 4 C floats a token): the same bits as
 *   widening it first, the ops taken (counted). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "nn/backend.h"
#include "nn/model.h"
#include "nn/model_int.h" /* white box: the rows of GPT's logits activation */
#include "nn/optim.h"
#include "nn/precision.h"

static void test_ledger(void **state)
{
    (void)state;
    const kn_backend *cpu = kn_backend_cpu();
    kn_mem_stats a, s;
    kn_backend_mem(cpu, &a, 1);
    assert_int_equal(a.alloc_peak, a.alloc);
    void *p = cpu->alloc(1000), *q = cpu->alloc(24);
    kn_backend_mem(cpu, &s, 0);
    assert_int_equal(s.alloc, a.alloc + 1024);
    assert_int_equal(s.alloc_peak, a.alloc + 1024);
    assert_int_equal(s.peak, a.alloc + 1024);
    assert_int_equal(s.scratch, 0);
    cpu->free(p);
    kn_backend_mem(cpu, &s, 0);
    assert_int_equal(s.alloc, a.alloc + 24);
    assert_int_equal(s.alloc_peak, a.alloc + 1024); /* the peak stays */
    kn_backend_mem(cpu, &s, 1);                      /* reset: from now on */
    kn_backend_mem(cpu, &s, 0);
    assert_int_equal(s.alloc_peak, a.alloc + 24);
    cpu->free(q);
    cpu->free(NULL);
    kn_backend_mem(cpu, &s, 0);
    assert_int_equal(s.alloc, a.alloc);
    /* a precision variant is the same memory, so the same ledger */
    const kn_backend *bf = kn_backend_with_precision(cpu, KN_PREC_BF16, NULL, 0);
    assert_non_null(bf);
    p = bf->alloc(64);
    kn_backend_mem(cpu, &s, 0);
    assert_int_equal(s.alloc, a.alloc + 64);
    bf->free(p);
}

enum { L = 3, NH = 2, C = 32, T = 16, V = 100, VP = 128, B = 3 };

static kn_model *gpt(const kn_backend *be)
{
    char js[256], err[256];
    snprintf(js, sizeof(js),
             "{\"type\":\"gpt\",\"n_layer\":%d,\"n_head\":%d,\"n_embd\":%d,\"block_size\":%d,"
             "\"vocab_size\":%d}",
             L, NH, C, T, V);
    json_t *spec = json_loads(js, 0, NULL);
    kn_model *m = NULL;
    if (kn_model_new(spec, 5, B, be, &m, err, sizeof(err))) fail_msg("model: %s", err);
    json_decref(spec);
    return m;
}

static void batch(int *tok, int *tgt)
{
    for (int i = 0; i < B * T; i++) {
        tok[i] = (i * 37 + 11) % V;
        tgt[i] = i % 5 == 0 ? -1 : (tok[i] + 1) % V;
    }
}

static void test_gpt_memory(void **state)
{
    (void)state;
    const kn_backend *be = kn_backend_with_precision(kn_backend_cpu(), KN_PREC_BF16, NULL, 0);
    kn_mem_stats a, s;
    kn_backend_mem(be, &a, 1);
    const size_t keep = kn_tfm_gelu_keep_bytes;
    kn_tfm_gelu_keep_bytes = 0; /* GELU recomputed, as GPT-2's */
    kn_model *m = gpt(be);      /* bf16: fused attention, no T x T */
    kn_tfm_gelu_keep_bytes = keep;
    assert_int_equal(m->tfm.gelu_kept, 0);
    kn_backend_mem(be, &s, 0);
    const size_t P = kn_model_params(m)->numel, N = (size_t)B * T;
    const size_t acts = s.alloc - a.alloc - 2 * P * sizeof(float) - 2 * N * sizeof(int);
    /* floats a token: per layer 6 C (qkv, atty and fch as bf16: 4 C,
     * res2 and res3 2 C) + mean, rstd (2 x 2) + lse (NH); the shared ln
     * (C + 2), gelu (4 C), proj (C), encoded (C), ln_f (C + 2), the bf16
     * store's working buffer (none: the GEMMs and the attention write
     * qkv, atty and fch as bf16 themselves), logits (Vp), lse and losses
     * (2); gradients 13 C; and up to 15 floats of alignment a tensor (16 L
     * + 21 tensors). With qkv, atty and fch in fp32 (before 2026-12-01,
     * later the same day) this was 10 C a layer and no working buffer: 51
     * C a token against 39 C now, past the bound; with a working buffer
     * of 4 C (the GEMMs and the attention writing fp32, until later
     * still) 43 C, or of C (the attention alone) 40 C, past it too. */
    assert_int_equal(m->tfm.bf16_store, 1);
    assert_int_equal(m->tfm.bf16_attn_out, 1);
    assert_int_equal(m->tfm.work, -1);
    const size_t bound = N * (L * (6 * C + 4 + NH) + 21 * C + VP + 6) + 15 * (16 * L + 21);
    print_message("gpt L=%d C=%d B=%d T=%d: activations and gradients %zu bytes, bound %zu\n", L,
                  C, B, T, acts, bound * sizeof(float));
    assert_true(acts <= bound * sizeof(float));
    assert_true(acts >= N * (L * 6 * C + VP) * sizeof(float)); /* what must be there */

    /* a training step allocates nothing more through the backend */
    kn_optim_config oc;
    kn_optim_config_default(&oc, KN_OPT_ADAMW);
    assert_int_equal(kn_model_set_optim(m, &oc), KN_OK);
    kn_backend_mem(be, &s, 1);
    int tok[B * T], tgt[B * T];
    batch(tok, tgt);
    kn_batch b = {.B = B, .T = T, .tokens = tok, .labels = tgt};
    kn_model_set_training(m, 1);
    char err[256];
    float loss;
    kn_model_zero_grad(m);
    if (kn_model_forward(m, &b, &loss, err, sizeof(err))) fail_msg("forward: %s", err);
    assert_int_equal(kn_model_backward(m), KN_OK);
    assert_int_equal(kn_model_step(m, NULL, NULL), KN_OK);
    kn_mem_stats t;
    kn_backend_mem(be, &t, 0);
    assert_int_equal(t.alloc_peak, s.alloc);
    kn_model_destroy(m);
    kn_backend_mem(be, &s, 0);
    assert_int_equal(s.alloc, a.alloc); /* everything given back */
}

/* The gradients of a backward after a training forward (the fused
 * classifier set the logits' gradient in place in the forward) and after
 * an inference-mode forward (it runs in the backward), bit for bit. */
static void test_gpt_inplace_dlogits(void **state)
{
    (void)state;
    const kn_backend *cpu = kn_backend_cpu();
    kn_model *m = gpt(cpu);
    int tok[B * T], tgt[B * T];
    batch(tok, tgt);
    kn_batch b = {.B = B, .T = T, .tokens = tok, .labels = tgt};
    const kn_tensor_set *g = kn_model_grads(m);
    float *ga = malloc(g->numel * sizeof(float)), *gb = malloc(g->numel * sizeof(float));
    float la, lb;
    char err[256];
    for (int mode = 1; mode >= 0; mode--) {
        kn_model_set_training(m, mode);
        kn_model_zero_grad(m);
        if (kn_model_forward(m, &b, mode ? &la : &lb, err, sizeof(err)))
            fail_msg("forward: %s", err);
        assert_int_equal(kn_model_backward(m), KN_OK);
        cpu->to_host(mode ? ga : gb, g->data, g->numel * sizeof(float));
    }
    assert_memory_equal(&la, &lb, sizeof(float));
    assert_memory_equal(ga, gb, g->numel * sizeof(float));
    /* no target at all: a zero gradient of the logits, so wte's comes from
     * the embedding side only and the blocks' is zero */
    for (int i = 0; i < B * T; i++)
        tgt[i] = -1;
    kn_model_zero_grad(m);
    if (kn_model_forward(m, &b, &la, err, sizeof(err))) fail_msg("forward: %s", err);
    assert_int_equal(kn_model_backward(m), KN_OK);
    cpu->to_host(ga, g->data, g->numel * sizeof(float));
    for (size_t i = 0; i < g->numel; i++)
        if (ga[i] != 0.0f) fail_msg("gradient %zu is %g with no target", i, (double)ga[i]);
    free(ga), free(gb);
    kn_model_destroy(m);
}

/* GELU's output kept per layer (small models) or recomputed in the
 * backward (large ones): the same bits, in fp32 and in the bf16 emulation,
 * training and inference mode. */
static void test_gelu_recompute_bits(void **state)
{
    (void)state;
    for (int p = 0; p < 2; p++) {
        const kn_backend *be = kn_backend_with_precision(
            kn_backend_cpu(), p ? KN_PREC_BF16 : KN_PREC_FP32, NULL, 0);
        const size_t keep = kn_tfm_gelu_keep_bytes;
        kn_model *k = gpt(be);
        kn_tfm_gelu_keep_bytes = 0;
        kn_model *r = gpt(be);
        kn_tfm_gelu_keep_bytes = keep;
        assert_int_equal(k->tfm.gelu_kept, 1);
        assert_int_equal(r->tfm.gelu_kept, 0);
        int tok[B * T], tgt[B * T];
        batch(tok, tgt);
        kn_batch b = {.B = B, .T = T, .tokens = tok, .labels = tgt};
        kn_optim_config oc;
        kn_optim_config_default(&oc, KN_OPT_ADAMW);
        kn_model_set_optim(k, &oc), kn_model_set_optim(r, &oc);
        const size_t n = kn_model_grads(k)->numel;
        float *gk = malloc(n * sizeof(float)), *gr = malloc(n * sizeof(float));
        char err[256];
        for (int step = 0; step < 3; step++) {
            float lk, lr;
            kn_model *ms[2] = {k, r};
            float *ls[2] = {&lk, &lr}, *gs[2] = {gk, gr};
            for (int i = 0; i < 2; i++) {
                kn_model_set_training(ms[i], step != 1); /* step 1: inference mode */
                kn_model_zero_grad(ms[i]);
                if (kn_model_forward(ms[i], &b, ls[i], err, sizeof(err)))
                    fail_msg("forward: %s", err);
                assert_int_equal(kn_model_backward(ms[i]), KN_OK);
                be->to_host(gs[i], kn_model_grads(ms[i])->data, n * sizeof(float));
                kn_model_step(ms[i], NULL, NULL);
            }
            assert_memory_equal(&lk, &lr, sizeof(float));
            assert_memory_equal(gk, gr, n * sizeof(float));
        }
        free(gk), free(gr);
        kn_model_destroy(k), kn_model_destroy(r);
    }
}

/* GPT over more rows than KN_TFM_LOGIT_ROWS: a training forward runs the
 * classifier in two chunks (4096 + 128 rows) and holds one chunk of logits;
 * an inference-mode forward keeps all the rows' logits in a buffer
 * allocated then (once). The two give the same loss and gradients up to
 * the summation order of wte's gradient (two GEMMs added instead of one). */
static void test_gpt_chunked_classifier(void **state)
{
    (void)state;
    enum { CB = 66, CT = 64, CC = 8, CV = 60, CVP = 64, CN = CB * CT };
    const kn_backend *cpu = kn_backend_cpu();
    char js[256], err[256];
    snprintf(js, sizeof(js),
             "{\"type\":\"gpt\",\"n_layer\":1,\"n_head\":2,\"n_embd\":%d,\"block_size\":%d,"
             "\"vocab_size\":%d}",
             CC, CT, CV);
    json_t *spec = json_loads(js, 0, NULL);
    kn_mem_stats a, s;
    kn_backend_mem(cpu, &a, 1);
    kn_model *m = NULL;
    if (kn_model_new(spec, 9, CB, cpu, &m, err, sizeof(err))) fail_msg("model: %s", err);
    json_decref(spec);
    kn_backend_mem(cpu, &s, 0);
    const size_t created = s.alloc - a.alloc, all_logits = (size_t)CN * CVP * sizeof(float);
    /* one chunk of logits, not all of them (white box) */
    assert_int_equal(m->acts.t[m->tfm.logits].shape[0], KN_TFM_LOGIT_ROWS);
    assert_true(KN_TFM_LOGIT_ROWS < CN);
    int *tok = malloc(CN * sizeof(int)), *tgt = malloc(CN * sizeof(int));
    for (int i = 0; i < CN; i++) {
        tok[i] = (i * 7 + i / 13) % CV;
        tgt[i] = i % 9 == 0 ? -1 : (tok[i] * 3 + 1) % CV;
    }
    /* the first inference forward over more rows than a chunk has a short
     * T: the buffer it allocates must hold the longest batch all the same */
    kn_batch shortb = {.B = CB, .T = CT - 1, .tokens = tok, .labels = NULL};
    if (kn_model_forward(m, &shortb, NULL, err, sizeof(err))) fail_msg("forward: %s", err);
    kn_batch b = {.B = CB, .T = CT, .tokens = tok, .labels = tgt};
    const kn_tensor_set *g = kn_model_grads(m);
    float *gt = malloc(g->numel * sizeof(float)), *ge = malloc(g->numel * sizeof(float));
    float lt, le;
    kn_backend_mem(cpu, &s, 0);
    assert_int_equal(s.alloc - a.alloc, created + all_logits); /* allocated once, now */
    kn_model_set_training(m, 1);
    kn_model_zero_grad(m);
    if (kn_model_forward(m, &b, &lt, err, sizeof(err))) fail_msg("forward: %s", err);
    float one;
    assert_int_equal(kn_model_logits(m, &one, 1), KN_EINVAL); /* nor any to read */
    assert_int_equal(kn_model_backward(m), KN_OK);
    cpu->to_host(gt, g->data, g->numel * sizeof(float));
    kn_model_set_training(m, 0);
    kn_model_zero_grad(m);
    if (kn_model_forward(m, &b, &le, err, sizeof(err))) fail_msg("forward: %s", err);
    kn_backend_mem(cpu, &s, 0);
    assert_int_equal(s.alloc - a.alloc, created + all_logits); /* not again */
    float *lg = malloc((size_t)CN * CV * sizeof(float));
    assert_int_equal(kn_model_logits(m, lg, (size_t)CN * CV), KN_OK);
    assert_int_equal(kn_model_backward(m), KN_OK);
    cpu->to_host(ge, g->data, g->numel * sizeof(float));
    assert_float_equal(lt, le, 1e-6 * le);
    double d2 = 0, n2 = 0;
    for (size_t i = 0; i < g->numel; i++)
        d2 += (double)(gt[i] - ge[i]) * (gt[i] - ge[i]), n2 += (double)ge[i] * ge[i];
    print_message("chunked vs whole: loss %.7g %.7g, gradients ||d|| / ||g|| %.3g\n", lt, le,
                  sqrt(d2 / n2));
    assert_true(n2 > 0 && sqrt(d2 / n2) < 1e-5);
    /* what kn_model_logits returns after an inference forward is the
     * logits of every row: their mean cross-entropy is the loss */
    kn_model_forward(m, &b, &le, err, sizeof(err));
    kn_model_logits(m, lg, (size_t)CN * CV);
    double sum = 0;
    int valid = 0;
    for (int r = 0; r < CN; r++) {
        if (tgt[r] < 0) continue;
        const float *l = lg + (size_t)r * CV;
        double mx = l[0], se = 0;
        for (int v = 1; v < CV; v++)
            mx = l[v] > mx ? l[v] : mx;
        for (int v = 0; v < CV; v++)
            se += exp(l[v] - mx);
        sum += log(se) + mx - l[tgt[r]], valid++;
    }
    assert_float_equal(sum / valid, le, 1e-5 * le);
    free(lg), free(gt), free(ge), free(tok), free(tgt);
    kn_model_destroy(m);
    kn_backend_mem(cpu, &s, 0);
    assert_int_equal(s.alloc, a.alloc);
}

/* The bytes a model allocates at creation (the ledger), on be. */
static size_t created_bytes(const kn_backend *be, int batch, kn_model **keep)
{
    char js[256], err[256];
    snprintf(js, sizeof(js),
             "{\"type\":\"gpt\",\"n_layer\":%d,\"n_head\":%d,\"n_embd\":%d,\"block_size\":%d,"
             "\"vocab_size\":%d}",
             L, NH, C, T, V);
    json_t *spec = json_loads(js, 0, NULL);
    kn_mem_stats a, s;
    kn_backend_mem(be, &a, 0);
    kn_model *m = NULL;
    if (kn_model_new(spec, 5, batch, be, &m, err, sizeof(err))) fail_msg("model: %s", err);
    json_decref(spec);
    kn_backend_mem(be, &s, 0);
    if (keep)
        *keep = m;
    else
        kn_model_destroy(m);
    return s.alloc - a.alloc;
}

/* bf16 storage of the saved qkv, attention output and MLP pre-activation
 * (backend.h's to_bf16 / from_bf16, the bf16 table's; model_tfm.c):
 * - a sequence costs exactly 8 C x 2 bytes a token a layer less than with
 *   them in fp32 (the same bf16 table without the two ops): no working
 *   buffer, the ops writing them as bf16; with one shared by the layers
 *   where the table has no attention_fused_fwd_to_bf16 (C floats a token,
 *   atty) or no matmul_fwd_to_bf16 (4 C); fp32 and tf32 keep everything
 *   in fp32 (no such ops, qkv 3 C floats a row);
 * - the training it changes is the bf16 emulation's only, by rounding:
 *   4 AdamW steps, losses within 1e-3 of the fp32-kept run's; at the
 *   first (the same weights) the gradients differ (the storage is in use),
 *   by less than 1e-2 by norm and less than bf16 differs from fp32. */
static void test_gpt_bf16_storage(void **state)
{
    (void)state;
    const kn_backend *cpu = kn_backend_cpu();
    const kn_backend *bf = kn_backend_with_precision(cpu, KN_PREC_BF16, NULL, 0);
    const kn_backend *tf = kn_backend_with_precision(cpu, KN_PREC_TF32, NULL, 0);
    kn_backend nostore = *bf, nogemm = *bf, noaout = *bf;
    nostore.to_bf16 = NULL, nostore.from_bf16 = NULL;
    nogemm.matmul_fwd_to_bf16 = NULL;
    noaout.attention_fused_fwd_to_bf16 = NULL;
    const size_t seq_bf = created_bytes(bf, 2, NULL) - created_bytes(bf, 1, NULL);
    const size_t seq_no = created_bytes(&nostore, 2, NULL) - created_bytes(&nostore, 1, NULL);
    const size_t seq_ng = created_bytes(&nogemm, 2, NULL) - created_bytes(&nogemm, 1, NULL);
    const size_t seq_na = created_bytes(&noaout, 2, NULL) - created_bytes(&noaout, 1, NULL);
    /* every tensor of this model is a multiple of 16 floats: no alignment */
    const size_t cut = (size_t)L * T * 8 * C * 2;
    print_message("a sequence: %zu bytes with bf16 storage, %zu without (%zu less); %zu with "
                  "the attention writing fp32 (%zu more), %zu with the GEMMs too (%zu more)\n",
                  seq_bf, seq_no, seq_no - seq_bf, seq_na, seq_na - seq_bf, seq_ng,
                  seq_ng - seq_bf);
    assert_int_equal(seq_no - seq_bf, cut);
    assert_int_equal(seq_na - seq_bf, (size_t)T * C * sizeof(float));
    assert_int_equal(seq_ng - seq_bf, (size_t)T * 4 * C * sizeof(float));
    kn_model *mw;
    created_bytes(bf, 1, &mw);
    assert_int_equal(mw->tfm.bf16_attn_out, 1);
    assert_int_equal(mw->tfm.work, -1);
    kn_model_destroy(mw);
    created_bytes(&noaout, 1, &mw);
    assert_int_equal(mw->tfm.bf16_gemm, 1);
    assert_int_equal(mw->tfm.bf16_attn_out, 0);
    assert_int_equal(mw->acts.t[mw->tfm.work].shape[1], C);
    kn_model_destroy(mw);
    created_bytes(&nogemm, 1, &mw);
    assert_int_equal(mw->tfm.bf16_gemm, 0);
    assert_int_equal(mw->tfm.bf16_attn_out, 0);
    assert_int_equal(mw->acts.t[mw->tfm.work].shape[1], 4 * C);
    kn_model_destroy(mw);
    const kn_backend *fp[3] = {cpu, tf, &nostore};
    for (int i = 0; i < 3; i++) {
        kn_model *m;
        created_bytes(fp[i], 1, &m);
        assert_int_equal(m->tfm.bf16_store, 0);
        assert_int_equal(m->tfm.work, -1);
        assert_int_equal(m->acts.t[m->tfm.blk[0].qkv].shape[1], 3 * C);
        assert_int_equal(m->acts.t[m->tfm.blk[0].fch].shape[1], 4 * C);
        kn_model_destroy(m);
    }

    /* bf16 kept, fp32 kept (the same bf16 table otherwise), and fp32 */
    kn_model *ms[3];
    created_bytes(bf, B, &ms[0]);
    created_bytes(&nostore, B, &ms[1]);
    created_bytes(cpu, B, &ms[2]);
    assert_int_equal(ms[0]->tfm.bf16_store, 1);
    assert_int_equal(ms[0]->acts.t[ms[0]->tfm.blk[0].qkv].shape[1], 3 * C / 2);
    assert_int_equal(ms[0]->acts.t[ms[0]->tfm.blk[0].fch].shape[1], 2 * C);
    int tok[B * T], tgt[B * T];
    batch(tok, tgt);
    kn_batch b = {.B = B, .T = T, .tokens = tok, .labels = tgt};
    kn_optim_config oc;
    kn_optim_config_default(&oc, KN_OPT_ADAMW);
    oc.lr = 1e-2f;
    const size_t n = kn_model_grads(ms[0])->numel;
    float *g[3];
    char err[256];
    for (int i = 0; i < 3; i++) {
        g[i] = malloc(n * sizeof(float));
        kn_model_set_optim(ms[i], &oc);
        kn_model_set_training(ms[i], 1);
    }
    for (int step = 0; step < 4; step++) {
        float loss[3];
        for (int i = 0; i < 3; i++) {
            kn_model_zero_grad(ms[i]);
            if (kn_model_forward(ms[i], &b, &loss[i], err, sizeof(err)))
                fail_msg("forward: %s", err);
            assert_int_equal(kn_model_backward(ms[i]), KN_OK);
            cpu->to_host(g[i], kn_model_grads(ms[i])->data, n * sizeof(float));
            assert_int_equal(kn_model_step(ms[i], NULL, NULL), KN_OK);
        }
        print_message("step %d: loss %.7g (bf16 kept) %.7g (fp32 kept) %.7g (fp32)\n", step,
                      loss[0], loss[1], loss[2]);
        assert_true(fabsf(loss[0] - loss[1]) <= 1e-3f * loss[1]);
        if (step) continue;
        /* the same weights: the gradients' change by norm, against what
         * bf16 itself costs */
        double d01 = 0, d12 = 0, n1 = 0;
        for (size_t j = 0; j < n; j++) {
            d01 += (double)(g[0][j] - g[1][j]) * (g[0][j] - g[1][j]);
            d12 += (double)(g[1][j] - g[2][j]) * (g[1][j] - g[2][j]);
            n1 += (double)g[1][j] * g[1][j];
        }
        print_message("gradients by norm: bf16 kept vs fp32 kept %.3g, bf16 vs fp32 %.3g\n",
                      sqrt(d01 / n1), sqrt(d12 / n1));
        assert_true(d01 > 0 && sqrt(d01 / n1) < 1e-2);
        assert_true(d01 < d12);
    }
    for (int i = 0; i < 3; i++) {
        free(g[i]);
        kn_model_destroy(ms[i]);
    }
}

/* ------------------------------------------------------------ reading bf16 as stored
 *
 * The bf16 table's *_bf16 ops (backend.h) let GELU, the attention
 * projection's GEMMs and the fused attention read the stored
 * qkv/atty/fch without widening them:
 * - the same bits as the same table without the six ops (the path before
 *   2026-12-01, which widened and the GEMM rounded again): losses and
 *   gradients at each of 4 AdamW steps and the weights after them, GPT
 *   with GELU's output kept and recomputed, and the text classifier; and
 *   as the table with the matmul/act ops but not the attention's (their
 *   own group: a backend may have one without the other);
 * - taken, not fallen back from: counted through a wrapping table, a
 *   training step widens nothing (the fallback: qkv and atty for the
 *   fused attention's backward, 4 C a token a layer, and fch twice, 8 C;
 *   without the attention's ops the 4 C) and calls each op once a layer
 *   (GELU's forward twice where its output is recomputed);
 * - the GEMMs writing qkv and fch as bf16 (matmul_fwd_to_bf16, with both
 *   groups above): twice a layer, and to_bf16 then stores only atty, C a
 *   token a layer instead of 8 C; the attention writing atty as bf16
 *   (attention_fused_fwd_to_bf16, with the GEMMs' op): once a layer, in
 *   place of attention_fused_fwd_bf16, and to_bf16 stores nothing; the
 *   same bits with either removed from the table (into work, then
 *   to_bf16), and none of it without the attention's ops. */

static const kn_backend *direct_inner; /* the bf16 table the wrappers call */
static size_t n_widened, n_stored;     /* elements through from_bf16, to_bf16 */
static int n_mm_fwd16, n_mm_bwd16, n_act_fwd16, n_act_bwd16, n_fa_fwd16, n_fa_bwd16, n_mm_to16,
    n_fa_to16;

static void count_to_bf16(uint16_t *dst, const float *src, size_t n)
{
    n_stored += n;
    direct_inner->to_bf16(dst, src, n);
}

static void count_mm_to16(uint16_t *out, const float *inp, const float *w, const float *bias, int N,
                          int Cc, int OC)
{
    n_mm_to16++;
    direct_inner->matmul_fwd_to_bf16(out, inp, w, bias, N, Cc, OC);
}

static void count_from_bf16(float *dst, const uint16_t *src, size_t n)
{
    n_widened += n;
    direct_inner->from_bf16(dst, src, n);
}

static void count_mm_fwd16(float *out, const uint16_t *inp, const float *w, const float *bias,
                           int N, int Cc, int OC)
{
    n_mm_fwd16++;
    direct_inner->matmul_fwd_bf16(out, inp, w, bias, N, Cc, OC);
}

static void count_mm_bwd16(float *dinp, float *dw, float *dbias, const float *dout,
                           const uint16_t *inp, const float *w, int N, int Cc, int OC)
{
    n_mm_bwd16++;
    direct_inner->matmul_bwd_bf16(dinp, dw, dbias, dout, inp, w, N, Cc, OC);
}

static void count_act_fwd16(int kind, float *out, const uint16_t *inp, size_t n)
{
    n_act_fwd16++;
    direct_inner->act_fwd_bf16(kind, out, inp, n);
}

static void count_act_bwd16(int kind, float *dinp, const uint16_t *inp, const float *out,
                            const float *dout, size_t n)
{
    n_act_bwd16++;
    direct_inner->act_bwd_bf16(kind, dinp, inp, out, dout, n);
}

static void count_fa_fwd16(float *out, float *lse, const uint16_t *qkv, int Bb, int Tt, int Cc,
                           int NHh, int causal)
{
    n_fa_fwd16++;
    direct_inner->attention_fused_fwd_bf16(out, lse, qkv, Bb, Tt, Cc, NHh, causal);
}

static void count_fa_to16(uint16_t *out, float *lse, const uint16_t *qkv, int Bb, int Tt, int Cc,
                          int NHh, int causal)
{
    n_fa_to16++;
    direct_inner->attention_fused_fwd_to_bf16(out, lse, qkv, Bb, Tt, Cc, NHh, causal);
}

static void count_fa_bwd16(float *dqkv, const float *dout, const uint16_t *qkv,
                           const uint16_t *out, const float *lse, int Bb, int Tt, int Cc, int NHh,
                           int causal)
{
    n_fa_bwd16++;
    direct_inner->attention_fused_bwd_bf16(dqkv, dout, qkv, out, lse, Bb, Tt, Cc, NHh, causal);
}

static void counts_reset(void)
{
    n_widened = n_stored = 0;
    n_mm_fwd16 = n_mm_bwd16 = n_act_fwd16 = n_act_bwd16 = n_fa_fwd16 = n_fa_bwd16 = 0;
    n_mm_to16 = n_fa_to16 = 0;
}

/* spec on be (gelu_keep as kn_tfm_gelu_keep_bytes), batch 3 */
static kn_model *tfm_on(const char *spec_json, const kn_backend *be, size_t gelu_keep)
{
    char err[256];
    json_t *spec = json_loads(spec_json, 0, NULL);
    const size_t keep = kn_tfm_gelu_keep_bytes;
    kn_tfm_gelu_keep_bytes = gelu_keep;
    kn_model *m = NULL;
    if (kn_model_new(spec, 5, B, be, &m, err, sizeof(err))) fail_msg("model: %s", err);
    kn_tfm_gelu_keep_bytes = keep;
    json_decref(spec);
    return m;
}

/* direct: the table with the matmul/act ops, the attention's where attn =
 * 1, the GEMMs writing bf16 taken where gemm16 = 1, the attention writing
 * bf16 where aout = 1; fallback: with none of them */
static void direct_vs_fallback(const char *what, const char *spec, int gpt_model, size_t gelu_keep,
                               const kn_backend *direct, int attn, int gemm16, int aout,
                               const kn_backend *fallback)
{
    kn_model *md = tfm_on(spec, direct, gelu_keep), *mf = tfm_on(spec, fallback, gelu_keep);
    assert_int_equal(md->tfm.bf16_direct, 1);
    assert_int_equal(md->tfm.bf16_attn, attn);
    assert_int_equal(md->tfm.bf16_gemm, gemm16);
    assert_int_equal(md->tfm.bf16_attn_out, aout);
    assert_int_equal(mf->tfm.bf16_store, 1);
    assert_int_equal(mf->tfm.bf16_direct, 0);
    assert_int_equal(mf->tfm.bf16_attn, 0);
    assert_int_equal(mf->tfm.bf16_gemm, 0);
    assert_int_equal(mf->tfm.bf16_attn_out, 0);
    const int Lm = md->tfm.L, Cm = md->tfm.C, kept = md->tfm.gelu_kept;
    const size_t NC = (size_t)B * T * Cm;
    int tok[B * T], tgt[B * T], lab[B] = {1, 0, 2};
    batch(tok, tgt);
    kn_batch b = {.B = B, .T = T, .tokens = tok, .labels = gpt_model ? tgt : lab};
    kn_optim_config oc;
    kn_optim_config_default(&oc, KN_OPT_ADAMW);
    oc.lr = 1e-2f;
    kn_model_set_optim(md, &oc), kn_model_set_optim(mf, &oc);
    kn_model_set_training(md, 1), kn_model_set_training(mf, 1);
    const size_t n = kn_model_grads(md)->numel;
    float *gd = malloc(n * sizeof(float)), *gf = malloc(n * sizeof(float));
    char err[256];
    for (int step = 0; step < 4; step++) {
        float ld, lf;
        kn_model *ms[2] = {md, mf};
        float *ls[2] = {&ld, &lf}, *gs[2] = {gd, gf};
        for (int i = 0; i < 2; i++) {
            counts_reset();
            kn_model_zero_grad(ms[i]);
            if (kn_model_forward(ms[i], &b, ls[i], err, sizeof(err))) fail_msg("forward: %s", err);
            assert_int_equal(kn_model_backward(ms[i]), KN_OK);
            direct->to_host(gs[i], kn_model_grads(ms[i])->data, n * sizeof(float));
            assert_int_equal(kn_model_step(ms[i], NULL, NULL), KN_OK);
            if (step) continue;
            print_message("%s, %s: %zu floats widened a step (%zu C a token a layer), %zu "
                          "stored (%zu C), ops %d %d %d %d %d %d %d %d\n",
                          what, i ? "fallback" : "direct", n_widened, n_widened / NC / Lm, n_stored,
                          n_stored / NC / Lm, n_mm_fwd16, n_mm_bwd16, n_act_fwd16, n_act_bwd16,
                          n_fa_fwd16, n_fa_bwd16, n_mm_to16, n_fa_to16);
            assert_int_equal(n_widened, (size_t)Lm * (i ? 12 : attn ? 0 : 4) * NC);
            assert_int_equal(n_stored, (size_t)Lm * (i ? 8 : aout ? 0 : gemm16 ? 1 : 8) * NC);
            assert_int_equal(n_mm_to16, !i && gemm16 ? 2 * Lm : 0);
            assert_int_equal(n_fa_to16, !i && aout ? Lm : 0);
            assert_int_equal(n_fa_fwd16, i || !attn || aout ? 0 : Lm);
            assert_int_equal(n_fa_bwd16, i || !attn ? 0 : Lm);
            assert_int_equal(n_mm_fwd16, i ? 0 : Lm);
            assert_int_equal(n_mm_bwd16, i ? 0 : Lm);
            assert_int_equal(n_act_fwd16, i ? 0 : (kept ? 1 : 2) * Lm);
            assert_int_equal(n_act_bwd16, i ? 0 : Lm);
        }
        assert_memory_equal(&ld, &lf, sizeof(float));
        assert_memory_equal(gd, gf, n * sizeof(float));
    }
    const size_t np = kn_model_params(md)->numel;
    float *pd = malloc(np * sizeof(float)), *pf = malloc(np * sizeof(float));
    direct->to_host(pd, kn_model_params(md)->data, np * sizeof(float));
    direct->to_host(pf, kn_model_params(mf)->data, np * sizeof(float));
    assert_memory_equal(pd, pf, np * sizeof(float));
    free(gd), free(gf), free(pd), free(pf);
    kn_model_destroy(md), kn_model_destroy(mf);
}

static void test_bf16_read_as_stored(void **state)
{
    (void)state;
    const kn_backend *bf = kn_backend_with_precision(kn_backend_cpu(), KN_PREC_BF16, NULL, 0);
    assert_non_null(bf->matmul_fwd_bf16);
    assert_non_null(bf->attention_fused_fwd_bf16);
    direct_inner = bf;
    assert_non_null(bf->matmul_fwd_to_bf16);
    kn_backend direct = *bf, noattn, fallback, nogemm, noaout;
    direct.to_bf16 = count_to_bf16, direct.from_bf16 = count_from_bf16;
    direct.matmul_fwd_to_bf16 = count_mm_to16;
    direct.attention_fused_fwd_to_bf16 = count_fa_to16;
    direct.matmul_fwd_bf16 = count_mm_fwd16, direct.matmul_bwd_bf16 = count_mm_bwd16;
    direct.act_fwd_bf16 = count_act_fwd16, direct.act_bwd_bf16 = count_act_bwd16;
    direct.attention_fused_fwd_bf16 = count_fa_fwd16;
    direct.attention_fused_bwd_bf16 = count_fa_bwd16;
    noattn = direct;
    noattn.attention_fused_fwd_bf16 = NULL, noattn.attention_fused_bwd_bf16 = NULL;
    noattn.attention_fused_fwd_to_bf16 = NULL;
    nogemm = direct;
    nogemm.matmul_fwd_to_bf16 = NULL;
    noaout = direct;
    noaout.attention_fused_fwd_to_bf16 = NULL;
    fallback = noattn;
    fallback.matmul_fwd_to_bf16 = NULL;
    fallback.matmul_fwd_bf16 = NULL, fallback.matmul_bwd_bf16 = NULL;
    fallback.act_fwd_bf16 = NULL, fallback.act_bwd_bf16 = NULL;
    char gpt_spec[256], cls_spec[256];
    snprintf(gpt_spec, sizeof(gpt_spec),
             "{\"type\":\"gpt\",\"n_layer\":%d,\"n_head\":%d,\"n_embd\":%d,\"block_size\":%d,"
             "\"vocab_size\":%d}",
             L, NH, C, T, V);
    snprintf(cls_spec, sizeof(cls_spec),
             "{\"type\":\"txtcls\",\"n_layer\":2,\"n_head\":2,\"n_embd\":24,\"block_size\":%d,"
             "\"vocab_size\":%d,\"classes\":3}",
             T, V);
    direct_vs_fallback("gpt, GELU kept", gpt_spec, 1, (size_t)64 << 20, &direct, 1, 1, 1,
                       &fallback);
    direct_vs_fallback("gpt, GELU recomputed", gpt_spec, 1, 0, &direct, 1, 1, 1, &fallback);
    direct_vs_fallback("txtcls", cls_spec, 0, (size_t)64 << 20, &direct, 1, 1, 1, &fallback);
    direct_vs_fallback("gpt, no attention ops", gpt_spec, 1, 0, &noattn, 0, 0, 0, &fallback);
    direct_vs_fallback("gpt, no GEMM writing bf16", gpt_spec, 1, 0, &nogemm, 1, 0, 0, &fallback);
    direct_vs_fallback("gpt, no attention writing bf16", gpt_spec, 1, 0, &noaout, 1, 1, 0,
                       &fallback);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ledger),
        cmocka_unit_test(test_gpt_memory),
        cmocka_unit_test(test_gpt_inplace_dlogits),
        cmocka_unit_test(test_gelu_recompute_bits),
        cmocka_unit_test(test_gpt_chunked_classifier),
        cmocka_unit_test(test_gpt_bf16_storage),
        cmocka_unit_test(test_bf16_read_as_stored),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
