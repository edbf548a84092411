/* Unit: kiln-ingest's JSON-lines parse. ing_jsonl_parse reads plain lines
 * ({"text": "..."} and the like) itself, without jansson; every line must
 * come out exactly as jansson's reading (ing_jsonl_parse_jansson) makes it:
 * same refusal and detail, or same bytes, kind, label, dataset and split.
 * Checked on hand-picked edge cases and on many random mutations of them. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/kn.h"
#include "ingest.h"

static int same_str(const char *a, const char *b)
{
    return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

/* Parses line both ways; fails with the line when they differ. Returns 1
 * when the fast reading kept it as an item (not refused). */
static int check_line(const char *line, size_t n)
{
    ing_item a, b;
    ing_jsonl_parsed pa, pb;
    ing_jsonl_parse(line, n, &a, &pa);
    ing_jsonl_parse_jansson(line, n, &b, &pb);
    int ok = same_str(a.refuse_reason, b.refuse_reason) &&
             same_str(a.refuse_detail, b.refuse_detail) && a.kind == b.kind && a.len == b.len &&
             (a.len == 0 || memcmp(a.data, b.data, a.len) == 0) && same_str(a.label, b.label) &&
             same_str(a.dataset, b.dataset) && same_str(a.split, b.split) &&
             same_str(a.content_type, b.content_type) && same_str(a.source, b.source);
    if (!ok)
        fail_msg("line %.*s: fast reading %s/%s len %zu label %s, jansson's %s/%s len %zu label %s",
                 (int)n, line, a.refuse_reason ? a.refuse_reason : "-",
                 a.refuse_detail ? a.refuse_detail : "-", a.len, a.label ? a.label : "-",
                 b.refuse_reason ? b.refuse_reason : "-", b.refuse_detail ? b.refuse_detail : "-",
                 b.len, b.label ? b.label : "-");
    int kept = !a.refuse_reason;
    ing_jsonl_parsed_free(&pa);
    ing_jsonl_parsed_free(&pb);
    return kept;
}

static const char *const cases[] = {
    "{\"text\": \"hello world\"}",
    "{\"text\":\"hello\",\"label\":\"pos\",\"dataset\":\"reviews\",\"split\":\"train\"}",
    "  {  \"text\" : \"x\" , \"label\" : 7 }  ",
    "{\"text\": \"x\", \"label\": -12}",
    "{\"text\": \"x\", \"label\": 0}",
    "{\"text\": \"x\", \"label\": -0}",
    "{\"text\": \"x\", \"label\": 007}",
    "{\"text\": \"x\", \"label\": 1.5}",
    "{\"text\": \"x\", \"label\": 1e3}",
    "{\"text\": \"x\", \"label\": 123456789012345678}",
    "{\"text\": \"x\", \"label\": 12345678901234567890123}",
    "{\"text\": \"x\", \"label\": null}",
    "{\"text\": \"x\", \"label\": true}",
    "{\"text\": \"x\", \"label\": [1]}",
    "{\"text\": \"x\", \"dataset\": 5, \"split\": null}",
    "{\"text\": \"caf\xc3\xa9 \xe2\x82\xac\"}",
    "{\"text\": \"bad \xc3\x28 utf8\"}",
    "{\"text\": \"surrogate \xed\xa0\x80\"}",
    "{\"text\": \"esc \\\"q\\\" \\u00e9 \\n\"}",
    "{\"text\": \"nul \\u0000\"}",
    "{\"text\": \"tab\there\"}",
    "{\"text\": \"\"}",
    "{\"text\": 5}",
    "{\"text\": null}",
    "{\"text\": \"a\", \"text\": \"b\"}",
    "{\"text\": \"a\", \"image_base64\": \"aGk=\"}",
    "{\"text\": \"a\", \"image_base64\": null}",
    "{\"image_base64\": \"iVBORw0KGgo=\"}",
    "{\"image_base64\": \"not base64!\"}",
    "{\"image_base64\": \"aGk\"}",
    "{\"other\": {\"nested\": [1, 2]}, \"text\": \"t\"}",
    "{\"other\": \"x\", \"text\": \"t\", \"more\": 3}",
    "{}",
    "[]",
    "\"text\"",
    "{\"text\": \"x\"} trailing",
    "{\"text\": \"x\"}}",
    "{\"text\": \"x\",}",
    "{\"text\" \"x\"}",
    "{\"text\": \"unterminated}",
    "{\"te\\u0078t\": \"escaped key\"}",
    "{\"text\": \"x\", \"label\": nul}",
    "{\"text\": \"x\", \"label\": nullx}",
    "{\"text\": \"x\", \"label\": -}",
    "{\"text\": \"x\"\r}",
    "",
    "{",
};

static void edge_cases(void **state)
{
    (void)state;
    int kept = 0;
    for (size_t i = 0; i < KN_ARRAY_LEN(cases); i++)
        kept += check_line(cases[i], strlen(cases[i]));
    assert_true(kept >= 10); /* the plain shapes are read, not all refused */
    /* a dataset name too long for the fast path's buffer: jansson reads it */
    char line[2000];
    int n = snprintf(line, sizeof(line), "{\"text\": \"x\", \"dataset\": \"%0900d\"}", 1);
    assert_int_equal(check_line(line, (size_t)n), 1);
}

static uint64_t rnd(uint64_t *s)
{
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return *s >> 33;
}

/* Random edits (a byte replaced by a JSON-significant one, inserted,
 * deleted) of every case: the two readings must still agree. */
static void mutations(void **state)
{
    (void)state;
    static const char alphabet[] = "{}[]\":,\\ \t\r\nnull-0123456789.eEtrufalsxybase64\xc3\xa9\x80\x01";
    uint64_t s = 42;
    char buf[512];
    int kept = 0, total = 0;
    for (int round = 0; round < 400; round++)
        for (size_t c = 0; c < KN_ARRAY_LEN(cases); c++) {
            size_t n = strlen(cases[c]);
            memcpy(buf, cases[c], n);
            int edits = 1 + (int)(rnd(&s) % 3);
            for (int e = 0; e < edits; e++) {
                char ch = alphabet[rnd(&s) % (sizeof(alphabet) - 1)];
                size_t at = n ? rnd(&s) % n : 0;
                switch (rnd(&s) % 3) {
                case 0:
                    if (n) buf[at] = ch;
                    break;
                case 1:
                    if (n + 1 < sizeof(buf)) {
                        memmove(buf + at + 1, buf + at, n - at);
                        buf[at] = ch;
                        n++;
                    }
                    break;
                default:
                    if (n) {
                        memmove(buf + at, buf + at + 1, n - at - 1);
                        n--;
                    }
                }
            }
            kept += check_line(buf, n);
            total++;
        }
    print_message("%d mutated lines, %d read as items\n", total, kept);
    assert_true(kept > 0 && kept < total);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(edge_cases), cmocka_unit_test(mutations)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
