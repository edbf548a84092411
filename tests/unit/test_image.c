/* Unit tests for lib/image: decoding of PNG/JPEG made here with libspng and
 * TurboJPEG, PGM/PPM and IDX; hostile inputs (every truncation, bombs, zero
 * dimensions, garbage); convert/resize, crop, rotate, augmentation
 * determinism and each transform's known answer; normalization. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>

#include <cmocka.h>

#include "image/image.h"
#include "core/kn.h"

#include <spng.h>
#include <turbojpeg.h>

/* ---- fixtures ---- */

/* A deterministic gradient: distinct along x, y and channel. (h, w, c) u8. */
static uint8_t *gradient(int w, int h, int c)
{
    uint8_t *p = malloc((size_t)w * h * c);
    assert_non_null(p);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            for (int k = 0; k < c; k++)
                p[((size_t)y * w + x) * c + k] =
                    (uint8_t)((x * 255 / (w > 1 ? w - 1 : 1) + k * 60 + y * 3) % 256);
    return p;
}

static void assert_image_u8(const kn_image *img, const uint8_t *px, int w, int h, int c, float tol)
{
    assert_int_equal(img->w, w);
    assert_int_equal(img->h, h);
    assert_int_equal(img->c, c);
    size_t n = (size_t)w * h * c;
    for (size_t i = 0; i < n; i++)
        if (fabsf(img->data[i] - px[i]) > tol)
            fail_msg("value %zu: %g, expected %d (tol %g)", i, img->data[i], px[i], tol);
}

static uint32_t crc32_bytes(const uint8_t *p, size_t n)
{
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++)
            c = (c >> 1) ^ (0xEDB88320u & (0u - (c & 1)));
    }
    return ~c;
}

static void put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

/* Signature + IHDR only, with a correct CRC. */
static size_t png_header_only(uint8_t *b, uint32_t w, uint32_t h)
{
    static const uint8_t sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
    memcpy(b, sig, 8);
    put32(b + 8, 13);
    memcpy(b + 12, "IHDR", 4);
    put32(b + 16, w);
    put32(b + 20, h);
    b[24] = 8; /* depth */
    b[25] = 2; /* RGB */
    b[26] = b[27] = b[28] = 0;
    put32(b + 29, crc32_bytes(b + 12, 17));
    return 33;
}

/* Encodes (h, w) pixels of a colour type / depth; caller frees. */
static void *png_encode(const void *px, size_t pxlen, int w, int h, int color, int depth,
                        size_t *len)
{
    spng_ctx *ctx = spng_ctx_new(SPNG_CTX_ENCODER);
    assert_non_null(ctx);
    spng_set_option(ctx, SPNG_ENCODE_TO_BUFFER, 1);
    struct spng_ihdr ih = {(uint32_t)w, (uint32_t)h, (uint8_t)depth, (uint8_t)color, 0, 0, 0};
    assert_int_equal(spng_set_ihdr(ctx, &ih), 0);
    assert_int_equal(spng_encode_image(ctx, px, pxlen, SPNG_FMT_PNG, SPNG_ENCODE_FINALIZE), 0);
    int err = 0;
    void *out = spng_get_png_buffer(ctx, len, &err);
    assert_int_equal(err, 0);
    assert_non_null(out);
    spng_ctx_free(ctx);
    return out;
}

static uint8_t *jpeg_encode(const uint8_t *px, int w, int h, int c, int quality, size_t *len)
{
    tjhandle tj = tjInitCompress();
    assert_non_null(tj);
    unsigned char *out = NULL;
    unsigned long n = 0;
    assert_int_equal(tjCompress2(tj, px, w, 0, h, c == 1 ? TJPF_GRAY : TJPF_RGB, &out, &n,
                                 c == 1 ? TJSAMP_GRAY : TJSAMP_444, quality, TJFLAG_ACCURATEDCT),
                     0);
    tjDestroy(tj);
    uint8_t *copy = malloc(n);
    assert_non_null(copy);
    memcpy(copy, out, n);
    tjFree(out);
    *len = n;
    return copy;
}

/* Decoding must fail cleanly: the expected code, a message, a zeroed image. */
static void expect_refused(const void *b, size_t len, size_t maxp, int want_rc)
{
    kn_image img;
    memset(&img, 0xAB, sizeof(img));
    char err[256] = "";
    int rc = kn_image_decode(b, len, maxp, &img, err, sizeof(err));
    if (rc != want_rc)
        fail_msg("rc %d (%s), expected %d; message: %s", rc, kn_strerror(rc), want_rc, err);
    assert_true(strlen(err) > 0);
    assert_null(img.data);
    assert_int_equal(img.w, 0);
}

/* ---- decoding ---- */

static void png_roundtrip(void **state)
{
    (void)state;
    const int w = 37, h = 23;
    struct {
        int color, c, spng_c; /* PNG colour type, channels out, channels in the encoded data */
    } cases[] = {{0, 1, 1}, {2, 3, 3}, {4, 2, 2}, {6, 4, 4}};
    for (size_t t = 0; t < KN_ARRAY_LEN(cases); t++) {
        uint8_t *px = gradient(w, h, cases[t].c);
        size_t len;
        void *png = png_encode(px, (size_t)w * h * cases[t].c, w, h, cases[t].color, 8, &len);
        kn_image img = {0};
        char err[128] = "";
        int rc = kn_image_decode(png, len, 0, &img, err, sizeof(err));
        if (rc != KN_OK) fail_msg("colour type %d: %s", cases[t].color, err);
        assert_image_u8(&img, px, w, h, cases[t].c, 0);
        kn_image_free(&img);
        kn_image_free(&img); /* twice: zeroed, harmless */
        free(png);
        free(px);
    }
    /* 16-bit gray: v * 257 decodes to v */
    uint8_t *px = gradient(w, h, 1);
    uint8_t *px16 = malloc((size_t)w * h * 2);
    for (int i = 0; i < w * h; i++)
        px16[2 * i] = px16[2 * i + 1] = px[i]; /* big-endian v*257 */
    size_t len;
    void *png = png_encode(px16, (size_t)w * h * 2, w, h, 0, 16, &len);
    kn_image img = {0};
    char err[128];
    assert_int_equal(kn_image_decode(png, len, 0, &img, err, sizeof(err)), KN_OK);
    assert_image_u8(&img, px, w, h, 1, 0);
    kn_image_free(&img);
    free(png);
    free(px16);
    free(px);
}

static void jpeg_roundtrip(void **state)
{
    (void)state;
    const int w = 64, h = 48;
    for (int c = 1; c <= 3; c += 2) {
        uint8_t *px = gradient(w, h, c);
        /* a smooth image: keep the channel offsets small to avoid the wrap edges */
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++)
                for (int k = 0; k < c; k++)
                    px[((size_t)y * w + x) * c + k] = (uint8_t)(x * 2 + y + k * 20);
        size_t len;
        uint8_t *jpg = jpeg_encode(px, w, h, c, 95, &len);
        kn_image img = {0};
        char err[128];
        assert_int_equal(kn_image_decode(jpg, len, 0, &img, err, sizeof(err)), KN_OK);
        double sum = 0;
        for (size_t i = 0; i < (size_t)w * h * c; i++)
            sum += fabs(img.data[i] - px[i]);
        assert_true(sum / (w * h * c) < 2.0); /* mean abs error, quality 95 */
        assert_image_u8(&img, px, w, h, c, 12);
        kn_image_free(&img);
        free(jpg);
        free(px);
    }
}

static void pnm_and_idx(void **state)
{
    (void)state;
    kn_image img = {0};
    char err[128];
    /* P5 with a comment, maxval 255: exact */
    const char pgm[] = "P5\n# made by hand\n3 2\n255\n\x00\x10\x20\x30\x40\xFF";
    assert_int_equal(kn_image_decode(pgm, sizeof(pgm) - 1, 0, &img, err, sizeof(err)), KN_OK);
    const uint8_t want[] = {0, 16, 32, 48, 64, 255};
    assert_image_u8(&img, want, 3, 2, 1, 0);
    kn_image_free(&img);
    /* maxval 15 is scaled to 0..255 */
    const char pgm15[] = "P5 2 1 15\n\x00\x0F";
    assert_int_equal(kn_image_decode(pgm15, sizeof(pgm15) - 1, 0, &img, err, sizeof(err)), KN_OK);
    assert_true(img.data[0] == 0.0f && fabsf(img.data[1] - 255.0f) < 1e-4f);
    kn_image_free(&img);
    /* 16-bit samples, big-endian */
    const char pgm16[] = "P5 2 1 65535\n\x00\x00\xFF\xFF";
    assert_int_equal(kn_image_decode(pgm16, sizeof(pgm16) - 1, 0, &img, err, sizeof(err)), KN_OK);
    assert_true(img.data[0] == 0.0f && fabsf(img.data[1] - 255.0f) < 1e-3f);
    kn_image_free(&img);
    /* P6 */
    const char ppm[] = "P6\n2 1\n255\n\x01\x02\x03\x04\x05\x06";
    assert_int_equal(kn_image_decode(ppm, sizeof(ppm) - 1, 0, &img, err, sizeof(err)), KN_OK);
    const uint8_t want6[] = {1, 2, 3, 4, 5, 6};
    assert_image_u8(&img, want6, 2, 1, 3, 0);
    kn_image_free(&img);
    /* IDX entry: 3 rows x 4 cols u8; and rows x cols x 3 */
    uint8_t idx[4 + 8 + 12] = {0, 0, 8, 2, 0, 0, 0, 3, 0, 0, 0, 4};
    for (int i = 0; i < 12; i++)
        idx[12 + i] = (uint8_t)(i * 20);
    assert_int_equal(kn_image_decode(idx, sizeof(idx), 0, &img, err, sizeof(err)), KN_OK);
    assert_image_u8(&img, idx + 12, 4, 3, 1, 0);
    kn_image_free(&img);
    uint8_t idx3[4 + 12 + 6] = {0, 0, 8, 3, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, 1, 2, 3, 4, 5, 6};
    assert_int_equal(kn_image_decode(idx3, sizeof(idx3), 0, &img, err, sizeof(err)), KN_OK);
    assert_image_u8(&img, idx3 + 16, 2, 1, 3, 0);
    kn_image_free(&img);
    /* bad ones */
    expect_refused(pgm, sizeof(pgm) - 2, 0, KN_EINVAL);     /* one pixel short */
    expect_refused("P5 0 5 255\n", 11, 0, KN_EINVAL);       /* zero width */
    expect_refused("P5 3 2 0\n\x00", 10, 0, KN_EINVAL);     /* maxval 0 */
    expect_refused("P5 3 2 70000\n\x00", 14, 0, KN_EINVAL); /* maxval too big */
    expect_refused("P5 4294967295 4294967295 255\n", 29, 0, KN_ETOOBIG);
    expect_refused("P5 3 2", 6, 0, KN_EINVAL); /* truncated header */
    expect_refused("P5 x 2 255\n", 11, 0, KN_EINVAL);
    expect_refused(idx, sizeof(idx) - 1, 0, KN_EINVAL); /* short data */
    uint8_t idx0[12] = {0, 0, 8, 2, 0, 0, 0, 0, 0, 0, 0, 4};
    expect_refused(idx0, sizeof(idx0), 0, KN_EINVAL);          /* zero rows */
    uint8_t idxbig[12] = {0, 0, 8, 2, 0, 1, 0, 0, 0, 1, 0, 0}; /* 65536 x 65536 */
    expect_refused(idxbig, sizeof(idxbig), 0, KN_ETOOBIG);
}

static void hostile_inputs(void **state)
{
    (void)state;
    /* garbage and near-misses of every magic */
    uint8_t junk[512];
    uint64_t x = 42;
    for (size_t i = 0; i < sizeof(junk); i++) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        junk[i] = (uint8_t)(x >> 56);
    }
    expect_refused(junk, sizeof(junk), 0, KN_EINVAL);
    expect_refused(junk, 0, 0, KN_EINVAL);
    expect_refused(NULL, 0, 0, KN_EINVAL);
    expect_refused("P5", 2, 0, KN_EINVAL);
    expect_refused("P3 1 1 255\n0 0 0", 16, 0, KN_EINVAL); /* ASCII PNM: not supported */
    expect_refused("\x89PNG", 4, 0, KN_EINVAL);
    expect_refused("\xFF\xD8\xFF", 3, 0, KN_EINVAL);
    expect_refused("\x00\x00\x08\x02", 4, 0, KN_EINVAL);

    /* PNG declaring 100000 x 100000 (no pixel data at all): refused from the
     * header, before anything is decoded or allocated */
    uint8_t hdr[64];
    size_t hl = png_header_only(hdr, 100000, 100000);
    expect_refused(hdr, hl, 0, KN_ETOOBIG);
    expect_refused(hdr, hl, 20000000000ull, KN_EINVAL); /* under the limit: then no IDAT */
    hl = png_header_only(hdr, 0, 10);                   /* zero width */
    expect_refused(hdr, hl, 0, KN_EINVAL);
    hl = png_header_only(hdr, 16, 16);
    hdr[30] ^= 1; /* bad IHDR CRC */
    expect_refused(hdr, hl, 0, KN_EINVAL);

    /* every truncation of a real PNG, and a flipped bit in its data */
    uint8_t *px = gradient(19, 11, 3);
    size_t len;
    uint8_t *png = png_encode(px, 19 * 11 * 3, 19, 11, 2, 8, &len);
    for (size_t cut = 0; cut < len; cut++) {
        uint8_t *t = malloc(cut ? cut : 1); /* exact size: ASan sees any over-read */
        memcpy(t, png, cut);
        kn_image img = {0};
        char err[128] = "";
        int rc = kn_image_decode(t, cut, 0, &img, err, sizeof(err));
        if (rc == KN_OK) fail_msg("PNG cut at %zu of %zu decoded", cut, len);
        assert_true(rc == KN_EINVAL && strlen(err) > 0 && img.data == NULL);
        free(t);
    }
    png[len - 20] ^= 0x40; /* inside IDAT: CRC (and maybe zlib) error */
    expect_refused(png, len, 0, KN_EINVAL);
    free(png);
    free(px);

    uint8_t *gp = gradient(40, 30, 3);
    size_t jl;
    uint8_t *jpg = jpeg_encode(gp, 40, 30, 3, 90, &jl);
    for (size_t cut = 0; cut < jl; cut += (cut < 700 ? 1 : 13)) {
        uint8_t *t = malloc(cut ? cut : 1);
        memcpy(t, jpg, cut);
        kn_image img = {0};
        char err[128] = "";
        int rc = kn_image_decode(t, cut, 0, &img, err, sizeof(err));
        if (rc == KN_OK) fail_msg("JPEG cut at %zu of %zu decoded", cut, jl);
        assert_true(rc == KN_EINVAL && strlen(err) > 0 && img.data == NULL);
        free(t);
    }
    /* patch the SOF to declare 60000 x 60000: refused from the header */
    for (size_t i = 2; i + 9 < jl; i++) {
        if (jpg[i] == 0xFF && (jpg[i + 1] == 0xC0 || jpg[i + 1] == 0xC1 || jpg[i + 1] == 0xC2)) {
            jpg[i + 5] = 0xEA; /* height 0xEA60 = 60000 */
            jpg[i + 6] = 0x60;
            jpg[i + 7] = 0xEA;
            jpg[i + 8] = 0x60;
            break;
        }
    }
    expect_refused(jpg, jl, 0, KN_ETOOBIG);
    free(jpg);
    free(gp);
}

/* ---- convert, resize, crop, rotate ---- */

static kn_image make(int w, int h, int c, float (*f)(int x, int y, int k))
{
    kn_image img = {0};
    uint8_t *tmp = calloc((size_t)w * h * c, 1);
    assert_int_equal(kn_image_from_u8(tmp, w, h, c, &img), KN_OK);
    free(tmp);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            for (int k = 0; k < c; k++)
                img.data[((size_t)y * w + x) * c + k] = f(x, y, k);
    return img;
}

static float at(const kn_image *img, int x, int y, int k)
{
    return img->data[((size_t)y * img->w + x) * img->c + k];
}

static float f_grad(int x, int y, int k)
{
    return (float)(x * 7 + y * 2 + k * 30);
}
static float f_xramp(int x, int y, int k)
{
    (void)y;
    (void)k;
    return (float)x;
}
static float f_const(int x, int y, int k)
{
    (void)x;
    (void)y;
    (void)k;
    return 77.0f;
}
static float f_rgb(int x, int y, int k)
{
    (void)x;
    (void)y;
    return k == 0 ? 100.0f : k == 1 ? 50.0f : k == 2 ? 200.0f : 9.0f;
}
static float f_mid(int x, int y, int k)
{
    (void)x;
    (void)y;
    (void)k;
    return 128.0f;
}

static void from_u8_and_convert(void **state)
{
    (void)state;
    kn_image img = {0}, out = {0};
    uint8_t px[6] = {0, 1, 2, 253, 254, 255};
    assert_int_equal(kn_image_from_u8(px, 3, 2, 1, &img), KN_OK);
    assert_image_u8(&img, px, 3, 2, 1, 0);
    kn_image_free(&img);
    assert_int_equal(kn_image_from_u8(NULL, 3, 2, 1, &img), KN_EINVAL);
    assert_int_equal(kn_image_from_u8(px, 0, 2, 1, &img), KN_EINVAL);
    assert_int_equal(kn_image_from_u8(px, 3, 2, 5, &img), KN_EINVAL);

    /* RGB -> gray: BT.601 luma */
    img = make(4, 3, 3, f_rgb);
    assert_int_equal(kn_image_convert(&img, 4, 3, 1, &out), KN_OK);
    assert_int_equal(out.c, 1);
    for (int i = 0; i < 12; i++)
        assert_float_equal(out.data[i], 0.299 * 100 + 0.587 * 50 + 0.114 * 200, 1e-3);
    kn_image_free(&out);
    /* gray -> RGB replicates, and back */
    kn_image g = make(4, 3, 1, f_grad);
    assert_int_equal(kn_image_convert(&g, 4, 3, 3, &out), KN_OK);
    for (int y = 0; y < 3; y++)
        for (int x = 0; x < 4; x++)
            for (int k = 0; k < 3; k++)
                assert_true(at(&out, x, y, k) == at(&g, x, y, 0));
    assert_int_equal(kn_image_convert(&out, 4, 3, 1, &out), KN_OK); /* in place */
    for (int i = 0; i < 12; i++)
        assert_float_equal(out.data[i], g.data[i], 1e-3);
    kn_image_free(&out);
    /* RGBA -> RGB drops alpha; RGB -> RGBA adds 255 */
    kn_image rgba = make(2, 2, 4, f_rgb);
    assert_int_equal(kn_image_convert(&rgba, 2, 2, 3, &out), KN_OK);
    for (int i = 0; i < 4; i++)
        assert_true(out.data[3 * i] == 100 && out.data[3 * i + 1] == 50 &&
                    out.data[3 * i + 2] == 200);
    assert_int_equal(kn_image_convert(&out, 2, 2, 4, &out), KN_OK);
    for (int i = 0; i < 4; i++)
        assert_true(out.data[4 * i + 3] == 255);
    kn_image_free(&out);
    kn_image_free(&rgba);
    /* same shape: an exact copy */
    assert_int_equal(kn_image_convert(&g, 4, 3, 1, &out), KN_OK);
    assert_memory_equal(out.data, g.data, 12 * sizeof(float));
    kn_image_free(&out);
    kn_image_free(&g);
    kn_image_free(&img);
    /* bad arguments */
    g = make(4, 3, 1, f_grad);
    assert_int_equal(kn_image_convert(&g, 0, 3, 1, &out), KN_EINVAL);
    assert_int_equal(kn_image_convert(&g, 4, 3, 5, &out), KN_EINVAL);
    assert_int_equal(kn_image_convert(NULL, 4, 3, 1, &out), KN_EINVAL);
    kn_image_free(&g);
}

static void resize(void **state)
{
    (void)state;
    kn_image c = make(37, 23, 3, f_const), out = {0};
    int sizes[][2] = {{224, 224}, {5, 7}, {1, 1}, {37, 1}, {100, 3}};
    for (size_t s = 0; s < KN_ARRAY_LEN(sizes); s++) {
        assert_int_equal(kn_image_convert(&c, sizes[s][0], sizes[s][1], 3, &out), KN_OK);
        assert_int_equal(out.w, sizes[s][0]);
        assert_int_equal(out.h, sizes[s][1]);
        for (size_t i = 0; i < (size_t)out.w * out.h * 3; i++)
            assert_float_equal(out.data[i], 77.0, 1e-3);
        kn_image_free(&out);
    }
    kn_image_free(&c);
    /* halving a ramp x: the triangle filter of width 2 on pixel centres gives
     * 2x + 0.5 away from the edges */
    kn_image r = make(32, 4, 1, f_xramp);
    assert_int_equal(kn_image_convert(&r, 16, 2, 1, &out), KN_OK);
    for (int x = 1; x < 15; x++)
        assert_float_equal(at(&out, x, 0, 0), 2 * x + 0.5, 1e-4);
    kn_image_free(&out);
    /* doubling it: bilinear on pixel centres, x/2 - 0.25 in the interior */
    assert_int_equal(kn_image_convert(&r, 64, 8, 1, &out), KN_OK);
    for (int x = 1; x < 63; x++)
        assert_float_equal(at(&out, x, 3, 0), x / 2.0 - 0.25, 1e-4);
    kn_image_free(&out);
    kn_image_free(&r);
}

static void crop_and_rotate(void **state)
{
    (void)state;
    kn_image g = make(10, 8, 2, f_grad), out = {0};
    /* an exact sub-window */
    assert_int_equal(kn_image_crop(&g, 3, 2, 4, 5, &out), KN_OK);
    assert_int_equal(out.w, 4);
    assert_int_equal(out.h, 5);
    for (int y = 0; y < 5; y++)
        for (int x = 0; x < 4; x++)
            for (int k = 0; k < 2; k++)
                assert_true(at(&out, x, y, k) == at(&g, x + 3, y + 2, k));
    kn_image_free(&out);
    /* partly outside: zero fill */
    assert_int_equal(kn_image_crop(&g, -2, 6, 4, 4, &out), KN_OK);
    for (int y = 0; y < 4; y++)
        for (int x = 0; x < 4; x++) {
            int sx = x - 2, sy = y + 6;
            float want = (sx >= 0 && sy < 8) ? at(&g, sx, sy, 1) : 0.0f;
            assert_true(at(&out, x, y, 1) == want);
        }
    kn_image_free(&out);
    /* entirely outside */
    assert_int_equal(kn_image_crop(&g, 100, 100, 3, 3, &out), KN_OK);
    for (int i = 0; i < 18; i++)
        assert_true(out.data[i] == 0.0f);
    kn_image_free(&out);
    kn_image_free(&g);

    /* rotation by 0: identity, exactly */
    kn_image s = make(16, 16, 3, f_grad);
    assert_int_equal(kn_image_rotate(&s, 0.0, &out), KN_OK);
    assert_memory_equal(out.data, s.data, 16 * 16 * 3 * sizeof(float));
    kn_image_free(&out);
    /* by 90 (counter-clockwise) of a square: out(x, y) = in(w-1-y, x) */
    assert_int_equal(kn_image_rotate(&s, 90.0, &out), KN_OK);
    for (int y = 0; y < 16; y++)
        for (int x = 0; x < 16; x++)
            for (int k = 0; k < 3; k++)
                assert_float_equal(at(&out, x, y, k), at(&s, 15 - y, x, k), 1e-3);
    kn_image_free(&out);
    /* by 180: both mirrors; by 360: identity within rounding */
    assert_int_equal(kn_image_rotate(&s, -180.0, &out), KN_OK);
    for (int y = 0; y < 16; y++)
        for (int x = 0; x < 16; x++)
            assert_float_equal(at(&out, x, y, 0), at(&s, 15 - x, 15 - y, 0), 1e-3);
    kn_image_free(&out);
    /* 45 degrees: the corners come from outside (zero), the centre stays */
    kn_image m = make(17, 17, 1, f_mid);
    assert_int_equal(kn_image_rotate(&m, 45.0, &out), KN_OK);
    assert_true(at(&out, 0, 0, 0) == 0.0f && at(&out, 16, 16, 0) == 0.0f);
    assert_float_equal(at(&out, 8, 8, 0), 128.0, 1e-3);
    kn_image_free(&out);
    kn_image_free(&m);
    kn_image_free(&s);
}

/* ---- augmentation ---- */

static int same(const kn_image *a, const kn_image *b)
{
    return a->w == b->w && a->h == b->h && a->c == b->c &&
           memcmp(a->data, b->data, (size_t)a->w * a->h * a->c * sizeof(float)) == 0;
}

static kn_image_augment_options all_on(void)
{
    kn_image_augment_options o = {0};
    o.crop = 1;
    o.crop_pad = 4;
    o.hflip = 1;
    o.rotate = 1;
    o.max_degrees = 15;
    o.jitter = 1;
    o.brightness = 20;
    o.contrast = 0.3f;
    o.noise = 1;
    o.noise_std = 5;
    return o;
}

static void augment_determinism(void **state)
{
    (void)state;
    kn_image g = make(32, 32, 3, f_grad), a = {0}, b = {0};
    kn_image_augment_options o = all_on();
    assert_int_equal(kn_image_augment(&g, &o, 12345, &a), KN_OK);
    assert_int_equal(kn_image_augment(&g, &o, 12345, &b), KN_OK);
    assert_true(same(&a, &b));
    kn_image_free(&b);
    assert_int_equal(kn_image_augment(&g, &o, 12346, &b), KN_OK);
    assert_false(same(&a, &b));
    kn_image_free(&b);
    /* in place gives the same bytes */
    kn_image c = make(32, 32, 3, f_grad);
    assert_int_equal(kn_image_augment(&c, &o, 12345, &c), KN_OK);
    assert_true(same(&a, &c));
    kn_image_free(&c);
    /* the input is untouched when out is elsewhere */
    kn_image g2 = make(32, 32, 3, f_grad);
    assert_true(same(&g, &g2));
    kn_image_free(&g2);
    /* everything off: a copy */
    kn_image_augment_options off = {0};
    assert_int_equal(kn_image_augment(&g, &off, 7, &b), KN_OK);
    assert_true(same(&g, &b));
    kn_image_free(&b);
    /* a fixed fingerprint: catches a change of the RNG or of any transform
     * (the same bytes on every machine is the contract; see image.h) */
    uint64_t h = 1469598103934665603ull;
    const uint8_t *p = (const uint8_t *)a.data;
    for (size_t i = 0; i < 32 * 32 * 3 * sizeof(float); i++)
        h = (h ^ p[i]) * 1099511628211ull;
    printf("augment fingerprint (seed 12345): %016llx\n", (unsigned long long)h);
    /* the same on every IEEE-754 machine and compiler setting (checked at -O0,
     * -O3, -march=native with FMA); a change here means a build that contracts
     * FMAs or a changed transform: regenerated shards would differ */
    assert_true(h == 0x9c9b969d82c1f990ull);
    kn_image_free(&a);
    /* bad options */
    o.crop_pad = -1;
    assert_int_equal(kn_image_augment(&g, &o, 1, &b), KN_EINVAL);
    o = all_on();
    o.crop_w = 100; /* larger than input + 2 pad */
    assert_int_equal(kn_image_augment(&g, &o, 1, &b), KN_EINVAL);
    kn_image_free(&g);
}

static void augment_flip(void **state)
{
    (void)state;
    kn_image g = make(9, 5, 3, f_grad), out = {0};
    kn_image_augment_options o = {0};
    o.hflip = 1;
    int flipped = 0, kept = 0;
    for (uint64_t seed = 0; seed < 64; seed++) {
        assert_int_equal(kn_image_augment(&g, &o, seed, &out), KN_OK);
        if (same(&out, &g)) {
            kept++;
        } else { /* the mirrored gradient, exactly */
            for (int y = 0; y < 5; y++)
                for (int x = 0; x < 9; x++)
                    for (int k = 0; k < 3; k++)
                        assert_true(at(&out, x, y, k) == at(&g, 8 - x, y, k));
            flipped++;
        }
        kn_image_free(&out);
    }
    assert_true(flipped > 16 && kept > 16); /* p = 0.5 */
    kn_image_free(&g);
}

static void augment_crop(void **state)
{
    (void)state;
    kn_image g = make(12, 10, 1, f_grad), out = {0}, win = {0};
    kn_image_augment_options o = {0};
    o.crop = 1;
    /* pad 0, same size: identity */
    assert_int_equal(kn_image_augment(&g, &o, 5, &out), KN_OK);
    assert_true(same(&out, &g));
    kn_image_free(&out);
    /* pad 0, a smaller window, pad 3 with the same size: always one of the
     * candidate windows kn_image_crop gives, and several of them are used */
    int cfg[][3] = {{0, 5, 4}, {3, 0, 0}};
    for (size_t t = 0; t < 2; t++) {
        o.crop_pad = cfg[t][0];
        o.crop_w = cfg[t][1];
        o.crop_h = cfg[t][2];
        int cw = o.crop_w ? o.crop_w : 12, ch = o.crop_h ? o.crop_h : 10, pad = o.crop_pad;
        int seen[32][32] = {{0}};
        for (uint64_t seed = 0; seed < 200; seed++) {
            assert_int_equal(kn_image_augment(&g, &o, seed, &out), KN_OK);
            assert_int_equal(out.w, cw);
            assert_int_equal(out.h, ch);
            int found = 0;
            for (int oy = 0; oy <= 10 + 2 * pad - ch && !found; oy++)
                for (int ox = 0; ox <= 12 + 2 * pad - cw && !found; ox++) {
                    assert_int_equal(kn_image_crop(&g, ox - pad, oy - pad, cw, ch, &win), KN_OK);
                    if (same(&out, &win)) {
                        found = 1;
                        seen[oy][ox] = 1;
                    }
                    kn_image_free(&win);
                }
            assert_true(found);
            kn_image_free(&out);
        }
        int distinct = 0;
        for (int i = 0; i < 32; i++)
            for (int j = 0; j < 32; j++)
                distinct += seen[i][j];
        assert_true(distinct > 10);
    }
    kn_image_free(&g);
}

static void augment_rotate(void **state)
{
    (void)state;
    kn_image g = make(20, 20, 1, f_grad), out = {0};
    kn_image_augment_options o = {0};
    o.rotate = 1;
    o.max_degrees = 0; /* angle 0: identity */
    assert_int_equal(kn_image_augment(&g, &o, 99, &out), KN_OK);
    assert_true(same(&out, &g));
    kn_image_free(&out);
    o.max_degrees = 10; /* a small angle: the output is kn_image_rotate by some |a| <= 10 */
    assert_int_equal(kn_image_augment(&g, &o, 99, &out), KN_OK);
    assert_false(same(&out, &g));
    double best = 1e30;
    for (int tenth = -100; tenth <= 100; tenth++) {
        kn_image r = {0};
        assert_int_equal(kn_image_rotate(&g, tenth / 10.0, &r), KN_OK);
        double d = 0;
        for (int i = 0; i < 400; i++)
            d = fmax(d, fabs(r.data[i] - out.data[i]));
        best = fmin(best, d);
        kn_image_free(&r);
    }
    assert_true(best < 2.0); /* within 0.05 degree of a sampled angle */
    kn_image_free(&out);
    kn_image_free(&g);
}

static void augment_jitter(void **state)
{
    (void)state;
    kn_image m = make(16, 16, 3, f_grad), out = {0};
    /* brightness only: out = in + b for one b in [-20, 20] */
    kn_image_augment_options o = {0};
    o.jitter = 1;
    o.brightness = 20;
    double bs[8];
    for (uint64_t seed = 0; seed < 8; seed++) {
        assert_int_equal(kn_image_augment(&m, &o, seed, &out), KN_OK);
        int i0 = 3 * (16 * 8 + 8); /* a mid-range pixel, never clamped */
        float b = out.data[i0] - m.data[i0];
        assert_true(b >= -20.0f && b <= 20.0f);
        for (int i = 0; i < 16 * 16 * 3; i++) {
            float want = m.data[i] + b;
            want = want < 0 ? 0 : want > 255 ? 255 : want;
            if (m.data[i] > 20 && m.data[i] < 235) assert_float_equal(out.data[i], want, 1e-3);
        }
        bs[seed] = b;
        kn_image_free(&out);
    }
    assert_true(bs[0] != bs[1] || bs[1] != bs[2]);
    /* contrast only: out - mean = f (in - mean), f in [0.7, 1.3] */
    o.brightness = 0;
    o.contrast = 0.3f;
    kn_image c = make(16, 16, 1, f_xramp); /* 0..15, mean 7.5: no clamping for f <= 1.3 */
    for (int i = 0; i < 256; i++)
        c.data[i] += 100;
    assert_int_equal(kn_image_augment(&c, &o, 3, &out), KN_OK);
    float f = (out.data[15] - out.data[0]) / 15.0f;
    assert_true(f >= 0.7f && f <= 1.3f);
    for (int i = 0; i < 256; i++)
        assert_float_equal(out.data[i] - 107.5f, f * (c.data[i] - 107.5f), 1e-3);
    kn_image_free(&out);
    kn_image_free(&c);
    kn_image_free(&m);
}

static void augment_noise(void **state)
{
    (void)state;
    const int w = 512, h = 512;
    kn_image m = make(w, h, 1, f_mid), out = {0};
    kn_image_augment_options o = {0};
    o.noise = 1;
    o.noise_std = 10;
    assert_int_equal(kn_image_augment(&m, &o, 2024, &out), KN_OK);
    double s = 0, s2 = 0;
    size_t n = (size_t)w * h;
    for (size_t i = 0; i < n; i++) {
        double d = out.data[i] - 128.0;
        s += d;
        s2 += d * d;
    }
    double mean = s / n, sd = sqrt(s2 / n - mean * mean);
    printf("noise: mean %.4f std %.4f (want 0, 10)\n", mean, sd);
    assert_true(fabs(mean) < 0.1);      /* 3 sigma of the mean is 0.06 */
    assert_true(fabs(sd - 10.0) < 0.1); /* 1 %; the std of the estimate is 0.014 */
    kn_image_free(&out);
    kn_image_free(&m);
}

static void normalize(void **state)
{
    (void)state;
    uint8_t px[6] = {0, 255, 51, 255, 0, 102};
    kn_image img = {0};
    assert_int_equal(kn_image_from_u8(px, 2, 1, 3, &img), KN_OK);
    const float mean[3] = {0.5f, 0.25f, 0.0f}, std[3] = {0.25f, 0.5f, 2.0f};
    kn_image_normalize(&img, mean, std);
    const float want[6] = {(0 - 0.5f) / 0.25f, (1 - 0.25f) / 0.5f, 0.2f / 2.0f,
                           (1 - 0.5f) / 0.25f, (0 - 0.25f) / 0.5f, 0.4f / 2.0f};
    for (int i = 0; i < 6; i++)
        assert_float_equal(img.data[i], want[i], 1e-6);
    kn_image_free(&img);
    /* NULL mean/std: plain scaling to 0..1 */
    assert_int_equal(kn_image_from_u8(px, 6, 1, 1, &img), KN_OK);
    kn_image_normalize(&img, NULL, NULL);
    for (int i = 0; i < 6; i++)
        assert_float_equal(img.data[i], px[i] / 255.0, 1e-6);
    kn_image_free(&img);
    kn_image_normalize(NULL, NULL, NULL); /* harmless */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(png_roundtrip),       cmocka_unit_test(jpeg_roundtrip),
        cmocka_unit_test(pnm_and_idx),         cmocka_unit_test(hostile_inputs),
        cmocka_unit_test(from_u8_and_convert), cmocka_unit_test(resize),
        cmocka_unit_test(crop_and_rotate),     cmocka_unit_test(augment_determinism),
        cmocka_unit_test(augment_flip),        cmocka_unit_test(augment_crop),
        cmocka_unit_test(augment_rotate),      cmocka_unit_test(augment_jitter),
        cmocka_unit_test(augment_noise),       cmocka_unit_test(normalize),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
