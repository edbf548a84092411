/* lib/stream/ (uses core): what travels through Kafka and how — the client
 * wrapper (kafka.h: idempotent producer, transactions, read_committed
 * consumer), the raw-record format (record.h), the shard format (shard.h)
 * and one shard example → one row of a model batch (feed.h).
 *
 * record.h: the raw-record format every producer of <prefix>.raw.* and
 * <prefix>.dlq writes and every consumer reads (docs/formats.md, "Raw records").
 *
 * A raw record is: key = SHA-256 of the value as 64 lower-case hex digits;
 * value = the bytes as received; headers (UTF-8 text values) named below.
 * A DLQ record carries the refused bytes (or nothing, when they are over the
 * DLQ size limit or were never received) and the dlq-* headers. */
#ifndef KN_RECORD_H
#define KN_RECORD_H

#include <stddef.h>
#include <stdint.h>

#include "core/reason.h"
#include "stream/kafka.h"

#define KN_RECORD_FORMAT_VERSION "1"

/* Topic suffixes: the full name is "<prefix>.<suffix>". */
#define KN_RECORD_TOPIC_TEXT  "raw.text"
#define KN_RECORD_TOPIC_IMAGE "raw.image"
#define KN_RECORD_TOPIC_DLQ   "dlq"

/* Header names. */
#define KN_RECORD_H_VERSION      "record-version" /* "1" */
#define KN_RECORD_H_KIND         "kind"           /* "text" | "image" */
#define KN_RECORD_H_CONTENT_TYPE "content-type"
#define KN_RECORD_H_SOURCE       "source" /* file | jsonl | url | http | import */
#define KN_RECORD_H_ORIGIN       "origin" /* path, path:line, URL, request id, file#index */
#define KN_RECORD_H_DATASET      "dataset"
#define KN_RECORD_H_LABEL        "label"       /* absent when unlabelled */
#define KN_RECORD_H_SPLIT        "split"       /* "train" | "test", absent when not given */
/* Who chose the split: "import" (a dataset importer), "operator" (a
 * command-line source), "token:<name>" (an HTTP caller whose ingest token has
 * the split or admin role). preprocess obeys "split" only when this is set. */
#define KN_RECORD_H_SPLIT_BY     "split-by"
#define KN_RECORD_H_INGEST_TIME  "ingest-time" /* ms since the Unix epoch, decimal */
#define KN_RECORD_H_REPAIRED     "repaired"    /* "utf8" when the text was repaired */
/* DLQ only. */
#define KN_RECORD_H_DLQ_REASON  "dlq-reason" /* one of KN_REASON_* (core/reason.h) */
#define KN_RECORD_H_DLQ_DETAIL  "dlq-detail" /* a sentence for people */
#define KN_RECORD_H_DLQ_SERVICE "dlq-service"
#define KN_RECORD_H_DLQ_SIZE    "original-size"    /* bytes, decimal ("0" when none) */
#define KN_RECORD_H_DLQ_SHA256  "original-sha256"  /* hex, of the original bytes */
#define KN_RECORD_H_DLQ_OMITTED "original-omitted" /* "1": value left out (too large) */

#define KN_RECORD_KIND_TEXT  "text"
#define KN_RECORD_KIND_IMAGE "image"

#define KN_RECORD_MAX_HEADERS 20

/* What a producer knows about a record. Strings are borrowed; NULL or ""
 * leaves the header out (kind, content_type, source and origin should be set). */
typedef struct {
    const char *kind;
    const char *content_type;
    const char *source;
    const char *origin;
    const char *dataset;
    const char *label;
    const char *split;
    const char *split_by; /* ignored when split is not set */
    const char *repaired;
    int64_t ingest_time_ms; /* 0: now */
} kn_record_meta;

/* Why a record was refused (DLQ records only). */
typedef struct {
    const char *reason;          /* KN_REASON_* */
    const char *detail;          /* may be NULL */
    const char *service;         /* e.g. "kiln-ingest" */
    uint64_t original_size;      /* bytes of the refused input, 0 when none were received */
    const char *original_sha256; /* hex or NULL */
    int omitted;                 /* non-zero: the value does not hold the bytes */
} kn_record_dlq;

/* Headers ready for kn_kafka_produce. The kn_kafka_header values point into
 * the meta/dlq strings (which must outlive the produce call) and into the
 * buffers of this struct (so the struct must not be copied after building). */
typedef struct {
    kn_kafka_header h[KN_RECORD_MAX_HEADERS];
    size_t n;
    char time[24];
    char size[24];
} kn_record_headers;

void kn_record_headers_build(kn_record_headers *out, const kn_record_meta *m);
/* Meta headers followed by the dlq-* ones. */
void kn_record_dlq_headers_build(kn_record_headers *out, const kn_record_meta *m,
                                 const kn_record_dlq *d);

/* A record's headers read back into fixed buffers (values truncated to fit,
 * always NUL-terminated; absent ones are ""). */
typedef struct {
    char version[8];
    char kind[16];
    char content_type[128];
    char source[16];
    char origin[1024];
    char dataset[128];
    char label[128];
    char split[16];
    char split_by[80];
    char repaired[16];
    int64_t ingest_time_ms;
    char reason[64];
    char detail[512];
    char service[64];
    char original_sha256[65];
    uint64_t original_size;
    int omitted;
} kn_record_info;

/* Reads the headers of a consumed message. KN_OK, or KN_ENOTFOUND when the
 * message has no record-version header (not a kiln record). */
int kn_record_info_read(const rd_kafka_message_t *msg, kn_record_info *out);

/* "<prefix>.<suffix>" into out; KN_ETOOBIG when it does not fit. */
int kn_record_topic(char *out, size_t outsz, const char *prefix, const char *suffix);

/* The key of a value: SHA-256 as 64 hex digits + NUL. */
void kn_record_key(const void *value, size_t len, char out[65]);

/* Milliseconds since the Unix epoch, now. */
int64_t kn_record_now_ms(void);

/* UTF-8 validation (RFC 3629: no overlongs, no surrogates, nothing above
 * U+10FFFF). Returns 1 when valid; otherwise 0 and *bad_off (may be NULL) is
 * the offset of the first invalid byte. */
int kn_record_utf8_valid(const void *data, size_t len, size_t *bad_off);

/* The repair policy: each maximal invalid subsequence becomes U+FFFD (as the
 * Unicode "substitution of maximal subparts" practice). Returns a malloc'd
 * buffer the caller frees, its length in *outlen; NULL on OOM. */
char *kn_record_utf8_repair(const void *data, size_t len, size_t *outlen);

#endif
