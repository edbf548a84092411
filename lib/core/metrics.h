/* metrics.h: Prometheus metrics: counters, gauges and histograms in a
 * registry rendered as the text exposition format (version 0.0.4).
 * Updates are lock-free atomics, safe from any thread; creating a metric
 * takes the registry lock (do it at start-up, keep the pointer). */
#ifndef KN_METRICS_H
#define KN_METRICS_H

#include <stddef.h>

typedef struct kn_metrics kn_metrics;
typedef struct kn_metric kn_metric;

kn_metrics *kn_metrics_new(void);
void kn_metrics_destroy(kn_metrics *m);

/* Get-or-create. `labels` is the inside of the braces, already escaped, e.g.
 * "reason=\"bad_utf8\"" or NULL. The same (name, labels) returns the same
 * metric; the pointer lives as long as the registry. NULL only on OOM. */
kn_metric *kn_metrics_counter(kn_metrics *m, const char *name, const char *help,
                              const char *labels);
kn_metric *kn_metrics_gauge(kn_metrics *m, const char *name, const char *help,
                            const char *labels);
/* Histogram with the default latency buckets (seconds, 0.5 ms to 10 s). */
kn_metric *kn_metrics_histogram(kn_metrics *m, const char *name, const char *help,
                                const char *labels);

void kn_metrics_add(kn_metric *c, double v);     /* counter += v (v >= 0) */
void kn_metrics_set(kn_metric *g, double v);     /* gauge = v */
void kn_metrics_observe(kn_metric *h, double v); /* histogram sample */
double kn_metrics_value(const kn_metric *c);     /* counter/gauge value, sum for histograms */

/* The whole registry in Prometheus text format; caller frees. */
char *kn_metrics_render(kn_metrics *m);

#endif
