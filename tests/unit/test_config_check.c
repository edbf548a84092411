/* Unit tests of the strict configuration (service/keys.h, core/suggest.h,
 * the line numbers of core/config.h, kn_model_spec_check): a table of
 * configuration mistakes, each with the words its message must hold, and
 * the shipped deploy/kiln.ini, which must be accepted. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "core/config.h"
#include "core/kn.h"
#include "core/suggest.h"
#include "nn/model.h"
#include "service/keys.h"

/* A valid base every case starts from: two datasets, two models. */
#define BASE                                                                                       \
    "[kafka]\nbrokers = 127.0.0.1:1\n"                                                             \
    "[dataset.fortunes]\nkind = lm\ntokenizer = t.tiktoken\n"                                      \
    "[dataset.digits]\nkind = image\n"                                                             \
    "[model.gpt-fortunes]\ndataset = fortunes\n"                                                   \
    "[model.cnn]\ndataset = digits\n"

typedef struct {
    const char *what;
    const char *ini;       /* appended to BASE */
    const char *expect[4]; /* substrings of the message; expect[0] NULL: accepted */
} mistake;

static const mistake mistakes[] = {
    {"a valid configuration", "[preprocess]\ndatasets = fortunes, digits\n", {NULL}},
    {"policy rules on known metrics and metric: thresholds",
     "[policy.gpt-fortunes]\nmax_loss = metric:unigram_loss\nimprove_loss = 0\n"
     "[policy.default]\nguard_rel_accuracy = 0.1\n",
     {NULL}},
    {"a metric declared by direction_M",
     "[policy.cnn]\ndirection_bleu = higher\nmin_bleu = 3\n",
     {NULL}},
    {"a key of another service's section is fine",
     "[evaluator]\nbatch = 3\n[trainer]\nport = 1\n",
     {NULL}},
    {"singular datasets",
     "[preprocess]\ndataset = fortunes\n",
     {"t.ini:13:", "unknown key 'dataset' in [preprocess]", "did you mean 'datasets'"}},
    {"batch_size in a model",
     "[model.cnn]\nbatch_size = 8\n",
     {"t.ini:13:", "'batch_size' in [model.cnn]", "did you mean 'batch'"}},
    {"check_point_steps",
     "\n\n[model.cnn]\ncheck_point_steps = 3\n",
     {"t.ini:15:", "did you mean 'checkpoint_steps'"}},
    {"tokeniser",
     "[dataset.fortunes]\ntokeniser = x\n",
     {"t.ini:13:", "'tokeniser' in [dataset.fortunes]", "did you mean 'tokenizer'"}},
    {"a key in the wrong section",
     "[trainer]\nbatch = 3\n",
     {"t.ini:13:", "unknown key 'batch' in [trainer]", "[model.NAME]"}},
    {"a misspelt section",
     "[preproces]\nport = 1\n",
     {"t.ini:13:", "[preproces] is not a section", "did you mean [preprocess]"}},
    {"a misspelt named section",
     "[datasets.x]\nkind = lm\n",
     {"t.ini:13:", "did you mean [dataset.x]"}},
    {"a named section without a name",
     "[model]\ndataset = fortunes\n",
     {"t.ini:13:", "[model.NAME]"}},
    {"an unknown dataset in a list",
     "[preprocess]\ndatasets = fortune-de, digits\n",
     {"t.ini:13:", "no [dataset.fortune-de] section", "did you mean 'fortunes'"}},
    {"a model whose dataset has no section",
     "[model.gpt2]\ndataset = fortunes-d\n",
     {"t.ini:13:", "model.gpt2.dataset = fortunes-d", "no [dataset.fortunes-d]",
      "did you mean 'fortunes'"}},
    {"an unknown model in pipeline.models",
     "[pipeline]\nmodels = cnn gpt-fortune\n",
     {"t.ini:13:", "no [model.gpt-fortune]", "did you mean 'gpt-fortunes'"}},
    {"the inbox dataset",
     "[pipeline]\ninbox_dataset = fortune\n",
     {"no [dataset.fortune]", "did you mean 'fortunes'"}},
    {"max_los",
     "[policy.gpt-fortunes]\nmax_los = 6\n",
     {"t.ini:13:", "no metric 'los'", "did you mean 'max_loss'"}},
    {"a threshold metric typo",
     "[policy.gpt-fortunes]\nmax_loss = metric:unigram_los\n",
     {"no metric 'unigram_los'", "did you mean 'metric:unigram_loss'"}},
    {"an unknown rule",
     "[policy.cnn]\nmim_accuracy = 0.5\n",
     {"unknown policy key", "did you mean 'min_accuracy'"}},
    {"a policy for a misspelt model",
     "[policy.gpt-fortune]\nmin_accuracy = 0.5\n",
     {"no [model.gpt-fortune]", "did you mean [policy.gpt-fortunes]"}},
    {"nice values in range", "[trainer]\nnice = 19\n[preprocess]\nnice = 0\n", {NULL}},
    {"trainer.nice out of range",
     "[trainer]\nnice = 20\n",
     {"t.ini:13:", "trainer.nice = 20", "out of range", "0..19"}},
    {"trainer.nice negative",
     "[trainer]\nnice = -1\n",
     {"t.ini:13:", "trainer.nice = -1", "0..19"}},
    {"preprocess.nice not a number",
     "[preprocess]\nnice = low\n",
     {"t.ini:13:", "preprocess.nice = low", "not a number", "0..19"}},
    {"preprocess.nice out of range",
     "[preprocess]\nnice = 40\n",
     {"t.ini:13:", "preprocess.nice = 40", "out of range", "0..19"}},
    {"a key before any section", NULL, {"a key before the first [section]"}},
};

static void test_mistakes(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(mistakes) / sizeof(mistakes[0]); i++) {
        const mistake *m = &mistakes[i];
        char ini[4096], err[8192];
        if (m->ini)
            snprintf(ini, sizeof(ini), "%s%s", BASE, m->ini);
        else
            snprintf(ini, sizeof(ini), "stray = 1\n%s", BASE);
        kn_config *cfg = kn_config_new();
        assert_int_equal(kn_config_load_string(cfg, ini, "t.ini", err, sizeof(err)), KN_OK);
        int rc = kn_keys_check(cfg, NULL, err, sizeof(err));
        if (!m->expect[0]) {
            if (rc != KN_OK) fail_msg("%s: refused: %s", m->what, err);
        } else {
            if (rc != KN_EINVAL) fail_msg("%s: accepted", m->what);
            for (int k = 0; k < 4 && m->expect[k]; k++)
                if (!strstr(err, m->expect[k]))
                    fail_msg("%s: message lacks \"%s\": %s", m->what, m->expect[k], err);
        }
        kn_config_destroy(cfg);
    }
}

/* A service's own table is known even when the stack's tables lack it (a
 * new service before its table moves to keys.c). */
static void test_own_table(void **state)
{
    (void)state;
    static const kn_service_key own[] = {{"newsvc.port", "8099", "port"}, {NULL, NULL, NULL}};
    char err[2048];
    kn_config *cfg = kn_config_new();
    assert_int_equal(kn_config_load_string(cfg, "[newsvc]\nport = 1\n", "t.ini", err, sizeof(err)),
                     KN_OK);
    assert_int_equal(kn_keys_check(cfg, NULL, err, sizeof(err)), KN_EINVAL);
    assert_non_null(strstr(err, "[newsvc] is not a section"));
    assert_int_equal(kn_keys_check(cfg, own, err, sizeof(err)), KN_OK);
    kn_config_destroy(cfg);
}

/* Values from the environment are checked as well, named by the variable,
 * by the service that reads the key: another service started in the same
 * environment leaves it to that one. */
static void test_environment(void **state)
{
    (void)state;
    char err[2048];
    kn_config *cfg = kn_config_new();
    assert_int_equal(kn_config_load_string(cfg, BASE, "t.ini", err, sizeof(err)), KN_OK);
    setenv("KILN_PREPROCESS_DATASETS", "fortunes,nope", 1);
    assert_int_equal(kn_keys_check(cfg, kn_keys_registry, err, sizeof(err)), KN_OK);
    assert_int_equal(kn_keys_check(cfg, kn_keys_preprocess, err, sizeof(err)), KN_EINVAL);
    unsetenv("KILN_PREPROCESS_DATASETS");
    assert_non_null(strstr(err, "KILN_PREPROCESS_DATASETS"));
    assert_non_null(strstr(err, "no [dataset.nope]"));
    assert_int_equal(kn_keys_check(cfg, NULL, err, sizeof(err)), KN_OK);
    /* the same for a value's range */
    setenv("KILN_TRAINER_NICE", "25", 1);
    assert_int_equal(kn_keys_check(cfg, kn_keys_preprocess, err, sizeof(err)), KN_OK);
    assert_int_equal(kn_keys_check(cfg, kn_keys_trainer, err, sizeof(err)), KN_EINVAL);
    unsetenv("KILN_TRAINER_NICE");
    assert_non_null(strstr(err, "KILN_TRAINER_NICE: trainer.nice = 25: out of range"));
    kn_config_destroy(cfg);
}

static void test_shipped_config(void **state)
{
    (void)state;
    char err[8192];
    kn_config *cfg = kn_config_new();
    assert_int_equal(kn_config_load_file(cfg, KILN_SOURCE_DIR "/deploy/kiln.ini", err, sizeof(err)),
                     KN_OK);
    if (kn_keys_check(cfg, NULL, err, sizeof(err)) != KN_OK) fail_msg("deploy/kiln.ini: %s", err);
    kn_config_destroy(cfg);
}

/* Line numbers count blank lines and comments (they did not: strtok). */
static void test_origin(void **state)
{
    (void)state;
    char err[256];
    const char *file;
    kn_config *cfg = kn_config_new();
    assert_int_equal(kn_config_set(cfg, "a.b", "default"), KN_OK);
    assert_int_equal(
        kn_config_load_string(cfg, "# c\n\n[a]\n\nb = 1\n\n\nc = 2\n", "f.ini", err, sizeof(err)),
        KN_OK);
    assert_int_equal(kn_config_origin(cfg, "a.b", &file), 5);
    assert_string_equal(file, "f.ini");
    assert_int_equal(kn_config_origin(cfg, "a.c", &file), 8);
    assert_int_equal(kn_config_load_string(cfg, "[a]\n\nbad line\n", "g.ini", err, sizeof(err)),
                     KN_EINVAL);
    assert_non_null(strstr(err, "g.ini:3:"));
    assert_int_equal(kn_config_set(cfg, "a.d", "x"), KN_OK);
    assert_int_equal(kn_config_origin(cfg, "a.d", &file), 0);
    assert_null(file);
    kn_config_destroy(cfg);
}

static void test_suggest(void **state)
{
    (void)state;
    assert_int_equal(kn_suggest_distance("tokeniser", "tokenizer"), 1);
    assert_int_equal(kn_suggest_distance("ab", "ba"), 1); /* a swap */
    assert_int_equal(kn_suggest_distance("", "abc"), 3);
    const char *cands[] = {"batch", "seed", "batch_max", "dataset"};
    struct {
        const char *word, *want;
    } cases[] = {{"batch_size", "batch"}, {"sed", "seed"}, {"datasets", "dataset"},
                 {"zzzzzz", NULL},        {"x", NULL},     {"batch", "batch_max"}};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        kn_suggest s;
        kn_suggest_init(&s, cases[i].word);
        for (size_t c = 0; c < 4; c++)
            kn_suggest_offer(&s, cands[c]);
        const char *got = kn_suggest_result(&s);
        if (cases[i].want ? !got || strcmp(got, cases[i].want) : got != NULL)
            fail_msg("%s: got %s, want %s", cases[i].word, got ? got : "NULL",
                     cases[i].want ? cases[i].want : "NULL");
    }
}

static void test_model_spec(void **state)
{
    (void)state;
    struct {
        const char *spec, *expect;
    } cases[] = {
        {"{\"type\":\"gpt\",\"n_layer\":2,\"n_head\":2,\"n_embd\":32,\"vocab_size\":64}", NULL},
        {"{\"type\":\"gpt\",\"n_layers\":2}", "unknown key \"n_layers\"; did you mean \"n_layer\""},
        {"{\"type\":\"mlp\",\"sizes\":[4,2],\"activaton\":\"relu\"}",
         "did you mean \"activation\""},
        {"{\"type\":\"cnn\",\"input\":[1,8,8],\"convs\":[{\"out\":4,\"padd\":1}],\"classes\":2}",
         "\"convs\"[0]: unknown key \"padd\"; did you mean \"pad\""},
        {"{\"type\":\"cnn\",\"input\":[1,8,8],\"convs\":[{\"out\":4,\"pad\":1}],\"classes\":2}",
         NULL},
        {"{\"type\":\"txtcls\",\"classes\":3,\"pool\":\"cls\",\"wibble\":1}",
         "unknown key \"wibble\""},
        {"{\"type\":\"linreg\",\"in\":3,\"out\":1}", NULL},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        json_t *spec = json_loads(cases[i].spec, 0, NULL);
        char err[512] = "";
        assert_non_null(spec);
        int rc = kn_model_spec_check(spec, err, sizeof(err));
        json_decref(spec);
        if (!cases[i].expect) {
            if (rc != KN_OK) fail_msg("%s: refused: %s", cases[i].spec, err);
        } else if (rc != KN_EINVAL || !strstr(err, cases[i].expect)) {
            fail_msg("%s: want \"%s\", got rc %d: %s", cases[i].spec, cases[i].expect, rc, err);
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mistakes),    cmocka_unit_test(test_own_table),
        cmocka_unit_test(test_environment), cmocka_unit_test(test_shipped_config),
        cmocka_unit_test(test_origin),      cmocka_unit_test(test_suggest),
        cmocka_unit_test(test_model_spec),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
