/* feed.h: one shard example → one row of a model's batch, the same way for
 * the trainer and the evaluator (so a model is scored on exactly the inputs
 * it is trained on). Images go from the shard's HWC to the model's CHW;
 * language-model blocks of T+1 tokens become T inputs and T next-token
 * labels (a shorter block is padded with ignored labels); classification
 * rows are truncated or zero-padded to T. */
#ifndef KN_NN_FEED_H
#define KN_NN_FEED_H

#include <stdint.h>

#include "stream/shard.h"

typedef enum { KN_FEED_IMAGE = 1, KN_FEED_LM, KN_FEED_TEXTCLS } kn_feed_input;

/* Where the rows go and what they must satisfy. Buffers are the caller's. */
typedef struct {
    kn_feed_input input;
    int in_numel;   /* images: floats per row (C*H*W of the model) */
    int T;          /* token models: tokens per row */
    int vocab;      /* token ids must be < vocab */
    int classes;    /* labels must be in [0, classes) (images, classification) */
    float *x;       /* (rows, in_numel) */
    int *tokens;    /* (rows, T) */
    int *labels;    /* (rows), or (rows, T) for KN_FEED_LM (-1 = ignored) */
} kn_feed;

/* Token j of a token example (u16 or u32 by the shard's dtype). */
uint32_t kn_feed_token(const kn_shard_view *v, const uint8_t *ex, uint32_t j);

/* Copies example i of the parsed shard v into row `row`. Returns 0, or -1
 * when the example cannot be used (label or token id out of range); the row
 * is then unspecified. The caller has checked that the shard's kind and
 * shape fit the model. */
int kn_feed_copy(const kn_feed *f, const kn_shard_view *v, uint32_t i, int row);

#endif
