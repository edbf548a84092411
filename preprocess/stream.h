/* stream.h: kiln-preprocess's consume-transform-produce engine: a consumer
 * group on <prefix>.raw.text and <prefix>.raw.image (read_committed), one
 * transactional producer, and the state changelogs (<prefix>.state.<dataset>)
 * that are read to their end at start and on every partition assignment,
 * then tailed so instances see each other's dedup entries.
 *
 * Transaction lifecycle (numbered so the code can name the steps):
 *  1. The first record after a commit begins a transaction.
 *  2. Each record's outputs (shards when full, changelog entries, DLQ
 *     records) are produced inside it; its next offset is remembered.
 *  3. After flush_ms (or txn_max_records records, or once the input runs
 *     dry and the transaction is flush_ms/10 old) the datasets flush their
 *     partial shards and LM tails, the offsets are sent to the transaction
 *     and it commits: outputs, changelog and input offsets become visible
 *     together, or not at all.
 *  4. An abortable error aborts: buffered examples and pending dedup inserts
 *     are dropped and the consumer is rewound to the committed offsets, so
 *     the same records are processed again. A record whose processing
 *     failed record_attempts times in a row (out of memory on a huge image,
 *     a produce Kafka refuses) goes to the DLQ, reason processing_failed,
 *     with the error, instead of a last try: the stream moves on; nothing
 *     is retried forever.
 *  5. Partitions being revoked commit the open transaction first (or abort
 *     it when the assignment was lost).
 *  6. A fenced producer (fatal in librdkafka: the broker aborted a
 *     transaction that outlived transaction.timeout.ms while it was paused
 *     or restarting, and bumped the epoch) is re-created in place under the
 *     same transactional.id, and step 4 follows (drop, rewind). A second
 *     fence within a minute of the last re-creation (another live instance
 *     with the same id) ends the process, as any other fatal error does. A
 *     produce refused because the transaction had already failed counts
 *     neither against the record nor against the flush bound of step 4. */
#ifndef PP_STREAM_H
#define PP_STREAM_H

#include <stddef.h>

#include "dataset.h"
#include "service.h"

typedef struct {
    const char *brokers;
    const char *group;           /* consumer group id */
    const char *default_dataset; /* for records without a dataset header; may be "" */
    int flush_ms;                /* commit interval */
    int txn_max_records;         /* commit after this many records at most */
    int dlq_duplicates;          /* bool: duplicates go to the DLQ too (else counted only) */
    size_t dlq_max_bytes;        /* larger values are left out of DLQ records */
    int record_attempts;         /* tries of a record whose processing fails (not a
                                    rejection) before it goes to the DLQ; 0: 3 */
} pp_stream_options;

typedef struct pp_stream pp_stream;

/* Borrows env and the datasets (they must outlive the stream). Creates the
 * consumers; NULL with errbuf on error. */
pp_stream *pp_stream_new(const pp_stream_options *o, pp_env *env, pp_dataset **ds, size_t nds,
                         char *errbuf, size_t errsz);

/* Rebuilds the state from the changelogs (to their end), then subscribes. */
int pp_stream_start(pp_stream *st, char *errbuf, size_t errsz);

/* One iteration: polls one record (up to 100 ms), tails the changelogs,
 * commits when due. KN_OK, or a fatal code after which the process must end. */
int pp_stream_step(pp_stream *st);

/* Commits the open transaction (SIGTERM drain). */
int pp_stream_drain(pp_stream *st);

/* Non-zero while this instance holds at least one partition of the raw
 * topics (the state rebuilt, the group joined). Else 0, and why (may be
 * NULL) says what it waits for: the first assignment, a rebalance in
 * progress, or none at all ("idle": the group has more instances than
 * partitions). Safe from any thread (/readyz). */
int pp_stream_ready(const pp_stream *st, char *why, size_t whysz);

/* Leaves the group (committing first) and frees. Accepts NULL. */
void pp_stream_destroy(pp_stream *st);

#endif
