/* sha256.c: thin wrapper over OpenSSL's EVP digest API. */
#include "core/sha256.h"
#include "core/kn.h"

#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

/* SHA-256 fetched once. EVP_sha256() is an implicit fetch: OpenSSL 3 looks
 * the algorithm up in its provider store on every EVP_Digest call, which was
 * half the cost of hashing a 100-byte record (ingest keys every record). */
static EVP_MD *g_md;
static pthread_once_t g_md_once = PTHREAD_ONCE_INIT;

static void md_fetch(void)
{
    g_md = EVP_MD_fetch(NULL, "SHA256", NULL);
}

static const EVP_MD *sha256_md(void)
{
    pthread_once(&g_md_once, md_fetch);
    return g_md ? g_md : EVP_sha256();
}

struct kn_sha256 {
    EVP_MD_CTX *ctx;
};

kn_sha256 *kn_sha256_new(void)
{
    kn_sha256 *h = calloc(1, sizeof(*h));
    if (!h) return NULL;
    h->ctx = EVP_MD_CTX_new();
    if (!h->ctx || EVP_DigestInit_ex(h->ctx, sha256_md(), NULL) != 1) {
        kn_sha256_destroy(h);
        return NULL;
    }
    return h;
}

void kn_sha256_update(kn_sha256 *h, const void *data, size_t len)
{
    EVP_DigestUpdate(h->ctx, data, len);
}

void kn_sha256_final(kn_sha256 *h, uint8_t out[KN_SHA256_LEN])
{
    unsigned int n = 0;
    EVP_DigestFinal_ex(h->ctx, out, &n);
}

void kn_sha256_destroy(kn_sha256 *h)
{
    if (!h) return;
    EVP_MD_CTX_free(h->ctx);
    free(h);
}

void kn_sha256_digest(const void *data, size_t len, uint8_t out[KN_SHA256_LEN])
{
    unsigned int n = 0;
    EVP_Digest(data, len, out, &n, sha256_md(), NULL);
}

void kn_sha256_to_hex(const uint8_t digest[KN_SHA256_LEN], char out[KN_SHA256_HEX_LEN])
{
    static const char hex[] = "0123456789abcdef";
    for (int i = 0; i < KN_SHA256_LEN; i++) {
        out[2 * i] = hex[digest[i] >> 4];
        out[2 * i + 1] = hex[digest[i] & 15];
    }
    out[64] = '\0';
}

void kn_sha256_hex(const void *data, size_t len, char out[KN_SHA256_HEX_LEN])
{
    uint8_t d[KN_SHA256_LEN];
    kn_sha256_digest(data, len, d);
    kn_sha256_to_hex(d, out);
}

int kn_sha256_hex_valid(const char *s)
{
    size_t i = 0;
    for (; s[i]; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f'))) return 0;
    return i == 64;
}

int kn_sha256_file_hex(const char *path, char out[KN_SHA256_HEX_LEN])
{
    FILE *f = fopen(path, "rb");
    if (!f) return KN_EIO;
    kn_sha256 *h = kn_sha256_new();
    if (!h) {
        fclose(f);
        return KN_ENOMEM;
    }
    char buf[1 << 16];
    size_t n;
    while ((n = fread(buf, 1, sizeof(buf), f)) > 0) kn_sha256_update(h, buf, n);
    int rc = ferror(f) ? KN_EIO : KN_OK;
    fclose(f);
    uint8_t d[KN_SHA256_LEN];
    kn_sha256_final(h, d);
    kn_sha256_destroy(h);
    if (rc == KN_OK) kn_sha256_to_hex(d, out);
    return rc;
}
