/* evmetrics.h: evaluation figures of the evaluator (implemented in metrics.c):
 * confusion matrix with accuracy and per-class / macro precision, recall and
 * F1; language-model loss and perplexity; regression MSE. Pure arithmetic. */
#ifndef EV_METRICS_H
#define EV_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

/* Confusion matrix: m[t * k + p] counts examples of true class t predicted
 * as p. */
typedef struct {
    int k;      /* classes, >= 1 */
    int64_t *m; /* (k, k) */
    int64_t n;  /* examples counted */
} ev_confusion;

/* KN_OK or KN_EINVAL (k < 1) / KN_ENOMEM. Caller frees with ev_confusion_free. */
int ev_confusion_init(ev_confusion *c, int k);
void ev_confusion_free(ev_confusion *c);
/* Counts one example; ids outside 0..k-1 are ignored (returns -1). */
int ev_confusion_add(ev_confusion *c, int truth, int pred);

/* Classification report of a confusion matrix. Per-class figures for every
 * class; a class never predicted has precision 0, one never present recall 0
 * (sklearn's zero_division=0), F1 0 when precision + recall is 0. Macro
 * figures average over the classes that occur in the truth or the
 * predictions (sklearn's default label set). */
typedef struct {
    int k;
    double accuracy; /* 0 when n = 0 */
    double macro_precision, macro_recall, macro_f1;
    double *precision, *recall, *f1; /* (k) */
    int64_t *support;                /* (k) true examples per class */
} ev_class_report;

int ev_class_report_compute(const ev_confusion *c, ev_class_report *r);
void ev_class_report_free(ev_class_report *r);

/* Adds the report to obj as metrics: accuracy, macro_precision, macro_recall,
 * macro_f1, precision.I, recall.I, f1.I (I = class id). */
int ev_class_report_to_metrics(const ev_class_report *r, json_t *obj);
/* The matrix as rows of counts: [[..], ..]. New reference. */
json_t *ev_confusion_to_json(const ev_confusion *c);

/* Language models: token-weighted mean of per-batch mean losses. */
typedef struct {
    double sum;     /* sum over batches of mean_loss * tokens */
    int64_t tokens; /* tokens that carried a target */
} ev_lm_loss;

void ev_lm_loss_add(ev_lm_loss *a, double mean_loss, int64_t tokens);
double ev_lm_loss_mean(const ev_lm_loss *a);  /* NAN when no tokens */
double ev_lm_perplexity(const ev_lm_loss *a); /* exp(mean loss) */

/* Regression: mean squared error over every output value. */
typedef struct {
    double sum_sq;
    int64_t n; /* values */
} ev_mse;

void ev_mse_add(ev_mse *a, const float *pred, const float *target, size_t n);
double ev_mse_value(const ev_mse *a); /* NAN when n = 0 */

#endif
