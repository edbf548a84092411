/* kn_model_generate's KV cache (CPU backend) against the reference path
 * (sc.no_kv_cache: the whole context recomputed per token): the same tokens,
 * greedy and sampled, for prompts that fit the block, that fill it exactly
 * and that run past it (the sliding window), with several layers and heads.
 * And the reason it exists, counted: with it a new token costs the matmul
 * rows of one position, without it those of the whole context (its speed
 * is tests/bench/bench_generate_kv's to print: no timed assertion here). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "nn/model.h"
#include "nn/precision.h"

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

/* The reason the cache exists, counted rather than timed (the speed is
 * bench_generate_kv's to print, tests/bench): the CPU backend with its
 * matmul_fwd counting the rows it multiplies. A new token costs the rows of
 * one position with the cache (what a one-token forward pass costs: r1),
 * and the whole context's without it: 64 new tokens after a 1-token prompt
 * are 64 x r1 rows against (1 + 2 + ... + 64) x r1, 32.5x the work. */
static void (*cpu_matmul_fwd)(float *, const float *, const float *, const float *, int, int, int);
static size_t matmul_rows;

static void counting_matmul_fwd(float *out, const float *inp, const float *w, const float *bias,
                                int N, int C, int OC)
{
    matmul_rows += (size_t)N;
    cpu_matmul_fwd(out, inp, w, bias, N, C, OC);
}

static size_t rows_of(kn_model *m, int n_new, int no_kv_cache)
{
    int prompt[1] = {3}, *out = malloc((size_t)(1 + n_new) * sizeof(int));
    char err[256];
    kn_sample_config sc = {.no_kv_cache = no_kv_cache};
    matmul_rows = 0;
    assert_int_equal(kn_model_generate(m, prompt, 1, n_new, &sc, out, err, sizeof(err)), KN_OK);
    free(out);
    return matmul_rows;
}

static void kv_costs_one_position_a_token(void **state)
{
    (void)state;
    static kn_backend counting;
    counting = *kn_backend_cpu();
    cpu_matmul_fwd = counting.matmul_fwd;
    counting.matmul_fwd = counting_matmul_fwd;
    kn_model *m = gpt_on(&counting, 1.0f, 2, 4, 64, 80, 256, 7);
    const size_t r1 = rows_of(m, 1, 1); /* one token: a forward pass of one position */
    assert_true(r1 >= 4 * 2 + 1);       /* qkv, proj, fc, fcproj a layer; the logits */
    const size_t kv = rows_of(m, 64, 0), ref = rows_of(m, 64, 1);
    fprintf(stderr, "64 new tokens: %zu matmul rows with the KV cache, %zu without (%.1fx)\n", kv,
            ref, (double)ref / (double)kv);
    assert_int_equal(kv, 64 * r1);
    assert_int_equal(ref, (size_t)64 * 65 / 2 * r1);
    kn_model_destroy(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(kv_equals_reference),
        cmocka_unit_test(kv_equals_reference_bf16),
        cmocka_unit_test(kv_costs_one_position_a_token),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
