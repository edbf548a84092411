/* recipe.h: a dataset's preprocessing recipe, read from its [dataset.NAME]
 * config section (docs/preprocess.md lists every key). The recipe's hash
 * (SHA-256 of its canonical text) goes into every shard's headers so a model's
 * lineage names the exact recipe. */
#ifndef PP_RECIPE_H
#define PP_RECIPE_H

#include <stddef.h>
#include <stdint.h>

#include "text/bpe.h"
#include "core/config.h"
#include "text/dedup.h"
#include "image/image.h"
#include "text/textclean.h"

typedef enum { PP_KIND_LM = 0, PP_KIND_TEXT_CLASS = 1, PP_KIND_IMAGE = 2 } pp_kind;
typedef enum { PP_DEDUP_NONE = 0, PP_DEDUP_EXACT = 1, PP_DEDUP_NEAR = 2 } pp_dedup_mode;

#define PP_MAX_LABELS 4096

typedef struct {
    char name[128]; /* NAME of [dataset.NAME] */
    pp_kind kind;
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
    pp_dedup_mode dedup;
    kn_dedup_options dedup_opts;

    /* image */
    int width, height, channels; /* output size; channels 1..4 */
    float mean[4], std[4];       /* per channel, on the 0..1 scale */
    int augment;                 /* bool: augment train examples */
    kn_image_augment_options aug;
    size_t max_pixels; /* decode limit, 0 = the library default */

    char hash[65]; /* SHA-256 (hex) of the canonical recipe text */
} pp_recipe;

/* Reads section ("dataset.NAME") into r. KN_OK, or KN_EINVAL with errbuf
 * naming the key and what is wrong. r is owned by the caller: free it with
 * pp_recipe_free (also after a failure). */
int pp_recipe_load(const kn_config *cfg, const char *section, pp_recipe *r, char *errbuf,
                   size_t errsz);
void pp_recipe_free(pp_recipe *r);

/* Label id of s, or -1 when it is not in the list. */
int32_t pp_recipe_label(const pp_recipe *r, const char *s);

const char *pp_kind_name(pp_kind k);

#endif
