/* fuzz_shard.c: kn_shard_parse on any bytes. The target first rewrites the
 * two CRC32C fields to match (when the input is long enough), so the fuzzer
 * explores the size and layout checks instead of stopping at the CRCs; the
 * CRC checks themselves are covered by tests/unit/test_shard.c. An accepted
 * shard's sections lie inside the buffer, and writing its examples, labels,
 * seeds and keys again with kn_shard_writer gives a shard that parses to the
 * same contents. */
#include "fuzz.h"

#include "core/crc32c.h"
#include "core/kn.h"
#include "stream/shard.h"

#include <string.h>

static void put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static void check_view(const kn_shard_view *v, const uint8_t *buf, size_t len)
{
    const uint8_t *end = buf + len;
    size_t ex = v->example_bytes;
    FUZZ_CHECK(v->info.ndim >= 1 && v->info.ndim <= 3);
    FUZZ_CHECK(ex == 0 || v->info.count <= (size_t)(end - v->data) / ex);
    FUZZ_CHECK(!v->labels || v->info.count <= (size_t)(end - v->labels) / 4);
    FUZZ_CHECK(!v->seeds || v->info.count <= (size_t)(end - v->seeds) / 8);
    FUZZ_CHECK(v->info.nkeys <= (size_t)(end - v->keys) / KN_SHARD_KEY_LEN);
}

/* Writes the view again and checks the copy parses to the same contents. */
static void rewrite(const kn_shard_view *v)
{
    char err[256];
    const kn_shard_info *in = &v->info;
    kn_shard_writer *w =
        kn_shard_writer_new(in->kind, in->dtype, in->ndim, in->shape, in->count ? in->count : 1,
                            in->nkeys, err, sizeof(err));
    FUZZ_CHECK(w != NULL);
    FUZZ_CHECK(kn_shard_writer_example_bytes(w) == v->example_bytes);
    int keyed = in->kind != KN_SHARD_LM_TOKENS; /* key i is example i's */
    uint32_t ex_keys = keyed ? (in->count < in->nkeys ? in->count : in->nkeys) : 0;
    for (uint32_t i = 0; i < in->count; i++)
        FUZZ_CHECK(kn_shard_writer_add(w, kn_shard_example(v, i), kn_shard_label(v, i),
                                       kn_shard_seed(v, i),
                                       i < ex_keys ? kn_shard_key(v, i) : NULL) == KN_OK);
    for (uint32_t i = ex_keys; i < in->nkeys; i++)
        FUZZ_CHECK(kn_shard_writer_add_key(w, kn_shard_key(v, i)) == KN_OK);
    const void *out;
    size_t outlen;
    kn_shard_writer_finish(w, &out, &outlen);
    kn_shard_view c;
    FUZZ_CHECK(kn_shard_parse(out, outlen, &c, err, sizeof(err)) == KN_OK);
    FUZZ_CHECK(memcmp(&c.info, &v->info, sizeof(c.info)) == 0);
    FUZZ_CHECK(c.example_bytes == v->example_bytes);
    for (uint32_t i = 0; i < in->count; i++) {
        FUZZ_CHECK(memcmp(kn_shard_example(&c, i), kn_shard_example(v, i), c.example_bytes) == 0);
        FUZZ_CHECK(kn_shard_label(&c, i) == kn_shard_label(v, i));
        FUZZ_CHECK(kn_shard_seed(&c, i) == kn_shard_seed(v, i));
    }
    for (uint32_t i = 0; i < in->nkeys; i++)
        FUZZ_CHECK(memcmp(kn_shard_key(&c, i), kn_shard_key(v, i), KN_SHARD_KEY_LEN) == 0);
    kn_shard_writer_destroy(w);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[256];
    uint8_t *buf = malloc(size ? size : 1);
    if (!buf) return 0;
    memcpy(buf, data, size);
    if (size >= KN_SHARD_HEADER_SIZE) {
        put32(buf + 40, kn_crc32c(0, buf + KN_SHARD_HEADER_SIZE, size - KN_SHARD_HEADER_SIZE));
        put32(buf + 60, kn_crc32c(0, buf, 60));
    }
    kn_shard_view v;
    if (kn_shard_parse(buf, size, &v, err, sizeof(err)) == KN_OK) {
        check_view(&v, buf, size);
        rewrite(&v);
    }
    free(buf);
    return 0;
}
