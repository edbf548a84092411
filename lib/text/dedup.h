/* dedup.h: exact and near-duplicate detection for text (docs/preprocess.md,
 * "Dedup"). Exact: SHA-256 of the (cleaned) text. Near: MinHash signatures
 * over character shingles, LSH banding to find candidates, then candidates
 * verified by estimated Jaccard similarity >= threshold.
 *
 * The state is in memory and rebuilt from a changelog (a compacted Kafka
 * topic): every accepted document yields one changelog entry (key = content
 * hash, value = its signature) and applying the entries in any order gives
 * the same state. Inserts made inside an open transaction are "pending" and
 * can be rolled back when the transaction aborts.
 *
 * Memory: about 0.7 KB per document held with 128 hashes (signature 256 B,
 * 16 LSH slots of 8 B at most half full, exact table); a window bounds what is held to
 * the most recent documents kept (options.window; 0: every document, memory
 * grows with the stream). Not thread-safe (one owner thread). */
#ifndef KN_DEDUP_H
#define KN_DEDUP_H

#include <stddef.h>
#include <stdint.h>

#define KN_DEDUP_MAX_HASHES 256

typedef struct {
    int near;            /* non-zero: near-duplicate detection too (default on) */
    uint32_t shingle;    /* characters (code points) per shingle, default 5 */
    uint32_t num_hashes; /* MinHash functions, default 128, <= KN_DEDUP_MAX_HASHES */
    uint32_t bands;      /* LSH bands, default 16; rows = num_hashes / bands */
    double threshold;    /* estimated Jaccard at or above which it is a duplicate, default 0.8 */
    uint64_t seed;       /* hash family seed, default fixed; must match across instances */
    size_t window;       /* documents held at most, 0: no bound (default). With a window W the
                            last W/2..W documents kept are remembered (two generations of W/2:
                            when the newer is full the older is forgotten); older ones are not
                            matched any more, exact or near. 1 is refused. */
} kn_dedup_options;

/* Sets the documented defaults. */
void kn_dedup_options_default(kn_dedup_options *o);

typedef struct kn_dedup kn_dedup;

/* NULL with errbuf set on bad options (num_hashes not divisible by bands,
 * out of range) or OOM. Caller frees with kn_dedup_destroy. */
kn_dedup *kn_dedup_new(const kn_dedup_options *o, char *errbuf, size_t errsz);
void kn_dedup_destroy(kn_dedup *d);

/* A document's fingerprint: content hash + signature. */
typedef struct {
    uint8_t hash[32];                  /* SHA-256 of the text */
    uint32_t nsig;                     /* num_hashes, or 0 when near is off */
    uint16_t sig[KN_DEDUP_MAX_HASHES]; /* MinHash signature: low 16 bits of each minimum */
    uint64_t band[KN_DEDUP_MAX_HASHES]; /* LSH bucket key per band (computed once) */
} kn_dedup_fp;

/* Computes the fingerprint of text[0..len). Shingles are taken over a
 * normalized view: ASCII letters lower-cased, runs of whitespace as one
 * space; a text shorter than one shingle is one shingle. KN_OK or KN_ENOMEM. */
int kn_dedup_fingerprint(const kn_dedup *d, const char *text, size_t len, kn_dedup_fp *fp);

enum {
    KN_DEDUP_NEW = 0,   /* not seen */
    KN_DEDUP_EXACT = 1, /* same content hash as a kept document */
    KN_DEDUP_NEAR = 2,  /* estimated Jaccard >= threshold with a kept document */
};

/* Looks fp up among kept documents (committed and pending). Returns one of
 * KN_DEDUP_*; *similarity (may be NULL) gets the best estimated Jaccard for
 * NEAR (1.0 for EXACT). */
int kn_dedup_check(const kn_dedup *d, const kn_dedup_fp *fp, double *similarity);

/* Keeps a document. pending != 0: part of the open transaction (undone by
 * rollback). Idempotent by content hash. KN_OK or KN_ENOMEM. */
int kn_dedup_insert(kn_dedup *d, const kn_dedup_fp *fp, int pending);

/* Transaction outcome for the pending inserts. */
void kn_dedup_commit(kn_dedup *d);
void kn_dedup_rollback(kn_dedup *d);

/* Documents held (committed + pending; with a window, only those still in it). */
size_t kn_dedup_count(const kn_dedup *d);

/* Bytes allocated by the index (its tables at their current capacity). */
size_t kn_dedup_memory(const kn_dedup *d);

/* How many times the window dropped its older generation. */
uint64_t kn_dedup_rotations(const kn_dedup *d);

/* --- changelog entries ---
 * key   = "dedup/" + 64 hex digits of the content hash (70 bytes)
 * value = u8 version (2) | u8 0 | u16 nsig | u32 params hash | nsig * u16 (little-endian);
 *         version 1 (read, no longer written): nsig * u32, of which the low 16 bits count
 * An entry whose params hash differs from this object's (another shingle
 * size, seed or num_hashes) is kept for exact matching only. */
#define KN_DEDUP_KEY_PREFIX "dedup/"
#define KN_DEDUP_KEY_LEN    70
#define KN_DEDUP_VALUE_MAX  (8 + 2 * KN_DEDUP_MAX_HASHES)

/* Writes the entry for fp: key (KN_DEDUP_KEY_LEN bytes, not NUL-terminated)
 * and value (returns its length, <= KN_DEDUP_VALUE_MAX). */
size_t kn_dedup_entry_encode(const kn_dedup *d, const kn_dedup_fp *fp, char key[KN_DEDUP_KEY_LEN],
                             uint8_t value[KN_DEDUP_VALUE_MAX]);

/* Applies a changelog entry as committed state. KN_OK; KN_ENOTFOUND when the
 * key is not a dedup entry (other state shares the topic); KN_ECORRUPT for a
 * malformed value; KN_ENOMEM. */
int kn_dedup_entry_apply(kn_dedup *d, const void *key, size_t key_len, const void *value,
                         size_t value_len);

#endif
