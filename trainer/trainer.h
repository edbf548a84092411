/* trainer.h: what kiln-trainer's own files share (not a public API): the
 * settings of one [model.NAME] section, the batcher that turns shards into
 * minibatches while tracking exactly which examples were consumed, and the
 * checkpoint/resume steps that tie those positions to registry versions.
 * docs/trainer.md describes the design; this header holds the contracts. */
#ifndef TRN_TRAINER_H
#define TRN_TRAINER_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include <librdkafka/rdkafka.h>

#include "core/config.h"
#include "stream/kafka.h"
#include "core/metrics.h"
#include "stream/feed.h"
#include "nn/model.h"
#include "net/regclient.h"
#include "stream/shard.h"
#include "stream/shardfiles.h"

/* --- settings (main.c) --- */
typedef struct {
    char model[129]; /* registry model name = config section suffix */
    char dataset[129];
    char topic[300];        /* <prefix>.train.<dataset> */
    char events_topic[300]; /* <prefix>.events */
    char brokers[512];
    char registry_url[512];
    char registry_token[512];
    char backend[16];          /* auto | cpu | cuda */
    char work_dir[512];        /* where checkpoint files are staged */
    char warm_start[160];      /* "" | "VERSION" | "MODEL:VERSION" */
    char tokenizer_hash[65];   /* tokenizer_sha256 from config, "" when unknown */
    char recipe[65];           /* recipe_sha256 from config, "" when unknown */
    json_t *spec;              /* model spec (owned) */
    json_t *optim;             /* optimizer config JSON (owned) */
    int batch;                 /* rows per step, >= 1 */
    int64_t checkpoint_steps;  /* 0 = off */
    double checkpoint_seconds; /* 0 = off */
    int64_t target_steps;      /* 0 = forever */
    uint64_t seed;
    int shuffle;          /* permute examples inside each shard */
    double log_seconds;   /* progress line period */
    double flush_seconds; /* a partial batch is trained after this long without data */
    double idle_exit;     /* exit after this long drained; 0 = never */
    double lease_ttl;     /* seconds the model's training lease lasts unrenewed */
    double lease_wait;    /* seconds to wait for a lease another trainer holds */
} trn_settings;

/* Fills s from cfg for model `name`; KN_EINVAL with the key named in err. On
 * success the caller frees with trn_settings_free. */
int trn_settings_load(const kn_config *cfg, const char *name, trn_settings *s, char *err,
                      size_t errsz);
void trn_settings_free(trn_settings *s);

/* --- batcher (batcher.c) ---
 * Invariants, kept by every batcher function:
 *  1. Every example copied into the batch buffers is trained by the caller
 *     before the next trn_batcher_fill or checkpoint (fill returns only
 *     whole decisions: what is in the buffers has been consumed).
 *  2. For each partition, every example of offsets [range start, next) and
 *     the first `pos` examples (in permuted order) of the shard at `next`
 *     have been consumed, and nothing else: (next, pos) is the end position.
 *  3. A shard that cannot be used (bad CRC, wrong kind or shape) is skipped
 *     whole and listed in the range's `skipped`; an example with a label or
 *     token out of range is skipped and counted. Nothing is dropped silently. */

/* The same values as kn_feed_input (lib/stream/feed.h). */
enum { TRN_IN_IMAGE = KN_FEED_IMAGE, TRN_IN_LM = KN_FEED_LM, TRN_IN_TEXTCLS = KN_FEED_TEXTCLS };

typedef struct {
    int32_t partition;
    int64_t start_offset; /* range since the last checkpoint: start ... */
    uint32_t start_pos;
    int64_t next_offset; /* ... end: shards before next are consumed ... */
    uint32_t pos;        /* ... and `pos` examples of the shard at next */
    int64_t examples;    /* trained in the range */
    int64_t skipped_examples;
    int64_t shards;        /* shards finished in the range */
    int64_t resume_offset; /* -1, or skip resume_pos examples of this shard when it arrives */
    uint32_t resume_pos;
} trn_part;

/* One record as a shard source hands it over. */
typedef struct {
    int32_t partition;
    int64_t offset;
    const void *payload;
    size_t len;
    const char *tokenizer_hash; /* header, NULL when absent */
    const char *recipe;
} trn_record;

/* A shard source other than the batcher's Kafka consumer: next: 1 with *rec
 * filled (valid until the next call), 0 when every range is done, <0 (KN_*)
 * on error; destroy frees it. (The same interface as window mode's sources.)
 * trn_source_files (source_files.c) reads an export's train files. */
typedef struct trn_source trn_source;
struct trn_source {
    int (*next)(trn_source *src, trn_record *rec, char *err, size_t errsz);
    void (*destroy)(trn_source *src);
};

typedef struct {
    int input;    /* TRN_IN_* */
    int C, H, W;  /* image models: input layout CHW */
    int in_numel; /* image models */
    int T;        /* token models: tokens per row */
    int classes;  /* label range for classifiers */
    int vocab;    /* token id range */
    int max_batch;
    int shuffle;
    uint64_t seed;

    trn_part *parts; /* (nparts) */
    int nparts;
    json_t *skipped; /* array of {partition, offset, reason} since the last checkpoint */

    trn_source *src;         /* NULL: records come from the consumer (not owned) */
    trn_record rec;          /* the shard being read (when has_rec) ... */
    int has_rec;
    rd_kafka_message_t *msg; /* ... and its consumer message (NULL with src) */
    kn_shard_view view;
    int cur;        /* index into parts of msg */
    uint32_t *perm; /* (perm_cap) example order inside the current shard */
    uint32_t perm_cap;

    float *x;    /* (max_batch, in_numel) */
    int *tokens; /* (max_batch, T) */
    int *labels; /* (max_batch, T) for lm, (max_batch) otherwise */
    int B;       /* rows filled by the last fill */

    int64_t total_examples; /* since process start */
    int64_t total_tokens;
    double last_record;      /* monotonic seconds of the last record seen */
    char tokenizer_hash[65]; /* tokenizer-sha256 shard header, "" when none seen */
    char recipe[65];         /* recipe-sha256 shard header */
    int64_t bad_shards;
} trn_batcher;

/* Prepares b for model m (input layout and label range from its spec) and
 * nparts partitions. Offsets are set with trn_batcher_set_start. KN_EINVAL
 * (err says why) for a model type the trainer cannot feed. Free with
 * trn_batcher_free. */
int trn_batcher_init(trn_batcher *b, const kn_model *m, int max_batch, int nparts, uint64_t seed,
                     int shuffle, char *err, size_t errsz);
void trn_batcher_free(trn_batcher *b);

/* Start position of partition p: offset, and examples of that shard already
 * consumed (pos > 0 only when a checkpoint fell mid-shard). */
void trn_batcher_set_start(trn_batcher *b, int32_t p, int64_t offset, uint32_t pos);

/* Fills up to max_batch rows from the consumer (from b->src when set; c may
 * then be NULL). Returns the rows filled (B): max_batch, or fewer when no
 * record came for flush_ms (or shutdown was requested) with a partial batch;
 * 0 when nothing arrived. */
int trn_batcher_fill(trn_batcher *b, kn_kafka_consumer *c, int flush_ms);

/* The batch of the last fill, for kn_model_forward. */
void trn_batcher_batch(const trn_batcher *b, kn_batch *out);

/* After a checkpoint: the end becomes the next range's start, counters reset. */
void trn_batcher_new_range(trn_batcher *b);

/* Examples trained in the current range, over all partitions. */
int64_t trn_batcher_range_examples(const trn_batcher *b);

/* The current range as lineage JSON: [{partition, start:{offset,pos},
 * end:{offset,pos}, examples, skipped_examples, shards}] (new reference). */
json_t *trn_batcher_ranges_json(const trn_batcher *b);

/* --- checkpoints (checkpoint.c) --- */
typedef struct {
    const trn_settings *s;
    kn_model *model;
    trn_batcher *batcher;
    kn_regclient *reg;
    kn_kafka_producer *events;
    kn_metrics *metrics;
    const char *backend_name;

    /* lineage state */
    int parent_version;          /* 0 = none */
    char parent_model[129];      /* differs from s->model after a warm start */
    const char *parent_relation; /* "resume" | "warm_start" */
    int64_t step;                /* optimizer updates done */
    int64_t examples_total;      /* over the whole version chain */
    int64_t tokens_total;
    int64_t steps_at_last_ckpt;
    double last_loss; /* mean loss of the steps since the last checkpoint */
    double loss_sum;
    int64_t loss_n;

    int last_version; /* the version the last checkpoint created */
    char last_sha[KN_SHA256_HEX_LEN];
    struct trn_files *files; /* training from files: checkpoints go to its directory */
} trn_ckpt_ctx;

/* Saves the model, creates a registry version (idempotency key derived from
 * parent, step and end positions) with full lineage, uploads the artifact
 * and publishes checkpoint.created. On success the batcher starts a new
 * range and ctx->parent_version is the new version. On failure nothing about
 * the consumed range changes (the next checkpoint covers it). */
int trn_checkpoint(trn_ckpt_ctx *ctx, char *err, size_t errsz);

/* ISO-8601 UTC time with milliseconds ("2026-01-02T03:04:05.678Z"). */
void trn_iso8601(char out[32]);

/* --- resume (resume.c) --- */

/* Decides where training starts: the model's latest version that has an
 * artifact (resume: weights, optimizer state, step, and the lineage's end
 * positions), else warm_start's version (weights only, offsets from the
 * start), else a fresh model from the spec. Fills ctx (model, parent,
 * counters) and the batcher (initialised here once the model exists) with
 * its start positions; low[p] is partition p's low watermark, the start of
 * a partition the lineage does not cover. */
int trn_resume(trn_ckpt_ctx *ctx, trn_batcher *b, int nparts, const int64_t *low,
               const kn_backend *be, char *err, size_t errsz);

/* Publishes checkpoint.created for version (and tags it as published). */
int trn_publish_checkpoint_event(trn_ckpt_ctx *ctx, int version, const char *sha, char *err,
                                 size_t errsz);

/* Delivery-report callback for the events producer (msg_opaque: see checkpoint.c). */
void trn_events_dr(void *opaque, void *msg_opaque, rd_kafka_resp_err_t err, int32_t partition,
                   int64_t offset);

/* Parses "7" (this model) or "other:7" / "other@7". -1 when malformed. */
int trn_parse_version_ref(const char *ref, const char *self, char *model, size_t msz, int *version);

/* Monotonic seconds. */
double trn_now(void);

/* --- training from exported shard files (source_files.c) ---
 * kiln-trainer --from-dir DIR [--out-dir OUT] [--passes N]: no Kafka, no
 * registry. The shards of `kiln-preprocess export` are read in (partition,
 * offset) order, partitions interleaved one shard at a time, through the
 * batcher's source hook; checkpoints are OUT/MODEL-vN.safetensors with
 * OUT/MODEL-vN.lineage.json (the registry's lineage plus the files). */
typedef struct trn_files trn_files;

/* The train files of export sf whose offsets lie in [lo[p], hi[p]) for each
 * of nparts partitions: each partition in offset order, partitions
 * interleaved one shard at a time. A file whose size or SHA-256 differs
 * from the manifest is appended to `skipped` ({partition, offset, reason})
 * and passed over, or, with skipped NULL, ends next with KN_ECORRUPT. sf
 * must outlive the source. */
trn_source *trn_source_files(const kn_shardfiles *sf, int nparts, const int64_t *lo,
                             const int64_t *hi, json_t *skipped, char *err, size_t errsz);

/* Opens dir's manifest, makes a fresh model from s's spec (with its
 * optimizer) into ctx, initialises b to start at each partition's exported
 * start with the file source, and sets s->topic to the exported topic. */
int trn_files_start(trn_files **out, const char *dir, const char *out_dir, int passes,
                    trn_settings *s, trn_ckpt_ctx *ctx, trn_batcher *b, const kn_backend *be,
                    char *err, size_t errsz);
/* After the files were read to the end (and the pass checkpointed): 1 when
 * another pass starts (same ranges, a new in-shard shuffle), 0 when done. */
int trn_files_next_pass(trn_files *f, trn_batcher *b);
/* trn_checkpoint's end in files mode: writes buf and the lineage (plus the
 * files read) to the output directory as the next version N. */
int trn_files_checkpoint(trn_files *f, trn_ckpt_ctx *ctx, const unsigned char *buf, size_t len,
                         const char *sha, json_t *lineage, int *version, char *err, size_t errsz);
void trn_files_free(trn_files *f);

/* --- the training lease (lease.c) ---
 * One trainer per model: the registry's lease row (epoch) is taken before
 * resume, renewed every third of its ttl, presented with every version
 * created (X-Kiln-Lease-Epoch) and given back at exit. A second trainer of
 * the model waits up to lease_wait seconds, then exits saying who holds it;
 * a trainer whose lease was taken over (it stalled past the ttl) is fenced:
 * the registry refuses its versions and it stops. */
typedef struct {
    char holder[200]; /* "host:pid:random" */
    int64_t epoch;    /* 0: not held */
    double ttl;       /* seconds */
    double renew_at;  /* trn_now() of the next renewal */
} trn_lease;

/* Takes the lease of model (creating the model when it does not exist yet),
 * waiting up to wait_s while another trainer holds it. KN_OK and the client
 * set to present the epoch; KN_ECONFLICT with err naming the holder;
 * other codes for registry failures. */
int trn_lease_take(kn_regclient *reg, const char *model, double ttl_s, double wait_s, trn_lease *l,
                   char *err, size_t errsz);
/* Renews when due. KN_OK (also when a renewal failed for a transient reason:
 * logged, tried again); KN_ECONFLICT when fenced: stop at once. */
int trn_lease_renew(kn_regclient *reg, const char *model, trn_lease *l, char *err, size_t errsz);
/* Gives the lease back (best effort). */
void trn_lease_release(kn_regclient *reg, const char *model, trn_lease *l);

#endif
