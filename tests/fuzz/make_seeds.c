/* make_seeds.c: writes the generated seed inputs into tests/fuzz/corpus/
 * <target>/ (argument: the corpus folder): shards of each kind by
 * kn_shard_writer, safetensors files by kn_safetensors_write, a rank file by
 * kn_bpe_train, IDX files (plain and gzip), PNGs of every colour type by
 * libspng's encoder, JPEGs by TurboJPEG and binary PGM/PPM. Deterministic;
 * run by tests/fuzz/make-seeds.sh, whose output is committed. */
#include "core/kn.h"
#include "nn/safetensors.h"
#include "stream/shard.h"
#include "text/bpe.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>
#ifdef KILN_HAVE_SPNG
#include <spng.h>
#endif
#ifdef KILN_HAVE_TURBOJPEG
#include <turbojpeg.h>
#endif

static const char *dir;

static void put(const char *target, const char *name, const void *data, size_t len)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/%s/%s", dir, target, name);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(data, 1, len, f) != len || fclose(f) != 0) {
        fprintf(stderr, "make_seeds: cannot write %s\n", path);
        exit(1);
    }
}

static void shard(const char *name, kn_shard_kind kind, kn_shard_dtype dtype, uint32_t ndim,
                  const uint32_t *shape, uint32_t count, uint32_t extra_keys)
{
    char err[256];
    kn_shard_writer *w =
        kn_shard_writer_new(kind, dtype, ndim, shape, count, count + extra_keys, err, sizeof(err));
    if (!w) {
        fprintf(stderr, "make_seeds: %s: %s\n", name, err);
        exit(1);
    }
    size_t eb = kn_shard_writer_example_bytes(w);
    uint8_t *ex = malloc(eb), key[KN_SHARD_KEY_LEN];
    for (uint32_t i = 0; i < count; i++) {
        for (size_t b = 0; b < eb; b++)
            ex[b] = (uint8_t)(i * 31 + b * 7);
        /* token ids must be below the vocabulary: keep them small */
        if (dtype == KN_SHARD_U16 || dtype == KN_SHARD_U32)
            for (size_t b = 1; b < eb; b += 2)
                ex[b] = 0;
        memset(key, (int)(0x40 + i), sizeof(key));
        kn_shard_writer_add(w, ex, (int32_t)(i % 3), 1000 + i,
                            kind == KN_SHARD_LM_TOKENS ? NULL : key);
    }
    for (uint32_t i = 0; i < extra_keys; i++) {
        memset(key, (int)(0x60 + i), sizeof(key));
        kn_shard_writer_add_key(w, key);
    }
    const void *out;
    size_t len;
    kn_shard_writer_finish(w, &out, &len);
    put("shard", name, out, len);
    free(ex);
    kn_shard_writer_destroy(w);
}

static void safetensors(void)
{
    float a[6] = {1, -2, 3.5f, 0, 1e-3f, -1e9f}, b[4] = {0.25f, 0.5f, 0.75f, 1};
    int64_t sa[2] = {2, 3}, sb[1] = {4};
    kn_safetensors_entry e[2] = {{"layer.weight", 2, sa, a}, {"layer.bias", 1, sb, b}};
    json_t *meta = json_pack("{s:s, s:s}", "format", "pt", "kiln_step", "12");
    unsigned char *out = NULL;
    size_t len = 0;
    char err[256];
    if (kn_safetensors_write(e, 2, meta, &out, &len, err, sizeof(err)) != KN_OK) {
        fprintf(stderr, "make_seeds: safetensors: %s\n", err);
        exit(1);
    }
    put("safetensors", "two-tensors-metadata.safetensors", out, len);
    free(out);
    if (kn_safetensors_write(e + 1, 1, NULL, &out, &len, err, sizeof(err)) != KN_OK) exit(1);
    put("safetensors", "one-tensor.safetensors", out, len);
    free(out);
    json_decref(meta);
}

static void rank_file(void)
{
    static const char *const texts[] = {
        "the cat sat on the mat; the dog sat on the log. It's 42, isn't it?\n",
        "naïve café 東京 — the the the  spaces\tand\ttabs\n",
    };
    size_t lens[2] = {strlen(texts[0]), strlen(texts[1])};
    char path[4096], err[256];
    snprintf(path, sizeof(path), "%s/bpe/trained-r50k.tiktoken", dir);
    if (kn_bpe_train(texts, lens, 2, 290, KN_BPE_R50K, path, err, sizeof(err)) != KN_OK) {
        fprintf(stderr, "make_seeds: bpe: %s\n", err);
        exit(1);
    }
}

static void idx(void)
{
    /* 3 items of 4 x 5 u8 (an MNIST-style images file) and 3 labels */
    uint8_t img[4 + 12 + 60] = {0, 0, 0x08, 3, 0, 0, 0, 3, 0, 0, 0, 4, 0, 0, 0, 5};
    uint8_t lab[4 + 4 + 3] = {0, 0, 0x08, 1, 0, 0, 0, 3, 7, 2, 9};
    for (int i = 0; i < 60; i++)
        img[16 + i] = (uint8_t)(i * 4);
    put("idx", "images-u8-3x4x5.idx", img, sizeof(img));
    put("idx", "labels-u8-3.idx", lab, sizeof(lab));
    /* f32 values, 2 x 2 */
    uint8_t f[4 + 8 + 16] = {0, 0, 0x0D, 2, 0, 0, 0,    2,    0, 0, 0,    2,    0x3f, 0x80,
                             0, 0, 0x40, 0, 0, 0, 0x40, 0x40, 0, 0, 0xbf, 0x80, 0,    0};
    put("idx", "f32-2x2.idx", f, sizeof(f));
    char path[4096];
    snprintf(path, sizeof(path), "%s/idx/labels-u8-3.idx.gz", dir);
    gzFile gz = gzopen(path, "wb9");
    if (!gz || gzwrite(gz, lab, sizeof(lab)) != (int)sizeof(lab) || gzclose(gz) != Z_OK) exit(1);
    /* single IDX entries as images: 00 00 08 02 rows cols (gray), 03 (+ channels) */
    uint8_t gray[4 + 8 + 12] = {0, 0, 0x08, 2, 0, 0, 0, 3, 0, 0, 0, 4};
    uint8_t rgb[4 + 12 + 24] = {0, 0, 0x08, 3, 0, 0, 0, 2, 0, 0, 0, 4, 0, 0, 0, 3};
    for (int i = 0; i < 12; i++)
        gray[12 + i] = (uint8_t)(i * 20);
    for (int i = 0; i < 24; i++)
        rgb[16 + i] = (uint8_t)(255 - i * 10);
    put("image", "entry-gray-3x4.idx", gray, sizeof(gray));
    put("image", "entry-rgb-2x4.idx", rgb, sizeof(rgb));
    put("media", "entry-gray-3x4.idx", gray, sizeof(gray));
    put("media", "entry-rgb-2x4.idx", rgb, sizeof(rgb));
}

/* An image for both image targets (decode and probe). */
static void image(const char *name, const void *data, size_t len)
{
    put("image", name, data, len);
    put("media", name, data, len);
}

/* w x h gradient pixels, c channels of 8 bits (or 16 when wide) */
static uint8_t *gradient(int w, int h, int c, int wide, size_t *len)
{
    int bps = wide ? 2 : 1;
    *len = (size_t)w * h * c * bps;
    uint8_t *p = malloc(*len);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            for (int k = 0; k < c * bps; k++)
                p[((size_t)y * w + x) * c * bps + k] = (uint8_t)(x * 255 / w + y * 40 + k * 70);
    return p;
}

#ifdef KILN_HAVE_SPNG
static void png(const char *name, int w, int h, int color_type, int depth, int interlace)
{
    static const int channels[7] = {1, 0, 3, 1, 2, 0, 4};
    size_t len, out_len = 0;
    uint8_t *px;
    if (depth < 8) { /* packed rows of depth-bit samples */
        len = (size_t)h * (((size_t)w * depth + 7) / 8);
        px = malloc(len);
        for (size_t i = 0; i < len; i++)
            px[i] = (uint8_t)(i % 2 ? 0x5a : 0xc3);
    } else {
        px = gradient(w, h, channels[color_type], depth == 16, &len);
        if (color_type == SPNG_COLOR_TYPE_INDEXED)
            for (size_t i = 0; i < len; i++)
                px[i] %= 6;
    }
    spng_ctx *ctx = spng_ctx_new(SPNG_CTX_ENCODER);
    struct spng_ihdr ihdr = {.width = (uint32_t)w,
                             .height = (uint32_t)h,
                             .bit_depth = (uint8_t)depth,
                             .color_type = (uint8_t)color_type,
                             .interlace_method = (uint8_t)interlace};
    int err = spng_set_option(ctx, SPNG_ENCODE_TO_BUFFER, 1) || spng_set_ihdr(ctx, &ihdr);
    if (!err && color_type == SPNG_COLOR_TYPE_INDEXED) {
        struct spng_plte plte = {.n_entries = 6};
        struct spng_trns trns = {.n_type3_entries = 2, .type3_alpha = {0, 128}};
        for (int i = 0; i < 6; i++)
            plte.entries[i] = (struct spng_plte_entry){(uint8_t)(i * 40), (uint8_t)(255 - i * 40),
                                                       (uint8_t)(i * 13), 255};
        err = spng_set_plte(ctx, &plte) || spng_set_trns(ctx, &trns);
    }
    if (!err) err = spng_encode_image(ctx, px, len, SPNG_FMT_PNG, SPNG_ENCODE_FINALIZE);
    void *out = err ? NULL : spng_get_png_buffer(ctx, &out_len, &err);
    if (!out) {
        fprintf(stderr, "make_seeds: %s: %s\n", name, spng_strerror(err));
        exit(1);
    }
    image(name, out, out_len);
    free(out);
    free(px);
    spng_ctx_free(ctx);
}
#endif

#ifdef KILN_HAVE_TURBOJPEG
static void jpeg(const char *name, int w, int h, int gray, int subsamp, int flags)
{
    size_t len;
    uint8_t *px = gradient(w, h, gray ? 1 : 3, 0, &len);
    unsigned char *out = NULL;
    unsigned long out_len = 0;
    tjhandle tj = tjInitCompress();
    if (!tj || tjCompress2(tj, px, w, 0, h, gray ? TJPF_GRAY : TJPF_RGB, &out, &out_len,
                           gray ? TJSAMP_GRAY : subsamp, 75, flags) != 0) {
        fprintf(stderr, "make_seeds: %s: %s\n", name, tjGetErrorStr2(tj));
        exit(1);
    }
    image(name, out, out_len);
    tjFree(out);
    tjDestroy(tj);
    free(px);
}
#endif

static void pnm(const char *name, int c, int w, int h, int maxval)
{
    char head[64];
    size_t len;
    int hl =
        snprintf(head, sizeof(head), "P%d\n# kiln seed\n%d %d\n%d\n", c == 1 ? 5 : 6, w, h, maxval);
    uint8_t *px = gradient(w, h, c, maxval > 255, &len);
    uint8_t *buf = malloc((size_t)hl + len);
    memcpy(buf, head, (size_t)hl);
    memcpy(buf + hl, px, len);
    if (maxval < 255)
        for (size_t i = 0; i < len; i++)
            buf[hl + i] %= (uint8_t)(maxval + 1);
    image(name, buf, (size_t)hl + len);
    free(buf);
    free(px);
}

static void images(void)
{
#ifdef KILN_HAVE_SPNG
    png("gray8.png", 8, 6, SPNG_COLOR_TYPE_GRAYSCALE, 8, 0);
    png("gray1.png", 9, 3, SPNG_COLOR_TYPE_GRAYSCALE, 1, 0);
    png("gray-alpha.png", 6, 5, SPNG_COLOR_TYPE_GRAYSCALE_ALPHA, 8, 0);
    png("rgb8.png", 8, 6, SPNG_COLOR_TYPE_TRUECOLOR, 8, 0);
    png("rgb16.png", 5, 4, SPNG_COLOR_TYPE_TRUECOLOR, 16, 0);
    png("rgba8-interlaced.png", 9, 9, SPNG_COLOR_TYPE_TRUECOLOR_ALPHA, 8, 1);
    png("palette-trns.png", 8, 4, SPNG_COLOR_TYPE_INDEXED, 8, 0);
#endif
#ifdef KILN_HAVE_TURBOJPEG
    jpeg("rgb-444.jpg", 16, 8, 0, TJSAMP_444, 0);
    jpeg("rgb-420.jpg", 17, 9, 0, TJSAMP_420, 0);
    jpeg("gray.jpg", 8, 8, 1, 0, 0);
    jpeg("progressive.jpg", 16, 16, 0, TJSAMP_422, TJFLAG_PROGRESSIVE);
#endif
    pnm("gray8.pgm", 1, 6, 4, 255);
    pnm("gray16.pgm", 1, 4, 3, 1000);
    pnm("rgb8.ppm", 3, 5, 3, 255);
    pnm("rgb-maxval15.ppm", 3, 3, 2, 15);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: fuzz_make_seeds CORPUS_DIR\n");
        return 2;
    }
    dir = argv[1];
    uint32_t lm[1] = {9}, tc[1] = {6}, im[3] = {4, 3, 3}, im1[3] = {2, 2, 1};
    shard("lm-tokens-u16.kshd", KN_SHARD_LM_TOKENS, KN_SHARD_U16, 1, lm, 3, 2);
    shard("lm-tokens-u32.kshd", KN_SHARD_LM_TOKENS, KN_SHARD_U32, 1, lm, 2, 0);
    shard("text-class-u16.kshd", KN_SHARD_TEXT_CLASS, KN_SHARD_U16, 1, tc, 4, 0);
    shard("image-u8-4x3x3.kshd", KN_SHARD_IMAGE, KN_SHARD_U8, 3, im, 3, 0);
    shard("image-f32-2x2x1.kshd", KN_SHARD_IMAGE, KN_SHARD_F32, 3, im1, 2, 0);
    safetensors();
    rank_file();
    idx();
    images();
    return 0;
}
