/* metrics.c: a small Prometheus registry. Values are doubles stored as the
 * bits of a 64-bit atomic so updates need no lock. */
#include "core/metrics.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum metric_kind { METRIC_COUNTER, METRIC_GAUGE, METRIC_HISTOGRAM };

static const double hist_bounds[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                     0.1,    0.25,  0.5,    1.0,   2.5,  5.0,   10.0};
#define NBUCKETS (sizeof(hist_bounds) / sizeof(hist_bounds[0]))

struct kn_metric {
    enum metric_kind kind;
    char *name, *help, *labels;
    _Atomic uint64_t value;               /* double bits: counter/gauge value, histogram sum */
    _Atomic uint64_t count;               /* histogram sample count */
    _Atomic uint64_t buckets[NBUCKETS];   /* histogram: samples <= bound (not cumulative) */
    struct kn_metric *next;
};

struct kn_metrics {
    pthread_mutex_t lock;
    kn_metric *head, *tail; /* creation order */
};

static double bits_to_double(uint64_t b)
{
    double d;
    memcpy(&d, &b, sizeof(d));
    return d;
}

static uint64_t double_to_bits(double d)
{
    uint64_t b;
    memcpy(&b, &d, sizeof(b));
    return b;
}

kn_metrics *kn_metrics_new(void)
{
    kn_metrics *m = calloc(1, sizeof(*m));
    if (m) pthread_mutex_init(&m->lock, NULL);
    return m;
}

void kn_metrics_destroy(kn_metrics *m)
{
    if (!m) return;
    for (kn_metric *x = m->head, *next; x; x = next) {
        next = x->next;
        free(x->name);
        free(x->help);
        free(x->labels);
        free(x);
    }
    pthread_mutex_destroy(&m->lock);
    free(m);
}

static kn_metric *metric_get(kn_metrics *m, enum metric_kind kind, const char *name,
                             const char *help, const char *labels)
{
    labels = labels ? labels : "";
    pthread_mutex_lock(&m->lock);
    kn_metric *x = m->head;
    for (; x; x = x->next)
        if (strcmp(x->name, name) == 0 && strcmp(x->labels, labels) == 0) break;
    if (!x) {
        x = calloc(1, sizeof(*x));
        if (x) {
            x->kind = kind;
            x->name = strdup(name);
            x->help = strdup(help ? help : "");
            x->labels = strdup(labels);
            if (!x->name || !x->help || !x->labels) {
                free(x->name);
                free(x->help);
                free(x->labels);
                free(x);
                x = NULL;
            } else {
                if (m->tail) m->tail->next = x;
                else m->head = x;
                m->tail = x;
            }
        }
    }
    pthread_mutex_unlock(&m->lock);
    return x;
}

kn_metric *kn_metrics_counter(kn_metrics *m, const char *name, const char *help,
                              const char *labels)
{
    return metric_get(m, METRIC_COUNTER, name, help, labels);
}

kn_metric *kn_metrics_gauge(kn_metrics *m, const char *name, const char *help,
                            const char *labels)
{
    return metric_get(m, METRIC_GAUGE, name, help, labels);
}

kn_metric *kn_metrics_histogram(kn_metrics *m, const char *name, const char *help,
                                const char *labels)
{
    return metric_get(m, METRIC_HISTOGRAM, name, help, labels);
}

static void atomic_add_double(_Atomic uint64_t *slot, double v)
{
    uint64_t old = atomic_load_explicit(slot, memory_order_relaxed);
    while (!atomic_compare_exchange_weak_explicit(slot, &old,
                                                  double_to_bits(bits_to_double(old) + v),
                                                  memory_order_relaxed, memory_order_relaxed))
        ;
}

void kn_metrics_add(kn_metric *c, double v)
{
    if (c) atomic_add_double(&c->value, v);
}

void kn_metrics_set(kn_metric *g, double v)
{
    if (g) atomic_store_explicit(&g->value, double_to_bits(v), memory_order_relaxed);
}

void kn_metrics_observe(kn_metric *h, double v)
{
    if (!h) return;
    for (size_t i = 0; i < NBUCKETS; i++)
        if (v <= hist_bounds[i]) {
            atomic_fetch_add_explicit(&h->buckets[i], 1, memory_order_relaxed);
            break;
        }
    atomic_fetch_add_explicit(&h->count, 1, memory_order_relaxed);
    atomic_add_double(&h->value, v);
}

double kn_metrics_value(const kn_metric *c)
{
    return c ? bits_to_double(atomic_load_explicit(&c->value, memory_order_relaxed)) : 0;
}

static void render_labels(FILE *out, const char *labels, const char *extra)
{
    if (!*labels && !extra) return;
    fprintf(out, "{%s%s%s}", labels, (*labels && extra) ? "," : "", extra ? extra : "");
}

char *kn_metrics_render(kn_metrics *m)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&buf, &len);
    if (!out) return NULL;
    static const char *const kinds[] = {"counter", "gauge", "histogram"};
    pthread_mutex_lock(&m->lock);
    for (kn_metric *x = m->head; x; x = x->next) {
        int first = 1; /* HELP/TYPE once per name: only before its first series */
        for (kn_metric *y = m->head; y != x; y = y->next)
            if (strcmp(y->name, x->name) == 0) first = 0;
        if (first) fprintf(out, "# HELP %s %s\n# TYPE %s %s\n", x->name, x->help, x->name,
                           kinds[x->kind]);
        if (x->kind != METRIC_HISTOGRAM) {
            fprintf(out, "%s", x->name);
            render_labels(out, x->labels, NULL);
            fprintf(out, " %.17g\n", kn_metrics_value(x));
            continue;
        }
        uint64_t cum = 0;
        char le[48];
        for (size_t i = 0; i < NBUCKETS; i++) {
            cum += atomic_load_explicit(&x->buckets[i], memory_order_relaxed);
            snprintf(le, sizeof(le), "le=\"%g\"", hist_bounds[i]);
            fprintf(out, "%s_bucket", x->name);
            render_labels(out, x->labels, le);
            fprintf(out, " %llu\n", (unsigned long long)cum);
        }
        uint64_t count = atomic_load_explicit(&x->count, memory_order_relaxed);
        fprintf(out, "%s_bucket", x->name);
        render_labels(out, x->labels, "le=\"+Inf\"");
        fprintf(out, " %llu\n%s_sum", (unsigned long long)count, x->name);
        render_labels(out, x->labels, NULL);
        fprintf(out, " %.17g\n%s_count", kn_metrics_value(x), x->name);
        render_labels(out, x->labels, NULL);
        fprintf(out, " %llu\n", (unsigned long long)count);
    }
    pthread_mutex_unlock(&m->lock);
    fclose(out);
    return buf;
}
