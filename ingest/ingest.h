/* ingest.h: kiln-ingest's internals shared by its source files (not a
 * library interface). One ing_ctx per process: the configuration, the
 * idempotent producer, the metrics and the validation limits. Every source
 * turns its input into ing_item values and hands them to ing_submit, which
 * validates, routes to <prefix>.raw.{text,image} or <prefix>.dlq, and reports
 * completion from the delivery report. */
#ifndef KILN_INGEST_H
#define KILN_INGEST_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "core/config.h"
#include "stream/kafka.h"
#include "image/media.h"
#include "core/metrics.h"
#include "stream/record.h"

#define ING_SERVICE "kiln-ingest"

typedef enum { ING_KIND_AUTO = 0, ING_KIND_TEXT, ING_KIND_IMAGE } ing_kind;

typedef struct {
    const char *brokers;
    char prefix[128];
    int partitions;   /* for topic creation */
    size_t max_text;  /* bytes */
    size_t max_image; /* bytes */
    size_t dlq_max;   /* DLQ values above this are omitted (pointer only) */
    int utf8_repair;  /* 0: refuse invalid UTF-8; 1: repair with U+FFFD */
    kn_media_limits limits;
    /* Defaults from the command line, used when an item does not say. */
    const char *dataset; /* never NULL */
    const char *label;   /* may be NULL */
    const char *split;   /* may be NULL */
    ing_kind kind;
    int progress;          /* importers: -1 auto (isatty), 0 off, 1 on */
    const char *separator; /* files: text split into records at lines equal to it; "": whole file */
    int bulk;              /* one batch source, no HTTP server: the shared producer
                              serves its delivery reports at each produce (no thread) */
} ing_options;

typedef struct ing_ctx {
    kn_config *cfg; /* not owned */
    ing_options opt;
    kn_kafka_producer *prod; /* idempotent, shared by the non-transactional sources */
    kn_metrics *metrics;
    char topic_text[200], topic_image[200], topic_dlq[200], topic_progress[200];
    kn_metric *m_records[2], *m_bytes[2]; /* [0] text, [1] image */
    kn_metric *m_latency, *m_failed, *m_inflight, *m_refused_total;
    atomic_long delivered, refused, failed, inflight;
} ing_ctx;

/* One input unit as a source read it. Strings are borrowed for the call. */
typedef struct {
    const void *data; /* bytes as received; may be NULL when none were */
    size_t len;
    uint64_t full_len;        /* when data holds only a prefix of a larger input; else 0 */
    const char *full_sha256;  /* hex of the whole input when full_len is set */
    ing_kind kind;            /* ING_KIND_AUTO: declared type, then magic bytes */
    const char *content_type; /* declared by the sender (HTTP, URL), may be NULL */
    const char *source;       /* file | jsonl | url | http | import */
    const char *origin;
    const char *dataset, *label, *split; /* NULL: the defaults */
    const char *split_by;                /* who chose split (record.h); NULL: "operator" */
    const char *refuse_reason; /* the source already refused it (fetch failed, bad JSON) */
    const char *refuse_detail;
} ing_item;

/* Called once per submitted item when the broker acknowledged (ok=1) or gave
 * up on (ok=0) its record: from the producer's poll thread, or, for a bulk
 * context, on the submitting thread inside a later ing_submit or ing_drain
 * (so it must not take a lock the submitter holds). */
typedef void (*ing_done_fn)(void *opaque, int ok, int dlq);

typedef struct {
    char key[65];       /* key of the record produced */
    const char *reason; /* NULL when accepted; the refusal reason otherwise */
    char detail[512];   /* why refused */
    const char *topic;  /* where it went */
} ing_result;

int ing_ctx_init(ing_ctx *c, kn_config *cfg, const ing_options *opt, char *errbuf, size_t errsz);
void ing_ctx_free(ing_ctx *c);

/* A producer with the ingest delivery callback (transactional when txn_id is
 * not NULL). NULL on error. */
kn_kafka_producer *ing_producer_new(ing_ctx *c, const char *txn_id, char *errbuf, size_t errsz);

/* Validates and enqueues one item on producer p (NULL: c->prod). Returns KN_OK
 * when the record (raw or DLQ) is queued: then done(opaque, ...) will be
 * called exactly once; res (may be NULL) says where it went and why. On an
 * error return nothing was queued and done is not called. */
int ing_submit(ing_ctx *c, kn_kafka_producer *p, const ing_item *it, ing_done_fn done, void *opaque,
               ing_result *res);

/* Waits until p (NULL: c->prod) has nothing outstanding or the shutdown flag
 * and timeout_ms passed; returns what is still outstanding. */
int ing_drain(ing_ctx *c, kn_kafka_producer *p, int timeout_ms);

/* A counter of items handled by a batch source: delivery reports bump
 * these. Heap-allocated and reference-counted (the owner's reference plus
 * one per record in flight), because a report may come after the source has
 * given up waiting (ing_drain's timeout) and returned: from the producer's
 * destroy, or never. The last reference frees it. */
typedef struct {
    atomic_long ok, refused, failed;
    atomic_long refs;
} ing_tally;
ing_tally *ing_tally_new(void);     /* one reference, the caller's; NULL on OOM */
void ing_tally_unref(ing_tally *t); /* accepts NULL */
/* ing_submit with t as the done context: a reference is taken for the
 * record and given back by its delivery report (at once on an error). */
int ing_submit_tally(ing_ctx *c, kn_kafka_producer *p, const ing_item *it, ing_tally *t,
                     ing_result *res);
/* How long a batch source waits for its last reports (ingest.drain_timeout_ms). */
int ing_drain_timeout_ms(const ing_ctx *c);

/* Progress line on a terminal (\r), or a log line every few seconds otherwise. */
typedef struct {
    const char *what;
    uint64_t total; /* 0 when unknown */
    int tty;
    double t0, last;
} ing_progress;
void ing_progress_start(ing_progress *pr, const ing_options *opt, const char *what, uint64_t total);
void ing_progress_update(ing_progress *pr, uint64_t done, int final);
double ing_now(void);

/* --- sources (each returns a process exit code: 0 all delivered) --- */
typedef struct {
    char **paths;
    int npaths;
    char **globs;
    int nglobs;
    int follow;
    const char *state_path; /* NULL: no state file (idempotent producer only) */
} ing_files_args;

int ing_files_run(ing_ctx *c, const ing_files_args *a);

/* One JSON line ({"text"|"image_base64", "label", "dataset", "split"}) as a
 * record on producer p (NULL: c->prod), origin NAME:LINENO; a line that is
 * not such an object goes to the DLQ. The ing_submit status. */
int ing_jsonl_line(ing_ctx *c, kn_kafka_producer *p, const char *name, uint64_t lineno,
                   const char *line, size_t n, ing_tally *t);
int ing_jsonl_run(ing_ctx *c, const char *path); /* "-" or NULL: stdin */

/* One JSON line as the jsonl source reads it, apart from submitting (so the
 * parser can be fuzzed alone, tests/fuzz/fuzz_jsonl.c): fills *it (origin
 * left NULL) from line[0..n); a line that is not a valid record gets
 * it->refuse_reason and refuse_detail, as the DLQ will show them. *it points
 * into line and into *ln, which holds what the parse allocated: release it
 * with ing_jsonl_parsed_free once the item is submitted. Cannot fail. */
typedef struct {
    struct json_t *json; /* the parsed line, or NULL */
    uint8_t *image;      /* decoded "image_base64", or NULL */
    char label[64];      /* an integer "label" as text */
    char detail[300];    /* why the line is refused */
    char strs[512];      /* "dataset", "split", "label" strings, NUL-terminated (fast path) */
} ing_jsonl_parsed;
void ing_jsonl_parse(const char *line, size_t n, ing_item *it, ing_jsonl_parsed *ln);
/* The same with jansson only (ing_jsonl_parse reads the common plain lines
 * itself and hands the rest to this): the reference its tests compare with. */
void ing_jsonl_parse_jansson(const char *line, size_t n, ing_item *it, ing_jsonl_parsed *ln);
void ing_jsonl_parsed_free(ing_jsonl_parsed *ln);
int ing_urls_run(ing_ctx *c, const char *path);
int ing_import_fashion_mnist(ing_ctx *c, const char *dir);
int ing_import_fortunes(ing_ctx *c, const char *dir);

/* A set of strings (paths). */
typedef struct ing_strset ing_strset;
ing_strset *ing_strset_new(void);
void ing_strset_destroy(ing_strset *s);
int ing_strset_has(const ing_strset *s, const char *key);
int ing_strset_add(ing_strset *s, const char *key); /* 1 added, 0 present, <0 OOM */
size_t ing_strset_count(const ing_strset *s);

/* The directory-import journal (state.c; invariants in docs/ingest.md):
 *   header line, then "S n" (highest batch number used), "D path" (done),
 *   "B n" + "F path"... (a batch about to be committed), "C n" (committed),
 *   "A n" (not committed: its files are to be sent again). Paths are JSON
 *   strings. Appends are fsync'ed; compaction writes a new file, fsyncs it
 *   and renames it over the old one. A torn last line is ignored. */
typedef struct ing_state ing_state;
ing_state *ing_state_open(const char *path, char *errbuf, size_t errsz);
void ing_state_close(ing_state *st);
int ing_state_is_done(const ing_state *st, const char *path);
size_t ing_state_done_count(const ing_state *st);
/* The batch left open by a crash: KN_OK with its number and files (owned by
 * st), or KN_ENOTFOUND. */
int ing_state_pending(const ing_state *st, uint64_t *batch, char *const **paths, size_t *n);
/* Settles the pending batch (committed: its files are done) and rewrites the
 * journal compacted. Call once after open, pending or not. */
int ing_state_settle(ing_state *st, int committed, char *errbuf, size_t errsz);
uint64_t ing_state_next_batch(ing_state *st);
/* "B n" + "F" lines, fsync'ed: must be durable before the commit. */
int ing_state_begin(ing_state *st, uint64_t batch, char *const *paths, size_t n, char *errbuf,
                    size_t errsz);
/* "C n" (committed) or "A n" (aborted), fsync'ed; committed files become done. */
int ing_state_end(ing_state *st, uint64_t batch, int committed, char *errbuf, size_t errsz);

/* HTTP server with POST /v1/records plus /healthz /readyz /metrics. */
typedef struct ing_server ing_server;
ing_server *ing_server_start(ing_ctx *c, const char *bind, int port, char *errbuf, size_t errsz);
uint16_t ing_server_port(const ing_server *s);
void ing_server_stop(ing_server *s);

/* `kiln-ingest dlq` (dlq.c): lists <prefix>.dlq, or replays what
 * kiln-preprocess refused, exactly once. Returns the exit code. */
typedef struct {
    const char *brokers;
    const char *prefix;
    const char *dataset, *reason; /* filters; NULL: any */
    int64_t since_ms;             /* with since_set: refused at or after (ms since the epoch) */
    int since_set;
    int replay, json;
} ing_dlq_args;

/* --since: a duration back from now_ms ("30m", "2h", "1d", "45s") or a UTC
 * time "YYYY-MM-DD[THH:MM[:SS]][Z]". KN_EINVAL when it is neither. */
int ing_dlq_parse_since(const char *s, int64_t now_ms, int64_t *out);
int ing_dlq_run(const ing_dlq_args *a);

#endif
