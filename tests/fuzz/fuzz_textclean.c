/* fuzz_textclean.c: kn_textclean on any bytes, with options taken from the
 * first two bytes (normalization, markup, whitespace, controls, filters).
 * Accepted text is valid UTF-8 of out_len bytes plus a NUL; a refusal gives
 * a documented reason; and cleaning is idempotent where textclean.h says it
 * is (no markup stripping, no NFKC). */
#include "fuzz.h"

#include "core/kn.h"
#include "text/textclean.h"

#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2) return 0;
    kn_textclean_options o;
    kn_textclean_defaults(&o);
    uint8_t a = data[0], f = data[1];
    o.normalize = (kn_text_norm)(a % 3);
    o.strip_markup = a >> 2 & 1;
    o.collapse_whitespace = a >> 3 & 1;
    o.strip_control = a >> 4 & 1;
    if (f & 1) o.min_chars = f >> 4;
    if (f & 2) o.max_chars = 1 + (f >> 2) * 8;
    if (f & 4) o.min_letter_ratio = 0.5;
    if (f & 8) o.max_dup_line_ratio = 0.3;
    if (f & 16) o.max_char_repeat_ratio = 0.4;
    const char *in = (const char *)data + 2;
    size_t len = size - 2;

    char *out = NULL, *again = NULL;
    size_t out_len = 0, again_len = 0;
    const char *reason = NULL;
    int rc = kn_textclean(&o, in, len, &out, &out_len, &reason);
    if (rc == KN_EUNSUPPORTED) return 0; /* NFC/NFKC in a build without utf8proc */
    if (rc != KN_OK) {
        FUZZ_CHECK(rc == KN_EINVAL && out == NULL && reason != NULL);
        int known = 0;
        for (const char *const *r = kn_textclean_reason_list(); *r; r++)
            known |= strcmp(*r, reason) == 0;
        FUZZ_CHECK(known);
        return 0;
    }
    FUZZ_CHECK(out != NULL && reason == NULL && out[out_len] == '\0');
    FUZZ_CHECK(fuzz_utf8_valid((const unsigned char *)out, out_len));
    if (!o.strip_markup && o.normalize != KN_TEXT_NORM_NFKC) {
        rc = kn_textclean(&o, out, out_len, &again, &again_len, &reason);
        FUZZ_CHECK(rc == KN_OK);
        FUZZ_CHECK(again_len == out_len && memcmp(again, out, out_len) == 0);
        free(again);
    }
    free(out);
    return 0;
}
