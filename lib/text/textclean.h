/* textclean.h: cleaning and quality filtering of UTF-8 text for preprocess
 * (issue 5, point 1). Pure function of (options, bytes): no state, thread-safe.
 * Normalization needs utf8proc (KILN_HAVE_UTF8PROC); without it NFC/NFKC are
 * refused with KN_EUNSUPPORTED.
 *
 * API notes (changes from the issue sketch):
 *  - the reason list is a function, kn_textclean_reason_list(), because
 *    headers hold no variables (STYLE.md);
 *  - kn_textclean() returns KN_ENOMEM (with *reason NULL) when allocation fails
 *    and KN_EUNSUPPORTED when NFC/NFKC is asked for in a build without utf8proc.
 *
 * Pipeline, in this order (see docs/preprocess-modules.md for why):
 *  1. UTF-8 validation of the input (overlongs, surrogates, > U+10FFFF refused);
 *  2. strip_markup: tags and comments removed, <script>/<style> contents dropped,
 *     block tags (p, br, div, li, h1..h6, tr, ...) become "\n", td/th a space,
 *     entities decoded (named common ones, &#N; and &#xH;; invalid -> U+FFFD);
 *  3. strip_control: C0/C1 controls and DEL removed except \t and \n; CR LF and
 *     lone CR become \n first (also when only collapse_whitespace is on);
 *     collapse_whitespace also removes U+200B, U+2060 and U+FEFF here and turns
 *     \v, \f, U+0085, U+2028, U+2029 into \n;
 *  4. Unicode normalization (NFC or NFKC);
 *  5. collapse_whitespace: tabs and Unicode spaces (category Zs, NBSP included)
 *     -> ' ', runs of ' ' -> one, spaces at line starts/ends removed, 3 or more
 *     newlines -> 2, leading/trailing whitespace of the text trimmed;
 *  6. filters, on the cleaned text (counts in code points).
 *
 * Idempotent: clean(clean(x)) == clean(x) for the same options, except where
 * strip_markup decodes escaped markup ("&lt;b&gt;" -> "<b>", "&amp;amp;" ->
 * "&amp;") or NFKC folds full-width brackets into a tag ("＜b＞" -> "<b>"):
 * a second pass then sees markup that the first pass produced. */
#ifndef KN_TEXTCLEAN_H
#define KN_TEXTCLEAN_H

#include <stddef.h>

typedef enum { KN_TEXT_NORM_NONE, KN_TEXT_NORM_NFC, KN_TEXT_NORM_NFKC } kn_text_norm;

typedef struct {
    kn_text_norm normalize;  /* utf8proc NFC / NFKC, or none */
    int strip_markup;        /* bool: HTML/XML tags out, entities decoded, script/style dropped */
    int collapse_whitespace; /* bool: see step 5 above */
    int strip_control;       /* bool: C0/C1 controls except \n and \t removed */
    size_t min_chars;        /* code points after cleaning; 0 = no limit */
    size_t max_chars;        /* code points after cleaning; 0 = no limit */
    double min_letter_ratio; /* letters (categories L*, M*) / non-whitespace code points; 0 = off */
    double max_dup_line_ratio; /* repeated non-empty lines / non-empty lines, in [0, 1]; 1 = off */
    double max_char_repeat_ratio; /* longest run of one code point / code points; 1 = off */
} kn_textclean_options;

/* Defaults: NFC, strip_markup off, collapse_whitespace and strip_control on,
 * every filter off (only empty text is refused). Cannot fail. */
void kn_textclean_defaults(kn_textclean_options *o);

/* Cleans len bytes of in (need not be NUL-terminated; may hold NUL bytes).
 * KN_OK: *out is malloc'd (caller frees) with *out_len bytes plus a NUL;
 *        *reason is set to NULL.
 * KN_EINVAL: refused; *out is NULL and *reason a static snake_case code from
 *        kn_textclean_reason_list(): "bad_utf8", "empty", "too_short",
 *        "too_long", "low_letter_ratio", "repeated_lines", "repeated_chars".
 *        A NULL o, out or out_len (or NULL in with len > 0) is also KN_EINVAL,
 *        with *reason NULL.
 * KN_ENOMEM / KN_EUNSUPPORTED: *out NULL, *reason NULL.
 * reason may be NULL when the caller does not want it. */
int kn_textclean(const kn_textclean_options *o, const char *in, size_t len, char **out,
                 size_t *out_len, const char **reason);

/* Every reason code kn_textclean() can give, NULL-terminated, static; for
 * pre-registering per-reason metrics. */
const char *const *kn_textclean_reason_list(void);

#endif
