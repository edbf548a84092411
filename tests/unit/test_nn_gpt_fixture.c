/* test_nn_gpt_fixture.c: the C GPT against PyTorch (tests/nn/make_gpt_fixture.py):
 * same weights, same batch; compares logits and loss (|c - ref| <= 1e-4 +
 * 1e-4 |ref|), every parameter gradient (|c - ref| <= 1e-3 * max|ref| of the
 * tensor + 1e-7, i.e. 0.1% of the tensor's scale) and the losses of ten AdamW
 * steps (|c - ref| <= 1e-3 + 1e-3 |ref|). llm.c's test_gpt2 uses 1e-2 / 2e-2.
 * The fixture is committed: a missing file is a failure. KILN_TEST_BACKEND=cuda
 * runs the same comparison on the GPU (tests/gpu/run); it skips (77) only when
 * the named backend cannot load, and tests/gpu/run counts that as a failure on
 * a machine with a GPU. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "nn/model.h"
#include "nn/safetensors.h"

#define MODEL_PATH  KILN_SOURCE_DIR "/tests/nn/gpt_fixture_model.safetensors"
#define EXPECT_PATH KILN_SOURCE_DIR "/tests/nn/gpt_fixture_expected.safetensors"

/* The backend under test: KILN_TEST_BACKEND (tests/gpu/run sets cuda), else the CPU. */
static const kn_backend *backend;

static float *tensor_f32(const kn_safetensors_file *f, const char *name, size_t *numel)
{
    const kn_safetensors_tensor *t = kn_safetensors_find(f, name);
    if (!t) fail_msg("fixture: no tensor %s", name);
    assert_string_equal(t->dtype, "F32");
    float *v = malloc(t->nbytes + 4);
    memcpy(v, t->data, t->nbytes);
    *numel = (size_t)t->numel;
    return v;
}

static void test_gpt_vs_pytorch(void **state)
{
    (void)state;
    if (access(MODEL_PATH, R_OK) != 0 || access(EXPECT_PATH, R_OK) != 0)
        fail_msg("%s or %s is missing: the fixture is committed (tests/nn/make_gpt_fixture.py "
                 "makes it)",
                 MODEL_PATH, EXPECT_PATH);
    char err[256];
    kn_model *m = NULL;
    if (kn_model_load_file(MODEL_PATH, 2, backend, &m, NULL, err, sizeof(err)))
        fail_msg("load model: %s", err);
    unsigned char *buf;
    size_t len, n;
    kn_safetensors_file f;
    if (kn_safetensors_read_file(EXPECT_PATH, 1u << 30, &buf, &len, err, sizeof(err)) ||
        kn_safetensors_parse(buf, len, &f, err, sizeof(err)))
        fail_msg("expected file: %s", err);
    float *tok_f = tensor_f32(&f, "tokens", &n);
    size_t BT = n;
    float *tgt_f = tensor_f32(&f, "targets", &n);
    int *tokens = malloc(BT * sizeof(int)), *targets = malloc(BT * sizeof(int));
    for (size_t i = 0; i < BT; i++)
        tokens[i] = (int)tok_f[i], targets[i] = (int)tgt_f[i];
    const kn_safetensors_tensor *tt = kn_safetensors_find(&f, "tokens");
    kn_batch b = {
        .B = (int)tt->shape[0], .T = (int)tt->shape[1], .tokens = tokens, .labels = targets};

    /* forward: logits and loss */
    float loss;
    kn_model_zero_grad(m);
    if (kn_model_forward(m, &b, &loss, err, sizeof(err))) fail_msg("forward: %s", err);
    size_t nl;
    float *ref_logits = tensor_f32(&f, "logits", &nl);
    float *logits = malloc(nl * sizeof(float));
    assert_int_equal(kn_model_logits(m, logits, nl), KN_OK);
    double worst = 0;
    for (size_t i = 0; i < nl; i++) {
        double e = fabs(logits[i] - ref_logits[i]) / (1e-4 + 1e-4 * fabs(ref_logits[i]));
        if (e > worst) worst = e;
        if (e > 1.0) fail_msg("logits[%zu]: C %.7g PyTorch %.7g", i, logits[i], ref_logits[i]);
    }
    float *ref_loss = tensor_f32(&f, "loss", &n);
    assert_float_equal(loss, ref_loss[0], 1e-4 + 1e-4 * fabs(ref_loss[0]));
    printf("# loss C %.7f PyTorch %.7f; logits worst err/tol %.3f\n", loss, ref_loss[0], worst);

    /* backward: every parameter gradient */
    assert_int_equal(kn_model_backward(m), KN_OK);
    const kn_tensor_set *P = kn_model_params(m), *G = kn_model_grads(m);
    for (int t = 0; t < P->n; t++) {
        char name[128];
        snprintf(name, sizeof(name), "grad.%s", P->t[t].name);
        float *ref = tensor_f32(&f, name, &n);
        assert_int_equal(n, P->t[t].numel);
        float *g = malloc(n * sizeof(float));
        G->be->to_host(g, G->data + G->t[t].offset, n * sizeof(float));
        double scale = 0;
        for (size_t i = 0; i < n; i++)
            scale = fmax(scale, fabs(ref[i]));
        double tol = 1e-3 * scale + 1e-7, gw = 0;
        for (size_t i = 0; i < n; i++) {
            double e = fabs(g[i] - ref[i]);
            gw = fmax(gw, e / tol);
            if (e > tol) fail_msg("%s[%zu]: C %.7g PyTorch %.7g", name, i, g[i], ref[i]);
        }
        printf("# %-28s max|ref| %.3e worst err/tol %.3f\n", P->t[t].name, scale, gw);
        free(g);
        free(ref);
    }

    /* ten AdamW steps on the same batch */
    kn_optim_config oc;
    json_t *oj = json_loads(json_string_value(json_object_get(f.metadata, "kiln.optim")), 0, NULL);
    if (!oj || kn_optim_config_from_json(&oc, oj, err, sizeof(err)))
        fail_msg("fixture kiln.optim: %s", err);
    json_decref(oj);
    assert_int_equal(kn_model_set_optim(m, &oc), KN_OK);
    float *ref_losses = tensor_f32(&f, "losses", &n);
    for (size_t s = 0; s < n; s++) {
        kn_model_zero_grad(m);
        assert_int_equal(kn_model_forward(m, &b, &loss, NULL, 0), KN_OK);
        kn_model_backward(m);
        kn_model_step(m, NULL, NULL);
        printf("# step %zu loss C %.6f PyTorch %.6f\n", s, loss, ref_losses[s]);
        assert_float_equal(loss, ref_losses[s], 1e-3 + 1e-3 * fabs(ref_losses[s]));
    }
    free(ref_losses);
    free(ref_loss);
    free(ref_logits);
    free(logits);
    free(tok_f);
    free(tgt_f);
    free(tokens);
    free(targets);
    kn_safetensors_file_free(&f);
    free(buf);
    kn_model_destroy(m);
}

int main(void)
{
    const char *name = getenv("KILN_TEST_BACKEND") ? getenv("KILN_TEST_BACKEND") : "cpu";
    if (!(backend = kn_backend_get(name))) {
        printf("test_nn_gpt_fixture: SKIPPED: backend '%s' not available: %s\n", name,
               kn_backend_why_not(name));
        return 77;
    }
    printf("# backend %s\n", backend->name);
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_gpt_vs_pytorch)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
