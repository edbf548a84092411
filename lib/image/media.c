/* media.c: header-level validation of PNG, JPEG, PGM/PPM and IDX entries.
 * Walks structure only (chunks, markers, header fields); never inflates or
 * decodes, so a hostile file costs at most one pass over its bytes. */
#include "image/media.h"
#include "image/idx.h"
#include "core/kn.h"
#include "core/reason.h"

#include <stdio.h>
#include <string.h>
#include <zlib.h>

#define DEFAULT_MAX_SIDE   16384u
#define DEFAULT_MAX_PIXELS 40000000ull

static const uint8_t png_sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static uint32_t be16(const uint8_t *p)
{
    return (uint32_t)p[0] << 8 | p[1];
}

static int is_ws(uint8_t c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

kn_media_type kn_media_sniff(const void *data, size_t len)
{
    const uint8_t *b = data;
    if (len >= 8 && memcmp(b, png_sig, 8) == 0) return KN_MEDIA_PNG;
    if (len >= 3 && b[0] == 0xFF && b[1] == 0xD8 && b[2] == 0xFF) return KN_MEDIA_JPEG;
    if (len >= 4 && b[0] == 'P' && (b[1] == '5' || b[1] == '6') && is_ws(b[2])) {
        size_t i = 2;
        while (i < len && is_ws(b[i]))
            i++;
        if (i < len && ((b[i] >= '0' && b[i] <= '9') || b[i] == '#'))
            return b[1] == '5' ? KN_MEDIA_PGM : KN_MEDIA_PPM;
    }
    if (len >= 4 && b[0] == 0 && b[1] == 0 && b[2] == KN_IDX_U8 && (b[3] == 2 || b[3] == 3))
        return KN_MEDIA_IDX;
    return KN_MEDIA_UNKNOWN;
}

const char *kn_media_content_type(kn_media_type t)
{
    switch (t) {
    case KN_MEDIA_PNG:
        return "image/png";
    case KN_MEDIA_JPEG:
        return "image/jpeg";
    case KN_MEDIA_PGM:
        return "image/x-portable-graymap";
    case KN_MEDIA_PPM:
        return "image/x-portable-pixmap";
    case KN_MEDIA_IDX:
        return "application/x-idx";
    default:
        return NULL;
    }
}

const char *kn_media_name(kn_media_type t)
{
    switch (t) {
    case KN_MEDIA_PNG:
        return "png";
    case KN_MEDIA_JPEG:
        return "jpeg";
    case KN_MEDIA_PGM:
        return "pgm";
    case KN_MEDIA_PPM:
        return "ppm";
    case KN_MEDIA_IDX:
        return "idx";
    default:
        return "unknown";
    }
}

typedef struct {
    const char **reason;
    char *errbuf;
    size_t errsz;
} fail_ctx;

#define FAIL(rc, why, ...) (*f->reason = (why), kn_seterr(f->errbuf, f->errsz, (rc), __VA_ARGS__))

static int check_dims(fail_ctx *f, const kn_media_limits *lim, kn_media_info *info)
{
    if (info->width == 0 || info->height == 0)
        return FAIL(KN_ECORRUPT, KN_REASON_BAD_HEADER, "%s: zero width or height",
                    kn_media_name(info->type));
    if (info->width > lim->max_side || info->height > lim->max_side ||
        (uint64_t)info->width * info->height > lim->max_pixels)
        return FAIL(KN_ETOOBIG, KN_REASON_TOO_MANY_PIXELS,
                    "%s: %ux%u is over the limits (side <= %u, pixels <= %llu)",
                    kn_media_name(info->type), info->width, info->height, lim->max_side,
                    (unsigned long long)lim->max_pixels);
    return KN_OK;
}

static int png_probe(fail_ctx *f, const uint8_t *b, size_t len, const kn_media_limits *lim,
                     kn_media_info *info)
{
    size_t pos = 8;
    int seen_ihdr = 0, seen_idat = 0, seen_plte = 0, color = 0;
    for (;;) {
        if (len - pos < 12)
            return FAIL(KN_ECORRUPT, KN_REASON_TRUNCATED,
                        "png: ends at byte %zu without an IEND chunk", len);
        uint32_t clen = be32(b + pos);
        const uint8_t *type = b + pos + 4;
        if (clen > 0x7FFFFFFFu)
            return FAIL(KN_ECORRUPT, KN_REASON_BAD_HEADER, "png: chunk length %u", clen);
        if ((uint64_t)clen + 12 > len - pos)
            return FAIL(KN_ECORRUPT, KN_REASON_TRUNCATED,
                        "png: chunk %.4s at byte %zu declares %u bytes, only %zu remain", type, pos,
                        clen, len - pos - 12);
        uint32_t crc = (uint32_t)crc32(crc32(0L, Z_NULL, 0), type, clen + 4);
        if (crc != be32(type + 4 + clen))
            return FAIL(KN_ECORRUPT, KN_REASON_BAD_HEADER,
                        "png: CRC mismatch in chunk %.4s at byte %zu", type, pos);
        const uint8_t *d = type + 4;
        if (!seen_ihdr) {
            if (memcmp(type, "IHDR", 4) != 0 || clen != 13)
                return FAIL(KN_ECORRUPT, KN_REASON_BAD_HEADER,
                            "png: the first chunk is not a 13-byte IHDR");
            seen_ihdr = 1;
            info->width = be32(d);
            info->height = be32(d + 4);
            info->bit_depth = d[8];
            color = d[9];
            int depth = d[8], ok;
            switch (color) {
            case 0:
                ok = depth == 1 || depth == 2 || depth == 4 || depth == 8 || depth == 16;
                info->channels = 1;
                break;
            case 2:
                ok = depth == 8 || depth == 16;
                info->channels = 3;
                break;
            case 3:
                ok = depth == 1 || depth == 2 || depth == 4 || depth == 8;
                info->channels = 3;
                break;
            case 4:
                ok = depth == 8 || depth == 16;
                info->channels = 2;
                break;
            case 6:
                ok = depth == 8 || depth == 16;
                info->channels = 4;
                break;
            default:
                ok = 0;
            }
            if (!ok || d[10] != 0 || d[11] != 0 || d[12] > 1)
                return FAIL(KN_ECORRUPT, KN_REASON_BAD_HEADER,
                            "png: invalid IHDR (color type %d, bit depth %d, compression %d, "
                            "filter %d, interlace %d)",
                            color, depth, d[10], d[11], d[12]);
            if (info->width > 0x7FFFFFFFu || info->height > 0x7FFFFFFFu)
                return FAIL(KN_ECORRUPT, KN_REASON_BAD_HEADER, "png: dimension over 2^31-1");
            int rc = check_dims(f, lim, info);
            if (rc) return rc;
        } else if (memcmp(type, "PLTE", 4) == 0) {
            seen_plte = 1;
        } else if (memcmp(type, "IDAT", 4) == 0) {
            seen_idat = 1;
        } else if (memcmp(type, "IEND", 4) == 0) {
            if (!seen_idat)
                return FAIL(KN_ECORRUPT, KN_REASON_BAD_HEADER, "png: no IDAT chunk");
            if (color == 3 && !seen_plte)
                return FAIL(KN_ECORRUPT, KN_REASON_BAD_HEADER,
                            "png: palette image without a PLTE chunk");
            return KN_OK;
        }
        pos += 12 + (size_t)clen;
    }
}

static int jpeg_probe(fail_ctx *f, const uint8_t *b, size_t len, const kn_media_limits *lim,
                      kn_media_info *info)
{
    size_t pos = 2;
    int seen_sof = 0, seen_sos = 0;
    while (pos < len) {
        if (b[pos] != 0xFF)
            return FAIL(KN_ECORRUPT, KN_REASON_BAD_HEADER,
                        "jpeg: expected a marker at byte %zu", pos);
        while (pos < len && b[pos] == 0xFF)
            pos++; /* fill bytes */
        if (pos >= len) break;
        uint8_t m = b[pos++];
        if (m == 0xD9) { /* EOI */
            if (!seen_sof || !seen_sos)
                return FAIL(KN_ECORRUPT, KN_REASON_BAD_HEADER,
                            "jpeg: EOI before a frame header and a scan");
            return KN_OK;
        }
        if ((m >= 0xD0 && m <= 0xD7) || m == 0x01) continue; /* no length */
        if (m == 0xD8 || m == 0x00)
            return FAIL(KN_ECORRUPT, KN_REASON_BAD_HEADER, "jpeg: marker %02X at byte %zu",
                        m, pos - 1);
        if (len - pos < 2) break;
        uint32_t seglen = be16(b + pos);
        if (seglen < 2)
            return FAIL(KN_ECORRUPT, KN_REASON_BAD_HEADER, "jpeg: segment %02X length %u", m,
                        seglen);
        if (seglen > len - pos) break;
        const uint8_t *d = b + pos + 2;
        if (m >= 0xC0 && m <= 0xCF && m != 0xC4 && m != 0xC8 && m != 0xCC) { /* SOFn */
            if (seen_sof)
                return FAIL(KN_ECORRUPT, KN_REASON_BAD_HEADER, "jpeg: two frame headers");
            if (seglen < 8)
                return FAIL(KN_ECORRUPT, KN_REASON_BAD_HEADER, "jpeg: short frame header");
            seen_sof = 1;
            info->bit_depth = d[0];
            info->height = be16(d + 1);
            info->width = be16(d + 3);
            info->channels = d[5];
            if (seglen != 8 + 3 * (uint32_t)d[5] || !(d[5] == 1 || d[5] == 3 || d[5] == 4) ||
                !(d[0] == 8 || d[0] == 12))
                return FAIL(KN_ECORRUPT, KN_REASON_BAD_HEADER,
                            "jpeg: invalid frame header (%u components, precision %u)", d[5], d[0]);
            if (info->height == 0)
                return FAIL(KN_EUNSUPPORTED, KN_REASON_UNSUPPORTED,
                            "jpeg: height defined by a DNL marker");
            int rc = check_dims(f, lim, info);
            if (rc) return rc;
        }
        pos += seglen;
        if (m == 0xDA) { /* SOS: entropy-coded data up to the next real marker */
            if (!seen_sof)
                return FAIL(KN_ECORRUPT, KN_REASON_BAD_HEADER, "jpeg: scan before frame");
            seen_sos = 1;
            for (;;) {
                const uint8_t *ff = pos < len ? memchr(b + pos, 0xFF, len - pos) : NULL;
                if (!ff || (size_t)(ff - b) + 1 >= len) {
                    pos = len;
                    break;
                }
                pos = (size_t)(ff - b);
                uint8_t n = b[pos + 1];
                if (n == 0x00 || (n >= 0xD0 && n <= 0xD7)) {
                    pos += 2;
                    continue;
                }
                if (n == 0xFF) { /* fill byte before a marker */
                    pos++;
                    continue;
                }
                break; /* a marker: the outer loop reads it */
            }
        }
    }
    return FAIL(KN_ECORRUPT, KN_REASON_TRUNCATED, "jpeg: ends at byte %zu without EOI", len);
}

/* Reads a PNM header number; skips whitespace and comments before it. */
static int pnm_number(const uint8_t *b, size_t len, size_t *pos, uint32_t *out)
{
    size_t i = *pos;
    for (;;) {
        while (i < len && is_ws(b[i]))
            i++;
        if (i < len && b[i] == '#') {
            while (i < len && b[i] != '\n' && b[i] != '\r')
                i++;
            continue;
        }
        break;
    }
    uint64_t v = 0;
    size_t start = i;
    while (i < len && b[i] >= '0' && b[i] <= '9') {
        v = v * 10 + (uint64_t)(b[i] - '0');
        if (v > 0xFFFFFFFFu) return -1;
        i++;
    }
    if (i == start || i >= len || !is_ws(b[i])) return -1;
    *out = (uint32_t)v;
    *pos = i;
    return 0;
}

static int pnm_probe(fail_ctx *f, const uint8_t *b, size_t len, const kn_media_limits *lim,
                     kn_media_info *info)
{
    size_t pos = 2;
    uint32_t maxval;
    if (pnm_number(b, len, &pos, &info->width) || pnm_number(b, len, &pos, &info->height) ||
        pnm_number(b, len, &pos, &maxval))
        return FAIL(KN_ECORRUPT,
                    len < 64 ? KN_REASON_TRUNCATED : KN_REASON_BAD_HEADER,
                    "%s: cannot read width, height and maxval", kn_media_name(info->type));
    pos++; /* the single whitespace byte before the raster */
    if (maxval == 0 || maxval > 65535)
        return FAIL(KN_ECORRUPT, KN_REASON_BAD_HEADER, "%s: maxval %u (1..65535)",
                    kn_media_name(info->type), maxval);
    info->channels = info->type == KN_MEDIA_PGM ? 1 : 3;
    info->bit_depth = maxval > 255 ? 16 : 8;
    int rc = check_dims(f, lim, info);
    if (rc) return rc;
    uint64_t want = (uint64_t)info->width * info->height * info->channels * (info->bit_depth / 8);
    uint64_t have = len - pos;
    if (have < want)
        return FAIL(KN_ECORRUPT, KN_REASON_TRUNCATED,
                    "%s: %ux%u needs %llu pixel bytes, %llu present", kn_media_name(info->type),
                    info->width, info->height, (unsigned long long)want, (unsigned long long)have);
    if (have > want)
        return FAIL(KN_ECORRUPT, KN_REASON_SIZE_MISMATCH,
                    "%s: %ux%u needs %llu pixel bytes, %llu present", kn_media_name(info->type),
                    info->width, info->height, (unsigned long long)want, (unsigned long long)have);
    return KN_OK;
}

static int idx_probe(fail_ctx *f, const uint8_t *b, size_t len, const kn_media_limits *lim,
                     kn_media_info *info)
{
    kn_idx_header h;
    char e[200];
    int rc = kn_idx_header_parse(b, len, &h, e, sizeof(e));
    if (rc == KN_EINVAL) return FAIL(KN_ECORRUPT, KN_REASON_TRUNCATED, "%s", e);
    if (rc) return FAIL(KN_ECORRUPT, KN_REASON_BAD_HEADER, "%s", e);
    if (h.dtype != KN_IDX_U8 || h.ndim < 2 || h.ndim > 3 ||
        (h.ndim == 3 && (h.dims[2] < 1 || h.dims[2] > 4)))
        return FAIL(KN_EUNSUPPORTED, KN_REASON_UNSUPPORTED,
                    "idx: an image entry is u8 rows x cols [x 1..4 channels]; this one has "
                    "dtype 0x%02x and %d dimensions (a whole IDX dataset? use `import`)",
                    h.dtype, h.ndim);
    info->height = h.dims[0];
    info->width = h.dims[1];
    info->channels = h.ndim == 3 ? h.dims[2] : 1;
    info->bit_depth = 8;
    rc = check_dims(f, lim, info);
    if (rc) return rc;
    uint64_t have = len - h.header_len, want = (uint64_t)h.dims[0] * h.item_size;
    if (have != want)
        return FAIL(KN_ECORRUPT,
                    have < want ? KN_REASON_TRUNCATED : KN_REASON_SIZE_MISMATCH,
                    "idx: header declares %llu data bytes, %llu present", (unsigned long long)want,
                    (unsigned long long)have);
    return KN_OK;
}

int kn_media_probe(const void *data, size_t len, const kn_media_limits *lim, kn_media_info *info,
                   const char **reason, char *errbuf, size_t errsz)
{
    static const char *ignored;
    kn_media_limits def = {DEFAULT_MAX_SIDE, DEFAULT_MAX_PIXELS};
    kn_media_limits l = lim ? *lim : def;
    if (!l.max_side) l.max_side = def.max_side;
    if (!l.max_pixels) l.max_pixels = def.max_pixels;
    fail_ctx fc = {reason ? reason : &ignored, errbuf, errsz}, *f = &fc;
    *f->reason = NULL;
    memset(info, 0, sizeof(*info));
    info->type = kn_media_sniff(data, len);
    switch (info->type) {
    case KN_MEDIA_PNG:
        return png_probe(f, data, len, &l, info);
    case KN_MEDIA_JPEG:
        return jpeg_probe(f, data, len, &l, info);
    case KN_MEDIA_PGM:
    case KN_MEDIA_PPM:
        return pnm_probe(f, data, len, &l, info);
    case KN_MEDIA_IDX:
        return idx_probe(f, data, len, &l, info);
    default:
        return FAIL(KN_EUNSUPPORTED, KN_REASON_UNKNOWN_FORMAT,
                    "no known image signature (PNG, JPEG, PGM/PPM, IDX)");
    }
}
