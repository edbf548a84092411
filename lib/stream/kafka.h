/* kafka.h: the one small wrapper through which every kiln service speaks to
 * Kafka (librdkafka).
 *
 * Producer: idempotent (enable.idempotence), a delivery-report callback for
 * every message, continuous polling by a background thread, queue-full
 * handled by poll-and-retry, bounded flush on destroy that reports what is
 * still queued. Optionally transactional (consume-transform-produce).
 * Consumer: manual offsets (no auto-commit, no auto offset store),
 * isolation.level=read_committed.
 * Admin: create topics, answering KN_OK when a topic already exists. */
#ifndef KN_KAFKA_H
#define KN_KAFKA_H

/* The producer's message.max.bytes (and the broker's in deploy/): a larger
 * message fails at produce time, so writers size what they emit below it. */
#define KN_KAFKA_MAX_MESSAGE_BYTES     (16 * 1024 * 1024)
#define KN_KAFKA_MAX_MESSAGE_BYTES_STR "16777216"

#include <stddef.h>
#include <stdint.h>

#include <librdkafka/rdkafka.h>

typedef struct kn_kafka_producer kn_kafka_producer;
typedef struct kn_kafka_consumer kn_kafka_consumer;

/* A record header; value may hold any bytes. */
typedef struct {
    const char *name;
    const void *value;
    size_t len;
} kn_kafka_header;

/* Delivery report, called once per message from the producer's poll thread
 * (or, with poll_on_produce, from the thread calling produce/flush/poll):
 * err is RD_KAFKA_RESP_ERR_NO_ERROR when the broker acknowledged it (then
 * partition/offset say where), anything else when it was not delivered. */
typedef void (*kn_kafka_dr_cb)(void *opaque, void *msg_opaque, rd_kafka_resp_err_t err,
                               int32_t partition, int64_t offset);

typedef struct {
    const char *brokers;          /* "host:port,..." */
    const char *client_id;        /* default "kiln" */
    const char *transactional_id; /* NULL: not transactional */
    kn_kafka_dr_cb dr_cb;         /* may be NULL */
    void *dr_opaque;
    int linger_ms;                /* default 5 */
    const char *compression;      /* default "zstd" */
    const char *const *extra;     /* more librdkafka properties: {"k","v",...,NULL} */
    /* 0: a poll thread serves delivery reports, also while the caller is
     * idle (servers, transactional producers). 1: no thread; each
     * kn_kafka_produce serves the reports that are ready, on the caller's
     * thread, and the caller ends with kn_kafka_producer_flush, as
     * librdkafka's own producer examples do. For one bulk loop: the message
     * memory is then freed by the thread that allocated it (no cross-thread
     * malloc traffic; docs/performance.md, Ingest). */
    int poll_on_produce;
} kn_kafka_producer_options;

/* Creates the producer and, unless poll_on_produce, starts its poll thread,
 * which serves delivery reports for transactional producers too. For a
 * transactional one, also runs init_transactions. NULL on error (errbuf says). */
kn_kafka_producer *kn_kafka_producer_new(const kn_kafka_producer_options *opts, char *errbuf,
                                         size_t errsz);

/* Enqueues a copy of key/value/headers. partition -1 = partitioner (by key).
 * Blocks while the local queue is full (polling) up to 30 s. Returns KN_OK
 * once queued; delivery is reported through dr_cb with msg_opaque. */
int kn_kafka_produce(kn_kafka_producer *p, const char *topic, int32_t partition, const void *key,
                     size_t key_len, const void *value, size_t value_len,
                     const kn_kafka_header *headers, size_t nheaders, void *msg_opaque);

/* Waits up to timeout_ms for every queued message to be reported; returns
 * the number still outstanding (0 = all reported). */
int kn_kafka_producer_flush(kn_kafka_producer *p, int timeout_ms);

/* Serves delivery reports now (for transactional producers). */
void kn_kafka_producer_poll(kn_kafka_producer *p, int timeout_ms);

/* Messages not yet reported. */
int kn_kafka_producer_outlen(kn_kafka_producer *p);

/* Bounded flush (timeout_ms), logs how many messages are still queued, then
 * destroys. Accepts NULL. */
void kn_kafka_producer_destroy(kn_kafka_producer *p, int timeout_ms);

/* Transactions (transactional producers only). On failure the code says
 * what to do next: KN_ETIMEDOUT retriable (call again), KN_ECONFLICT the
 * transaction must be aborted, KN_EKAFKA fatal (destroy the producer). */
int kn_kafka_txn_begin(kn_kafka_producer *p, char *errbuf, size_t errsz);
int kn_kafka_txn_send_offsets(kn_kafka_producer *p, kn_kafka_consumer *c,
                              const rd_kafka_topic_partition_list_t *offsets, char *errbuf,
                              size_t errsz);
int kn_kafka_txn_commit(kn_kafka_producer *p, int timeout_ms, char *errbuf, size_t errsz);
int kn_kafka_txn_abort(kn_kafka_producer *p, int timeout_ms, char *errbuf, size_t errsz);

rd_kafka_t *kn_kafka_producer_handle(kn_kafka_producer *p);

/* Non-zero when the producer has raised a fatal error (errbuf says which):
 * for a transactional one, a fence (_FENCED: another producer initialised
 * the same transactional.id, or the broker aborted a transaction that
 * outlived transaction.timeout.ms and bumped the epoch). */
int kn_kafka_producer_fatal(kn_kafka_producer *p, char *errbuf, size_t errsz);

/* Replaces a transactional producer's handle after a fatal error, in place
 * (same options, same transactional.id): messages still queued in the old
 * handle are dropped (they belonged to a transaction the broker aborts),
 * then init_transactions (up to timeout_ms) takes the next epoch. KN_OK;
 * KN_ETIMEDOUT when init_transactions did not finish (the broker not back):
 * call kn_kafka_producer_init_txn until it does; another code otherwise.
 * The handle is new in every case: kn_kafka_producer_handle changes. */
int kn_kafka_producer_recreate(kn_kafka_producer *p, int timeout_ms, char *errbuf, size_t errsz);
int kn_kafka_producer_init_txn(kn_kafka_producer *p, int timeout_ms, char *errbuf, size_t errsz);

/* After a failed kn_kafka_produce on a transactional producer: non-zero when
 * the refusal was the transaction's state, not the message's (the
 * transaction had already failed with an abortable error, e.g. after a
 * broker outage: "Erroneous state", or the producer is fenced): the caller
 * aborts (or re-creates) and tries again, without blaming the message.
 * Reads and clears the last refusal. */
int kn_kafka_producer_txn_refused(kn_kafka_producer *p);

/* Times kn_kafka_producer_recreate replaced the handle. */
unsigned kn_kafka_producer_recreated(const kn_kafka_producer *p);

/* --- consumer --- */

typedef struct {
    const char *brokers;
    const char *group_id;         /* required (offsets are per group) */
    const char *client_id;        /* default "kiln" */
    int read_committed;           /* isolation.level=read_committed when non-zero */
    const char *auto_offset_reset;/* "earliest" (default) or "latest" */
    /* Static group membership (group.instance.id): a member restarted under
     * the same id gets its partitions back at once, without waiting for the
     * dead member's session to expire. Stable per instance and unique in the
     * group (a second live member with the same id fences the first); NULL:
     * dynamic membership. Sessions last KN_KAFKA_SESSION_MS unless extra says
     * otherwise, so a dead dynamic member's partitions move within seconds. */
    const char *instance_id;
    const char *const *extra;     /* more librdkafka properties: {"k","v",...,NULL} */
    /* Group rebalance callback (may be NULL: librdkafka then assigns and
     * revokes by itself). When set, it must call rd_kafka_assign() itself, as
     * librdkafka's rebalance_cb contract says; it runs inside consumer_poll.
     * opaque is passed to it (rd_kafka_opaque). */
    void (*rebalance_cb)(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                         rd_kafka_topic_partition_list_t *parts, void *opaque);
    void *opaque;
} kn_kafka_consumer_options;

/* Default consumer session (session.timeout.ms) and heartbeat: short, so that
 * a member killed without leaving frees its partitions in seconds (Kafka's
 * default, 45 s, kept a restarted preprocess idle for 44 s). */
#define KN_KAFKA_SESSION_MS   10000
#define KN_KAFKA_HEARTBEAT_MS 3000
/* Bound on closing a consumer (leaving the group, final commits): with the
 * broker unreachable, close would otherwise wait for it indefinitely. */
#define KN_KAFKA_CLOSE_MS 3000

kn_kafka_consumer *kn_kafka_consumer_new(const kn_kafka_consumer_options *opts, char *errbuf,
                                         size_t errsz);

/* Group subscription (rebalanced across instances). */
int kn_kafka_consumer_subscribe(kn_kafka_consumer *c, const char *const *topics, size_t n,
                                char *errbuf, size_t errsz);

/* Manual assignment: partitions with their start offsets (the trainer seeks
 * to the offsets stored in its checkpoint this way). */
int kn_kafka_consumer_assign(kn_kafka_consumer *c, const rd_kafka_topic_partition_list_t *parts,
                             char *errbuf, size_t errsz);

/* Next message or NULL on timeout. The caller destroys it with
 * rd_kafka_message_destroy(). A message whose err is set is an event
 * (partition EOF, transient error), not a record. A subscribed consumer
 * that meets a fatal error (a static member fenced after a broker stall)
 * is re-created in place and rejoins its group: its rebalance callback sees
 * the partitions revoked, then assigned again; kn_kafka_consumer_handle()
 * returns the new handle from then on (do not keep it across polls). */
rd_kafka_message_t *kn_kafka_consumer_poll(kn_kafka_consumer *c, int timeout_ms);

/* How many times the consumer was re-created after a fatal error. */
unsigned kn_kafka_consumer_recreated(const kn_kafka_consumer *c);

/* Synchronous commit of explicit offsets (next offset to read). */
int kn_kafka_consumer_commit(kn_kafka_consumer *c, const rd_kafka_topic_partition_list_t *offsets,
                             char *errbuf, size_t errsz);

/* Number of partitions of a topic, or a negative KN_* code. */
int kn_kafka_partition_count(rd_kafka_t *rk, const char *topic, int timeout_ms);

/* Low and high watermarks of one partition, asked of its leader; a moment's
 * unknown leader or lagging metadata is retried within timeout_ms. Returns
 * KN_OK, or KN_EKAFKA with *low and *high untouched. */
int kn_kafka_watermarks(rd_kafka_t *rk, const char *topic, int32_t partition, int64_t *low,
                        int64_t *high, int timeout_ms);

rd_kafka_t *kn_kafka_consumer_handle(kn_kafka_consumer *c);

/* Closes (leaves the group; static members do not leave) and destroys, in at
 * most KN_KAFKA_CLOSE_MS plus the destroy: an unreachable broker does not
 * hold the process. Accepts NULL. */
void kn_kafka_consumer_destroy(kn_kafka_consumer *c);

/* --- admin --- */

typedef struct {
    const char *name;
    int partitions;        /* >= 1 */
    int compacted;         /* cleanup.policy=compact when non-zero */
    int64_t retention_ms;  /* 0: broker default; -1: forever */
} kn_kafka_topic_spec;

/* Partitions of <prefix>.events. Every event is keyed by model name, so the
 * events of one model stay in order on one partition while a model whose
 * event is held back (evaluator/held.c) does not stop the others. */
#define KN_EVENTS_PARTITIONS 8

/* One metadata request to brokers (librdkafka's logs silenced): KN_OK when a
 * broker answered within timeout_ms, else KN_EKAFKA with the reason. */
int kn_kafka_probe(const char *brokers, int timeout_ms, char *errbuf, size_t errsz);

/* Waits until brokers answer (kn_kafka_probe every second), for services
 * started before their broker (issue 14, hostile neighbours): logs once that
 * it waits and why, calls waiting(ctx, why) on every failed probe (a
 * service sets /readyz false with it), and once when it answers. KN_OK, or
 * KN_ETIMEDOUT when give_up() said so (shutdown). */
int kn_kafka_wait_broker(const char *brokers, void (*waiting)(void *ctx, const char *why),
                         void *ctx, int (*give_up)(void));

/* Creates the topics that do not exist yet; KN_OK when all exist after.
 * Replication (factor, min.insync.replicas) is the brokers' default. */
int kn_kafka_create_topics(const char *brokers, const kn_kafka_topic_spec *specs, size_t n,
                           int timeout_ms, char *errbuf, size_t errsz);

/* Finds a header by name in a consumed message. */
int kn_kafka_header_get(const rd_kafka_message_t *m, const char *name, const void **value,
                        size_t *len);

#endif
