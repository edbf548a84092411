/* Unit: the evaluator's figures against hand-computed values: a 3-class
 * confusion matrix (accuracy, per-class and macro precision/recall/F1), the
 * zero-division conventions, perplexity = exp(token-weighted mean loss), MSE. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/kn.h"
#include "evmetrics.h"

static void add_n(ev_confusion *c, int t, int p, int n)
{
    for (int i = 0; i < n; i++)
        assert_int_equal(ev_confusion_add(c, t, p), 0);
}

/*        p0 p1 p2
 *   t0:   5  1  0
 *   t1:   2  3  1
 *   t2:   0  0  4      n = 16, correct = 12 */
static void three_classes(void **state)
{
    (void)state;
    ev_confusion c;
    assert_int_equal(ev_confusion_init(&c, 3), KN_OK);
    add_n(&c, 0, 0, 5);
    add_n(&c, 0, 1, 1);
    add_n(&c, 1, 0, 2);
    add_n(&c, 1, 1, 3);
    add_n(&c, 1, 2, 1);
    add_n(&c, 2, 2, 4);
    assert_int_equal(ev_confusion_add(&c, 3, 0), -1); /* out of range: ignored */
    assert_int_equal(ev_confusion_add(&c, 0, -1), -1);
    assert_int_equal(c.n, 16);

    ev_class_report r;
    assert_int_equal(ev_class_report_compute(&c, &r), KN_OK);
    const double eps = 1e-12;
    assert_float_equal(r.accuracy, 12.0 / 16.0, eps);
    assert_float_equal(r.precision[0], 5.0 / 7.0, eps);
    assert_float_equal(r.recall[0], 5.0 / 6.0, eps);
    assert_float_equal(r.f1[0], 10.0 / 13.0, eps);
    assert_float_equal(r.precision[1], 3.0 / 4.0, eps);
    assert_float_equal(r.recall[1], 0.5, eps);
    assert_float_equal(r.f1[1], 0.6, eps);
    assert_float_equal(r.precision[2], 4.0 / 5.0, eps);
    assert_float_equal(r.recall[2], 1.0, eps);
    assert_float_equal(r.f1[2], 8.0 / 9.0, eps);
    assert_int_equal(r.support[0], 6);
    assert_int_equal(r.support[1], 6);
    assert_int_equal(r.support[2], 4);
    assert_float_equal(r.macro_precision, (5.0 / 7.0 + 0.75 + 0.8) / 3.0, eps);
    assert_float_equal(r.macro_recall, (5.0 / 6.0 + 0.5 + 1.0) / 3.0, eps);
    assert_float_equal(r.macro_f1, (10.0 / 13.0 + 0.6 + 8.0 / 9.0) / 3.0, eps);

    json_t *m = json_object();
    assert_int_equal(ev_class_report_to_metrics(&r, m), KN_OK);
    assert_float_equal(json_real_value(json_object_get(m, "accuracy")), 0.75, eps);
    assert_float_equal(json_real_value(json_object_get(m, "f1.1")), 0.6, eps);
    assert_float_equal(json_real_value(json_object_get(m, "recall.2")), 1.0, eps);
    assert_non_null(json_object_get(m, "macro_f1"));
    assert_int_equal(json_object_size(m), 4 + 3 * 3);
    json_decref(m);

    json_t *cm = ev_confusion_to_json(&c);
    char *s = json_dumps(cm, JSON_COMPACT);
    assert_string_equal(s, "[[5,1,0],[2,3,1],[0,0,4]]");
    free(s);
    json_decref(cm);
    ev_class_report_free(&r);
    ev_confusion_free(&c);
}

/* Class 2 is predicted but never true (precision 0, recall 0); class 3 never
 * occurs at all and is left out of the macro averages. */
static void zero_division(void **state)
{
    (void)state;
    ev_confusion c;
    assert_int_equal(ev_confusion_init(&c, 4), KN_OK);
    add_n(&c, 0, 0, 2);
    add_n(&c, 0, 2, 1);
    add_n(&c, 1, 1, 3);
    ev_class_report r;
    assert_int_equal(ev_class_report_compute(&c, &r), KN_OK);
    const double eps = 1e-12;
    assert_float_equal(r.accuracy, 5.0 / 6.0, eps);
    assert_float_equal(r.f1[0], 0.8, eps);
    assert_float_equal(r.precision[2], 0.0, eps);
    assert_float_equal(r.recall[2], 0.0, eps);
    assert_float_equal(r.f1[2], 0.0, eps);
    assert_float_equal(r.f1[3], 0.0, eps);
    assert_float_equal(r.macro_precision, 2.0 / 3.0, eps);
    assert_float_equal(r.macro_recall, (2.0 / 3.0 + 1.0) / 3.0, eps);
    assert_float_equal(r.macro_f1, 0.6, eps);
    ev_class_report_free(&r);
    ev_confusion_free(&c);

    assert_int_equal(ev_confusion_init(&c, 2), KN_OK); /* empty: all zero, no NaN */
    assert_int_equal(ev_class_report_compute(&c, &r), KN_OK);
    assert_float_equal(r.accuracy, 0.0, 0);
    assert_float_equal(r.macro_f1, 0.0, 0);
    ev_class_report_free(&r);
    ev_confusion_free(&c);
    assert_int_equal(ev_confusion_init(&c, 0), KN_EINVAL);
}

static void perplexity(void **state)
{
    (void)state;
    ev_lm_loss a = {0};
    assert_true(isnan(ev_lm_loss_mean(&a)));
    ev_lm_loss_add(&a, 2.0, 10);
    ev_lm_loss_add(&a, 1.0, 30);
    ev_lm_loss_add(&a, 99.0, 0); /* a batch with no targets counts for nothing */
    assert_int_equal(a.tokens, 40);
    assert_float_equal(ev_lm_loss_mean(&a), 1.25, 1e-12);
    assert_float_equal(ev_lm_perplexity(&a), exp(1.25), 1e-12);
    /* uniform over V tokens: loss ln V, perplexity V */
    ev_lm_loss u = {0};
    ev_lm_loss_add(&u, log(50257.0), 1000);
    assert_float_equal(ev_lm_perplexity(&u), 50257.0, 1e-6);
}

static void mse(void **state)
{
    (void)state;
    ev_mse a = {0};
    assert_true(isnan(ev_mse_value(&a)));
    const float p[3] = {1, 2, 3}, t[3] = {1, 0, 0};
    ev_mse_add(&a, p, t, 3);
    assert_float_equal(ev_mse_value(&a), 13.0 / 3.0, 1e-12);
    const float p2[1] = {0.5f}, t2[1] = {1.5f};
    ev_mse_add(&a, p2, t2, 1);
    assert_float_equal(ev_mse_value(&a), 14.0 / 4.0, 1e-12);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(three_classes),
        cmocka_unit_test(zero_division),
        cmocka_unit_test(perplexity),
        cmocka_unit_test(mse),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
