/* fuzz_jsonl.c: one line of kiln-ingest's JSON-lines input through the parse
 * the jsonl source runs before submitting (ing_jsonl_parse). Every line ends
 * either refused with a reason and detail, or as a text or image item whose
 * bytes are the line's decoded field; and the reading (in place for plain
 * lines) must be the one jansson alone makes (ing_jsonl_parse_jansson). */
#include "fuzz.h"

#include "core/kn.h"
#include "ingest.h"

#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    ing_item it;
    ing_jsonl_parsed ln;
    ing_jsonl_parse((const char *)data, size, &it, &ln);
    FUZZ_CHECK(it.source && strcmp(it.source, "jsonl") == 0 && !it.origin);
    if (it.refuse_reason) {
        FUZZ_CHECK(it.refuse_detail && it.refuse_detail[0]);
        FUZZ_CHECK(it.data == (const void *)data && it.len == size); /* the DLQ keeps the line */
    } else {
        FUZZ_CHECK(it.kind == ING_KIND_TEXT || it.kind == ING_KIND_IMAGE);
        FUZZ_CHECK(it.data != NULL || it.len == 0);
        if (it.kind == ING_KIND_IMAGE) FUZZ_CHECK(it.data == ln.image);
        /* touch every byte the item claims, so ASan checks the span */
        volatile uint8_t sum = 0;
        for (size_t i = 0; i < it.len; i++)
            sum += ((const uint8_t *)it.data)[i];
        (void)sum;
        if (it.label) FUZZ_CHECK(strlen(it.label) < 1u << 20);
    }
    ing_item ref;
    ing_jsonl_parsed lr;
    ing_jsonl_parse_jansson((const char *)data, size, &ref, &lr);
    FUZZ_CHECK(!it.refuse_reason == !ref.refuse_reason);
    FUZZ_CHECK(!it.refuse_reason || strcmp(it.refuse_reason, ref.refuse_reason) == 0);
    FUZZ_CHECK(!it.refuse_detail == !ref.refuse_detail);
    FUZZ_CHECK(!it.refuse_detail || strcmp(it.refuse_detail, ref.refuse_detail) == 0);
    FUZZ_CHECK(it.kind == ref.kind && it.len == ref.len);
    FUZZ_CHECK(it.len == 0 || memcmp(it.data, ref.data, it.len) == 0);
    FUZZ_CHECK(!it.label == !ref.label && (!it.label || strcmp(it.label, ref.label) == 0));
    FUZZ_CHECK(!it.dataset == !ref.dataset && (!it.dataset || strcmp(it.dataset, ref.dataset) == 0));
    FUZZ_CHECK(!it.split == !ref.split && (!it.split || strcmp(it.split, ref.split) == 0));
    ing_jsonl_parsed_free(&lr);
    ing_jsonl_parsed_free(&ln);
    return 0;
}
