/* fuzz_bpe.c: tiktoken rank files through kn_bpe_load_mem. A file that loads
 * must round-trip text: encoding a fixed sample and the file's own bytes (any
 * bytes: every single byte has a rank) and decoding the ids gives the same
 * bytes back, with special tokens ordinary or allowed. The pattern is r50k
 * for inputs of even length, cl100k for odd. */
#include "fuzz.h"

#include "core/kn.h"
#include "text/bpe.h"

#include <string.h>

static void roundtrip(const kn_bpe *b, const char *text, size_t len, kn_bpe_special special)
{
    kn_bpe_ids ids;
    char err[256];
    kn_bpe_ids_init(&ids);
    FUZZ_CHECK(kn_bpe_encode(b, text, len, special, &ids, err, sizeof(err)) == KN_OK);
    for (size_t i = 0; i < ids.len; i++)
        FUZZ_CHECK(ids.ids[i] < kn_bpe_vocab_size(b));
    char *out = malloc(len + 1);
    size_t outlen = 0;
    FUZZ_CHECK(out != NULL);
    int rc = kn_bpe_decode(b, ids.ids, ids.len, out, len + 1, &outlen, err, sizeof(err));
    FUZZ_CHECK(rc == KN_OK && outlen == len && memcmp(out, text, len) == 0);
    free(out);
    kn_bpe_ids_free(&ids);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char sample[] = "Hello, world! It's 2024: naïve café, 東京 <|endoftext|>\n\n  x";
    char err[256];
    kn_bpe_kind kind = size % 2 ? KN_BPE_CL100K : KN_BPE_R50K;
    kn_bpe *b = kn_bpe_load_mem((const char *)data, size, "fuzz", kind, err, sizeof(err));
    if (!b) {
        FUZZ_CHECK(err[0] != '\0');
        return 0;
    }
    FUZZ_CHECK(kn_bpe_rank_count(b) >= 256 && kn_bpe_rank_count(b) <= kn_bpe_vocab_size(b));
    FUZZ_CHECK(strlen(kn_bpe_hash(b)) == 64);
    roundtrip(b, sample, sizeof(sample) - 1, KN_BPE_SPECIAL_ORDINARY);
    roundtrip(b, sample, sizeof(sample) - 1, KN_BPE_SPECIAL_ALLOW);
    roundtrip(b, (const char *)data, size < 512 ? size : 512, KN_BPE_SPECIAL_ORDINARY);
    kn_bpe_destroy(b);
    return 0;
}
