/* recipe.c: [dataset.NAME] sections → kn_recipe, with validation and a
 * canonical text whose SHA-256 identifies the recipe. */
#include "recipe/recipe.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/kn.h"
#include "core/sha256.h"

const char *kn_recipe_kind_name(kn_recipe_kind k)
{
    switch (k) {
    case KN_RECIPE_LM:
        return "lm";
    case KN_RECIPE_TEXT_CLASS:
        return "text_class";
    case KN_RECIPE_IMAGE:
        return "image";
    }
    return "?";
}

typedef struct {
    const kn_config *cfg;
    const char *section;
    char *err;
    size_t errsz;
    int bad;
} getter;

static const char *gs(getter *g, const char *key, const char *def)
{
    char k[512];
    snprintf(k, sizeof(k), "%s.%s", g->section, key);
    return kn_config_get(g->cfg, k, def);
}

static int64_t gi(getter *g, const char *key, int64_t def, int64_t lo, int64_t hi)
{
    char k[512];
    int ok = 1;
    snprintf(k, sizeof(k), "%s.%s", g->section, key);
    int64_t v = kn_config_get_int(g->cfg, k, def, &ok);
    if (!ok || v < lo || v > hi) {
        if (!g->bad)
            kn_seterr(g->err, g->errsz, KN_EINVAL, "[%s] %s: must be an integer in %lld..%lld",
                      g->section, key, (long long)lo, (long long)hi);
        g->bad = 1;
    }
    return v;
}

static double gd(getter *g, const char *key, double def, double lo, double hi)
{
    char k[512];
    int ok = 1;
    snprintf(k, sizeof(k), "%s.%s", g->section, key);
    double v = kn_config_get_double(g->cfg, k, def, &ok);
    if (!ok || !(v >= lo && v <= hi)) {
        if (!g->bad)
            kn_seterr(g->err, g->errsz, KN_EINVAL, "[%s] %s: must be a number in %g..%g",
                      g->section, key, lo, hi);
        g->bad = 1;
    }
    return v;
}

static int gb(getter *g, const char *key, int def)
{
    char k[512];
    int ok = 1;
    snprintf(k, sizeof(k), "%s.%s", g->section, key);
    int v = kn_config_get_bool(g->cfg, k, def, &ok);
    if (!ok) {
        if (!g->bad)
            kn_seterr(g->err, g->errsz, KN_EINVAL, "[%s] %s: must be true or false", g->section,
                      key);
        g->bad = 1;
    }
    return v;
}

/* "a, b, c" → up to n floats; KN_OK when 1 or exactly n values were given
 * (1 value is broadcast). */
static int parse_floats(const char *s, float *out, int n)
{
    int k = 0;
    while (*s && k < 4) {
        char *end;
        out[k] = strtof(s, &end);
        if (end == s) return KN_EINVAL;
        k++;
        s = end;
        while (*s == ' ' || *s == '\t')
            s++;
        if (*s == ',')
            s++;
        else if (*s)
            return KN_EINVAL;
    }
    if (k == 1)
        for (int i = 1; i < n; i++)
            out[i] = out[0];
    else if (k != n)
        return KN_EINVAL;
    return KN_OK;
}

static int parse_labels(const char *s, kn_recipe *r)
{
    while (*s) {
        while (*s == ' ' || *s == '\t' || *s == ',')
            s++;
        if (!*s) break;
        const char *e = s;
        while (*e && *e != ',')
            e++;
        const char *t = e;
        while (t > s && (t[-1] == ' ' || t[-1] == '\t'))
            t--;
        if (r->nlabels >= KN_RECIPE_MAX_LABELS) return KN_ETOOBIG;
        char **nl = realloc(r->labels, (r->nlabels + 1) * sizeof(char *));
        if (!nl) return KN_ENOMEM;
        r->labels = nl;
        r->labels[r->nlabels] = strndup(s, (size_t)(t - s));
        if (!r->labels[r->nlabels]) return KN_ENOMEM;
        for (size_t i = 0; i < r->nlabels; i++)
            if (strcmp(r->labels[i], r->labels[r->nlabels]) == 0) {
                free(r->labels[r->nlabels]);
                return KN_EEXIST;
            }
        r->nlabels++;
        s = e;
    }
    return KN_OK;
}

int kn_recipe_load(const kn_config *cfg, const char *section, kn_recipe *r, char *errbuf,
                   size_t errsz)
{
    memset(r, 0, sizeof(*r));
    getter g = {cfg, section, errbuf, errsz, 0};
    const char *name = strchr(section, '.') ? strchr(section, '.') + 1 : section;
    if (!*name || strlen(name) >= sizeof(r->name) || strpbrk(name, " /\\"))
        return kn_seterr(errbuf, errsz, KN_EINVAL, "[%s]: bad dataset name", section);
    snprintf(r->name, sizeof(r->name), "%s", name);

    const char *kind = gs(&g, "kind", "");
    if (strcmp(kind, "lm") == 0)
        r->kind = KN_RECIPE_LM;
    else if (strcmp(kind, "text_class") == 0)
        r->kind = KN_RECIPE_TEXT_CLASS;
    else if (strcmp(kind, "image") == 0)
        r->kind = KN_RECIPE_IMAGE;
    else
        return kn_seterr(errbuf, errsz, KN_EINVAL,
                         "[%s] kind: \"%s\" is not one of lm, text_class, image", section, kind);
    r->eval_fraction = gd(&g, "eval_fraction", 0.1, 0.0, 1.0);
    r->shard_examples =
        (uint32_t)gi(&g, "shard_examples", r->kind == KN_RECIPE_LM ? 64 : 256, 1, 1 << 20);
    int rc = parse_labels(gs(&g, "labels", ""), r);
    if (rc == KN_EEXIST)
        return kn_seterr(errbuf, errsz, KN_EINVAL, "[%s] labels: a label is listed twice", section);
    if (rc != KN_OK)
        return kn_seterr(errbuf, errsz, rc, "[%s] labels: %s", section, kn_strerror(rc));
    r->require_label = gb(&g, "require_label", r->kind != KN_RECIPE_LM);
    if (r->kind != KN_RECIPE_LM && r->require_label && r->nlabels == 0)
        return kn_seterr(errbuf, errsz, KN_EINVAL,
                         "[%s] labels: a %s dataset needs its label list (labels = a, b, ...) so "
                         "label ids are stable across instances and restarts",
                         section, kind);

    if (r->kind != KN_RECIPE_IMAGE) {
        r->clean = gb(&g, "clean", 1);
        kn_textclean_defaults(&r->clean_opts);
        const char *norm = gs(&g, "normalize", "nfc");
        if (strcmp(norm, "nfc") == 0)
            r->clean_opts.normalize = KN_TEXT_NORM_NFC;
        else if (strcmp(norm, "nfkc") == 0)
            r->clean_opts.normalize = KN_TEXT_NORM_NFKC;
        else if (strcmp(norm, "none") == 0)
            r->clean_opts.normalize = KN_TEXT_NORM_NONE;
        else
            return kn_seterr(errbuf, errsz, KN_EINVAL,
                             "[%s] normalize: \"%s\" is not one of nfc, nfkc, none", section, norm);
        r->clean_opts.strip_markup = gb(&g, "strip_markup", 0);
        r->clean_opts.collapse_whitespace = gb(&g, "collapse_whitespace", 1);
        r->clean_opts.strip_control = gb(&g, "strip_control", 1);
        r->clean_opts.min_chars = (size_t)gi(&g, "min_chars", 0, 0, INT32_MAX);
        r->clean_opts.max_chars = (size_t)gi(&g, "max_chars", 0, 0, INT32_MAX);
        r->clean_opts.min_letter_ratio = gd(&g, "min_letter_ratio", 0.0, 0.0, 1.0);
        r->clean_opts.max_dup_line_ratio = gd(&g, "max_dup_line_ratio", 1.0, 0.0, 1.0);
        r->clean_opts.max_char_repeat_ratio = gd(&g, "max_char_repeat_ratio", 1.0, 0.0, 1.0);

        const char *tok = gs(&g, "tokenizer", "");
        if (!*tok)
            return kn_seterr(errbuf, errsz, KN_EINVAL,
                             "[%s] tokenizer: the path of a tiktoken rank file is required",
                             section);
        snprintf(r->tokenizer, sizeof(r->tokenizer), "%s", tok);
        const char *pat = gs(&g, "pattern", "r50k");
        if (strcmp(pat, "r50k") == 0 || strcmp(pat, "gpt2") == 0)
            r->pattern = KN_BPE_R50K;
        else if (strcmp(pat, "cl100k") == 0)
            r->pattern = KN_BPE_CL100K;
        else
            return kn_seterr(errbuf, errsz, KN_EINVAL,
                             "[%s] pattern: \"%s\" is not one of r50k, cl100k", section, pat);
        r->block_size = (uint32_t)gi(&g, "block_size", 1024, 1, 1 << 20);
        r->max_len = (uint32_t)gi(&g, "max_len", 128, 1, 1 << 20);
        r->pad_id = gi(&g, "pad_id", -1, -1, INT32_MAX);

        const char *dd = gs(&g, "dedup", "near");
        if (strcmp(dd, "near") == 0)
            r->dedup = KN_RECIPE_DEDUP_NEAR;
        else if (strcmp(dd, "exact") == 0)
            r->dedup = KN_RECIPE_DEDUP_EXACT;
        else if (strcmp(dd, "none") == 0)
            r->dedup = KN_RECIPE_DEDUP_NONE;
        else
            return kn_seterr(errbuf, errsz, KN_EINVAL,
                             "[%s] dedup: \"%s\" is not one of near, exact, none", section, dd);
        kn_dedup_options_default(&r->dedup_opts);
        r->dedup_opts.near = r->dedup == KN_RECIPE_DEDUP_NEAR;
        r->dedup_opts.shingle = (uint32_t)gi(&g, "dedup_shingle", 5, 1, 64);
        r->dedup_opts.num_hashes = (uint32_t)gi(&g, "dedup_hashes", 128, 1, KN_DEDUP_MAX_HASHES);
        r->dedup_opts.bands = (uint32_t)gi(&g, "dedup_bands", 16, 1, KN_DEDUP_MAX_HASHES);
        r->dedup_opts.threshold = gd(&g, "dedup_threshold", 0.8, 0.01, 1.0);
        /* Not in the recipe hash: a memory bound, like flush_ms an operating
         * choice (it only changes whether a repeat of a document older than
         * the window is caught). */
        r->dedup_opts.window = (size_t)gi(&g, "dedup_window", 500000, 0, UINT32_MAX);
        if (r->dedup_opts.window == 1)
            return kn_seterr(errbuf, errsz, KN_EINVAL,
                             "[%s] dedup_window: 1 is too small (0 = no bound, else at least 2)",
                             section);
    } else {
        r->width = (int)gi(&g, "width", 28, 1, 8192);
        r->height = (int)gi(&g, "height", 28, 1, 8192);
        r->channels = (int)gi(&g, "channels", 1, 1, 4);
        for (int i = 0; i < 4; i++) {
            r->mean[i] = 0.0f;
            r->std[i] = 1.0f;
        }
        if (parse_floats(gs(&g, "mean", "0"), r->mean, r->channels) != KN_OK ||
            parse_floats(gs(&g, "std", "1"), r->std, r->channels) != KN_OK)
            return kn_seterr(errbuf, errsz, KN_EINVAL,
                             "[%s] mean/std: one number or one per channel (%d), comma-separated",
                             section, r->channels);
        for (int i = 0; i < r->channels; i++)
            if (!(r->std[i] > 0.0f))
                return kn_seterr(errbuf, errsz, KN_EINVAL, "[%s] std: must be > 0", section);
        r->augment = gb(&g, "augment", 1);
        r->aug.crop_pad = (int)gi(&g, "crop_pad", 0, 0, 1024);
        r->aug.crop = r->aug.crop_pad > 0;
        r->aug.hflip = gb(&g, "hflip", 0);
        r->aug.max_degrees = (float)gd(&g, "rotate_degrees", 0.0, 0.0, 180.0);
        r->aug.rotate = r->aug.max_degrees > 0.0f;
        r->aug.brightness = (float)gd(&g, "brightness", 0.0, 0.0, 255.0);
        r->aug.contrast = (float)gd(&g, "contrast", 0.0, 0.0, 1.0);
        r->aug.jitter = r->aug.brightness > 0.0f || r->aug.contrast > 0.0f;
        r->aug.noise_std = (float)gd(&g, "noise_std", 0.0, 0.0, 255.0);
        r->aug.noise = r->aug.noise_std > 0.0f;
        r->max_pixels = (size_t)gi(&g, "max_pixels", 0, 0, INT64_C(1) << 34);
    }
    if (g.bad) return KN_EINVAL;
    if (r->dedup == KN_RECIPE_DEDUP_NEAR && r->dedup_opts.num_hashes % r->dedup_opts.bands != 0)
        return kn_seterr(errbuf, errsz, KN_EINVAL,
                         "[%s] dedup_hashes (%u) must be a multiple of dedup_bands (%u)", section,
                         r->dedup_opts.num_hashes, r->dedup_opts.bands);

    /* Canonical text: every field that changes the output, in a fixed order. */
    char canon[8192];
    size_t n = 0;
#define CAT(...)                                                                                   \
    n += (size_t)snprintf(canon + n, n < sizeof(canon) ? sizeof(canon) - n : 0, __VA_ARGS__)
    CAT("kind=%s\neval_fraction=%.6f\nshard_examples=%u\n", kn_recipe_kind_name(r->kind),
        r->eval_fraction, r->shard_examples);
    CAT("labels=");
    for (size_t i = 0; i < r->nlabels; i++)
        CAT("%s%s", i ? "," : "", r->labels[i]);
    CAT("\nrequire_label=%d\n", r->require_label);
    if (r->kind != KN_RECIPE_IMAGE) {
        const kn_textclean_options *c = &r->clean_opts;
        CAT("clean=%d norm=%d markup=%d ws=%d ctl=%d min=%zu max=%zu letters=%.4f dup=%.4f "
            "rep=%.4f\n",
            r->clean, (int)c->normalize, c->strip_markup, c->collapse_whitespace, c->strip_control,
            c->min_chars, c->max_chars, c->min_letter_ratio, c->max_dup_line_ratio,
            c->max_char_repeat_ratio);
        CAT("pattern=%d block=%u max_len=%u pad=%lld\n", (int)r->pattern, r->block_size, r->max_len,
            (long long)r->pad_id);
        CAT("dedup=%d shingle=%u hashes=%u bands=%u thr=%.4f\n", (int)r->dedup,
            r->dedup_opts.shingle, r->dedup_opts.num_hashes, r->dedup_opts.bands,
            r->dedup_opts.threshold);
    } else {
        CAT("size=%dx%dx%d\n", r->width, r->height, r->channels);
        for (int i = 0; i < r->channels; i++)
            CAT("mean%d=%.6f std%d=%.6f\n", i, r->mean[i], i, r->std[i]);
        CAT("augment=%d crop=%d pad=%d hflip=%d rot=%.3f bright=%.3f contrast=%.3f noise=%.3f\n",
            r->augment, r->aug.crop, r->aug.crop_pad, r->aug.hflip, r->aug.max_degrees,
            r->aug.brightness, r->aug.contrast, r->aug.noise_std);
    }
#undef CAT
    kn_sha256_hex(canon, n < sizeof(canon) ? n : sizeof(canon) - 1, r->hash);
    return KN_OK;
}

void kn_recipe_free(kn_recipe *r)
{
    if (!r) return;
    for (size_t i = 0; i < r->nlabels; i++)
        free(r->labels[i]);
    free(r->labels);
    r->labels = NULL;
    r->nlabels = 0;
}

int32_t kn_recipe_label(const kn_recipe *r, const char *s)
{
    for (size_t i = 0; i < r->nlabels; i++)
        if (strcmp(r->labels[i], s) == 0) return (int32_t)i;
    return -1;
}

int kn_recipe_image(const kn_recipe *r, const void *bytes, size_t len, kn_image *out, char *errbuf,
                    size_t errsz)
{
    kn_image img;
    kn_image_init(&img);
    int rc = kn_image_decode(bytes, len, r->max_pixels, &img, errbuf, errsz);
    if (rc != KN_OK) {
        kn_image_init(out);
        return rc;
    }
    if ((rc = kn_image_convert(&img, r->width, r->height, r->channels, &img)) != KN_OK) {
        kn_image_free(&img);
        kn_image_init(out);
        return kn_seterr(errbuf, errsz, rc, "converting the image: %s", kn_strerror(rc));
    }
    kn_image_normalize(&img, r->mean, r->std);
    *out = img;
    return KN_OK;
}
