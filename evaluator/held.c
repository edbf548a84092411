/* held.c: events whose handling failed transiently wait here, one per
 * partition of the events topic, while the consumer goes on with the other
 * partitions (the topic is keyed by model, so one stuck model never stops the
 * evaluation of the others; issue 18, finding 5). A held event's partition is
 * paused; the event is retried after a backoff that doubles from 1 s up to a
 * bound; once done it is committed, the partition is resumed and consumption
 * goes on right after it. Events of one partition stay in order. Limit: a
 * held partition that a rebalance gives to another evaluator is handled
 * there too; harmless, the flow is idempotent (flow.c, rules 1-3). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/kn.h"
#include "core/log.h"
#include "core/shutdown.h"
#include "evaluator.h"

typedef struct {
    rd_kafka_message_t *m; /* owned */
    double due;            /* CLOCK_MONOTONIC seconds of the next try */
    double backoff;        /* seconds until the try after that */
    char why[1024];
} held_entry;

struct ev_held {
    held_entry *e; /* (n) */
    size_t n;
    double max_backoff; /* seconds */
    kn_metric *retries;
};

static double mono(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

ev_held *ev_held_new(double max_backoff_s, kn_metric *retries)
{
    ev_held *h = calloc(1, sizeof(*h));
    if (!h) return NULL;
    h->max_backoff = max_backoff_s < 1 ? 1 : max_backoff_s;
    h->retries = retries;
    return h;
}

void ev_held_destroy(ev_held *h)
{
    if (!h) return;
    for (size_t i = 0; i < h->n; i++)
        rd_kafka_message_destroy(h->e[i].m); /* not committed: read again after a restart */
    free(h->e);
    free(h);
}

static int commit_next(kn_kafka_consumer *c, const rd_kafka_message_t *m)
{
    char err[256];
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(l, rd_kafka_topic_name(m->rkt), m->partition)->offset =
        m->offset + 1;
    int rc = kn_kafka_consumer_commit(c, l, err, sizeof(err));
    rd_kafka_topic_partition_list_destroy(l);
    if (rc != KN_OK) kn_log_warn("commit of offset %lld: %s", (long long)m->offset + 1, err);
    return rc;
}

/* Pauses (pause = 1) or resumes the partition of m; a resume also seeks to
 * just after m, so whatever was fetched past it before the pause is read
 * again, in order. */
static void pause_partition(kn_kafka_consumer *c, const rd_kafka_message_t *m, int pause)
{
    rd_kafka_t *rk = kn_kafka_consumer_handle(c);
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(l, rd_kafka_topic_name(m->rkt), m->partition)->offset =
        m->offset + 1;
    rd_kafka_resp_err_t e =
        pause ? rd_kafka_pause_partitions(rk, l) : rd_kafka_resume_partitions(rk, l);
    if (e)
        kn_log_warn("%s partition %d: %s", pause ? "pausing" : "resuming", (int)m->partition,
                    rd_kafka_err2str(e));
    if (!pause) {
        l->elems[0].offset = m->offset + 1;
        rd_kafka_error_t *se = rd_kafka_seek_partitions(rk, l, 5000);
        if (se) {
            kn_log_warn("seeking partition %d: %s", (int)m->partition, rd_kafka_error_string(se));
            rd_kafka_error_destroy(se);
        }
    }
    rd_kafka_topic_partition_list_destroy(l);
}

static held_entry *find(ev_held *h, const rd_kafka_message_t *m)
{
    for (size_t i = 0; i < h->n; i++)
        if (h->e[i].m->partition == m->partition &&
            strcmp(rd_kafka_topic_name(h->e[i].m->rkt), rd_kafka_topic_name(m->rkt)) == 0)
            return &h->e[i];
    return NULL;
}

void ev_held_dispatch(ev_held *h, ev_ctx *ctx, kn_kafka_consumer *c, rd_kafka_message_t *m)
{
    char err[1024];
    if (find(h, m)) { /* fetched before the pause took hold: read again after the held one */
        rd_kafka_message_destroy(m);
        return;
    }
    ev_outcome o = ev_handle_event(ctx, m->payload, m->len, err, sizeof(err));
    if (o == EV_DONE) commit_next(c, m);
    if (o != EV_RETRY) {
        rd_kafka_message_destroy(m);
        return;
    }
    held_entry *grown = realloc(h->e, (h->n + 1) * sizeof(*grown));
    if (!grown) { /* cannot hold it: not committed, so a restart reads it again */
        kn_log_error("%s; out of memory: the event is dropped until a restart", err);
        rd_kafka_message_destroy(m);
        return;
    }
    h->e = grown;
    held_entry *e = &h->e[h->n++];
    e->m = m;
    e->backoff = 1;
    e->due = mono() + e->backoff;
    snprintf(e->why, sizeof(e->why), "%s", err);
    pause_partition(c, m, 1);
    kn_metrics_add(h->retries, 1);
    kn_log_warn("%s (partition %d held; retrying in %.0f s)", err, (int)m->partition, e->backoff);
}

void ev_held_retry_due(ev_held *h, ev_ctx *ctx, kn_kafka_consumer *c)
{
    char err[1024];
    for (size_t i = 0; i < h->n && !kn_shutdown_requested();) {
        held_entry *e = &h->e[i];
        if (mono() < e->due) {
            i++;
            continue;
        }
        ev_outcome o = ev_handle_event(ctx, e->m->payload, e->m->len, err, sizeof(err));
        if (o == EV_RETRY) {
            e->backoff = e->backoff * 2 < h->max_backoff ? e->backoff * 2 : h->max_backoff;
            e->due = mono() + e->backoff;
            snprintf(e->why, sizeof(e->why), "%s", err);
            kn_metrics_add(h->retries, 1);
            kn_log_warn("%s (partition %d held; retrying in %.0f s)", err, (int)e->m->partition,
                        e->backoff);
            i++;
            continue;
        }
        if (o == EV_STOP) return; /* shutdown: stays held, not committed */
        commit_next(c, e->m);
        pause_partition(c, e->m, 0);
        rd_kafka_message_destroy(e->m);
        h->e[i] = h->e[--h->n];
    }
}

size_t ev_held_count(const ev_held *h, char *why, size_t whysz)
{
    if (why && whysz) {
        why[0] = '\0';
        if (h->n)
            snprintf(why, whysz, "%zu partition(s) of the events topic held back; partition %d: %s",
                     h->n, (int)h->e[0].m->partition, h->e[0].why);
    }
    return h->n;
}

double ev_held_next_due(const ev_held *h)
{
    double next = -1, now = mono();
    for (size_t i = 0; i < h->n; i++) {
        double d = h->e[i].due - now;
        if (d < 0) d = 0;
        if (next < 0 || d < next) next = d;
    }
    return next;
}
