/* service.c: kiln-preprocess's metrics (rendered at /metrics). */
#include "service.h"

#include <stdio.h>

void pp_metrics_init(pp_metrics *m, kn_metrics *reg)
{
    m->reg = reg;
    const char *in = "kiln_preprocess_records_in_total", *inh = "Raw records consumed";
    m->in_text = kn_metrics_counter(reg, in, inh, "topic=\"raw.text\"");
    m->in_image = kn_metrics_counter(reg, in, inh, "topic=\"raw.image\"");
    m->used = kn_metrics_counter(reg, "kiln_preprocess_records_used_total",
                                 "Raw records that became (part of) an example", NULL);
    m->dlq = kn_metrics_counter(reg, "kiln_preprocess_dlq_total", "Records sent to the DLQ", NULL);
    m->duplicates = kn_metrics_counter(reg, "kiln_preprocess_duplicates_total",
                                       "Texts dropped as exact or near duplicates", NULL);
    m->tokens = kn_metrics_counter(reg, "kiln_preprocess_tokens_total", "Tokens produced", NULL);
    m->images = kn_metrics_counter(reg, "kiln_preprocess_images_total", "Images produced", NULL);
    m->tokens_rate = kn_metrics_gauge(reg, "kiln_preprocess_tokens_per_second",
                                      "Tokens per second over the last 5 s", NULL);
    m->images_rate = kn_metrics_gauge(reg, "kiln_preprocess_images_per_second",
                                      "Images per second over the last 5 s", NULL);
    m->lag =
        kn_metrics_gauge(reg, "kiln_preprocess_lag_records",
                         "Records between the consumer positions and the high watermarks", NULL);
    m->commits = kn_metrics_counter(reg, "kiln_preprocess_txn_commits_total",
                                    "Transactions committed", NULL);
    m->aborts =
        kn_metrics_counter(reg, "kiln_preprocess_txn_aborts_total", "Transactions aborted", NULL);
    m->txn_seconds = kn_metrics_histogram(reg, "kiln_preprocess_txn_commit_seconds",
                                          "Flush + send offsets + commit latency", NULL);
    m->state_entries = kn_metrics_counter(reg, "kiln_preprocess_state_entries_total",
                                          "Changelog entries applied", NULL);
}

void pp_metrics_reject(pp_metrics *m, const char *reason)
{
    char labels[160];
    snprintf(labels, sizeof(labels), "reason=\"%s\"", reason);
    kn_metric *c = kn_metrics_counter(m->reg, "kiln_preprocess_rejects_total",
                                      "Records not used, by reason", labels);
    if (c) kn_metrics_add(c, 1);
}
