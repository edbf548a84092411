/* lib/text/ (uses core): text as data — cleaning and normalisation
 * (textclean.h), exact and near-duplicate detection (dedup.h) and the
 * byte-level BPE tokenizer (bpe.h).
 *
 * bpe.h: byte-level BPE tokenizer: loads tiktoken rank files, encodes and
 * decodes exactly as tiktoken does for r50k_base (GPT-2) and cl100k_base, and
 * trains new vocabularies in the same format. See docs/tokenizer.md.
 * Limits: the pre-tokenizer knows the two patterns below and nothing else. */
#ifndef KN_BPE_H
#define KN_BPE_H

#include <stddef.h>
#include <stdint.h>

/* Pre-tokenization pattern (the regex tiktoken splits text with). */
typedef enum {
    KN_BPE_R50K = 0,   /* GPT-2 / r50k_base */
    KN_BPE_CL100K = 1, /* cl100k_base */
} kn_bpe_kind;

/* What encode does with special-token text such as "<|endoftext|>". */
typedef enum {
    KN_BPE_SPECIAL_ORDINARY = 0, /* plain text, like tiktoken's encode_ordinary */
    KN_BPE_SPECIAL_ALLOW = 1,    /* emit the special token's id */
    KN_BPE_SPECIAL_REJECT = 2,   /* fail with KN_EINVAL naming the token and offset */
} kn_bpe_special;

/* A loaded vocabulary. Immutable after kn_bpe_load: any number of threads may
 * encode and decode with one kn_bpe at once. */
typedef struct kn_bpe kn_bpe;

/* Growable id vector owned by the caller: encode appends to it. Reuse one
 * across calls to avoid allocation; kn_bpe_ids_free releases it. */
typedef struct {
    uint32_t *ids; /* (cap) token ids; the first len are valid */
    size_t len;
    size_t cap;
} kn_bpe_ids;

void kn_bpe_ids_init(kn_bpe_ids *v);
void kn_bpe_ids_free(kn_bpe_ids *v);

/* Loads a tiktoken rank file (lines "<base64 bytes> <rank>", ranks 0..n-1,
 * each exactly once, every single byte present). Lines whose bytes read
 * "<|name|>" are special tokens (as written by kn_bpe_train); a file with none
 * gets the standard special tokens of `kind` (r50k: <|endoftext|> 50256;
 * cl100k: <|endoftext|> 100257, <|fim_prefix|> 100258, <|fim_middle|> 100259,
 * <|fim_suffix|> 100260, <|endofprompt|> 100276). Returns a new object the
 * caller frees with kn_bpe_destroy, or NULL with the reason (file, line) in err. */
kn_bpe *kn_bpe_load(const char *rank_file, kn_bpe_kind kind, char *err, size_t errsz);

/* Same, from the file's contents in memory (not consumed; `name` is used in
 * error messages only). */
kn_bpe *kn_bpe_load_mem(const char *data, size_t len, const char *name, kn_bpe_kind kind, char *err,
                        size_t errsz);

/* Accepts NULL. */
void kn_bpe_destroy(kn_bpe *bpe);

/* Encodes text[0..len) and appends the ids to out. The text should be UTF-8;
 * an invalid byte is taken as a one-byte punctuation character, so the output
 * still decodes to the same bytes. Returns KN_OK, KN_ENOMEM, or KN_EINVAL (only
 * with KN_BPE_SPECIAL_REJECT and special-token text present; out is then left
 * as it was). Thread-safe. */
int kn_bpe_encode(const kn_bpe *bpe, const char *text, size_t len, kn_bpe_special special,
                  kn_bpe_ids *out, char *err, size_t errsz);

/* Decodes ids into buf (bufsz bytes). *outlen receives the byte length needed
 * even when it does not fit (then KN_ETOOBIG and buf holds a prefix). An id
 * that is neither a rank nor a special token gives KN_EINVAL. No NUL is added. */
int kn_bpe_decode(const kn_bpe *bpe, const uint32_t *ids, size_t n, char *buf, size_t bufsz,
                  size_t *outlen, char *err, size_t errsz);

/* Largest id (ranks and special tokens) plus one, as tiktoken's n_vocab. */
size_t kn_bpe_vocab_size(const kn_bpe *bpe);

/* Number of ordinary (non-special) tokens: the ranks 0..n-1. */
size_t kn_bpe_rank_count(const kn_bpe *bpe);

/* Id of special token `name` (e.g. "<|endoftext|>"), or -1 if there is none. */
int64_t kn_bpe_special_id(const kn_bpe *bpe, const char *name);

/* SHA-256 of the rank file's bytes, 64 lowercase hex digits; owned by bpe. */
const char *kn_bpe_hash(const kn_bpe *bpe);

/* Pattern the vocabulary was loaded with. */
kn_bpe_kind kn_bpe_get_kind(const kn_bpe *bpe);

/* Trains a byte-level BPE vocabulary of vocab_size ids on texts[i][0..lens[i])
 * and writes it to out_rank_file in the rank-file format: ranks 0..255 are the
 * single bytes 0x00..0xff, then one rank per learned merge in the order
 * learned, then "<|endoftext|>" as the last id (vocab_size - 1). Text is split
 * with `pattern` exactly as kn_bpe_encode splits it (special-token text is
 * ordinary text here); each step merges the most frequent adjacent pair,
 * ties going to the smaller (left id, right id). Stops early, writing a
 * smaller file, when no pair is left. vocab_size must be at least 257.
 * The file is written to a temporary name and renamed into place. */
int kn_bpe_train(const char *const *texts, const size_t *lens, size_t n, size_t vocab_size,
                 kn_bpe_kind pattern, const char *out_rank_file, char *err, size_t errsz);

#endif
