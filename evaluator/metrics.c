/* metrics.c: confusion matrix → accuracy, per-class and macro precision /
 * recall / F1; LM loss and perplexity; MSE. Definitions in metrics.h. */
#include "evmetrics.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/kn.h"

int ev_confusion_init(ev_confusion *c, int k)
{
    memset(c, 0, sizeof(*c));
    if (k < 1 || k > 65536) return KN_EINVAL;
    c->m = calloc((size_t)k * (size_t)k, sizeof(*c->m));
    if (!c->m) return KN_ENOMEM;
    c->k = k;
    return KN_OK;
}

void ev_confusion_free(ev_confusion *c)
{
    if (!c) return;
    free(c->m);
    memset(c, 0, sizeof(*c));
}

int ev_confusion_add(ev_confusion *c, int truth, int pred)
{
    if (truth < 0 || truth >= c->k || pred < 0 || pred >= c->k) return -1;
    c->m[(size_t)truth * c->k + pred]++;
    c->n++;
    return 0;
}

int ev_class_report_compute(const ev_confusion *c, ev_class_report *r)
{
    memset(r, 0, sizeof(*r));
    int k = c->k;
    r->precision = calloc((size_t)k, sizeof(double));
    r->recall = calloc((size_t)k, sizeof(double));
    r->f1 = calloc((size_t)k, sizeof(double));
    r->support = calloc((size_t)k, sizeof(int64_t));
    if (!r->precision || !r->recall || !r->f1 || !r->support) {
        ev_class_report_free(r);
        return KN_ENOMEM;
    }
    r->k = k;
    int64_t correct = 0;
    int present = 0;
    for (int i = 0; i < k; i++) {
        int64_t tp = c->m[(size_t)i * k + i], row = 0, col = 0;
        for (int j = 0; j < k; j++) {
            row += c->m[(size_t)i * k + j];
            col += c->m[(size_t)j * k + i];
        }
        correct += tp;
        r->support[i] = row;
        r->precision[i] = col ? (double)tp / (double)col : 0.0;
        r->recall[i] = row ? (double)tp / (double)row : 0.0;
        double s = r->precision[i] + r->recall[i];
        r->f1[i] = s > 0 ? 2.0 * r->precision[i] * r->recall[i] / s : 0.0;
        if (row || col) {
            present++;
            r->macro_precision += r->precision[i];
            r->macro_recall += r->recall[i];
            r->macro_f1 += r->f1[i];
        }
    }
    if (present) {
        r->macro_precision /= present;
        r->macro_recall /= present;
        r->macro_f1 /= present;
    }
    r->accuracy = c->n ? (double)correct / (double)c->n : 0.0;
    return KN_OK;
}

void ev_class_report_free(ev_class_report *r)
{
    if (!r) return;
    free(r->precision);
    free(r->recall);
    free(r->f1);
    free(r->support);
    memset(r, 0, sizeof(*r));
}

int ev_class_report_to_metrics(const ev_class_report *r, json_t *obj)
{
    int bad = 0;
    bad |= json_object_set_new(obj, "accuracy", json_real(r->accuracy));
    bad |= json_object_set_new(obj, "macro_precision", json_real(r->macro_precision));
    bad |= json_object_set_new(obj, "macro_recall", json_real(r->macro_recall));
    bad |= json_object_set_new(obj, "macro_f1", json_real(r->macro_f1));
    for (int i = 0; i < r->k; i++) {
        char name[64];
        snprintf(name, sizeof(name), "precision.%d", i);
        bad |= json_object_set_new(obj, name, json_real(r->precision[i]));
        snprintf(name, sizeof(name), "recall.%d", i);
        bad |= json_object_set_new(obj, name, json_real(r->recall[i]));
        snprintf(name, sizeof(name), "f1.%d", i);
        bad |= json_object_set_new(obj, name, json_real(r->f1[i]));
    }
    return bad ? KN_ENOMEM : KN_OK;
}

json_t *ev_confusion_to_json(const ev_confusion *c)
{
    json_t *rows = json_array();
    for (int i = 0; rows && i < c->k; i++) {
        json_t *row = json_array();
        for (int j = 0; row && j < c->k; j++)
            json_array_append_new(row, json_integer(c->m[(size_t)i * c->k + j]));
        if (!row || json_array_append_new(rows, row)) {
            json_decref(rows);
            return NULL;
        }
    }
    return rows;
}

void ev_lm_loss_add(ev_lm_loss *a, double mean_loss, int64_t tokens)
{
    if (tokens <= 0) return;
    a->sum += mean_loss * (double)tokens;
    a->tokens += tokens;
}

double ev_lm_loss_mean(const ev_lm_loss *a)
{
    return a->tokens ? a->sum / (double)a->tokens : NAN;
}

double ev_lm_perplexity(const ev_lm_loss *a)
{
    return exp(ev_lm_loss_mean(a));
}

void ev_mse_add(ev_mse *a, const float *pred, const float *target, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        double d = (double)pred[i] - (double)target[i];
        a->sum_sq += d * d;
    }
    a->n += (int64_t)n;
}

double ev_mse_value(const ev_mse *a)
{
    return a->n ? a->sum_sq / (double)a->n : NAN;
}
