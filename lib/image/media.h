/* media.h: recognise images by their magic bytes and check their headers
 * (dimensions, channels, declared sizes against the bytes there, limits
 * against decompression bombs) WITHOUT decoding pixels: preprocess decodes.
 *
 * Formats: PNG (chunk structure and CRCs walked, IHDR checked, IDAT and IEND
 * required), JPEG (marker segments walked up to EOI, SOF checked), binary
 * PGM/PPM (P5/P6: the pixel bytes must be exactly width*height*channels*
 * bytes-per-sample), and single IDX entries (u8 rows x cols [x channels]). */
#ifndef KN_MEDIA_H
#define KN_MEDIA_H

#include <stddef.h>
#include <stdint.h>

typedef enum {
    KN_MEDIA_UNKNOWN = 0,
    KN_MEDIA_PNG,
    KN_MEDIA_JPEG,
    KN_MEDIA_PGM,
    KN_MEDIA_PPM,
    KN_MEDIA_IDX,
} kn_media_type;

typedef struct {
    kn_media_type type;
    uint32_t width, height;
    uint32_t channels;  /* after decoding: 1 gray, 2 gray+alpha, 3 RGB, 4 RGBA */
    uint32_t bit_depth; /* bits per sample as stored (PNG 1..16, JPEG 8/12, PNM 8/16) */
} kn_media_info;

typedef struct {
    uint32_t max_side;   /* largest width or height (default 16384) */
    uint64_t max_pixels; /* largest width*height (default 40,000,000) */
} kn_media_limits;

/* The type by magic bytes alone; KN_MEDIA_UNKNOWN when none matches. */
kn_media_type kn_media_sniff(const void *data, size_t len);

/* Checks the whole buffer as an image. KN_OK with *info filled, or an error
 * code with *reason set to a KN_REASON_* string (static) and errbuf
 * saying what is wrong: unknown_format, truncated, bad_header,
 * too_many_pixels, size_mismatch, unsupported. lim may be NULL (defaults). */
int kn_media_probe(const void *data, size_t len, const kn_media_limits *lim, kn_media_info *info,
                   const char **reason, char *errbuf, size_t errsz);

/* MIME type of a format ("image/png", "image/jpeg", "image/x-portable-graymap",
 * "image/x-portable-pixmap", "application/x-idx"); NULL for unknown. */
const char *kn_media_content_type(kn_media_type t);

/* Short name: "png", "jpeg", "pgm", "ppm", "idx", "unknown". */
const char *kn_media_name(kn_media_type t);

#endif
