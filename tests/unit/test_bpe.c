/* test_bpe.c: unit tests for lib/bpe: rank-file loading and its errors,
 * encode/decode round trips, special tokens, training (checked against a
 * naive trainer), concurrency. Parity with tiktoken on large corpora is
 * tests/scripts/bpe-parity.sh; the known-id checks here use the rank files it
 * caches under .cache/tokenizer and skip (saying so) when they are absent. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "skip.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "text/bpe.h"
#include "core/kn.h"

#define CACHE KILN_SOURCE_DIR "/.cache/tokenizer"

/* ---------- helpers ---------- */

/* Rank-file text with the 256 single bytes (rank = byte) followed by extra
 * lines; caller frees. */
static char *byte_ranks(const char *extra)
{
    size_t cap = 256 * 16 + strlen(extra) + 1, n = 0;
    char *s = malloc(cap);
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for (int c = 0; c < 256; c++)
        n += (size_t)snprintf(s + n, cap - n, "%c%c== %d\n", tab[c >> 2], tab[(c & 3) << 4], c);
    memcpy(s + n, extra, strlen(extra) + 1);
    return s;
}

static kn_bpe *load_text(const char *text, char *err, size_t errsz)
{
    return kn_bpe_load_mem(text, strlen(text), "test.tiktoken", KN_BPE_R50K, err, errsz);
}

static char *tmp_path(const char *name)
{
    char *p = malloc(4096);
    snprintf(p, 4096, "%s/kiln-test-bpe-%d-%s", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp",
             (int)getpid(), name);
    return p;
}

static void assert_roundtrip(const kn_bpe *b, const char *text, size_t len, kn_bpe_special sp)
{
    kn_bpe_ids ids;
    kn_bpe_ids_init(&ids);
    char err[256];
    assert_int_equal(kn_bpe_encode(b, text, len, sp, &ids, err, sizeof(err)), KN_OK);
    char *buf = malloc(len + 1);
    size_t out = 0;
    assert_int_equal(kn_bpe_decode(b, ids.ids, ids.len, buf, len, &out, err, sizeof(err)), KN_OK);
    assert_int_equal(out, len);
    assert_memory_equal(buf, text, len);
    free(buf);
    kn_bpe_ids_free(&ids);
}

/* Small corpus: lowercase words of a 5-letter alphabet separated by single
 * spaces, so the r50k pieces are exactly "w" (first) and " w" (the rest). */
static char *word_corpus(size_t nwords, uint32_t seed)
{
    char *s = malloc(nwords * 10 + 1);
    size_t n = 0;
    uint32_t x = seed;
    for (size_t w = 0; w < nwords; w++) {
        if (w) s[n++] = ' ';
        x = x * 1103515245u + 12345u;
        int len = 1 + (int)((x >> 16) % 8);
        for (int i = 0; i < len; i++) {
            x = x * 1103515245u + 12345u;
            s[n++] = (char)('a' + (x >> 16) % 5);
        }
    }
    s[n] = 0;
    return s;
}

static const char *CRAFTED[] = {
    "",
    "a",
    "hello world",
    "Hello, World! How's it going? I'M FINE, you'll see.",
    "   leading and trailing   ",
    "tabs\tand\t\tnew\nlines\r\n\r\nend\n\n\n",
    "naïve café Ångström e\xcc\x81\xcc\x81 Z\xc3\xa9",
    "日本語のテキスト、中文，한국어\xe3\x80\x80ideographic space",
    "emoji 😀👍🏽👨‍👩‍👧‍👦🏳️‍🌈 🇫🇷",
    "digits 1 12 123 1234 12345 123456789012345678901234567890",
    "odd spaces\xc2\xa0x\xe2\x80\x83y\xe3\x80\x80z\xc2\x85w",
    "punct !!! ??? ... ((( ))) {{{ }}} --- ___",
    "<|endoftext|> inside <|endoftext|>text",
};

/* ---------- fixtures ---------- */

typedef struct {
    kn_bpe *b;
    char *path;
} trained;

static int setup_trained(void **state)
{
    trained *t = calloc(1, sizeof(*t));
    t->path = tmp_path("trained.tiktoken");
    char *corpus = word_corpus(4000, 7);
    const char *texts[3] = {corpus, CRAFTED[3], CRAFTED[6]};
    size_t lens[3] = {strlen(corpus), strlen(CRAFTED[3]), strlen(CRAFTED[6])};
    char err[256] = "";
    int rc = kn_bpe_train(texts, lens, 3, 600, KN_BPE_R50K, t->path, err, sizeof(err));
    free(corpus);
    if (rc) {
        fprintf(stderr, "train: %s\n", err);
        return -1;
    }
    t->b = kn_bpe_load(t->path, KN_BPE_R50K, err, sizeof(err));
    if (!t->b) {
        fprintf(stderr, "load: %s\n", err);
        return -1;
    }
    *state = t;
    return 0;
}

static int teardown_trained(void **state)
{
    trained *t = *state;
    kn_bpe_destroy(t->b);
    remove(t->path);
    free(t->path);
    free(t);
    return 0;
}

/* ---------- loading ---------- */

static void expect_load_error(const char *text, int want_rc, const char *want_msg)
{
    char err[256] = "";
    kn_bpe *b = load_text(text, err, sizeof(err));
    assert_null(b);
    (void)want_rc;
    if (!strstr(err, want_msg)) fail_msg("error \"%s\" lacks \"%s\"", err, want_msg);
    assert_non_null(strstr(err, "test.tiktoken"));
}

static void test_load_minimal(void **state)
{
    (void)state;
    char *s = byte_ranks("aGk= 256\n");
    char err[256];
    kn_bpe *b = load_text(s, err, sizeof(err));
    assert_non_null(b);
    assert_int_equal(kn_bpe_rank_count(b), 257);
    /* no special lines: r50k's <|endoftext|> = 50256 */
    assert_int_equal(kn_bpe_special_id(b, "<|endoftext|>"), 50256);
    assert_int_equal(kn_bpe_vocab_size(b), 50257);
    assert_int_equal(kn_bpe_special_id(b, "<|fim_prefix|>"), -1);
    assert_int_equal(strlen(kn_bpe_hash(b)), 64);
    kn_bpe_ids ids;
    kn_bpe_ids_init(&ids);
    assert_int_equal(kn_bpe_encode(b, "hi", 2, KN_BPE_SPECIAL_ORDINARY, &ids, err, sizeof(err)),
                     KN_OK);
    assert_int_equal(ids.len, 1);
    assert_int_equal(ids.ids[0], 256);
    kn_bpe_ids_free(&ids);
    kn_bpe_destroy(b);
    free(s);
}

static void test_load_hash(void **state)
{
    (void)state;
    /* sha256 of "" and of "abc": standard test vectors */
    char err[256];
    char *s = byte_ranks("");
    kn_bpe *b = load_text(s, err, sizeof(err));
    assert_non_null(b);
    char *path = tmp_path("hash.tiktoken");
    FILE *f = fopen(path, "wb");
    fwrite(s, 1, strlen(s), f);
    fclose(f);
    kn_bpe *b2 = kn_bpe_load(path, KN_BPE_CL100K, err, sizeof(err));
    assert_non_null(b2);
    assert_string_equal(kn_bpe_hash(b), kn_bpe_hash(b2)); /* content, not name or kind */
    assert_int_equal(kn_bpe_special_id(b2, "<|endofprompt|>"), 100276);
    assert_int_equal(kn_bpe_vocab_size(b2), 100277);
    kn_bpe_destroy(b2);
    remove(path);
    free(path);
    kn_bpe_destroy(b);
    free(s);
    b = kn_bpe_load("/nonexistent/x.tiktoken", KN_BPE_R50K, err, sizeof(err));
    assert_null(b);
    assert_non_null(strstr(err, "/nonexistent/x.tiktoken"));
}

static void test_load_errors(void **state)
{
    (void)state;
    char *s;
    s = byte_ranks("a$k= 256\n");
    expect_load_error(s, KN_ECORRUPT, ":257: bad base64 'a$k='");
    free(s);
    s = byte_ranks("aGk 256\n");
    expect_load_error(s, KN_ECORRUPT, "bad base64");
    free(s);
    s = byte_ranks("aGk= 255\n");
    expect_load_error(s, KN_ECORRUPT, "rank 255 appears twice (lines 256 and 257)");
    free(s);
    s = byte_ranks("aGk= 257\n");
    expect_load_error(s, KN_ECORRUPT, "rank 256 is missing");
    free(s);
    s = byte_ranks("aGk= 2x6\n");
    expect_load_error(s, KN_ECORRUPT, ":257: bad rank '2x6'");
    free(s);
    s = byte_ranks("aGk=\n");
    expect_load_error(s, KN_ECORRUPT, ":257: expected '<base64> <rank>'");
    free(s);
    s = byte_ranks("aGk= \n");
    expect_load_error(s, KN_ECORRUPT, ":257: missing rank");
    free(s);
    s = byte_ranks("YQ== 256\n"); /* "a" again */
    expect_load_error(s, KN_ECORRUPT, "ranks 97 and 256 have the same bytes");
    free(s);
    /* byte 0xff missing: drop the last line */
    s = byte_ranks("");
    s[strlen(s) - 1] = 0;
    strrchr(s, '\n')[1] = 0;
    expect_load_error(s, KN_ECORRUPT, "byte 0xff has no rank");
    free(s);
    expect_load_error("", KN_ECORRUPT, "no ranks");
    /* an ordinary rank after a special token */
    s = byte_ranks("PHxlbmRvZnRleHR8Pg== 256\naGk= 257\n");
    expect_load_error(s, KN_ECORRUPT, "ordinary rank 257 comes after special token");
    free(s);
    char err[256];
    kn_bpe *b = kn_bpe_load_mem("x", 1, "test.tiktoken", (kn_bpe_kind)7, err, sizeof(err));
    assert_null(b);
    assert_non_null(strstr(err, "unknown pattern kind 7"));
}

static void test_load_special_lines(void **state)
{
    (void)state;
    char *s = byte_ranks("aGk= 256\nPHxlbmRvZnRleHR8Pg== 257\nPHxwYWR8Pg== 300\n");
    char err[256];
    kn_bpe *b = load_text(s, err, sizeof(err));
    assert_non_null(b);
    assert_int_equal(kn_bpe_rank_count(b), 257);
    assert_int_equal(kn_bpe_special_id(b, "<|endoftext|>"), 257);
    assert_int_equal(kn_bpe_special_id(b, "<|pad|>"), 300);
    assert_int_equal(kn_bpe_vocab_size(b), 301);
    kn_bpe_destroy(b);
    free(s);
}

/* ---------- encode / decode ---------- */

static void test_roundtrip_crafted(void **state)
{
    trained *t = *state;
    for (size_t i = 0; i < KN_ARRAY_LEN(CRAFTED); i++) {
        assert_roundtrip(t->b, CRAFTED[i], strlen(CRAFTED[i]), KN_BPE_SPECIAL_ORDINARY);
        assert_roundtrip(t->b, CRAFTED[i], strlen(CRAFTED[i]), KN_BPE_SPECIAL_ALLOW);
    }
    /* invalid UTF-8, NUL bytes, lone continuation bytes, truncated sequences */
    static const char bad[] =
        "a\xff\xfe b\x80\x80 c\xe6\x97 d\xf0\x9f\x98 \xed\xa0\x80 \xc0\xaf\0x\0";
    assert_roundtrip(t->b, bad, sizeof(bad) - 1, KN_BPE_SPECIAL_ORDINARY);
    /* long pieces take the heap merge path */
    size_t n = 5000;
    char *big = malloc(n + 1);
    for (size_t i = 0; i < n; i++)
        big[i] = "abcde"[(i * 7 + i / 3) % 5];
    assert_roundtrip(t->b, big, n, KN_BPE_SPECIAL_ORDINARY);
    memset(big, ' ', n);
    assert_roundtrip(t->b, big, n, KN_BPE_SPECIAL_ORDINARY);
    free(big);
}

static void test_special_tokens(void **state)
{
    trained *t = *state;
    const char *text = "ab<|endoftext|>cd <|endoftext|><|endoftext|>";
    int64_t eot = kn_bpe_special_id(t->b, "<|endoftext|>");
    assert_int_equal(eot, 599);
    assert_int_equal(kn_bpe_vocab_size(t->b), 600);
    kn_bpe_ids ids;
    kn_bpe_ids_init(&ids);
    char err[256] = "";
    assert_int_equal(
        kn_bpe_encode(t->b, text, strlen(text), KN_BPE_SPECIAL_ALLOW, &ids, err, sizeof(err)),
        KN_OK);
    size_t neot = 0;
    for (size_t i = 0; i < ids.len; i++)
        neot += ids.ids[i] == (uint32_t)eot;
    assert_int_equal(neot, 3);
    assert_int_equal(ids.ids[ids.len - 1], eot);
    assert_int_equal(ids.ids[ids.len - 2], eot);
    assert_roundtrip(t->b, text, strlen(text), KN_BPE_SPECIAL_ALLOW);

    ids.len = 0;
    assert_int_equal(
        kn_bpe_encode(t->b, text, strlen(text), KN_BPE_SPECIAL_ORDINARY, &ids, err, sizeof(err)),
        KN_OK);
    for (size_t i = 0; i < ids.len; i++)
        assert_true(ids.ids[i] < 599);
    assert_roundtrip(t->b, text, strlen(text), KN_BPE_SPECIAL_ORDINARY);

    ids.len = 0;
    ids.ids = realloc(ids.ids, 4 * sizeof(uint32_t));
    ids.cap = 4;
    ids.ids[0] = 42;
    ids.len = 1;
    assert_int_equal(
        kn_bpe_encode(t->b, text, strlen(text), KN_BPE_SPECIAL_REJECT, &ids, err, sizeof(err)),
        KN_EINVAL);
    assert_non_null(strstr(err, "<|endoftext|> at byte 2"));
    assert_int_equal(ids.len, 1); /* unchanged on error */
    assert_int_equal(ids.ids[0], 42);
    /* reject mode without special text encodes normally; appends to out */
    assert_int_equal(
        kn_bpe_encode(t->b, "ab <|x|>", 8, KN_BPE_SPECIAL_REJECT, &ids, err, sizeof(err)), KN_OK);
    assert_true(ids.len > 1);
    assert_int_equal(ids.ids[0], 42);
    kn_bpe_ids_free(&ids);
}

static void test_decode_errors(void **state)
{
    trained *t = *state;
    char buf[8], err[256];
    size_t out = 0;
    uint32_t bad[] = {'a', 600};
    assert_int_equal(kn_bpe_decode(t->b, bad, 2, buf, sizeof(buf), &out, err, sizeof(err)),
                     KN_EINVAL);
    assert_non_null(strstr(err, "id 600 at position 1"));
    uint32_t eot[] = {599, 'a'};
    assert_int_equal(kn_bpe_decode(t->b, eot, 2, buf, sizeof(buf), &out, err, sizeof(err)),
                     KN_ETOOBIG);
    assert_int_equal(out, 14);
    assert_memory_equal(buf, "<|endoft", 8);
    char big[32];
    assert_int_equal(kn_bpe_decode(t->b, eot, 2, big, sizeof(big), &out, err, sizeof(err)), KN_OK);
    assert_int_equal(out, 14);
    assert_memory_equal(big, "<|endoftext|>a", 14);
}

/* Known ids from tiktoken for the standard vocabularies (cached by
 * bpe-parity.sh); skipped when the cache is absent. */
static void test_known_ids(void **state)
{
    (void)state;
    static const struct {
        const char *file;
        kn_bpe_kind kind;
        const char *text;
        uint32_t ids[8];
        size_t n;
    } cases[] = {
        {"r50k_base.tiktoken", KN_BPE_R50K, "hello world", {31373, 995}, 2},
        {"r50k_base.tiktoken", KN_BPE_R50K, "<|endoftext|>", {50256}, 1},
        {"cl100k_base.tiktoken", KN_BPE_CL100K, "hello world", {15339, 1917}, 2},
        {"cl100k_base.tiktoken", KN_BPE_CL100K, "<|endoftext|>", {100257}, 1},
    };
    char path[4096], err[256];
    if (access(CACHE "/r50k_base.tiktoken", R_OK) || access(CACHE "/cl100k_base.tiktoken", R_OK)) {
        skip_because("%s has no rank files (tests/tokenizer/cache.sh makes them)", CACHE);
    }
    for (size_t i = 0; i < KN_ARRAY_LEN(cases); i++) {
        snprintf(path, sizeof(path), "%s/%s", CACHE, cases[i].file);
        kn_bpe *b = kn_bpe_load(path, cases[i].kind, err, sizeof(err));
        assert_non_null(b);
        kn_bpe_ids ids;
        kn_bpe_ids_init(&ids);
        assert_int_equal(kn_bpe_encode(b, cases[i].text, strlen(cases[i].text),
                                       KN_BPE_SPECIAL_ALLOW, &ids, err, sizeof(err)),
                         KN_OK);
        assert_int_equal(ids.len, cases[i].n);
        assert_memory_equal(ids.ids, cases[i].ids, cases[i].n * sizeof(uint32_t));
        for (size_t k = 0; k < KN_ARRAY_LEN(CRAFTED); k++)
            assert_roundtrip(b, CRAFTED[k], strlen(CRAFTED[k]), KN_BPE_SPECIAL_ALLOW);
        kn_bpe_ids_free(&ids);
        kn_bpe_destroy(b);
    }
}

/* ---------- pre-tokenizer against PCRE2 ---------- */

#ifdef KILN_HAVE_PCRE2
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

/* tiktoken's patterns for PCRE2. \s is spelled out as Unicode White_Space
 * (what Rust's regex means by \s; PCRE2's \s leaves out U+0085). */
#define WS                                                                                         \
    "\\t\\n\\x{0B}\\f\\r \\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}"             \
    "\\x{202F}\\x{205F}\\x{3000}"
static const char PAT_R50K[] = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^" WS
                               "\\p{L}\\p{N}]+|[" WS "]+(?![^" WS "])|[" WS "]+";
static const char PAT_CL100K[] = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|"
                                 "\\p{N}{1,3}| ?[^" WS "\\p{L}\\p{N}]+[\\r\\n]*|[" WS
                                 "]*[\\r\\n]+|[" WS "]+(?![^" WS "])|[" WS "]+";

/* Characters whose class is the same in every Unicode version since 6 (the
 * system's PCRE2 and tiktoken's Rust regex may differ on newer ones), from
 * every class the scanners tell apart, plus contractions in several cases. */
static const char *const ADVERSARIAL[] = {"a",
                                          "z",
                                          "Q",
                                          "\xc3\xa9",
                                          "\xc3\x9f",
                                          "\xc5\xbf",
                                          "\xce\xa9",
                                          "\xd0\xb6",
                                          "\xd7\x90",
                                          "\xd8\xb9",
                                          "\xe0\xa4\x85",
                                          "\xe0\xb8\x81",
                                          "\xea\xb0\x80",
                                          "\xe6\x97\xa5",
                                          "\xe3\x81\x82",
                                          "\xef\xbd\xb1",
                                          "\xc7\x85",
                                          "0",
                                          "7",
                                          "9",
                                          "\xc2\xb2",
                                          "\xc2\xbd",
                                          "\xd9\xa3",
                                          "\xe2\x85\xab",
                                          "\xe2\x91\xa0",
                                          "\xef\xbc\x95",
                                          "\xf0\x9d\x9f\x99",
                                          " ",
                                          " ",
                                          " ",
                                          "\t",
                                          "\n",
                                          "\r",
                                          "\r\n",
                                          "\x0b",
                                          "\x0c",
                                          "\xc2\x85",
                                          "\xc2\xa0",
                                          "\xe1\x9a\x80",
                                          "\xe2\x80\x83",
                                          "\xe2\x80\xa8",
                                          "\xe2\x80\xa9",
                                          "\xe2\x80\xaf",
                                          "\xe2\x81\x9f",
                                          "\xe3\x80\x80",
                                          "'",
                                          "!",
                                          ".",
                                          ",",
                                          "-",
                                          "_",
                                          "\"",
                                          "(",
                                          "|",
                                          "\xe2\x82\xac",
                                          "\xf0\x9f\x98\x80",
                                          "\xf0\x9f\x91\x8d",
                                          "\xf0\x9f\x8f\xbd",
                                          "\xe2\x80\x8d",
                                          "\xe2\x80\x8b",
                                          "\xef\xbb\xbf",
                                          "\xcc\x81",
                                          "\xef\xb8\x8f",
                                          "'s",
                                          "'S",
                                          "'t",
                                          "'T",
                                          "'re",
                                          "'RE",
                                          "'Ve",
                                          "'m",
                                          "'M",
                                          "'ll",
                                          "'lL",
                                          "'d",
                                          "'D",
                                          "'\xc5\xbf",
                                          "'x",
                                          "123",
                                          "4567",
                                          "  ",
                                          "   \n",
                                          " \t "};

static void b64_append(char **s, size_t *n, size_t *cap, const uint8_t *p, size_t len)
{
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    if (*n + len * 2 + 64 > *cap) {
        *cap = (*n + len * 2 + 64) * 2;
        *s = realloc(*s, *cap);
    }
    for (size_t i = 0; i < len; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16 | (i + 1 < len ? (uint32_t)p[i + 1] << 8 : 0) |
                     (i + 2 < len ? p[i + 2] : 0);
        (*s)[(*n)++] = tab[v >> 18];
        (*s)[(*n)++] = tab[(v >> 12) & 63];
        (*s)[(*n)++] = i + 1 < len ? tab[(v >> 6) & 63] : '=';
        (*s)[(*n)++] = i + 2 < len ? tab[v & 63] : '=';
    }
}

typedef struct {
    const uint8_t *p;
    size_t len;
} span;

static size_t token_index(const span *toks, size_t ntok, const uint8_t *p, size_t len)
{
    for (size_t i = 0; i < ntok; i++)
        if (toks[i].len == len && memcmp(toks[i].p, p, len) == 0) return i;
    return SIZE_MAX;
}

/* Random strings of adversarial characters, split by PCRE2 with tiktoken's
 * pattern. A vocabulary holds the 256 bytes, every PCRE2 piece and every
 * concatenation of two neighbouring pieces; kiln must then give exactly one
 * id per PCRE2 piece. A kiln piece that swallows a neighbour is found as the
 * concatenation's single id, and a piece cut short cannot be merged back
 * (its halves are not tokens), so any difference in the split shows in ids. */
static void check_split_against_pcre2(kn_bpe_kind kind, const char *pattern, uint32_t seed)
{
    int errcode;
    PCRE2_SIZE erroff;
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)pattern, PCRE2_ZERO_TERMINATED,
                                   PCRE2_UTF | PCRE2_UCP, &errcode, &erroff, NULL);
    assert_non_null(re);
    pcre2_match_data *md = pcre2_match_data_create_from_pattern(re, NULL);
    enum { NSTR = 25, ROUNDS = 40 };
    uint32_t x = seed;
    for (int round = 0; round < ROUNDS; round++) {
        char *text[NSTR];
        size_t len[NSTR], npieces[NSTR];
        span *pieces[NSTR];
        span *toks = malloc(NSTR * 200 * sizeof(*toks));
        size_t ntok = 0;
        for (int k = 0; k < NSTR; k++) {
            text[k] = malloc(61 * 16);
            len[k] = 0;
            x = x * 1103515245u + 12345u;
            size_t nchars = 1 + (x >> 16) % 60, prev = 0;
            for (size_t c = 0; c < nchars; c++) {
                x = x * 1103515245u + 12345u;
                /* half the time repeat the previous element: runs */
                size_t e = (x >> 20) % 2 && c ? prev : (x >> 8) % KN_ARRAY_LEN(ADVERSARIAL);
                size_t el = strlen(ADVERSARIAL[e]);
                memcpy(text[k] + len[k], ADVERSARIAL[e], el);
                len[k] += el;
                prev = e;
            }
            pieces[k] = malloc((len[k] + 1) * sizeof(span));
            npieces[k] = 0;
            for (size_t off = 0; off < len[k];) {
                int rc = pcre2_match(re, (PCRE2_SPTR)text[k], len[k], off, 0, md, NULL);
                assert_true(rc > 0);
                PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
                assert_int_equal(ov[0], off); /* the pattern matches every position */
                assert_true(ov[1] > off);
                pieces[k][npieces[k]++] = (span){(const uint8_t *)text[k] + off, ov[1] - off};
                off = ov[1];
            }
            for (size_t i = 0; i < npieces[k]; i++) {
                span a = pieces[k][i];
                if (a.len > 1 && token_index(toks, ntok, a.p, a.len) == SIZE_MAX) toks[ntok++] = a;
                if (i + 1 < npieces[k]) {
                    span ab = {a.p, a.len + pieces[k][i + 1].len};
                    if (token_index(toks, ntok, ab.p, ab.len) == SIZE_MAX) toks[ntok++] = ab;
                }
            }
        }
        char *extra = NULL;
        size_t n = 0, cap = 0;
        for (size_t i = 0; i < ntok; i++) {
            b64_append(&extra, &n, &cap, toks[i].p, toks[i].len);
            n += (size_t)snprintf(extra + n, cap - n, " %zu\n", 256 + i);
        }
        extra[n] = 0;
        char *ranks = byte_ranks(extra);
        char err[256];
        kn_bpe *b = kn_bpe_load_mem(ranks, strlen(ranks), "pcre2-split", kind, err, sizeof(err));
        if (!b) fail_msg("load: %s", err);
        kn_bpe_ids ids;
        kn_bpe_ids_init(&ids);
        for (int k = 0; k < NSTR; k++) {
            ids.len = 0;
            assert_int_equal(
                kn_bpe_encode(b, text[k], len[k], KN_BPE_SPECIAL_ORDINARY, &ids, err, sizeof(err)),
                KN_OK);
            int same = ids.len == npieces[k];
            for (size_t i = 0; same && i < npieces[k]; i++) {
                span a = pieces[k][i];
                uint32_t want =
                    a.len == 1 ? a.p[0] : 256 + (uint32_t)token_index(toks, ntok, a.p, a.len);
                same = ids.ids[i] == want;
            }
            if (!same) {
                print_message("%s: kiln's split differs from PCRE2's for \"",
                              kind == KN_BPE_CL100K ? "cl100k" : "r50k");
                for (size_t i = 0; i < len[k]; i++)
                    print_message("\\x%02x", (unsigned char)text[k][i]);
                print_message("\"\n  PCRE2 pieces:");
                for (size_t i = 0; i < npieces[k]; i++)
                    print_message(" %zu", pieces[k][i].len);
                print_message("\n");
                fail();
            }
        }
        kn_bpe_ids_free(&ids);
        kn_bpe_destroy(b);
        free(ranks);
        free(extra);
        for (int k = 0; k < NSTR; k++) {
            free(text[k]);
            free(pieces[k]);
        }
        free(toks);
    }
    pcre2_match_data_free(md);
    pcre2_code_free(re);
}
#endif

static void test_split_matches_pcre2(void **state)
{
    (void)state;
#ifdef KILN_HAVE_PCRE2
    check_split_against_pcre2(KN_BPE_R50K, PAT_R50K, 11);
    check_split_against_pcre2(KN_BPE_CL100K, PAT_CL100K, 12);
#else
    print_message("SKIPPED: kiln was built without PCRE2\n");
    skip();
#endif
}

/* ---------- concurrency ---------- */

typedef struct {
    const kn_bpe *b;
    const char *text;
    size_t len;
    kn_bpe_ids want;
    int ok;
} worker;

static void *encode_worker(void *arg)
{
    worker *w = arg;
    kn_bpe_ids ids;
    kn_bpe_ids_init(&ids);
    w->ok = 1;
    for (int r = 0; r < 20; r++) {
        ids.len = 0;
        if (kn_bpe_encode(w->b, w->text, w->len, KN_BPE_SPECIAL_ALLOW, &ids, NULL, 0) ||
            ids.len != w->want.len || memcmp(ids.ids, w->want.ids, ids.len * 4) != 0)
            w->ok = 0;
    }
    kn_bpe_ids_free(&ids);
    return NULL;
}

static void test_concurrent_encode(void **state)
{
    trained *t = *state;
    char *text = word_corpus(20000, 99);
    size_t len = strlen(text);
    worker w[4];
    pthread_t th[4];
    kn_bpe_ids want;
    kn_bpe_ids_init(&want);
    assert_int_equal(kn_bpe_encode(t->b, text, len, KN_BPE_SPECIAL_ALLOW, &want, NULL, 0), KN_OK);
    for (int i = 0; i < 4; i++) {
        w[i] = (worker){t->b, text, len, want, 0};
        assert_int_equal(pthread_create(&th[i], NULL, encode_worker, &w[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        assert_true(w[i].ok);
    }
    kn_bpe_ids_free(&want);
    free(text);
}

/* Words of 1..40 characters from ASCII and multi-byte letters, so that the
 * r50k pieces are short and long, merge into few ids or many: pieces the
 * encoder's piece cache keeps (up to 22 bytes, up to 8 ids) and pieces it
 * does not. Caller frees. */
static char *mixed_corpus(size_t nwords, uint32_t seed)
{
    static const char *const alpha[] = {
        "a", "b", "c", "d", "e", "\xc3\xa9", "\xd0\xb6", "\xe6\x97\xa5", "1", "!"};
    char *s = malloc(nwords * 130 + 1);
    size_t n = 0;
    uint32_t x = seed;
    for (size_t w = 0; w < nwords; w++) {
        if (w) s[n++] = ' ';
        x = x * 1103515245u + 12345u;
        int len = 1 + (int)((x >> 16) % ((x >> 8) % 4 == 0 ? 40 : 8));
        for (int i = 0; i < len; i++) {
            x = x * 1103515245u + 12345u;
            const char *c = alpha[(x >> 16) % ((x >> 4) % 3 == 0 ? 10 : 5)];
            size_t cl = strlen(c);
            memcpy(s + n, c, cl);
            n += cl;
        }
    }
    s[n] = 0;
    return s;
}

/* The piece cache is shared by every thread that encodes with one kn_bpe.
 * Four threads encode four different texts at once with one vocabulary of
 * few ranks (so, a small cache: slots are overwritten by other texts' pieces
 * all the time) and must each get exactly the ids a fresh vocabulary, whose
 * cache never saw the other texts, gives. Catches a cache that returns
 * another piece's ids or a half-written slot. */
static void test_cache_shared_between_threads(void **state)
{
    trained *t = *state;
    char err[256];
    char *text[4];
    worker w[4];
    pthread_t th[4];
    for (int i = 0; i < 4; i++) {
        text[i] = mixed_corpus(6000, 1000u + (uint32_t)i);
        kn_bpe *fresh = kn_bpe_load(t->path, KN_BPE_R50K, err, sizeof(err));
        assert_non_null(fresh);
        w[i] = (worker){t->b, text[i], strlen(text[i]), {0}, 0};
        kn_bpe_ids_init(&w[i].want);
        assert_int_equal(kn_bpe_encode(fresh, text[i], w[i].len, KN_BPE_SPECIAL_ALLOW, &w[i].want,
                                       err, sizeof(err)),
                         KN_OK);
        assert_roundtrip(fresh, text[i], w[i].len, KN_BPE_SPECIAL_ALLOW);
        kn_bpe_destroy(fresh);
    }
    for (int i = 0; i < 4; i++)
        assert_int_equal(pthread_create(&th[i], NULL, encode_worker, &w[i]), 0);
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        assert_true(w[i].ok);
        kn_bpe_ids_free(&w[i].want);
        free(text[i]);
    }
}

/* ---------- training ---------- */

/* Naive trainer for the word corpus: recount every pair each step. Returns
 * the token byte strings in id order (ids 0..255 are the bytes). */
typedef struct {
    char tok[700][64];
    size_t len[700];
    size_t n;
} naive_vocab;

static void naive_train(const char *corpus, size_t max_ids, naive_vocab *v)
{
    size_t nw = 0;
    static uint32_t sym[20000][12];
    static size_t wl[20000];
    const char *p = corpus;
    while (*p) {
        const char *q = p + (*p == ' ');
        while (*q && *q != ' ')
            q++;
        wl[nw] = (size_t)(q - p);
        for (size_t i = 0; i < wl[nw]; i++)
            sym[nw][i] = (uint8_t)p[i];
        nw++;
        p = q;
    }
    v->n = 256;
    for (int c = 0; c < 256; c++) {
        v->tok[c][0] = (char)c;
        v->len[c] = 1;
    }
    static uint32_t cnt[700][700];
    while (v->n < max_ids) {
        memset(cnt, 0, sizeof(cnt));
        for (size_t w = 0; w < nw; w++)
            for (size_t i = 0; i + 1 < wl[w]; i++)
                cnt[sym[w][i]][sym[w][i + 1]]++;
        uint32_t best = 0, ba = 0, bb = 0;
        for (uint32_t a = 0; a < v->n; a++)
            for (uint32_t b = 0; b < v->n; b++)
                if (cnt[a][b] > best) {
                    best = cnt[a][b];
                    ba = a;
                    bb = b;
                }
        if (!best) break;
        char buf[128];
        size_t bl = v->len[ba] + v->len[bb];
        memcpy(buf, v->tok[ba], v->len[ba]);
        memcpy(buf + v->len[ba], v->tok[bb], v->len[bb]);
        uint32_t nid = (uint32_t)v->n;
        for (uint32_t k = 0; k < v->n; k++)
            if (v->len[k] == bl && memcmp(v->tok[k], buf, bl) == 0) nid = k;
        if (nid == v->n) {
            memcpy(v->tok[nid], buf, bl);
            v->len[nid] = bl;
            v->n++;
        }
        for (size_t w = 0; w < nw; w++) {
            size_t r = 0;
            for (size_t i = 0; i < wl[w];) {
                if (i + 1 < wl[w] && sym[w][i] == ba && sym[w][i + 1] == bb) {
                    sym[w][r++] = nid;
                    i += 2;
                } else {
                    sym[w][r++] = sym[w][i++];
                }
            }
            wl[w] = r;
        }
    }
}

static void test_train_matches_naive(void **state)
{
    (void)state;
    char *corpus = word_corpus(6000, 12345);
    size_t len = strlen(corpus);
    const char *texts[1] = {corpus};
    char *path = tmp_path("naive.tiktoken"), err[256];
    assert_int_equal(
        kn_bpe_train(texts, &len, 1, 256 + 300 + 1, KN_BPE_R50K, path, err, sizeof(err)), KN_OK);
    static naive_vocab v;
    naive_train(corpus, 256 + 300, &v); /* stops where the trainer stops */
    kn_bpe *b = kn_bpe_load(path, KN_BPE_R50K, err, sizeof(err));
    assert_non_null(b);
    size_t n = kn_bpe_rank_count(b);
    assert_true(n > 256 + 100);
    char buf[128];
    for (uint32_t id = 0; id < n; id++) {
        size_t out;
        assert_int_equal(kn_bpe_decode(b, &id, 1, buf, sizeof(buf), &out, err, sizeof(err)), KN_OK);
        if (out != v.len[id] || memcmp(buf, v.tok[id], out) != 0)
            fail_msg("id %u: trainer \"%.*s\", naive \"%.*s\"", id, (int)out, buf, (int)v.len[id],
                     v.tok[id]);
    }
    assert_int_equal(kn_bpe_special_id(b, "<|endoftext|>"), n);
    /* the trained file reproduces the training: fewer tokens than bytes */
    kn_bpe_ids ids;
    kn_bpe_ids_init(&ids);
    assert_int_equal(kn_bpe_encode(b, corpus, len, KN_BPE_SPECIAL_ORDINARY, &ids, err, sizeof(err)),
                     KN_OK);
    assert_true(ids.len * 2 < len);
    assert_roundtrip(b, corpus, len, KN_BPE_SPECIAL_ORDINARY);
    kn_bpe_ids_free(&ids);
    kn_bpe_destroy(b);
    remove(path);
    free(path);
    free(corpus);
}

static void test_train_builtin_corpus(void **state)
{
    (void)state;
    /* mixed text, both patterns */
    size_t lens[KN_ARRAY_LEN(CRAFTED)];
    for (size_t i = 0; i < KN_ARRAY_LEN(CRAFTED); i++)
        lens[i] = strlen(CRAFTED[i]);
    for (int kind = KN_BPE_R50K; kind <= KN_BPE_CL100K; kind++) {
        char *path = tmp_path("builtin.tiktoken"), err[256];
        assert_int_equal(kn_bpe_train(CRAFTED, lens, KN_ARRAY_LEN(CRAFTED), 400, (kn_bpe_kind)kind,
                                      path, err, sizeof(err)),
                         KN_OK);
        kn_bpe *b = kn_bpe_load(path, (kn_bpe_kind)kind, err, sizeof(err));
        assert_non_null(b);
        size_t bytes = 0, toks = 0;
        kn_bpe_ids ids;
        kn_bpe_ids_init(&ids);
        for (size_t i = 0; i < KN_ARRAY_LEN(CRAFTED); i++) {
            assert_roundtrip(b, CRAFTED[i], lens[i], KN_BPE_SPECIAL_ORDINARY);
            ids.len = 0;
            assert_int_equal(kn_bpe_encode(b, CRAFTED[i], lens[i], KN_BPE_SPECIAL_ORDINARY, &ids,
                                           err, sizeof(err)),
                             KN_OK);
            bytes += lens[i];
            toks += ids.len;
        }
        assert_true(toks < bytes / 2);
        kn_bpe_ids_free(&ids);
        kn_bpe_destroy(b);
        remove(path);
        free(path);
    }
}

static void test_train_errors(void **state)
{
    (void)state;
    const char *texts[1] = {"abc"};
    size_t lens[1] = {3};
    char err[256];
    assert_int_equal(kn_bpe_train(texts, lens, 1, 100, KN_BPE_R50K, "/tmp/x", err, sizeof(err)),
                     KN_EINVAL);
    assert_non_null(strstr(err, "vocab_size 100"));
    assert_int_equal(kn_bpe_train(texts, lens, 1, 1000, KN_BPE_R50K, "/nonexistent-dir/x.tiktoken",
                                  err, sizeof(err)),
                     KN_EIO);
    assert_non_null(strstr(err, "/nonexistent-dir/x.tiktoken"));
    /* running out of pairs writes a smaller vocabulary */
    char *path = tmp_path("tiny.tiktoken");
    assert_int_equal(kn_bpe_train(texts, lens, 1, 1000, KN_BPE_R50K, path, err, sizeof(err)),
                     KN_OK);
    kn_bpe *b = kn_bpe_load(path, KN_BPE_R50K, err, sizeof(err));
    assert_non_null(b);
    assert_int_equal(kn_bpe_rank_count(b), 258); /* "ab", "abc" */
    assert_int_equal(kn_bpe_special_id(b, "<|endoftext|>"), 258);
    kn_bpe_ids ids;
    kn_bpe_ids_init(&ids);
    assert_int_equal(kn_bpe_encode(b, "abc", 3, KN_BPE_SPECIAL_ORDINARY, &ids, err, sizeof(err)),
                     KN_OK);
    assert_int_equal(ids.len, 1);
    assert_int_equal(ids.ids[0], 257);
    kn_bpe_ids_free(&ids);
    kn_bpe_destroy(b);
    remove(path);
    free(path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_load_minimal),
        cmocka_unit_test(test_load_hash),
        cmocka_unit_test(test_load_errors),
        cmocka_unit_test(test_load_special_lines),
        cmocka_unit_test_setup_teardown(test_roundtrip_crafted, setup_trained, teardown_trained),
        cmocka_unit_test_setup_teardown(test_special_tokens, setup_trained, teardown_trained),
        cmocka_unit_test_setup_teardown(test_decode_errors, setup_trained, teardown_trained),
        cmocka_unit_test_setup_teardown(test_concurrent_encode, setup_trained, teardown_trained),
        cmocka_unit_test_setup_teardown(test_cache_shared_between_threads, setup_trained,
                                        teardown_trained),
        cmocka_unit_test(test_known_ids),
        cmocka_unit_test(test_split_matches_pcre2),
        cmocka_unit_test(test_train_matches_naive),
        cmocka_unit_test(test_train_builtin_corpus),
        cmocka_unit_test(test_train_errors),
    };
    return skip_run_group_tests(tests, NULL, NULL);
}
