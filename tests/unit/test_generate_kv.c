/* kn_model_generate's KV cache (CPU backend) against the reference path
 * (sc.no_kv_cache: the whole context recomputed per token): the same tokens,
 * greedy and sampled, for prompts that fit the block, that fill it exactly
 * and that run past it (the sliding window), with several layers and heads.
 * And the reason it exists: 256 new tokens are at least 3x faster with it on
 * a model whose block holds them (the goal is 5x at full size; this
 * machine is shared, so the unit test keeps a margin). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "nn/model.h"
#include "nn/precision.h"

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static kn_model *gpt_on(const kn_backend *be, float scale, int L, int NH, int C, int T, int V,
                        uint64_t seed)
{
    json_t *spec = json_pack("{s:s,s:i,s:i,s:i,s:i,s:i}", "type", "gpt", "n_layer", L, "n_head", NH,
                             "n_embd", C, "block_size", T, "vocab_size", V);
    kn_model *m = NULL;
    char err[256];
    int rc = kn_model_new(spec, seed, 1, be, &m, err, sizeof(err));
    json_decref(spec);
    if (rc != KN_OK) fail_msg("model: %s", err);
    /* GPT-2's init (std 0.02) makes attention nearly uniform and the output
     * insensitive to it; weights 25x larger make every position and every
     * rounding matter, so a wrong key, value or scale changes the tokens */
    const kn_tensor_set *ps = kn_model_params(m);
    for (int i = 0; i < ps->n; i++) {
        size_t n = ps->t[i].numel;
        float *w = malloc(n * sizeof(float));
        assert_int_equal(kn_model_get_tensor(m, ps->t[i].name, w, n), KN_OK);
        for (size_t j = 0; j < n; j++)
            w[j] *= scale;
        assert_int_equal(kn_model_set_tensor(m, ps->t[i].name, w, n), KN_OK);
        free(w);
    }
    return m;
}

static kn_model *gpt(int L, int NH, int C, int T, int V, uint64_t seed)
{
    return gpt_on(NULL, 25.0f, L, NH, C, T, V, seed);
}

/* Generates n_new after prompt both ways; fails on the first difference. */
static void same(kn_model *m, const int *prompt, int np, int n_new, float temp, int top_k)
{
    int *a = malloc((size_t)(np + n_new) * sizeof(int)),
        *b = malloc((size_t)(np + n_new) * sizeof(int));
    char err[256];
    kn_sample_config kv = {.temperature = temp, .top_k = top_k, .seed = 99};
    kn_sample_config ref = kv;
    ref.no_kv_cache = 1;
    assert_int_equal(kn_model_generate(m, prompt, np, n_new, &kv, a, err, sizeof(err)), KN_OK);
    assert_int_equal(kn_model_generate(m, prompt, np, n_new, &ref, b, err, sizeof(err)), KN_OK);
    for (int i = 0; i < np + n_new; i++)
        if (a[i] != b[i])
            fail_msg("prompt %d tokens, T=%.1f: token %d: kv %d, reference %d", np, (double)temp, i,
                     a[i], b[i]);
    free(a);
    free(b);
}

static void kv_equals_reference(void **state)
{
    (void)state;
    kn_model *m = gpt(3, 4, 64, 48, 211, 5);
    int prompt[48];
    for (int i = 0; i < 48; i++)
        prompt[i] = (i * 37 + 11) % 211;
    same(m, prompt, 1, 40, 0, 0);     /* fits the block */
    same(m, prompt, 7, 41, 0, 0);     /* fills it exactly: 7 + 41 = 48 */
    same(m, prompt, 20, 60, 0, 0);    /* runs past it: the window slides */
    same(m, prompt, 48, 5, 0, 0);     /* a full prompt: the reference path throughout */
    same(m, prompt, 5, 60, 0.9f, 20); /* sampled */
    same(m, prompt, 3, 30, 1.5f, 0);
    kn_model_destroy(m);
}

/* The bf16 emulation (fused attention, qkv and fch kept as bf16): the
 * cache's rows compute with the inputs a full forward computes with
 * (model.c's kv_step rounds qkv and fch as the forward keeps them; the
 * prompt's keys and values come from the kept bf16 qkv), so the greedy
 * tokens are the reference's. Not the logits' bits: kv_attention sums in
 * fp32 where the flash emulation rounds P to bf16, so sampling, which
 * follows small differences, is left out. Weights 6x (test_cuda_parity's
 * gen_parity): softmax far from one-hot, so a rounding difference shows
 * (with the cache in fp32, as before 2026-12-01, the first case differed
 * at token 22). */
static void kv_equals_reference_bf16(void **state)
{
    (void)state;
    const kn_backend *bf = kn_backend_with_precision(kn_backend_cpu(), KN_PREC_BF16, NULL, 0);
    kn_model *m = gpt_on(bf, 6.0f, 2, 4, 64, 40, 50, 11);
    int prompt[40];
    for (int i = 0; i < 40; i++)
        prompt[i] = (i * 17 + 3) % 50;
    same(m, prompt, 5, 30, 0, 0);
    same(m, prompt, 3, 48, 0, 0); /* past the block: the window slides */
    same(m, prompt, 1, 39, 0, 0);
    kn_model_destroy(m);
}

static void kv_is_faster(void **state)
{
    (void)state;
    kn_model *m = gpt(2, 4, 64, 300, 256, 7);
    int prompt[1] = {3}, *out = malloc(300 * sizeof(int));
    char err[256];
    kn_sample_config kv = {0}, ref = {.no_kv_cache = 1};
    double t0 = now_s();
    assert_int_equal(kn_model_generate(m, prompt, 1, 256, &kv, out, err, sizeof(err)), KN_OK);
    double t_kv = now_s() - t0;
    t0 = now_s();
    assert_int_equal(kn_model_generate(m, prompt, 1, 256, &ref, out, err, sizeof(err)), KN_OK);
    double t_ref = now_s() - t0;
    fprintf(stderr,
            "256 new tokens: KV cache %.3f s (%.0f tok/s), reference %.3f s (%.0f tok/s): %.1fx\n",
            t_kv, 256 / t_kv, t_ref, 256 / t_ref, t_ref / t_kv);
    assert_true(t_ref / t_kv >= 3.0);
    free(out);
    kn_model_destroy(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(kv_equals_reference),
        cmocka_unit_test(kv_equals_reference_bf16),
        cmocka_unit_test(kv_is_faster),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
