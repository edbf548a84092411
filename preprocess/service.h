/* service.h: what kiln-preprocess's parts share: the process-wide handles
 * (producer, instance name, topic prefix) and the metrics. */
#ifndef PP_SERVICE_H
#define PP_SERVICE_H

#include <pthread.h>
#include <stdint.h>

#include "stream/kafka.h"
#include "core/metrics.h"

#define PP_SERVICE "kiln-preprocess"

typedef struct {
    kn_metrics *reg;
    kn_metric *in_text, *in_image;        /* raw records consumed */
    kn_metric *used;                      /* records that became (part of) an example */
    kn_metric *dlq;                       /* records sent to the DLQ */
    kn_metric *duplicates;                /* records dropped as duplicates */
    kn_metric *tokens, *images;           /* totals */
    kn_metric *tokens_rate, *images_rate; /* per second, over the last few seconds */
    kn_metric *lag;                       /* records behind the high watermarks */
    kn_metric *commits, *aborts;          /* transactions */
    kn_metric *txn_seconds;               /* commit latency histogram */
    kn_metric *state_entries;             /* changelog entries applied */
    /* The log lines about refusals: per reason, the first at once, then the
     * count of the others once a minute (pp_metrics_refused, _tick). */
    pthread_mutex_t refusal_lock;
    struct pp_refusal_class {
        char reason[48];
        int64_t last_line_ms; /* when this reason was last logged */
        long count;           /* refused since then, not yet logged */
        char example[768];    /* the first of those: dataset, origin, detail */
    } refusal[16];
    int nrefusal;
} pp_metrics;

typedef struct {
    kn_kafka_producer *producer; /* transactional; every output goes through it */
    const char *prefix;          /* topic prefix */
    const char *instance;        /* stable instance id (transactional.id suffix) */
    pp_metrics *m;
} pp_env;

/* Creates every metric in reg. */
void pp_metrics_init(pp_metrics *m, kn_metrics *reg);

/* rejects_total{reason}; get-or-create (takes the registry lock). */
void pp_metrics_reject(pp_metrics *m, const char *reason);

/* A record sent to the DLQ: counts it (pp_metrics_reject) and logs it, so a
 * refusal is never silent: the first of each reason at once (warn, with the
 * dataset, origin, detail and the `kiln-ingest dlq` command that lists
 * them), then at most one line per reason per minute with the count. */
void pp_metrics_refused(pp_metrics *m, const char *reason, const char *dataset, const char *origin,
                        const char *detail);
/* Logs the counts whose minute is over; call it from the loop. */
void pp_metrics_refusals_tick(pp_metrics *m);

#endif
