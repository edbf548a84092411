/* evaluator.h: kiln-evaluator's internals, shared by main.c and the tests:
 * the frozen eval sets and their durable store (evalset.c), scoring a model
 * on an eval set (score.c) and the per-event flow against the registry
 * (flow.c). docs/evaluator.md describes the design. */
#ifndef EV_EVALUATOR_H
#define EV_EVALUATOR_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "text/bpe.h"
#include "core/config.h"
#include "stream/kafka.h"
#include "core/metrics.h"
#include "nn/model.h"
#include "net/regclient.h"

/* --- eval sets (evalset.c) ---
 * An eval set is `<prefix>.eval.<dataset>` read from a start to a FIXED end
 * offset per partition. Its identity is frozen at the first evaluation for
 * the dataset, stored durably (the compacted topic `<prefix>.state.evaluator`,
 * key "evalset/<dataset>"), and reused for every later version, so all
 * versions of a dataset's models are scored on the same examples. The
 * content hash proves it: a later read that does not reproduce it (records
 * deleted by retention, topic recreated) fails with KN_ECORRUPT, and the
 * caller freezes a new generation. */

typedef struct {
    char dataset[128];
    char topic[256];
    int generation; /* 1, 2, ...: bumped when the frozen range is no longer readable */
    int nparts;
    int64_t *start, *end; /* (nparts): the range [start, end) of each partition */
    int64_t examples;     /* examples in the valid shards of the range */
    int64_t shards;       /* records in the range (valid or not) */
    char sha256[65];      /* SHA-256 over every record value, in (partition, offset) order */
    char kind[16];        /* shard kind of the first valid shard ("image", ...) */
    char frozen_at[32];   /* ISO 8601 UTC */
} ev_evalset_id;

void ev_evalset_id_free(ev_evalset_id *id);
/* {"dataset","topic","generation","partitions":[{"partition","start","end"}],
 *  "examples","shards","sha256","kind","frozen_at"}; new reference, NULL on OOM. */
json_t *ev_evalset_id_json(const ev_evalset_id *id);
/* The compact form stored with every version's metrics (a tag value of at
 * most 1 KiB): {"topic","generation","ends":"p:start-end,...","examples","sha256"}. */
json_t *ev_evalset_id_brief(const ev_evalset_id *id);
int ev_evalset_id_parse(const json_t *j, ev_evalset_id *id, char *errbuf, size_t errsz);
/* "<dataset>@g<generation>:<first 16 hex of sha256>", the `dataset` of metrics. */
void ev_evalset_label(const ev_evalset_id *id, char *out, size_t outsz);

typedef struct {
    void *buf; /* record value (owned) */
    size_t len;
} ev_blob;

typedef struct {
    ev_evalset_id id;
    ev_blob *shards; /* (nshards) in (partition, offset) order */
    size_t nshards;
    size_t bytes;
} ev_evalset;

void ev_evalset_free(ev_evalset *e);

/* The content part of an eval set's identity, from its shards in (partition,
 * offset) order: sha256 over every value, the examples and kind of the
 * valid shards, the shard count. The service's frozen sets and `score`'s
 * exported ones are identified by this one function, so they compare.
 * KN_ENOMEM when the hash cannot be set up (id unchanged). */
int ev_evalset_identify(const ev_blob *shards, size_t n, ev_evalset_id *id);

/* Freezes a new eval set: the current committed end of every partition of
 * `topic` (read_committed), read completely. KN_ENOTFOUND (errbuf says) when
 * the topic does not exist or holds fewer than min_examples examples. */
int ev_evalset_freeze(const char *brokers, const char *topic, const char *dataset, int generation,
                      int64_t min_examples, ev_evalset *out, char *errbuf, size_t errsz);

/* Reads a frozen eval set again and checks its content against the identity:
 * KN_ECORRUPT when the range is no longer readable or its hash or count
 * differ; KN_ETIMEDOUT when the broker did not deliver it in time. */
int ev_evalset_read(const char *brokers, const ev_evalset_id *id, ev_evalset *out, char *errbuf,
                    size_t errsz);

/* The durable key/value store of the evaluator: a compacted topic read
 * completely at open, written with delivery confirmed. */
typedef struct ev_state ev_state;

ev_state *ev_state_open(const char *brokers, const char *topic, char *errbuf, size_t errsz);
void ev_state_destroy(ev_state *s);
/* Borrowed value of key, or NULL. */
json_t *ev_state_get(ev_state *s, const char *key);
/* Stores value (borrowed) under key; returns once the broker acknowledged it. */
int ev_state_put(ev_state *s, const char *key, json_t *value, char *errbuf, size_t errsz);

/* --- scoring (score.c) --- */

typedef struct {
    int batch;                  /* rows per forward pass (classifiers) */
    int lm_batch;               /* rows per forward pass (language models) */
    const kn_bpe *bpe;          /* tokenizer for LM samples (may be NULL: no samples) */
    const char *const *prompts; /* (nprompts) fixed sample prompts */
    size_t nprompts;
    int sample_tokens; /* tokens generated per sample */
    float temperature; /* 0 = greedy */
    int top_k;
    uint64_t seed;
} ev_score_options;

typedef struct {
    json_t *metrics;     /* name -> number (owned) */
    json_t *confusion;   /* rows of counts, classifiers only (owned, may be NULL) */
    json_t *samples;     /* [{"prompt","text"}], language models only (owned, may be NULL) */
    const char *primary; /* "accuracy", "loss" or "mse": the default policy's metric */
    int64_t examples;    /* examples scored */
    int64_t skipped;     /* examples or shards that did not fit the model */
} ev_score;

/* Outcome of ev_score_model besides KN_* codes: SIGTERM arrived mid-way and
 * the work was dropped (nothing was recorded anywhere). */
#define EV_ABANDONED 1

/* Scores m on every example of es. KN_EINVAL when the model cannot be scored
 * on these shards (errbuf says why); EV_ABANDONED on shutdown. Caller frees
 * out with ev_score_free. */
int ev_score_model(kn_model *m, const ev_evalset *es, const ev_score_options *o, ev_score *out,
                   char *errbuf, size_t errsz);
void ev_score_free(ev_score *s);
/* Rows per forward pass that ev_score_model uses for a model loaded from
 * spec (the max_batch to load it with). */
int ev_score_batch_for(const json_t *spec, const ev_score_options *o);

/* `kiln-evaluator score` (score_cmd.c): argv[0] is "score"; the exit code. */
int ev_score_cmd_main(int argc, char **argv);

/* --- the per-event flow (flow.c) --- */

typedef struct {
    const kn_config *cfg;
    const char *brokers;
    const char *prefix;
    const char *alias;    /* "production" */
    const char *work_dir; /* artifacts are downloaded here, then deleted */
    const kn_backend *backend;
    int64_t min_eval_examples;
    size_t cache_bytes; /* eval sets kept in memory up to this size */
    ev_score_options score;
    kn_regclient *reg;
    kn_kafka_producer *producer; /* for version.promoted / version.rejected */
    ev_state *state;
    json_t *policies; /* from ev_policy_sections (borrowed) */
    char events_topic[256];
    /* counters (may be NULL) */
    kn_metric *m_evaluations, *m_promotions, *m_rejections, *m_failures, *m_eval_seconds;
    kn_metric *m_evalset_stopped; /* tries that found a frozen eval set unusable */
    /* private */
    ev_evalset **cache; /* (ncache) */
    size_t ncache;
    kn_bpe **bpes; /* tokenizers by dataset, loaded on first use */
    char **bpe_names;
    size_t nbpe;
} ev_ctx;

/* Announces on <prefix>.events what operators did in the registry (rollback,
 * alias moved or deleted, promotion by hand) and what a crash left
 * unannounced: flow.c, "the relay". Called about once a second. */
int ev_relay(ev_ctx *ctx, char *errbuf, size_t errsz);

/* What to do after a failed call (issue 18, finding 5). */
typedef enum {
    EV_ERR_NONE = 0,
    EV_ERR_TRANSIENT, /* connection refused, timeout, 401 (our token), 408, 429, 5xx: back
                       * off and retry */
    EV_ERR_PERMANENT, /* 400, 403, 404, 422, ...; a checkpoint that cannot be loaded
                       * (corrupt, out of memory): reject with the reason, move on */
    EV_ERR_CONFLICT,  /* 409: the registry changed under us: re-read and decide again */
} ev_errclass;

/* Classifies a KN_* code with the HTTP status of the answer that caused it
 * (0 when there was no answer). Cannot fail. */
ev_errclass ev_classify(int rc, int http_status);

typedef enum {
    EV_DONE = 0,  /* handled (or nothing to do): commit the event */
    EV_RETRY = 1, /* a transient failure: keep the event, try again later */
    EV_STOP = 2,  /* shutdown arrived: abandoned cleanly, do not commit */
} ev_outcome;

/* Handles one record of the events topic: a checkpoint.created event is
 * evaluated, decided by policy, recorded and announced; anything else is
 * skipped. Idempotent: the registry's version status and metrics are
 * checked first. errbuf says what happened on EV_RETRY. */
ev_outcome ev_handle_event(ev_ctx *ctx, const void *value, size_t len, char *errbuf, size_t errsz);
void ev_ctx_free(ev_ctx *ctx); /* the cache and tokenizers; not the handles */

/* The delivery-report callback ctx->producer must be created with: it
 * reports to the publisher waiting in ev_handle_event. */
void ev_publish_dr(void *opaque, void *msg_opaque, rd_kafka_resp_err_t err, int32_t partition,
                   int64_t offset);

/* Reads every [policy.MODEL] section of the config file at path (key names
 * from the file, values through kn_config so KILN_* overrides apply) into
 * *out = {MODEL: {key: value}}, checking every key with ev_policy_set so that
 * a typo stops the start with the key named. path may be NULL (no policies). */
int ev_policy_sections(const char *path, const kn_config *cfg, json_t **out, char *errbuf,
                       size_t errsz);

/* --- events held back after a transient failure (held.c) --- */
typedef struct ev_held ev_held;

/* Backoff doubles from 1 s up to max_backoff_s; retries (may be NULL) counts
 * every retry. Caller frees with ev_held_destroy (held events are dropped
 * uncommitted: a restart reads them again). */
ev_held *ev_held_new(double max_backoff_s, kn_metric *retries);
void ev_held_destroy(ev_held *h);
/* Handles m (consumed): done → committed; a transient failure → held, its
 * partition paused. Messages of a held partition are dropped (read again
 * after it). */
void ev_held_dispatch(ev_held *h, ev_ctx *ctx, kn_kafka_consumer *c, rd_kafka_message_t *m);
/* Retries the held events that are due; a done one is committed and its
 * partition resumed. */
void ev_held_retry_due(ev_held *h, ev_ctx *ctx, kn_kafka_consumer *c);
/* How many are held; why (may be NULL) gets a line for /readyz. */
size_t ev_held_count(const ev_held *h, char *why, size_t whysz);
/* Seconds until the next held event is due, -1 when none is held. */
double ev_held_next_due(const ev_held *h);

#endif
