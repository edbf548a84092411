/* Unit: the evaluator's promotion policy engine on tables of cases: value
 * thresholds, absolute and relative changes in both directions, guards, no
 * production yet, missing metrics, unknown directions and overrides, key
 * parsing errors. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/kn.h"
#include "policy.h"
#include "near.h"

typedef struct {
    const char *name;
    const char *keys; /* "k=v;k=v" */
    const char *cand; /* JSON object */
    int prod_version; /* 0: none */
    const char *prod; /* JSON object or NULL */
    int promote;
    const char *reason_has; /* substring the reason must contain (or NULL) */
} policy_case;

static const policy_case cases[] = {
    /* value thresholds */
    {"min passes", "min_accuracy=0.85", "{\"accuracy\":0.9}", 0, NULL, 1, "first passing"},
    {"min fails", "min_accuracy=0.85", "{\"accuracy\":0.84}", 0, NULL, 0,
     "accuracy 0.84 < min 0.85"},
    {"min boundary", "min_accuracy=0.85", "{\"accuracy\":0.85}", 0, NULL, 1, NULL},
    {"max passes", "max_loss=3.5", "{\"loss\":3.4}", 0, NULL, 1, NULL},
    {"max fails", "max_loss=3.5", "{\"loss\":3.6}", 0, NULL, 0, "loss 3.6 > max 3.5"},
    /* a threshold that is another metric of the candidate (the unigram baseline) */
    {"beats its baseline", "max_loss=metric:unigram_loss", "{\"loss\":4.1,\"unigram_loss\":6.2}",
     0, NULL, 1, "max 6.2 = unigram_loss"},
    {"worse than its baseline", "max_loss=metric:unigram_loss",
     "{\"loss\":6.5,\"unigram_loss\":6.2}", 0, NULL, 0, "loss 6.5 > max 6.2"},
    {"baseline missing", "max_loss=metric:unigram_loss", "{\"loss\":4.1}", 0, NULL, 0,
     "no finite 'unigram_loss'"},
    {"max on higher-is-better metric is literal", "max_accuracy=0.5", "{\"accuracy\":0.6}", 0, NULL,
     0, "> max"},
    /* absolute change, higher is better */
    {"not worse: equal", "improve_accuracy=0", "{\"accuracy\":0.9}", 3, "{\"accuracy\":0.9}", 1,
     "over v3"},
    {"not worse: better", "improve_accuracy=0", "{\"accuracy\":0.91}", 3, "{\"accuracy\":0.9}", 1,
     NULL},
    {"not worse: worse", "improve_accuracy=0", "{\"accuracy\":0.89}", 3, "{\"accuracy\":0.9}", 0,
     "production v3"},
    {"abs improve too small", "improve_accuracy=0.02", "{\"accuracy\":0.91}", 1,
     "{\"accuracy\":0.9}", 0, "needs +0.02"},
    {"abs improve enough", "improve_accuracy=0.01", "{\"accuracy\":0.92}", 1, "{\"accuracy\":0.91}",
     1, NULL},
    {"negative improve allows a bounded loss", "improve_accuracy=-0.01", "{\"accuracy\":0.895}", 1,
     "{\"accuracy\":0.9}", 1, NULL},
    /* absolute change, lower is better */
    {"loss lower passes", "improve_loss=0", "{\"loss\":1.9}", 2, "{\"loss\":2.0}", 1, NULL},
    {"loss higher fails", "improve_loss=0", "{\"loss\":2.1}", 2, "{\"loss\":2.0}", 0,
     "lower is better"},
    {"loss abs improve", "improve_loss=0.5", "{\"loss\":1.6}", 2, "{\"loss\":2.0}", 0, NULL},
    /* relative change */
    {"rel loss 1% ok", "improve_rel_loss=0.01", "{\"loss\":1.98}", 2, "{\"loss\":2.0}", 1, NULL},
    {"rel loss 0.5% too small", "improve_rel_loss=0.01", "{\"loss\":1.99}", 2, "{\"loss\":2.0}", 0,
     "needs +1%"},
    {"rel loss worse", "improve_rel_loss=0.01", "{\"loss\":2.2}", 2, "{\"loss\":2.0}", 0, NULL},
    {"rel accuracy 2% ok", "improve_rel_accuracy=0.02", "{\"accuracy\":0.816}", 2,
     "{\"accuracy\":0.8}", 1, NULL},
    {"rel accuracy 1% too small", "improve_rel_accuracy=0.02", "{\"accuracy\":0.808}", 2,
     "{\"accuracy\":0.8}", 0, NULL},
    /* guards */
    {"guard within tolerance", "improve_accuracy=0;guard_macro_f1=0.01",
     "{\"accuracy\":0.91,\"macro_f1\":0.895}", 4, "{\"accuracy\":0.9,\"macro_f1\":0.9}", 1, NULL},
    {"guard beyond tolerance", "improve_accuracy=0;guard_macro_f1=0.01",
     "{\"accuracy\":0.91,\"macro_f1\":0.88}", 4, "{\"accuracy\":0.9,\"macro_f1\":0.9}", 0,
     "guard_macro_f1"},
    {"guard on lower metric", "guard_perplexity=0.5", "{\"perplexity\":10.4}", 4,
     "{\"perplexity\":10.0}", 1, NULL},
    {"guard on lower metric beyond", "guard_perplexity=0.5", "{\"perplexity\":10.6}", 4,
     "{\"perplexity\":10.0}", 0, NULL},
    {"relative guard", "guard_rel_loss=0.05", "{\"loss\":2.09}", 4, "{\"loss\":2.0}", 1, NULL},
    {"relative guard beyond", "guard_rel_loss=0.05", "{\"loss\":2.11}", 4, "{\"loss\":2.0}", 0,
     NULL},
    /* no production yet: change rules and guards skipped */
    {"no production: change skipped", "improve_accuracy=0.05;guard_macro_f1=0",
     "{\"accuracy\":0.5,\"macro_f1\":0.1}", 0, NULL, 1, "skipped"},
    {"no production: value still applies", "min_accuracy=0.85;improve_accuracy=0.05",
     "{\"accuracy\":0.5}", 0, NULL, 0, "< min"},
    /* missing metrics */
    {"candidate lacks metric", "min_accuracy=0.85", "{\"loss\":1.0}", 0, NULL, 0,
     "the candidate has no finite 'accuracy'"},
    {"candidate metric not a number", "min_accuracy=0.85", "{\"accuracy\":\"high\"}", 0, NULL, 0,
     "no finite"},
    {"production lacks metric", "improve_accuracy=0", "{\"accuracy\":0.9}", 7, "{\"loss\":1}", 0,
     "production version 7 has no finite 'accuracy'"},
    {"production metrics NULL", "improve_accuracy=0", "{\"accuracy\":0.9}", 7, NULL, 0,
     "production version 7"},
    /* directions */
    {"unknown direction", "improve_bleu=0", "{\"bleu\":30}", 1, "{\"bleu\":20}", 0,
     "direction_bleu"},
    {"direction override higher", "improve_bleu=0;direction_bleu=higher", "{\"bleu\":30}", 1,
     "{\"bleu\":20}", 1, NULL},
    {"direction override lower", "improve_bleu=0;direction_bleu=lower", "{\"bleu\":30}", 1,
     "{\"bleu\":20}", 0, NULL},
    {"override flips builtin", "improve_accuracy=0;direction_accuracy=lower", "{\"accuracy\":0.8}",
     1, "{\"accuracy\":0.9}", 1, NULL},
    /* several failures are all reported */
    {"all failures listed", "min_accuracy=0.9;max_loss=1;improve_macro_f1=0",
     "{\"accuracy\":0.5,\"loss\":2,\"macro_f1\":0.1}", 1, "{\"macro_f1\":0.2}", 0,
     "3 of 3 rule(s) failed"},
    /* no rules at all */
    {"no rules promotes", "", "{\"accuracy\":0.1}", 1, "{\"accuracy\":0.9}", 1, NULL},
};

static void load_keys(ev_policy *p, const char *keys)
{
    char buf[512];
    snprintf(buf, sizeof(buf), "%s", keys);
    for (char *save = NULL, *kv = strtok_r(buf, ";", &save); kv; kv = strtok_r(NULL, ";", &save)) {
        char *eq = strchr(kv, '=');
        assert_non_null(eq);
        *eq = '\0';
        char err[256];
        int rc = ev_policy_set(p, kv, eq + 1, err, sizeof(err));
        if (rc != KN_OK) fail_msg("%s: %s", kv, err);
    }
}

static void table(void **state)
{
    (void)state;
    for (size_t i = 0; i < KN_ARRAY_LEN(cases); i++) {
        const policy_case *c = &cases[i];
        ev_policy p;
        ev_policy_init(&p);
        load_keys(&p, c->keys);
        json_t *cand = json_loads(c->cand, 0, NULL);
        json_t *prod = c->prod ? json_loads(c->prod, 0, NULL) : NULL;
        assert_non_null(cand);
        ev_decision d;
        assert_int_equal(ev_policy_decide(&p, cand, c->prod_version, prod, &d), KN_OK);
        if (d.promote != c->promote || (c->reason_has && !strstr(d.reason, c->reason_has)))
            fail_msg("case '%s': promote=%d (want %d), reason: %s", c->name, d.promote, c->promote,
                     d.reason);
        /* compared figures: one entry per rule, production version recorded */
        json_t *rules = json_object_get(d.compared, "rules");
        assert_int_equal(json_array_size(rules), p.nrules);
        json_t *pv = json_object_get(d.compared, "production_version");
        if (c->prod_version)
            assert_int_equal(json_integer_value(pv), c->prod_version);
        else
            assert_true(json_is_null(pv));
        ev_decision_free(&d);
        json_decref(cand);
        json_decref(prod);
        ev_policy_free(&p);
    }
}

static void compared_figures(void **state)
{
    (void)state;
    ev_policy p;
    ev_policy_init(&p);
    load_keys(&p, "improve_loss=0");
    json_t *cand = json_pack("{s:f}", "loss", 1.5), *prod = json_pack("{s:f}", "loss", 2.0);
    ev_decision d;
    assert_int_equal(ev_policy_decide(&p, cand, 5, prod, &d), KN_OK);
    assert_true(d.promote);
    json_t *r = json_array_get(json_object_get(d.compared, "rules"), 0);
    assert_string_equal(json_string_value(json_object_get(r, "rule")), "improve_loss");
    assert_near(json_real_value(json_object_get(r, "candidate")), 1.5, 1e-12);
    assert_near(json_real_value(json_object_get(r, "production")), 2.0, 1e-12);
    assert_near(json_real_value(json_object_get(r, "change")), 0.5, 1e-12);
    assert_string_equal(json_string_value(json_object_get(r, "result")), "pass");
    ev_decision_free(&d);
    json_decref(cand);
    json_decref(prod);
    ev_policy_free(&p);
}

static void bad_keys(void **state)
{
    (void)state;
    static const struct {
        const char *key, *value, *err_has;
    } bad[] = {
        {"min_acuracy", "high", "not a finite number"},
        {"minimum_accuracy", "0.9", "unknown policy key"},
        {"improve_", "0.1", "bad metric name"},
        {"direction_loss", "down", "not higher or lower"},
        {"guard_macro_f1", "-0.1", "must be >= 0"},
        {"max_loss", "inf", "finite"},
        {"min_accuracy", "", "finite"},
        {"min_acc uracy", "1", "bad metric name"},
        {"max_loss", "metric:", "bad metric name"},
        {"improve_loss", "metric:unigram_loss", "finite"},
    };
    for (size_t i = 0; i < KN_ARRAY_LEN(bad); i++) {
        ev_policy p;
        ev_policy_init(&p);
        char err[256] = "";
        assert_int_equal(ev_policy_set(&p, bad[i].key, bad[i].value, err, sizeof(err)), KN_EINVAL);
        if (!strstr(err, bad[i].err_has)) fail_msg("%s=%s: %s", bad[i].key, bad[i].value, err);
        assert_int_equal(p.nrules, 0);
        ev_policy_free(&p);
    }
}

static void replace_and_default(void **state)
{
    (void)state;
    ev_policy p;
    ev_policy_init(&p);
    assert_int_equal(ev_policy_default(&p, "accuracy"), KN_OK);
    assert_int_equal(p.nrules, 1);
    char key[64];
    ev_rule_key(&p.rules[0], key, sizeof(key));
    assert_string_equal(key, "improve_accuracy");
    assert_int_equal(ev_policy_set(&p, "improve_accuracy", "0.5", NULL, 0), KN_OK);
    assert_int_equal(p.nrules, 1);
    assert_near(p.rules[0].value, 0.5, 0);
    assert_int_equal(ev_policy_default(&p, "loss"), KN_OK); /* has rules: unchanged */
    assert_int_equal(p.nrules, 1);
    ev_policy_free(&p);
}

static void directions(void **state)
{
    (void)state;
    static const struct {
        const char *m;
        ev_direction d;
    } t[] = {
        {"accuracy", EV_DIR_HIGHER},    {"macro_f1", EV_DIR_HIGHER},       {"f1.3", EV_DIR_HIGHER},
        {"precision.0", EV_DIR_HIGHER}, {"macro_recall", EV_DIR_HIGHER},   {"loss", EV_DIR_LOWER},
        {"eval_loss", EV_DIR_LOWER},    {"perplexity", EV_DIR_LOWER},      {"mse", EV_DIR_LOWER},
        {"bleu", EV_DIR_UNKNOWN},       {"eval_examples", EV_DIR_UNKNOWN},
    };
    for (size_t i = 0; i < KN_ARRAY_LEN(t); i++)
        if (ev_policy_direction(NULL, t[i].m) != t[i].d) fail_msg("direction of %s", t[i].m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(table),      cmocka_unit_test(compared_figures),
        cmocka_unit_test(bad_keys),   cmocka_unit_test(replace_and_default),
        cmocka_unit_test(directions),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
