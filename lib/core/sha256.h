/* sha256.h: SHA-256 through OpenSSL EVP, one-shot and streaming, with hex
 * output. Used for record keys and content-addressed artifacts. */
#ifndef KN_SHA256_H
#define KN_SHA256_H

#include <stddef.h>
#include <stdint.h>

#define KN_SHA256_LEN 32
#define KN_SHA256_HEX_LEN 65 /* 64 hex digits + NUL */

typedef struct kn_sha256 kn_sha256;

/* Streaming: new → update* → final. final may be called once; destroy
 * accepts NULL. */
kn_sha256 *kn_sha256_new(void);
void kn_sha256_update(kn_sha256 *h, const void *data, size_t len);
void kn_sha256_final(kn_sha256 *h, uint8_t out[KN_SHA256_LEN]);
void kn_sha256_destroy(kn_sha256 *h);

void kn_sha256_digest(const void *data, size_t len, uint8_t out[KN_SHA256_LEN]);
void kn_sha256_hex(const void *data, size_t len, char out[KN_SHA256_HEX_LEN]);
void kn_sha256_to_hex(const uint8_t digest[KN_SHA256_LEN], char out[KN_SHA256_HEX_LEN]);

/* Non-zero when s is 64 lower-case hex digits. */
int kn_sha256_hex_valid(const char *s);

/* Hashes a whole file; KN_EIO when it cannot be read. */
int kn_sha256_file_hex(const char *path, char out[KN_SHA256_HEX_LEN]);

#endif
