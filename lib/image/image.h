/* lib/image/ (uses core): images as data — decoding, resizing, seeded
 * augmentation and normalisation (image.h), header-only format probes that
 * validate untrusted bytes without decoding them (media.h), and the IDX
 * files of MNIST-style datasets (idx.h).
 *
 * image.h: decoding (PNG, JPEG, PGM/PPM, IDX entries), channel conversion and
 * resizing, seeded augmentation and normalization of images held as HWC
 * float32, for preprocess (issue 5, point 5). No global state: thread-safe.
 * PNG needs libspng (KILN_HAVE_SPNG), JPEG TurboJPEG (KILN_HAVE_TURBOJPEG);
 * without them those formats are refused with KN_EUNSUPPORTED.
 *
 * API notes (changes from the issue sketch, all additions):
 *  - max_pixels == 0 in kn_image_decode means the default, 40,000,000
 *    (the same as lib/image/media.c's probe);
 *  - kn_image_augment_options gained crop_w/crop_h (output size of the random
 *    crop; 0 = the input's size), so a crop can be smaller than its input;
 *  - kn_image_crop() (a crop at a given offset, zero fill) and
 *    kn_image_rotate() (by a given angle) are public: the random crop and
 *    rotation of kn_image_augment are exactly these with random parameters;
 *  - kn_image_decode() answers KN_ETOOBIG (not KN_EINVAL) for an image over
 *    max_pixels, so a caller can tell a decompression bomb from bad bytes;
 *  - kn_image_normalize() accepts NULL mean (0) or std (1);
 *  - kn_image_init() zeroes a kn_image (same as `kn_image img = {0}`). */
#ifndef KN_IMAGE_H
#define KN_IMAGE_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    int w, h;    /* pixels; >= 1 in any image a function here returns */
    int c;       /* channels: 1 gray, 2 gray+alpha, 3 RGB, 4 RGBA */
    float *data; /* (h, w, c) row-major, malloc'd; values 0..255 before normalize */
} kn_image;

#define KN_IMAGE_DEFAULT_MAX_PIXELS 40000000u

void kn_image_init(kn_image *img);

/* Releases img->data and zeroes img. Accepts NULL and a zeroed image. */
void kn_image_free(kn_image *img);

/* Decodes len bytes, format found by magic bytes:
 *  - PNG (libspng): gray -> c=1, gray+alpha -> 2, RGB and palette -> 3,
 *    RGBA and palette with tRNS -> 4; 16-bit samples scaled to 0..255
 *    (v * 255 / 65535, rounded by libspng to 8 bits); gamma and colour-key
 *    transparency ignored;
 *  - JPEG (TurboJPEG): grayscale -> c=1, anything else -> RGB c=3 (CMYK is
 *    refused); a warning (e.g. truncated data) is an error;
 *  - binary PGM/PPM (P5/P6), maxval 1..65535: values scaled to 0..255
 *    (v * 255 / maxval), so maxval 255 is exact; bytes after the pixels ignored;
 *  - an IDX entry: magic 00 00 08 02|03, u8 rows x cols [x 1..4 channels],
 *    exactly the declared bytes.
 * The declared width*height is checked against max_pixels (0 = default) and
 * both sides against >= 1 before any pixel buffer is allocated.
 * KN_OK: *out owns a new buffer (free with kn_image_free); *out is written
 * without freeing what it held. KN_EINVAL (bad or truncated data, zero
 * dimensions, unknown format), KN_ETOOBIG (over max_pixels),
 * KN_EUNSUPPORTED (format support not built in, or a JPEG colour space
 * we do not convert), KN_ENOMEM: *out zeroed, errbuf says what is wrong. */
int kn_image_decode(const void *bytes, size_t len, size_t max_pixels, kn_image *out, char *errbuf,
                    size_t errsz);

/* Copies w*h*c u8 pixels (HWC) into a new float image. KN_OK, KN_EINVAL (NULL
 * pixels, w or h < 1, c not 1..4), KN_ENOMEM. Same ownership as decode. */
int kn_image_from_u8(const uint8_t *pixels, int w, int h, int c, kn_image *out);

/* Converts channels and resizes to (w, h, c).
 * Channels: gray -> RGB replicates; RGB -> gray is BT.601 luma
 * 0.299 R + 0.587 G + 0.114 B; alpha is dropped (not composited); a channel
 * count needing alpha (2, 4) gets alpha 255 when the input has none.
 * Resize: separable triangle (bilinear) filter on pixel centres, widened by
 * the scale factor when shrinking (antialiased like PIL's BILINEAR), weights
 * normalized, so a constant image stays constant; same size = a copy.
 * out may be in: then in's buffer is replaced. Otherwise *out is written
 * without freeing what it held. KN_OK, KN_EINVAL, KN_ENOMEM (out untouched). */
int kn_image_convert(const kn_image *in, int w, int h, int c, kn_image *out);

/* Copies the (w, h) window whose top-left corner is (x0, y0) in `in`
 * (offsets may be negative or run past the edges: outside pixels are 0).
 * Same ownership and aliasing rules as kn_image_convert. */
int kn_image_crop(const kn_image *in, int x0, int y0, int w, int h, kn_image *out);

/* Rotates by `degrees` (positive = counter-clockwise as displayed) about the
 * centre ((w-1)/2, (h-1)/2); same shape; bilinear by inverse mapping, pixels
 * from outside the input are 0. Same ownership and aliasing rules as
 * kn_image_convert. Deterministic across machines (no libm sin/cos). */
int kn_image_rotate(const kn_image *in, double degrees, kn_image *out);

typedef struct {
    int crop;           /* bool: random crop after zero padding */
    int crop_pad;       /* pixels of zero padding on every side, >= 0 */
    int crop_w, crop_h; /* size of the crop, pixels; 0 = the input's size */
    int hflip;          /* bool: mirror left-right with p = 0.5 */
    int rotate;         /* bool: rotate about the centre, bilinear, zero fill */
    float max_degrees;  /* angle uniform in [-max, +max]; positive = counter-clockwise */
    int jitter;         /* bool: x' = (x - mean) * f + mean + b, clamped to 0..255 */
    float brightness;   /* b uniform in [-brightness, +brightness], pixel units (0..255) */
    float contrast;     /* f uniform in [1 - contrast, 1 + contrast]; mean over all channels */
    int noise;          /* bool: add N(0, noise_std^2) per value, clamped to 0..255 */
    float noise_std;    /* pixel units (0..255 scale) */
} kn_image_augment_options;

/* Applies, in this order, crop, hflip, rotate, jitter, noise (each when on).
 * Deterministic: the same (input, options, seed) gives the same output bytes
 * on any IEEE-754 machine; the RNG is xoshiro256** seeded by splitmix64 with
 * one independent stream per transform (turning one transform on or off does
 * not change the others' draws), gaussians by the Marsaglia polar method with
 * a portable log, no libm transcendental functions. out may be in (in place).
 * Otherwise *out is written without freeing what it held. KN_OK, KN_EINVAL
 * (bad options: negative pad/sizes/ranges), KN_ENOMEM (out untouched). */
int kn_image_augment(const kn_image *in, const kn_image_augment_options *o, uint64_t seed,
                     kn_image *out);

/* In place: x = (x / 255 - mean[k]) / std[k] for channel k, i.e. values are
 * scaled to 0..1 first (torchvision's ToTensor + Normalize). mean and std hold
 * img->c entries; mean NULL = zeros, std NULL = ones; a std entry <= 0 is
 * taken as 1. Cannot fail. */
void kn_image_normalize(kn_image *img, const float *mean, const float *std);

#endif
