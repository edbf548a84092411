/* lib/recipe/ (uses core, text, image): a dataset's preprocessing recipe,
 * shared by the side that writes training data (kiln-preprocess) and the side
 * that serves the trained model (kiln-serve), so both run the same code.
 *
 * recipe.h: the recipe, read from its [dataset.NAME] config section
 * (docs/preprocess.md lists every key). The recipe's hash (SHA-256 of its
 * canonical text) goes into every shard's headers so a model's lineage names
 * the exact recipe; kiln-serve serves a version only with the recipe of that
 * hash. */
#ifndef KN_RECIPE_H
#define KN_RECIPE_H

#include <stddef.h>
#include <stdint.h>

#include "text/bpe.h"
#include "core/config.h"
#include "text/dedup.h"
#include "image/image.h"
#include "text/textclean.h"

typedef enum { KN_RECIPE_LM = 0, KN_RECIPE_TEXT_CLASS = 1, KN_RECIPE_IMAGE = 2 } kn_recipe_kind;
typedef enum {
    KN_RECIPE_DEDUP_NONE = 0,
    KN_RECIPE_DEDUP_EXACT = 1,
    KN_RECIPE_DEDUP_NEAR = 2
} kn_recipe_dedup;

#define KN_RECIPE_MAX_LABELS 4096

typedef struct {
    char name[128]; /* NAME of [dataset.NAME] */
    kn_recipe_kind kind;
    double eval_fraction;    /* 0..1: share of records (by key hash) in the eval split */
    uint32_t shard_examples; /* examples (LM: blocks) per shard, at most */
    char **labels;           /* (nlabels) label strings; id = index */
    size_t nlabels;
    int require_label; /* bool: a record without a label goes to the DLQ */

    /* text (lm, text_class) */
    int clean; /* bool: run kn_textclean */
    kn_textclean_options clean_opts;
    char tokenizer[1024]; /* tiktoken rank file */
    kn_bpe_kind pattern;
    uint32_t block_size; /* lm: T (blocks hold T+1 tokens) */
    uint32_t max_len;    /* text_class: tokens per row */
    int64_t pad_id;      /* text_class padding id; -1: <|endoftext|> */
    kn_recipe_dedup dedup;
    kn_dedup_options dedup_opts;

    /* image */
    int width, height, channels; /* output size; channels 1..4 */
    float mean[4], std[4];       /* per channel, on the 0..1 scale */
    int augment;                 /* bool: augment train examples */
    kn_image_augment_options aug;
    size_t max_pixels; /* decode limit, 0 = the library default */

    char hash[65]; /* SHA-256 (hex) of the canonical recipe text */
} kn_recipe;

/* Reads section ("dataset.NAME") into r. KN_OK, or KN_EINVAL with errbuf
 * naming the key and what is wrong. r is owned by the caller: free it with
 * kn_recipe_free (also after a failure). */
int kn_recipe_load(const kn_config *cfg, const char *section, kn_recipe *r, char *errbuf,
                   size_t errsz);
void kn_recipe_free(kn_recipe *r);

/* Label id of s, or -1 when it is not in the list. */
int32_t kn_recipe_label(const kn_recipe *r, const char *s);

const char *kn_recipe_kind_name(kn_recipe_kind k);

/* An image recipe's eval-side path, the one an eval example takes through
 * kiln-preprocess (no augmentation): decode (max_pixels), convert to
 * (width, height, channels), normalise by mean/std. *out (HWC float, written
 * without freeing what it held) is freed with kn_image_free. KN_OK, or the
 * code of kn_image_decode (KN_EINVAL bad bytes, KN_ETOOBIG over max_pixels,
 * KN_EUNSUPPORTED) or KN_ENOMEM, with errbuf. */
int kn_recipe_image(const kn_recipe *r, const void *bytes, size_t len, kn_image *out, char *errbuf,
                    size_t errsz);

#endif
