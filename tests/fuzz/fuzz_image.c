/* fuzz_image.c: kn_image_decode (PNG, JPEG, PGM/PPM, IDX entries) on any
 * bytes, then a resize of what decoded: an image is w, h >= 1, c 1..4, within
 * max_pixels, values 0..255; a refusal leaves the image zeroed. */
#include "fuzz.h"

#include "core/kn.h"
#include "image/image.h"

#include <math.h>

#define MAX_PIXELS (1u << 22) /* keeps each run fast; the check is the same at 40M */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    kn_image img, small;
    char err[256];
    int rc = kn_image_decode(data, size, MAX_PIXELS, &img, err, sizeof(err));
    if (rc != KN_OK) {
        FUZZ_CHECK(img.data == NULL && img.w == 0 && img.h == 0);
        FUZZ_CHECK(rc == KN_EINVAL || rc == KN_ETOOBIG || rc == KN_EUNSUPPORTED || rc == KN_ENOMEM);
        return 0;
    }
    FUZZ_CHECK(img.w >= 1 && img.h >= 1 && img.c >= 1 && img.c <= 4 && img.data);
    FUZZ_CHECK((uint64_t)img.w * (uint64_t)img.h <= MAX_PIXELS);
    size_t n = (size_t)img.w * (size_t)img.h * (size_t)img.c;
    for (size_t i = 0; i < n; i++)
        FUZZ_CHECK(img.data[i] >= 0.0f && img.data[i] <= 255.0f);
    kn_image_init(&small);
    FUZZ_CHECK(kn_image_convert(&img, 7, 5, 3, &small) == KN_OK);
    for (size_t i = 0; i < (size_t)7 * 5 * 3; i++)
        FUZZ_CHECK(isfinite(small.data[i]));
    kn_image_free(&small);
    kn_image_free(&img);
    return 0;
}
