/* Unit tests for lib/textclean: each stage and filter on crafted inputs, the
 * refusal reasons, and idempotence (clean(clean(x)) == clean(x)). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/kn.h"
#include "text/textclean.h"

/* Cleans a NUL-terminated string; returns the result (caller frees) or NULL
 * with *why set. */
static char *clean(const kn_textclean_options *o, const char *s, const char **why)
{
    char *out = NULL;
    size_t n = 0;
    const char *r = "unset";
    int rc = kn_textclean(o, s, strlen(s), &out, &n, &r);
    if (why) *why = r;
    if (rc != KN_OK) {
        assert_int_equal(rc, KN_EINVAL);
        assert_null(out);
        assert_non_null(r);
        return NULL;
    }
    assert_null(r);
    assert_non_null(out);
    assert_int_equal(strlen(out), n); /* NUL-terminated, no inner NUL here */
    return out;
}

static void expect_clean(const kn_textclean_options *o, const char *in, const char *want)
{
    const char *why;
    char *got = clean(o, in, &why);
    if (!got) fail_msg("refused (%s): \"%s\"", why, in);
    assert_string_equal(got, want);
    free(got);
}

static void expect_refused(const kn_textclean_options *o, const char *in, const char *reason)
{
    const char *why;
    char *got = clean(o, in, &why);
    if (got) fail_msg("accepted as \"%s\", expected %s", got, reason);
    assert_string_equal(why, reason);
}

static void defaults_and_reasons(void **state)
{
    (void)state;
    kn_textclean_options o;
    kn_textclean_defaults(&o);
    assert_int_equal(o.normalize, KN_TEXT_NORM_NFC);
    assert_true(o.collapse_whitespace && o.strip_control && !o.strip_markup);
    assert_true(o.max_dup_line_ratio == 1.0 && o.max_char_repeat_ratio == 1.0);
    const char *const *r = kn_textclean_reason_list();
    const char *want[] = {"bad_utf8",         "empty",          "too_short",     "too_long",
                          "low_letter_ratio", "repeated_lines", "repeated_chars"};
    size_t n = 0;
    while (r[n])
        n++;
    assert_int_equal(n, KN_ARRAY_LEN(want));
    for (size_t i = 0; i < n; i++)
        assert_string_equal(r[i], want[i]);
    /* bad arguments */
    char *out = (char *)1;
    size_t len = 1;
    assert_int_equal(kn_textclean(NULL, "x", 1, &out, &len, NULL), KN_EINVAL);
    assert_null(out);
    assert_int_equal(kn_textclean(&o, NULL, 3, &out, &len, NULL), KN_EINVAL);
    /* reason may be NULL */
    assert_int_equal(kn_textclean(&o, "ok", 2, &out, &len, NULL), KN_OK);
    assert_string_equal(out, "ok");
    free(out);
}

static void markup(void **state)
{
    (void)state;
    kn_textclean_options o;
    kn_textclean_defaults(&o);
    o.strip_markup = 1;
    expect_clean(&o,
                 "<!DOCTYPE html><html><head><title>T</title>"
                 "<style>body { color: red; }</style>"
                 "<script type=\"text/javascript\">var x = '<b>' < 3;</script></head>"
                 "<body><p class=\"a>b\">Fish &amp; chips &lt;3 &#39;ok&#39; &#x263A; "
                 "&eacute;t&eacute;</p><!-- hidden <p>comment</p> -->"
                 "<p>x<b>bold</b>y &quot;q&quot;&nbsp;z</p><SCRIPT>evil()</SCRIPT>"
                 "<br/>end</body></html>",
                 "T\n\nFish & chips <3 'ok' \u263A \u00E9t\u00E9\n\nxboldy \"q\" z\n\nend");
    /* not markup: a lone '<', a '<' before a digit or space, unknown entities, no ';' */
    expect_clean(&o, "a < b and 3<4, R&D, AT&T; &bogus; &#xZZ; &Eacute &EACUTE;",
                 "a < b and 3<4, R&D, AT&T; &bogus; &#xZZ; &Eacute &EACUTE;");
    /* an unterminated tag start is text */
    expect_clean(&o, "x <b unterminated", "x <b unterminated");
    /* script without its end drops the rest */
    expect_clean(&o, "kept<script>lost forever", "kept");
    /* CDATA keeps its content verbatim; invalid numeric references become U+FFFD;
     * 0x80..0x9F are Windows-1252 */
    expect_clean(&o, "<![CDATA[a<b]]> &#0; &#xD800; &#x110000; &#150;",
                 "a<b \uFFFD \uFFFD \uFFFD \u2013");
    /* td/th separate by a space, li by lines */
    expect_clean(&o, "<table><tr><td>a</td><td>b</td></tr></table><ul><li>one<li>two</ul>",
                 "a b\n\none\ntwo");
    /* markup off: tags are text */
    o.strip_markup = 0;
    expect_clean(&o, "<b>x</b> &amp;", "<b>x</b> &amp;");
}

static void normalization(void **state)
{
    (void)state;
    kn_textclean_options o;
    kn_textclean_defaults(&o);
    /* NFC: e + combining acute -> é (U+00E9); the ligature and full-width stay */
    o.normalize = KN_TEXT_NORM_NFC;
    expect_clean(&o, "cafe\u0301 \uFB01le \uFF11\uFF12\uFF13",
                 "caf\u00E9 \uFB01le \uFF11\uFF12\uFF13");
    /* NFKC: ﬁ -> fi, full-width digits and letters -> ASCII, ² -> 2, and composed */
    o.normalize = KN_TEXT_NORM_NFKC;
    expect_clean(&o, "cafe\u0301 \uFB01le \uFF11\uFF12\uFF13 \uFF21 x\u00B2",
                 "caf\u00E9 file 123 A x2");
    /* none: untouched */
    o.normalize = KN_TEXT_NORM_NONE;
    expect_clean(&o, "cafe\u0301 \uFB01", "cafe\u0301 \uFB01");
    /* an entity decoded to a combining mark composes with the letter before it */
    o.normalize = KN_TEXT_NORM_NFC;
    o.strip_markup = 1;
    expect_clean(&o, "e&#x301;", "\u00E9");
    /* a control between e and the mark is removed before normalization */
    o.strip_markup = 0;
    expect_clean(&o, "e\x01\u0301", "\u00E9");
}

static void controls_and_whitespace(void **state)
{
    (void)state;
    kn_textclean_options o;
    kn_textclean_defaults(&o);
    /* C0 (not \t \n), DEL and C1 removed; CR LF and lone CR are newlines */
    o.collapse_whitespace = 0;
    expect_clean(&o,
                 "a\x01\x02"
                 "b\x7F"
                 "c\xC2\x85\xC2\x9F"
                 "d\te\r\nf\rg\x1B[0m",
                 "abcd\te\nf\ng[0m");
    /* NUL bytes inside the input are controls too */
    {
        char *out;
        size_t n;
        const char in[] = {'a', 0, 'b'};
        assert_int_equal(kn_textclean(&o, in, sizeof(in), &out, &n, NULL), KN_OK);
        assert_string_equal(out, "ab");
        free(out);
    }
    /* off: controls stay (but output stays valid UTF-8) */
    o.strip_control = 0;
    expect_clean(&o,
                 "a\x01"
                 "b",
                 "a\x01"
                 "b");

    kn_textclean_defaults(&o);
    /* runs of spaces/tabs -> one space; ends trimmed; >2 newlines -> 2; spaces at
     * line ends and starts removed; Unicode spaces (NBSP, em space, ideographic,
     * narrow NBSP) -> space; zero-width space and BOM removed */
    expect_clean(&o,
                 "  \t\uFEFFhello \t  world  \n\n\n\n   next\u00A0line\u2003x\u3000y\u202Fz\n"
                 " \n\t\nlast\u200Bword \n\n",
                 "hello world\n\nnext line x y z\n\nlastword");
    /* line and paragraph separators, VT, FF are line breaks */
    expect_clean(&o, "a\u2028b\u2029c\vd\fe", "a\nb\nc\nd\ne");
    /* one and two newlines kept */
    expect_clean(&o, "a\nb\n\nc", "a\nb\n\nc");
}

static void bad_utf8(void **state)
{
    (void)state;
    kn_textclean_options o;
    kn_textclean_defaults(&o);
    const char *bad[] = {
        "abc\xFF",          /* invalid byte */
        "\xC3",             /* truncated sequence */
        "\xC0\xAF",         /* overlong '/' */
        "\xE0\x80\xAF",     /* overlong 3-byte */
        "\xED\xA0\x80",     /* surrogate U+D800 */
        "\xF4\x90\x80\x80", /* above U+10FFFF */
        "a\x80z",           /* stray continuation */
        "\xE2\x82",         /* truncated 3-byte */
    };
    for (size_t i = 0; i < KN_ARRAY_LEN(bad); i++)
        expect_refused(&o, bad[i], "bad_utf8");
    /* every option combination still validates */
    o.normalize = KN_TEXT_NORM_NONE;
    o.collapse_whitespace = o.strip_control = 0;
    expect_refused(&o, "\xFE", "bad_utf8");
    /* 4-byte characters are fine */
    expect_clean(&o, "\xF0\x9F\x98\x80", "\xF0\x9F\x98\x80");
}

static void filters(void **state)
{
    (void)state;
    kn_textclean_options o;
    kn_textclean_defaults(&o);
    expect_refused(&o, "", "empty");
    expect_refused(&o, " \n\t\u00A0 ", "empty");
    o.strip_markup = 1;
    expect_refused(&o, "<p><script>x</script></p>", "empty");
    o.strip_markup = 0;

    /* length in code points after cleaning: "héllo" is 5 code points, 6 bytes */
    o.min_chars = 5;
    expect_clean(&o, "  h\u00E9llo  ", "h\u00E9llo");
    expect_refused(&o, "h\u00E9ll", "too_short");
    o.min_chars = 0;
    o.max_chars = 5;
    expect_clean(&o, "h\u00E9llo", "h\u00E9llo");
    expect_refused(&o, "h\u00E9llo!", "too_long");
    o.max_chars = 0;

    /* letter ratio: letters / non-space code points */
    o.min_letter_ratio = 0.5;
    expect_clean(&o, "ab 12", "ab 12");                  /* 2/4 */
    expect_refused(&o, "a1 2 3 !!", "low_letter_ratio"); /* 1/6 */
    expect_clean(&o, "\u0928\u092E\u0938\u094D\u0924\u0947 1",
                 "\u0928\u092E\u0938\u094D\u0924\u0947 1"); /* marks count */
    expect_clean(&o, "\u65E5\u672C\u8A9E 12", "\u65E5\u672C\u8A9E 12");
    o.min_letter_ratio = 0;

    /* duplicate lines / non-empty lines */
    o.max_dup_line_ratio = 0.3;
    expect_clean(&o, "a\nb\nc\na", "a\nb\nc\na");                  /* 1/4 */
    expect_refused(&o, "spam\nspam\nspam\nham", "repeated_lines"); /* 2/4 */
    expect_clean(&o, "a\n\n\nb\n\n", "a\n\nb");                    /* empty lines ignored */
    expect_refused(&o, "x y\nx  y\n x y", "repeated_lines");       /* equal after cleaning */
    o.max_dup_line_ratio = 1.0;
    expect_clean(&o, "spam\nspam\nspam", "spam\nspam\nspam");

    /* longest run of one code point / code points */
    o.max_char_repeat_ratio = 0.5;
    expect_clean(&o, "hello", "hello");                                /* 2/5 */
    expect_refused(&o, "!!!!!!ab", "repeated_chars");                  /* 6/8 */
    expect_refused(&o, "\u00E9\u00E9\u00E9\u00E9x", "repeated_chars"); /* counted in code points */
    o.max_char_repeat_ratio = 1.0;
    expect_clean(&o, "aaaaaaaa", "aaaaaaaa");
}

/* clean(clean(x)) == clean(x) over a corpus of awkward inputs and options. */
static void idempotence(void **state)
{
    (void)state;
    const char *corpus[] = {
        "  Hello,\t\tworld!  \n\n\n\nSecond   paragraph.\r\nThird\rline ",
        "<html><body><h1>Title</h1><p>Caf&eacute; &amp; cr\u00E8me &#8212; "
        "<i>nice</i></p><script>x()</script><br><br><br>tail</body></html>",
        "cafe\u0301 \uFB01 \uFF11\uFF12 \u00B4acute \u2003em\u00A0nbsp \u3000ideo",
        "e\x01\u0301 ctrl\x7F\xC2\x85 \u200Bzw\uFEFFbom \u2028ls\u2029ps",
        "\u00B4\u00B4  \u0301 x\n \u0301y",
        "\u1E0B\u0323 q\u0307\u0323 \uAC00\u11A8 \u212B \u2126",
        "tab\tsep\tvalues\n\n\t\n  \n",
        "emoji \U0001F469\u200D\U0001F4BB and ZWJ kept",
        "",
    };
    for (int mode = 0; mode < 8; mode++) {
        kn_textclean_options o;
        kn_textclean_defaults(&o);
        o.normalize = (kn_text_norm)(mode % 3);
        o.strip_markup = mode & 1;
        o.collapse_whitespace = !(mode & 2) || mode == 6;
        o.strip_control = !(mode & 4) || mode == 7;
        for (size_t i = 0; i < KN_ARRAY_LEN(corpus); i++) {
            char *once = NULL, *twice = NULL;
            size_t n1 = 0, n2 = 0;
            int rc1 = kn_textclean(&o, corpus[i], strlen(corpus[i]), &once, &n1, NULL);
            if (rc1 != KN_OK) continue; /* refused (empty): nothing to re-clean */
            assert_int_equal(kn_textclean(&o, once, n1, &twice, &n2, NULL), KN_OK);
            if (n1 != n2 || memcmp(once, twice, n1) != 0)
                fail_msg("mode %d input %zu: \"%s\" -> \"%s\"", mode, i, once, twice);
            free(once);
            free(twice);
        }
    }
}

/* A large input: linear-ish time, no crash, output shorter than input. */
static void large_input(void **state)
{
    (void)state;
    size_t n = 4u << 20;
    char *in = malloc(n + 1);
    assert_non_null(in);
    const char *unit = "<p>Lorem &amp; ipsum\u00A0dolor   sit\u0301 amet</p>\n\n\n";
    size_t ul = strlen(unit);
    for (size_t i = 0; i < n; i++)
        in[i] = unit[i % ul];
    n -= n % ul;
    kn_textclean_options o;
    kn_textclean_defaults(&o);
    o.strip_markup = 1;
    o.normalize = KN_TEXT_NORM_NFKC;
    o.max_dup_line_ratio = 0.5;
    char *out;
    size_t m;
    const char *why;
    assert_int_equal(kn_textclean(&o, in, n, &out, &m, &why), KN_EINVAL);
    assert_string_equal(why, "repeated_lines");
    o.max_dup_line_ratio = 1.0;
    assert_int_equal(kn_textclean(&o, in, n, &out, &m, &why), KN_OK);
    assert_true(m < n);
    free(out);
    free(in);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(defaults_and_reasons),
        cmocka_unit_test(markup),
        cmocka_unit_test(normalization),
        cmocka_unit_test(controls_and_whitespace),
        cmocka_unit_test(bad_utf8),
        cmocka_unit_test(filters),
        cmocka_unit_test(idempotence),
        cmocka_unit_test(large_input),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
