/* image.c: decode (libspng, TurboJPEG, PNM, IDX), convert/resize, seeded
 * augmentation and normalization of HWC float32 images. Augmentation is
 * bit-reproducible across machines: own RNG, own log/sin/cos, and no FMA
 * contraction in this file (a fused multiply-add rounds differently). */
/* No a*b+c -> FMA contraction here. GCC does not contract in ISO mode (our
 * -std=c11) and ignores the STDC pragma, so GNU-mode builds get the option. */
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__) && !defined(__STRICT_ANSI__)
#pragma GCC optimize("fp-contract=off")
#endif

#include "image/image.h"
#include "image/idx.h"
#include "core/kn.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#ifdef KILN_HAVE_SPNG
#include <spng.h>
#endif
#ifdef KILN_HAVE_TURBOJPEG
#include <turbojpeg.h>
#endif

void kn_image_init(kn_image *img)
{
    memset(img, 0, sizeof(*img));
}

void kn_image_free(kn_image *img)
{
    if (!img) return;
    free(img->data);
    memset(img, 0, sizeof(*img));
}

/* Allocates an uninitialized (w, h, c) image into *img (old contents not freed). */
static int img_alloc(kn_image *img, int w, int h, int c)
{
    if (w < 1 || h < 1 || c < 1 || c > 4) return KN_EINVAL;
    size_t n = (size_t)w * (size_t)h * (size_t)c;
    if (n > SIZE_MAX / sizeof(float)) return KN_ENOMEM;
    float *d = malloc(n * sizeof(float));
    if (!d) return KN_ENOMEM;
    img->w = w;
    img->h = h;
    img->c = c;
    img->data = d;
    return KN_OK;
}

static int img_valid(const kn_image *img)
{
    return img && img->data && img->w >= 1 && img->h >= 1 && img->c >= 1 && img->c <= 4;
}

static size_t img_size(const kn_image *img)
{
    return (size_t)img->w * (size_t)img->h * (size_t)img->c;
}

/* Hands a finished result r to out; when out aliases in, in's buffer goes. */
static void img_deliver(const kn_image *in, kn_image *r, kn_image *out)
{
    if (out == in) free(out->data);
    *out = *r;
    memset(r, 0, sizeof(*r));
}

int kn_image_from_u8(const uint8_t *pixels, int w, int h, int c, kn_image *out)
{
    if (!out) return KN_EINVAL;
    if (!pixels) return KN_EINVAL;
    kn_image r;
    int rc = img_alloc(&r, w, h, c);
    if (rc != KN_OK) return rc;
    size_t n = img_size(&r);
    for (size_t i = 0; i < n; i++)
        r.data[i] = (float)pixels[i];
    *out = r;
    return KN_OK;
}

/* ---- decoding ---- */

/* Checks declared dimensions before anything is allocated. */
static int check_dims(const char *fmt, uint64_t w, uint64_t h, size_t max_pixels, char *e,
                      size_t es)
{
    if (w == 0 || h == 0)
        return kn_seterr(e, es, KN_EINVAL, "%s: zero dimension (%llu x %llu)", fmt,
                         (unsigned long long)w, (unsigned long long)h);
    if (w > INT32_MAX || h > INT32_MAX || w * h > (uint64_t)max_pixels)
        return kn_seterr(e, es, KN_ETOOBIG, "%s: %llu x %llu pixels is over the limit of %zu", fmt,
                         (unsigned long long)w, (unsigned long long)h, max_pixels);
    return KN_OK;
}

#ifdef KILN_HAVE_SPNG
/* Whether the 12-byte IEND chunk (length 0, type, CRC) is there, usually last. */
static int has_iend(const uint8_t *b, size_t len)
{
    static const uint8_t iend[12] = {0, 0, 0, 0, 'I', 'E', 'N', 'D', 0xAE, 0x42, 0x60, 0x82};
    for (size_t i = len >= 12 ? len - 12 : 0; len >= 20 && i >= 8; i--)
        if (b[i + 4] == 'I' && memcmp(b + i, iend, 12) == 0) return 1;
    return 0;
}

static int decode_png(const uint8_t *b, size_t len, size_t maxp, kn_image *out, char *e, size_t es)
{
    spng_ctx *ctx = spng_ctx_new(0);
    uint8_t *buf = NULL;
    kn_image r = {0};
    int rc = KN_OK, sr;
    if (!ctx) return kn_seterr(e, es, KN_ENOMEM, "png: out of memory");
    /* ancillary chunks (text, ICC...) are not ours to keep: cap their memory */
    spng_set_chunk_limits(ctx, (size_t)1 << 20, (size_t)8 << 20);
    spng_set_crc_action(ctx, SPNG_CRC_ERROR, SPNG_CRC_DISCARD);
    if ((sr = spng_set_png_buffer(ctx, b, len)) != 0) {
        rc = kn_seterr(e, es, KN_EINVAL, "png: %s", spng_strerror(sr));
        goto out;
    }
    struct spng_ihdr ih;
    if ((sr = spng_get_ihdr(ctx, &ih)) != 0) {
        rc = kn_seterr(e, es, KN_EINVAL, "png: bad header: %s", spng_strerror(sr));
        goto out;
    }
    if ((rc = check_dims("png", ih.width, ih.height, maxp, e, es)) != KN_OK) goto out;
    /* deflate expands at most ~1032:1, so a file this small cannot hold that
     * many pixels: refuse before allocating for them */
    static const int samples[7] = {1, 0, 3, 1, 2, 0, 4}; /* per colour type */
    uint64_t raw = (uint64_t)ih.height *
                   (1 + ((uint64_t)ih.width * samples[ih.color_type % 7] * ih.bit_depth + 7) / 8);
    if (raw / 1100 > len) {
        rc = kn_seterr(e, es, KN_EINVAL,
                       "png: %zu bytes cannot hold %u x %u pixels (truncated or corrupt)", len,
                       ih.width, ih.height);
        goto out;
    }
    int fmt, flags = 0, c, src_c; /* src_c: channels of the decoded buffer */
    switch (ih.color_type) {
    case SPNG_COLOR_TYPE_GRAYSCALE:
        c = 1;
        fmt = ih.bit_depth <= 8 ? SPNG_FMT_G8 : SPNG_FMT_RGB8;
        src_c = ih.bit_depth <= 8 ? 1 : 3;
        break;
    case SPNG_COLOR_TYPE_GRAYSCALE_ALPHA: /* libspng 0.7 has no GA8 output for it */
        c = 2;
        fmt = SPNG_FMT_RGBA8;
        src_c = 4;
        break;
    case SPNG_COLOR_TYPE_INDEXED: {
        struct spng_trns t;
        int has_trns = spng_get_trns(ctx, &t) == 0;
        c = has_trns ? 4 : 3;
        fmt = has_trns ? SPNG_FMT_RGBA8 : SPNG_FMT_RGB8;
        flags = has_trns ? SPNG_DECODE_TRNS : 0;
        src_c = c;
        break;
    }
    case SPNG_COLOR_TYPE_TRUECOLOR:
        c = 3;
        fmt = SPNG_FMT_RGB8;
        src_c = 3;
        break;
    case SPNG_COLOR_TYPE_TRUECOLOR_ALPHA:
        c = 4;
        fmt = SPNG_FMT_RGBA8;
        src_c = 4;
        break;
    default:
        rc = kn_seterr(e, es, KN_EINVAL, "png: colour type %d", (int)ih.color_type);
        goto out;
    }
    size_t sz;
    if ((sr = spng_decoded_image_size(ctx, fmt, &sz)) != 0) {
        rc = kn_seterr(e, es, KN_EINVAL, "png: %s", spng_strerror(sr));
        goto out;
    }
    if (sz != (size_t)ih.width * ih.height * (size_t)src_c) { /* cannot happen */
        rc = kn_seterr(e, es, KN_ERR, "png: unexpected decoded size %zu", sz);
        goto out;
    }
    if (!(buf = malloc(sz))) {
        rc = kn_seterr(e, es, KN_ENOMEM, "png: out of memory for %zu bytes", sz);
        goto out;
    }
    if ((sr = spng_decode_image(ctx, buf, sz, fmt, flags)) != 0) {
        rc = kn_seterr(e, es, KN_EINVAL, "png: %s", spng_strerror(sr));
        goto out;
    }
    /* the rest of the file up to IEND: a cut or corrupt tail is refused too */
    if ((sr = spng_decode_chunks(ctx)) != 0) {
        rc = kn_seterr(e, es, KN_EINVAL, "png: after the image data: %s", spng_strerror(sr));
        goto out;
    }
    if (!has_iend(b, len)) {
        rc = kn_seterr(e, es, KN_EINVAL, "png: no complete IEND chunk (truncated)");
        goto out;
    }
    if ((rc = img_alloc(&r, (int)ih.width, (int)ih.height, c)) != KN_OK) {
        rc = kn_seterr(e, es, rc, "png: out of memory");
        goto out;
    }
    size_t np = (size_t)r.w * (size_t)r.h;
    if (src_c == c) {
        for (size_t i = 0; i < np * (size_t)c; i++)
            r.data[i] = buf[i];
    } else { /* 16-bit gray (+alpha) decoded as RGB(A)8: keep R (and A) */
        for (size_t i = 0; i < np; i++) {
            r.data[i * (size_t)c] = buf[i * (size_t)src_c];
            if (c == 2) r.data[i * 2 + 1] = buf[i * 4 + 3];
        }
    }
    *out = r;
    r.data = NULL;
out:
    free(buf);
    free(r.data);
    spng_ctx_free(ctx);
    return rc;
}
#endif

#ifdef KILN_HAVE_TURBOJPEG
static int decode_jpeg(const uint8_t *b, size_t len, size_t maxp, kn_image *out, char *e, size_t es)
{
    tjhandle tj = NULL;
    kn_image r = {0};
    uint8_t *buf = NULL;
    int rc = KN_OK;
    if (len > 0xFFFFFFFFul) return kn_seterr(e, es, KN_ETOOBIG, "jpeg: over 4 GiB");
    if (!(tj = tjInitDecompress()))
        return kn_seterr(e, es, KN_ENOMEM, "jpeg: %s", tjGetErrorStr2(NULL));
    /* TurboJPEG 2.1 returns success without setting anything for a
     * tables-only stream (what a cut before the frame header looks like), so
     * the outputs start at zero and a frame must have been seen. */
    int w = 0, h = 0, sub = 0, cs = -1;
    if (tjDecompressHeader3(tj, b, (unsigned long)len, &w, &h, &sub, &cs) != 0) {
        rc = kn_seterr(e, es, KN_EINVAL, "jpeg: bad header: %s", tjGetErrorStr2(tj));
        goto out;
    }
    if (w <= 0 || h <= 0 || cs < 0) {
        rc = kn_seterr(e, es, KN_EINVAL, "jpeg: no frame header (truncated or tables only)");
        goto out;
    }
    if ((rc = check_dims("jpeg", (uint64_t)w, (uint64_t)h, maxp, e, es)) != KN_OK) goto out;
    if (cs == TJCS_CMYK || cs == TJCS_YCCK) {
        rc = kn_seterr(e, es, KN_EUNSUPPORTED, "jpeg: CMYK/YCCK colour space is not supported");
        goto out;
    }
    int c = cs == TJCS_GRAY ? 1 : 3;
    size_t n = (size_t)w * (size_t)h * (size_t)c;
    if (!(buf = malloc(n))) {
        rc = kn_seterr(e, es, KN_ENOMEM, "jpeg: out of memory for %zu bytes", n);
        goto out;
    }
    if (tjDecompress2(tj, b, (unsigned long)len, buf, w, 0, h, c == 1 ? TJPF_GRAY : TJPF_RGB,
                      TJFLAG_STOPONWARNING | TJFLAG_LIMITSCANS) != 0) {
        rc = kn_seterr(e, es, KN_EINVAL, "jpeg: %s", tjGetErrorStr2(tj));
        goto out;
    }
    if ((rc = img_alloc(&r, w, h, c)) != KN_OK) {
        rc = kn_seterr(e, es, rc, "jpeg: out of memory");
        goto out;
    }
    for (size_t i = 0; i < n; i++)
        r.data[i] = buf[i];
    *out = r;
    r.data = NULL;
out:
    free(buf);
    free(r.data);
    if (tj) tjDestroy(tj);
    return rc;
}
#endif

static int pnm_ws(uint8_t c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

/* Reads one header number of a PNM file at *i, skipping blanks and comments. */
static int pnm_num(const uint8_t *b, size_t len, size_t *i, uint64_t *v)
{
    size_t k = *i;
    for (;;) {
        while (k < len && pnm_ws(b[k]))
            k++;
        if (k < len && b[k] == '#') {
            while (k < len && b[k] != '\n' && b[k] != '\r')
                k++;
            continue;
        }
        break;
    }
    if (k >= len || b[k] < '0' || b[k] > '9') return -1;
    uint64_t x = 0;
    while (k < len && b[k] >= '0' && b[k] <= '9') {
        x = x * 10 + (uint64_t)(b[k] - '0');
        if (x > 0xFFFFFFFFu) return -1;
        k++;
    }
    *i = k;
    *v = x;
    return 0;
}

static int decode_pnm(const uint8_t *b, size_t len, size_t maxp, kn_image *out, char *e, size_t es)
{
    int c = b[1] == '5' ? 1 : 3;
    const char *fmt = c == 1 ? "pgm" : "ppm";
    size_t i = 2;
    uint64_t w, h, maxval;
    if (pnm_num(b, len, &i, &w) || pnm_num(b, len, &i, &h) || pnm_num(b, len, &i, &maxval))
        return kn_seterr(e, es, KN_EINVAL, "%s: bad or truncated header", fmt);
    if (i >= len || !pnm_ws(b[i]))
        return kn_seterr(e, es, KN_EINVAL, "%s: no whitespace after maxval", fmt);
    i++;
    if (maxval < 1 || maxval > 65535)
        return kn_seterr(e, es, KN_EINVAL, "%s: maxval %llu is not 1..65535", fmt,
                         (unsigned long long)maxval);
    int rc = check_dims(fmt, w, h, maxp, e, es);
    if (rc != KN_OK) return rc;
    size_t bps = maxval > 255 ? 2 : 1;
    size_t n = (size_t)w * (size_t)h * (size_t)c;
    if (len - i < n * bps)
        return kn_seterr(e, es, KN_EINVAL, "%s: %zu pixel bytes declared, %zu present", fmt,
                         n * bps, len - i);
    kn_image r;
    if ((rc = img_alloc(&r, (int)w, (int)h, c)) != KN_OK)
        return kn_seterr(e, es, rc, "%s: out of memory", fmt);
    const uint8_t *p = b + i;
    if (maxval == 255) {
        for (size_t k = 0; k < n; k++)
            r.data[k] = p[k];
    } else {
        /* v * 255 < 2^24 is exact in a float and the division is rounded
         * once, so maxval gives exactly 255 (v * (255 / maxval) overshot). */
        for (size_t k = 0; k < n; k++) {
            unsigned v = bps == 2 ? (unsigned)p[2 * k] << 8 | p[2 * k + 1] : p[k];
            if (v > maxval) v = (unsigned)maxval;
            r.data[k] = (float)(v * 255u) / (float)maxval;
        }
    }
    *out = r;
    return KN_OK;
}

static int decode_idx(const uint8_t *b, size_t len, size_t maxp, kn_image *out, char *e, size_t es)
{
    kn_idx_header hd;
    char ie[128];
    if (kn_idx_header_parse(b, len, &hd, ie, sizeof(ie)) != KN_OK)
        return kn_seterr(e, es, KN_EINVAL, "idx: %s", ie);
    uint64_t ch = hd.ndim == 3 ? hd.dims[2] : 1;
    if (hd.dtype != KN_IDX_U8 || hd.ndim < 2 || hd.ndim > 3 || ch < 1 || ch > 4)
        return kn_seterr(e, es, KN_EINVAL,
                         "idx: an image entry is u8 rows x cols [x 1..4 channels]");
    int rc = check_dims("idx", hd.dims[1], hd.dims[0], maxp, e, es);
    if (rc != KN_OK) return rc;
    if (hd.data_size != (uint64_t)(len - hd.header_len))
        return kn_seterr(e, es, KN_EINVAL, "idx: %llu pixel bytes declared, %zu present",
                         (unsigned long long)hd.data_size, len - hd.header_len);
    rc = kn_image_from_u8(b + hd.header_len, (int)hd.dims[1], (int)hd.dims[0], (int)ch, out);
    if (rc != KN_OK) return kn_seterr(e, es, rc, "idx: out of memory");
    return KN_OK;
}

int kn_image_decode(const void *bytes, size_t len, size_t max_pixels, kn_image *out, char *errbuf,
                    size_t errsz)
{
    static const uint8_t png_sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
    const uint8_t *b = bytes;
    if (!out) return kn_seterr(errbuf, errsz, KN_EINVAL, "image: no output");
    memset(out, 0, sizeof(*out));
    if (!b || len == 0) return kn_seterr(errbuf, errsz, KN_EINVAL, "image: empty input");
    if (max_pixels == 0) max_pixels = KN_IMAGE_DEFAULT_MAX_PIXELS;
    if (len >= 8 && memcmp(b, png_sig, 8) == 0) {
#ifdef KILN_HAVE_SPNG
        return decode_png(b, len, max_pixels, out, errbuf, errsz);
#else
        return kn_seterr(errbuf, errsz, KN_EUNSUPPORTED, "png: built without libspng");
#endif
    }
    if (len >= 3 && b[0] == 0xFF && b[1] == 0xD8 && b[2] == 0xFF) {
#ifdef KILN_HAVE_TURBOJPEG
        return decode_jpeg(b, len, max_pixels, out, errbuf, errsz);
#else
        return kn_seterr(errbuf, errsz, KN_EUNSUPPORTED, "jpeg: built without TurboJPEG");
#endif
    }
    if (len >= 3 && b[0] == 'P' && (b[1] == '5' || b[1] == '6') && pnm_ws(b[2]))
        return decode_pnm(b, len, max_pixels, out, errbuf, errsz);
    if (len >= 4 && b[0] == 0 && b[1] == 0 && b[2] == KN_IDX_U8 && (b[3] == 2 || b[3] == 3))
        return decode_idx(b, len, max_pixels, out, errbuf, errsz);
    return kn_seterr(errbuf, errsz, KN_EINVAL,
                     "image: unknown format (not PNG, JPEG, binary PGM/PPM or a u8 IDX entry)");
}

/* ---- channels and resizing ---- */

/* Converts one pixel of sc channels to dc channels. */
static void px_convert(const float *s, int sc, float *d, int dc)
{
    float g, r, gr, bl, a;
    if (sc <= 2) {
        g = r = gr = bl = s[0];
        a = sc == 2 ? s[1] : 255.0f;
    } else {
        r = s[0];
        gr = s[1];
        bl = s[2];
        g = 0.299f * r + 0.587f * gr + 0.114f * bl;
        a = sc == 4 ? s[3] : 255.0f;
    }
    switch (dc) {
    case 1:
        d[0] = g;
        break;
    case 2:
        d[0] = g;
        d[1] = a;
        break;
    case 3:
        d[0] = r;
        d[1] = gr;
        d[2] = bl;
        break;
    default:
        d[0] = r;
        d[1] = gr;
        d[2] = bl;
        d[3] = a;
        break;
    }
}

typedef struct {
    int first, n; /* source index of the first tap, number of taps */
    int woff;     /* offset of this output's weights in the weight array */
} taps;

/* Triangle-filter taps mapping `in` samples to `out` samples on pixel centres. */
static int make_taps(int in, int out, taps **tp, float **wp)
{
    double scale = (double)in / out;
    double support = scale > 1.0 ? scale : 1.0; /* filter radius in source pixels */
    int maxn = (int)ceil(support) * 2 + 2;
    taps *t = malloc(sizeof(*t) * (size_t)out);
    float *w = malloc(sizeof(*w) * (size_t)out * (size_t)maxn);
    if (!t || !w) {
        free(t);
        free(w);
        return KN_ENOMEM;
    }
    for (int x = 0; x < out; x++) {
        double center = (x + 0.5) * scale;
        int lo = (int)floor(center - support), hi = (int)ceil(center + support);
        if (lo < 0) lo = 0;
        if (hi > in) hi = in;
        double sum = 0;
        int n = 0;
        float *wx = w + (size_t)x * maxn;
        for (int i = lo; i < hi && n < maxn; i++) {
            double d = fabs((i + 0.5 - center) / support);
            double v = d < 1.0 ? 1.0 - d : 0.0;
            wx[n++] = (float)v;
            sum += v;
        }
        if (sum <= 0) { /* cannot happen for in >= 1, but never divide by 0 */
            int i = (int)center < in ? (int)center : in - 1;
            lo = i;
            n = 1;
            wx[0] = 1;
            sum = 1;
        }
        for (int k = 0; k < n; k++)
            wx[k] = (float)(wx[k] / sum);
        t[x] = (taps){lo, n, x * maxn};
    }
    *tp = t;
    *wp = w;
    return KN_OK;
}

static int resize(const kn_image *in, int w, int h, kn_image *out)
{
    taps *tx = NULL, *ty = NULL;
    float *wx = NULL, *wy = NULL, *mid = NULL;
    kn_image r = {0};
    int c = in->c, rc;
    if ((rc = make_taps(in->w, w, &tx, &wx)) != KN_OK) goto out;
    if ((rc = make_taps(in->h, h, &ty, &wy)) != KN_OK) goto out;
    if (!(mid = malloc(sizeof(float) * (size_t)in->h * (size_t)w * (size_t)c))) {
        rc = KN_ENOMEM;
        goto out;
    }
    if ((rc = img_alloc(&r, w, h, c)) != KN_OK) goto out;
    for (int y = 0; y < in->h; y++) { /* horizontal: (in->h, in->w) -> (in->h, w) */
        const float *row = in->data + (size_t)y * in->w * c;
        float *dst = mid + (size_t)y * w * c;
        for (int x = 0; x < w; x++) {
            const float *wt = wx + tx[x].woff;
            for (int k = 0; k < c; k++) {
                float acc = 0;
                for (int t = 0; t < tx[x].n; t++)
                    acc += wt[t] * row[(size_t)(tx[x].first + t) * c + k];
                dst[(size_t)x * c + k] = acc;
            }
        }
    }
    size_t stride = (size_t)w * c;
    for (int y = 0; y < h; y++) { /* vertical: (in->h, w) -> (h, w) */
        float *dst = r.data + (size_t)y * stride;
        const float *wt = wy + ty[y].woff;
        for (size_t i = 0; i < stride; i++)
            dst[i] = 0;
        for (int t = 0; t < ty[y].n; t++) {
            const float *src = mid + (size_t)(ty[y].first + t) * stride;
            float wv = wt[t];
            for (size_t i = 0; i < stride; i++)
                dst[i] += wv * src[i];
        }
    }
    *out = r;
    r.data = NULL;
out:
    free(tx);
    free(ty);
    free(wx);
    free(wy);
    free(mid);
    free(r.data);
    return rc;
}

int kn_image_convert(const kn_image *in, int w, int h, int c, kn_image *out)
{
    if (!img_valid(in) || !out || w < 1 || h < 1 || c < 1 || c > 4) return KN_EINVAL;
    if (out == in && w == in->w && h == in->h && c == in->c) return KN_OK; /* nothing to do */
    kn_image sized = {0}, r = {0};
    int rc = KN_OK;
    const kn_image *src = in;
    if (w != in->w || h != in->h) {
        if ((rc = resize(in, w, h, &sized)) != KN_OK) return rc;
        src = &sized;
    }
    if ((rc = img_alloc(&r, w, h, c)) != KN_OK) {
        kn_image_free(&sized);
        return rc;
    }
    size_t np = (size_t)w * (size_t)h;
    if (src->c == c) {
        memcpy(r.data, src->data, np * (size_t)c * sizeof(float));
    } else {
        for (size_t i = 0; i < np; i++)
            px_convert(src->data + i * (size_t)src->c, src->c, r.data + i * (size_t)c, c);
    }
    kn_image_free(&sized);
    img_deliver(in, &r, out);
    return KN_OK;
}

int kn_image_crop(const kn_image *in, int x0, int y0, int w, int h, kn_image *out)
{
    if (!img_valid(in) || !out || w < 1 || h < 1) return KN_EINVAL;
    kn_image r;
    int rc = img_alloc(&r, w, h, in->c);
    if (rc != KN_OK) return rc;
    int c = in->c;
    if (x0 < 0 || y0 < 0 || (long)x0 + w > in->w || (long)y0 + h > in->h)
        memset(r.data, 0, img_size(&r) * sizeof(float));
    /* the overlap of [x0, x0+w) x [y0, y0+h) with the input, in input coordinates */
    long xa = x0 > 0 ? x0 : 0, xb = (long)x0 + w < in->w ? (long)x0 + w : in->w;
    long ya = y0 > 0 ? y0 : 0, yb = (long)y0 + h < in->h ? (long)y0 + h : in->h;
    for (long y = ya; y < yb; y++)
        if (xb > xa)
            memcpy(r.data + ((size_t)(y - y0) * w + (size_t)(xa - x0)) * c,
                   in->data + ((size_t)y * in->w + (size_t)xa) * c,
                   (size_t)(xb - xa) * c * sizeof(float));
    img_deliver(in, &r, out);
    return KN_OK;
}

/* ---- deterministic randomness and maths ---- */

typedef struct {
    uint64_t s[4];
} rng;

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* One independent stream per (seed, transform tag). */
static void rng_init(rng *r, uint64_t seed, uint64_t tag)
{
    uint64_t x = seed ^ (tag * 0xD1B54A32D192ED03ull);
    splitmix64(&x);
    for (int i = 0; i < 4; i++)
        r->s[i] = splitmix64(&x);
}

static uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static uint64_t rng_next(rng *r) /* xoshiro256** */
{
    uint64_t *s = r->s;
    uint64_t out = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return out;
}

/* Uniform double in [0, 1), 53 bits, exact. */
static double rng_unit(rng *r)
{
    return (double)(rng_next(r) >> 11) * 0x1.0p-53;
}

/* Uniform in [-a, a]. */
static double rng_sym(rng *r, double a)
{
    return (2.0 * rng_unit(r) - 1.0) * a;
}

/* Integer uniform in [0, n), n >= 1 (bias below 2^-32 for the n used here). */
static int rng_int(rng *r, int n)
{
    return (int)(((rng_next(r) >> 32) * (uint64_t)n) >> 32);
}

/* sin and cos for any angle (radians): quadrant reduction, then Taylor on
 * |r| <= pi/4 to 1e-16. */
static void det_sincos(double x, double *sn, double *cs)
{
    const double half_pi = 1.57079632679489661923;
    double q = floor(x / half_pi + 0.5);
    double r = x - q * half_pi;
    long k = (long)fmod(q, 4.0);
    if (k < 0) k += 4;
    double r2 = r * r, s = 0, c = 0, ts = r, tc = 1;
    for (int n = 1; n <= 21; n += 2) { /* ts = r^n/n!, tc = r^(n-1)/(n-1)! with signs */
        s += ts;
        c += tc;
        ts *= -r2 / ((n + 1) * (n + 2));
        tc *= -r2 / (n * (n + 1));
    }
    switch (k) {
    case 0:
        *sn = s;
        *cs = c;
        break;
    case 1:
        *sn = c;
        *cs = -s;
        break;
    case 2:
        *sn = -s;
        *cs = -c;
        break;
    default:
        *sn = -c;
        *cs = s;
        break;
    }
}

/* Natural log for normal floats x in (0, 1], float precision: exponent split
 * by bit manipulation, then 2 atanh(s) to s^11 (error < 1 ulp-ish, and the
 * same bits everywhere). */
static float det_logf(float x)
{
    uint32_t b;
    memcpy(&b, &x, sizeof(b));
    int e = (int)((b >> 23) & 0xFF) - 126; /* x = m * 2^e, m in [0.5, 1) */
    b = (b & 0x007FFFFFu) | 0x3F000000u;
    float m;
    memcpy(&m, &b, sizeof(m));
    if (m < 0.70710678f) {
        m *= 2.0f;
        e -= 1;
    }
    float s = (m - 1.0f) / (m + 1.0f), z = s * s;
    float p = 1.0f / 11;
    p = 1.0f / 9 + z * p;
    p = 1.0f / 7 + z * p;
    p = 1.0f / 5 + z * p;
    p = 1.0f / 3 + z * p;
    p = 1.0f + z * p;
    return 2.0f * s * p + (float)e * 0.693147182f;
}

static float clamp255(float v)
{
    return v < 0.0f ? 0.0f : v > 255.0f ? 255.0f : v;
}

/* Adds N(0, sd^2) to each of the n values of d, clamped to 0..255. Gaussian
 * pairs by the Marsaglia polar method in float, u and v taking 24 bits each of
 * one 64-bit draw; drawn in blocks so that the log/div/sqrt chains of many
 * pairs overlap (the values are the same as drawing them one by one). */
static void add_noise(rng *r, float *d, size_t n, float sd)
{
    enum { B = 256 };
    float us[B], vs[B], ss[B];
    size_t i = 0;
    while (i < n) {
        size_t want = (n - i + 1) / 2, k = 0;
        if (want > B) want = B;
        while (k < want) {
            uint64_t x = rng_next(r);
            float u = (float)(int32_t)((x >> 40) & 0xFFFFFF) * 0x1.0p-23f - 1.0f; /* [-1, 1) */
            float v = (float)(int32_t)((x >> 8) & 0xFFFFFF) * 0x1.0p-23f - 1.0f;
            float s = u * u + v * v;
            if (s >= 1.0f || s == 0.0f) continue;
            us[k] = u;
            vs[k] = v;
            ss[k] = s;
            k++;
        }
        for (size_t j = 0; j < k; j++, i += 2) {
            float f = sqrtf(-2.0f * det_logf(ss[j]) / ss[j]); /* sqrtf: correctly rounded */
            d[i] = clamp255(d[i] + us[j] * f * sd);
            if (i + 1 < n) d[i + 1] = clamp255(d[i + 1] + vs[j] * f * sd);
        }
    }
}

/* ---- augmentation ---- */

enum { TAG_CROP = 1, TAG_FLIP, TAG_ROTATE, TAG_JITTER, TAG_NOISE };

static void hflip(kn_image *img)
{
    int c = img->c;
    for (int y = 0; y < img->h; y++) {
        float *row = img->data + (size_t)y * img->w * c;
        for (int a = 0, b = img->w - 1; a < b; a++, b--)
            for (int k = 0; k < c; k++) {
                float t = row[(size_t)a * c + k];
                row[(size_t)a * c + k] = row[(size_t)b * c + k];
                row[(size_t)b * c + k] = t;
            }
    }
}

/* Rotates src into dst (same shape) by the angle with cosine cs, sine sn;
 * inverse mapping about the centre, bilinear, outside = 0. */
static void rotate(const kn_image *src, kn_image *dst, float cs, float sn)
{
    int w = src->w, h = src->h, c = src->c;
    float cx = (w - 1) * 0.5f, cy = (h - 1) * 0.5f;
    for (int y = 0; y < h; y++) {
        for (int x = 0; x < w; x++) {
            float dx = x - cx, dy = y - cy;
            float sx = cx + cs * dx - sn * dy, sy = cy + sn * dx + cs * dy;
            float *d = dst->data + ((size_t)y * w + x) * c;
            if (!(sx > -1.0f && sy > -1.0f && sx < (float)w && sy < (float)h)) {
                for (int k = 0; k < c; k++)
                    d[k] = 0;
                continue;
            }
            int x0 = (int)sx, y0 = (int)sy; /* truncation; floor for negatives: */
            x0 -= sx < (float)x0;
            y0 -= sy < (float)y0;
            float ax = sx - (float)x0, ay = sy - (float)y0;
            float w00 = (1 - ax) * (1 - ay), w01 = ax * (1 - ay), w10 = (1 - ax) * ay,
                  w11 = ax * ay;
            if (x0 >= 0 && y0 >= 0 && x0 + 1 < w && y0 + 1 < h) { /* all 4 taps inside */
                const float *s0 = src->data + ((size_t)y0 * w + x0) * c;
                const float *s1 = s0 + (size_t)w * c;
                for (int k = 0; k < c; k++)
                    d[k] = w00 * s0[k] + w01 * s0[c + k] + w10 * s1[k] + w11 * s1[c + k];
                continue;
            }
            float wts[4] = {w00, w01, w10, w11};
            int xs[4] = {x0, x0 + 1, x0, x0 + 1}, ys[4] = {y0, y0, y0 + 1, y0 + 1};
            for (int k = 0; k < c; k++)
                d[k] = 0;
            for (int t = 0; t < 4; t++) {
                if (xs[t] < 0 || ys[t] < 0 || xs[t] >= w || ys[t] >= h || wts[t] == 0.0f) continue;
                const float *s = src->data + ((size_t)ys[t] * w + xs[t]) * c;
                for (int k = 0; k < c; k++)
                    d[k] += wts[t] * s[k];
            }
        }
    }
}

int kn_image_rotate(const kn_image *in, double degrees, kn_image *out)
{
    if (!img_valid(in) || !out || !isfinite(degrees)) return KN_EINVAL;
    kn_image r;
    int rc = img_alloc(&r, in->w, in->h, in->c);
    if (rc != KN_OK) return rc;
    double sn, cs;
    det_sincos(degrees * (3.14159265358979323846 / 180.0), &sn, &cs);
    rotate(in, &r, (float)cs, (float)sn);
    img_deliver(in, &r, out);
    return KN_OK;
}

int kn_image_augment(const kn_image *in, const kn_image_augment_options *o, uint64_t seed,
                     kn_image *out)
{
    if (!img_valid(in) || !o || !out) return KN_EINVAL;
    if ((o->crop && (o->crop_pad < 0 || o->crop_w < 0 || o->crop_h < 0)) ||
        (o->rotate && !(o->max_degrees >= 0)) ||
        (o->jitter && (!(o->brightness >= 0) || !(o->contrast >= 0))) ||
        (o->noise && !(o->noise_std >= 0)))
        return KN_EINVAL;
    kn_image cur = {0};
    int rc;
    rng r;

    /* 1. crop (also the copy of the input that the rest works on) */
    if (o->crop) {
        int cw = o->crop_w ? o->crop_w : in->w, ch = o->crop_h ? o->crop_h : in->h;
        int pad = o->crop_pad;
        /* offsets in the padded image range over [0, in + 2 pad - crop] */
        long rx = (long)in->w + 2L * pad - cw, ry = (long)in->h + 2L * pad - ch;
        if (rx < 0 || ry < 0 || rx >= INT32_MAX || ry >= INT32_MAX) return KN_EINVAL;
        rng_init(&r, seed, TAG_CROP);
        int ox = rng_int(&r, (int)rx + 1), oy = rng_int(&r, (int)ry + 1);
        rc = kn_image_crop(in, ox - pad, oy - pad, cw, ch, &cur);
    } else {
        rc = kn_image_crop(in, 0, 0, in->w, in->h, &cur);
    }
    if (rc != KN_OK) return rc;

    /* 2. flip */
    if (o->hflip) {
        rng_init(&r, seed, TAG_FLIP);
        if (rng_next(&r) >> 63) hflip(&cur);
    }
    /* 3. rotation */
    if (o->rotate) {
        rng_init(&r, seed, TAG_ROTATE);
        if ((rc = kn_image_rotate(&cur, rng_sym(&r, o->max_degrees), &cur)) != KN_OK) goto fail;
    }
    size_t n = img_size(&cur);
    /* 4. brightness / contrast */
    if (o->jitter) {
        rng_init(&r, seed, TAG_JITTER);
        float b = (float)rng_sym(&r, o->brightness);
        float f = (float)(1.0 + rng_sym(&r, o->contrast));
        double sum = 0;
        for (size_t i = 0; i < n; i++)
            sum += cur.data[i];
        float mean = (float)(sum / (double)n);
        for (size_t i = 0; i < n; i++)
            cur.data[i] = clamp255((cur.data[i] - mean) * f + mean + b);
    }
    /* 5. noise */
    if (o->noise && o->noise_std > 0) {
        rng_init(&r, seed, TAG_NOISE);
        add_noise(&r, cur.data, n, o->noise_std);
    }
    img_deliver(in, &cur, out);
    return KN_OK;
fail:
    kn_image_free(&cur);
    return rc;
}

/* x * scale[k] - bias[k] for channel k; inlined with c a constant. */
static inline __attribute__((always_inline)) void
normalize_px(float *d, size_t np, int c, const float *scale, const float *bias)
{
    for (size_t i = 0; i < np; i++)
        for (int k = 0; k < c; k++)
            d[i * (size_t)c + (size_t)k] = d[i * (size_t)c + (size_t)k] * scale[k] - bias[k];
}

void kn_image_normalize(kn_image *img, const float *mean, const float *std)
{
    if (!img_valid(img)) return;
    int c = img->c;
    float scale[4], bias[4];
    for (int k = 0; k < c; k++) {
        float s = std && std[k] > 0 ? std[k] : 1.0f;
        float m = mean ? mean[k] : 0.0f;
        scale[k] = 1.0f / (255.0f * s);
        bias[k] = m / s;
    }
    size_t np = (size_t)img->w * (size_t)img->h;
    switch (c) { /* a constant channel count: the loop vectorizes (8x for gray) */
    case 1:
        normalize_px(img->data, np, 1, scale, bias);
        break;
    case 2:
        normalize_px(img->data, np, 2, scale, bias);
        break;
    case 3:
        normalize_px(img->data, np, 3, scale, bias);
        break;
    default:
        normalize_px(img->data, np, 4, scale, bias);
        break;
    }
}
