/* dataset.h: one dataset's pipeline inside kiln-preprocess: clean → dedup →
 * tokenize → LM blocks / classification rows, or decode → convert → augment
 * → normalize; examples buffered per split into shards that are produced
 * inside the caller's open transaction.
 *
 * Transaction contract (the caller, stream.c, owns the transaction):
 *  1. process/flush produce only while a transaction is open;
 *  2. commit() after the transaction committed, abort() after it aborted:
 *     abort drops every buffered example, rolls the dedup state back and
 *     restores the LM tails to what the last committed changelog says. */
#ifndef PP_DATASET_H
#define PP_DATASET_H

#include <stddef.h>
#include <stdint.h>

#include "stream/record.h"
#include "recipe/recipe.h"
#include "service.h"

typedef struct pp_dataset pp_dataset;

enum { PP_TRAIN = 0, PP_EVAL = 1 };

/* Why a record was not used (reason NULL: it was used). */
typedef struct {
    const char *reason; /* static snake_case code */
    char detail[256];
    int duplicate; /* the reason is a dedup decision, not bad input */
} pp_outcome;

/* Takes ownership of *r (zeroed on return, success or not). Loads the
 * tokenizer, builds the shard writers. NULL with errbuf on error. */
pp_dataset *pp_dataset_new(kn_recipe *r, const pp_env *env, char *errbuf, size_t errsz);
void pp_dataset_destroy(pp_dataset *ds);

const kn_recipe *pp_dataset_recipe(const pp_dataset *ds);
const char *pp_dataset_topic(const pp_dataset *ds, int split); /* <prefix>.train|eval.<name> */
const char *pp_dataset_state_topic(const pp_dataset *ds);      /* <prefix>.state.<name> */

/* Split of a record by its key: eval when the first 8 bytes (big-endian)
 * mod 10000 < eval_fraction * 10000. */
int pp_split_of(const uint8_t key[32], double eval_fraction);

/* Transforms one record. KN_OK: out->reason NULL when used, else the reason
 * it was refused (the caller sends it to the DLQ or counts the duplicate).
 * Another code: producing failed or OOM; the transaction must abort. */
int pp_dataset_process(pp_dataset *ds, const uint8_t key[32], const kn_record_info *info,
                       const void *value, size_t len, pp_outcome *out);

/* End of transaction: produces partial shards and changed LM tails. */
int pp_dataset_flush(pp_dataset *ds);
void pp_dataset_commit(pp_dataset *ds);
void pp_dataset_abort(pp_dataset *ds);

/* Applies a committed changelog entry from the state topic. at_start: the
 * rebuild when the process starts (this instance's LM tails are restored
 * then, and only then). */
int pp_dataset_apply_state(pp_dataset *ds, const void *key, size_t klen, const void *value,
                           size_t vlen, int at_start);

#endif
