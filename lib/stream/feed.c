/* feed.c: shard examples into batch rows (see feed.h). */
#include "stream/feed.h"

#include <string.h>

uint32_t kn_feed_token(const kn_shard_view *v, const uint8_t *ex, uint32_t j)
{
    if (v->info.dtype == KN_SHARD_U16) {
        uint16_t t;
        memcpy(&t, ex + 2 * (size_t)j, 2);
        return t;
    }
    uint32_t t;
    memcpy(&t, ex + 4 * (size_t)j, 4);
    return t;
}

static int feed_image(const kn_feed *f, const kn_shard_view *v, const uint8_t *ex, uint32_t i,
                      int row)
{
    int32_t label = kn_shard_label(v, i);
    if (label < 0 || label >= f->classes) return -1;
    uint32_t H = v->info.shape[0], W = v->info.shape[1], C = v->info.shape[2];
    float *dst = f->x + (size_t)row * f->in_numel;
    for (uint32_t h = 0; h < H; h++) /* shard HWC -> model CHW */
        for (uint32_t w = 0; w < W; w++)
            for (uint32_t ch = 0; ch < C; ch++) {
                size_t src = ((size_t)h * W + w) * C + ch;
                float val;
                if (v->info.dtype == KN_SHARD_F32)
                    memcpy(&val, ex + 4 * src, 4);
                else
                    val = (float)ex[src] * (1.0f / 255.0f);
                dst[((size_t)ch * H + h) * W + w] = val;
            }
    f->labels[row] = label;
    return 0;
}

static int feed_lm(const kn_feed *f, const kn_shard_view *v, const uint8_t *ex, int row)
{
    uint32_t len = v->info.shape[0];
    uint32_t T = len - 1 < (uint32_t)f->T ? len - 1 : (uint32_t)f->T;
    for (uint32_t j = 0; j <= T; j++)
        if (kn_feed_token(v, ex, j) >= (uint32_t)f->vocab) return -1;
    int *tok = f->tokens + (size_t)row * f->T, *lab = f->labels + (size_t)row * f->T;
    for (uint32_t j = 0; j < T; j++) {
        tok[j] = (int)kn_feed_token(v, ex, j);
        lab[j] = (int)kn_feed_token(v, ex, j + 1);
    }
    for (uint32_t j = T; j < (uint32_t)f->T; j++) { /* a shorter block: pad, ignore */
        tok[j] = 0;
        lab[j] = -1;
    }
    return 0;
}

static int feed_textcls(const kn_feed *f, const kn_shard_view *v, const uint8_t *ex, uint32_t i,
                        int row)
{
    int32_t label = kn_shard_label(v, i);
    if (label < 0 || label >= f->classes) return -1;
    uint32_t len = v->info.shape[0];
    uint32_t T = len < (uint32_t)f->T ? len : (uint32_t)f->T;
    for (uint32_t j = 0; j < T; j++)
        if (kn_feed_token(v, ex, j) >= (uint32_t)f->vocab) return -1;
    int *tok = f->tokens + (size_t)row * f->T;
    for (uint32_t j = 0; j < T; j++)
        tok[j] = (int)kn_feed_token(v, ex, j);
    for (uint32_t j = T; j < (uint32_t)f->T; j++)
        tok[j] = 0;
    f->labels[row] = label;
    return 0;
}

int kn_feed_copy(const kn_feed *f, const kn_shard_view *v, uint32_t i, int row)
{
    const uint8_t *ex = kn_shard_example(v, i);
    switch (f->input) {
    case KN_FEED_IMAGE: return feed_image(f, v, ex, i, row);
    case KN_FEED_LM: return feed_lm(f, v, ex, row);
    case KN_FEED_TEXTCLS: return feed_textcls(f, v, ex, i, row);
    }
    return -1;
}
