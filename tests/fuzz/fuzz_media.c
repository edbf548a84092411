/* fuzz_media.c: kn_media_probe (header checks without decoding) on any
 * bytes: an accepted image has the type its magic says, sides within the
 * limits and 1..4 channels; a refusal names one of the documented reasons. */
#include "fuzz.h"

#include "core/kn.h"
#include "image/media.h"

#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const reasons[] = {"unknown_format",  "truncated",     "bad_header",
                                          "too_many_pixels", "size_mismatch", "unsupported"};
    kn_media_limits lim = {.max_side = 4096, .max_pixels = 1u << 22};
    kn_media_info info;
    const char *reason = NULL;
    char err[256];
    int rc = kn_media_probe(data, size, &lim, &info, &reason, err, sizeof(err));
    kn_media_type sniffed = kn_media_sniff(data, size);
    if (rc != KN_OK) {
        int known = 0;
        FUZZ_CHECK(reason != NULL);
        for (size_t i = 0; i < sizeof(reasons) / sizeof(reasons[0]); i++)
            known |= strcmp(reason, reasons[i]) == 0;
        FUZZ_CHECK(known);
        FUZZ_CHECK(strnlen(err, sizeof(err)) < sizeof(err));
        return 0;
    }
    FUZZ_CHECK(info.type != KN_MEDIA_UNKNOWN && info.type == sniffed);
    FUZZ_CHECK(info.width >= 1 && info.height >= 1);
    FUZZ_CHECK(info.width <= lim.max_side && info.height <= lim.max_side);
    FUZZ_CHECK((uint64_t)info.width * info.height <= lim.max_pixels);
    FUZZ_CHECK(info.channels >= 1 && info.channels <= 4);
    FUZZ_CHECK(kn_media_content_type(info.type) != NULL);
    return 0;
}
