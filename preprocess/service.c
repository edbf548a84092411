/* service.c: kiln-preprocess's metrics (rendered at /metrics). */
#include "service.h"

#include <stdio.h>
#include <string.h>

#include "core/log.h"
#include "stream/record.h"

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
    pthread_mutex_init(&m->refusal_lock, NULL);
    m->nrefusal = 0;
}

void pp_metrics_reject(pp_metrics *m, const char *reason)
{
    char labels[160];
    snprintf(labels, sizeof(labels), "reason=\"%s\"", reason);
    kn_metric *c = kn_metrics_counter(m->reg, "kiln_preprocess_rejects_total",
                                      "Records not used, by reason", labels);
    if (c) kn_metrics_add(c, 1);
}

#define REFUSAL_PERIOD_MS 60000

static void log_count(struct pp_refusal_class *c)
{
    kn_log_warn("%ld more record(s) refused as %s in the last minute (the first: %s); "
                "`kiln-ingest dlq --reason %s` lists them",
                c->count, c->reason, c->example, c->reason);
}

void pp_metrics_refused(pp_metrics *m, const char *reason, const char *dataset, const char *origin,
                        const char *detail)
{
    pp_metrics_reject(m, reason);
    int64_t now = kn_record_now_ms();
    pthread_mutex_lock(&m->refusal_lock);
    struct pp_refusal_class *c = NULL;
    for (int i = 0; i < m->nrefusal && !c; i++)
        if (strcmp(m->refusal[i].reason, reason) == 0) c = &m->refusal[i];
    if (!c && m->nrefusal < (int)(sizeof(m->refusal) / sizeof(m->refusal[0]))) {
        c = &m->refusal[m->nrefusal++];
        snprintf(c->reason, sizeof(c->reason), "%s", reason);
        c->last_line_ms = 0;
        c->count = 0;
    }
    if (!c || (c->count == 0 && now - c->last_line_ms >= REFUSAL_PERIOD_MS)) {
        kn_log_warn("refused a record as %s: dataset %s, origin %s: %s; `kiln-ingest dlq "
                    "--reason %s` lists the refused records (further ones are counted once a "
                    "minute)",
                    reason, dataset && *dataset ? dataset : "-", origin ? origin : "-",
                    detail ? detail : "", reason);
        if (c) c->last_line_ms = now;
    } else {
        if (c->count++ == 0)
            snprintf(c->example, sizeof(c->example), "dataset %s, origin %s: %s",
                     dataset && *dataset ? dataset : "-", origin ? origin : "-",
                     detail ? detail : "");
        if (now - c->last_line_ms >= REFUSAL_PERIOD_MS) {
            log_count(c);
            c->last_line_ms = now;
            c->count = 0;
        }
    }
    pthread_mutex_unlock(&m->refusal_lock);
}

void pp_metrics_refusals_tick(pp_metrics *m)
{
    int64_t now = kn_record_now_ms();
    pthread_mutex_lock(&m->refusal_lock);
    for (int i = 0; i < m->nrefusal; i++) {
        struct pp_refusal_class *c = &m->refusal[i];
        if (c->count > 0 && now - c->last_line_ms >= REFUSAL_PERIOD_MS) {
            log_count(c);
            c->last_line_ms = now;
            c->count = 0;
        }
    }
    pthread_mutex_unlock(&m->refusal_lock);
}
