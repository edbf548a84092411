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
    int precision;             /* kn_precision (nn/precision.h): fp32 | tf32 | bf16 */
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
    /* epochs over a window (window.c); epochs == 0: the stream, each example once */
    int epochs;              /* passes over the window (cycle 0) */
    int window_kind;         /* TRN_WIN_ALL | TRN_WIN_LAST | TRN_WIN_FIXED */
    int64_t window_last;     /* last K offsets per partition (TRN_WIN_LAST) */
    char window[512];        /* the window key as written ("all", "last:K", "0:10-20,1:0-5") */
    double replay_ratio;     /* replay examples per new example in a replay cycle */
    int replay_passes;       /* passes over new + replay in a replay cycle */
    int64_t replay_min_records; /* new offsets (shards, markers) that start a replay cycle */
    char replay_from[16];    /* "production" | "latest": the weights a replay cycle starts from */
    int aug_hflip;           /* per-epoch augmentation drawn by the trainer (image models) */
    int aug_crop;            /* random shift by up to N pixels, zero padded */
    double window_max_mb;    /* the window is held in memory: refuse larger ones */
    /* --from-dir (source_files.c): the export a window's records are read
     * from instead of Kafka; NULL when training from the stream (not owned) */
    const kn_shardfiles *from_files;
} trn_settings;

enum { TRN_WIN_ALL = 0, TRN_WIN_LAST = 1, TRN_WIN_FIXED = 2 };

/* Fills s from cfg for model `name`; KN_EINVAL with the key named in err. On
 * success the caller frees with trn_settings_free. */
int trn_settings_load(const kn_config *cfg, const char *name, trn_settings *s, char *err,
                      size_t errsz);
void trn_settings_free(trn_settings *s);
/* "none" | "hflip" | "crop:N" | "hflip,crop:N": 0, or -1 when malformed. */
int trn_parse_augment(const char *aug, int *hflip, int *crop);
/* window = "P:START-END,...": partition's range (0..0 when not listed). */
int trn_window_fixed(const char *spec, int32_t partition, int64_t *lo, int64_t *hi, int *nranges);

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

/* --- epochs over a window (window.c) ---
 * A cycle is a list of items (shards, or the first `take` examples of a
 * shard's replay permutation) held in memory, trained `passes` times; each
 * pass (epoch) visits the items in an order drawn from (seed, cycle, epoch)
 * and each item's examples in a permutation drawn from (seed, cycle, epoch,
 * partition, offset). The cursor (epoch, index, pos) says exactly what was
 * trained: every item before `index` in the epoch's order and the first
 * `pos` examples of the item at `index`. Cycle 0 is the configured window;
 * a later cycle ("replay") is the records that arrived after the previous
 * cycle plus a replay sample of the window before them. */
typedef struct {
    int32_t partition;
    int64_t offset;
    unsigned char *payload; /* owned copy of the record */
    size_t len;
    kn_shard_view view;     /* into payload when usable */
    int usable;
    char why[200];          /* why not usable */
    uint32_t count;         /* examples in the shard (0 when unusable) */
    uint32_t take;          /* examples this item contributes (all, or a replay part) */
    int replay;             /* from the replay pool */
} trn_item;

/* One record as a shard source hands it over (Kafka now; files later). */
typedef struct {
    int32_t partition;
    int64_t offset;
    const void *payload;
    size_t len;
    const char *tokenizer_hash; /* header, NULL when absent */
    const char *recipe;
} trn_record;

typedef struct {
    int active;       /* window mode */
    int cycle;        /* 0: the configured window; then one per replay cycle */
    int replay;       /* this cycle is a replay cycle */
    int passes;
    int nparts;
    int64_t *lo, *hi; /* (nparts) the cycle's new range per partition */
    int64_t *pool_lo, *pool_hi; /* (nparts) the replay pool (replay cycles) */
    trn_item *items;
    int nitems;
    int64_t pass_examples; /* usable examples per pass */
    int64_t replay_examples;
    uint32_t *order;  /* (nitems) the current epoch's order */
    int order_epoch;  /* the epoch `order` belongs to (0: none) */
    int epoch, index; /* cursor (epoch 1-based) */
    uint32_t pos;
    int cur_index;    /* index whose permutation is in perm, -1 none */
    int stop_epoch, stop_index; /* reproduce: fill stops at this cursor (stop_epoch 0: none) */
    uint32_t stop_pos;
    /* the range since the last checkpoint */
    int start_epoch, start_index;
    uint32_t start_pos;
    int64_t *epoch_examples;  /* (passes + 1) trained per epoch in the range */
    int64_t *epoch_skipped;
    int64_t *part_examples;   /* (nparts) trained per partition in the range */
    int epoch_end;            /* the last fill ended an epoch: checkpoint now */
} trn_window;

/* A shard source (defined below with trn_source_open): the batcher reads
 * from one when set, else from its Kafka consumer. */
typedef struct trn_source trn_source;

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
    trn_window win;          /* epochs mode when win.active */
    int aug_hflip, aug_crop; /* window mode, image models with a CHW layout */
    float *aug_tmp;          /* (in_numel) */
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

/* Checks a shard's kind and shape against the model: why[0] == 0 when usable. */
const char *trn_shard_mismatch(const trn_batcher *b, const kn_shard_view *v, char *why,
                               size_t whysz);

/* --- window mode (window.c) --- */

/* Where a cycle's records come from: every record of partitions [lo, hi),
 * in any order (the window sorts them). next: 1 with *rec filled (valid
 * until the next call), 0 when every range is done, <0 (KN_*) on error.
 * trn_source_open picks the implementation: the export's files when
 * s->from_files is set (kiln-trainer --from-dir; a file that differs from
 * the manifest is listed in `skipped` and passed over), else Kafka. */

struct trn_source {
    int (*next)(trn_source *src, trn_record *rec, char *err, size_t errsz);
    void (*destroy)(trn_source *src);
};
trn_source *trn_source_open(const trn_settings *s, int nparts, const int64_t *lo,
                            const int64_t *hi, json_t *skipped, char *err, size_t errsz);
trn_source *trn_source_kafka(const char *brokers, const char *topic, const char *group, int nparts,
                             const int64_t *lo, const int64_t *hi, char *err, size_t errsz);
int trn_source_next(trn_source *src, trn_record *rec, char *err, size_t errsz);
void trn_source_free(trn_source *src);

/* Loads the cycle's items: the new range lo..hi (all examples) and, for a
 * replay cycle, a sample of pool_lo..pool_hi of replay_ratio × the new
 * examples; or, given `replay_list` (the lineage's [[p, off, take]]), exactly
 * those replay items. Sets passes, the cursor to the start. */
int trn_window_load(trn_batcher *b, const trn_settings *s, int cycle, int replay, int passes,
                    const int64_t *lo, const int64_t *hi, const int64_t *pool_lo,
                    const int64_t *pool_hi, const json_t *replay_list, char *err, size_t errsz);
void trn_window_free(trn_window *w);
/* Moves the cursor (resume); the range starts there. */
void trn_window_seek(trn_batcher *b, int epoch, int index, uint32_t pos);
/* Fills up to max_batch rows from the window; stops at the end of an epoch
 * (win.epoch_end set) and at the stop cursor. 0 when the cycle is done. */
int trn_window_fill(trn_batcher *b);
int trn_window_done(const trn_window *w);
/* The range since the last checkpoint as lineage (new references). */
json_t *trn_window_cycle_json(const trn_batcher *b, const trn_settings *s);
json_t *trn_window_epochs_json(const trn_batcher *b);
json_t *trn_window_cursor_json(const trn_batcher *b);
void trn_window_new_range(trn_batcher *b);
/* The seed of one epoch (shuffles and augmentation), 63 bits. */
uint64_t trn_epoch_seed(uint64_t seed, int cycle, int epoch);

/* --- checkpoints (checkpoint.c) --- */
typedef struct {
    const trn_settings *s;
    kn_model *model;
    trn_batcher *batcher;
    kn_regclient *reg;
    kn_kafka_producer *events;
    kn_metrics *metrics;
    const char *backend_name;
    const kn_backend *backend;
    json_t *resume_lineage; /* the lineage resumed from (NULL: fresh or warm start) */

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

    int reproduce;    /* --reproduce: lineage fields taken from the version */
    json_t *repro_lineage;

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

/* The checkpoint's bytes and their SHA-256, without touching the registry
 * (trn_checkpoint and --reproduce share it); *lineage is the full lineage. */
int trn_checkpoint_bytes(trn_ckpt_ctx *ctx, json_t **lineage, unsigned char **buf, size_t *len,
                         char sha[KN_SHA256_HEX_LEN], char *err, size_t errsz);

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

/* Downloads (SHA-256 verified) and loads model:version. */
int trn_load_version(trn_ckpt_ctx *ctx, const char *model, int version, const kn_backend *be,
                     kn_model **out, json_t **meta, char *err, size_t errsz);
/* Attaches the configured optimizer (fresh state) to ctx->model. */
int trn_attach_optim(trn_ckpt_ctx *ctx, char *err, size_t errsz);

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
 * registry. With epochs = 0 the shards of `kiln-preprocess export` are read
 * in (partition, offset) order, partitions interleaved one shard at a time,
 * through the batcher's source hook, --passes times. With epochs >= 1 the
 * export is the stream's window: trn_source_open reads the cycle from the
 * files (s->from_files) and window.c trains its epochs as it would over
 * Kafka (--passes N then sets the epoch count). Checkpoints are
 * OUT/MODEL-vN.safetensors with OUT/MODEL-vN.lineage.json (the registry's
 * lineage plus the files). */
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
 * start and sets s->topic to the exported topic. epochs = 0: b reads the
 * file source (passes: 0 = 1); epochs >= 1: s->from_files is the export
 * and passes > 0 replaces s->epochs. */
int trn_files_start(trn_files **out, const char *dir, const char *out_dir, int passes,
                    trn_settings *s, trn_ckpt_ctx *ctx, trn_batcher *b, const kn_backend *be,
                    char *err, size_t errsz);
/* After the files were read to the end (and the pass checkpointed): 1 when
 * another pass starts (same ranges, a new in-shard shuffle), 0 when done. */
int trn_files_next_pass(trn_files *f, trn_batcher *b);
/* The exported train range per partition (the window's "watermarks"). */
void trn_files_bounds(const trn_files *f, int64_t *start, int64_t *end);
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
 * waiting up to wait_s while another trainer holds it or the registry is
 * away (no answer, or 5xx). KN_OK and the client set to present the epoch;
 * KN_ECONFLICT with err naming the holder; other codes for the registry's
 * other refusals, or its absence past wait_s. */
int trn_lease_take(kn_regclient *reg, const char *model, double ttl_s, double wait_s, trn_lease *l,
                   char *err, size_t errsz);
/* Renews when due. KN_OK (also when a renewal failed for a transient reason:
 * logged, tried again); KN_ECONFLICT when fenced: stop at once. */
int trn_lease_renew(kn_regclient *reg, const char *model, trn_lease *l, char *err, size_t errsz);
/* Gives the lease back (best effort). */
void trn_lease_release(kn_regclient *reg, const char *model, trn_lease *l);

#endif
