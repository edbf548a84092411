/* textclean.c: UTF-8 validation, markup stripping, control/whitespace
 * normalization, NFC/NFKC (utf8proc) and quality filters. Each stage reads one
 * buffer and writes the next; memory is O(input) and time linear except the
 * duplicate-line filter (n log n in lines). */
#include "text/textclean.h"
#include "core/kn.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#ifdef KILN_HAVE_UTF8PROC
#include <utf8proc.h>
#endif

#define R_BAD_UTF8       "bad_utf8"
#define R_EMPTY          "empty"
#define R_TOO_SHORT      "too_short"
#define R_TOO_LONG       "too_long"
#define R_LOW_LETTERS    "low_letter_ratio"
#define R_REPEATED_LINES "repeated_lines"
#define R_REPEATED_CHARS "repeated_chars"

static const char *const reasons[] = {R_BAD_UTF8,    R_EMPTY,          R_TOO_SHORT,      R_TOO_LONG,
                                      R_LOW_LETTERS, R_REPEATED_LINES, R_REPEATED_CHARS, NULL};

const char *const *kn_textclean_reason_list(void)
{
    return reasons;
}

void kn_textclean_defaults(kn_textclean_options *o)
{
    memset(o, 0, sizeof(*o));
    o->normalize = KN_TEXT_NORM_NFC;
    o->strip_markup = 0;
    o->collapse_whitespace = 1;
    o->strip_control = 1;
    o->min_chars = 0;
    o->max_chars = 0;
    o->min_letter_ratio = 0.0;
    o->max_dup_line_ratio = 1.0;
    o->max_char_repeat_ratio = 1.0;
}

/* ---- growable byte buffer ---- */

typedef struct {
    char *p;
    size_t len, cap; /* bytes used / allocated; cap always leaves room for a NUL */
} tbuf;

static int tb_reserve(tbuf *b, size_t extra)
{
    if (b->len + extra + 1 <= b->cap) return KN_OK;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < b->len + extra + 1) {
        if (cap > SIZE_MAX / 2) return KN_ENOMEM;
        cap *= 2;
    }
    char *p = realloc(b->p, cap);
    if (!p) return KN_ENOMEM;
    b->p = p;
    b->cap = cap;
    return KN_OK;
}

static int tb_put(tbuf *b, const void *s, size_t n)
{
    if (tb_reserve(b, n) != KN_OK) return KN_ENOMEM;
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
    return KN_OK;
}

static int tb_putc(tbuf *b, char c)
{
    return tb_put(b, &c, 1);
}

static int tb_putcp(tbuf *b, uint32_t cp)
{
    uint8_t e[4];
    size_t n;
    if (cp < 0x80) {
        e[0] = (uint8_t)cp;
        n = 1;
    } else if (cp < 0x800) {
        e[0] = (uint8_t)(0xC0 | cp >> 6);
        e[1] = (uint8_t)(0x80 | (cp & 0x3F));
        n = 2;
    } else if (cp < 0x10000) {
        e[0] = (uint8_t)(0xE0 | cp >> 12);
        e[1] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
        e[2] = (uint8_t)(0x80 | (cp & 0x3F));
        n = 3;
    } else {
        e[0] = (uint8_t)(0xF0 | cp >> 18);
        e[1] = (uint8_t)(0x80 | ((cp >> 12) & 0x3F));
        e[2] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
        e[3] = (uint8_t)(0x80 | (cp & 0x3F));
        n = 4;
    }
    return tb_put(b, e, n);
}

/* ---- UTF-8 ---- */

/* Decodes one code point at s[*i] (n bytes in s), strictly: no overlongs, no
 * surrogates, nothing above U+10FFFF. 0 and *i advanced, or -1. */
static int u8_next(const uint8_t *s, size_t n, size_t *i, uint32_t *cp)
{
    size_t k = *i;
    uint8_t c = s[k];
    uint32_t v, min;
    size_t need;
    if (c < 0x80) {
        *cp = c;
        *i = k + 1;
        return 0;
    } else if (c >= 0xC2 && c <= 0xDF) {
        v = c & 0x1F;
        need = 1;
        min = 0x80;
    } else if (c >= 0xE0 && c <= 0xEF) {
        v = c & 0x0F;
        need = 2;
        min = 0x800;
    } else if (c >= 0xF0 && c <= 0xF4) {
        v = c & 0x07;
        need = 3;
        min = 0x10000;
    } else {
        return -1;
    }
    if (n - k - 1 < need) return -1;
    for (size_t j = 1; j <= need; j++) {
        uint8_t t = s[k + j];
        if ((t & 0xC0) != 0x80) return -1;
        v = v << 6 | (t & 0x3F);
    }
    if (v < min || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF)) return -1;
    *cp = v;
    *i = k + 1 + need;
    return 0;
}

static int u8_valid(const uint8_t *s, size_t n)
{
    size_t i = 0;
    uint32_t cp;
    while (i < n) {
        if (s[i] < 0x80) { /* ASCII fast path */
            i++;
            continue;
        }
        if (u8_next(s, n, &i, &cp) != 0) return 0;
    }
    return 1;
}

/* ---- character classes ---- */

/* Unicode category Zs (Unicode 15), listed so collapse works without utf8proc. */
static int is_zs(uint32_t cp)
{
    return cp == 0x20 || cp == 0xA0 || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) ||
           cp == 0x202F || cp == 0x205F || cp == 0x3000;
}

static int is_space(uint32_t cp)
{
    return cp == '\t' || cp == '\n' || cp == '\v' || cp == '\f' || cp == '\r' || cp == 0x85 ||
           cp == 0x2028 || cp == 0x2029 || is_zs(cp);
}

static int is_control(uint32_t cp)
{
    return (cp < 0x20 && cp != '\t' && cp != '\n') || (cp >= 0x7F && cp <= 0x9F);
}

static inline int is_ascii(const char *p, size_t n)
{
    unsigned char any = 0;
    for (size_t i = 0; i < n; i++)
        any |= (unsigned char)p[i];
    return any < 0x80;
}

static int is_letter(uint32_t cp)
{
    if (cp < 0x80) return (cp | 0x20) >= 'a' && (cp | 0x20) <= 'z'; /* Lu/Ll; no ASCII mark */
#ifdef KILN_HAVE_UTF8PROC
    utf8proc_category_t c = utf8proc_category((utf8proc_int32_t)cp);
    return (c >= UTF8PROC_CATEGORY_LU && c <= UTF8PROC_CATEGORY_LO) ||
           (c >= UTF8PROC_CATEGORY_MN && c <= UTF8PROC_CATEGORY_ME);
#else
    /* Crude without a Unicode database: ASCII letters, and anything above
     * Latin-1 punctuation that is not whitespace. */
    return (cp < 0x80 && ((cp | 0x20) >= 'a' && (cp | 0x20) <= 'z')) ||
           (cp >= 0xC0 && !is_space(cp));
#endif
}

/* ---- stage 2: markup ---- */

typedef struct {
    const char *name;
    uint32_t cp;
} entity;

static const entity entities[] = {
    {"amp", '&'},       {"lt", '<'},       {"gt", '>'},        {"quot", '"'},
    {"apos", '\''},     {"trade", 0x2122}, {"mdash", 0x2014},  {"ndash", 0x2013},
    {"hellip", 0x2026}, {"lsquo", 0x2018}, {"rsquo", 0x2019},  {"ldquo", 0x201C},
    {"rdquo", 0x201D},  {"sbquo", 0x201A}, {"bdquo", 0x201E},  {"euro", 0x20AC},
    {"bull", 0x2022},   {"ensp", 0x2002},  {"emsp", 0x2003},   {"thinsp", 0x2009},
    {"zwnj", 0x200C},   {"zwj", 0x200D},   {"lsaquo", 0x2039}, {"rsaquo", 0x203A},
    {"dagger", 0x2020}, {"OElig", 0x152},  {"oelig", 0x153},   {"Scaron", 0x160},
    {"scaron", 0x161},  {"Yuml", 0x178},
};

/* Named references for U+00A0..U+00FF (HTML 4 Latin-1 set), in code point order. */
static const char *const latin1_entities[96] = {
    "nbsp",   "iexcl",  "cent",   "pound",  "curren", "yen",    "brvbar", "sect",   "uml",
    "copy",   "ordf",   "laquo",  "not",    "shy",    "reg",    "macr",   "deg",    "plusmn",
    "sup2",   "sup3",   "acute",  "micro",  "para",   "middot", "cedil",  "sup1",   "ordm",
    "raquo",  "frac14", "frac12", "frac34", "iquest", "Agrave", "Aacute", "Acirc",  "Atilde",
    "Auml",   "Aring",  "AElig",  "Ccedil", "Egrave", "Eacute", "Ecirc",  "Euml",   "Igrave",
    "Iacute", "Icirc",  "Iuml",   "ETH",    "Ntilde", "Ograve", "Oacute", "Ocirc",  "Otilde",
    "Ouml",   "times",  "Oslash", "Ugrave", "Uacute", "Ucirc",  "Uuml",   "Yacute", "THORN",
    "szlig",  "agrave", "aacute", "acirc",  "atilde", "auml",   "aring",  "aelig",  "ccedil",
    "egrave", "eacute", "ecirc",  "euml",   "igrave", "iacute", "icirc",  "iuml",   "eth",
    "ntilde", "ograve", "oacute", "ocirc",  "otilde", "ouml",   "divide", "oslash", "ugrave",
    "uacute", "ucirc",  "uuml",   "yacute", "thorn",  "yuml"};

/* HTML5: numeric references 0x80..0x9F mean Windows-1252 characters. */
static const uint16_t cp1252[32] = {0x20AC, 0xFFFD, 0x201A, 0x0192, 0x201E, 0x2026, 0x2020, 0x2021,
                                    0x02C6, 0x2030, 0x0160, 0x2039, 0x0152, 0xFFFD, 0x017D, 0xFFFD,
                                    0xFFFD, 0x2018, 0x2019, 0x201C, 0x201D, 0x2022, 0x2013, 0x2014,
                                    0x02DC, 0x2122, 0x0161, 0x203A, 0x0153, 0xFFFD, 0x017E, 0x0178};

/* Tags that separate blocks of text: replaced by a newline. */
static const char *const block_tags[] = {
    "address",    "article", "aside",  "blockquote", "br",   "dd",  "div",     "dl",     "dt",
    "figcaption", "figure",  "footer", "form",       "h1",   "h2",  "h3",      "h4",     "h5",
    "h6",         "header",  "hr",     "li",         "main", "nav", "ol",      "option", "p",
    "pre",        "section", "table",  "title",      "tr",   "ul",  "caption", "tbody",  "thead"};

static int is_alpha(uint8_t c)
{
    return (c | 0x20) >= 'a' && (c | 0x20) <= 'z';
}
static int is_digit(uint8_t c)
{
    return c >= '0' && c <= '9';
}
static int is_hex(uint8_t c)
{
    return is_digit(c) || ((c | 0x20) >= 'a' && (c | 0x20) <= 'f');
}
static int hexval(uint8_t c)
{
    return is_digit(c) ? c - '0' : (c | 0x20) - 'a' + 10;
}

/* Position of needle (ASCII, case-insensitive) in s[from..n), or n. */
static size_t find_ci(const uint8_t *s, size_t n, size_t from, const char *needle)
{
    size_t m = strlen(needle);
    for (size_t i = from; i + m <= n; i++) {
        size_t j = 0;
        while (j < m && (s[i + j] | 0x20) == (uint8_t)(needle[j] | 0x20))
            j++;
        if (j == m) return i;
    }
    return n;
}

static size_t find_str(const uint8_t *s, size_t n, size_t from, const char *needle)
{
    size_t m = strlen(needle);
    for (size_t i = from; i + m <= n; i++)
        if (memcmp(s + i, needle, m) == 0) return i;
    return n;
}

/* Decodes an entity at s[i] == '&'. Returns its length in bytes (0 when this is
 * not an entity we know, so the '&' stays literal) and the code point. */
static size_t entity_at(const uint8_t *s, size_t n, size_t i, uint32_t *cp)
{
    size_t j = i + 1;
    if (j < n && s[j] == '#') {
        j++;
        int hex = 0;
        if (j < n && (s[j] | 0x20) == 'x') {
            hex = 1;
            j++;
        }
        size_t start = j;
        uint32_t v = 0;
        while (j < n && j - start < 8 && (hex ? is_hex(s[j]) : is_digit(s[j]))) {
            v = v * (hex ? 16 : 10) + (uint32_t)(hex ? hexval(s[j]) : s[j] - '0');
            j++;
        }
        if (j == start || j >= n || s[j] != ';') return 0;
        if (v >= 0x80 && v <= 0x9F)
            v = cp1252[v - 0x80];
        else if (v == 0 || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF))
            v = 0xFFFD;
        *cp = v;
        return j + 1 - i;
    }
    size_t start = j;
    while (j < n && j - start < 10 && (is_alpha(s[j]) || is_digit(s[j])))
        j++;
    if (j == start || j >= n || s[j] != ';') return 0;
    for (size_t k = 0; k < KN_ARRAY_LEN(entities); k++) {
        size_t m = strlen(entities[k].name);
        if (m == j - start && memcmp(entities[k].name, s + start, m) == 0) {
            *cp = entities[k].cp;
            return j + 1 - i;
        }
    }
    for (size_t k = 0; k < KN_ARRAY_LEN(latin1_entities); k++) {
        size_t m = strlen(latin1_entities[k]);
        if (m == j - start && memcmp(latin1_entities[k], s + start, m) == 0) {
            *cp = 0xA0 + (uint32_t)k;
            return j + 1 - i;
        }
    }
    return 0;
}

/* End (index of '>') of a tag starting at s[i] == '<', quotes respected; n if
 * none. Falls back to the first '>' when a quote is never closed. */
static size_t tag_end(const uint8_t *s, size_t n, size_t i)
{
    uint8_t q = 0;
    for (size_t j = i + 1; j < n; j++) {
        if (q) {
            if (s[j] == q) q = 0;
        } else if (s[j] == '"' || s[j] == '\'') {
            q = s[j];
        } else if (s[j] == '>') {
            return j;
        }
    }
    if (!q) return n;
    const uint8_t *gt = memchr(s + i, '>', n - i);
    return gt ? (size_t)(gt - s) : n;
}

static int strip_markup(const uint8_t *s, size_t n, tbuf *out)
{
    size_t i = 0;
    while (i < n) {
        /* copy plain text up to the next '<' or '&' */
        size_t j = i;
        while (j < n && s[j] != '<' && s[j] != '&')
            j++;
        if (j > i && tb_put(out, s + i, j - i) != KN_OK) return KN_ENOMEM;
        i = j;
        if (i >= n) break;
        if (s[i] == '&') {
            uint32_t cp;
            size_t m = entity_at(s, n, i, &cp);
            if (m == 0) {
                if (tb_putc(out, '&') != KN_OK) return KN_ENOMEM;
                i++;
            } else {
                if (tb_putcp(out, cp) != KN_OK) return KN_ENOMEM;
                i += m;
            }
            continue;
        }
        /* s[i] == '<' */
        uint8_t c1 = i + 1 < n ? s[i + 1] : 0;
        if (n - i >= 4 && memcmp(s + i, "<!--", 4) == 0) {
            size_t e = find_str(s, n, i + 4, "-->");
            i = e >= n ? n : e + 3;
            continue;
        }
        if (n - i >= 9 && memcmp(s + i, "<![CDATA[", 9) == 0) {
            size_t e = find_str(s, n, i + 9, "]]>");
            if (tb_put(out, s + i + 9, e - (i + 9)) != KN_OK) return KN_ENOMEM;
            i = e >= n ? n : e + 3;
            continue;
        }
        int closing = c1 == '/';
        int tagish =
            c1 == '!' || c1 == '?' || is_alpha(c1) || (closing && i + 2 < n && is_alpha(s[i + 2]));
        size_t e = tagish ? tag_end(s, n, i) : n;
        if (e >= n) { /* not a tag: a literal '<' */
            if (tb_putc(out, '<') != KN_OK) return KN_ENOMEM;
            i++;
            continue;
        }
        char name[16];
        size_t nl = 0, k = i + 1 + (size_t)closing;
        while (k < e && (is_alpha(s[k]) || is_digit(s[k])) && nl + 1 < sizeof(name))
            name[nl++] = (char)(s[k++] | 0x20);
        name[nl] = '\0';
        i = e + 1;
        if (!closing && s[e - 1] != '/' &&
            (strcmp(name, "script") == 0 || strcmp(name, "style") == 0)) {
            size_t c = find_ci(s, n, i, name[1] == 'c' ? "</script" : "</style");
            i = c >= n ? n : tag_end(s, n, c);
            if (i < n) i++;
            continue;
        }
        const char *sep = NULL;
        for (size_t t = 0; t < KN_ARRAY_LEN(block_tags) && !sep; t++)
            if (strcmp(name, block_tags[t]) == 0) sep = "\n";
        if (!sep && (strcmp(name, "td") == 0 || strcmp(name, "th") == 0)) sep = " ";
        if (sep && tb_putc(out, sep[0]) != KN_OK) return KN_ENOMEM;
    }
    return KN_OK;
}

/* ---- stage 3: controls and line breaks (before normalization) ---- */

/* The next code point of s (validated UTF-8) at *i; ASCII without a call. */
static inline uint32_t next_cp(const uint8_t *s, size_t n, size_t *i)
{
    if (s[*i] < 0x80) return s[(*i)++];
    uint32_t cp;                      /* its address is taken: kept off the ASCII path */
    if (u8_next(s, n, i, &cp) != 0) { /* validated before: cannot happen */
        (*i)++;
        return 0xFFFD;
    }
    return cp;
}

/* Stages 3 and 5 never write more than they read: the output is reserved
 * once and written in place (a call per character was most of their cost). */
static int strip_controls(const kn_textclean_options *o, const uint8_t *s, size_t n, tbuf *out)
{
    if (tb_reserve(out, n) != KN_OK) return KN_ENOMEM;
    char *w = out->p + out->len;
    size_t i = 0;
    while (i < n) {
        /* a run of printable ASCII, tabs and newlines is copied as is */
        size_t j = i;
        while (j < n && ((s[j] >= 0x20 && s[j] < 0x7F) || s[j] == '\n' || s[j] == '\t'))
            j++;
        if (j > i) {
            memcpy(w, s + i, j - i);
            w += j - i;
            i = j;
            if (i >= n) break;
        }
        size_t at = i;
        uint32_t cp = next_cp(s, n, &i);
        if (cp == '\r') {
            if (i < n && s[i] == '\n') i++;
            cp = '\n';
        } else if (o->collapse_whitespace &&
                   (cp == '\v' || cp == '\f' || cp == 0x85 || cp == 0x2028 || cp == 0x2029)) {
            cp = '\n';
        } else if (o->collapse_whitespace && (cp == 0x200B || cp == 0x2060 || cp == 0xFEFF)) {
            continue;
        } else if (o->strip_control && is_control(cp)) {
            continue;
        }
        if (cp == '\n') {
            *w++ = '\n';
        } else {
            memcpy(w, s + at, i - at);
            w += i - at;
        }
    }
    out->len = (size_t)(w - out->p);
    out->p[out->len] = '\0';
    return KN_OK;
}

/* ---- stage 5: whitespace ---- */

static int collapse_ws(const uint8_t *s, size_t n, tbuf *out)
{
    if (tb_reserve(out, n) != KN_OK) return KN_ENOMEM;
    char *w = out->p + out->len;
    size_t i = 0, newlines = 0;
    int space = 0, started = 0;
    while (i < n) {
        size_t at = i;
        uint32_t cp = next_cp(s, n, &i);
        /* ASCII other than space, tab, newline: the separator owed before it,
         * then the whole run of such characters at once */
        if (cp < 0x80 && cp != ' ' && cp != '\t' && cp != '\n') {
            if (started && newlines) {
                *w++ = '\n';
                if (newlines > 1) *w++ = '\n';
            } else if (started && space) {
                *w++ = ' ';
            }
            newlines = 0;
            space = 0;
            started = 1;
            while (i < n && s[i] < 0x80 && s[i] != ' ' && s[i] != '\t' && s[i] != '\n')
                i++;
            memcpy(w, s + at, i - at);
            w += i - at;
            continue;
        }
        if (cp == '\n') {
            newlines++;
            space = 0;
            continue;
        }
        if (cp == '\t' || is_zs(cp)) {
            if (!newlines) space = 1;
            continue;
        }
        if (started && newlines) { /* newlines >= 1 bytes were read for these */
            *w++ = '\n';
            if (newlines > 1) *w++ = '\n';
        } else if (started && space) {
            *w++ = ' ';
        }
        newlines = 0;
        space = 0;
        started = 1;
        memcpy(w, s + at, i - at);
        w += i - at;
    }
    out->len = (size_t)(w - out->p);
    out->p[out->len] = '\0';
    return KN_OK;
}

/* ---- stage 6: filters ---- */

typedef struct {
    uint64_t h; /* FNV-1a 64 of the line */
    const uint8_t *p;
    size_t n; /* bytes */
} line_ref;

static int line_cmp(const void *a, const void *b)
{
    const line_ref *x = a, *y = b;
    if (x->h != y->h) return x->h < y->h ? -1 : 1;
    if (x->n != y->n) return x->n < y->n ? -1 : 1;
    return memcmp(x->p, y->p, x->n);
}

/* Repeated non-empty lines (each line beyond its first occurrence, ends
 * trimmed of ASCII blanks) and the number of non-empty lines. */
static int dup_lines(const uint8_t *s, size_t n, size_t *dups, size_t *lines)
{
    size_t cap = 1;
    for (size_t i = 0; i < n; i++)
        cap += s[i] == '\n';
    line_ref *v = malloc(cap * sizeof(*v));
    if (!v) return KN_ENOMEM;
    size_t m = 0, i = 0;
    while (i <= n) {
        const uint8_t *nl = i < n ? memchr(s + i, '\n', n - i) : NULL;
        size_t e = nl ? (size_t)(nl - s) : n;
        size_t a = i, b = e;
        while (a < b && (s[a] == ' ' || s[a] == '\t' || s[a] == '\r'))
            a++;
        while (b > a && (s[b - 1] == ' ' || s[b - 1] == '\t' || s[b - 1] == '\r'))
            b--;
        if (b > a) {
            uint64_t h = 1469598103934665603ull;
            for (size_t k = a; k < b; k++)
                h = (h ^ s[k]) * 1099511628211ull;
            v[m++] = (line_ref){h, s + a, b - a};
        }
        i = e + 1;
    }
    qsort(v, m, sizeof(*v), line_cmp);
    size_t d = 0;
    for (size_t k = 1; k < m; k++)
        d += line_cmp(&v[k - 1], &v[k]) == 0;
    free(v);
    *dups = d;
    *lines = m;
    return KN_OK;
}

/* Applies the filters; NULL when the text passes, else the reason. *oom set
 * when the duplicate-line filter could not allocate. */
static const char *filter(const kn_textclean_options *o, const uint8_t *s, size_t n, int *oom)
{
    size_t cps = 0, nonspace = 0, letters = 0, run = 0, longest = 0, i = 0;
    uint32_t prev = 0xFFFFFFFFu;
    while (i < n) {
        uint32_t cp;
        if (s[i] < 0x80) { /* ASCII without the decoder call */
            cp = s[i++];
        } else {
            uint32_t c;
            if (u8_next(s, n, &i, &c) != 0) return R_BAD_UTF8;
            cp = c;
        }
        cps++;
        run = cp == prev ? run + 1 : 1;
        if (run > longest) longest = run;
        prev = cp;
        if (is_space(cp)) continue;
        nonspace++;
        letters += is_letter(cp) != 0;
    }
    if (nonspace == 0) return R_EMPTY;
    if (o->min_chars && cps < o->min_chars) return R_TOO_SHORT;
    if (o->max_chars && cps > o->max_chars) return R_TOO_LONG;
    if (o->min_letter_ratio > 0 && (double)letters / (double)nonspace < o->min_letter_ratio)
        return R_LOW_LETTERS;
    if (o->max_dup_line_ratio < 1.0) {
        size_t dups, lines;
        if (dup_lines(s, n, &dups, &lines) != KN_OK) {
            *oom = 1;
            return NULL;
        }
        if (lines && (double)dups / (double)lines > o->max_dup_line_ratio) return R_REPEATED_LINES;
    }
    if (o->max_char_repeat_ratio < 1.0 && (double)longest / (double)cps > o->max_char_repeat_ratio)
        return R_REPEATED_CHARS;
    return NULL;
}

/* ---- the pipeline ---- */

int kn_textclean(const kn_textclean_options *o, const char *in, size_t len, char **out,
                 size_t *out_len, const char **reason)
{
    const char *why = NULL;
    tbuf a = {0}, b = {0};
    int rc = KN_OK;
    if (reason) *reason = NULL;
    if (out) *out = NULL;
    if (out_len) *out_len = 0;
    if (!o || !out || !out_len || (!in && len)) return KN_EINVAL;
#ifndef KILN_HAVE_UTF8PROC
    if (o->normalize != KN_TEXT_NORM_NONE) return KN_EUNSUPPORTED;
#endif

    /* 1. validation; a holds the current text from here on */
    if (!u8_valid((const uint8_t *)in, len)) {
        why = R_BAD_UTF8;
        rc = KN_EINVAL;
        goto out;
    }
    if ((rc = tb_put(&a, in ? in : "", len)) != KN_OK) goto out;

    /* 2. markup */
    if (o->strip_markup) {
        b.len = 0;
        if ((rc = strip_markup((const uint8_t *)a.p, a.len, &b)) != KN_OK) goto out;
        tbuf t = a;
        a = b;
        b = t;
    }
    /* 3. controls, line breaks, zero-width characters */
    if (o->strip_control || o->collapse_whitespace) {
        b.len = 0;
        if ((rc = strip_controls(o, (const uint8_t *)a.p, a.len, &b)) != KN_OK) goto out;
        tbuf t = a;
        a = b;
        b = t;
    }
    /* 4. normalization */
#ifdef KILN_HAVE_UTF8PROC
    /* ASCII is its own NFC and NFKC: the common case skips utf8proc. */
    if (o->normalize != KN_TEXT_NORM_NONE && a.len > 0 && !is_ascii(a.p, a.len)) {
        utf8proc_uint8_t *dst = NULL;
        int opt = UTF8PROC_STABLE | UTF8PROC_COMPOSE;
        if (o->normalize == KN_TEXT_NORM_NFKC) opt |= UTF8PROC_COMPAT;
        utf8proc_ssize_t m = utf8proc_map((const utf8proc_uint8_t *)a.p, (utf8proc_ssize_t)a.len,
                                          &dst, (utf8proc_option_t)opt);
        if (m < 0) {
            rc = m == UTF8PROC_ERROR_NOMEM ? KN_ENOMEM : KN_ERR;
            goto out;
        }
        a.len = 0;
        rc = tb_put(&a, dst, (size_t)m);
        free(dst);
        if (rc != KN_OK) goto out;
    }
#endif
    /* 5. whitespace */
    if (o->collapse_whitespace) {
        b.len = 0;
        if ((rc = collapse_ws((const uint8_t *)a.p, a.len, &b)) != KN_OK) goto out;
        tbuf t = a;
        a = b;
        b = t;
    }
    /* 6. filters */
    int oom = 0;
    why = filter(o, (const uint8_t *)a.p, a.len, &oom);
    if (oom) {
        rc = KN_ENOMEM;
        goto out;
    }
    if (why) {
        rc = KN_EINVAL;
        goto out;
    }
    if ((rc = tb_reserve(&a, 0)) != KN_OK) goto out; /* a.p non-NULL, NUL-terminated */
    a.p[a.len] = '\0';
    *out = a.p;
    *out_len = a.len;
    a.p = NULL;
out:
    free(a.p);
    free(b.p);
    if (reason) *reason = why;
    return rc;
}
