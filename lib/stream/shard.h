/* shard.h: the shard format that carries examples from preprocess to the
 * trainer and the evaluator (docs/formats.md, "Shards"): a 64-byte header
 * (magic "KSHD", version, kind, dtype, shape, count, CRC32C of header and
 * payload) and a payload of examples, labels, augmentation seeds and the
 * SHA-256 keys of the raw records the examples came from.
 *
 * Writing builds one shard in memory (one Kafka message); reading validates
 * everything before handing out pointers and never reads outside the buffer,
 * whatever the input. All integers are little-endian. */
#ifndef KN_SHARD_H
#define KN_SHARD_H

#include <stddef.h>
#include <stdint.h>

#define KN_SHARD_MAGIC       "KSHD"
#define KN_SHARD_VERSION     1
#define KN_SHARD_HEADER_SIZE 64
#define KN_SHARD_KEY_LEN     32          /* raw SHA-256 */
#define KN_SHARD_MAX_BYTES   (64u << 20) /* readers refuse anything larger */

typedef enum {
    KN_SHARD_LM_TOKENS = 1,  /* count blocks of shape[0] = T+1 token ids */
    KN_SHARD_TEXT_CLASS = 2, /* count rows of shape[0] = max_len token ids + labels */
    KN_SHARD_IMAGE = 3,      /* count images of shape (H, W, C) + labels + seeds */
} kn_shard_kind;

typedef enum {
    KN_SHARD_U8 = 1,
    KN_SHARD_U16 = 2,
    KN_SHARD_U32 = 3,
    KN_SHARD_F32 = 4,
} kn_shard_dtype;

/* Payload sections present (flags byte of the header). */
#define KN_SHARD_F_LABELS 0x1u /* int32 label per example */
#define KN_SHARD_F_SEEDS  0x2u /* uint64 augmentation seed per example (0 = not augmented) */

typedef struct {
    kn_shard_kind kind;
    kn_shard_dtype dtype;
    uint32_t ndim;     /* 1..3 */
    uint32_t shape[3]; /* per-example shape; unused dimensions are 0 */
    uint32_t count;    /* examples */
    uint32_t nkeys;    /* source keys: == count for text_class/image (key i is
                          example i's); for lm_tokens, every record whose tokens
                          were first emitted in this shard */
    uint32_t flags;    /* KN_SHARD_F_* */
} kn_shard_info;

/* Bytes of one element of dtype; 0 for an unknown dtype. */
size_t kn_shard_dtype_size(kn_shard_dtype dtype);
const char *kn_shard_kind_name(kn_shard_kind kind);    /* "lm_tokens", ... ; "?" */
const char *kn_shard_dtype_name(kn_shard_dtype dtype); /* "u16", ... ; "?" */

/* --- writer --- */

typedef struct kn_shard_writer kn_shard_writer;

/* A writer for shards of up to max_examples examples of the given kind,
 * dtype and per-example shape, and up to max_keys source keys. The whole
 * buffer is allocated here, once. Flags follow the kind: text_class has
 * labels, image has labels and seeds, lm_tokens has neither. Returns NULL on
 * a bad argument or over KN_SHARD_MAX_BYTES (errbuf says). Caller frees with
 * kn_shard_writer_destroy. */
kn_shard_writer *kn_shard_writer_new(kn_shard_kind kind, kn_shard_dtype dtype, uint32_t ndim,
                                     const uint32_t shape[], uint32_t max_examples,
                                     uint32_t max_keys, char *errbuf, size_t errsz);
void kn_shard_writer_destroy(kn_shard_writer *w);

/* Appends one example (example_bytes() bytes copied from data). label and
 * seed are stored when the kind has them; key (32 bytes, may be NULL) is
 * appended to the source keys. KN_ETOOBIG when the shard is full; nothing is
 * changed then. */
int kn_shard_writer_add(kn_shard_writer *w, const void *data, int32_t label, uint64_t seed,
                        const uint8_t *key);

/* Appends a source key with no example (lm_tokens). KN_ETOOBIG when full. */
int kn_shard_writer_add_key(kn_shard_writer *w, const uint8_t key[KN_SHARD_KEY_LEN]);

size_t kn_shard_writer_example_bytes(const kn_shard_writer *w);
uint32_t kn_shard_writer_count(const kn_shard_writer *w);
uint32_t kn_shard_writer_nkeys(const kn_shard_writer *w);
int kn_shard_writer_full(const kn_shard_writer *w); /* no room for another example */

/* Lays out header and payload and returns the shard bytes in *out (owned by
 * the writer, valid until the next add/reset/destroy) and their length.
 * Cannot fail. */
void kn_shard_writer_finish(kn_shard_writer *w, const void **out, size_t *len);

/* Empties the writer for the next shard (keeps its buffer). */
void kn_shard_writer_reset(kn_shard_writer *w);

/* --- reader --- */

/* A validated shard: pointers into the caller's buffer (which must outlive
 * the view). Arrays are 8-byte aligned relative to the buffer's start. */
typedef struct {
    kn_shard_info info;
    size_t example_bytes;  /* bytes of one example */
    const uint8_t *data;   /* count * example_bytes */
    const uint8_t *labels; /* count int32, or NULL */
    const uint8_t *seeds;  /* count uint64, or NULL */
    const uint8_t *keys;   /* nkeys * 32 */
} kn_shard_view;

/* Parses and checks a shard: magic (else KN_ECORRUPT), version (an unknown
 * one gives KN_EUNSUPPORTED), header CRC, kind/dtype/shape/sizes against the
 * length (KN_ECORRUPT, truncation included), payload CRC (KN_ECORRUPT).
 * errbuf says which check failed. On success fills *out. */
int kn_shard_parse(const void *buf, size_t len, kn_shard_view *out, char *errbuf, size_t errsz);

/* Accessors that work on unaligned buffers too; i must be < count (nkeys). */
const void *kn_shard_example(const kn_shard_view *v, uint32_t i);
int32_t kn_shard_label(const kn_shard_view *v, uint32_t i); /* -1 without labels */
uint64_t kn_shard_seed(const kn_shard_view *v, uint32_t i); /* 0 without seeds */
const uint8_t *kn_shard_key(const kn_shard_view *v, uint32_t i);

#endif
