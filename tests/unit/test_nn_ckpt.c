/* test_nn_ckpt.c: safetensors checkpoints. load(save(x)) is bit-identical
 * (weights, optimizer moments, step, and the re-saved bytes); a resumed model
 * trains bit-identically to the uninterrupted one; an independent reader
 * (jansson on the raw header) sees the documented layout; hostile files
 * (truncated, bad lengths, overlapping offsets, wrong dtype or shape, random
 * corruption) are refused with an error, never a crash. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "nn/model.h"
#include "nn/rng.h"
#include "nn/safetensors.h"

static const char *GPT_SPEC = "{\"type\":\"gpt\",\"n_layer\":2,\"n_head\":2,\"n_embd\":8,"
                              "\"block_size\":8,\"vocab_size\":30}";

static kn_model *make(const char *spec_json, int max_b)
{
    json_t *spec = json_loads(spec_json, 0, NULL);
    kn_model *m = NULL;
    char err[256];
    if (kn_model_new(spec, 99, max_b, NULL, &m, err, sizeof(err))) fail_msg("%s", err);
    json_decref(spec);
    return m;
}

static int tokens[16], labels[16];

static void train_steps(kn_model *m, int n)
{
    kn_batch b = {.B = 2, .T = 8, .tokens = tokens, .labels = labels};
    for (int i = 0; i < n; i++) {
        float loss;
        kn_model_zero_grad(m);
        assert_int_equal(kn_model_forward(m, &b, &loss, NULL, 0), KN_OK);
        kn_model_backward(m);
        kn_model_step(m, NULL, NULL);
    }
}

static kn_model *trained_gpt(void)
{
    kn_rng r;
    kn_rng_init(&r, 1);
    for (int i = 0; i < 16; i++)
        tokens[i] = (int)(kn_rng_u64(&r) % 30);
    for (int i = 0; i < 16; i++)
        labels[i] = (int)(kn_rng_u64(&r) % 30);
    kn_model *m = make(GPT_SPEC, 2);
    kn_optim_config oc;
    kn_optim_config_default(&oc, KN_OPT_ADAMW);
    oc.weight_decay = 0.1f;
    oc.grad_clip = 1.0f;
    oc.schedule = KN_LR_COSINE;
    oc.warmup = 2;
    oc.total = 20;
    kn_model_set_optim(m, &oc);
    train_steps(m, 3);
    return m;
}

static void test_roundtrip_and_resume(void **state)
{
    (void)state;
    kn_model *a = trained_gpt();
    json_t *extra = json_pack("{s:s}", "kiln.tokenizer_sha256", "abc123");
    unsigned char *buf, *buf2;
    size_t len, len2;
    char err[256];
    assert_int_equal(kn_model_save_buffer(a, extra, &buf, &len, err, sizeof(err)), KN_OK);
    kn_model *b = NULL;
    json_t *meta = NULL;
    assert_int_equal(kn_model_load_buffer(buf, len, 2, NULL, &b, &meta, err, sizeof(err)), KN_OK);
    assert_string_equal(json_string_value(json_object_get(meta, "kiln.tokenizer_sha256")),
                        "abc123");
    assert_string_equal(json_string_value(json_object_get(meta, "kiln.step")), "3");
    const kn_tensor_set *pa = kn_model_params(a), *pb = kn_model_params(b);
    assert_int_equal(pa->numel, pb->numel);
    assert_memory_equal(pa->data, pb->data, pa->numel * sizeof(float));
    assert_memory_equal(kn_model_optim(a)->m.data, kn_model_optim(b)->m.data,
                        pa->numel * sizeof(float));
    assert_memory_equal(kn_model_optim(a)->v.data, kn_model_optim(b)->v.data,
                        pa->numel * sizeof(float));
    assert_int_equal(kn_model_optim(b)->step, 3);
    assert_int_equal(kn_model_save_buffer(b, extra, &buf2, &len2, err, sizeof(err)), KN_OK);
    assert_int_equal(len, len2);
    assert_memory_equal(buf, buf2, len);
    /* resume exactness: 3 more steps on both */
    train_steps(a, 3);
    train_steps(b, 3);
    assert_memory_equal(pa->data, pb->data, pa->numel * sizeof(float));
    /* file round trip */
    char path[256];
    snprintf(path, sizeof(path), "%s/test_nn_ckpt_%d.safetensors", KILN_BINARY_DIR, (int)getpid());
    assert_int_equal(kn_model_save_file(a, NULL, path, err, sizeof(err)), KN_OK);
    kn_model *c = NULL;
    assert_int_equal(kn_model_load_file(path, 1, NULL, &c, NULL, err, sizeof(err)), KN_OK);
    assert_memory_equal(pa->data, kn_model_params(c)->data, pa->numel * sizeof(float));
    unlink(path);
    kn_model_destroy(c);
    free(buf);
    free(buf2);
    json_decref(meta);
    json_decref(extra);
    kn_model_destroy(a);
    kn_model_destroy(b);
}

/* Parses the header with jansson only and checks shapes, order and values. */
static void test_independent_reader(void **state)
{
    (void)state;
    kn_model *m = make("{\"type\":\"mlp\",\"sizes\":[5,4,3]}", 1);
    unsigned char *buf;
    size_t len;
    assert_int_equal(kn_model_save_buffer(m, NULL, &buf, &len, NULL, 0), KN_OK);
    uint64_t hlen = 0;
    for (int i = 0; i < 8; i++)
        hlen |= (uint64_t)buf[i] << (8 * i);
    assert_int_equal(hlen % 8, 0);
    json_t *h = json_loadb((const char *)buf + 8, hlen, 0, NULL);
    assert_non_null(h);
    const char *names[] = {"layers.0.weight", "layers.0.bias", "layers.2.weight", "layers.2.bias"};
    const int shapes[4][2] = {{4, 5}, {4, 0}, {3, 4}, {3, 0}};
    size_t expect_off = 0;
    for (int t = 0; t < 4; t++) {
        json_t *e = json_object_get(h, names[t]);
        assert_non_null(e);
        assert_string_equal(json_string_value(json_object_get(e, "dtype")), "F32");
        json_t *sh = json_object_get(e, "shape");
        int nd = shapes[t][1] ? 2 : 1;
        assert_int_equal(json_array_size(sh), nd);
        size_t numel = 1;
        for (int d = 0; d < nd; d++) {
            assert_int_equal(json_integer_value(json_array_get(sh, d)), shapes[t][d]);
            numel *= (size_t)shapes[t][d];
        }
        json_t *of = json_object_get(e, "data_offsets");
        size_t b0 = (size_t)json_integer_value(json_array_get(of, 0));
        size_t b1 = (size_t)json_integer_value(json_array_get(of, 1));
        assert_int_equal(b0, expect_off); /* fixed order, back to back */
        assert_int_equal(b1 - b0, 4 * numel);
        float vals[20];
        assert_int_equal(kn_model_get_tensor(m, names[t], vals, numel), KN_OK);
        assert_memory_equal(buf + 8 + hlen + b0, vals, 4 * numel);
        expect_off = b1;
    }
    assert_int_equal(8 + hlen + expect_off, len);
    json_t *md = json_object_get(h, "__metadata__");
    json_t *spec = json_loads(json_string_value(json_object_get(md, "kiln.spec")), 0, NULL);
    assert_string_equal(json_string_value(json_object_get(spec, "type")), "mlp");
    assert_null(json_object_get(md, "kiln.optim")); /* no optimizer attached */
    json_decref(spec);
    json_decref(h);
    free(buf);
    kn_model_destroy(m);
}

static int load_rc(const unsigned char *buf, size_t len, char *err, size_t errsz)
{
    kn_model *m = NULL;
    int rc = kn_model_load_buffer(buf, len, 1, NULL, &m, NULL, err, errsz);
    if (rc == KN_OK)
        kn_model_destroy(m);
    else
        assert_null(m);
    return rc;
}

/* A handmade file: header text + data bytes. */
static unsigned char *craft(const char *hdr, size_t datalen, size_t *len)
{
    size_t h = strlen(hdr);
    unsigned char *b = calloc(8 + h + datalen, 1);
    for (int i = 0; i < 8; i++)
        b[i] = (unsigned char)((uint64_t)h >> (8 * i));
    memcpy(b + 8, hdr, h);
    *len = 8 + h + datalen;
    return b;
}

static void test_hostile(void **state)
{
    (void)state;
    char err[256];
    kn_model *m = make("{\"type\":\"mlp\",\"sizes\":[3,2]}", 1);
    unsigned char *buf;
    size_t len;
    assert_int_equal(kn_model_save_buffer(m, NULL, &buf, &len, NULL, 0), KN_OK);
    assert_int_equal(load_rc(buf, len, err, sizeof(err)), KN_OK);
    /* every truncation */
    for (size_t n = 0; n < len; n++) {
        err[0] = 0;
        assert_int_not_equal(load_rc(buf, n, err, sizeof(err)), KN_OK);
        assert_true(strlen(err) > 0);
    }
    /* header length beyond the file, and absurdly large */
    unsigned char *c = malloc(len);
    memcpy(c, buf, len);
    c[0] = 0xff, c[1] = 0xff;
    assert_int_equal(load_rc(c, len, err, sizeof(err)), KN_ECORRUPT);
    memset(c, 0xff, 8);
    assert_int_equal(load_rc(c, len, err, sizeof(err)), KN_ECORRUPT);
    /* random byte corruption. safetensors has no checksum, so what must happen
     * depends on where the bytes changed: (a) in the 8-byte header length:
     * refused (the JSON no longer ends where the data begins); (b) only in
     * the tensor bytes: accepted, and the weights are exactly those bytes;
     * (c) in the JSON header: mostly refused (a digit of the seed or a space
     * may change harmlessly). Whatever is accepted holds the weights the
     * file's own header points at. Half the rounds hit the data only. */
    uint64_t hlen = 0;
    for (int i = 0; i < 8; i++)
        hlen |= (uint64_t)buf[i] << (8 * i);
    size_t data0 = 8 + (size_t)hlen;
    assert_true(data0 < len);
    kn_rng r;
    kn_rng_init(&r, 7);
    int n_len = 0, n_data = 0, n_hdr = 0, hdr_refused = 0;
    for (int it = 0; it < 2000; it++) {
        unsigned char *x = malloc(len); /* exact size: ASan sees any read past it */
        memcpy(x, buf, len);
        for (int k = 0; k < 3; k++) {
            size_t at = it % 2 ? data0 + kn_rng_u64(&r) % (len - data0) : kn_rng_u64(&r) % len;
            x[at] = (unsigned char)kn_rng_u64(&r);
        }
        int in_len = memcmp(x, buf, 8) != 0, in_hdr = memcmp(x + 8, buf + 8, hlen) != 0;
        int in_data = memcmp(x + data0, buf + data0, len - data0) != 0;
        kn_model *lm = NULL;
        err[0] = 0;
        int rc = kn_model_load_buffer(x, len, 1, NULL, &lm, NULL, err, sizeof(err));
        if (rc == KN_OK) {
            /* the loaded weights are the bytes the (possibly changed) header names */
            kn_safetensors_file f;
            assert_int_equal(kn_safetensors_parse(x, len, &f, err, sizeof(err)), KN_OK);
            const kn_tensor_set *P = kn_model_params(lm);
            for (int t = 0; t < P->n; t++) {
                const kn_safetensors_tensor *st = kn_safetensors_find(&f, P->t[t].name);
                assert_non_null(st);
                assert_int_equal(st->nbytes, P->t[t].numel * sizeof(float));
                float *w = malloc(st->nbytes);
                assert_int_equal(kn_model_get_tensor(lm, P->t[t].name, w, P->t[t].numel), KN_OK);
                assert_memory_equal(w, st->data, st->nbytes);
                free(w);
            }
            kn_safetensors_file_free(&f);
            kn_model_destroy(lm);
        } else {
            assert_null(lm);
            assert_true(strlen(err) > 0);
        }
        if (in_len) {
            n_len++;
            if (rc == KN_OK) fail_msg("round %d: a changed header length was accepted", it);
        } else if (in_hdr) {
            n_hdr++;
            hdr_refused += rc != KN_OK;
        } else if (in_data) {
            n_data++;
            if (rc != KN_OK) fail_msg("round %d: changed tensor bytes refused: %s", it, err);
        }
        free(x);
    }
    print_message("corruption: %d in the length (all refused), %d in the data only (all "
                  "accepted), %d in the JSON header (%d refused)\n",
                  n_len, n_data, n_hdr, hdr_refused);
    assert_true(n_len > 10 && n_data > 900 && n_hdr > 500);
    assert_true(hdr_refused * 10 >= n_hdr * 9); /* most JSON corruption is refused */
    free(c);
    /* structural attacks on the generic parser */
    struct {
        const char *hdr;
        size_t data;
    } cases[] = {
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
         "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
         12},                                                                      /* overlap */
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 12},  /* trailing */
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 12}, /* hole */
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 8},   /* size */
        {"{\"a\":{\"dtype\":\"Q4\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8},    /* dtype */
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}", 8},  /* shape */
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296],"
         "\"data_offsets\":[0,8]}}",
         8},                                                                      /* overflow */
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,99]}}", 8}, /* bounds */
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,0]}}", 8},  /* reversed */
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2]}}", 8},                         /* missing */
        {"{\"__metadata__\":{\"x\":1}}", 0},                                      /* metadata */
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
         "\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}",
         8}, /* duplicate */
        {"[1,2]", 0},
        {"{\"a\":", 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        size_t n;
        unsigned char *b = craft(cases[i].hdr, cases[i].data, &n);
        kn_safetensors_file f;
        err[0] = 0;
        if (kn_safetensors_parse(b, n, &f, err, sizeof(err)) != KN_ECORRUPT)
            fail_msg("case %zu accepted: %s", i, cases[i].hdr);
        assert_true(strlen(err) > 0);
        free(b);
    }
    /* valid container, wrong model contents: dtype, shape, missing, unknown tensor */
    const char *spec = "{\\\"type\\\":\\\"mlp\\\",\\\"sizes\\\":[3,2]}";
    char hdr[1024];
    const char *bodies[] = {
        "\"layers.0.weight\":{\"dtype\":\"F16\",\"shape\":[2,3],\"data_offsets\":[0,12]},"
        "\"layers.0.bias\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[12,20]}",
        "\"layers.0.weight\":{\"dtype\":\"F32\",\"shape\":[3,2],\"data_offsets\":[0,24]},"
        "\"layers.0.bias\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[24,32]}",
        "\"layers.0.weight\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]}",
        "\"layers.0.weight\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]},"
        "\"layers.0.bias\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[24,32]},"
        "\"evil\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[32,36]}",
    };
    const size_t datalen[] = {20, 32, 24, 36};
    for (int i = 0; i < 4; i++) {
        snprintf(hdr, sizeof(hdr),
                 "{\"__metadata__\":{\"kiln.format\":\"kiln-ckpt-1\",\"kiln.spec\":\"%s\","
                 "\"kiln.seed\":\"1\",\"kiln.fwd_count\":\"0\"},%s}",
                 spec, bodies[i]);
        size_t n;
        unsigned char *b = craft(hdr, datalen[i], &n);
        err[0] = 0;
        assert_int_equal(load_rc(b, n, err, sizeof(err)), KN_ECORRUPT);
        assert_true(strlen(err) > 0);
        free(b);
    }
    /* metadata spec that is not a valid model */
    snprintf(hdr, sizeof(hdr),
             "{\"__metadata__\":{\"kiln.format\":\"kiln-ckpt-1\",\"kiln.spec\":\"{\\\"type\\\":"
             "\\\"mlp\\\",\\\"sizes\\\":[3]}\",\"kiln.seed\":\"1\",\"kiln.fwd_count\":\"0\"}}");
    size_t n;
    unsigned char *b = craft(hdr, 0, &n);
    assert_int_equal(load_rc(b, n, err, sizeof(err)), KN_ECORRUPT);
    free(b);
    free(buf);
    kn_model_destroy(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip_and_resume),
        cmocka_unit_test(test_independent_reader),
        cmocka_unit_test(test_hostile),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
