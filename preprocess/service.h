/* service.h: what kiln-preprocess's parts share: the process-wide handles
 * (producer, instance name, topic prefix) and the metrics. */
#ifndef PP_SERVICE_H
#define PP_SERVICE_H

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

#endif
