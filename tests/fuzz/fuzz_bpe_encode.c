/* fuzz_bpe_encode.c: any bytes as text through the byte-level BPE encoder
 * (both pre-tokenizer patterns, r50k and cl100k) and any bytes as ids through
 * the decoder. Text must round-trip exactly, invalid UTF-8 included; refusing
 * special-token text leaves the output as it was; unknown ids are refused.
 * The vocabulary is trained at start-up by kn_bpe_train on a fixed text. */
#include "fuzz.h"

#include "core/kn.h"
#include "text/bpe.h"

#include <string.h>
#include <unistd.h>

static kn_bpe *vocab[2]; /* r50k, cl100k patterns over the same ranks */

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    static const char *const texts[] = {
        "The quick brown fox jumps over the lazy dog. It's 12345 o'clock, isn't it?\n",
        "Ünïcödé: naïve café, 東京, Привет, 🙂🙃 \ttabs  spaces\r\n",
        "def f(x):\n    return x**2 + 3.14  # comment\n\n\nprint(f(10))\n",
        "<|endoftext|> HELLO hello Hello HeLLo 've 're 'll 'd 's 't 'm I'M WE'LL",
    };
    size_t lens[4];
    for (int i = 0; i < 4; i++)
        lens[i] = strlen(texts[i]);
    char path[] = "/tmp/kiln-fuzz-bpe-XXXXXX", err[256];
    int fd = mkstemp(path);
    if (fd < 0) abort();
    close(fd);
    if (kn_bpe_train(texts, lens, 4, 360, KN_BPE_R50K, path, err, sizeof(err)) != KN_OK ||
        !(vocab[0] = kn_bpe_load(path, KN_BPE_R50K, err, sizeof(err))) ||
        !(vocab[1] = kn_bpe_load(path, KN_BPE_CL100K, err, sizeof(err)))) {
        fprintf(stderr, "fuzz_bpe_encode: vocabulary: %s\n", err);
        abort();
    }
    unlink(path);
    return 0;
}

static void encode(const kn_bpe *b, const char *text, size_t len)
{
    kn_bpe_ids ids;
    char err[256];
    kn_bpe_ids_init(&ids);
    FUZZ_CHECK(kn_bpe_encode(b, text, len, KN_BPE_SPECIAL_ORDINARY, &ids, err, sizeof(err)) ==
               KN_OK);
    char *out = malloc(len + 1);
    size_t outlen = 0;
    FUZZ_CHECK(out != NULL);
    FUZZ_CHECK(kn_bpe_decode(b, ids.ids, ids.len, out, len + 1, &outlen, err, sizeof(err)) ==
               KN_OK);
    FUZZ_CHECK(outlen == len && memcmp(out, text, len) == 0);
    size_t before = ids.len;
    int rc = kn_bpe_encode(b, text, len, KN_BPE_SPECIAL_REJECT, &ids, err, sizeof(err));
    FUZZ_CHECK(rc == KN_OK || (rc == KN_EINVAL && ids.len == before));
    ids.len = 0;
    FUZZ_CHECK(kn_bpe_encode(b, text, len, KN_BPE_SPECIAL_ALLOW, &ids, err, sizeof(err)) == KN_OK);
    FUZZ_CHECK(kn_bpe_decode(b, ids.ids, ids.len, out, len + 1, &outlen, err, sizeof(err)) ==
               KN_OK);
    FUZZ_CHECK(outlen == len && memcmp(out, text, len) == 0);
    free(out);
    kn_bpe_ids_free(&ids);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[256];
    for (int k = 0; k < 2; k++)
        encode(vocab[k], (const char *)data, size);
    /* the same bytes as ids (a few past the vocabulary too), decoded into a
     * buffer that is sometimes too small */
    size_t n = size / 4, vs = kn_bpe_vocab_size(vocab[0]);
    uint32_t *ids = malloc(n ? n * 4 : 1);
    FUZZ_CHECK(ids != NULL);
    memcpy(ids, data, n * 4);
    for (size_t i = 0; i < n; i++)
        ids[i] %= (uint32_t)vs + 4;
    char buf[64];
    size_t outlen = 0;
    int rc = kn_bpe_decode(vocab[0], ids, n, buf, sizeof(buf), &outlen, err, sizeof(err));
    FUZZ_CHECK(rc == KN_OK || rc == KN_EINVAL || rc == KN_ETOOBIG);
    if (rc == KN_OK) FUZZ_CHECK(outlen <= sizeof(buf));
    if (rc == KN_ETOOBIG) FUZZ_CHECK(outlen > sizeof(buf));
    free(ids);
    return 0;
}
